//! Connecting to NATS as a service's own user: TLS with the service's client
//! certificate (nats-server maps its URI SAN to the user), and the service's
//! own inbox prefix.

use std::time::Duration;

use async_nats::Event;

use crate::config::NatsSettings;
use crate::readiness::Dependency;

#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}: {source}")]
pub struct NatsConnectError {
    url: String,
    #[source]
    source: async_nats::ConnectError,
}

/// Connects, failing if the server is not reachable now (start-up should
/// fail loudly, not hang). Later disconnects are retried by async-nats.
pub async fn connect(
    settings: &NatsSettings,
    name: &str,
) -> Result<async_nats::Client, NatsConnectError> {
    connect_reporting(settings, name, None).await
}

/// [`connect`], and `dependency` follows the connection: down on every
/// disconnect, up on every (re)connect, as async-nats reports them.
async fn connect_reporting(
    settings: &NatsSettings,
    name: &str,
    dependency: Option<Dependency>,
) -> Result<async_nats::Client, NatsConnectError> {
    let events = dependency.clone();
    let client = async_nats::ConnectOptions::new()
        .event_callback(move |event| {
            let dependency = events.clone();
            async move {
                match (&event, &dependency) {
                    (Event::Connected, Some(d)) => d.up(),
                    (Event::Disconnected | Event::Closed, Some(d)) => d.down(),
                    _ => {}
                }
                match event {
                    Event::Connected => tracing::info!("nats connected"),
                    Event::Disconnected => tracing::warn!("nats disconnected; reconnecting"),
                    other => tracing::info!(event = %other, "nats event"),
                }
            }
        })
        // async-nats backs off up to 4 s between attempts; a service is
        // unready while disconnected, so come back within a second of the
        // server's return.
        .reconnect_delay_callback(reconnect_delay)
        .name(name)
        .require_tls(true)
        .add_root_certificates(settings.ca.clone())
        .add_client_certificate(settings.cert.clone(), settings.key.clone())
        .custom_inbox_prefix(&settings.inbox_prefix)
        .connection_timeout(Duration::from_secs(5))
        .connect(settings.url.split(',').collect::<Vec<_>>())
        .await
        .map_err(|source| NatsConnectError {
            url: settings.url.clone(),
            source,
        })?;
    if let Some(d) = dependency
        && client.connection_state() == async_nats::connection::State::Connected
    {
        d.up();
    }
    Ok(client)
}

/// The longest wait between two reconnect attempts.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Delay before reconnect attempt `attempts`: at once, then doubling from
/// 2 ms up to [`MAX_RECONNECT_DELAY`].
pub fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exponent = u32::try_from(attempts - 1).unwrap_or(u32::MAX).min(20);
    Duration::from_millis(2u64.saturating_pow(exponent)).min(MAX_RECONNECT_DELAY)
}

/// [`connect_reporting`] for a service whose hard dependency is JetStream:
/// declares `jetstream` on `readiness` and keeps it in step with the
/// connection.
pub async fn connect_ready(
    settings: &NatsSettings,
    name: &str,
    readiness: &crate::readiness::Readiness,
) -> Result<async_nats::Client, NatsConnectError> {
    connect_reporting(settings, name, Some(readiness.dependency("jetstream"))).await
}

/// Flushes what the client has buffered, giving up after `limit` (on
/// shutdown NATS may already be gone; a service must still exit).
pub async fn flush_within(client: &async_nats::Client, limit: Duration) {
    match tokio::time::timeout(limit, client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "nats flush on shutdown failed"),
        Err(_) => tracing::warn!(?limit, "nats flush on shutdown timed out"),
    }
}
