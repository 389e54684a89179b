-- events, partitioned by day of event time, with only the columns and
-- indexes a query of the API needs (issue #11: the writer's insert rate is
-- bounded by index maintenance; retention is dropping a day).
--
-- Identity: (tenant, time, uid). A partitioned table's unique keys must
-- hold the partition key, so the event's time is part of its identity. The
-- device fixes both (metadata.uid and time are the event's own and are
-- re-sent unchanged; the gateway never rewrites them), so a re-delivered
-- batch or a re-sent request lands on the same key in the same partition
-- and is skipped by ON CONFLICT DO NOTHING. The gateway bounds time (at
-- most 7 days old, 5 minutes ahead), so a handful of partitions are live.
--
-- Columns: what a query filters or orders by (tenant, time, uid,
-- severity_id, class_uid, device_uid), logged_time and stored_at (ingest
-- and commit time: the ingest->committed latency), and the whole event as
-- protobuf in payload. activity_id, status_id and message are in the
-- payload and no query filters by them, so they are no longer columns.

ALTER TABLE events RENAME TO events_v4;
ALTER TABLE events_v4 DROP CONSTRAINT events_pkey;
DROP INDEX events_tenant_time, events_time, events_tenant_high_time, events_high_time, events_event_id;
DROP POLICY tenant_scope ON events_v4;

CREATE TABLE events (
    tenant       text        NOT NULL,
    uid          uuid        NOT NULL,
    time         timestamptz NOT NULL,
    severity_id  smallint    NOT NULL,
    class_uid    integer     NOT NULL,
    device_uid   text        NOT NULL,
    logged_time  timestamptz NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    payload      bytea       NOT NULL,
    -- The identity, and ListEvents for one tenant newest first (a backward
    -- scan; keyset pagination on (time, uid)).
    PRIMARY KEY (tenant, time, uid)
) PARTITION BY RANGE (time);

-- ListEvents across tenants (admin scope) newest first.
CREATE INDEX events_time ON events (time DESC, uid DESC);
-- "The newest N events of a tenant at HIGH or above", the analyst's first
-- question, and the same across tenants: small partial indexes.
CREATE INDEX events_tenant_high_time ON events (tenant, time DESC, uid DESC) WHERE severity_id BETWEEN 4 AND 6;
CREATE INDEX events_high_time ON events (time DESC, uid DESC) WHERE severity_id BETWEEN 4 AND 6;
-- GetEvent by id, and a finding's related events.
CREATE INDEX events_uid ON events (uid);

-- Creates the partition holding `day` (UTC) unless it exists; safe to race.
-- SECURITY DEFINER: the writer may create partitions, nothing else (it has
-- no DDL privilege). Returns the partition's name.
CREATE FUNCTION vigil_event_partition(day date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    name text := 'events_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass(name) IS NULL THEN
        BEGIN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                name,
                (day::timestamp AT TIME ZONE 'UTC'),
                ((day + 1)::timestamp AT TIME ZONE 'UTC'));
        EXCEPTION WHEN duplicate_table THEN
            -- Another writer created it first.
            NULL;
        END;
    END IF;
    RETURN name;
END
$$;

-- Retention: drops every partition that ends on or before `before` (UTC
-- day). Owner only (`vigil admin retention`). Returns the dropped names.
CREATE FUNCTION vigil_drop_event_partitions(before date) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part record;
BEGIN
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'events'::regclass
          AND c.relname ~ '^events_[0-9]{8}$'
          AND to_date(substr(c.relname, 8), 'YYYYMMDD') < before
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        RETURN NEXT part.relname;
    END LOOP;
END
$$;

-- Keep what an earlier version stored.
SELECT vigil_event_partition(d)
FROM (SELECT DISTINCT (time AT TIME ZONE 'UTC')::date AS d FROM events_v4) AS days;
INSERT INTO events (tenant, uid, time, severity_id, class_uid, device_uid, logged_time, stored_at, payload)
SELECT tenant, uid, time, severity_id, class_uid, device_uid, logged_time, stored_at, payload FROM events_v4
ON CONFLICT DO NOTHING;
DROP TABLE events_v4;

REVOKE ALL ON events FROM PUBLIC;
REVOKE ALL ON FUNCTION vigil_event_partition(date) FROM PUBLIC;
REVOKE ALL ON FUNCTION vigil_drop_event_partitions(date) FROM PUBLIC;
DO $grants$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT ON events TO %I', current_database() || '_writer');
    EXECUTE format('GRANT EXECUTE ON FUNCTION vigil_event_partition(date) TO %I', current_database() || '_writer');
    EXECUTE format('GRANT SELECT ON events TO %I', current_database() || '_reader');
END
$grants$;

ALTER TABLE events ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_scope ON events
    USING (vigil_tenant_visible(tenant)) WITH CHECK (vigil_tenant_visible(tenant));
