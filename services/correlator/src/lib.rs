//! The vigil correlator: detection rules over the event stream, in event
//! time, emitting OCSF Detection Findings.
//!
//! - [`rules`]: the rule file format and its validation.
//! - [`fields`]: the event fields rules test and group by.
//! - [`engine`]: windows, watermark, late events, suppression, findings.
//! - [`checkpoint`]: the engine state's codec in the KV bucket.
//! - [`finding`]: a finding as published.
//! - [`metrics`]: the counters on `/metrics`.
//! - [`service`]: the loop: consume, correlate, publish, checkpoint, ack.
//! - this file: the correlator's own settings ([`Config`] → [`Loaded`]) and
//!   its [`Service`] lifecycle. Hard dependencies: JetStream and the
//!   CORRELATOR KV bucket.

pub mod checkpoint;
pub mod engine;
pub mod fields;
pub mod finding;
pub mod metrics;
pub mod rules;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use tokio_util::sync::CancellationToken;
use vigil_common::config::{ConfigErrors, InvalidConfig, NatsSettings};
use vigil_common::consume::Batching;
use vigil_common::metrics::Metrics;
use vigil_common::readiness::Readiness;
use vigil_common::service::{Service, ServiceConfig};
use vigil_common::settings::{BatchArgs, Names, NatsArgs, RunArgs, key};
use vigil_common::subjects;

pub use service::CorrelatorError;

const NAMES: Names = Names::new("correlator");

/// Correlator settings; every one is a flag and a `VIGIL_CORRELATOR_*` variable.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub batch: BatchArgs,
    /// The rule file (TOML); re-read on SIGHUP.
    #[arg(long, env = "RULES", default_value = "deploy/rules.toml")]
    pub rules: PathBuf,
    /// This instance's partition, 0-based.
    #[arg(long, env = "PARTITION", default_value_t = 0)]
    pub partition: u32,
    /// How many partitions there are (as provisioned).
    #[arg(long, env = "PARTITIONS", default_value_t = 1)]
    pub partitions: u32,
    /// How far the watermark trails the newest event time.
    #[arg(long, env = "ALLOWED_LATENESS_MS", default_value_t = 30_000)]
    pub allowed_lateness_ms: i64,
    /// How long (event time) closed windows stay open to late events.
    #[arg(long, env = "LATE_RETENTION_SECS", default_value_t = 3600)]
    pub late_retention_secs: i64,
    /// At most this many group keys without a finding are kept (memory:
    /// about 1 KB each); beyond it the least recently active are forgotten.
    #[arg(long, env = "MAX_KEYS", default_value_t = 400_000)]
    pub max_keys: usize,
    /// With no events for this long, event time advances with wall time.
    #[arg(long, env = "IDLE_TIMEOUT_MS", default_value_t = 10_000)]
    pub idle_timeout_ms: u64,
}

/// The correlator's settings, checked and loaded.
pub struct Loaded {
    nats: NatsSettings,
    batching: Batching,
    rules_path: PathBuf,
    rules: Vec<rules::Rule>,
    partition: u32,
    partitions: u32,
    settings: engine::Settings,
    idle_timeout: Duration,
}

impl ServiceConfig for Config {
    type Loaded = Loaded;

    /// Checks every setting, naming each bad one, and loads them.
    fn load(&self, _run: &RunArgs) -> Result<Loaded, InvalidConfig> {
        let mut errors = ConfigErrors::new();
        let nats = self.nats.load(NAMES, &mut errors);
        let batching = self.batch.load(NAMES, &mut errors);
        let rules = service::load_rules(&self.rules)
            .map_err(|e| errors.add(&NAMES.env("RULES"), e))
            .ok();
        let max = subjects::MAX_CORRELATOR_PARTITIONS;
        if !(1..=max).contains(&self.partitions) {
            errors.add(&NAMES.env("PARTITIONS"), format_args!("must be 1 to {max}"));
        }
        if self.partition >= self.partitions {
            errors.add(
                &NAMES.env("PARTITION"),
                format_args!("must be below {}", NAMES.env("PARTITIONS")),
            );
        }
        if self.allowed_lateness_ms < 0 {
            errors.add(&NAMES.env("ALLOWED_LATENESS_MS"), "must not be negative");
        }
        if self.late_retention_secs < 0 {
            errors.add(&NAMES.env("LATE_RETENTION_SECS"), "must not be negative");
        }
        if self.idle_timeout_ms < 100 {
            errors.add(&NAMES.env("IDLE_TIMEOUT_MS"), "must be at least 100");
        }
        let loaded = match (nats, batching, rules) {
            (Some(nats), Some(batching), Some(rules)) => Some(Loaded {
                nats,
                batching,
                rules_path: self.rules.clone(),
                rules,
                partition: self.partition,
                partitions: self.partitions,
                settings: engine::Settings {
                    allowed_lateness_ms: self.allowed_lateness_ms,
                    late_retention_ms: self.late_retention_secs.saturating_mul(1000),
                    max_keys: self.max_keys,
                },
                idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            }),
            _ => None,
        };
        errors.finish(loaded)
    }
}

/// A correlator partition: consumer opened, checkpoint restored, sockets
/// bound, not yet consuming.
pub struct Correlator {
    worker: service::Worker,
    nats: async_nats::Client,
    /// Stops the bucket probe once the correlator has stopped.
    probes: CancellationToken,
    /// Stops the consumer's pull task.
    shutdown: CancellationToken,
}

impl Service for Correlator {
    const NAME: &'static str = "correlator";
    const ABOUT: &'static str = "vigil correlator: event-time detection rules over EVENTS";
    const HEALTH_SERVICE: &'static str = "vigil.correlator";
    const DEFAULTS: &'static [(&'static str, &'static str)] = &[
        (key::HEALTH_LISTEN, "127.0.0.1:4464"),
        (key::METRICS_LISTEN, "127.0.0.1:4465"),
    ];
    type Config = Config;
    type Error = CorrelatorError;

    /// Connects, opens the partition's consumer and the bucket, restores
    /// the checkpoint.
    async fn build(
        loaded: Loaded,
        readiness: &Readiness,
        metrics: &Metrics,
    ) -> Result<Self, CorrelatorError> {
        let nats =
            vigil_common::nats::connect_ready(&loaded.nats, "vigil-correlator", readiness).await?;
        let js = jetstream::new(nats.clone());
        let name = subjects::correlator_consumer(loaded.partition);
        let bucket = js
            .get_key_value(subjects::CORRELATOR_BUCKET)
            .await
            .map_err(|e| CorrelatorError::Setup {
                what: format!("bucket {}", subjects::CORRELATOR_BUCKET),
                reason: e.to_string(),
            })?;
        let owned = subjects::correlator_slots(loaded.partition, loaded.partitions);
        let shutdown = CancellationToken::new();
        let (source, acked) = service::Source::open(
            js.clone(),
            name.clone(),
            owned
                .iter()
                .map(|s| subjects::events_slot_filter(*s))
                .collect(),
            loaded.batching,
            shutdown.clone(),
        )
        .await;
        let mut slots = Vec::new();
        for slot in owned {
            let key = subjects::correlator_checkpoint_key(slot);
            let (checkpoint, restored) = checkpoint::Checkpoint::open(bucket.clone(), &key)
                .await
                .map_err(|reason| CorrelatorError::Checkpoint {
                key: key.clone(),
                reason,
            })?;
            let (state, position, committed) = match (restored, acked) {
                (Some(r), _) => (r.state, r.position, Some(r.position)),
                // No checkpoint yet: start where the consumer's acks stand
                // (the first commit writes one for every owned slot).
                (None, Some(acked)) => (engine::State::default(), acked, None),
                (None, None) => {
                    return Err(CorrelatorError::Setup {
                        what: format!("consumer {name} on EVENTS"),
                        reason: "it does not exist and there is no checkpoint".into(),
                    });
                }
            };
            tracing::info!(
                partition = loaded.partition,
                partitions = loaded.partitions,
                slot,
                position,
                watermark = state.global.min_watermark(),
                live_keys = state.live_keys(),
                rules = loaded.rules.len(),
                "restored checkpoint"
            );
            slots.push(service::Slot {
                slot,
                // The key cap is the partition's, over all its slots.
                engine: engine::Engine::new(
                    loaded.rules.clone(),
                    engine::Settings {
                        max_keys: usize::MAX,
                        ..loaded.settings.clone()
                    },
                    state,
                ),
                checkpoint,
                position,
                findings: Vec::new(),
                dirty: false,
                committed,
                state_bytes: 0,
            });
        }
        // The bucket has no events of its own: probe it (stream info is
        // the cheapest call the correlator's NATS user may make on it).
        let bucket_ready = readiness.dependency("kv");
        let probes = CancellationToken::new();
        bucket_ready.up();
        let counters = Arc::new(metrics::Counters::new());
        counters.register(metrics);
        vigil_common::nats::watch_lag(
            js.clone(),
            vec![(subjects::EVENTS_STREAM.to_owned(), name.clone())],
            Vec::new(),
            metrics,
            probes.clone(),
        );
        {
            // `kv::Store::status` answers from a cache; ask the server.
            let js = js.clone();
            let stream = bucket.stream_name.clone();
            bucket_ready.clone().probe(probes.clone(), move || {
                let js = js.clone();
                let stream = stream.clone();
                async move { js.get_stream(&stream).await.is_ok() }
            });
        }
        Ok(Correlator {
            worker: service::Worker {
                rules_path: loaded.rules_path,
                max_keys: loaded.settings.max_keys,
                settings: loaded.settings,
                idle_timeout: loaded.idle_timeout,
                js,
                source,
                slots,
                next_delivery: 1,
                counters,
                bucket_ready,
                last_arrival: std::collections::HashMap::new(),
                started: Instant::now(),
            },
            nats,
            probes,
            shutdown,
        })
    }

    fn addresses(&self) -> Vec<(&'static str, SocketAddr)> {
        Vec::new()
    }

    async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), CorrelatorError> {
        let Correlator {
            worker,
            nats,
            probes,
            shutdown: pulling,
        } = self;
        let outcome = worker.run(shutdown.clone()).await;
        pulling.cancel();
        // An unreadable checkpoint stops the loop but not the signal: stop
        // the pieces that watch it too.
        shutdown.cancel();
        vigil_common::nats::flush_within(&nats, vigil_common::shutdown::FLUSH_LIMIT).await;
        probes.cancel();
        outcome
    }
}
