//! The vigil reader: `vigil.query.v1.QueryService` over mTLS gRPC for
//! analysts, and the same `ListEvents` on NATS `query.events`.
//!
//! - [`query`]: request validation, SQL in transactions scoped by Postgres
//!   row-level security, signed page tokens; shared by both APIs.
//! - [`service`]: gRPC, with the caller's identity from its certificate.
//! - [`audit`]: every call recorded on `audit.reader` before it is answered.
//! - [`nats_api`]: the NATS responder.
//! - this file: configuration, [`build`], [`Reader::run_until_stopped`].

pub mod audit;
pub mod nats_api;
pub mod query;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vigil_common::config::{Allowlist, ConfigErrors, InvalidConfig, NatsSettings, ServerTlsFiles};
use vigil_proto::query::v1::query_service_server::QueryServiceServer;

/// Reader settings; every one is a flag and a `VIGIL_READER_*` env var.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    #[arg(long, env = "VIGIL_READER_LISTEN", default_value = "127.0.0.1:4445")]
    pub listen: SocketAddr,
    #[arg(
        long,
        env = "VIGIL_READER_HEALTH_LISTEN",
        default_value = "127.0.0.1:4446"
    )]
    pub health_listen: SocketAddr,
    #[arg(
        long,
        env = "VIGIL_READER_TLS_CERT",
        default_value = "certs/out/server/reader.crt"
    )]
    pub tls_cert: PathBuf,
    #[arg(
        long,
        env = "VIGIL_READER_TLS_KEY",
        default_value = "certs/out/server/reader.key"
    )]
    pub tls_key: PathBuf,
    #[arg(
        long,
        env = "VIGIL_READER_TLS_CLIENT_CA",
        default_value = "certs/out/ca.crt"
    )]
    pub tls_client_ca: PathBuf,
    #[arg(long, env = "VIGIL_READER_DATABASE_URL")]
    pub database_url: String,
    #[arg(
        long,
        env = "VIGIL_READER_NATS_URL",
        default_value = "tls://127.0.0.1:4333"
    )]
    pub nats_url: String,
    #[arg(long, env = "VIGIL_READER_NATS_CA", default_value = "certs/out/ca.crt")]
    pub nats_ca: PathBuf,
    #[arg(
        long,
        env = "VIGIL_READER_NATS_CERT",
        default_value = "certs/out/nats/reader.crt"
    )]
    pub nats_cert: PathBuf,
    #[arg(
        long,
        env = "VIGIL_READER_NATS_KEY",
        default_value = "certs/out/nats/reader.key"
    )]
    pub nats_key: PathBuf,
    /// CRL (PEM) of revoked client certificates; re-read when it changes,
    /// and connections of newly revoked certificates are cut.
    #[arg(long, env = "VIGIL_READER_TLS_CRL")]
    pub tls_crl: Option<PathBuf>,
    /// Networks (CIDR, comma-separated) allowed to connect; others are
    /// closed before the TLS handshake.
    #[arg(
        long,
        env = "VIGIL_READER_ALLOW",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128"
    )]
    pub allow: Vec<ipnet::IpNet>,
    /// Calls per second allowed per client identity (sustained).
    #[arg(long, env = "VIGIL_READER_RATE_PER_SEC", default_value_t = 50)]
    pub rate_per_sec: u32,
    /// Calls per client identity allowed in a burst.
    #[arg(long, env = "VIGIL_READER_RATE_BURST", default_value_t = 100)]
    pub rate_burst: u32,
    /// Allow insecure settings (a wildcard allowlist, Postgres without TLS);
    /// for development only, and said so at start-up.
    #[arg(long, env = "VIGIL_READER_INSECURE_DEV")]
    pub insecure_dev: bool,
    /// Who may query which tenants (see deploy/policy.toml); re-read when it
    /// changes.
    #[arg(
        long,
        env = "VIGIL_READER_POLICY",
        default_value = "deploy/policy.toml"
    )]
    pub policy: PathBuf,
    /// File holding the secret (at least 32 bytes) page tokens are signed
    /// with; readers behind one address must share it. Unset: a random key,
    /// so page tokens stop working when the reader restarts.
    #[arg(long, env = "VIGIL_READER_PAGE_TOKEN_KEY")]
    pub page_token_key: Option<PathBuf>,
    /// A query running longer than this is cancelled.
    #[arg(long, env = "VIGIL_READER_QUERY_TIMEOUT_SECS", default_value_t = 10)]
    pub query_timeout_secs: u64,
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
            inbox_prefix: vigil_common::subjects::inbox_prefix("reader"),
        }
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

    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let mut errors = ConfigErrors::new();
        self.tls_files().check("VIGIL_READER", &mut errors);
        self.nats().check("VIGIL_READER", &mut errors);
        if let Err(e) = vigil_common::policy::Policy::load(&self.policy) {
            errors.add("VIGIL_READER_POLICY", e);
        }
        vigil_common::config::check_database_url(
            "VIGIL_READER_DATABASE_URL",
            &self.database_url,
            self.insecure_dev,
            &mut errors,
        );
        self.allowlist()
            .check("VIGIL_READER_ALLOW", self.insecure_dev, &mut errors);
        self.rate().check("VIGIL_READER", &mut errors);
        if let Some(path) = &self.page_token_key {
            match std::fs::read(path) {
                Ok(secret) if secret.len() >= 32 => {}
                Ok(_) => errors.add("VIGIL_READER_PAGE_TOKEN_KEY", "must hold at least 32 bytes"),
                Err(e) => errors.add(
                    "VIGIL_READER_PAGE_TOKEN_KEY",
                    format_args!("cannot read {}: {e}", path.display()),
                ),
            }
        }
        if self.query_timeout_secs == 0 {
            errors.add("VIGIL_READER_QUERY_TIMEOUT_SECS", "must be at least 1");
        }
        errors.into_result()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error(transparent)]
    Config(#[from] InvalidConfig),
    #[error(transparent)]
    Edge(#[from] vigil_common::grpc::EdgeError),
    #[error(transparent)]
    Nats(#[from] vigil_common::nats::NatsConnectError),
    #[error("cannot subscribe to query.events: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error("cannot connect to postgres: {0}")]
    Database(#[source] sqlx::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("grpc server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Policy(#[from] vigil_common::policy::PolicyError),
}

pub struct Reader {
    listener: TcpListener,
    health_listener: TcpListener,
    edge: vigil_common::grpc::Edge,
    db: Arc<query::Db>,
    nats: async_nats::Client,
    policy: vigil_common::policy::LivePolicy,
    /// Stops the policy watcher when the reader stops.
    policy_watch: CancellationToken,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ReaderError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ReaderError::Bind { addr, source })
}

pub async fn build(config: &Config) -> Result<Reader, ReaderError> {
    config.validate()?;
    vigil_common::config::warn_insecure("reader", config.insecure_dev);
    let edge =
        vigil_common::grpc::Edge::load(&config.tls_files(), config.allowlist(), config.rate())?;
    let timeout_ms = config.query_timeout_secs * 1000;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        // Postgres itself cancels a query that runs too long.
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                sqlx::query("SELECT set_config('statement_timeout', $1, false)")
                    .bind(timeout_ms.to_string())
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect(&config.database_url)
        .await
        .map_err(ReaderError::Database)?;
    let nats = vigil_common::nats::connect(&config.nats(), "vigil-reader").await?;
    let tokens = match &config.page_token_key {
        Some(path) => query::PageTokens::new(&std::fs::read(path).map_err(|e| {
            ReaderError::Config(InvalidConfig(vec![format!(
                "VIGIL_READER_PAGE_TOKEN_KEY: cannot read {}: {e}",
                path.display()
            )]))
        })?),
        None => query::PageTokens::random()
            .map_err(|e| ReaderError::Config(InvalidConfig(vec![e.to_string()])))?,
    };
    let policy_watch = CancellationToken::new();
    let policy = vigil_common::policy::LivePolicy::watch(
        config.policy.clone(),
        Duration::from_secs(2),
        policy_watch.clone(),
    )?;
    Ok(Reader {
        policy,
        policy_watch,
        listener: bind(config.listen).await?,
        health_listener: bind(config.health_listen).await?,
        edge,
        db: Arc::new(query::Db {
            pool,
            tokens,
            max_statement_time: Duration::from_secs(config.query_timeout_secs),
        }),
        nats,
    })
}

impl Reader {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn health_addr(&self) -> std::io::Result<SocketAddr> {
        self.health_listener.local_addr()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), ReaderError> {
        let (health, health_task) =
            vigil_common::health::serve(self.health_listener, shutdown.clone());
        health
            .set_serving::<QueryServiceServer<service::QueryApi>>()
            .await;
        {
            let health = health.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                health
                    .set_not_serving::<QueryServiceServer<service::QueryApi>>()
                    .await;
            });
        }
        let audit = audit::Auditor::new(self.nats.clone());
        let nats_task = tokio::spawn(nats_api::serve(
            self.nats.clone(),
            self.db.clone(),
            audit.clone(),
            shutdown.clone(),
        ));
        let router = vigil_common::grpc::server(128, &self.edge)
            .add_service(QueryServiceServer::new(service::QueryApi::new(
                self.db.clone(),
                self.policy.clone(),
                audit,
            )))
            .add_optional_service(vigil_common::grpc::reflection());
        vigil_common::grpc::serve_mtls(router, self.listener, &self.edge, &shutdown).await?;
        match nats_task.await {
            Ok(Err(error)) => tracing::warn!(%error, "query.events responder failed"),
            Err(error) => tracing::warn!(%error, "query.events responder panicked"),
            Ok(Ok(())) => {}
        }
        self.policy_watch.cancel();
        self.db.pool.close().await;
        let _ = health_task.await;
        tracing::info!("reader stopped");
        Ok(())
    }
}
