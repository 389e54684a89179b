//! The events table: schema and idempotent batch insert.

use chrono::{DateTime, Utc};
use prost::Message;
use sqlx::PgPool;
use vigil_proto::audit::v1::AuditRecord;
use vigil_proto::event::v1::{EventBatch, SecurityEvent};
use vigil_proto::finding::v1::Finding;

/// Migrations under `services/writer/migrations`, embedded.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// One row of `events`.
#[derive(Debug, Clone)]
pub struct Row {
    pub tenant: String,
    pub event_id: uuid::Uuid,
    pub time: DateTime<Utc>,
    pub severity_id: i16,
    pub class_uid: i32,
    pub activity_id: i32,
    pub status_id: i16,
    pub device: String,
    pub message: String,
    pub ingest_time: DateTime<Utc>,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RowError(String);

impl TryFrom<SecurityEvent> for Row {
    type Error = RowError;

    fn try_from(event: SecurityEvent) -> Result<Self, RowError> {
        let meta = event.metadata.clone().unwrap_or_default();
        let time = |ms: i64, what: &str| {
            DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| RowError(format!("{what} {ms} out of range")))
        };
        Ok(Row {
            tenant: meta.tenant_uid.clone(),
            event_id: uuid::Uuid::parse_str(&meta.uid)
                .map_err(|e| RowError(format!("metadata.uid: {e}")))?,
            time: time(event.time, "time")?,
            severity_id: i16::try_from(event.severity_id)
                .map_err(|_| RowError("severity_id out of range".into()))?,
            class_uid: event.class_uid,
            activity_id: event.activity_id,
            status_id: i16::try_from(event.status_id)
                .map_err(|_| RowError("status_id out of range".into()))?,
            device: event.device_uid().to_owned(),
            message: event.message.clone(),
            ingest_time: time(meta.logged_time, "metadata.logged_time")?,
            payload: event.encode_to_vec(),
        })
    }
}

/// Inserts rows in one transaction; rows already present are skipped.
/// Returns how many were new.
pub async fn insert_events(pool: &PgPool, rows: &[Row]) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut tenant = Vec::with_capacity(rows.len());
    let mut event_id = Vec::with_capacity(rows.len());
    let mut time = Vec::with_capacity(rows.len());
    let mut severity = Vec::with_capacity(rows.len());
    let mut class = Vec::with_capacity(rows.len());
    let mut activity = Vec::with_capacity(rows.len());
    let mut status = Vec::with_capacity(rows.len());
    let mut device = Vec::with_capacity(rows.len());
    let mut message = Vec::with_capacity(rows.len());
    let mut ingest = Vec::with_capacity(rows.len());
    let mut payload = Vec::with_capacity(rows.len());
    for r in rows {
        tenant.push(r.tenant.as_str());
        event_id.push(r.event_id);
        time.push(r.time);
        severity.push(r.severity_id);
        class.push(r.class_uid);
        activity.push(r.activity_id);
        status.push(r.status_id);
        device.push(r.device.as_str());
        message.push(r.message.as_str());
        ingest.push(r.ingest_time);
        payload.push(r.payload.as_slice());
    }
    let mut tx = pool.begin().await?;
    let result = sqlx::query(
        "INSERT INTO events (tenant, uid, time, severity_id, class_uid, activity_id, status_id, device_uid, message, logged_time, payload)
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::timestamptz[], $4::int2[], $5::int4[], $6::int4[], $7::int2[], $8::text[], $9::text[], $10::timestamptz[], $11::bytea[])
         ON CONFLICT (tenant, uid) DO NOTHING",
    )
    .bind(&tenant)
    .bind(&event_id)
    .bind(&time)
    .bind(&severity)
    .bind(&class)
    .bind(&activity)
    .bind(&status)
    .bind(&device)
    .bind(&message)
    .bind(&ingest)
    .bind(&payload)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(result.rows_affected())
}

/// What a consumer's messages carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// `EventBatch` messages on EVENTS.
    Events,
    /// `Finding` messages on FINDINGS.
    Findings,
    /// `AuditRecord` messages on AUDIT.
    Audit,
}

/// One row to store.
#[derive(Debug, Clone)]
pub enum Record {
    Event(Row),
    Finding(FindingRow),
    Audit(AuditRow),
}

/// One row of `audit`.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub audit_id: uuid::Uuid,
    pub time: DateTime<Utc>,
    pub service: String,
    pub caller: String,
    pub rpc: String,
    pub filter: serde_json::Value,
    pub rows: i32,
    pub outcome: String,
}

impl TryFrom<AuditRecord> for AuditRow {
    type Error = RowError;

    fn try_from(a: AuditRecord) -> Result<Self, RowError> {
        Ok(AuditRow {
            audit_id: uuid::Uuid::parse_str(&a.audit_id)
                .map_err(|e| RowError(format!("audit_id: {e}")))?,
            time: DateTime::from_timestamp_millis(a.time)
                .ok_or_else(|| RowError(format!("time {} out of range", a.time)))?,
            filter: serde_json::from_str(&a.filter_json)
                .map_err(|e| RowError(format!("filter_json: {e}")))?,
            rows: i32::try_from(a.rows).map_err(|_| RowError("rows out of range".into()))?,
            service: a.service,
            caller: a.caller,
            rpc: a.rpc,
            outcome: a.outcome,
        })
    }
}

impl Sink {
    /// Every stream the writer stores.
    pub const ALL: [Sink; 3] = [Sink::Events, Sink::Findings, Sink::Audit];

    /// The writer's durable consumer on [`Self::stream`].
    pub fn consumer(self) -> &'static str {
        match self {
            Sink::Events => vigil_common::subjects::WRITER_CONSUMER,
            Sink::Findings => vigil_common::subjects::WRITER_FINDINGS_CONSUMER,
            Sink::Audit => vigil_common::subjects::WRITER_AUDIT_CONSUMER,
        }
    }

    pub fn stream(self) -> &'static str {
        match self {
            Sink::Events => vigil_common::subjects::EVENTS_STREAM,
            Sink::Findings => vigil_common::subjects::FINDINGS_STREAM,
            Sink::Audit => vigil_common::subjects::AUDIT_STREAM,
        }
    }

    /// Decodes a message's payload into rows; an error makes it poison.
    pub fn decode(self, payload: &[u8]) -> Result<Vec<Record>, String> {
        match self {
            Sink::Events => {
                let batch = EventBatch::decode(payload)
                    .map_err(|e| format!("not a vigil.event.v1.EventBatch: {e}"))?;
                batch
                    .events
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| {
                        Row::try_from(e)
                            .map(Record::Event)
                            .map_err(|error| format!("events[{i}]: {error}"))
                    })
                    .collect()
            }
            Sink::Findings => {
                let finding = Finding::decode(payload)
                    .map_err(|e| format!("not a vigil.finding.v1.Finding: {e}"))?;
                Ok(vec![Record::Finding(
                    FindingRow::try_from(finding).map_err(|e| e.to_string())?,
                )])
            }
            Sink::Audit => {
                let record = AuditRecord::decode(payload)
                    .map_err(|e| format!("not a vigil.audit.v1.AuditRecord: {e}"))?;
                Ok(vec![Record::Audit(
                    AuditRow::try_from(record).map_err(|e| e.to_string())?,
                )])
            }
        }
    }
}

/// One row of `findings`.
#[derive(Debug, Clone)]
pub struct FindingRow {
    pub tenant: String,
    pub finding_id: String,
    pub version: i32,
    pub rule_id: String,
    pub severity_id: i16,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub count: i32,
    pub payload: Vec<u8>,
}

impl TryFrom<Finding> for FindingRow {
    type Error = RowError;

    fn try_from(f: Finding) -> Result<Self, RowError> {
        let time = |ms: i64, what: &str| {
            DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| RowError(format!("{what} {ms} out of range")))
        };
        if f.tenant_uid().is_empty() || f.uid().is_empty() {
            return Err(RowError(
                "finding without metadata.tenant_uid or finding_info.uid".into(),
            ));
        }
        Ok(FindingRow {
            tenant: f.tenant_uid().to_owned(),
            finding_id: f.uid().to_owned(),
            version: f.version(),
            rule_id: f.rule_id().to_owned(),
            severity_id: i16::try_from(f.severity_id)
                .map_err(|_| RowError("severity_id out of range".into()))?,
            window_start: time(f.start_time, "start_time")?,
            window_end: time(f.end_time, "end_time")?,
            count: f.count,
            payload: f.encode_to_vec(),
        })
    }
}

/// Appends audit records; a re-delivered record (same id) is skipped.
async fn insert_audit(pool: &PgPool, records: &[Record]) -> Result<u64, sqlx::Error> {
    let audit: Vec<&AuditRow> = records
        .iter()
        .filter_map(|r| match r {
            Record::Audit(a) => Some(a),
            _ => None,
        })
        .collect();
    if audit.is_empty() {
        return Ok(0);
    }
    let result = sqlx::query(
        "INSERT INTO audit (audit_id, time, service, caller, rpc, filter, rows, outcome)
         SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::int4[], $8::text[])
         ON CONFLICT (audit_id) DO NOTHING",
    )
    .bind(audit.iter().map(|a| a.audit_id).collect::<Vec<_>>())
    .bind(audit.iter().map(|a| a.time).collect::<Vec<_>>())
    .bind(audit.iter().map(|a| a.service.as_str()).collect::<Vec<_>>())
    .bind(audit.iter().map(|a| a.caller.as_str()).collect::<Vec<_>>())
    .bind(audit.iter().map(|a| a.rpc.as_str()).collect::<Vec<_>>())
    .bind(audit.iter().map(|a| a.filter.clone()).collect::<Vec<_>>())
    .bind(audit.iter().map(|a| a.rows).collect::<Vec<_>>())
    .bind(audit.iter().map(|a| a.outcome.as_str()).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Stores events (skipping known ones) and findings (keeping the newest
/// version) in one transaction.
pub async fn insert(pool: &PgPool, records: &[Record]) -> Result<u64, sqlx::Error> {
    let events: Vec<Row> = records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    let mut newest: std::collections::BTreeMap<(String, String), FindingRow> =
        std::collections::BTreeMap::new();
    for r in records {
        if let Record::Finding(f) = r {
            let key = (f.tenant.clone(), f.finding_id.clone());
            if newest.get(&key).is_none_or(|old| old.version < f.version) {
                newest.insert(key, f.clone());
            }
        }
    }
    let mut stored = insert_events(pool, &events).await?;
    stored += insert_audit(pool, records).await?;
    if newest.is_empty() {
        return Ok(stored);
    }
    let findings: Vec<FindingRow> = newest.into_values().collect();
    let result = sqlx::query(
        "INSERT INTO findings (tenant, uid, version, analytic_uid, severity_id, start_time, end_time, count, payload)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::text[], $5::int2[], $6::timestamptz[], $7::timestamptz[], $8::int4[], $9::bytea[])
         ON CONFLICT (tenant, uid) DO UPDATE SET
           version = EXCLUDED.version, analytic_uid = EXCLUDED.analytic_uid, severity_id = EXCLUDED.severity_id,
           start_time = EXCLUDED.start_time, end_time = EXCLUDED.end_time, count = EXCLUDED.count,
           payload = EXCLUDED.payload, updated_at = now()
         WHERE findings.version < EXCLUDED.version",
    )
    .bind(findings.iter().map(|f| f.tenant.as_str()).collect::<Vec<_>>())
    .bind(findings.iter().map(|f| f.finding_id.as_str()).collect::<Vec<_>>())
    .bind(findings.iter().map(|f| f.version).collect::<Vec<_>>())
    .bind(findings.iter().map(|f| f.rule_id.as_str()).collect::<Vec<_>>())
    .bind(findings.iter().map(|f| f.severity_id).collect::<Vec<_>>())
    .bind(findings.iter().map(|f| f.window_start).collect::<Vec<_>>())
    .bind(findings.iter().map(|f| f.window_end).collect::<Vec<_>>())
    .bind(findings.iter().map(|f| f.count).collect::<Vec<_>>())
    .bind(findings.iter().map(|f| f.payload.as_slice()).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    stored += result.rows_affected();
    Ok(stored)
}
