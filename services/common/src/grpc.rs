//! The one way vigil serves gRPC to the outside: mTLS connections from
//! [`crate::tls::incoming`], keepalive enforced, a cap on concurrent
//! streams per connection, server reflection (only to callers that passed
//! mTLS), and a drain bounded by [`crate::shutdown::GRACE_PERIOD`].

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Router;

/// A server with vigil's connection settings, ready for `add_service`.
pub fn server(max_concurrent_streams: u32) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(max_concurrent_streams))
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

/// Serves `router` on `listener` over mTLS until `shutdown`, then drains
/// in-flight calls for at most the grace period.
pub async fn serve_mtls(
    router: Router,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: &CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = crate::tls::incoming(listener, tls, shutdown.clone());
    let serving = router.serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    crate::shutdown::drain_within(shutdown, serving)
        .await
        .unwrap_or(Ok(()))
}
