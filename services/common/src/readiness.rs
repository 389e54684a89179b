//! One readiness model for every service, served as `grpc.health.v1` on
//! its own plaintext port (Kubernetes' gRPC probe, and any load balancer,
//! cannot present a client certificate).
//!
//! Service name `""` answers SERVING while the process runs; the service's
//! own name (`vigil.ingest.v1.IngestService`, `vigil.writer`...) answers
//! SERVING only while the service runs, is not stopping, and every hard
//! dependency it declared ([`Readiness::dependency`]) is up. Dependencies
//! are flipped by events where the library reports them (the NATS
//! connection's events, see [`crate::nats::connect`]), and by probes where
//! it does not ([`Dependency::probe`]: Postgres, a KV bucket), so a loss
//! shows within [`PROBE_INTERVAL`] plus the probe's timeout.
//!
//! On a shutdown signal the runner calls [`Readiness::stopping`] before
//! anything drains, and keeps the health server answering NOT_SERVING
//! until the process exits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// How often a probed dependency is checked.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How long one probe may take before the dependency counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct State {
    /// Each declared dependency and whether it is up.
    dependencies: BTreeMap<&'static str, bool>,
    /// Dependencies that have reported at least once (the first report,
    /// at start-up, is not news).
    reported: std::collections::BTreeSet<&'static str>,
    running: bool,
    stopping: bool,
}

impl State {
    fn serving(&self) -> bool {
        self.running && !self.stopping && self.dependencies.values().all(|up| *up)
    }
}

struct Inner {
    service: &'static str,
    reporter: HealthReporter,
    state: Mutex<State>,
    /// Serialises updates of the reporter so the last one applied is the
    /// current state.
    apply: tokio::sync::Mutex<Option<bool>>,
}

/// A service's readiness, shared by everything that can change it.
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

impl Readiness {
    /// Readiness of `service`, reported through `reporter`; NOT_SERVING
    /// until [`Readiness::running`].
    pub fn new(service: &'static str, reporter: HealthReporter) -> Self {
        Self {
            inner: Arc::new(Inner {
                service,
                reporter,
                state: Mutex::new(State::default()),
                apply: tokio::sync::Mutex::new(None),
            }),
        }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self
            .inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut state)
    }

    /// Declares a hard dependency, down until it reports up.
    pub fn dependency(&self, name: &'static str) -> Dependency {
        self.with_state(|s| s.dependencies.insert(name, false));
        Dependency {
            readiness: self.clone(),
            name,
        }
    }

    /// Whether the service reports SERVING now (or will, once the update
    /// in progress is applied).
    pub fn is_serving(&self) -> bool {
        self.with_state(|s| s.serving())
    }

    /// Every declared dependency and whether it is up.
    pub fn dependencies(&self) -> Vec<(&'static str, bool)> {
        self.with_state(|s| s.dependencies.iter().map(|(n, up)| (*n, *up)).collect())
    }

    /// The dependencies that are down.
    pub fn down(&self) -> Vec<&'static str> {
        self.with_state(|s| {
            s.dependencies
                .iter()
                .filter(|(_, up)| !**up)
                .map(|(name, _)| *name)
                .collect()
        })
    }

    /// The service has started its work.
    pub async fn running(&self) {
        self.with_state(|s| s.running = true);
        self.apply().await;
    }

    /// The service is stopping: NOT_SERVING from now on, whatever the
    /// dependencies do. Returns once the health server says so.
    pub async fn stopping(&self) {
        self.with_state(|s| s.stopping = true);
        self.apply().await;
    }

    /// Pushes the current state to the health server if it changed.
    async fn apply(&self) {
        let mut applied = self.inner.apply.lock().await;
        let serving = self.is_serving();
        if *applied == Some(serving) {
            return;
        }
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.inner
            .reporter
            .set_service_status(self.inner.service, status)
            .await;
        if applied.is_some() {
            tracing::info!(service = self.inner.service, serving, down = ?self.down(), "readiness changed");
        }
        *applied = Some(serving);
    }

    fn set(&self, name: &'static str, up: bool) {
        let (changed, quiet) = self.with_state(|s| {
            let slot = s.dependencies.entry(name).or_insert(!up);
            let changed = std::mem::replace(slot, up) != up;
            let first = s.reported.insert(name);
            (changed, s.stopping || first)
        });
        if changed {
            if quiet {
                // Start-up, or connections closing as the service stops.
                tracing::debug!(dependency = name, up, "dependency reported");
            } else if up {
                tracing::info!(dependency = name, "dependency is back");
            } else {
                tracing::warn!(dependency = name, "dependency lost");
            }
            let readiness = self.clone();
            // Callers may be synchronous (event callbacks); the reporter is not.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { readiness.apply().await });
            }
        }
    }
}

/// One hard dependency of a service (JetStream, Postgres, a KV bucket).
#[derive(Clone)]
pub struct Dependency {
    readiness: Readiness,
    name: &'static str,
}

impl Dependency {
    pub fn up(&self) {
        self.readiness.set(self.name, true);
    }

    pub fn down(&self) {
        self.readiness.set(self.name, false);
    }

    pub fn set(&self, up: bool) {
        self.readiness.set(self.name, up);
    }

    /// Checks the dependency with `check` every [`PROBE_INTERVAL`] (a
    /// check taking longer than [`PROBE_TIMEOUT`] counts as down) until
    /// `stop`. For dependencies whose client library reports no loss.
    pub fn probe<F, Fut>(self, stop: CancellationToken, mut check: F) -> JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let up = tokio::time::timeout(PROBE_TIMEOUT, check())
                    .await
                    .unwrap_or(false);
                self.set(up);
            }
        })
    }
}

/// Serves `grpc.health.v1` on `listener` until `stop`; returns the
/// readiness of `service` (NOT_SERVING until it runs).
pub fn serve(
    service: &'static str,
    listener: TcpListener,
    stop: CancellationToken,
) -> (Readiness, JoinHandle<()>) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let readiness = Readiness::new(service, reporter);
    let task = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(health_service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled_owned())
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "health server failed");
        }
    });
    (readiness, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serving_only_while_running_every_dependency_up_and_not_stopping() {
        let (reporter, _service) = tonic_health::server::health_reporter();
        let readiness = Readiness::new("vigil.test", reporter);
        let nats = readiness.dependency("jetstream");
        let db = readiness.dependency("postgres");
        assert!(!readiness.is_serving());
        nats.up();
        db.up();
        assert!(!readiness.is_serving(), "not running yet");
        readiness.running().await;
        assert!(readiness.is_serving());
        db.down();
        assert!(!readiness.is_serving());
        assert_eq!(readiness.down(), vec!["postgres"]);
        db.up();
        assert!(readiness.is_serving());
        readiness.stopping().await;
        nats.up();
        assert!(!readiness.is_serving(), "stopping is final");
    }
}
