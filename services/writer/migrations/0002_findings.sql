-- Findings as the correlator emitted them, one row per finding at its
-- newest version: a replayed or older version never overwrites a newer one.
CREATE TABLE findings (
    tenant       text        NOT NULL,
    finding_id   text        NOT NULL,
    version      integer     NOT NULL,
    rule_id      text        NOT NULL,
    severity_id  smallint    NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    count        integer     NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- The whole vigil.finding.v1.Finding.
    payload      bytea       NOT NULL,
    PRIMARY KEY (tenant, finding_id)
);

CREATE INDEX findings_window_end ON findings (window_end DESC, finding_id DESC);
CREATE INDEX findings_tenant_window_end ON findings (tenant, window_end DESC, finding_id DESC);
CREATE INDEX findings_finding_id ON findings (finding_id);
