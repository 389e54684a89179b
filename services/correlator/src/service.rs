//! The correlator at work: its partition's durable consumer on EVENTS in,
//! findings on `findings.<tenant>.<rule>` out, state checkpointed in the
//! CORRELATOR bucket.
//!
//! Per batch of messages: absorb the events of this partition's tenants,
//! publish the findings that changed (message id `<finding id>-v<version>`,
//! so a replay after a crash is deduplicated), checkpoint the engine state,
//! and only then acknowledge the messages. A crash anywhere in between
//! replays the batch from the last checkpoint, and the engine counts each
//! event once, so the findings equal an uninterrupted run's.
//!
//! [`Worker::run`] waits for the next of four events and hands each to its
//! own method: a batch ([`Worker::on_batch`]), an idle tick
//! ([`Worker::on_idle_tick`]), SIGHUP ([`Worker::on_hangup`]), shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, message::PublishMessage};
use bytes::Bytes;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use vigil_common::readiness::Dependency;
use vigil_common::subjects::{self, MESSAGE_TYPE_HEADER, PROTOBUF_CONTENT_TYPE};
use vigil_proto::event::v1::EventBatch;

use crate::engine::{Engine, Finding, Settings};
use crate::metrics::Counters;
use crate::{checkpoint, partition, rules};

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

/// One partition's correlation loop and everything it owns.
pub struct Worker {
    pub rules_path: PathBuf,
    pub partition: u32,
    pub partitions: u32,
    pub settings: Settings,
    pub idle_timeout: Duration,
    pub js: jetstream::Context,
    pub bucket: kv::Store,
    /// The checkpoint's key in `bucket`.
    pub key: String,
    pub engine: Engine,
    pub counters: Arc<Counters>,
    /// Readiness: the bucket is down while a checkpoint cannot be written.
    pub bucket_ready: Dependency,
    pub last_arrival: Instant,
}

impl Worker {
    /// Runs until `shutdown` or an unreadable checkpoint.
    pub async fn run(
        mut self,
        mut batches: tokio::sync::mpsc::Receiver<Vec<jetstream::Message>>,
        shutdown: CancellationToken,
    ) -> Result<(), CorrelatorError> {
        let mut hangup = hangup_signal();
        let mut idle_tick = tokio::time::interval(self.idle_timeout / 2);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = hangup.recv() => self.on_hangup(),
                _ = idle_tick.tick() => self.on_idle_tick().await?,
                batch = batches.recv() => match batch {
                    Some(batch) => self.on_batch(batch).await?,
                    None => return Ok(()),
                },
            }
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

    /// An idle source must not stall windows: with no events for
    /// `idle_timeout`, the watermark follows the wall clock (the gateway
    /// keeps event times within minutes of it), less the lateness and the
    /// idle timeout. Events older than that are late: counted, and they
    /// update the findings they change.
    pub async fn on_idle_tick(&mut self) -> Result<(), CorrelatorError> {
        if self.last_arrival.elapsed() < self.idle_timeout || self.engine.state.max_event_time <= 0
        {
            return Ok(());
        }
        let idle_ms = i64::try_from(self.idle_timeout.as_millis()).unwrap_or(i64::MAX);
        let watermark = vigil_common::now_millis()
            .saturating_sub(self.settings.allowed_lateness_ms)
            .saturating_sub(idle_ms);
        let findings = self.engine.advance(watermark);
        if findings.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.commit(&findings).await {
            // Back to the checkpoint: the windows close again on the next tick.
            tracing::warn!(%error, "cannot publish idle-closed findings; back to the last checkpoint");
            self.restore().await?;
        }
        Ok(())
    }

    /// A batch of messages: absorb this partition's events, commit, then
    /// ack; a failed commit hands the batch back and restores the
    /// checkpoint, so state never runs ahead of what is acknowledged.
    pub async fn on_batch(
        &mut self,
        pending: Vec<jetstream::Message>,
    ) -> Result<(), CorrelatorError> {
        self.last_arrival = Instant::now();
        let mut findings = Vec::new();
        for message in &pending {
            let Ok(batch) = EventBatch::decode(message.payload.as_ref()) else {
                // The writer dead-letters it; nothing to correlate.
                self.counters.undecodable.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            for event in &batch.events {
                let tenant = event.tenant_uid();
                if tenant.is_empty()
                    || partition::partition_of(tenant, self.partitions) != self.partition
                {
                    continue;
                }
                self.counters.events.fetch_add(1, Ordering::Relaxed);
                findings.extend(self.engine.ingest(tenant, event));
            }
        }
        match self.commit(&findings).await {
            Ok(()) => {
                for message in &pending {
                    if let Err(error) = message.ack().await {
                        tracing::warn!(%error, "ack failed; the batch will be redelivered and counted once");
                    }
                }
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "commit failed; replaying from the last checkpoint");
                for message in &pending {
                    let _ = message
                        .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                }
                self.restore().await
            }
        }
    }

    /// Publishes changed findings (waiting for JetStream), then checkpoints.
    async fn commit(&self, findings: &[Finding]) -> Result<(), String> {
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
        let state = checkpoint::encode(&self.engine.state)?;
        let size = state.len() as u64;
        let put = self.bucket.put(&self.key, Bytes::from(state)).await;
        self.bucket_ready.set(put.is_ok());
        put.map_err(|e| e.to_string())?;
        let c = &self.counters;
        let state = &self.engine.state;
        c.checkpoint_bytes.store(size, Ordering::Relaxed);
        c.findings
            .fetch_add(findings.len() as u64, Ordering::Relaxed);
        c.late_events.store(state.late_events, Ordering::Relaxed);
        c.dropped_late_events
            .store(state.dropped_late_events, Ordering::Relaxed);
        c.watermark_ms.store(state.watermark, Ordering::Relaxed);
        Ok(())
    }

    /// Replaces the engine's state with the last checkpoint (after a failed
    /// commit, so state never runs ahead of what is published and
    /// acknowledged). If the checkpoint cannot be read the correlator must
    /// stop: continuing could lose the findings of the failed commit.
    async fn restore(&mut self) -> Result<(), CorrelatorError> {
        let state = checkpoint::read(&self.bucket, &self.key)
            .await
            .map_err(|reason| CorrelatorError::Checkpoint {
                key: self.key.clone(),
                reason,
            })?;
        let rules = self.engine.rules().to_vec();
        self.engine = Engine::new(rules, self.settings.clone(), state);
        Ok(())
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
