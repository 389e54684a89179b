//! The vigil writer: durable pull consumers on EVENTS, FINDINGS and AUDIT
//! that insert into Postgres in batches and acknowledge each NATS message
//! only after the transaction holding its rows has committed.
//!
//! Exactly once in Postgres = at-least-once delivery from JetStream +
//! an idempotent insert (`ON CONFLICT DO NOTHING` on each table's key).
//!
//! - [`store`]: the schema ([`MIGRATOR`]), the three sinks and their batch
//!   inserts.
//! - [`deliver`]: what happens to a batch of messages: commit then ack;
//!   hold and retry while Postgres is unavailable; retry poison messages
//!   with backoff, then dead-letter them.
//! - this file: the writer's own settings ([`Config`] → [`Loaded`]) and its
//!   [`Service`] lifecycle: one [`vigil_common::consume::pull`] loop per
//!   sink. Hard dependencies: JetStream and Postgres.

pub mod copy;
pub mod deliver;
pub mod metrics;
pub mod store;

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use vigil_common::config::{ConfigErrors, InvalidConfig, NatsSettings};
use vigil_common::consume::Batching;
use vigil_common::metrics::Metrics;
use vigil_common::postgres::PostgresSettings;
use vigil_common::readiness::Readiness;
use vigil_common::service::{Service, ServiceConfig};
use vigil_common::settings::{BatchArgs, Names, NatsArgs, PostgresArgs, RunArgs, key};

pub use store::MIGRATOR;

const NAMES: Names = Names::new("writer");

/// Writer settings; every one is a flag and a `VIGIL_WRITER_*` variable.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub postgres: PostgresArgs,
    #[command(flatten)]
    pub batch: BatchArgs,
    /// A message that cannot be stored is dead-lettered on this delivery.
    #[arg(long, env = "MAX_DELIVERIES", default_value_t = 5)]
    pub max_deliveries: i64,
    /// First retry delay of a message that could not be stored; doubles
    /// with each delivery (capped at a minute).
    #[arg(long, env = "RETRY_BASE_MS", default_value_t = 1000)]
    pub retry_base_ms: u64,
    /// Event batches committed at once, each in its own transaction on its
    /// own connection (findings and audit records: one at a time). Keep
    /// the database pool larger by at least 3.
    #[arg(long, env = "INSERT_CONCURRENCY", default_value_t = 4)]
    pub insert_concurrency: usize,
}

/// The writer's settings, checked and loaded.
pub struct Loaded {
    nats: NatsSettings,
    postgres: PostgresSettings,
    batching: Batching,
    max_deliveries: i64,
    retry_base: Duration,
    insert_concurrency: usize,
}

impl ServiceConfig for Config {
    type Loaded = Loaded;

    /// Checks every setting, naming each bad one, and loads them.
    fn load(&self, run: &RunArgs) -> Result<Loaded, InvalidConfig> {
        let mut errors = ConfigErrors::new();
        let nats = self.nats.load(NAMES, &mut errors);
        let postgres = self.postgres.load(NAMES, run.insecure_dev, &mut errors);
        let batching = self.batch.load(NAMES, &mut errors);
        if !(1..=100).contains(&self.max_deliveries) {
            errors.add(&NAMES.env("MAX_DELIVERIES"), "must be 1 to 100");
        }
        if !(1..=60_000).contains(&self.retry_base_ms) {
            errors.add(&NAMES.env("RETRY_BASE_MS"), "must be 1 to 60000");
        }
        if !(1..=64).contains(&self.insert_concurrency) {
            errors.add(&NAMES.env("INSERT_CONCURRENCY"), "must be 1 to 64");
        } else if let Some(pg) = &postgres
            && (pg.max_connections as usize) < self.insert_concurrency + 3
        {
            errors.add(
                &NAMES.env(key::DATABASE_MAX_CONNECTIONS),
                format!(
                    "must be at least {} with {}={} (one connection per event batch in flight, one each for findings, audit records and partitions)",
                    self.insert_concurrency + 3,
                    NAMES.env("INSERT_CONCURRENCY"),
                    self.insert_concurrency
                ),
            );
        }
        let loaded = match (nats, postgres, batching) {
            (Some(nats), Some(postgres), Some(batching)) => Some(Loaded {
                nats,
                postgres,
                batching,
                max_deliveries: self.max_deliveries,
                retry_base: Duration::from_millis(self.retry_base_ms),
                insert_concurrency: self.insert_concurrency,
            }),
            _ => None,
        };
        errors.finish(loaded)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error(transparent)]
    Nats(#[from] vigil_common::nats::NatsConnectError),
    #[error("cannot open consumer {0} (was the admin provisioning run?)")]
    Consumer(String),
    #[error(transparent)]
    Database(#[from] vigil_common::postgres::PostgresConnectError),
}

pub struct Writer {
    pool: PgPool,
    insert_concurrency: usize,
    nats: async_nats::Client,
    /// The writer's durable consumer on each stream it stores.
    consumers: Vec<(PullConsumer, store::Sink)>,
    delivery: deliver::Delivery,
    batching: Batching,
    /// Stops the Postgres probe once the writer has stopped.
    probes: CancellationToken,
}

impl Service for Writer {
    const NAME: &'static str = "writer";
    const ABOUT: &'static str =
        "vigil writer: JetStream EVENTS, FINDINGS and AUDIT into Postgres, exactly once";
    const HEALTH_SERVICE: &'static str = "vigil.writer";
    const DEFAULTS: &'static [(&'static str, &'static str)] = &[
        (key::HEALTH_LISTEN, "127.0.0.1:4454"),
        (key::METRICS_LISTEN, "127.0.0.1:4455"),
        (key::DATABASE_MAX_CONNECTIONS, "8"),
    ];
    type Config = Config;
    type Error = WriterError;

    /// Connects to Postgres and NATS and opens the durable consumers.
    async fn build(
        loaded: Loaded,
        readiness: &Readiness,
        metrics: &Metrics,
    ) -> Result<Self, WriterError> {
        let probes = CancellationToken::new();
        let (pool, postgres) = vigil_common::postgres::connect_ready(
            &loaded.postgres,
            store::session(),
            readiness,
            probes.clone(),
        )
        .await?;
        let nats =
            vigil_common::nats::connect_ready(&loaded.nats, "vigil-writer", readiness).await?;
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
        let writer_metrics = metrics::WriterMetrics::new();
        writer_metrics.register(metrics);
        // Consumer lag of every sink, and the depth of the DLQ.
        vigil_common::nats::watch_lag(
            js.clone(),
            store::Sink::ALL
                .iter()
                .map(|s| (s.stream().to_owned(), s.consumer().to_owned()))
                .collect(),
            vec![vigil_common::subjects::DLQ_STREAM.to_owned()],
            metrics,
            probes.clone(),
        );
        let delivery = deliver::Delivery {
            store: std::sync::Arc::new(store::Store::new(pool.clone())),
            js: js.clone(),
            max_deliveries: loaded.max_deliveries,
            retry_base: loaded.retry_base,
            sink: store::Sink::Events,
            postgres,
            metrics: writer_metrics,
        };
        Ok(Writer {
            pool,
            insert_concurrency: loaded.insert_concurrency,
            nats,
            consumers,
            delivery,
            batching: loaded.batching,
            probes,
        })
    }

    fn addresses(&self) -> Vec<(&'static str, SocketAddr)> {
        Vec::new()
    }

    /// Consumes every sink until `shutdown`; then stops pulling, finishes
    /// the batches in hand (commit, then ack), and returns. Anything not
    /// acked is redelivered to the next writer.
    async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), WriterError> {
        let Writer {
            pool,
            insert_concurrency,
            nats,
            consumers,
            delivery,
            batching,
            probes,
        } = self;
        futures::future::join_all(consumers.into_iter().map(|(consumer, sink)| {
            let delivery = delivery.clone().for_sink(sink);
            let shutdown = shutdown.clone();
            let in_flight_max = match sink {
                store::Sink::Events => insert_concurrency,
                store::Sink::Findings | store::Sink::Audit => 1,
            };
            async move {
                let mut batches = vigil_common::consume::pull(consumer, batching, shutdown.clone());
                // Batches are independent (every insert is idempotent, a
                // finding keeps its newest version whatever the order), so
                // several commit at once and the pull fills the next one
                // meanwhile.
                let mut in_flight = tokio::task::JoinSet::new();
                while let Some(batch) = batches.recv().await {
                    while in_flight.len() >= in_flight_max {
                        in_flight.join_next().await;
                    }
                    let delivery = delivery.clone();
                    let shutdown = shutdown.clone();
                    in_flight.spawn(async move { delivery.handle(batch, &shutdown).await });
                }
                while in_flight.join_next().await.is_some() {}
            }
        }))
        .await;
        vigil_common::nats::flush_within(&nats, vigil_common::shutdown::FLUSH_LIMIT).await;
        probes.cancel();
        pool.close().await;
        Ok(())
    }
}
