//! `grpc.health.v1` on its own plaintext port: Kubernetes' gRPC probe (and
//! any load balancer) cannot present a client certificate. Service name `""`
//! means the process is alive; each service's full name means ready.

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;

/// Serves health on `listener` until `shutdown`; returns the reporter the
/// service uses to flip its readiness.
pub fn serve(
    listener: TcpListener,
    shutdown: CancellationToken,
) -> (HealthReporter, JoinHandle<()>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let task = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                shutdown.cancelled_owned(),
            )
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "health server failed");
        }
    });
    (reporter, task)
}
