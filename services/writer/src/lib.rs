//! The vigil writer: a durable pull consumer on EVENTS that inserts events
//! into Postgres in batches and acknowledges each NATS message only after
//! the transaction holding its events has committed.
//!
//! Exactly once in Postgres = at-least-once delivery from JetStream +
//! an idempotent insert (`ON CONFLICT (tenant, event_id) DO NOTHING`).
//!
//! - [`store`]: the schema ([`MIGRATOR`]) and the batch insert.
//! - [`deliver`]: what happens to a batch of messages: commit then ack;
//!   hold and retry while Postgres is unavailable; retry poison messages
//!   with backoff, then dead-letter them.
//! - this file: configuration, [`build`], the consume loop.

pub mod deliver;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vigil_common::config::{ConfigErrors, InvalidConfig, NatsSettings};

pub use store::MIGRATOR;

/// Name the writer reports readiness under on its health port.
pub const HEALTH_SERVICE: &str = "vigil.writer";

/// Writer settings; every one is a flag and a `VIGIL_WRITER_*` env var.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Postgres URL (e.g. postgres://vigil@127.0.0.1:5432/vigil).
    #[arg(long, env = "VIGIL_WRITER_DATABASE_URL")]
    pub database_url: String,
    /// Allow insecure settings (Postgres without TLS); for development
    /// only, and said so at start-up.
    #[arg(long, env = "VIGIL_WRITER_INSECURE_DEV")]
    pub insecure_dev: bool,
    #[arg(
        long,
        env = "VIGIL_WRITER_HEALTH_LISTEN",
        default_value = "127.0.0.1:4454"
    )]
    pub health_listen: SocketAddr,
    #[arg(
        long,
        env = "VIGIL_WRITER_NATS_URL",
        default_value = "tls://127.0.0.1:4333"
    )]
    pub nats_url: String,
    #[arg(long, env = "VIGIL_WRITER_NATS_CA", default_value = "certs/out/ca.crt")]
    pub nats_ca: PathBuf,
    #[arg(
        long,
        env = "VIGIL_WRITER_NATS_CERT",
        default_value = "certs/out/nats/writer.crt"
    )]
    pub nats_cert: PathBuf,
    #[arg(
        long,
        env = "VIGIL_WRITER_NATS_KEY",
        default_value = "certs/out/nats/writer.key"
    )]
    pub nats_key: PathBuf,
    /// Insert once this many NATS messages (each an EventBatch) are pending...
    #[arg(long, env = "VIGIL_WRITER_BATCH_MAX_MESSAGES", default_value_t = 200)]
    pub batch_max_messages: usize,
    /// ...or once the oldest pending message has waited this long.
    #[arg(long, env = "VIGIL_WRITER_BATCH_MAX_WAIT_MS", default_value_t = 100)]
    pub batch_max_wait_ms: u64,
    /// A message that cannot be stored is dead-lettered on this delivery.
    #[arg(long, env = "VIGIL_WRITER_MAX_DELIVERIES", default_value_t = 5)]
    pub max_deliveries: i64,
    /// First retry delay of a message that could not be stored; doubles
    /// with each delivery (capped at a minute).
    #[arg(long, env = "VIGIL_WRITER_RETRY_BASE_MS", default_value_t = 1000)]
    pub retry_base_ms: u64,
}

impl Config {
    pub fn nats(&self) -> NatsSettings {
        NatsSettings {
            url: self.nats_url.clone(),
            ca: self.nats_ca.clone(),
            cert: self.nats_cert.clone(),
            key: self.nats_key.clone(),
            inbox_prefix: vigil_common::subjects::inbox_prefix("writer"),
        }
    }

    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let mut errors = ConfigErrors::new();
        vigil_common::config::check_database_url(
            "VIGIL_WRITER_DATABASE_URL",
            &self.database_url,
            self.insecure_dev,
            &mut errors,
        );
        self.nats().check("VIGIL_WRITER", &mut errors);
        if self.batch_max_messages == 0 {
            errors.add("VIGIL_WRITER_BATCH_MAX_MESSAGES", "must be at least 1");
        }
        if self.batch_max_wait_ms == 0 || self.batch_max_wait_ms > 60_000 {
            errors.add("VIGIL_WRITER_BATCH_MAX_WAIT_MS", "must be 1 to 60000");
        }
        if !(1..=100).contains(&self.max_deliveries) {
            errors.add("VIGIL_WRITER_MAX_DELIVERIES", "must be 1 to 100");
        }
        if self.retry_base_ms == 0 || self.retry_base_ms > 60_000 {
            errors.add("VIGIL_WRITER_RETRY_BASE_MS", "must be 1 to 60000");
        }
        errors.into_result()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error(transparent)]
    Config(#[from] InvalidConfig),
    #[error(transparent)]
    Nats(#[from] vigil_common::nats::NatsConnectError),
    #[error("cannot open consumer {0} (was the admin provisioning run?)")]
    Consumer(String),
    #[error("cannot connect to postgres: {0}")]
    Database(#[source] sqlx::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Writer {
    pool: PgPool,
    nats: async_nats::Client,
    /// The writer's durable consumer on each stream it stores.
    consumers: Vec<(PullConsumer, store::Sink)>,
    delivery: deliver::Delivery,
    health_listener: TcpListener,
    batching: vigil_common::nats::Batching,
}

/// Connects to Postgres and NATS, opens the durable consumers, binds the
/// health port.
pub async fn build(config: &Config) -> Result<Writer, WriterError> {
    config.validate()?;
    vigil_common::config::warn_insecure("writer", config.insecure_dev);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        // Row-level security: the writer stores every tenant's rows.
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                sqlx::query("SELECT set_config('vigil.tenants', '*', false)")
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect(&config.database_url)
        .await
        .map_err(WriterError::Database)?;
    let nats = vigil_common::nats::connect(&config.nats(), "vigil-writer").await?;
    let js = jetstream::new(nats.clone());
    let mut consumers = Vec::new();
    for sink in store::Sink::ALL {
        let consumer: PullConsumer = js
            .get_consumer_from_stream(sink.consumer(), sink.stream())
            .await
            .map_err(|e| {
                WriterError::Consumer(format!("{}/{}: {e}", sink.stream(), sink.consumer()))
            })?;
        consumers.push((consumer, sink));
    }
    let addr = config.health_listen;
    let health_listener = TcpListener::bind(addr)
        .await
        .map_err(|source| WriterError::Bind { addr, source })?;
    let delivery = deliver::Delivery {
        pool: pool.clone(),
        js: js.clone(),
        max_deliveries: config.max_deliveries,
        retry_base: Duration::from_millis(config.retry_base_ms),
        sink: store::Sink::Events,
    };
    Ok(Writer {
        pool,
        nats,
        consumers,
        delivery,
        health_listener,
        batching: vigil_common::nats::Batching {
            max_messages: config.batch_max_messages,
            max_wait: Duration::from_millis(config.batch_max_wait_ms),
        },
    })
}

impl Writer {
    pub fn health_addr(&self) -> std::io::Result<SocketAddr> {
        self.health_listener.local_addr()
    }

    /// Consumes EVENTS and FINDINGS until `shutdown`; then stops pulling,
    /// finishes the batches in hand (commit, then ack), and returns.
    /// Anything not acked is redelivered to the next writer.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), WriterError> {
        let Writer {
            pool,
            nats,
            consumers,
            delivery,
            health_listener,
            batching,
        } = self;
        let (health, health_task) = vigil_common::health::serve(health_listener, shutdown.clone());
        health
            .set_service_status(HEALTH_SERVICE, tonic_health::ServingStatus::Serving)
            .await;
        futures::future::join_all(consumers.into_iter().map(|(consumer, sink)| {
            consume(
                consumer,
                delivery.clone().for_sink(sink),
                batching,
                health.clone(),
                shutdown.clone(),
            )
        }))
        .await;
        health
            .set_service_status(HEALTH_SERVICE, tonic_health::ServingStatus::NotServing)
            .await;
        vigil_common::nats::flush_within(&nats, vigil_common::shutdown::FLUSH_LIMIT).await;
        pool.close().await;
        let _ = health_task.await;
        tracing::info!("writer stopped");
        Ok(())
    }
}

/// One consume loop: pull, batch by size or time, hand to `delivery`.
async fn consume(
    consumer: PullConsumer,
    delivery: deliver::Delivery,
    batching: vigil_common::nats::Batching,
    health: tonic_health::server::HealthReporter,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let messages = consumer
            .stream()
            .max_messages_per_batch(1000)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "cannot pull from jetstream, retrying");
                health
                    .set_service_status(HEALTH_SERVICE, tonic_health::ServingStatus::NotServing)
                    .await;
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            // Wait for the first message of a batch...
            let first = tokio::select! {
                () = shutdown.cancelled() => break,
                next = messages.next() => next,
            };
            // ...then take more until the batch is full or old enough.
            let pending = match first {
                Some(Ok(m)) => vigil_common::nats::fill_batch(m, &mut messages, batching).await,
                Some(Err(error)) => {
                    tracing::warn!(%error, "pull stream error");
                    continue;
                }
                None => break,
            };
            delivery.handle(pending, &health, &shutdown).await;
        }
    }
}
