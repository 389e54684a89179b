//! The admin step: creates the streams and durable consumers the services
//! use. Services never create them (their NATS users may not); running this
//! twice is harmless.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::subjects::{DLQ_STREAM, DLQ_WILDCARD, EVENTS_STREAM, EVENTS_WILDCARD, WRITER_CONSUMER};

/// Retry the same `Nats-Msg-Id` within this window and JetStream drops the
/// copy: a device retry after a lost OK is deduplicated at the bus.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long a delivered message may stay unacknowledged before redelivery.
pub const WRITER_ACK_WAIT: Duration = Duration::from_secs(30);

/// Dead letters are kept this long for an operator to replay or discard.
pub const DLQ_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// How long the writer may hold a message unacknowledged before it is
    /// redelivered (to it or another writer): the recovery delay after a
    /// writer crash.
    pub writer_ack_wait: Duration,
    /// Bytes EVENTS may hold; when full, new publishes are refused (the
    /// gateway answers RESOURCE_EXHAUSTED) rather than old events dropped.
    pub max_bytes: i64,
    pub max_age: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            writer_ack_wait: WRITER_ACK_WAIT,
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
        consumer: &'static str,
        reason: String,
    },
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

/// Creates (or updates) the EVENTS and DLQ streams and the writer's consumer.
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
    events
        .get_or_create_consumer(
            WRITER_CONSUMER,
            consumer::pull::Config {
                durable_name: Some(WRITER_CONSUMER.to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: limits.writer_ack_wait,
                max_ack_pending: 20_000,
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| ProvisionError::Consumer {
            stream: EVENTS_STREAM,
            consumer: WRITER_CONSUMER,
            reason: e.to_string(),
        })?;
    Ok(())
}
