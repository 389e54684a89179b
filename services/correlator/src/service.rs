//! The correlator at work: its partition's durable consumer on EVENTS in
//! (filtered on the event slots it owns), findings on
//! `findings.<tenant>.<rule>` out, each slot's state checkpointed in the
//! CORRELATOR bucket ([`crate::checkpoint`]).
//!
//! Exactly once, like a stream processor's source offset: each slot's
//! checkpoint records the EVENTS stream sequence it covers (its position),
//! and the worker absorbs messages strictly in stream order. At start, and
//! whenever a delivery went missing (a gap in the consumer's delivery
//! sequence, e.g. a pull lost with the connection), it re-creates its
//! consumer to deliver from the least advanced slot's position + 1
//! ([`Source::seek`]); a message at or below its slot's position is
//! already in the state and only acked. Per batch of messages: absorb the events of this partition's
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
use crate::rules;

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
/// A slot whose state did not change still has its position written once
/// it lags this many stream messages (or when the partition is idle), so a
/// restart never re-reads more than this for a quiet slot.
const POSITION_LAG: u64 = 50_000;
/// How long a clean stop may spend on its last commit.
const FINAL_COMMIT: Duration = Duration::from_secs(3);

impl Slot {
    /// Whether the next commit must write this slot: it changed, it has no
    /// checkpoint yet, or its written position lags (any lag if `idle`).
    fn due(&self, idle: bool) -> bool {
        let lag = self.position.saturating_sub(self.committed.unwrap_or(0));
        self.dirty
            || !self.findings.is_empty()
            || self.engine.pending_changes() > 0
            || self.committed.is_none()
            || lag >= POSITION_LAG
            || (idle && lag > 0)
    }
}

/// The partition's durable consumer on EVENTS, positioned by the
/// correlator itself.
pub struct Source {
    js: jetstream::Context,
    name: String,
    batching: Batching,
    ack_wait: Duration,
    max_ack_pending: i64,
    /// The slots' subjects this partition consumes.
    filters: Vec<String>,
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
        filters: Vec<String>,
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
            filters,
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
                    filter_subjects: self.filters.clone(),
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

/// One event slot this partition owns: its engine, its checkpoint and how
/// far in the stream its state is. Slots are independent (a tenant lives in
/// exactly one), so changing the number of partitions only changes which
/// instance loads which slots.
pub struct Slot {
    pub slot: u32,
    pub engine: Engine,
    pub checkpoint: Checkpoint,
    /// The stream sequence of the last message of this slot absorbed (the
    /// checkpoint's position once committed).
    pub position: u64,
    /// Findings to publish and whether the state changed since the last
    /// commit.
    pub findings: Vec<Finding>,
    pub dirty: bool,
    /// The position its checkpoint holds (`None`: it has none yet).
    pub committed: Option<u64>,
    /// Size of its state at the last snapshot.
    pub state_bytes: u64,
}

/// One partition's correlation loop and everything it owns.
pub struct Worker {
    pub rules_path: PathBuf,
    pub settings: Settings,
    /// Keys without a finding the partition keeps, over all its slots.
    pub max_keys: usize,
    pub idle_timeout: Duration,
    pub js: jetstream::Context,
    pub source: Source,
    /// The slots this partition owns, by slot number.
    pub slots: Vec<Slot>,
    /// The consumer delivery sequence the next message must carry.
    pub next_delivery: u64,
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
    /// Where the stream must be read from: after the least advanced slot.
    fn resume_at(&self) -> u64 {
        self.slots.iter().map(|s| s.position).min().unwrap_or(0) + 1
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), CorrelatorError> {
        let mut hangup = hangup_signal();
        let mut idle_tick = tokio::time::interval(self.idle_timeout / 2);
        let Some(mut batches) = self.seek(self.resume_at(), &shutdown).await else {
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
                Next::Stopped => {
                    self.final_commit().await;
                    return Ok(());
                }
                Next::Seek(start) => match self.seek(start, &shutdown).await {
                    Some(b) => batches = b,
                    None => return Ok(()),
                },
            }
        }
    }

    /// On a clean stop: write what is not written yet (positions of quiet
    /// slots included), within [`FINAL_COMMIT`], so the next start — with
    /// this or another number of partitions — re-reads nothing.
    async fn final_commit(&mut self) {
        let limit = CancellationToken::new();
        let cancel = limit.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(FINAL_COMMIT).await;
            cancel.cancel();
        });
        if self.slots.iter().any(|s| s.due(true)) && !self.commit(&limit, true).await {
            tracing::warn!(
                "stopped before the last commit; the next start re-reads from the checkpoint"
            );
        }
        timer.abort();
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
                    self.counters.seeks.inc();
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
                for slot in &mut self.slots {
                    slot.engine.replace_rules(rules.clone());
                }
                self.counters.rule_reloads.inc();
            }
            Err(error) => {
                tracing::error!(%error, "rules file refused; the running rules stay in force");
                self.counters.rule_reload_failures.inc();
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
        for slot in &mut self.slots {
            let idle: Vec<String> = slot
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
            for tenant in &idle {
                let found = slot.engine.advance_tenant(tenant, watermark);
                slot.findings.extend(found);
            }
        }
        if !self.slots.iter().any(|s| s.due(true)) {
            return Next::Continue;
        }
        if self.commit(shutdown, true).await {
            Next::Continue
        } else {
            Next::Stopped
        }
    }

    /// A batch of messages: absorb them in stream order, each into its
    /// slot's engine, commit, then ack.
    async fn on_batch(
        &mut self,
        pending: Vec<jetstream::Message>,
        shutdown: &CancellationToken,
    ) -> Next {
        let mut taken = 0;
        let mut gap = false;
        let mut last = None;
        for message in &pending {
            let Ok(info) = message.info() else {
                gap = true; // cannot place it in the stream: re-read from the position
                break;
            };
            let (stream_seq, delivery) = (info.stream_sequence, info.consumer_sequence);
            self.counters
                .behind
                .set(i64::try_from(info.pending).unwrap_or(i64::MAX));
            let ix = subjects::slot_of_subject(&message.subject)
                .and_then(|s| self.slots.iter().position(|slot| slot.slot == s));
            let absorbed = ix.is_none_or(|i| stream_seq <= self.slots[i].position);
            if delivery != self.next_delivery && !absorbed {
                tracing::warn!(
                    expected = self.next_delivery,
                    got = delivery,
                    stream_seq,
                    "a delivery went missing; re-reading from the position"
                );
                gap = true;
                break;
            }
            self.next_delivery = self.next_delivery.max(delivery + 1);
            taken += 1;
            last = Some(stream_seq);
            let Some(i) = ix else {
                // Not one of this partition's slots (the consumer's filter
                // should have kept it away): nothing to correlate.
                self.counters.foreign.inc();
                continue;
            };
            if absorbed {
                continue; // already in the state (a redelivery): only acked
            }
            let slot = &mut self.slots[i];
            slot.position = stream_seq;
            slot.dirty = true;
            let Ok(batch) = EventBatch::decode(message.payload.as_ref()) else {
                // The writer dead-letters it; nothing to correlate.
                self.counters.undecodable.inc();
                continue;
            };
            let now = Instant::now();
            for event in &batch.events {
                let tenant = event.tenant_uid();
                if tenant.is_empty() {
                    continue;
                }
                match self.last_arrival.get_mut(tenant) {
                    Some(at) => *at = now,
                    None => {
                        self.last_arrival.insert(tenant.to_owned(), now);
                    }
                }
                self.counters.events.inc();
                let found = slot.engine.ingest(tenant, event);
                slot.findings.extend(found);
            }
        }
        self.enforce_key_cap();
        // Delivered in stream order without a gap: every message of this
        // partition's slots up to `last` has been seen, so every slot is
        // there too, whether it had messages or not.
        if let Some(last) = last {
            for slot in &mut self.slots {
                slot.position = slot.position.max(last);
            }
        }
        if taken > 0 {
            if !self.commit(shutdown, false).await {
                return Next::Stopped;
            }
            for message in &pending[..taken] {
                if let Err(error) = message.ack().await {
                    tracing::warn!(%error, "ack failed; the message will be redelivered and skipped");
                }
            }
        }
        if gap {
            Next::Seek(self.resume_at())
        } else {
            Next::Continue
        }
    }

    /// One budget of keys without a finding for all the partition's slots
    /// (a slot may hold one busy tenant): beyond it the least recently
    /// active key of any slot is forgotten.
    fn enforce_key_cap(&mut self) {
        let mut total: usize = self.slots.iter().map(|s| s.engine.evictable_keys()).sum();
        while total > self.max_keys {
            let oldest = self
                .slots
                .iter_mut()
                .filter_map(|s| s.engine.oldest_activity().map(|a| (a, s)))
                .min_by_key(|(a, _)| *a);
            let Some((_, slot)) = oldest else {
                break;
            };
            if !slot.engine.evict_oldest() {
                break;
            }
            slot.dirty = true;
            total -= 1;
        }
    }

    /// For every slot that moved: publishes its changed findings (waiting
    /// for JetStream), then writes its checkpoint; each retried until it
    /// succeeds. False only on shutdown (a slot's state is then ahead of its
    /// checkpoint, and the next start resumes from the checkpoint).
    async fn commit(&mut self, shutdown: &CancellationToken, idle: bool) -> bool {
        let started = Instant::now();
        for i in 0..self.slots.len() {
            if !self.slots[i].due(idle) {
                continue;
            }
            let delta = self.slots[i].engine.take_delta();
            let findings = std::mem::take(&mut self.slots[i].findings);
            let mut pause = RETRY.0;
            loop {
                match self.try_commit(i, &findings, &delta).await {
                    Ok(()) => break,
                    Err(error) => {
                        self.counters.commit_failures.inc();
                        tracing::warn!(%error, slot = self.slots[i].slot, retry_in = ?pause, "commit failed; retrying it");
                    }
                }
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(RETRY.1);
            }
            for f in &findings {
                self.counters
                    .findings
                    .with_label_values(&[f.rule_id.as_str()])
                    .inc();
            }
            let slot = &mut self.slots[i];
            slot.dirty = false;
            slot.committed = Some(slot.position);
        }
        self.bucket_ready.set(true);
        self.report(started.elapsed());
        true
    }

    async fn try_commit(
        &mut self,
        i: usize,
        findings: &[Finding],
        delta: &Delta,
    ) -> Result<(), String> {
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
        let slot = &mut self.slots[i];
        let written = if slot.checkpoint.snapshot_due() {
            // The snapshot holds everything, this batch's changes included.
            let bytes = slot
                .checkpoint
                .write_snapshot(slot.position, slot.engine.state())
                .await;
            self.bucket_ready.set(bytes.is_ok());
            let bytes = bytes?;
            c.snapshots.inc();
            slot.state_bytes = bytes;
            bytes
        } else {
            let bytes = slot.checkpoint.write_delta(slot.position, delta).await;
            self.bucket_ready.set(bytes.is_ok());
            bytes?
        };
        c.checkpoint_bytes
            .set(i64::try_from(written).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Updates the metrics after a commit.
    fn report(&self, took: Duration) {
        let c = &self.counters;
        let sum = |f: &dyn Fn(&Slot) -> u64| self.slots.iter().map(f).sum::<u64>();
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Counters::raise_to(&c.late_events, sum(&|s| s.engine.global().late_events));
        Counters::raise_to(
            &c.dropped_late_events,
            sum(&|s| s.engine.global().dropped_late_events),
        );
        Counters::raise_to(&c.evicted_keys, sum(&|s| s.engine.global().evicted_keys));
        c.live_keys
            .set(int(sum(&|s| s.engine.state().live_keys() as u64)));
        c.state_bytes.set(int(sum(&|s| s.state_bytes)));
        let watermark = self
            .slots
            .iter()
            .map(|s| s.engine.global().min_watermark())
            .filter(|w| *w > 0)
            .min()
            .unwrap_or(0);
        c.watermark_ms.set(watermark);
        c.position.set(int(self.resume_at().saturating_sub(1)));
        c.commit_duration.observe(took.as_secs_f64());
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
