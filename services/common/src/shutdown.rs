//! Turning SIGINT/SIGTERM into a [`CancellationToken`] every task watches.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received, draining");
        cancel.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How long a service may drain after a shutdown signal before it stops
/// waiting for in-flight work (Kubernetes' default termination grace is
/// 30 s; this leaves room).
pub const GRACE_PERIOD: std::time::Duration = std::time::Duration::from_secs(20);

/// How long a stopping service waits to flush NATS.
pub const FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `serve` (which stops accepting and drains when `shutdown` fires)
/// but gives up waiting [`GRACE_PERIOD`] after the signal. Returns `None`
/// when the grace period ran out.
pub async fn drain_within<F: std::future::Future>(
    shutdown: &CancellationToken,
    serve: F,
) -> Option<F::Output> {
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(GRACE_PERIOD).await;
    };
    tokio::select! {
        output = serve => Some(output),
        () = deadline => {
            tracing::warn!(grace = ?GRACE_PERIOD, "drain did not finish within the grace period; stopping");
            None
        }
    }
}
