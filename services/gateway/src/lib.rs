//! The vigil gateway: devices call `vigil.ingest.v1.IngestService` over
//! mTLS; each event is validated against the device's certificate identity
//! and limits; accepted events are published to JetStream as `EventBatch`
//! messages, and the call answers only once JetStream has them.
//!
//! - [`validate`]: one event against identity, limits and the OCSF schema; pure.
//! - [`attributes`]: which OCSF attributes an event carries.
//! - [`pseudonym`]: per-tenant keyed hashes of chosen fields.
//! - [`publish`]: grouping into batches, message ids, waiting for acks.
//! - [`service`]: the gRPC IngestService.
//! - [`catalogue`]: the schema catalogue (`vigil.schema.v1.SchemaService`).
//! - this file: the gateway's own settings ([`Config`] → [`Loaded`]) and
//!   its [`Service`] lifecycle. Hard dependency: JetStream (the NATS
//!   connection).

pub mod attributes;
pub mod catalogue;
pub mod metrics;
pub mod pseudonym;
pub mod publish;
pub mod service;
pub mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vigil_common::config::{ConfigErrors, InvalidConfig, NatsSettings};
use vigil_common::grpc::{BoundEdge, Edge, ServerLimits};
use vigil_common::metrics::Metrics;
use vigil_common::readiness::Readiness;
use vigil_common::service::{BindError, Service, ServiceConfig};
use vigil_common::settings::{EdgeArgs, Names, NatsArgs, RunArgs, key};
use vigil_proto::ingest::v1::ingest_service_server::IngestServiceServer;

const NAMES: Names = Names::new("gateway");

/// Gateway settings; every one is a flag and a `VIGIL_GATEWAY_*` variable.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Per-tenant pseudonymisation (see deploy/pseudonymise.toml): the
    /// named fields are replaced by a keyed hash before anything is stored.
    #[arg(long, env = "PSEUDONYMISE")]
    pub pseudonymise: Option<PathBuf>,
    /// The secret (at least 32 bytes) pseudonyms are keyed with; required
    /// with --pseudonymise. Changing it changes every pseudonym.
    #[arg(long, env = "PSEUDONYM_KEY")]
    pub pseudonym_key: Option<PathBuf>,
    /// Events more than this many seconds ahead of the gateway clock are refused.
    #[arg(long, env = "MAX_FUTURE_SKEW_SECS", default_value_t = 300)]
    pub max_future_skew_secs: u64,
    /// Events older than this many seconds are refused.
    #[arg(long, env = "MAX_EVENT_AGE_SECS", default_value_t = 7 * 24 * 3600)]
    pub max_event_age_secs: u64,
    /// Most events in one Publish request or stream batch.
    #[arg(long, env = "MAX_BATCH_EVENTS", default_value_t = 1000)]
    pub max_batch_events: usize,
    /// How long to wait for JetStream's acknowledgement before answering
    /// UNAVAILABLE.
    #[arg(long, env = "PUBLISH_TIMEOUT_SECS", default_value_t = 10)]
    pub publish_timeout_secs: u64,
}

/// The gateway's settings, checked and loaded.
pub struct Loaded {
    edge: Edge,
    nats: NatsSettings,
    limits: validate::Limits,
    max_batch_events: usize,
    publish_timeout: Duration,
    pseudonymiser: Option<pseudonym::Pseudonymiser>,
}

impl ServiceConfig for Config {
    type Loaded = Loaded;

    /// Checks every setting, naming each bad one, and loads them.
    fn load(&self, run: &RunArgs) -> Result<Loaded, InvalidConfig> {
        let mut errors = ConfigErrors::new();
        let edge = self.edge.load(NAMES, run.insecure_dev, &mut errors);
        let nats = self.nats.load(NAMES, &mut errors);
        if !(1..=10_000).contains(&self.max_batch_events) {
            errors.add(&NAMES.env("MAX_BATCH_EVENTS"), "must be 1 to 10000");
        }
        if self.publish_timeout_secs == 0 {
            errors.add(&NAMES.env("PUBLISH_TIMEOUT_SECS"), "must be at least 1");
        }
        let pseudonymiser = match (&self.pseudonymise, &self.pseudonym_key) {
            (Some(config), Some(key)) => match pseudonym::Pseudonymiser::load(config, key) {
                Ok(p) => Some(p),
                Err(e) => {
                    errors.add(&NAMES.env("PSEUDONYMISE"), e);
                    None
                }
            },
            (Some(_), None) => {
                errors.add(
                    &NAMES.env("PSEUDONYM_KEY"),
                    format_args!("required with {}", NAMES.env("PSEUDONYMISE")),
                );
                None
            }
            (None, Some(_)) => {
                errors.add(
                    &NAMES.env("PSEUDONYMISE"),
                    format_args!("required with {}", NAMES.env("PSEUDONYM_KEY")),
                );
                None
            }
            (None, None) => None,
        };
        let loaded = match (edge, nats) {
            (Some(edge), Some(nats)) => Some(Loaded {
                edge,
                nats,
                limits: validate::Limits {
                    max_future_skew: Duration::from_secs(self.max_future_skew_secs),
                    max_age: Duration::from_secs(self.max_event_age_secs),
                    ..Default::default()
                },
                max_batch_events: self.max_batch_events,
                publish_timeout: Duration::from_secs(self.publish_timeout_secs),
                pseudonymiser,
            }),
            _ => None,
        };
        errors.finish(loaded)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Nats(#[from] vigil_common::nats::NatsConnectError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("grpc server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A gateway with its socket bound and NATS connected, not yet serving.
pub struct Gateway {
    edge: BoundEdge,
    nats: async_nats::Client,
    api: service::IngestApi,
}

/// How many calls the gateway takes on: a device keeps one stream open,
/// so streams per connection stay modest; in-flight calls are bounded so
/// a flood is shed before it queues on JetStream.
const LIMITS: ServerLimits = ServerLimits {
    streams_per_connection: 256,
    in_flight: 2048,
};

impl Gateway {
    /// The listener's TLS material, with its reload counters.
    pub fn tls(&self) -> std::sync::Arc<vigil_common::tls::ServerTls> {
        self.edge.tls()
    }
}

impl Service for Gateway {
    const NAME: &'static str = "gateway";
    const ABOUT: &'static str = "vigil gateway: device mTLS ingest into JetStream";
    const HEALTH_SERVICE: &'static str = "vigil.ingest.v1.IngestService";
    const DEFAULTS: &'static [(&'static str, &'static str)] = &[
        (key::LISTEN, "127.0.0.1:4443"),
        (key::HEALTH_LISTEN, "127.0.0.1:4444"),
        (key::METRICS_LISTEN, "127.0.0.1:4447"),
        (key::RATE_PER_SEC, "200"),
        (key::RATE_BURST, "400"),
    ];
    type Config = Config;
    type Error = GatewayError;

    async fn build(
        loaded: Loaded,
        readiness: &Readiness,
        metrics: &Metrics,
    ) -> Result<Self, GatewayError> {
        // Parse the compiled OCSF schema now, not on the first event.
        let _ = vigil_ocsf::schema();
        let edge = BoundEdge::bind(loaded.edge, metrics).await?;
        let gateway_metrics = crate::metrics::GatewayMetrics::new();
        gateway_metrics.register(metrics);
        // Ready only while connected to NATS: a publish could not be made
        // durable otherwise.
        let nats =
            vigil_common::nats::connect_ready(&loaded.nats, "vigil-gateway", readiness).await?;
        let mut js = async_nats::jetstream::new(nats.clone());
        js.set_timeout(loaded.publish_timeout);
        let api = service::IngestApi::new(
            js,
            loaded.limits,
            loaded.max_batch_events,
            loaded.publish_timeout,
            loaded.pseudonymiser,
            gateway_metrics,
        );
        Ok(Gateway { edge, nats, api })
    }

    fn addresses(&self) -> Vec<(&'static str, SocketAddr)> {
        self.edge.addresses()
    }

    /// Serves until `shutdown`: then stops accepting, lets in-flight calls
    /// finish (each waits for its JetStream acks), and flushes NATS.
    async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), GatewayError> {
        let ingest = IngestServiceServer::new(self.api)
            // Room for a full batch of maximal events, and no more.
            .max_decoding_message_size(16 * 1024 * 1024);
        let router = self
            .edge
            .server(LIMITS)
            .add_service(ingest)
            // The schema catalogue: any authenticated identity.
            .add_service(
                vigil_proto::schema::v1::schema_service_server::SchemaServiceServer::new(
                    catalogue::Catalogue,
                ),
            )
            .add_optional_service(vigil_common::grpc::reflection());
        self.edge.serve(router, &shutdown).await?;
        vigil_common::nats::flush_within(&self.nats, vigil_common::shutdown::FLUSH_LIMIT).await;
        Ok(())
    }
}
