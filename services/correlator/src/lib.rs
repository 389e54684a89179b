//! The vigil correlator: detection rules over the event stream, in event
//! time, emitting OCSF Detection Findings.
//!
//! - [`rules`]: the rule file format and its validation.
//! - [`fields`]: the event fields rules test and group by.
//! - [`engine`]: windows, watermark, late events, suppression, findings.
//! - [`service`]: consume, correlate, publish, checkpoint, then ack.
//! - this file: configuration and [`build`].

pub mod engine;
pub mod fields;
pub mod rules;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use vigil_common::config::{ConfigErrors, InvalidConfig, NatsSettings};

pub use service::{Correlator, CorrelatorError};

/// Correlator settings; every one is a flag and a `VIGIL_CORRELATOR_*` env var.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// The rule file (TOML); re-read on SIGHUP.
    #[arg(
        long,
        env = "VIGIL_CORRELATOR_RULES",
        default_value = "deploy/rules.toml"
    )]
    pub rules: PathBuf,
    /// This instance's partition, 0-based.
    #[arg(long, env = "VIGIL_CORRELATOR_PARTITION", default_value_t = 0)]
    pub partition: u32,
    /// How many partitions there are (as provisioned).
    #[arg(long, env = "VIGIL_CORRELATOR_PARTITIONS", default_value_t = 1)]
    pub partitions: u32,
    /// How far the watermark trails the newest event time.
    #[arg(
        long,
        env = "VIGIL_CORRELATOR_ALLOWED_LATENESS_MS",
        default_value_t = 30_000
    )]
    pub allowed_lateness_ms: i64,
    /// How long (event time) closed windows stay open to late events.
    #[arg(
        long,
        env = "VIGIL_CORRELATOR_LATE_RETENTION_SECS",
        default_value_t = 3600
    )]
    pub late_retention_secs: i64,
    /// With no events for this long, event time advances with wall time.
    #[arg(
        long,
        env = "VIGIL_CORRELATOR_IDLE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub idle_timeout_ms: u64,
    #[arg(
        long,
        env = "VIGIL_CORRELATOR_BATCH_MAX_MESSAGES",
        default_value_t = 200
    )]
    pub batch_max_messages: usize,
    #[arg(
        long,
        env = "VIGIL_CORRELATOR_BATCH_MAX_WAIT_MS",
        default_value_t = 100
    )]
    pub batch_max_wait_ms: u64,
    #[arg(
        long,
        env = "VIGIL_CORRELATOR_HEALTH_LISTEN",
        default_value = "127.0.0.1:4464"
    )]
    pub health_listen: SocketAddr,
    /// Prometheus `/metrics`.
    #[arg(
        long,
        env = "VIGIL_CORRELATOR_METRICS_LISTEN",
        default_value = "127.0.0.1:4465"
    )]
    pub metrics_listen: SocketAddr,
    #[arg(
        long,
        env = "VIGIL_CORRELATOR_NATS_URL",
        default_value = "tls://127.0.0.1:4333"
    )]
    pub nats_url: String,
    #[arg(
        long,
        env = "VIGIL_CORRELATOR_NATS_CA",
        default_value = "certs/out/ca.crt"
    )]
    pub nats_ca: PathBuf,
    #[arg(
        long,
        env = "VIGIL_CORRELATOR_NATS_CERT",
        default_value = "certs/out/nats/correlator.crt"
    )]
    pub nats_cert: PathBuf,
    #[arg(
        long,
        env = "VIGIL_CORRELATOR_NATS_KEY",
        default_value = "certs/out/nats/correlator.key"
    )]
    pub nats_key: PathBuf,
}

impl Config {
    pub fn nats(&self) -> NatsSettings {
        NatsSettings {
            url: self.nats_url.clone(),
            ca: self.nats_ca.clone(),
            cert: self.nats_cert.clone(),
            key: self.nats_key.clone(),
            inbox_prefix: vigil_common::subjects::inbox_prefix("correlator"),
        }
    }

    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let mut errors = ConfigErrors::new();
        if let Err(e) = service::load_rules(&self.rules) {
            errors.add("VIGIL_CORRELATOR_RULES", e);
        }
        let max = vigil_common::subjects::MAX_CORRELATOR_PARTITIONS;
        if !(1..=max).contains(&self.partitions) {
            errors.add(
                "VIGIL_CORRELATOR_PARTITIONS",
                format_args!("must be 1 to {max}"),
            );
        }
        if self.partition >= self.partitions {
            errors.add(
                "VIGIL_CORRELATOR_PARTITION",
                "must be below VIGIL_CORRELATOR_PARTITIONS",
            );
        }
        if self.allowed_lateness_ms < 0 {
            errors.add(
                "VIGIL_CORRELATOR_ALLOWED_LATENESS_MS",
                "must not be negative",
            );
        }
        if self.idle_timeout_ms < 100 {
            errors.add("VIGIL_CORRELATOR_IDLE_TIMEOUT_MS", "must be at least 100");
        }
        self.nats().check("VIGIL_CORRELATOR", &mut errors);
        errors.into_result()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] InvalidConfig),
    #[error(transparent)]
    Correlator(#[from] CorrelatorError),
    #[error(transparent)]
    Nats(#[from] vigil_common::nats::NatsConnectError),
}

/// Validates, connects, binds, restores the checkpoint.
pub async fn build(config: &Config) -> Result<Correlator, BuildError> {
    config.validate()?;
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| CorrelatorError::Bind { addr, source })
    };
    let parts = service::Parts {
        rules_path: config.rules.clone(),
        partition: config.partition,
        partitions: config.partitions,
        settings: engine::Settings {
            allowed_lateness_ms: config.allowed_lateness_ms,
            late_retention_ms: config.late_retention_secs * 1000,
        },
        idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        batching: vigil_common::nats::Batching {
            max_messages: config.batch_max_messages.max(1),
            max_wait: Duration::from_millis(config.batch_max_wait_ms.max(1)),
        },
        health_listener: bind(config.health_listen).await?,
        metrics_listener: bind(config.metrics_listen).await?,
    };
    let nats = vigil_common::nats::connect(&config.nats(), "vigil-correlator").await?;
    Ok(Correlator::open(parts, nats).await?)
}
