//! The tables the writer fills: schema, decoding messages into rows, and
//! idempotent batch inserts (events by binary COPY through a staging
//! table, into day partitions created on first sight).

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use prost::Message;
use sqlx::{PgConnection, PgPool};
use vigil_proto::audit::v1::AuditRecord;
use vigil_proto::event::v1::SecurityEvent;
use vigil_proto::finding::v1::Finding;

use crate::copy::CopyBuffer;

/// Migrations under `services/writer/migrations`, embedded.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// One row of `events`: the columns a query filters or orders by, and the
/// event as the gateway encoded it.
#[derive(Debug, Clone)]
pub struct Row {
    pub tenant: String,
    pub uid: uuid::Uuid,
    pub time: DateTime<Utc>,
    pub severity_id: i16,
    pub class_uid: i32,
    pub device_uid: String,
    pub logged_time: DateTime<Utc>,
    /// The event's bytes inside the NATS message (no re-encoding).
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RowError(String);

impl Row {
    /// The row of `event`, whose encoding is `payload`.
    pub fn new(event: &SecurityEvent, payload: Bytes) -> Result<Self, RowError> {
        let meta = event.metadata.as_ref();
        let time = |ms: i64, what: &str| {
            DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| RowError(format!("{what} {ms} out of range")))
        };
        Ok(Row {
            tenant: event.tenant_uid().to_owned(),
            uid: uuid::Uuid::parse_str(event.uid())
                .map_err(|e| RowError(format!("metadata.uid: {e}")))?,
            time: time(event.time, "time")?,
            severity_id: i16::try_from(event.severity_id)
                .map_err(|_| RowError("severity_id out of range".into()))?,
            class_uid: event.class_uid,
            device_uid: event.device_uid().to_owned(),
            logged_time: time(meta.map_or(0, |m| m.logged_time), "metadata.logged_time")?,
            payload,
        })
    }

    /// The UTC day of the partition holding the row.
    pub fn day(&self) -> NaiveDate {
        self.time.date_naive()
    }
}

/// The events of an `EventBatch`, each with its own bytes: a slice of
/// `payload` (field 1, repeated, length-delimited), so the stored payload
/// is exactly what the gateway published and nothing is encoded twice.
pub fn batch_events(payload: &Bytes) -> Result<Vec<(SecurityEvent, Bytes)>, String> {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    let mut buf: &[u8] = payload.as_ref();
    let mut events = Vec::new();
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(|e| e.to_string())?;
        if tag != 1 || wire_type != WireType::LengthDelimited {
            skip_field(wire_type, tag, &mut buf, DecodeContext::default())
                .map_err(|e| e.to_string())?;
            continue;
        }
        let len = decode_varint(&mut buf)
            .map_err(|e| e.to_string())
            .and_then(|n| usize::try_from(n).map_err(|e| e.to_string()))?;
        if len > buf.len() {
            return Err(format!(
                "events[{}]: {len} bytes announced, {} left",
                events.len(),
                buf.len()
            ));
        }
        let bytes = payload.slice_ref(&buf[..len]);
        buf = &buf[len..];
        let event = SecurityEvent::decode(bytes.as_ref())
            .map_err(|e| format!("events[{}]: {e}", events.len()))?;
        events.push((event, bytes));
    }
    Ok(events)
}

/// The columns of `events` a row fills, in COPY order.
const EVENT_COLUMNS: &str =
    "tenant, uid, time, severity_id, class_uid, device_uid, logged_time, payload";

/// `rows` as a binary COPY stream of [`EVENT_COLUMNS`].
pub fn encode_rows<'a>(rows: impl IntoIterator<Item = &'a Row> + Clone) -> Vec<u8> {
    let bytes: usize = rows
        .clone()
        .into_iter()
        .map(|r| r.payload.len() + 120)
        .sum();
    let mut copy = CopyBuffer::with_capacity(bytes);
    for r in rows {
        copy.row(8)
            .text(&r.tenant)
            .uuid(&r.uid)
            .timestamptz(&r.time)
            .int2(r.severity_id)
            .int4(r.class_uid)
            .text(&r.device_uid)
            .timestamptz(&r.logged_time)
            .bytea(&r.payload);
    }
    copy.finish()
}

/// Each writer session's staging table: a batch is COPYed in, then moved
/// into `events` by one `INSERT ... ON CONFLICT DO NOTHING` (COPY itself
/// cannot skip rows already stored). Emptied at every commit.
pub const STAGING_TABLE: &str = "CREATE TEMP TABLE IF NOT EXISTS events_incoming \
    (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS";

/// How every writer session starts: row-level security shows it every
/// tenant, and it has its staging table.
pub fn session() -> vigil_common::postgres::Session {
    vigil_common::postgres::Session {
        settings: vec![("vigil.tenants", "*".to_owned())],
        statements: vec![STAGING_TABLE],
    }
}

/// Inserts `rows` in `tx`, skipping those already present (same tenant,
/// time and uid). Returns how many were new. Their partitions must exist.
async fn insert_events(conn: &mut PgConnection, rows: &[&Row]) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let stream = encode_rows(rows.iter().copied());
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY events_incoming ({EVENT_COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    copy.send(stream).await?;
    copy.finish().await?;
    let result = sqlx::query(
        "INSERT INTO events (tenant, uid, time, severity_id, class_uid, device_uid, logged_time, payload)
         SELECT tenant, uid, time, severity_id, class_uid, device_uid, logged_time, payload FROM events_incoming
         ON CONFLICT DO NOTHING",
    )
    .execute(&mut *conn)
    .await?;
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

    /// The Postgres table the sink's rows go to.
    pub fn table(self) -> &'static str {
        match self {
            Sink::Events => "events",
            Sink::Findings => "findings",
            Sink::Audit => "audit",
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
    pub fn decode(self, payload: &Bytes) -> Result<Vec<Record>, String> {
        match self {
            Sink::Events => batch_events(payload)
                .map_err(|e| format!("not a vigil.event.v1.EventBatch: {e}"))?
                .into_iter()
                .enumerate()
                .map(|(i, (event, bytes))| {
                    Row::new(&event, bytes)
                        .map(Record::Event)
                        .map_err(|error| format!("events[{i}]: {error}"))
                })
                .collect(),
            Sink::Findings => {
                let finding = Finding::decode(payload.as_ref())
                    .map_err(|e| format!("not a vigil.finding.v1.Finding: {e}"))?;
                Ok(vec![Record::Finding(
                    FindingRow::try_from(finding).map_err(|e| e.to_string())?,
                )])
            }
            Sink::Audit => {
                let record = AuditRecord::decode(payload.as_ref())
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
async fn insert_audit(conn: &mut PgConnection, records: &[Record]) -> Result<u64, sqlx::Error> {
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
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected())
}

/// Where the writer stores rows: its pool, and the event partitions it
/// knows exist.
pub struct Store {
    pub pool: PgPool,
    partitions: Mutex<HashSet<NaiveDate>>,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            partitions: Mutex::new(HashSet::new()),
        }
    }

    /// Makes sure the day partitions of `rows` exist, and the next day's
    /// (so midnight never waits for DDL). Each is created once, by the
    /// owner's `vigil_event_partition` (the writer has no DDL privilege),
    /// in its own transaction.
    async fn ensure_partitions(&self, rows: &[&Row]) -> Result<(), sqlx::Error> {
        let missing: Vec<NaiveDate> = {
            let known = self
                .partitions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut days: Vec<NaiveDate> = rows
                .iter()
                .map(|r| r.day())
                .flat_map(|d| [Some(d), d.succ_opt()])
                .flatten()
                .filter(|d| !known.contains(d))
                .collect();
            days.sort_unstable();
            days.dedup();
            days
        };
        for day in missing {
            sqlx::query("SELECT vigil_event_partition($1)")
                .bind(day)
                .execute(&self.pool)
                .await?;
            self.partitions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(day);
        }
        Ok(())
    }

    /// Stores events (skipping known ones), audit records (skipping known
    /// ones) and findings (keeping the newest version) in one transaction.
    /// Returns how many rows were new or newer.
    pub async fn insert(&self, records: &[Record]) -> Result<u64, sqlx::Error> {
        let events: Vec<&Row> = records
            .iter()
            .filter_map(|r| match r {
                Record::Event(e) => Some(e),
                _ => None,
            })
            .collect();
        self.ensure_partitions(&events).await?;
        let mut tx = self.pool.begin().await?;
        let stored = match insert_records(&mut tx, &events, records).await {
            Err(error) if is_missing_partition(&error) => {
                // A partition was dropped (retention) after we saw it:
                // forget what we know and create them again.
                drop(tx);
                self.partitions
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clear();
                self.ensure_partitions(&events).await?;
                tx = self.pool.begin().await?;
                insert_records(&mut tx, &events, records).await?
            }
            other => other?,
        };
        tx.commit().await?;
        Ok(stored)
    }
}

/// SQLSTATE 23514 without a constraint: "no partition of relation found
/// for row" (`events` has no CHECK constraint that could raise it).
fn is_missing_partition(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if db.code().as_deref() == Some("23514") && db.constraint().is_none())
}

async fn insert_records(
    conn: &mut PgConnection,
    events: &[&Row],
    records: &[Record],
) -> Result<u64, sqlx::Error> {
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
    let mut stored = insert_events(conn, events).await?;
    stored += insert_audit(conn, records).await?;
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
    .execute(&mut *conn)
    .await?;
    stored += result.rows_affected();
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::event::v1::{EventBatch, Metadata};

    fn event(uid: &str, time: i64) -> SecurityEvent {
        SecurityEvent {
            class_uid: 3002,
            activity_id: 1,
            severity_id: 4,
            time,
            message: "m".into(),
            metadata: Some(Metadata {
                uid: uid.into(),
                tenant_uid: "acme".into(),
                logged_time: time + 1,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn each_event_of_a_batch_keeps_the_bytes_the_gateway_published() -> Result<(), String> {
        let events = vec![
            event("6a0b5d52-3a38-4bd1-9b1c-7b3f3f1a0c01", 1_700_000_000_000),
            event("6a0b5d52-3a38-4bd1-9b1c-7b3f3f1a0c02", 1_700_000_000_500),
        ];
        let payload = Bytes::from(
            EventBatch {
                events: events.clone(),
            }
            .encode_to_vec(),
        );
        let decoded = batch_events(&payload)?;
        assert_eq!(decoded.len(), 2);
        for ((got, bytes), want) in decoded.iter().zip(&events) {
            assert_eq!(got, want);
            assert_eq!(bytes.as_ref(), want.encode_to_vec().as_slice());
        }
        let rows = Sink::Events.decode(&payload)?;
        let Record::Event(row) = &rows[1] else {
            panic!("an event row")
        };
        assert_eq!(row.tenant, "acme");
        assert_eq!(row.time.timestamp_millis(), 1_700_000_000_500);
        assert_eq!(row.logged_time.timestamp_millis(), 1_700_000_000_501);
        Ok(())
    }

    #[test]
    fn a_truncated_batch_is_refused_not_half_read() {
        let payload = EventBatch {
            events: vec![event("6a0b5d52-3a38-4bd1-9b1c-7b3f3f1a0c01", 1)],
        }
        .encode_to_vec();
        let cut = Bytes::copy_from_slice(&payload[..payload.len() - 3]);
        assert!(batch_events(&cut).is_err());
        assert!(Sink::Events.decode(&cut).is_err());
    }
}
