//! Connecting to NATS as a service's own user: TLS with the service's client
//! certificate (nats-server maps its URI SAN to the user), and the service's
//! own inbox prefix.

use std::time::Duration;

use crate::config::NatsSettings;

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
    async_nats::ConnectOptions::new()
        .name(name)
        .require_tls(true)
        .add_root_certificates(settings.ca.clone())
        .add_client_certificate(settings.cert.clone(), settings.key.clone())
        .custom_inbox_prefix(&settings.inbox_prefix)
        .connection_timeout(Duration::from_secs(5))
        .connect(settings.url.as_str())
        .await
        .map_err(|source| NatsConnectError {
            url: settings.url.clone(),
            source,
        })
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

/// How a consumer groups pulled messages: at most `max_messages`, and no
/// message waits longer than `max_wait` for the batch to fill.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_messages: usize,
    pub max_wait: Duration,
}

/// Completes a batch that starts with `first`: takes more messages from
/// `messages` until the batch is full or `max_wait` has passed.
pub async fn fill_batch(
    first: async_nats::jetstream::Message,
    messages: &mut async_nats::jetstream::consumer::pull::Stream,
    batching: Batching,
) -> Vec<async_nats::jetstream::Message> {
    use futures::StreamExt;
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + batching.max_wait;
    while batch.len() < batching.max_messages {
        match tokio::time::timeout_at(deadline, messages.next()).await {
            Ok(Some(Ok(m))) => batch.push(m),
            Ok(Some(Err(error))) => tracing::warn!(%error, "pull stream error"),
            Ok(None) | Err(_) => break,
        }
    }
    batch
}
