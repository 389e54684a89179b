-- ListEvents with a device or class filter walks one of these in order
-- (issue #11). Without them the walk went through the tenant's key and
-- filtered: a device or class the tenant has few or no events of made the
-- walk read the tenant's whole history (2.3 s for a device filter of a
-- three-tenant analyst at 10M rows). Measured cost on the insert rate:
-- docs/perf.md.
CREATE INDEX events_tenant_device_time ON events (tenant, device_uid, time DESC, uid DESC);
CREATE INDEX events_tenant_class_time ON events (tenant, class_uid, time DESC, uid DESC);
