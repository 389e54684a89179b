//! The vigil reader: `vigil.query.v1.QueryService` over mTLS gRPC for
//! analysts, and the same `ListEvents` on NATS `query.events`.
//!
//! - [`query`]: the query layer shared by both APIs (request parsing,
//!   signed page tokens, SQL in transactions scoped by row-level security).
//! - [`service`]: gRPC, with the caller's identity from its certificate.
//! - [`audit`]: every call recorded on `audit.reader` before it is answered.
//! - [`nats_api`]: the NATS responder.
//! - this file: the reader's own settings ([`Config`] → [`Loaded`]) and its
//!   [`Service`] lifecycle. Hard dependencies: Postgres (it answers from
//!   it) and JetStream (it answers nothing unaudited).

pub mod audit;
pub mod nats_api;
pub mod query;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vigil_common::config::{ConfigErrors, InvalidConfig, NatsSettings};
use vigil_common::grpc::{BoundEdge, Edge, ServerLimits};
use vigil_common::metrics::Metrics;
use vigil_common::policy::{LivePolicy, Policy};
use vigil_common::postgres::PostgresSettings;
use vigil_common::readiness::Readiness;
use vigil_common::service::{BindError, Service, ServiceConfig};
use vigil_common::settings::{EdgeArgs, Names, NatsArgs, PostgresArgs, RunArgs, key};
use vigil_proto::query::v1::query_service_server::QueryServiceServer;

const NAMES: Names = Names::new("reader");

/// How often the policy file is checked for changes.
pub const POLICY_CHECK: Duration = Duration::from_secs(2);

/// Reader settings; every one is a flag and a `VIGIL_READER_*` variable.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub postgres: PostgresArgs,
    /// Who may query which tenants (see deploy/policy.toml); re-read when it
    /// changes.
    #[arg(long, env = "POLICY", default_value = "deploy/policy.toml")]
    pub policy: PathBuf,
    /// File holding the secret (at least 32 bytes) page tokens are signed
    /// with; readers behind one address must share it. Unset: a random key,
    /// so page tokens stop working when the reader restarts.
    #[arg(long, env = "PAGE_TOKEN_KEY")]
    pub page_token_key: Option<PathBuf>,
    /// A query running longer than this is cancelled.
    #[arg(long, env = "QUERY_TIMEOUT_SECS", default_value_t = 10)]
    pub query_timeout_secs: u64,
}

/// The reader's settings, checked and loaded.
pub struct Loaded {
    edge: Edge,
    nats: NatsSettings,
    postgres: PostgresSettings,
    policy_path: PathBuf,
    policy: Policy,
    tokens: query::PageTokens,
    query_timeout: Duration,
}

impl ServiceConfig for Config {
    type Loaded = Loaded;

    /// Checks every setting, naming each bad one, and loads them.
    fn load(&self, run: &RunArgs) -> Result<Loaded, InvalidConfig> {
        let mut errors = ConfigErrors::new();
        let insecure = run.insecure_dev;
        let edge = self.edge.load(NAMES, insecure, &mut errors);
        let nats = self.nats.load(NAMES, &mut errors);
        let postgres = self.postgres.load(NAMES, insecure, &mut errors);
        let policy = Policy::load(&self.policy)
            .map_err(|e| errors.add(&NAMES.env("POLICY"), e))
            .ok();
        let tokens = match &self.page_token_key {
            Some(path) => match std::fs::read(path) {
                Ok(secret) if secret.len() >= 32 => Some(query::PageTokens::new(&secret)),
                Ok(_) => {
                    errors.add(&NAMES.env("PAGE_TOKEN_KEY"), "must hold at least 32 bytes");
                    None
                }
                Err(e) => {
                    errors.add(
                        &NAMES.env("PAGE_TOKEN_KEY"),
                        format_args!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            },
            None => query::PageTokens::random()
                .map_err(|e| errors.add(&NAMES.env("PAGE_TOKEN_KEY"), e))
                .ok(),
        };
        if self.query_timeout_secs == 0 {
            errors.add(&NAMES.env("QUERY_TIMEOUT_SECS"), "must be at least 1");
        }
        let loaded = match (edge, nats, postgres, policy, tokens) {
            (Some(edge), Some(nats), Some(postgres), Some(policy), Some(tokens)) => Some(Loaded {
                edge,
                nats,
                postgres,
                policy_path: self.policy.clone(),
                policy,
                tokens,
                query_timeout: Duration::from_secs(self.query_timeout_secs),
            }),
            _ => None,
        };
        errors.finish(loaded)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error(transparent)]
    Nats(#[from] vigil_common::nats::NatsConnectError),
    #[error("cannot subscribe to query.events: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error(transparent)]
    Database(#[from] vigil_common::postgres::PostgresConnectError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("grpc server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

pub struct Reader {
    edge: BoundEdge,
    db: Arc<query::Db>,
    nats: async_nats::Client,
    policy: LivePolicy,
    policy_path: PathBuf,
    /// Stops the Postgres probe once the reader has stopped.
    probes: CancellationToken,
}

/// Analysts make few, heavier calls than devices.
const LIMITS: ServerLimits = ServerLimits {
    streams_per_connection: 128,
    in_flight: 512,
};

impl Reader {
    /// The policy in force, with its reload counters.
    pub fn policy(&self) -> &LivePolicy {
        &self.policy
    }

    /// The listener's TLS material, with its reload counters.
    pub fn tls(&self) -> std::sync::Arc<vigil_common::tls::ServerTls> {
        self.edge.tls()
    }
}

impl Service for Reader {
    const NAME: &'static str = "reader";
    const ABOUT: &'static str = "vigil reader: the QueryService over Postgres (gRPC and NATS)";
    const HEALTH_SERVICE: &'static str = "vigil.query.v1.QueryService";
    const DEFAULTS: &'static [(&'static str, &'static str)] = &[
        (key::LISTEN, "127.0.0.1:4445"),
        (key::HEALTH_LISTEN, "127.0.0.1:4446"),
        (key::METRICS_LISTEN, "127.0.0.1:4448"),
        (key::DATABASE_MAX_CONNECTIONS, "8"),
    ];
    type Config = Config;
    type Error = ReaderError;

    async fn build(
        loaded: Loaded,
        readiness: &Readiness,
        metrics: &Metrics,
    ) -> Result<Self, ReaderError> {
        let edge = BoundEdge::bind(loaded.edge, metrics).await?;
        let timeout_ms = loaded.query_timeout.as_millis().to_string();
        // Postgres itself cancels a query that runs too long.
        let probes = CancellationToken::new();
        let (pool, _) = vigil_common::postgres::connect_ready(
            &loaded.postgres,
            vigil_common::postgres::Session {
                settings: vec![("statement_timeout", timeout_ms)],
                statements: Vec::new(),
            },
            readiness,
            probes.clone(),
        )
        .await?;
        let nats =
            vigil_common::nats::connect_ready(&loaded.nats, "vigil-reader", readiness).await?;
        Ok(Reader {
            edge,
            db: Arc::new(query::Db {
                pool,
                tokens: loaded.tokens,
                max_statement_time: loaded.query_timeout,
            }),
            nats,
            policy: LivePolicy::fixed(loaded.policy),
            policy_path: loaded.policy_path,
            probes,
        })
    }

    fn addresses(&self) -> Vec<(&'static str, SocketAddr)> {
        self.edge.addresses()
    }

    async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), ReaderError> {
        self.policy
            .watch(self.policy_path.clone(), POLICY_CHECK, shutdown.clone());
        let audit = audit::Auditor::new(self.nats.clone());
        let nats_task = tokio::spawn(nats_api::serve(
            self.nats.clone(),
            self.db.clone(),
            audit.clone(),
            shutdown.clone(),
        ));
        let router = self
            .edge
            .server(LIMITS)
            .add_service(QueryServiceServer::new(service::QueryApi::new(
                self.db.clone(),
                self.policy.clone(),
                audit,
            )))
            .add_optional_service(vigil_common::grpc::reflection());
        self.edge.serve(router, &shutdown).await?;
        match nats_task.await {
            Ok(Err(error)) => tracing::warn!(%error, "query.events responder failed"),
            Err(error) => tracing::warn!(%error, "query.events responder panicked"),
            Ok(Ok(())) => {}
        }
        self.probes.cancel();
        self.db.pool.close().await;
        Ok(())
    }
}
