//! The mesh as separate processes, built from the real binaries, so a test
//! can `kill -9` any of them, SIGSTOP nats-server, or cut Postgres off, and
//! restart them on the same ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::PgPool;
use vigil_certs::Pki;

use crate::proxy::TcpProxy;
use crate::{MeshOptions, NatsServer, TestDb, wait_until};

/// A binary built next to the test (`cargo build --bins` puts them there;
/// `deploy/test` does it before the tests).
/// A test runs from `target/<profile>/deps/`, a binary such as
/// `vigil-bench` from `target/<profile>/`: the services are in the latter.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let here = exe.parent().context("binary location")?;
    let dir = if here.ends_with("deps") {
        here.parent().context("test binary location")?
    } else {
        here
    };
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: run `cargo build --bins` first (deploy/test does)",
            path.display()
        );
    }
    Ok(path)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`, `RssAnon:`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What a [`Stack`] runs beyond [`MeshOptions`].
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Device certificates to issue besides the default fleet.
    pub devices: Vec<(String, String)>,
    /// Whether the correlator runs.
    pub correlator: bool,
    /// The writer reaches Postgres through the cuttable proxy (fault
    /// tests) or directly (benchmarks: the proxy's copying would be
    /// measured too).
    pub postgres_proxy: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            devices: Vec::new(),
            correlator: true,
            postgres_proxy: true,
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// One service process.
pub struct Service {
    pub name: &'static str,
    binary: PathBuf,
    env: Vec<(String, String)>,
    /// A port that accepts connections once the service is up.
    ready_port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Service {
    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory of the running process, in KiB (Linux).
    pub fn rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid()?, "VmRSS:")
    }
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.binary)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);
        let port = self.ready_port;
        wait_until(
            Duration::from_secs(30),
            &format!("{} to listen", self.name),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            },
        )
        .await
        .with_context(|| format!("see {}", self.log.display()))
    }

    /// Another instance of this service (not started): the same binary and
    /// settings with `overrides`, its own health and metrics ports and log.
    pub fn another(&self, suffix: &str, overrides: &[(&str, String)]) -> anyhow::Result<Service> {
        let mut env = self.env.clone();
        let ready_port = free_port()?;
        for (key, value) in &mut env {
            if key.ends_with("_HEALTH_LISTEN") {
                *value = format!("127.0.0.1:{ready_port}");
            } else if key.ends_with("_METRICS_LISTEN") {
                *value = format!("127.0.0.1:{}", free_port()?);
            }
        }
        for (key, value) in overrides {
            env.retain(|(k, _)| k != key);
            env.push(((*key).to_owned(), value.clone()));
        }
        Ok(Service {
            name: self.name,
            binary: self.binary.clone(),
            env,
            ready_port,
            log: self.log.with_extension(format!("{suffix}.log")),
            child: None,
        })
    }

    /// SIGKILL: no drain, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit within `grace`.
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(child.id(), "TERM");
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::ensure!(
                    status.success(),
                    "{} exited with {status} after SIGTERM",
                    self.name
                );
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not exit within {grace:?} of SIGTERM", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// nats-server, Postgres (behind a cuttable proxy for the writer), and the
/// gateway, writer and reader as processes.
pub struct Stack {
    pub pki: Pki,
    pub nats: NatsServer,
    pub db: TestDb,
    pub pool: PgPool,
    pub pg_proxy: TcpProxy,
    pub gateway: Service,
    pub writer: Service,
    pub reader: Service,
    pub correlator: Service,
    pub gateway_port: u16,
    pub writer_health_port: u16,
    pub reader_port: u16,
    /// The correlator's Prometheus `/metrics` port.
    pub correlator_metrics_port: u16,
    pub logs: tempfile::TempDir,
    _pki_dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start(options: MeshOptions) -> anyhow::Result<Self> {
        Self::start_with(options, StackOptions::default()).await
    }

    pub async fn start_with(options: MeshOptions, stack: StackOptions) -> anyhow::Result<Self> {
        let pki_dir = tempfile::tempdir()?;
        let mut pki_options = vigil_certs::Options::default();
        pki_options.devices.extend(stack.devices.iter().cloned());
        let pki = vigil_certs::generate(pki_dir.path(), &pki_options)?;
        let nats = NatsServer::start(&pki).await?;
        let admin = vigil_common::nats::connect(&nats.settings("admin"), "test-admin").await?;
        vigil_common::provision::provision(&admin, &options.limits).await?;
        admin.flush().await?;
        let db = TestDb::create().await?;
        let pool = PgPool::connect(&db.url).await?;
        vigil_writer::MIGRATOR.run(&pool).await?;

        // postgres://user@host:port/db -> the writer goes through the proxy.
        let writer_url = db.role_url("writer");
        let (prefix, rest) = writer_url.split_once('@').context("database url")?;
        let (host_port, database) = rest.split_once('/').context("database url")?;
        let pg_proxy = TcpProxy::start(host_port.to_owned()).await?;
        let writer_db = if stack.postgres_proxy {
            format!("{prefix}@127.0.0.1:{}/{database}", pg_proxy.port)
        } else {
            writer_url.clone()
        };

        let logs = tempfile::tempdir()?;
        let (gateway_port, gateway_health) = (free_port()?, free_port()?);
        let writer_health_port = free_port()?;
        let (reader_port, reader_health) = (free_port()?, free_port()?);
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let nats_env = |prefix: &str, user: &str| {
            let c = pki.nats_client(user);
            vec![
                (format!("{prefix}_NATS_URL"), nats.url()),
                (format!("{prefix}_NATS_CA"), path(pki.ca())),
                (format!("{prefix}_NATS_CERT"), path(c.cert)),
                (format!("{prefix}_NATS_KEY"), path(c.key)),
            ]
        };
        let tls_env = |prefix: &str, server: &str| {
            let s = pki.server(server);
            vec![
                (format!("{prefix}_TLS_CERT"), path(s.cert)),
                (format!("{prefix}_TLS_KEY"), path(s.key)),
                (format!("{prefix}_TLS_CLIENT_CA"), path(pki.ca())),
                (format!("{prefix}_TLS_CRL"), path(pki.crl())),
            ]
        };
        let rate_env = |prefix: &str| {
            vec![
                (
                    format!("{prefix}_RATE_PER_SEC"),
                    options.rate_per_sec.to_string(),
                ),
                (
                    format!("{prefix}_RATE_BURST"),
                    options.rate_burst.to_string(),
                ),
            ]
        };
        let mut gateway_env = vec![
            (
                "VIGIL_GATEWAY_LISTEN".to_owned(),
                format!("127.0.0.1:{gateway_port}"),
            ),
            (
                "VIGIL_GATEWAY_HEALTH_LISTEN".to_owned(),
                format!("127.0.0.1:{gateway_health}"),
            ),
            (
                "VIGIL_GATEWAY_PUBLISH_TIMEOUT_SECS".to_owned(),
                options.publish_timeout_secs.to_string(),
            ),
        ];
        gateway_env.extend(tls_env("VIGIL_GATEWAY", "gateway"));
        gateway_env.extend(rate_env("VIGIL_GATEWAY"));
        gateway_env.extend(nats_env("VIGIL_GATEWAY", "gateway"));
        gateway_env.push((
            "VIGIL_GATEWAY_METRICS_LISTEN".to_owned(),
            format!("127.0.0.1:{}", free_port()?),
        ));
        let mut writer_env = vec![
            ("VIGIL_WRITER_DATABASE_URL".to_owned(), writer_db),
            (
                "VIGIL_WRITER_HEALTH_LISTEN".to_owned(),
                format!("127.0.0.1:{writer_health_port}"),
            ),
            (
                "VIGIL_WRITER_MAX_DELIVERIES".to_owned(),
                options.writer_max_deliveries.to_string(),
            ),
            (
                "VIGIL_WRITER_RETRY_BASE_MS".to_owned(),
                options.writer_retry_base_ms.to_string(),
            ),
        ];
        writer_env.extend(nats_env("VIGIL_WRITER", "writer"));
        writer_env.push((
            "VIGIL_WRITER_METRICS_LISTEN".to_owned(),
            format!("127.0.0.1:{}", free_port()?),
        ));
        let mut reader_env = vec![
            (
                "VIGIL_READER_LISTEN".to_owned(),
                format!("127.0.0.1:{reader_port}"),
            ),
            (
                "VIGIL_READER_HEALTH_LISTEN".to_owned(),
                format!("127.0.0.1:{reader_health}"),
            ),
            (
                "VIGIL_READER_DATABASE_URL".to_owned(),
                db.role_url("reader"),
            ),
            (
                "VIGIL_READER_POLICY".to_owned(),
                path(crate::workspace_root().join("deploy/policy.toml")),
            ),
        ];
        reader_env.extend(tls_env("VIGIL_READER", "reader"));
        reader_env.extend(rate_env("VIGIL_READER"));
        reader_env.extend(nats_env("VIGIL_READER", "reader"));
        reader_env.push((
            "VIGIL_READER_METRICS_LISTEN".to_owned(),
            format!("127.0.0.1:{}", free_port()?),
        ));
        let correlator_health = free_port()?;
        let correlator_metrics_port = free_port()?;
        let mut correlator_env = vec![
            (
                "VIGIL_CORRELATOR_RULES".to_owned(),
                path(crate::workspace_root().join("deploy/rules.toml")),
            ),
            (
                "VIGIL_CORRELATOR_HEALTH_LISTEN".to_owned(),
                format!("127.0.0.1:{correlator_health}"),
            ),
            (
                "VIGIL_CORRELATOR_METRICS_LISTEN".to_owned(),
                format!("127.0.0.1:{correlator_metrics_port}"),
            ),
            (
                "VIGIL_CORRELATOR_ALLOWED_LATENESS_MS".to_owned(),
                "2000".to_owned(),
            ),
            (
                "VIGIL_CORRELATOR_IDLE_TIMEOUT_MS".to_owned(),
                "500".to_owned(),
            ),
        ];
        correlator_env.extend(nats_env("VIGIL_CORRELATOR", "correlator"));

        let service = |name: &'static str, env, ready_port| -> anyhow::Result<Service> {
            Ok(Service {
                name,
                binary: binary(name)?,
                env,
                ready_port,
                log: logs.path().join(format!("{name}.log")),
                child: None,
            })
        };
        let mut writer = service("vigil-writer", writer_env, writer_health_port)?;
        let mut gateway = service("vigil-gateway", gateway_env, gateway_port)?;
        let mut reader = service("vigil-reader", reader_env, reader_port)?;
        let mut correlator = service("vigil-correlator", correlator_env, correlator_health)?;
        writer.start().await?;
        gateway.start().await?;
        reader.start().await?;
        if stack.correlator {
            correlator.start().await?;
        }
        Ok(Stack {
            pki,
            nats,
            db,
            pool,
            pg_proxy,
            gateway,
            writer,
            reader,
            correlator,
            gateway_port,
            writer_health_port,
            reader_port,
            correlator_metrics_port,
            logs,
            _pki_dir: pki_dir,
        })
    }

    pub fn gateway_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.gateway_port)
    }

    /// SIGSTOP / SIGCONT nats-server.
    pub fn pause_nats(&self) {
        if let Some(pid) = self.nats.pid() {
            signal(pid, "STOP");
        }
    }

    pub fn resume_nats(&self) {
        if let Some(pid) = self.nats.pid() {
            signal(pid, "CONT");
        }
    }

    /// The writer's readiness as its health port reports it.
    pub async fn writer_serving(&self) -> anyhow::Result<bool> {
        let channel = tonic::transport::Endpoint::from_shared(format!(
            "http://127.0.0.1:{}",
            self.writer_health_port
        ))?
        .connect()
        .await?;
        let response = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: <vigil_writer::Writer as vigil_common::service::Service>::HEALTH_SERVICE
                    .to_owned(),
            })
            .await?
            .into_inner();
        Ok(response.status
            == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
    }

    /// Prints each service's log (for a failing test).
    pub fn dump_logs(&self) {
        for name in [
            "vigil-gateway",
            "vigil-writer",
            "vigil-reader",
            "vigil-correlator",
        ] {
            let text = std::fs::read_to_string(self.logs.path().join(format!("{name}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            eprintln!(
                "--- {name} (last 30 lines)\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}
