//! The vigil reader: `vigil.query.v1.QueryService` over mTLS gRPC for
//! analysts, and the same `ListEvents` on NATS `query.events`.
//!
//! - [`query`]: request validation, SQL, page tokens; shared by both APIs.
//! - [`service`]: gRPC, with the caller's identity from its certificate.
//! - [`nats_api`]: the NATS responder.
//! - this file: configuration, [`build`], [`Reader::run_until_stopped`].

pub mod nats_api;
pub mod query;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vigil_common::config::{ConfigErrors, InvalidConfig, NatsSettings, ServerTlsFiles};
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
    /// Who may query which tenants (see deploy/policy.toml); re-read when it
    /// changes.
    #[arg(
        long,
        env = "VIGIL_READER_POLICY",
        default_value = "deploy/policy.toml"
    )]
    pub policy: PathBuf,
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

    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let mut errors = ConfigErrors::new();
        self.tls_files().check("VIGIL_READER", &mut errors);
        self.nats().check("VIGIL_READER", &mut errors);
        if let Err(e) = vigil_common::policy::Policy::load(&self.policy) {
            errors.add("VIGIL_READER_POLICY", e);
        }
        if !(self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            errors.add("VIGIL_READER_DATABASE_URL", "must be a postgres:// URL");
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
    Tls(#[from] vigil_common::tls::TlsError),
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
    tls: Arc<rustls::ServerConfig>,
    pool: PgPool,
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
    let tls = vigil_common::tls::server_config(&config.tls_files())?;
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
        tls,
        pool,
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
        let nats_task = tokio::spawn(nats_api::serve(
            self.nats.clone(),
            self.pool.clone(),
            shutdown.clone(),
        ));
        let router = vigil_common::grpc::server(128)
            .add_service(QueryServiceServer::new(service::QueryApi::new(
                self.pool.clone(),
                self.policy.clone(),
            )))
            .add_optional_service(vigil_common::grpc::reflection());
        vigil_common::grpc::serve_mtls(router, self.listener, self.tls, &shutdown).await?;
        match nats_task.await {
            Ok(Err(error)) => tracing::warn!(%error, "query.events responder failed"),
            Err(error) => tracing::warn!(%error, "query.events responder panicked"),
            Ok(Ok(())) => {}
        }
        self.policy_watch.cancel();
        self.pool.close().await;
        let _ = health_task.await;
        tracing::info!("reader stopped");
        Ok(())
    }
}
