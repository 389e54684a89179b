-- Events as the gateway accepted them. (tenant, event_id) is the identity:
-- a re-delivered or re-sent event hits the primary key and is skipped, and
-- one tenant can never shadow another's event by reusing its id.
CREATE TABLE events (
    tenant       text        NOT NULL,
    event_id     uuid        NOT NULL,
    time         timestamptz NOT NULL,
    severity_id  smallint    NOT NULL,
    class_uid    integer     NOT NULL,
    activity_id  integer     NOT NULL,
    status_id    smallint    NOT NULL,
    device       text        NOT NULL,
    message      text        NOT NULL,
    ingest_time  timestamptz NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    -- The whole vigil.event.v1.SecurityEvent, so queries return every field.
    payload      bytea       NOT NULL,
    PRIMARY KEY (tenant, event_id)
);

-- Newest first within a tenant (keyset pagination on time, event_id).
CREATE INDEX events_tenant_time ON events (tenant, time DESC, event_id DESC);
-- Newest first across tenants (operators).
CREATE INDEX events_time ON events (time DESC, event_id DESC);
-- "The newest N events of a tenant at HIGH or above": the analyst's first
-- question, answered by walking this small index.
CREATE INDEX events_tenant_high_time ON events (tenant, time DESC, event_id DESC) WHERE severity_id BETWEEN 4 AND 6;
CREATE INDEX events_high_time ON events (time DESC, event_id DESC) WHERE severity_id BETWEEN 4 AND 6;
-- GetEvent by id.
CREATE INDEX events_event_id ON events (event_id);
