//! Prometheus metrics, the same way on every service: one
//! [`prometheus::Registry`] per service instance (tests run several in one
//! process), exposed as `GET /metrics` on its own plaintext admin port
//! (never the device-facing one), every other path 404.
//!
//! Names follow Prometheus' conventions: the `vigil_` prefix, base units
//! (`_seconds`, `_bytes`), `_total` on counters, and no label whose values
//! are unbounded (no device, event or trace ids). The metrics every service
//! has are registered by the runner ([`Metrics::for_service`]):
//! `vigil_build_info`, `process_start_time_seconds`, `vigil_ready` and
//! `vigil_dependency_up` (the readiness model the health port reports).
//! Libraries create their metric sets unregistered (so a set can be built
//! before the registry exists) and [`Metrics::register`] them.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use prometheus::{Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::readiness::Readiness;

pub use prometheus;

/// Buckets for durations of calls that take micro- to milliseconds
/// (publish acks, inserts, RPCs), in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets for end-to-end delays (ingest → committed), in seconds.
pub const DELAY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Buckets for batch sizes (events or messages).
pub const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
];

type Refresh = Box<dyn Fn() + Send + Sync>;

/// One service instance's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: prometheus::Registry,
    /// Run before every scrape: gauges that read their value from a state
    /// (readiness) rather than being set when it changes.
    refresh: Arc<Mutex<Vec<Refresh>>>,
    /// Every registered metric's name, whether it has samples yet or not
    /// (a labelled metric shows in `/metrics` only once it has a series).
    names: Arc<Mutex<std::collections::BTreeSet<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            registry: prometheus::Registry::new(),
            refresh: Arc::new(Mutex::new(Vec::new())),
            names: Arc::new(Mutex::new(std::collections::BTreeSet::new())),
        }
    }

    /// A registry with what every service reports: build info and start
    /// time.
    pub fn for_service(service: &'static str) -> Self {
        let metrics = Self::new();
        let build = gauge_vec(
            "vigil_build_info",
            "Always 1; the labels say which build runs.",
            &["service", "version"],
        );
        build
            .with_label_values(&[service, env!("CARGO_PKG_VERSION")])
            .set(1.0);
        metrics.register(build);
        let start = gauge(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
        );
        start.set(crate::now_millis() as f64 / 1000.0);
        metrics.register(start);
        metrics
    }

    /// Registers a metric (or a set: anything that is a
    /// [`prometheus::core::Collector`]). Registering the same name twice is
    /// a programming error: logged, and the second is not exported.
    pub fn register<C: prometheus::core::Collector + 'static>(&self, collector: C) {
        let names: Vec<String> = collector.desc().iter().map(|d| d.fq_name.clone()).collect();
        lock(&self.names).extend(names);
        if let Err(error) = self.registry.register(Box::new(collector)) {
            tracing::error!(%error, "metric not registered");
        }
    }

    /// The name of every registered metric.
    pub fn names(&self) -> Vec<String> {
        lock(&self.names).iter().cloned().collect()
    }

    /// Runs `refresh` before every scrape.
    pub fn on_scrape(&self, refresh: impl Fn() + Send + Sync + 'static) {
        lock(&self.refresh).push(Box::new(refresh));
    }

    /// `vigil_ready` (1 while the health port says SERVING) and
    /// `vigil_dependency_up{dependency}`, read from `readiness` at scrape.
    pub fn report_readiness(&self, readiness: &Readiness) {
        let ready = gauge(
            "vigil_ready",
            "1 while the service reports SERVING on its health port, else 0.",
        );
        let up = gauge_vec(
            "vigil_dependency_up",
            "1 while a hard dependency of the service is up, else 0.",
            &["dependency"],
        );
        self.register(ready.clone());
        self.register(up.clone());
        let readiness = readiness.clone();
        self.on_scrape(move || {
            ready.set(if readiness.is_serving() { 1.0 } else { 0.0 });
            for (name, is_up) in readiness.dependencies() {
                up.with_label_values(&[name])
                    .set(if is_up { 1.0 } else { 0.0 });
            }
        });
    }

    /// The text exposition of every registered metric.
    pub fn render(&self) -> String {
        for refresh in lock(&self.refresh).iter() {
            refresh();
        }
        let mut out = Vec::new();
        if let Err(error) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out)
        {
            tracing::error!(%error, "metrics not rendered");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// Constructors for metrics with names and help fixed at compile time: the
// only way they fail is a malformed name or label, which the unit tests of
// every metric set would show; a failure still yields a working (if
// unexported) metric rather than a panic.

/// A counter with labels.
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|error| {
        tracing::error!(name, %error, "bad metric");
        fallback_counter()
    })
}

/// A counter without labels.
pub fn counter(name: &str, help: &str) -> prometheus::IntCounter {
    prometheus::IntCounter::new(name, help).unwrap_or_else(|error| {
        tracing::error!(name, %error, "bad metric");
        fallback_counter().with_label_values(&["x"])
    })
}

fn fallback_counter() -> IntCounterVec {
    #[allow(clippy::unwrap_used)] // a constant, valid name
    IntCounterVec::new(Opts::new("vigil_invalid_metric_total", "-"), &["x"]).unwrap()
}

/// A gauge without labels.
pub fn gauge(name: &str, help: &str) -> Gauge {
    Gauge::new(name, help).unwrap_or_else(|error| {
        tracing::error!(name, %error, "bad metric");
        fallback_gauge().with_label_values(&["x"])
    })
}

/// An integer gauge without labels.
pub fn int_gauge(name: &str, help: &str) -> prometheus::IntGauge {
    prometheus::IntGauge::new(name, help).unwrap_or_else(|error| {
        tracing::error!(name, %error, "bad metric");
        #[allow(clippy::unwrap_used)] // a constant, valid name
        prometheus::IntGauge::new("vigil_invalid_int_gauge", "-").unwrap()
    })
}

/// A gauge with labels.
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|error| {
        tracing::error!(name, %error, "bad metric");
        fallback_gauge()
    })
}

fn fallback_gauge() -> GaugeVec {
    #[allow(clippy::unwrap_used)] // a constant, valid name
    GaugeVec::new(Opts::new("vigil_invalid_metric", "-"), &["x"]).unwrap()
}

/// A histogram with labels and `buckets`.
pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .unwrap_or_else(|error| {
        tracing::error!(name, %error, "bad metric");
        #[allow(clippy::unwrap_used)] // a constant, valid name
        HistogramVec::new(HistogramOpts::new("vigil_invalid_histogram", "-"), &["x"]).unwrap()
    })
}

/// A histogram without labels.
pub fn histogram(name: &str, help: &str, buckets: &[f64]) -> prometheus::Histogram {
    histogram_vec(name, help, &[], buckets).with_label_values::<&str>(&[])
}

/// A count over the last 60 seconds (one bucket per second), for gauges
/// like "events accepted in the last minute" that `vigil status` reads in
/// one scrape.
pub struct LastMinute {
    buckets: [std::sync::atomic::AtomicU64; 60],
    /// The second each bucket holds.
    seconds: [std::sync::atomic::AtomicI64; 60],
}

impl Default for LastMinute {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| std::sync::atomic::AtomicU64::new(0)),
            seconds: std::array::from_fn(|_| std::sync::atomic::AtomicI64::new(-1)),
        }
    }
}

impl LastMinute {
    fn now() -> i64 {
        crate::now_millis() / 1000
    }

    pub fn add(&self, n: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let second = Self::now();
        let i = second.rem_euclid(60) as usize;
        if self.seconds[i].swap(second, Relaxed) != second {
            // A new second in this bucket: what it held is a minute old.
            self.buckets[i].store(0, Relaxed);
        }
        self.buckets[i].fetch_add(n, Relaxed);
    }

    /// The count of the last 60 seconds.
    pub fn sum(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let now = Self::now();
        (0..60)
            .filter(|&i| now - self.seconds[i].load(Relaxed) < 60)
            .map(|i| self.buckets[i].load(Relaxed))
            .sum()
    }
}

/// Serves `GET /metrics` (and `HEAD`) on `listener` until `shutdown`;
/// every other path is 404, every other method 405.
pub async fn serve(listener: TcpListener, metrics: Metrics, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "metrics accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<_>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(answer(&request, &metrics)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

fn answer<B>(request: &Request<B>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "not found; try /metrics\n".into());
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n".into());
        response.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
        return response;
    }
    let mut response = reply(StatusCode::OK, metrics.render());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Reads `/metrics` from `addr` (tests, `vigil status`, benchmarks).
pub async fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!(
            "/metrics answered {}",
            head.lines().next().unwrap_or_default()
        )));
    }
    Ok(body.to_owned())
}

/// The value of the sample `name{labels}` in an exposition `text`
/// (`labels` as written: `result="accepted"`; empty for none), summed
/// over the series that carry all of `labels`.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(pair) => pair,
            None => continue,
        };
        let (metric, rest) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let have: Vec<&str> = rest.split(',').collect();
        if labels.iter().all(|l| have.contains(l))
            && let Ok(v) = value.parse::<f64>()
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_metrics_only_at_its_path() -> Result<(), Box<dyn std::error::Error>> {
        let metrics = Metrics::for_service("test");
        let events = counter_vec("vigil_test_events_total", "Test events.", &["result"]);
        metrics.register(events.clone());
        events.with_label_values(&["accepted"]).inc_by(3);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, metrics, stop.clone()));
        let text = scrape(addr).await?;
        assert_eq!(
            sample(&text, "vigil_test_events_total", &[r#"result="accepted""#]),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &text,
                "vigil_build_info",
                &[
                    r#"service="test""#,
                    concat!("version=\"", env!("CARGO_PKG_VERSION"), "\"")
                ]
            ),
            Some(1.0)
        );

        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for (request, status) in [
            ("GET / HTTP/1.1", "404"),
            ("GET /metricsx HTTP/1.1", "404"),
            ("POST /metrics HTTP/1.1", "405"),
        ] {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream
                .write_all(format!("{request}\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
                .await?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await?;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}")),
                "{request}: {answer}"
            );
        }
        stop.cancel();
        task.await?;
        Ok(())
    }

    #[test]
    fn reads_samples_by_labels() {
        let text =
            "# HELP x y\nx_total{a=\"1\",b=\"2\"} 4\nx_total{a=\"1\",b=\"3\"} 5\nx_total 1\n";
        assert_eq!(sample(text, "x_total", &["a=\"1\""]), Some(9.0));
        assert_eq!(sample(text, "x_total", &["b=\"3\""]), Some(5.0));
        assert_eq!(sample(text, "x_total", &[]), Some(10.0));
        assert_eq!(sample(text, "y_total", &[]), None);
    }
}
