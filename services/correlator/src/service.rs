//! The correlator at work: its partition's durable consumer on EVENTS in,
//! findings on `findings.<tenant>.<rule>` out, state checkpointed in the
//! CORRELATOR bucket ([`crate::checkpoint`]).
//!
//! Exactly once, like a stream processor's source offset: the checkpoint
//! records the EVENTS stream sequence it covers (the position), and the
//! worker absorbs messages strictly in stream order. At start, and
//! whenever a delivery went missing (a gap in the consumer's delivery
//! sequence, e.g. a pull lost with the connection), it re-creates its
//! consumer to deliver from position + 1 ([`Source::seek`]); a redelivered
//! message at or below the position is already in the state and only
//! acked. Per batch of messages: absorb the events of this partition's
//! tenants, publish the findings that changed (message id
//! `<finding id>-v<version>`, so a replay after a crash is deduplicated),
//! write the checkpoint delta (the keys that changed, and the position),
//! and only then acknowledge the messages. A failed commit is retried
//! until it succeeds, never skipped; a crash anywhere in between resumes
//! from the last checkpoint and position, so the findings equal an
//! uninterrupted run's.
//!
//! [`Worker::run`] waits for the next of four events and hands each to its
//! own method: a batch ([`Worker::on_batch`]), an idle tick
//! ([`Worker::on_idle_tick`]), SIGHUP ([`Worker::on_hangup`]), shutdown.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, message::PublishMessage};
use bytes::Bytes;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use vigil_common::consume::Batching;
use vigil_common::readiness::Dependency;
use vigil_common::subjects::{self, MESSAGE_TYPE_HEADER, PROTOBUF_CONTENT_TYPE};
use vigil_proto::event::v1::EventBatch;

use crate::checkpoint::Checkpoint;
use crate::engine::{Delta, Engine, Finding, Settings};
use crate::metrics::Counters;
use crate::{partition, rules};

#[derive(Debug, thiserror::Error)]
pub enum CorrelatorError {
    #[error("rules file {path}: {reason}")]
    Rules { path: String, reason: String },
    #[error(transparent)]
    Nats(#[from] vigil_common::nats::NatsConnectError),
    #[error("cannot open {what} (was the admin provisioning run?): {reason}")]
    Setup { what: String, reason: String },
    #[error("checkpoint in {key} is unreadable: {reason}")]
    Checkpoint { key: String, reason: String },
    #[error(transparent)]
    Bind(#[from] vigil_common::service::BindError),
}

/// Loads and validates a rule file.
pub fn load_rules(path: &std::path::Path) -> Result<Vec<rules::Rule>, CorrelatorError> {
    let text = std::fs::read_to_string(path).map_err(|e| CorrelatorError::Rules {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    rules::parse(&text).map_err(|e| CorrelatorError::Rules {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Ack wait of a consumer the correlator must re-create without having
/// seen it (provisioning sets the real one; the re-created consumer keeps it).
const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// First and largest pause between attempts of a failed commit or seek.
const RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// The partition's durable consumer on EVENTS, positioned by the
/// correlator itself.
pub struct Source {
    js: jetstream::Context,
    name: String,
    batching: Batching,
    ack_wait: Duration,
    max_ack_pending: i64,
    /// Stops the current pull task.
    pull: CancellationToken,
    shutdown: CancellationToken,
}

impl Source {
    /// Reads the consumer as provisioned; returns the source and the stream
    /// sequence its acknowledgements stand at (for a partition without a
    /// checkpoint yet). No consumer and no checkpoint means provisioning
    /// did not run.
    pub async fn open(
        js: jetstream::Context,
        name: String,
        batching: Batching,
        shutdown: CancellationToken,
    ) -> (Self, Option<u64>) {
        let existing: Option<consumer::PullConsumer> = js
            .get_consumer_from_stream(&name, subjects::EVENTS_STREAM)
            .await
            .ok();
        let info = existing.as_ref().map(|c| c.cached_info());
        let source = Source {
            ack_wait: info.map_or(DEFAULT_ACK_WAIT, |i| i.config.ack_wait),
            max_ack_pending: info.map_or(20_000, |i| i.config.max_ack_pending),
            js,
            name,
            batching,
            pull: CancellationToken::new(),
            shutdown,
        };
        (source, info.map(|i| i.ack_floor.stream_sequence))
    }

    /// Re-creates the consumer to deliver from stream sequence `start` and
    /// starts pulling from it; batches of the previous pull are dropped
    /// unacked (they belonged to the deleted consumer).
    pub async fn seek(
        &mut self,
        start: u64,
    ) -> Result<tokio::sync::mpsc::Receiver<Vec<jetstream::Message>>, String> {
        self.pull.cancel();
        // Absent already (a crash between delete and create): fine.
        let _ = self
            .js
            .delete_consumer_from_stream(&self.name, subjects::EVENTS_STREAM)
            .await;
        let consumer: consumer::PullConsumer = self
            .js
            .create_consumer_on_stream(
                consumer::pull::Config {
                    durable_name: Some(self.name.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_ack_pending: self.max_ack_pending,
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: start.max(1),
                    },
                    ..Default::default()
                },
                subjects::EVENTS_STREAM,
            )
            .await
            .map_err(|e| format!("cannot re-create consumer {}: {e}", self.name))?;
        self.pull = self.shutdown.child_token();
        Ok(vigil_common::consume::pull(
            consumer,
            self.batching,
            self.pull.clone(),
        ))
    }
}

/// One partition's correlation loop and everything it owns.
pub struct Worker {
    pub rules_path: PathBuf,
    pub partition: u32,
    pub partitions: u32,
    pub settings: Settings,
    pub idle_timeout: Duration,
    pub js: jetstream::Context,
    pub source: Source,
    pub checkpoint: Checkpoint,
    /// The stream sequence of the last message absorbed (the checkpoint's
    /// position once committed).
    pub position: u64,
    /// The consumer delivery sequence the next message must carry.
    pub next_delivery: u64,
    pub engine: Engine,
    pub counters: Arc<Counters>,
    /// Readiness: the bucket is down while a checkpoint cannot be written.
    pub bucket_ready: Dependency,
    /// When each tenant's events last arrived (since `started`).
    pub last_arrival: HashMap<String, Instant>,
    pub started: Instant,
}

/// What a batch asks of the loop.
enum Next {
    Continue,
    /// A delivery went missing: re-read the stream from this sequence.
    Seek(u64),
    Stopped,
}

impl Worker {
    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), CorrelatorError> {
        let mut hangup = hangup_signal();
        let mut idle_tick = tokio::time::interval(self.idle_timeout / 2);
        let Some(mut batches) = self.seek(self.position + 1, &shutdown).await else {
            return Ok(());
        };
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => Next::Stopped,
                _ = hangup.recv() => { self.on_hangup(); Next::Continue }
                _ = idle_tick.tick() => self.on_idle_tick(&shutdown).await,
                batch = batches.recv() => match batch {
                    Some(batch) => self.on_batch(batch, &shutdown).await,
                    None => Next::Stopped,
                },
            };
            match next {
                Next::Continue => {}
                Next::Stopped => return Ok(()),
                Next::Seek(start) => match self.seek(start, &shutdown).await {
                    Some(b) => batches = b,
                    None => return Ok(()),
                },
            }
        }
    }

    /// Positions the consumer at `start`, retrying until it works or
    /// shutdown (`None`).
    async fn seek(
        &mut self,
        start: u64,
        shutdown: &CancellationToken,
    ) -> Option<tokio::sync::mpsc::Receiver<Vec<jetstream::Message>>> {
        let mut pause = RETRY.0;
        loop {
            match self.source.seek(start).await {
                Ok(batches) => {
                    self.next_delivery = 1;
                    self.counters.seeks.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(start, "consuming EVENTS from stream sequence");
                    return Some(batches);
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?pause, "cannot position the consumer")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(RETRY.1);
        }
    }

    /// SIGHUP: reload the rules; a bad file leaves the running rules.
    pub fn on_hangup(&mut self) {
        match load_rules(&self.rules_path) {
            Ok(rules) => {
                tracing::info!(rules = rules.len(), "rules reloaded");
                self.engine.replace_rules(rules);
                self.counters.rule_reloads.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::error!(%error, "rules file refused; the running rules stay in force");
                self.counters
                    .rule_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// An idle source must not stall windows: when a tenant's events stop
    /// for `idle_timeout`, its watermark follows the wall clock (the gateway
    /// keeps event times within minutes of it), less the lateness and the
    /// idle timeout. Events older than that are late: counted, and they
    /// update the findings they change.
    async fn on_idle_tick(&mut self, shutdown: &CancellationToken) -> Next {
        let idle_ms = i64::try_from(self.idle_timeout.as_millis()).unwrap_or(i64::MAX);
        let watermark = vigil_common::now_millis()
            .saturating_sub(self.settings.allowed_lateness_ms)
            .saturating_sub(idle_ms);
        let idle: Vec<String> = self
            .engine
            .global()
            .clocks
            .iter()
            .filter(|(t, c)| {
                c.watermark < watermark
                    && self.last_arrival.get(*t).unwrap_or(&self.started).elapsed()
                        >= self.idle_timeout
            })
            .map(|(t, _)| t.clone())
            .collect();
        let mut findings = Vec::new();
        for tenant in &idle {
            findings.extend(self.engine.advance_tenant(tenant, watermark));
        }
        if findings.is_empty() && self.engine.pending_changes() == 0 {
            return Next::Continue;
        }
        let delta = self.engine.take_delta();
        if self.commit(&findings, &delta, shutdown).await {
            Next::Continue
        } else {
            Next::Stopped
        }
    }

    /// A batch of messages: absorb this partition's events in stream order,
    /// commit, then ack.
    async fn on_batch(
        &mut self,
        pending: Vec<jetstream::Message>,
        shutdown: &CancellationToken,
    ) -> Next {
        let mut findings = Vec::new();
        let mut taken = 0;
        let mut gap = false;
        for message in &pending {
            let Ok(info) = message.info() else {
                gap = true; // cannot place it in the stream: re-read from the position
                break;
            };
            let (stream_seq, delivery) = (info.stream_sequence, info.consumer_sequence);
            self.counters.behind.store(info.pending, Ordering::Relaxed);
            if delivery != self.next_delivery && stream_seq > self.position {
                tracing::warn!(
                    expected = self.next_delivery,
                    got = delivery,
                    position = self.position,
                    "a delivery went missing; re-reading from the position"
                );
                gap = true;
                break;
            }
            self.next_delivery = self.next_delivery.max(delivery + 1);
            taken += 1;
            if stream_seq <= self.position {
                continue; // already in the state (a redelivery): only acked
            }
            self.position = stream_seq;
            let Ok(batch) = EventBatch::decode(message.payload.as_ref()) else {
                // The writer dead-letters it; nothing to correlate.
                self.counters.undecodable.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let now = Instant::now();
            for event in &batch.events {
                let tenant = event.tenant_uid();
                match self.last_arrival.get_mut(tenant) {
                    Some(at) => *at = now,
                    None => {
                        self.last_arrival.insert(tenant.to_owned(), now);
                    }
                }
                if tenant.is_empty()
                    || partition::partition_of(tenant, self.partitions) != self.partition
                {
                    continue;
                }
                self.counters.events.fetch_add(1, Ordering::Relaxed);
                findings.extend(self.engine.ingest(tenant, event));
            }
        }
        if taken > 0 {
            let delta = self.engine.take_delta();
            if !self.commit(&findings, &delta, shutdown).await {
                return Next::Stopped;
            }
            for message in &pending[..taken] {
                if let Err(error) = message.ack().await {
                    tracing::warn!(%error, "ack failed; the message will be redelivered and skipped");
                }
            }
        }
        if gap {
            Next::Seek(self.position + 1)
        } else {
            Next::Continue
        }
    }

    /// Publishes changed findings (waiting for JetStream), then writes the
    /// checkpoint; retried until it succeeds. False only on shutdown (the
    /// state is then ahead of the checkpoint, and the next start resumes
    /// from the checkpoint).
    async fn commit(
        &mut self,
        findings: &[Finding],
        delta: &Delta,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut pause = RETRY.0;
        loop {
            let started = Instant::now();
            match self.try_commit(findings, delta).await {
                Ok(()) => {
                    self.bucket_ready.set(true);
                    self.report(findings.len(), started.elapsed());
                    return true;
                }
                Err(error) => {
                    self.counters
                        .commit_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, retry_in = ?pause, "commit failed; retrying it");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(RETRY.1);
        }
    }

    async fn try_commit(&mut self, findings: &[Finding], delta: &Delta) -> Result<(), String> {
        let mut acks = Vec::with_capacity(findings.len());
        for f in findings {
            let publish = PublishMessage::build()
                .payload(Bytes::from(crate::finding::to_proto(f).encode_to_vec()))
                .message_id(format!("{}-v{}", f.id, f.version))
                .header("Content-Type", PROTOBUF_CONTENT_TYPE)
                .header(MESSAGE_TYPE_HEADER, "vigil.finding.v1.Finding");
            let ack = self
                .js
                .send_publish(subjects::findings_subject(&f.tenant, &f.rule_id), publish)
                .await
                .map_err(|e| e.to_string())?;
            acks.push(ack.into_future());
        }
        for ack in futures::future::join_all(acks).await {
            ack.map_err(|e| e.to_string())?;
        }
        let c = &self.counters;
        let written = if self.checkpoint.snapshot_due() {
            // The snapshot holds everything, this batch's changes included.
            let bytes = self
                .checkpoint
                .write_snapshot(self.position, self.engine.state())
                .await;
            self.bucket_ready.set(bytes.is_ok());
            let bytes = bytes?;
            c.snapshots.fetch_add(1, Ordering::Relaxed);
            c.state_bytes.store(bytes, Ordering::Relaxed);
            bytes
        } else {
            let bytes = self.checkpoint.write_delta(self.position, delta).await;
            self.bucket_ready.set(bytes.is_ok());
            bytes?
        };
        c.checkpoint_bytes.store(written, Ordering::Relaxed);
        Ok(())
    }

    /// Updates the metrics after a commit.
    fn report(&self, findings: usize, took: Duration) {
        let c = &self.counters;
        let global = self.engine.global();
        c.findings.fetch_add(findings as u64, Ordering::Relaxed);
        c.late_events.store(global.late_events, Ordering::Relaxed);
        c.dropped_late_events
            .store(global.dropped_late_events, Ordering::Relaxed);
        c.evicted_keys.store(global.evicted_keys, Ordering::Relaxed);
        c.watermark_ms
            .store(global.min_watermark(), Ordering::Relaxed);
        c.live_keys
            .store(self.engine.state().live_keys() as u64, Ordering::Relaxed);
        c.position.store(self.position, Ordering::Relaxed);
        c.commit_micros.store(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

fn hangup_signal() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            while hup.recv().await.is_some() {
                if tx.send(()).await.is_err() {
                    break;
                }
            }
        }
    });
    rx
}
