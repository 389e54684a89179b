//! The admin step: creates the streams and durable consumers the services
//! use. Services never create them (their NATS users may not); running this
//! twice is harmless.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::subjects::{
    self, CORRELATOR_BUCKET, DLQ_STREAM, DLQ_WILDCARD, EVENTS_STREAM, EVENTS_WILDCARD,
    FINDINGS_STREAM, FINDINGS_WILDCARD, WRITER_CONSUMER, WRITER_FINDINGS_CONSUMER,
};

/// Retry the same `Nats-Msg-Id` within this window and JetStream drops the
/// copy: a device retry after a lost OK is deduplicated at the bus.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long a delivered message may stay unacknowledged before redelivery.
pub const WRITER_ACK_WAIT: Duration = Duration::from_secs(30);

/// Dead letters are kept this long for an operator to replay or discard.
pub const DLQ_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// How long a consumer (writer, correlator) may hold a message
    /// unacknowledged before it is redelivered: the recovery delay after a
    /// crash.
    pub ack_wait: Duration,
    /// Correlator partitions (each its own durable consumer and checkpoint).
    pub correlator_partitions: u32,
    /// Bytes EVENTS may hold; when full, new publishes are refused (the
    /// gateway answers RESOURCE_EXHAUSTED) rather than old events dropped.
    pub max_bytes: i64,
    pub max_age: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            ack_wait: WRITER_ACK_WAIT,
            correlator_partitions: 1,
            max_bytes: 5 * 1024 * 1024 * 1024,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("cannot create stream {stream}: {reason}")]
    Stream {
        stream: &'static str,
        reason: String,
    },
    #[error("cannot create consumer {consumer} on {stream}: {reason}")]
    Consumer {
        stream: &'static str,
        consumer: String,
        reason: String,
    },
    #[error("cannot create key-value bucket {bucket}: {reason}")]
    Bucket {
        bucket: &'static str,
        reason: String,
    },
    #[error("correlator partitions must be 1 to {max}")]
    Partitions { max: u32 },
}

/// Creates (or updates) a stream.
async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
    name: &'static str,
) -> Result<stream::Stream, ProvisionError> {
    let stream_error = |e: &dyn std::fmt::Display| ProvisionError::Stream {
        stream: name,
        reason: e.to_string(),
    };
    match js.get_stream(name).await {
        Ok(_) => {
            js.update_stream(&config)
                .await
                .map_err(|e| stream_error(&e))?;
            js.get_stream(name).await.map_err(|e| stream_error(&e))
        }
        Err(_) => js.create_stream(config).await.map_err(|e| stream_error(&e)),
    }
}

/// Creates (or updates) the EVENTS, FINDINGS and DLQ streams, the
/// writer's and correlators' consumers, and the correlator checkpoint bucket.
pub async fn provision(
    client: &async_nats::Client,
    limits: &StreamLimits,
) -> Result<(), ProvisionError> {
    let js = jetstream::new(client.clone());
    let dlq = stream::Config {
        name: DLQ_STREAM.to_owned(),
        subjects: vec![DLQ_WILDCARD.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: DLQ_MAX_AGE,
        // A consumer that dead-letters, crashes and dead-letters the same
        // message again stores it once.
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: 1,
        ..Default::default()
    };
    ensure_stream(&js, dlq, DLQ_STREAM).await?;
    let config = stream::Config {
        name: EVENTS_STREAM.to_owned(),
        subjects: vec![EVENTS_WILDCARD.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::New,
        max_bytes: limits.max_bytes,
        max_age: limits.max_age,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: 1,
        ..Default::default()
    };
    let events = ensure_stream(&js, config, EVENTS_STREAM).await?;
    durable(&events, EVENTS_STREAM, WRITER_CONSUMER, limits.ack_wait).await?;
    if !(1..=subjects::MAX_CORRELATOR_PARTITIONS).contains(&limits.correlator_partitions) {
        return Err(ProvisionError::Partitions {
            max: subjects::MAX_CORRELATOR_PARTITIONS,
        });
    }
    for partition in 0..limits.correlator_partitions {
        let name = subjects::correlator_consumer(partition);
        durable(&events, EVENTS_STREAM, &name, limits.ack_wait).await?;
    }
    let findings = stream::Config {
        name: FINDINGS_STREAM.to_owned(),
        subjects: vec![FINDINGS_WILDCARD.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: limits.max_age,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: 1,
        ..Default::default()
    };
    let findings = ensure_stream(&js, findings, FINDINGS_STREAM).await?;
    durable(
        &findings,
        FINDINGS_STREAM,
        WRITER_FINDINGS_CONSUMER,
        limits.ack_wait,
    )
    .await?;
    let audit = stream::Config {
        name: subjects::AUDIT_STREAM.to_owned(),
        subjects: vec![subjects::AUDIT_WILDCARD.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        // Append-only: no message delete, no purge (JetStream refuses both).
        deny_delete: true,
        deny_purge: true,
        // The audit trail is never discarded to make room.
        discard: stream::DiscardPolicy::New,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: 1,
        ..Default::default()
    };
    let audit = ensure_stream(&js, audit, subjects::AUDIT_STREAM).await?;
    durable(
        &audit,
        subjects::AUDIT_STREAM,
        subjects::WRITER_AUDIT_CONSUMER,
        limits.ack_wait,
    )
    .await?;
    if js.get_key_value(CORRELATOR_BUCKET).await.is_err() {
        js.create_key_value(jetstream::kv::Config {
            bucket: CORRELATOR_BUCKET.to_owned(),
            history: 1,
            storage: stream::StorageType::File,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| ProvisionError::Bucket {
            bucket: CORRELATOR_BUCKET,
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// A durable pull consumer with explicit acks, from the start of `stream`.
async fn durable(
    stream: &stream::Stream,
    stream_name: &'static str,
    name: &str,
    ack_wait: Duration,
) -> Result<(), ProvisionError> {
    stream
        .get_or_create_consumer(
            name,
            consumer::pull::Config {
                durable_name: Some(name.to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                max_ack_pending: 20_000,
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            },
        )
        .await
        .map(|_| ())
        .map_err(|e| ProvisionError::Consumer {
            stream: stream_name,
            consumer: name.to_owned(),
            reason: e.to_string(),
        })
}
