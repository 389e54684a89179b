//! The one runner every vigil service binary calls, and the lifecycle it
//! gives every service, in production and in tests alike:
//!
//! 1. parse settings (flags and `VIGIL_<SERVICE>_*` variables, see
//!    [`crate::settings`]);
//! 2. start logging;
//! 3. [`launch`]: load the settings (every problem reported at once, exit
//!    [`EXIT_CONFIG`]), bind the health port (NOT_SERVING) and the metrics
//!    port (`GET /metrics`, [`crate::metrics`]), then [`Service::build`]:
//!    bind the other sockets, connect, declare the hard dependencies,
//!    register the service's metrics;
//! 4. log every bound address;
//! 5. [`Launched::run_until_stopped`]: SERVING while every dependency is
//!    up; on SIGINT/SIGTERM NOT_SERVING first, then the service drains
//!    (bounded by [`crate::shutdown::GRACE_PERIOD`]), and the health and
//!    metrics ports answer until the very end;
//! 6. exit 0, or [`EXIT_FAILURE`] if start-up or the service failed.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, FromArgMatches};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::InvalidConfig;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::settings::{Names, RunArgs};

/// Exit code of a bad configuration (`EX_USAGE`-like, as sysexits' 64).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code of a failed start-up or a service that stopped with an error.
pub const EXIT_FAILURE: u8 = 1;

/// A service's own settings, and what they load into.
pub trait ServiceConfig: Args + Send + Sync {
    /// The settings, validated and loaded (files read, keys parsed).
    type Loaded: Send;

    /// Validates every setting, naming each bad one, and returns what they
    /// load into; nothing is read twice. `run` are the runner's settings
    /// (`insecure_dev` relaxes some checks).
    fn load(&self, run: &RunArgs) -> Result<Self::Loaded, InvalidConfig>;
}

/// Everything a service binary reads: the runner's settings and the
/// service's own.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings<C: Args> {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub service: C,
}

/// What a service's settings load into.
pub type Loaded<S> = <<S as Service>::Config as ServiceConfig>::Loaded;

/// What a vigil service is, as the runner sees it.
pub trait Service: Sized + Send + 'static {
    /// `gateway`, `writer`, `reader`, `correlator`: names the binary
    /// (`vigil-<name>`), the settings (`VIGIL_<NAME>_*`), the logs.
    const NAME: &'static str;
    /// One line for `--help`.
    const ABOUT: &'static str;
    /// The name readiness is reported under on the health port.
    const HEALTH_SERVICE: &'static str;
    /// Defaults of shared settings that differ per service, by key.
    const DEFAULTS: &'static [(&'static str, &'static str)] = &[];

    type Config: ServiceConfig;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Binds the service's sockets (port 0 picks a free one), connects,
    /// declares its hard dependencies on `readiness` and registers its
    /// metrics on `metrics`.
    fn build(
        loaded: Loaded<Self>,
        readiness: &Readiness,
        metrics: &Metrics,
    ) -> impl Future<Output = Result<Self, Self::Error>> + Send;

    /// Every address the service listens on, by name.
    fn addresses(&self) -> Vec<(&'static str, SocketAddr)>;

    /// Works until `shutdown`, then drains and returns.
    fn run_until_stopped(
        self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// How a service can fail to start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Config(#[from] InvalidConfig),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Build(E),
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr`, naming it in the error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// A service built and bound, its health and metrics ports answering, not
/// yet running.
pub struct Launched<S: Service> {
    service: S,
    readiness: Readiness,
    metrics: Metrics,
    health_addr: SocketAddr,
    metrics_addr: SocketAddr,
    health_stop: CancellationToken,
    health_task: tokio::task::JoinHandle<()>,
    metrics_task: tokio::task::JoinHandle<()>,
}

/// Steps 3 of the lifecycle: load, bind health, build.
pub async fn launch<S: Service>(
    run: &RunArgs,
    config: &S::Config,
) -> Result<Launched<S>, LaunchError<S::Error>> {
    let loaded = config.load(run)?;
    if run.insecure_dev {
        tracing::warn!(
            service = S::NAME,
            "--insecure-dev: insecure settings are allowed; never use this in production"
        );
    }
    let health = bind(run.health_listen).await?;
    let health_addr = health.local_addr().map_err(|source| BindError {
        addr: run.health_listen,
        source,
    })?;
    let metrics_listener = bind(run.metrics_listen).await?;
    let metrics_addr = metrics_listener.local_addr().map_err(|source| BindError {
        addr: run.metrics_listen,
        source,
    })?;
    let health_stop = CancellationToken::new();
    let (readiness, health_task) =
        crate::readiness::serve(S::HEALTH_SERVICE, health, health_stop.clone());
    let metrics = Metrics::for_service(S::NAME);
    metrics.report_readiness(&readiness);
    let metrics_task = tokio::spawn(crate::metrics::serve(
        metrics_listener,
        metrics.clone(),
        health_stop.clone(),
    ));
    let service = match S::build(loaded, &readiness, &metrics).await {
        Ok(s) => s,
        Err(e) => {
            health_stop.cancel();
            return Err(LaunchError::Build(e));
        }
    };
    Ok(Launched {
        service,
        readiness,
        metrics,
        health_addr,
        metrics_addr,
        health_stop,
        health_task,
        metrics_task,
    })
}

impl<S: Service> Launched<S> {
    pub fn service(&self) -> &S {
        &self.service
    }

    /// The plaintext `grpc.health.v1` address.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    /// The plaintext Prometheus address (`GET /metrics`).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The service's metrics, as `/metrics` renders them.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Every bound address, health and metrics included.
    pub fn addresses(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut all = self.service.addresses();
        all.push(("health", self.health_addr));
        all.push(("metrics", self.metrics_addr));
        all
    }

    /// Step 5 of the lifecycle.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), S::Error> {
        let Launched {
            service,
            readiness,
            health_stop,
            health_task,
            metrics_task,
            ..
        } = self;
        // The service drains on its own token, cancelled only once the
        // health port says NOT_SERVING.
        let drain = CancellationToken::new();
        let watcher = {
            let readiness = readiness.clone();
            let drain = drain.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                readiness.stopping().await;
                drain.cancel();
            })
        };
        readiness.running().await;
        let result = service.run_until_stopped(drain.clone()).await;
        readiness.stopping().await;
        watcher.abort();
        health_stop.cancel();
        let _ = health_task.await;
        let _ = metrics_task.await;
        result
    }
}

/// The command line of `vigil-<S::NAME>`: every setting a flag and a
/// `VIGIL_<NAME>_*` variable, with the service's defaults.
pub fn command<S: Service>() -> clap::Command {
    Names::new(S::NAME).apply(
        Settings::<S::Config>::augment_args(
            clap::Command::new(format!("vigil-{}", S::NAME))
                .version(env!("CARGO_PKG_VERSION"))
                .about(S::ABOUT),
        ),
        S::DEFAULTS,
    )
}

/// The whole lifecycle for a binary: `fn main() -> ExitCode { run::<Gateway>() }`.
pub fn run<S: Service>() -> ExitCode {
    let config = match command::<S>()
        .try_get_matches()
        .and_then(|m| Settings::<S::Config>::from_arg_matches(&m))
    {
        Ok(config) => config,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigil-{}: cannot start the runtime: {e}", S::NAME);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    runtime.block_on(async {
        crate::telemetry::init(S::NAME);
        let launched = match launch::<S>(&config.run, &config.service).await {
            Ok(l) => l,
            Err(LaunchError::Config(e)) => {
                // Every bad setting, by name.
                eprintln!("{e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            Err(e) => {
                tracing::error!(error = %e, "start-up failed");
                eprintln!("vigil-{}: {e}", S::NAME);
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        for (listener, addr) in launched.addresses() {
            tracing::info!(listener, %addr, "listening");
        }
        match launched
            .run_until_stopped(crate::shutdown::on_signal())
            .await
        {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "failed");
                ExitCode::from(EXIT_FAILURE)
            }
        }
    })
}
