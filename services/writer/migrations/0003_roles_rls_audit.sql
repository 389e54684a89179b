-- Least privilege in the database. Run by the migrating role (the owner of
-- the schema, which must be allowed to CREATE ROLE); the services connect as
-- their own roles, named after the database so several vigil databases can
-- share a cluster:
--   <database>_writer  INSERT and SELECT on events and audit, INSERT, SELECT
--                      and UPDATE (newer versions) on findings; no DELETE,
--                      no DDL
--   <database>_reader  SELECT on events and findings (and on audit, whose
--                      rows only an all-tenants session sees); nothing else
-- Neither owns anything, so row-level security applies to both.
DO $roles$
DECLARE
    writer text := current_database() || '_writer';
    reader text := current_database() || '_reader';
    role   text;
BEGIN
    FOREACH role IN ARRAY ARRAY[writer, reader] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT', role);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            -- Created by an earlier run, or concurrently.
            NULL;
        END;
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), role);
        EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', role);
    END LOOP;
    EXECUTE format('GRANT SELECT, INSERT ON events TO %I', writer);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON findings TO %I', writer);
    EXECUTE format('GRANT SELECT ON events, findings TO %I', reader);
END
$roles$;

REVOKE ALL ON events, findings FROM PUBLIC;

-- Tenant isolation, the second time (the reader's queries are the first):
-- a session sees the rows of the tenants in the transaction-local setting
-- vigil.tenants (comma-separated, or '*' for all). Unset means nothing.
CREATE FUNCTION vigil_tenant_visible(t text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(current_setting('vigil.tenants', true), '') = '*'
        OR t = ANY (string_to_array(nullif(current_setting('vigil.tenants', true), ''), ','))
$$;

ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE findings ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_scope ON events
    USING (vigil_tenant_visible(tenant)) WITH CHECK (vigil_tenant_visible(tenant));
CREATE POLICY tenant_scope ON findings
    USING (vigil_tenant_visible(tenant)) WITH CHECK (vigil_tenant_visible(tenant));

-- Who queried what, as the reader published it on audit.reader. Append-only
-- for every role: no grant allows UPDATE or DELETE, and a trigger refuses
-- them (and TRUNCATE) even for the owner.
CREATE TABLE audit (
    audit_id    uuid        PRIMARY KEY,
    time        timestamptz NOT NULL,
    service     text        NOT NULL,
    caller      text        NOT NULL,
    rpc         text        NOT NULL,
    filter      jsonb       NOT NULL,
    rows        integer     NOT NULL,
    outcome     text        NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_time ON audit (time DESC);
CREATE INDEX audit_caller_time ON audit (caller, time DESC);
REVOKE ALL ON audit FROM PUBLIC;
DO $grants$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT ON audit TO %I', current_database() || '_writer');
    -- For the admin-only ListAuditRecords; RLS below shows the rows only to
    -- a session scoped to every tenant.
    EXECUTE format('GRANT SELECT ON audit TO %I', current_database() || '_reader');
END
$grants$;
ALTER TABLE audit ENABLE ROW LEVEL SECURITY;
CREATE POLICY all_tenants_only ON audit
    USING (coalesce(current_setting('vigil.tenants', true), '') = '*')
    WITH CHECK (coalesce(current_setting('vigil.tenants', true), '') = '*');

CREATE FUNCTION vigil_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION vigil_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION vigil_audit_append_only();
