//! The correlator service: its partition's durable consumer on EVENTS in,
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
//! Partitions: tenant `t` belongs to partition `hash(t) % partitions`; every
//! group key includes the tenant, so each (rule, tenant, key) lives on one
//! instance. Each partition has its own consumer and checkpoint.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::PullConsumer, kv, message::PublishMessage};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vigil_common::subjects::{self, MESSAGE_TYPE_HEADER, PROTOBUF_CONTENT_TYPE};
use vigil_proto::event::v1::EventBatch;
use vigil_proto::finding::v1::{Finding as FindingPb, KeyPart};

use crate::engine::{Engine, Finding, Settings, State};
use crate::rules;

pub const HEALTH_SERVICE: &str = "vigil.correlator";

/// The partition a tenant belongs to.
pub fn partition_of(tenant: &str, partitions: u32) -> u32 {
    let digest = Sha256::digest(tenant.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % partitions.max(1)
}

pub fn to_proto(f: &Finding) -> FindingPb {
    FindingPb {
        finding_id: f.id.clone(),
        activity_id: f.activity_id,
        version: f.version,
        rule_id: f.rule_id.clone(),
        title: f.title.clone(),
        severity_id: f.severity_id,
        technique: f.technique.clone(),
        tenant: f.tenant.clone(),
        group_key: f
            .group_key
            .iter()
            .map(|(field, value)| KeyPart {
                field: field.clone(),
                value: value.clone(),
            })
            .collect(),
        window_start: f.window_start,
        window_end: f.window_end,
        count: u32::try_from(f.count).unwrap_or(u32::MAX),
        event_ids: f.event_ids.clone(),
        time: vigil_common::now_millis(),
        class_uid: DETECTION_FINDING,
        category_uid: DETECTION_FINDING / 1000,
        type_uid: i64::from(DETECTION_FINDING) * 100 + i64::from(f.activity_id),
    }
}

/// OCSF class of every finding.
pub const DETECTION_FINDING: i32 = 2004;

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
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
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

/// Counters the metrics endpoint reports.
#[derive(Default)]
pub struct Counters {
    pub events: AtomicU64,
    pub findings: AtomicU64,
    pub late_events: AtomicU64,
    pub dropped_late_events: AtomicU64,
    pub undecodable: AtomicU64,
    pub watermark_ms: AtomicI64,
    pub rule_reloads: AtomicU64,
    pub rule_reload_failures: AtomicU64,
    pub checkpoint_bytes: AtomicU64,
}

/// Largest checkpoint the correlator will inflate (a corrupted or hostile
/// value must not exhaust memory).
const MAX_CHECKPOINT_JSON: u64 = 1 << 30;

/// The engine state as stored in KV: gzip-compressed JSON (the JSON of
/// event ids and keys shrinks several times, and the value must fit NATS's
/// max_payload).
pub fn encode_checkpoint(state: &State) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let json = serde_json::to_vec(state).map_err(|e| e.to_string())?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&json).map_err(|e| e.to_string())?;
    gz.finish().map_err(|e| e.to_string())
}

/// Reads a checkpoint: gzip-compressed JSON, or plain JSON as written by
/// earlier versions.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<State, String> {
    use std::io::Read;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .take(MAX_CHECKPOINT_JSON)
            .read_to_end(&mut json)
            .map_err(|e| format!("not a gzip checkpoint: {e}"))?;
        serde_json::from_slice(&json).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

impl Counters {
    pub fn render(&self) -> String {
        use vigil_common::metrics::{Sample, render};
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        render(&[
            Sample {
                name: "vigil_correlator_events_total",
                help: "Events absorbed by this partition.",
                kind: "counter",
                value: n(&self.events),
            },
            Sample {
                name: "vigil_correlator_findings_total",
                help: "Finding versions published.",
                kind: "counter",
                value: n(&self.findings),
            },
            Sample {
                name: "vigil_correlator_late_events_total",
                help: "Events that arrived after their window closed.",
                kind: "counter",
                value: n(&self.late_events),
            },
            Sample {
                name: "vigil_correlator_dropped_late_events_total",
                help: "Late events whose window was already forgotten.",
                kind: "counter",
                value: n(&self.dropped_late_events),
            },
            Sample {
                name: "vigil_correlator_undecodable_messages_total",
                help: "Messages that were not an EventBatch.",
                kind: "counter",
                value: n(&self.undecodable),
            },
            Sample {
                name: "vigil_correlator_checkpoint_bytes",
                help: "Size of the last checkpoint written to KV (compressed).",
                kind: "gauge",
                value: n(&self.checkpoint_bytes),
            },
            Sample {
                name: "vigil_correlator_watermark_seconds",
                help: "Event-time watermark.",
                kind: "gauge",
                value: self.watermark_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            },
            Sample {
                name: "vigil_correlator_rule_reloads_total",
                help: "Rule files loaded on SIGHUP.",
                kind: "counter",
                value: n(&self.rule_reloads),
            },
            Sample {
                name: "vigil_correlator_rule_reload_failures_total",
                help: "Rule files refused on SIGHUP (the running rules stayed).",
                kind: "counter",
                value: n(&self.rule_reload_failures),
            },
        ])
    }
}

pub struct Parts {
    pub rules_path: PathBuf,
    pub partition: u32,
    pub partitions: u32,
    pub settings: Settings,
    pub idle_timeout: Duration,
    pub batching: vigil_common::nats::Batching,
    pub health_listener: TcpListener,
    pub metrics_listener: TcpListener,
}

pub struct Correlator {
    parts: Parts,
    nats: async_nats::Client,
    js: jetstream::Context,
    consumer: PullConsumer,
    bucket: kv::Store,
    engine: Engine,
    pub counters: Arc<Counters>,
}

impl Correlator {
    pub async fn open(parts: Parts, nats: async_nats::Client) -> Result<Self, CorrelatorError> {
        let rules = load_rules(&parts.rules_path)?;
        let js = jetstream::new(nats.clone());
        let name = subjects::correlator_consumer(parts.partition);
        let consumer: PullConsumer = js
            .get_consumer_from_stream(&name, subjects::EVENTS_STREAM)
            .await
            .map_err(|e| CorrelatorError::Setup {
                what: format!("consumer {name} on EVENTS"),
                reason: e.to_string(),
            })?;
        let bucket = js
            .get_key_value(subjects::CORRELATOR_BUCKET)
            .await
            .map_err(|e| CorrelatorError::Setup {
                what: format!("bucket {}", subjects::CORRELATOR_BUCKET),
                reason: e.to_string(),
            })?;
        let key = subjects::correlator_checkpoint_key(parts.partition);
        let state = match bucket.get(&key).await {
            Ok(Some(bytes)) => {
                decode_checkpoint(&bytes).map_err(|reason| CorrelatorError::Checkpoint {
                    key: key.clone(),
                    reason,
                })?
            }
            Ok(None) => State::default(),
            Err(e) => {
                return Err(CorrelatorError::Setup {
                    what: format!("checkpoint {key}"),
                    reason: e.to_string(),
                });
            }
        };
        tracing::info!(
            partition = parts.partition,
            watermark = state.watermark,
            rules = rules.len(),
            "restored checkpoint"
        );
        let engine = Engine::new(rules, parts.settings.clone(), state);
        Ok(Self {
            parts,
            nats,
            js,
            consumer,
            bucket,
            engine,
            counters: Arc::new(Counters::default()),
        })
    }

    pub fn health_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.parts.health_listener.local_addr()
    }

    pub fn metrics_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.parts.metrics_listener.local_addr()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: CancellationToken,
    ) -> Result<(), CorrelatorError> {
        let Correlator {
            parts,
            nats,
            js,
            consumer,
            bucket,
            mut engine,
            counters,
        } = self;
        let Parts {
            rules_path,
            partition,
            partitions,
            idle_timeout,
            batching,
            health_listener,
            metrics_listener,
            settings,
        } = parts;
        let (health, health_task) = vigil_common::health::serve(health_listener, shutdown.clone());
        health
            .set_service_status(HEALTH_SERVICE, tonic_health::ServingStatus::Serving)
            .await;
        let metrics_counters = counters.clone();
        let metrics_task = tokio::spawn(vigil_common::metrics::serve(
            metrics_listener,
            shutdown.clone(),
            move || metrics_counters.render(),
        ));
        let key = subjects::correlator_checkpoint_key(partition);
        let mut hangup = hangup_signal();
        let mut last_arrival = Instant::now();
        let mut idle_tick = tokio::time::interval(idle_timeout / 2);
        let mut outcome = Ok(());
        'outer: while !shutdown.is_cancelled() {
            let mut messages = match consumer
                .stream()
                .max_messages_per_batch(1000)
                .heartbeat(Duration::from_secs(5))
                .messages()
                .await
            {
                Ok(m) => m,
                Err(error) => {
                    tracing::warn!(%error, "cannot pull from jetstream, retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let first = tokio::select! {
                    () = shutdown.cancelled() => break 'outer,
                    _ = hangup.recv() => {
                        match load_rules(&rules_path) {
                            Ok(rules) => {
                                tracing::info!(rules = rules.len(), "rules reloaded");
                                engine.replace_rules(rules);
                                counters.rule_reloads.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => {
                                tracing::error!(%error, "rules file refused; the running rules stay in force");
                                counters.rule_reload_failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        continue;
                    }
                    _ = idle_tick.tick() => {
                        // An idle source must not stall windows: with no
                        // events for `idle_timeout`, the watermark follows
                        // the wall clock (the gateway keeps event times
                        // within minutes of it), less the lateness and the
                        // idle timeout. Events older than that are late:
                        // counted, and they update the findings they change.
                        if last_arrival.elapsed() >= idle_timeout && engine.state.max_event_time > 0 {
                            let idle_ms = i64::try_from(idle_timeout.as_millis()).unwrap_or(i64::MAX);
                            let watermark = vigil_common::now_millis()
                                .saturating_sub(settings.allowed_lateness_ms)
                                .saturating_sub(idle_ms);
                            let findings = engine.advance(watermark);
                            if !findings.is_empty()
                                && let Err(error) = commit(&js, &bucket, &key, &engine, &findings, &counters).await
                            {
                                // Back to the checkpoint: the windows close
                                // again on the next tick.
                                tracing::warn!(%error, "cannot publish idle-closed findings; back to the last checkpoint");
                                if let Err(error) = restore(&mut engine, &bucket, &key, &settings).await {
                                    outcome = Err(error);
                                    break 'outer;
                                }
                            }
                        }
                        continue;
                    }
                    next = messages.next() => next,
                };
                let pending = match first {
                    Some(Ok(m)) => vigil_common::nats::fill_batch(m, &mut messages, batching).await,
                    Some(Err(error)) => {
                        tracing::warn!(%error, "pull stream error");
                        continue;
                    }
                    None => break,
                };
                last_arrival = Instant::now();
                let mut findings = Vec::new();
                for message in &pending {
                    let Ok(batch) = EventBatch::decode(message.payload.as_ref()) else {
                        // The writer dead-letters it; nothing to correlate.
                        counters.undecodable.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    for event in &batch.events {
                        let tenant = event
                            .metadata
                            .as_ref()
                            .map(|m| m.tenant.as_str())
                            .unwrap_or_default();
                        if tenant.is_empty() || partition_of(tenant, partitions) != partition {
                            continue;
                        }
                        counters.events.fetch_add(1, Ordering::Relaxed);
                        findings.extend(engine.ingest(tenant, event));
                    }
                }
                match commit(&js, &bucket, &key, &engine, &findings, &counters).await {
                    Ok(()) => {
                        for message in &pending {
                            if let Err(error) = message.ack().await {
                                tracing::warn!(%error, "ack failed; the batch will be redelivered and counted once");
                            }
                        }
                    }
                    Err(error) => {
                        // Not checkpointed: hand the batch back and restart
                        // from the last checkpoint so state matches it.
                        tracing::warn!(%error, "commit failed; replaying from the last checkpoint");
                        for message in &pending {
                            let _ = message
                                .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                                .await;
                        }
                        if let Err(error) = restore(&mut engine, &bucket, &key, &settings).await {
                            outcome = Err(error);
                            break 'outer;
                        }
                    }
                }
            }
        }
        health
            .set_service_status(HEALTH_SERVICE, tonic_health::ServingStatus::NotServing)
            .await;
        vigil_common::nats::flush_within(&nats, vigil_common::shutdown::FLUSH_LIMIT).await;
        let _ = health_task.await;
        let _ = metrics_task.await;
        tracing::info!("correlator stopped");
        outcome
    }
}

/// Publishes changed findings (waiting for JetStream), then checkpoints.
async fn commit(
    js: &jetstream::Context,
    bucket: &kv::Store,
    key: &str,
    engine: &Engine,
    findings: &[Finding],
    counters: &Counters,
) -> Result<(), String> {
    let mut acks = Vec::with_capacity(findings.len());
    for f in findings {
        let publish = PublishMessage::build()
            .payload(Bytes::from(to_proto(f).encode_to_vec()))
            .message_id(format!("{}-v{}", f.id, f.version))
            .header("Content-Type", PROTOBUF_CONTENT_TYPE)
            .header(MESSAGE_TYPE_HEADER, "vigil.finding.v1.Finding");
        let ack = js
            .send_publish(subjects::findings_subject(&f.tenant, &f.rule_id), publish)
            .await
            .map_err(|e| e.to_string())?;
        acks.push(ack.into_future());
    }
    for ack in futures::future::join_all(acks).await {
        ack.map_err(|e| e.to_string())?;
    }
    let state = encode_checkpoint(&engine.state)?;
    counters
        .checkpoint_bytes
        .store(state.len() as u64, Ordering::Relaxed);
    bucket
        .put(key, Bytes::from(state))
        .await
        .map_err(|e| e.to_string())?;
    counters
        .findings
        .fetch_add(findings.len() as u64, Ordering::Relaxed);
    counters
        .late_events
        .store(engine.state.late_events, Ordering::Relaxed);
    counters
        .dropped_late_events
        .store(engine.state.dropped_late_events, Ordering::Relaxed);
    counters
        .watermark_ms
        .store(engine.state.watermark, Ordering::Relaxed);
    Ok(())
}

/// Replaces the engine's state with the last checkpoint (after a failed
/// commit, so state never runs ahead of what is published and
/// acknowledged). If the checkpoint cannot be read the correlator must
/// stop: continuing could lose the findings of the failed commit.
async fn restore(
    engine: &mut Engine,
    bucket: &kv::Store,
    key: &str,
    settings: &Settings,
) -> Result<(), CorrelatorError> {
    let unreadable = |reason: String| CorrelatorError::Checkpoint {
        key: key.to_owned(),
        reason,
    };
    let state = match bucket.get(key).await {
        Ok(Some(bytes)) => decode_checkpoint(&bytes).map_err(unreadable)?,
        Ok(None) => State::default(),
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let rules = engine.rules().to_vec();
    *engine = Engine::new(rules, settings.clone(), state);
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn checkpoints_are_compressed_and_plain_json_still_reads() -> Result<(), String> {
        let rules = rules::parse(rules::DEFAULT_RULES).map_err(|e| e.to_string())?;
        let mut engine = Engine::new(rules, Settings::default(), State::default());
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let start = 1_790_000_000_000i64;
        for i in 0..20_000 {
            let kind = vigil_client::events::random_kind(&mut rng);
            let event = vigil_client::events::sample(kind, &mut rng, start + i * 50);
            engine.ingest("acme", &event);
        }
        let json = serde_json::to_vec(&engine.state).map_err(|e| e.to_string())?;
        let packed = encode_checkpoint(&engine.state)?;
        println!(
            "checkpoint: {} bytes of JSON, {} gzip",
            json.len(),
            packed.len()
        );
        assert!(
            packed.len() * 3 < json.len(),
            "{} vs {}",
            packed.len(),
            json.len()
        );
        let again = |s: State| serde_json::to_vec(&s).map_err(|e| e.to_string());
        assert_eq!(again(decode_checkpoint(&packed)?)?, json);
        assert_eq!(again(decode_checkpoint(&json)?)?, json, "plain JSON");
        assert!(decode_checkpoint(&[0x1f, 0x8b, 1, 2, 3]).is_err());
        assert!(decode_checkpoint(b"not json").is_err());
        Ok(())
    }
}
