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

/// How often [`watch_lag`] asks JetStream for consumer and stream state.
pub const LAG_INTERVAL: Duration = Duration::from_secs(2);

/// Reports, every [`LAG_INTERVAL`] until `stop`, each of `consumers`'
/// state from consumer info (`(stream, consumer)`, as the service's NATS
/// user may read them) and each of `streams`' depth from stream info, as
/// `vigil_nats_consumer_pending_messages`, `..._ack_pending_messages`,
/// `..._redelivered_messages`, `..._delivered_stream_sequence` and
/// `vigil_nats_stream_messages`. A failed read leaves the last value and
/// counts `vigil_nats_info_failures_total`.
pub fn watch_lag(
    js: async_nats::jetstream::Context,
    consumers: Vec<(String, String)>,
    streams: Vec<String>,
    metrics: &crate::metrics::Metrics,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    use crate::metrics::{counter, gauge_vec};
    let labels = &["stream", "consumer"];
    let pending = gauge_vec(
        "vigil_nats_consumer_pending_messages",
        "Messages on the stream not yet delivered to the consumer (consumer info num_pending).",
        labels,
    );
    let ack_pending = gauge_vec(
        "vigil_nats_consumer_ack_pending_messages",
        "Messages delivered to the consumer and not yet acknowledged.",
        labels,
    );
    let redelivered = gauge_vec(
        "vigil_nats_consumer_redelivered_messages",
        "Messages delivered more than once and not yet acknowledged.",
        labels,
    );
    let delivered = gauge_vec(
        "vigil_nats_consumer_delivered_stream_sequence",
        "Stream sequence of the last message delivered to the consumer.",
        labels,
    );
    let depth = gauge_vec(
        "vigil_nats_stream_messages",
        "Messages stored in the stream (DLQ depth for DLQ).",
        &["stream"],
    );
    let failures = counter(
        "vigil_nats_info_failures_total",
        "Consumer or stream info requests that failed (the last values stay).",
    );
    for m in [&pending, &ack_pending, &redelivered, &delivered] {
        metrics.register(m.clone());
    }
    metrics.register(depth.clone());
    metrics.register(failures.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LAG_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            for (stream, consumer) in &consumers {
                let got = tokio::time::timeout(
                    crate::readiness::PROBE_TIMEOUT,
                    js.get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                        consumer.as_str(),
                        stream.as_str(),
                    ),
                )
                .await;
                let Ok(Ok(c)) = got else {
                    failures.inc();
                    continue;
                };
                let info = c.cached_info();
                let l = &[stream.as_str(), consumer.as_str()];
                pending.with_label_values(l).set(info.num_pending as f64);
                ack_pending
                    .with_label_values(l)
                    .set(info.num_ack_pending as f64);
                redelivered
                    .with_label_values(l)
                    .set(info.num_redelivered as f64);
                delivered
                    .with_label_values(l)
                    .set(info.delivered.stream_sequence as f64);
            }
            for stream in &streams {
                let got =
                    tokio::time::timeout(crate::readiness::PROBE_TIMEOUT, js.get_stream(stream))
                        .await;
                let Ok(Ok(s)) = got else {
                    failures.inc();
                    continue;
                };
                depth
                    .with_label_values(&[stream.as_str()])
                    .set(s.cached_info().state.messages as f64);
            }
        }
    })
}
