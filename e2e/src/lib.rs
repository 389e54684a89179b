//! A harness that boots the real vigil mesh for a test: its own
//! `nats-server` (2.10+) from `nats-config/` on a free port with its own
//! store, a fresh Postgres database with the migrations applied, a fresh
//! PKI, and the gateway, writer and reader in-process on port 0. Everything
//! is torn down on drop (server killed, database dropped, files removed),
//! so tests run in parallel and leave nothing behind.
//!
//! Environment:
//! - `VIGIL_NATS_SERVER`: path of the nats-server binary (otherwise
//!   `.tools/venv/bin/nats-server`, then `nats-server` on PATH; whichever is
//!   2.10 or newer).
//! - `VIGIL_TEST_DATABASE_URL`: a Postgres URL whose user may create
//!   databases (default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::{Connection, PgPool};
use tokio_util::sync::CancellationToken;
use vigil_certs::Pki;
use vigil_client::TlsFiles;
use vigil_common::config::NatsSettings;
use vigil_common::service::{Service, launch};
use vigil_common::settings::{BatchArgs, EdgeArgs, NatsArgs, PostgresArgs, RunArgs};
use vigil_correlator::Correlator;
use vigil_gateway::Gateway;
use vigil_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use vigil_proto::query::v1::query_service_client::QueryServiceClient;
use vigil_reader::Reader;
use vigil_writer::Writer;

pub mod bench;
pub mod load;
pub mod proxy;
pub mod stack;

pub use tonic::transport::Channel;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Polls `predicate` every 25 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(
    timeout: Duration,
    what: &str,
    mut predicate: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if predicate().await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn nats_version(binary: &Path) -> Option<(u32, u32)> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let v = text.split_whitespace().find_map(|w| {
        w.strip_prefix('v')
            .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    })?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// A nats-server 2.10 or newer, or an error saying how to get one.
pub fn nats_server_binary() -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("VIGIL_NATS_SERVER") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(workspace_root().join(".tools/venv/bin/nats-server"));
    candidates.push(PathBuf::from("nats-server"));
    for c in &candidates {
        if nats_version(c).is_some_and(|v| v >= (2, 10)) {
            return Ok(c.clone());
        }
    }
    bail!(
        "no nats-server 2.10+ found (tried {candidates:?}); run deploy/install-nats or set VIGIL_NATS_SERVER"
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A nats-server child process started from `nats-config/nats-server.conf`.
pub struct NatsServer {
    child: Option<Child>,
    binary: PathBuf,
    config: PathBuf,
    pki: Pki,
    pub port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    pub async fn start(pki: &Pki) -> anyhow::Result<Self> {
        Self::start_with_config(pki, workspace_root().join("nats-config/nats-server.conf")).await
    }

    /// Starts from another config file (benchmarks compare settings).
    pub async fn start_with_config(pki: &Pki, config: PathBuf) -> anyhow::Result<Self> {
        let binary = nats_server_binary()?;
        let store = tempfile::tempdir()?;
        let mut server = NatsServer {
            child: None,
            binary,
            config,
            pki: pki.clone(),
            port: 0,
            store,
        };
        for _ in 0..5 {
            server.port = free_port()?;
            if server.spawn().await.is_ok() {
                return Ok(server);
            }
        }
        bail!(
            "nats-server did not start; see {}",
            server.store.path().join("nats.log").display()
        )
    }

    pub fn url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and store.
    pub async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.store.path().join("nats.log"))?;
        let mut child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .env("VIGIL_NATS_PORT", self.port.to_string())
            .env("VIGIL_NATS_STORE_DIR", self.store.path().join("js"))
            .env("VIGIL_NATS_CERT", self.pki.server("nats").cert)
            .env("VIGIL_NATS_KEY", self.pki.server("nats").key)
            .env("VIGIL_NATS_CA", self.pki.ca())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        let port = self.port;
        let ready = wait_until(
            Duration::from_secs(10),
            "nats-server to listen",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            },
        )
        .await;
        if ready.is_err() || child.try_wait()?.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("nats-server exited or did not listen");
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs the server (the store survives for [`NatsServer::spawn`]).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Settings for connecting as one of the users in `nats-config/users.conf`.
    pub fn settings(&self, user: &str) -> NatsSettings {
        let paths = self.pki.nats_client(user);
        NatsSettings {
            url: self.url(),
            ca: self.pki.ca(),
            cert: paths.cert,
            key: paths.key,
            inbox_prefix: vigil_common::subjects::inbox_prefix(user),
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A database of its own, dropped (forcibly) on drop with the service
/// roles its migration created.
pub struct TestDb {
    /// The owner's URL (migrations, test assertions); TLS required.
    pub url: String,
    admin_url: String,
    name: String,
    host: String,
}

impl TestDb {
    pub async fn create() -> anyhow::Result<Self> {
        let admin_url = std::env::var("VIGIL_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("vigil_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url} (set VIGIL_TEST_DATABASE_URL)"))?;
        // Audited: `name` is generated above from a UUID.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap_or_else(|| admin_url.clone());
        let host = base
            .rsplit_once('@')
            .map(|(_, h)| h.to_owned())
            .unwrap_or_else(|| "127.0.0.1:5432".into());
        Ok(TestDb {
            url: format!("{base}/{name}?sslmode=require"),
            admin_url,
            name,
            host,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL a service connects with: its own role (`<db>_writer`,
    /// `<db>_reader`, created by the migration), over TLS.
    pub fn role_url(&self, service: &str) -> String {
        format!(
            "postgres://{}_{service}@{}/{}?sslmode=require",
            self.name, self.host, self.name
        )
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime; do the async work on a
        // thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                    let sql = format!("DROP ROLE IF EXISTS {name}_writer, {name}_reader");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Knobs a test may turn before the mesh starts. The defaults are the
/// production ones scaled down so failures recover in seconds.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    pub publish_timeout_secs: u64,
    /// The correlator's rule file (default: `deploy/rules.toml`).
    pub rules: Option<PathBuf>,
    /// The reader's policy file (default: `deploy/policy.toml`).
    pub policy: Option<PathBuf>,
    pub writer_max_deliveries: i64,
    pub writer_retry_base_ms: u64,
    pub limits: vigil_common::provision::StreamLimits,
    /// Calls per second per identity at the gateway and the reader.
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    /// The longest a reader query may run (VIGIL_READER_QUERY_TIMEOUT_SECS).
    pub reader_query_timeout_secs: u64,
    /// The gateway's pseudonymisation file and key.
    pub pseudonymise: Option<(PathBuf, PathBuf)>,
    /// The gateway's and reader's allowlist (default: [`loopback`]).
    pub allow: Option<Vec<ipnet::IpNet>>,
}

/// The default allowlist: loopback only.
pub fn loopback() -> Vec<ipnet::IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
}

impl Default for MeshOptions {
    fn default() -> Self {
        Self {
            publish_timeout_secs: 5,
            rules: None,
            policy: None,
            writer_max_deliveries: 3,
            writer_retry_base_ms: 50,
            limits: vigil_common::provision::StreamLimits {
                ack_wait: Duration::from_secs(5),
                ..Default::default()
            },
            // Far above what any functional test sends; the rate-limit
            // test sets its own.
            rate_per_sec: 100_000,
            rate_burst: 100_000,
            allow: None,
            reader_query_timeout_secs: 10,
            pseudonymise: None,
        }
    }
}

/// Where each service of a [`Mesh`] serves `/metrics`.
#[derive(Debug, Clone)]
pub struct MetricsAddrs {
    pub gateway: SocketAddr,
    pub writer: SocketAddr,
    pub reader: SocketAddr,
    pub correlators: Vec<SocketAddr>,
}

/// Where each service of a [`Mesh`] answers health checks.
#[derive(Debug, Clone)]
pub struct Health {
    pub gateway: SocketAddr,
    pub writer: SocketAddr,
    pub reader: SocketAddr,
    pub correlators: Vec<SocketAddr>,
}

/// Runs a launched service until `shutdown`, reporting a failure.
fn spawn_service<S: Service>(
    launched: vigil_common::service::Launched<S>,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = launched.run_until_stopped(shutdown).await {
            eprintln!("{}: {e}", S::NAME);
        }
    })
}

/// What `service` reports on the grpc.health.v1 port at `addr`, or `None`
/// if the port does not answer.
pub async fn health_status(
    addr: SocketAddr,
    service: &str,
) -> Option<tonic_health::pb::health_check_response::ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .ok()?;
    let response = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?
        .into_inner();
    tonic_health::pb::health_check_response::ServingStatus::try_from(response.status).ok()
}

/// Whether `service` at `addr` answers SERVING (`Some(false)`: it answers
/// something else; `None`: nothing answers).
pub async fn serving(addr: SocketAddr, service: &str) -> Option<bool> {
    health_status(addr, service)
        .await
        .map(|s| s == tonic_health::pb::health_check_response::ServingStatus::Serving)
}

/// The whole mesh, running.
pub struct Mesh {
    pub pki: Pki,
    pub nats: NatsServer,
    pub db: TestDb,
    pub pool: PgPool,
    pub gateway_addr: SocketAddr,
    /// The gateway's plaintext grpc.health.v1 port.
    pub gateway_health: SocketAddr,
    pub reader_addr: SocketAddr,
    /// Every service's plaintext grpc.health.v1 port.
    pub health: Health,
    /// The writer and reader reach Postgres through this proxy.
    pub pg_proxy: proxy::TcpProxy,
    /// The gateway's and reader's TLS material (reload counters).
    pub gateway_tls: std::sync::Arc<vigil_common::tls::ServerTls>,
    pub reader_tls: std::sync::Arc<vigil_common::tls::ServerTls>,
    /// The reader's live policy (reload counters).
    pub reader_policy: vigil_common::policy::LivePolicy,
    /// Each correlator partition's Prometheus endpoint.
    pub correlator_metrics: Vec<SocketAddr>,
    /// Every service's Prometheus endpoint.
    pub metrics: MetricsAddrs,
    /// Every service's registry (the names of all its metrics).
    pub registries: Vec<vigil_common::metrics::Metrics>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _pki_dir: tempfile::TempDir,
}

impl Mesh {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(MeshOptions::default()).await
    }

    pub async fn start_with(options: MeshOptions) -> anyhow::Result<Self> {
        let pki_dir = tempfile::tempdir()?;
        let pki = vigil_certs::generate(pki_dir.path(), &vigil_certs::Options::default())?;
        let nats = NatsServer::start(&pki).await?;
        let admin = vigil_common::nats::connect(&nats.settings("admin"), "test-admin").await?;
        vigil_common::provision::provision(&admin, &options.limits).await?;
        admin.flush().await?;
        let db = TestDb::create().await?;
        let pool = PgPool::connect(&db.url).await?;
        vigil_writer::MIGRATOR.run(&pool).await?;

        // Postgres through a proxy a test can cut.
        let pg_proxy = proxy::TcpProxy::start(db.host.clone()).await?;
        let proxied = |role: &str| {
            db.role_url(role)
                .replace(&db.host, &format!("127.0.0.1:{}", pg_proxy.port))
        };

        let local: SocketAddr = "127.0.0.1:0".parse()?;
        let run = RunArgs {
            health_listen: local,
            metrics_listen: local,
            insecure_dev: false,
        };
        let nats_args = |service: &str| {
            let client = pki.nats_client(service);
            NatsArgs {
                nats_url: nats.url(),
                nats_ca: pki.ca(),
                nats_cert: client.cert,
                nats_key: client.key,
            }
        };
        let edge = |service: &str| {
            let server = pki.server(service);
            EdgeArgs {
                listen: local,
                tls_cert: server.cert,
                tls_key: server.key,
                tls_client_ca: pki.ca(),
                tls_crl: Some(pki.crl()),
                allow: options.allow.clone().unwrap_or_else(loopback),
                rate_per_sec: options.rate_per_sec,
                rate_burst: options.rate_burst,
                trust_domain: vigil_common::identity::DEFAULT_TRUST_DOMAIN.to_owned(),
            }
        };
        let batch = BatchArgs {
            batch_max_messages: 200,
            batch_max_wait_ms: 50,
        };
        let gateway = launch::<Gateway>(
            &run,
            &vigil_gateway::Config {
                edge: edge("gateway"),
                nats: nats_args("gateway"),
                pseudonymise: options.pseudonymise.as_ref().map(|p| p.0.clone()),
                pseudonym_key: options.pseudonymise.as_ref().map(|p| p.1.clone()),
                max_future_skew_secs: 300,
                max_event_age_secs: 7 * 24 * 3600,
                max_batch_events: 1000,
                publish_timeout_secs: options.publish_timeout_secs,
            },
        )
        .await?;
        let writer = launch::<Writer>(
            &run,
            &vigil_writer::Config {
                nats: nats_args("writer"),
                postgres: PostgresArgs {
                    database_url: proxied("writer"),
                    database_max_connections: 6,
                },
                batch: batch.clone(),
                max_deliveries: options.writer_max_deliveries,
                retry_base_ms: options.writer_retry_base_ms,
                insert_concurrency: 3,
            },
        )
        .await?;
        let reader = launch::<Reader>(
            &run,
            &vigil_reader::Config {
                edge: edge("reader"),
                nats: nats_args("reader"),
                postgres: PostgresArgs {
                    database_url: proxied("reader"),
                    database_max_connections: 8,
                },
                page_token_key: None,
                query_timeout_secs: options.reader_query_timeout_secs,
                policy: options
                    .policy
                    .clone()
                    .unwrap_or_else(|| workspace_root().join("deploy/policy.toml")),
            },
        )
        .await?;
        let mut correlators = Vec::new();
        for partition in 0..options.limits.correlator_partitions {
            correlators.push(
                launch::<Correlator>(
                    &run,
                    &vigil_correlator::Config {
                        nats: nats_args("correlator"),
                        batch: batch.clone(),
                        rules: options
                            .rules
                            .clone()
                            .unwrap_or_else(|| workspace_root().join("deploy/rules.toml")),
                        partition,
                        partitions: options.limits.correlator_partitions,
                        allowed_lateness_ms: 2_000,
                        late_retention_secs: 3600,
                        max_keys: 1_000_000,
                        idle_timeout_ms: 500,
                    },
                )
                .await?,
            );
        }
        let addr = |addresses: Vec<(&'static str, SocketAddr)>, name: &str| {
            addresses
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, a)| a)
                .ok_or_else(|| anyhow::anyhow!("no {name} address"))
        };
        let correlator_metrics: Vec<SocketAddr> =
            correlators.iter().map(|c| c.metrics_addr()).collect();
        let metrics = MetricsAddrs {
            gateway: gateway.metrics_addr(),
            writer: writer.metrics_addr(),
            reader: reader.metrics_addr(),
            correlators: correlator_metrics.clone(),
        };
        let correlator_health = correlators.iter().map(|c| c.health_addr()).collect();
        let gateway_addr = addr(gateway.addresses(), "grpc")?;
        let reader_addr = addr(reader.addresses(), "grpc")?;
        let health = Health {
            gateway: gateway.health_addr(),
            writer: writer.health_addr(),
            reader: reader.health_addr(),
            correlators: correlator_health,
        };
        let mut registries = vec![
            gateway.metrics().clone(),
            writer.metrics().clone(),
            reader.metrics().clone(),
        ];
        registries.extend(correlators.iter().map(|c| c.metrics().clone()));
        let gateway_tls = gateway.service().tls();
        let reader_tls = reader.service().tls();
        let reader_policy = reader.service().policy().clone();
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        tasks.push(spawn_service(gateway, &shutdown));
        tasks.push(spawn_service(writer, &shutdown));
        tasks.push(spawn_service(reader, &shutdown));
        for correlator in correlators {
            tasks.push(spawn_service(correlator, &shutdown));
        }
        Ok(Mesh {
            pki,
            nats,
            db,
            pool,
            pg_proxy,
            gateway_addr,
            gateway_health: health.gateway,
            health,
            gateway_tls,
            reader_tls,
            reader_policy,
            reader_addr,
            correlator_metrics,
            metrics,
            registries,
            shutdown,
            tasks,
            _pki_dir: pki_dir,
        })
    }

    pub fn gateway_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.gateway_addr.port())
    }

    pub fn reader_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.reader_addr.port())
    }

    pub fn device_files(&self, tenant: &str, device: &str) -> TlsFiles {
        let p = self.pki.device(tenant, device);
        TlsFiles {
            ca: self.pki.ca(),
            cert: p.cert,
            key: p.key,
        }
    }

    pub fn analyst_files(&self) -> TlsFiles {
        let p = self.pki.user("analyst");
        TlsFiles {
            ca: self.pki.ca(),
            cert: p.cert,
            key: p.key,
        }
    }

    /// An IngestService client holding a device's certificate.
    pub async fn device(
        &self,
        tenant: &str,
        device: &str,
    ) -> anyhow::Result<IngestServiceClient<Channel>> {
        Ok(IngestServiceClient::new(
            vigil_client::connect(&self.gateway_url(), &self.device_files(tenant, device)).await?,
        ))
    }

    /// A QueryService client holding the analyst's certificate (granted
    /// every tenant in deploy/policy.toml).
    pub async fn analyst(&self) -> anyhow::Result<QueryServiceClient<Channel>> {
        self.user("analyst").await
    }

    /// A QueryService client holding user `name`'s certificate.
    pub async fn user(&self, name: &str) -> anyhow::Result<QueryServiceClient<Channel>> {
        let p = self.pki.user(name);
        let files = TlsFiles {
            ca: self.pki.ca(),
            cert: p.cert,
            key: p.key,
        };
        Ok(QueryServiceClient::new(
            vigil_client::connect(&self.reader_url(), &files).await?,
        ))
    }

    /// Rows in `events`.
    pub async fn stored_events(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await?)
    }

    /// The gateway's readiness (`vigil.ingest.v1.IngestService`) as its
    /// health port reports it.
    pub async fn gateway_serving(&self) -> anyhow::Result<bool> {
        serving(self.health.gateway, Gateway::HEALTH_SERVICE)
            .await
            .ok_or_else(|| anyhow::anyhow!("the gateway's health port does not answer"))
    }

    /// Rows in `findings`.
    pub async fn stored_findings(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM findings")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Waits until `events` holds exactly `n` rows.
    pub async fn wait_for_events(&self, n: i64) -> anyhow::Result<()> {
        wait_until(
            Duration::from_secs(30),
            &format!("{n} stored events"),
            || async { self.stored_events().await.ok() == Some(n) },
        )
        .await
    }

    /// Sends every service the shutdown signal without waiting for them.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Stops the services (graceful drain) and waits for them.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        self.pool.close().await;
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The findings (id, count) an uninterrupted correlator with the shipped
/// rules computes over every stored event in event-time order: the newest
/// version of each. What a run through faults must equal.
pub async fn uninterrupted_findings(
    pool: &PgPool,
) -> anyhow::Result<std::collections::BTreeSet<(String, usize)>> {
    use prost::Message;
    let rows: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT tenant, payload FROM events ORDER BY time, uid")
            .fetch_all(pool)
            .await?;
    let rules = vigil_correlator::rules::parse(&std::fs::read_to_string(
        workspace_root().join("deploy/rules.toml"),
    )?)?;
    let mut engine =
        vigil_correlator::engine::Engine::new(rules, Default::default(), Default::default());
    let mut findings = std::collections::BTreeMap::new();
    for (tenant, payload) in rows {
        let event = vigil_proto::event::v1::SecurityEvent::decode(payload.as_slice())?;
        for f in engine.ingest(&tenant, &event) {
            findings.insert(f.id.clone(), f.count);
        }
    }
    for f in engine.advance(i64::MAX) {
        findings.insert(f.id.clone(), f.count);
    }
    Ok(findings.into_iter().collect())
}

/// The findings the writer stored, as (id, count); empty if unreadable.
pub async fn stored_findings(pool: &PgPool) -> std::collections::BTreeSet<(String, usize)> {
    sqlx::query_as::<_, (String, i32)>("SELECT uid, count FROM findings")
        .fetch_all(pool)
        .await
        .map(|rows| rows.into_iter().map(|(id, c)| (id, c as usize)).collect())
        .unwrap_or_default()
}
