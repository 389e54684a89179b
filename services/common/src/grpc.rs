//! The one way vigil serves gRPC to the outside: an [`Edge`] (allowlist
//! before TLS, mTLS with reloadable material, a rate limit per verified
//! identity), keepalive enforced, a cap on concurrent streams per
//! connection, server reflection (only to callers that passed mTLS), and a
//! drain bounded by [`crate::shutdown::GRACE_PERIOD`].

use std::sync::Arc;
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Router;
use tower::layer::util::{Identity as NoLayer, Stack};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;

use crate::config::Allowlist;
use crate::error::ApiError;
use crate::grpc_metrics::{RpcMetrics, RpcMetricsLayer};
use crate::identity::PeerInfo;
use crate::tls::ServerTls;

/// How often a listener re-reads its TLS files by default.
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Calls allowed per verified identity: `per_second` sustained, bursts of
/// `burst`.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// What stands between the network and a service: where it listens, the
/// allowlist, the TLS material and the rate limiter, all loaded and checked
/// at start-up ([`crate::settings::EdgeArgs::load`]).
pub struct Edge {
    pub listen: std::net::SocketAddr,
    pub tls: Arc<ServerTls>,
    pub allow: Arc<Allowlist>,
    rate: RateLayer,
    pub tls_reload: Duration,
    rpc: RpcMetrics,
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("rate limit: calls per second and burst must be at least 1")]
    Rate,
}

impl Edge {
    /// Loads the TLS material (errors name the file) and builds the rate
    /// limiter.
    pub fn load(
        listen: std::net::SocketAddr,
        tls: &crate::config::ServerTlsFiles,
        allow: Allowlist,
        rate: RateLimit,
        trust_domain: crate::identity::TrustDomain,
    ) -> Result<Self, EdgeError> {
        let rpc = RpcMetrics::new();
        Ok(Self {
            listen,
            tls: ServerTls::load(tls, trust_domain)?,
            allow: Arc::new(allow),
            rate: rate_layer(rate, rpc.refused.with_label_values(&["rate_limited"]))
                .ok_or(EdgeError::Rate)?,
            tls_reload: TLS_RELOAD_INTERVAL,
            rpc,
        })
    }
}

/// Keys the rate limit on the identity from the verified client
/// certificate, which a client cannot choose per request (headers can be).
#[derive(Debug, Clone, Copy)]
pub struct IdentityKey;

impl KeyExtractor for IdentityKey {
    type Key = String;
    fn extract<T>(
        &self,
        req: &http::Request<T>,
    ) -> Result<Self::Key, tower_governor::GovernorError> {
        let info = req
            .extensions()
            .get::<PeerInfo>()
            .ok_or(tower_governor::GovernorError::UnableToExtractKey)?;
        Ok(match &info.identity {
            Ok(identity) => identity.to_string(),
            // Unusable identities are refused by the service; still limit them.
            Err(_) => format!("unidentified:{:?}", info.remote_addr.map(|a| a.ip())),
        })
    }
}

type RateLayer = GovernorLayer<IdentityKey, NoOpMiddleware, tonic::body::Body>;

/// The layers every call passes, outermost last (see [`server`]).
pub type EdgeLayers = Stack<
    RateLayer,
    Stack<GlobalConcurrencyLimitLayer, Stack<LoadShedLayer, Stack<RpcMetricsLayer, NoLayer>>>,
>;

/// A tonic server with vigil's connection settings and [`EdgeLayers`].
pub type VigilServer = tonic::transport::Server<Stack<EdgeLayers, NoLayer>>;

/// How much work a server takes on at once.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// HTTP/2 streams (calls) one connection may have open.
    pub streams_per_connection: u32,
    /// Calls being started across all connections before new ones are shed.
    pub in_flight: usize,
}

/// `None` when either number is 0.
fn rate_layer(rate: RateLimit, limited: prometheus::IntCounter) -> Option<RateLayer> {
    let period = 1_000_000_000u64.checked_div(u64::from(rate.per_second))?;
    let config = GovernorConfigBuilder::default()
        .period(Duration::from_nanos(period))
        .burst_size(rate.burst)
        .key_extractor(IdentityKey)
        .finish()?;
    Some(GovernorLayer::new(config).error_handler(move |error| {
        let api = match error {
            tower_governor::GovernorError::TooManyRequests { wait_time, .. } => {
                limited.inc();
                ApiError::ResourceExhausted {
                    reason: format!("rate limit for this identity exceeded; retry in {wait_time}s"),
                    retry_after: Duration::from_secs(wait_time.max(1)),
                }
            }
            other => ApiError::Unauthenticated(other.to_string()),
        };
        tonic::Status::from(api).into_http()
    }))
}

/// A server with vigil's connection settings and the call pipeline in
/// front of every service, ready for `add_service`. A call passes, in order:
///
/// 0. metrics of every call ([`crate::grpc_metrics`]), refused ones too;
/// 1. the TLS accept loop ([`crate::tls::incoming`]): allowlist before any
///    TLS byte, handshake timeout, client certificate verified, identity
///    parsed once per connection into [`PeerInfo`];
/// 2. HTTP/2 limits (below): streams per connection, window sizes, header
///    size, rapid-reset and keepalive, so one connection cannot hold more
///    than its share of memory;
/// 3. per connection, tonic's load shedding over its concurrency limit
///    (`load_shed`, `concurrency_limit_per_connection`): a connection that
///    opens calls faster than they start gets RESOURCE_EXHAUSTED at once
///    instead of queueing;
/// 4. across connections, [`LoadShedLayer`] over a
///    [`GlobalConcurrencyLimitLayer`] of `in_flight`: when the whole server
///    is busy, new calls are refused at once (RESOURCE_EXHAUSTED), before
///    they cost a rate-limiter lookup or any work; a shed call did nothing
///    and may be retried;
/// 5. the rate limit per verified identity ([`IdentityKey`]): a device or
///    user over its quota gets RESOURCE_EXHAUSTED with RetryInfo;
/// 6. the service, which reads the identity from [`PeerInfo`].
///
/// There is no server-wide timeout layer: `PublishStream` is a long-lived
/// stream, and each handler bounds its own work (the gateway's publish
/// timeout, the reader's statement timeout and the caller's deadline).
pub fn server(limits: ServerLimits, edge: &Edge) -> VigilServer {
    let layers = tower::ServiceBuilder::new()
        .layer(RpcMetricsLayer::new(edge.rpc.clone()))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(limits.in_flight))
        .layer(edge.rate.clone())
        .into_inner();
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(limits.streams_per_connection))
        // Bounds what one connection may buffer before the service reads it.
        .initial_stream_window_size(Some(1024 * 1024))
        .initial_connection_window_size(Some(4 * 1024 * 1024))
        .max_frame_size(Some(64 * 1024))
        // Headers are a few hundred bytes; refuse megabytes of them.
        .http2_max_header_list_size(16 * 1024)
        // HTTP/2 "rapid reset": a client may not open and cancel streams
        // faster than they are served.
        .http2_max_pending_accept_reset_streams(Some(64))
        .load_shed(true)
        .concurrency_limit_per_connection(limits.streams_per_connection as usize)
        .layer(layers)
}

/// The caller's deadline from its `grpc-timeout` header (`<digits><unit>`,
/// unit one of H M S m u n), if it sent a valid one.
pub fn deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `grpc.reflection.v1` for every vigil package, or `None` (logged) if the
/// descriptor set cannot be served.
pub fn reflection() -> Option<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vigil_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| tracing::warn!(error = %e, "reflection disabled"))
        .ok()
}

/// An [`Edge`] with its listener bound: what the gateway and the reader
/// each hold until they serve.
pub struct BoundEdge {
    listener: TcpListener,
    edge: Edge,
}

impl BoundEdge {
    /// Binds the edge's listen address (port 0 picks a free one) and
    /// registers its call and TLS metrics.
    pub async fn bind(
        edge: Edge,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Self, crate::service::BindError> {
        let listener = crate::service::bind(edge.listen).await?;
        edge.rpc.register(metrics);
        edge.tls.register_metrics(metrics);
        Ok(Self { listener, edge })
    }

    /// `[("grpc", address)]`, for [`crate::service::Service::addresses`].
    pub fn addresses(&self) -> Vec<(&'static str, std::net::SocketAddr)> {
        self.listener
            .local_addr()
            .map(|a| vec![("grpc", a)])
            .unwrap_or_default()
    }

    /// The listener's TLS material, with its reload counters.
    pub fn tls(&self) -> Arc<ServerTls> {
        self.edge.tls.clone()
    }

    /// A server with the call pipeline in front (see [`server`]).
    pub fn server(&self, limits: ServerLimits) -> VigilServer {
        server(limits, &self.edge)
    }

    /// Serves `router` until `shutdown`, then drains in-flight calls for
    /// at most the grace period.
    pub async fn serve(
        self,
        router: Router<Stack<EdgeLayers, NoLayer>>,
        shutdown: &CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        serve_mtls(router, self.listener, &self.edge, shutdown).await
    }
}

/// Serves `router` on `listener` behind `edge` until `shutdown`, then
/// drains in-flight calls for at most the grace period.
async fn serve_mtls(
    router: Router<Stack<EdgeLayers, NoLayer>>,
    listener: TcpListener,
    edge: &Edge,
    shutdown: &CancellationToken,
) -> Result<(), tonic::transport::Error> {
    edge.tls.watch(edge.tls_reload, shutdown.clone());
    let incoming = crate::tls::incoming(
        listener,
        edge.tls.clone(),
        edge.allow.clone(),
        shutdown.clone(),
    );
    let serving = router.serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    crate::shutdown::drain_within(shutdown, serving)
        .await
        .unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeout_headers() {
        for (value, expected) in [
            ("250m", Some(Duration::from_millis(250))),
            ("3S", Some(Duration::from_secs(3))),
            ("2M", Some(Duration::from_secs(120))),
            ("1H", Some(Duration::from_secs(3600))),
            ("10u", Some(Duration::from_micros(10))),
            ("5n", Some(Duration::from_nanos(5))),
            ("5", None),
            ("m", None),
            ("12x", None),
            ("-1S", None),
            ("1234567890S", None),
        ] {
            let mut md = tonic::metadata::MetadataMap::new();
            if let Ok(v) = value.parse() {
                md.insert("grpc-timeout", v);
            }
            assert_eq!(deadline(&md), expected, "{value}");
        }
    }
}
