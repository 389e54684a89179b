-- Columns are named after the OCSF attributes they hold, as the payloads
-- are (vigil.event.v1 and vigil.finding.v1 are OCSF): events.uid is
-- metadata.uid, device_uid is device.uid, logged_time is
-- metadata.logged_time; findings.uid is finding_info.uid, analytic_uid is
-- finding_info.analytic.uid (the rule), start_time/end_time the window.
-- Keys, indexes and row-level-security policies follow a renamed column.
ALTER TABLE events RENAME COLUMN event_id TO uid;
ALTER TABLE events RENAME COLUMN device TO device_uid;
ALTER TABLE events RENAME COLUMN ingest_time TO logged_time;
ALTER TABLE findings RENAME COLUMN finding_id TO uid;
ALTER TABLE findings RENAME COLUMN rule_id TO analytic_uid;
ALTER TABLE findings RENAME COLUMN window_start TO start_time;
ALTER TABLE findings RENAME COLUMN window_end TO end_time;
