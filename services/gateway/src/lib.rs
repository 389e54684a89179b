//! The vigil gateway: devices call `vigil.ingest.v1.IngestService` over
//! mTLS; each event is validated against the device's certificate identity
//! and limits; accepted events are published to JetStream as `EventBatch`
//! messages, and the call answers only once JetStream has them.
//!
//! - [`validate`]: one event, pure.
//! - [`publish`]: grouping into batches, message ids, waiting for acks.
//! - [`service`]: the gRPC service.
//! - this file: configuration, [`build`] (binds, connects) and
//!   [`Gateway::run_until_stopped`].

pub mod pseudonym;
pub mod publish;
pub mod service;
pub mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vigil_common::config::{Allowlist, ConfigErrors, InvalidConfig, NatsSettings, ServerTlsFiles};
use vigil_proto::ingest::v1::ingest_service_server::IngestServiceServer;

/// Gateway settings; every one is a flag and a `VIGIL_GATEWAY_*` env var.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the mTLS gRPC listener.
    #[arg(long, env = "VIGIL_GATEWAY_LISTEN", default_value = "127.0.0.1:4443")]
    pub listen: SocketAddr,
    /// Address of the plaintext grpc.health.v1 listener.
    #[arg(
        long,
        env = "VIGIL_GATEWAY_HEALTH_LISTEN",
        default_value = "127.0.0.1:4444"
    )]
    pub health_listen: SocketAddr,
    #[arg(
        long,
        env = "VIGIL_GATEWAY_TLS_CERT",
        default_value = "certs/out/server/gateway.crt"
    )]
    pub tls_cert: PathBuf,
    #[arg(
        long,
        env = "VIGIL_GATEWAY_TLS_KEY",
        default_value = "certs/out/server/gateway.key"
    )]
    pub tls_key: PathBuf,
    /// CA that device certificates must chain to.
    #[arg(
        long,
        env = "VIGIL_GATEWAY_TLS_CLIENT_CA",
        default_value = "certs/out/ca.crt"
    )]
    pub tls_client_ca: PathBuf,
    #[arg(
        long,
        env = "VIGIL_GATEWAY_NATS_URL",
        default_value = "tls://127.0.0.1:4333"
    )]
    pub nats_url: String,
    #[arg(
        long,
        env = "VIGIL_GATEWAY_NATS_CA",
        default_value = "certs/out/ca.crt"
    )]
    pub nats_ca: PathBuf,
    #[arg(
        long,
        env = "VIGIL_GATEWAY_NATS_CERT",
        default_value = "certs/out/nats/gateway.crt"
    )]
    pub nats_cert: PathBuf,
    #[arg(
        long,
        env = "VIGIL_GATEWAY_NATS_KEY",
        default_value = "certs/out/nats/gateway.key"
    )]
    pub nats_key: PathBuf,
    /// CRL (PEM) of revoked client certificates; re-read when it changes,
    /// and connections of newly revoked certificates are cut.
    #[arg(long, env = "VIGIL_GATEWAY_TLS_CRL")]
    pub tls_crl: Option<PathBuf>,
    /// Networks (CIDR, comma-separated) allowed to connect; others are
    /// closed before the TLS handshake.
    #[arg(
        long,
        env = "VIGIL_GATEWAY_ALLOW",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128"
    )]
    pub allow: Vec<ipnet::IpNet>,
    /// Calls per second allowed per client identity (sustained).
    #[arg(long, env = "VIGIL_GATEWAY_RATE_PER_SEC", default_value_t = 200)]
    pub rate_per_sec: u32,
    /// Calls per client identity allowed in a burst.
    #[arg(long, env = "VIGIL_GATEWAY_RATE_BURST", default_value_t = 400)]
    pub rate_burst: u32,
    /// Allow insecure settings (a wildcard allowlist, Postgres without TLS);
    /// for development only, and said so at start-up.
    #[arg(long, env = "VIGIL_GATEWAY_INSECURE_DEV")]
    pub insecure_dev: bool,
    /// Per-tenant pseudonymisation (see deploy/pseudonymise.toml): the
    /// named fields are replaced by a keyed hash before anything is stored.
    #[arg(long, env = "VIGIL_GATEWAY_PSEUDONYMISE")]
    pub pseudonymise: Option<PathBuf>,
    /// The secret (at least 32 bytes) pseudonyms are keyed with; required
    /// with --pseudonymise. Changing it changes every pseudonym.
    #[arg(long, env = "VIGIL_GATEWAY_PSEUDONYM_KEY")]
    pub pseudonym_key: Option<PathBuf>,
    /// Events more than this many seconds ahead of the gateway clock are refused.
    #[arg(
        long,
        env = "VIGIL_GATEWAY_MAX_FUTURE_SKEW_SECS",
        default_value_t = 300
    )]
    pub max_future_skew_secs: u64,
    /// Events older than this many seconds are refused.
    #[arg(long, env = "VIGIL_GATEWAY_MAX_EVENT_AGE_SECS", default_value_t = 7 * 24 * 3600)]
    pub max_event_age_secs: u64,
    /// Most events in one Publish request or stream batch.
    #[arg(long, env = "VIGIL_GATEWAY_MAX_BATCH_EVENTS", default_value_t = 1000)]
    pub max_batch_events: usize,
    /// How long to wait for JetStream's acknowledgement before answering
    /// UNAVAILABLE.
    #[arg(long, env = "VIGIL_GATEWAY_PUBLISH_TIMEOUT_SECS", default_value_t = 10)]
    pub publish_timeout_secs: u64,
}

impl Config {
    pub fn tls_files(&self) -> ServerTlsFiles {
        ServerTlsFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            client_ca: self.tls_client_ca.clone(),
            crl: self.tls_crl.clone(),
        }
    }

    pub fn nats(&self) -> NatsSettings {
        NatsSettings {
            url: self.nats_url.clone(),
            ca: self.nats_ca.clone(),
            cert: self.nats_cert.clone(),
            key: self.nats_key.clone(),
            inbox_prefix: vigil_common::subjects::inbox_prefix("gateway"),
        }
    }

    /// Every problem, named by its env var.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let mut errors = ConfigErrors::new();
        self.tls_files().check("VIGIL_GATEWAY", &mut errors);
        self.nats().check("VIGIL_GATEWAY", &mut errors);
        self.allowlist()
            .check("VIGIL_GATEWAY_ALLOW", self.insecure_dev, &mut errors);
        self.rate().check("VIGIL_GATEWAY", &mut errors);
        if self.max_batch_events == 0 || self.max_batch_events > 10_000 {
            errors.add("VIGIL_GATEWAY_MAX_BATCH_EVENTS", "must be 1 to 10000");
        }
        match (&self.pseudonymise, &self.pseudonym_key) {
            (Some(config), Some(key)) => {
                if let Err(e) = pseudonym::Pseudonymiser::load(config, key) {
                    errors.add("VIGIL_GATEWAY_PSEUDONYMISE", e);
                }
            }
            (Some(_), None) => errors.add(
                "VIGIL_GATEWAY_PSEUDONYM_KEY",
                "required with VIGIL_GATEWAY_PSEUDONYMISE",
            ),
            (None, Some(_)) => errors.add(
                "VIGIL_GATEWAY_PSEUDONYMISE",
                "required with VIGIL_GATEWAY_PSEUDONYM_KEY",
            ),
            (None, None) => {}
        }
        if self.publish_timeout_secs == 0 {
            errors.add("VIGIL_GATEWAY_PUBLISH_TIMEOUT_SECS", "must be at least 1");
        }
        errors.into_result()
    }

    pub fn rate(&self) -> vigil_common::grpc::RateLimit {
        vigil_common::grpc::RateLimit {
            per_second: self.rate_per_sec,
            burst: self.rate_burst,
        }
    }

    pub fn allowlist(&self) -> Allowlist {
        Allowlist::new(self.allow.clone())
    }

    fn limits(&self) -> validate::Limits {
        validate::Limits {
            max_future_skew: Duration::from_secs(self.max_future_skew_secs),
            max_age: Duration::from_secs(self.max_event_age_secs),
            ..Default::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] InvalidConfig),
    #[error(transparent)]
    Edge(#[from] vigil_common::grpc::EdgeError),
    #[error(transparent)]
    Nats(#[from] vigil_common::nats::NatsConnectError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("grpc server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A gateway with its sockets bound and NATS connected, not yet serving.
pub struct Gateway {
    listener: TcpListener,
    health_listener: TcpListener,
    edge: vigil_common::grpc::Edge,
    nats: async_nats::Client,
    api: service::IngestApi,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, GatewayError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Bind { addr, source })
}

/// Validates the config, loads TLS material, connects to NATS and binds
/// both listeners (port 0 picks a free port; see [`Gateway::local_addr`]).
pub async fn build(config: &Config) -> Result<Gateway, GatewayError> {
    config.validate()?;
    vigil_common::config::warn_insecure("gateway", config.insecure_dev);
    let edge =
        vigil_common::grpc::Edge::load(&config.tls_files(), config.allowlist(), config.rate())?;
    let nats = vigil_common::nats::connect(&config.nats(), "vigil-gateway").await?;
    let mut js = async_nats::jetstream::new(nats.clone());
    js.set_timeout(Duration::from_secs(config.publish_timeout_secs));
    let api = service::IngestApi::new(
        js,
        config.limits(),
        config.max_batch_events,
        Duration::from_secs(config.publish_timeout_secs),
        match (&config.pseudonymise, &config.pseudonym_key) {
            (Some(file), Some(key)) => Some(
                pseudonym::Pseudonymiser::load(file, key)
                    .map_err(|e| GatewayError::Config(InvalidConfig(vec![e])))?,
            ),
            _ => None,
        },
    );
    Ok(Gateway {
        listener: bind(config.listen).await?,
        health_listener: bind(config.health_listen).await?,
        edge,
        nats,
        api,
    })
}

impl Gateway {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn health_addr(&self) -> std::io::Result<SocketAddr> {
        self.health_listener.local_addr()
    }

    /// Serves until `shutdown`: then reports NOT_SERVING, stops accepting,
    /// lets in-flight calls finish (each waits for its JetStream acks), and
    /// flushes NATS.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), GatewayError> {
        let (health, health_task) =
            vigil_common::health::serve(self.health_listener, shutdown.clone());
        health
            .set_serving::<IngestServiceServer<service::IngestApi>>()
            .await;
        {
            // Ready only while connected to NATS (a publish could not be
            // made durable otherwise), and never again once stopping.
            let health = health.clone();
            let shutdown = shutdown.clone();
            let nats = self.nats.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                let mut serving = true;
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    let connected =
                        nats.connection_state() == async_nats::connection::State::Connected;
                    if connected != serving {
                        serving = connected;
                        if connected {
                            health
                                .set_serving::<IngestServiceServer<service::IngestApi>>()
                                .await;
                        } else {
                            tracing::warn!("nats connection lost; reporting NOT_SERVING");
                            health
                                .set_not_serving::<IngestServiceServer<service::IngestApi>>()
                                .await;
                        }
                    }
                }
                health
                    .set_not_serving::<IngestServiceServer<service::IngestApi>>()
                    .await;
            });
        }
        let ingest = IngestServiceServer::new(self.api)
            // Room for a full batch of maximal events, and no more.
            .max_decoding_message_size(16 * 1024 * 1024);
        let router = vigil_common::grpc::server(256, &self.edge)
            .add_service(ingest)
            .add_optional_service(vigil_common::grpc::reflection());
        vigil_common::grpc::serve_mtls(router, self.listener, &self.edge, &shutdown).await?;
        vigil_common::nats::flush_within(&self.nats, vigil_common::shutdown::FLUSH_LIMIT).await;
        let _ = health_task.await;
        tracing::info!("gateway stopped");
        Ok(())
    }
}
