//! The events table: schema and idempotent batch insert.

use chrono::{DateTime, Utc};
use prost::Message;
use sqlx::PgPool;
use vigil_proto::event::v1::SecurityEvent;

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
            tenant: meta.tenant.clone(),
            event_id: uuid::Uuid::parse_str(&event.event_id)
                .map_err(|e| RowError(format!("event_id: {e}")))?,
            time: time(event.time, "time")?,
            severity_id: i16::try_from(event.severity_id)
                .map_err(|_| RowError("severity_id out of range".into()))?,
            class_uid: event.class_uid,
            activity_id: event.activity_id,
            status_id: i16::try_from(event.status_id)
                .map_err(|_| RowError("status_id out of range".into()))?,
            device: meta.device.clone(),
            message: event.message.clone(),
            ingest_time: time(meta.ingest_time, "metadata.ingest_time")?,
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
        "INSERT INTO events (tenant, event_id, time, severity_id, class_uid, activity_id, status_id, device, message, ingest_time, payload)
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::timestamptz[], $4::int2[], $5::int4[], $6::int4[], $7::int2[], $8::text[], $9::text[], $10::timestamptz[], $11::bytea[])
         ON CONFLICT (tenant, event_id) DO NOTHING",
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
