//! What happens to the messages the writer pulled.
//!
//! - All decode and insert: one transaction, commit, then ack each.
//! - Postgres unavailable (connection lost, pool timeout, server shutting
//!   down...): nothing is acked or naked; the batch is held and the insert
//!   retried with backoff, with progress acks so JetStream does not hand the
//!   messages to another writer meanwhile; the failed insert marks the
//!   Postgres dependency down at once (health NOT_SERVING), the commit
//!   that succeeds marks it up.
//!   Deliveries are not spent on an outage, so an outage never
//!   dead-letters good events.
//! - A message that cannot be stored (undecodable, or its rows violate a
//!   constraint, SQLSTATE class 22 or 23): the rest of the batch is
//!   committed without it; it is naked with an exponential delay and,
//!   on its `max_deliveries`-th delivery, published to
//!   `dlq.<stream>.writer` with the reason and its original subject and
//!   headers, then acked. Messages behind it never wait for it.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use vigil_common::readiness::Dependency;
use vigil_common::subjects::{self, WRITER_CONSUMER, dlq_headers};

use crate::metrics::WriterMetrics;
use crate::store::{Record, Sink, Store};

/// How the writer treats a batch; see the module docs.
#[derive(Clone)]
pub struct Delivery {
    pub store: Arc<Store>,
    pub js: jetstream::Context,
    pub max_deliveries: i64,
    pub retry_base: Duration,
    /// What the messages carry (events or findings).
    pub sink: Sink,
    /// Readiness: Postgres is down while an insert cannot reach it.
    pub postgres: Dependency,
    pub metrics: WriterMetrics,
}

const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);
/// How often one message's insert is retried at once after losing a race
/// with another transaction before it counts as Postgres trouble.
const MAX_CONFLICT_RETRIES: usize = 10;

struct Decoded {
    message: jetstream::Message,
    rows: Vec<Record>,
}

/// Whether a failed insert is about the data (poison) or about Postgres
/// being unreachable or unwell (hold and retry).
pub fn is_data_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23")),
        _ => false,
    }
}

/// Whether a failed insert lost a race with another of the writer's own
/// transactions (deadlock or serialization failure, SQLSTATE class 40:
/// two batches re-delivering the same events in different orders): it is
/// retried at once; Postgres is fine.
pub fn is_conflict(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("40")),
        _ => false,
    }
}

impl Delivery {
    /// The same policy for another stream's messages.
    pub fn for_sink(self, sink: Sink) -> Self {
        Self { sink, ..self }
    }

    /// One insert transaction, measured.
    async fn insert(&self, rows: &[Record]) -> Result<u64, sqlx::Error> {
        let start = std::time::Instant::now();
        let result = self.store.insert(rows).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if is_data_error(e) => "refused",
            Err(e) if is_conflict(e) => "conflict",
            Err(_) => "unavailable",
        };
        let table = self.sink.table();
        self.metrics
            .insert_duration
            .with_label_values(&[table, outcome])
            .observe(start.elapsed().as_secs_f64());
        if let Ok(inserted) = &result {
            let offered = rows.len() as u64;
            self.metrics
                .rows
                .with_label_values(&[table, "inserted"])
                .inc_by(*inserted);
            self.metrics
                .rows
                .with_label_values(&[table, "duplicate"])
                .inc_by(offered.saturating_sub(*inserted));
            self.metrics
                .batch_rows
                .with_label_values(&[table])
                .observe(offered as f64);
            let now = vigil_common::now_millis();
            for row in rows {
                if let Record::Event(event) = row {
                    let delay = now - event.logged_time.timestamp_millis();
                    self.metrics
                        .ingest_to_commit
                        .observe(delay.max(0) as f64 / 1000.0);
                }
            }
        }
        result
    }

    fn count(&self, result: &str, messages: usize) {
        self.metrics
            .messages
            .with_label_values(&[self.sink.stream(), result])
            .inc_by(messages as u64);
    }

    /// Stores what can be stored, acks it after commit, and routes the rest.
    /// Returns once every message is acked, naked or dead-lettered, or on
    /// shutdown (then unacked messages are redelivered later).
    pub async fn handle(&self, messages: Vec<jetstream::Message>, shutdown: &CancellationToken) {
        let mut decoded = Vec::with_capacity(messages.len());
        for message in messages {
            match self.sink.decode(&message.payload) {
                Ok(rows) => decoded.push(Decoded { message, rows }),
                Err(reason) => self.poison(&message, &reason).await,
            }
        }
        if decoded.is_empty() {
            return;
        }
        let rows: Vec<Record> = decoded
            .iter()
            .flat_map(|d| d.rows.iter().cloned())
            .collect();
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.insert(&rows).await {
                Ok(inserted) => {
                    tracing::debug!(
                        messages = decoded.len(),
                        events = rows.len(),
                        inserted,
                        "batch committed"
                    );
                    self.postgres.up();
                    for d in &decoded {
                        ack(&d.message).await;
                    }
                    self.count("committed", decoded.len());
                    return;
                }
                Err(error) if is_data_error(&error) => {
                    tracing::warn!(%error, "batch refused by postgres; storing its messages one by one");
                    return self.isolate(decoded).await;
                }
                Err(error) if is_conflict(&error) => {
                    tracing::debug!(%error, "batch lost a race with another; retrying");
                    tokio::task::yield_now().await;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "postgres unavailable; holding the batch");
                    self.postgres.down();
                    for d in &decoded {
                        // Keep the messages ours while we wait.
                        let _ = d.message.ack_with(AckKind::Progress).await;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => {
                            // Hand them back now rather than after ack_wait.
                            for d in &decoded {
                                let _ = d.message.ack_with(AckKind::Nak(None)).await;
                            }
                            return;
                        }
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The batch had a poison message: store each message on its own.
    async fn isolate(&self, decoded: Vec<Decoded>) {
        for d in decoded {
            // A lost race with another batch (SQLSTATE class 40) says
            // nothing about this message: retry it at once, as `handle`
            // does, rather than spend one of its deliveries.
            let mut result = self.insert(&d.rows).await;
            for _ in 0..MAX_CONFLICT_RETRIES {
                match &result {
                    Err(error) if is_conflict(error) => {
                        tokio::task::yield_now().await;
                        result = self.insert(&d.rows).await;
                    }
                    _ => break,
                }
            }
            match result {
                Ok(_) => {
                    ack(&d.message).await;
                    self.count("committed", 1);
                }
                Err(error) if is_data_error(&error) => {
                    self.poison(&d.message, &format!("postgres refused: {error}"))
                        .await
                }
                Err(error) => {
                    tracing::warn!(%error, "postgres unavailable while isolating a poison message");
                    let _ = d
                        .message
                        .ack_with(AckKind::Nak(Some(self.retry_base)))
                        .await;
                }
            }
        }
    }

    /// A message that could not be stored: retry later, or dead-letter it
    /// once it has had `max_deliveries` deliveries.
    async fn poison(&self, message: &jetstream::Message, reason: &str) {
        let (deliveries, stream_sequence) = match message.info() {
            Ok(info) => (info.delivered, info.stream_sequence),
            Err(_) => (1, 0),
        };
        if deliveries < self.max_deliveries {
            let exponent = u32::try_from(deliveries.saturating_sub(1))
                .unwrap_or(u32::MAX)
                .min(16);
            let delay = self
                .retry_base
                .saturating_mul(2u32.saturating_pow(exponent))
                .min(MAX_RETRY_DELAY);
            tracing::warn!(subject = %message.subject, stream_sequence, deliveries, reason, retry_in = ?delay, "message cannot be stored; will retry");
            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            self.count("retried", 1);
            return;
        }
        match self
            .dead_letter(message, reason, deliveries, stream_sequence)
            .await
        {
            Ok(()) => {
                tracing::error!(subject = %message.subject, stream_sequence, deliveries, reason, "message dead-lettered");
                ack(message).await;
                self.count("dead_lettered", 1);
            }
            Err(error) => {
                tracing::error!(%error, stream_sequence, "cannot dead-letter; will retry");
                let _ = message.ack_with(AckKind::Nak(Some(self.retry_base))).await;
            }
        }
    }

    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        reason: &str,
        deliveries: i64,
        stream_sequence: u64,
    ) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        if let Some(original) = &message.headers {
            for (name, values) in original.iter() {
                if AsRef::<str>::as_ref(name) == "Nats-Msg-Id" {
                    if let Some(v) = values.first() {
                        headers.insert(dlq_headers::ORIGINAL_MSG_ID, v.as_str());
                    }
                    continue;
                }
                for v in values {
                    headers.append(name.clone(), v.clone());
                }
            }
        }
        headers.insert(dlq_headers::SUBJECT, message.subject.as_str());
        headers.insert(dlq_headers::REASON, header_safe(reason).as_str());
        headers.insert(dlq_headers::STREAM, self.sink.stream());
        headers.insert(dlq_headers::CONSUMER, WRITER_CONSUMER);
        headers.insert(
            dlq_headers::STREAM_SEQUENCE,
            stream_sequence.to_string().as_str(),
        );
        headers.insert(dlq_headers::DELIVERIES, deliveries.to_string().as_str());
        // Dead-lettering the same message twice (crash before the ack below)
        // stores it once.
        headers.insert(
            "Nats-Msg-Id",
            format!("dlq-{}-{stream_sequence}", self.sink.stream()).as_str(),
        );
        let publish = PublishMessage::build()
            .payload(message.payload.clone())
            .headers(headers);
        let ack = self
            .js
            .send_publish(
                subjects::dlq_subject(self.sink.stream(), WRITER_CONSUMER),
                publish,
            )
            .await
            .map_err(|e| e.to_string())?;
        ack.await.map(|_| ()).map_err(|e| e.to_string())
    }
}

async fn ack(message: &jetstream::Message) {
    // Committed: if this ack is lost the message comes back and the
    // insert skips its events.
    if let Err(error) = message.ack().await {
        tracing::warn!(%error, "ack failed; message will be redelivered and deduplicated");
    }
}

/// NATS header values are one line of printable text.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1024)
        .collect()
}
