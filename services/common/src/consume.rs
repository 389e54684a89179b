//! The one pull loop every JetStream consumer in vigil runs (the writer's
//! sinks, each correlator partition).
//!
//! [`pull`] spawns a task that owns the pull subscription of one durable
//! consumer: it asks for up to [`PULL_BATCH`] messages at a time with
//! heartbeats (a silent server is noticed in [`HEARTBEAT`] × 2) and an
//! expiry (each pull request is renewed every [`EXPIRES`]), groups what
//! arrives into batches by count and age ([`Batching`]), and hands each
//! complete batch over a channel. When the subscription fails it is
//! re-created with exponential backoff; on `stop` the task ends and the
//! channel closes. Receiving from the channel is cancel-safe, so a caller
//! can `select!` over it and other events (the correlator's SIGHUP and
//! idle ticks) without losing a message.
//!
//! Messages are only ever acked by the caller: a batch dropped unacked
//! (shutdown, crash) is redelivered after the consumer's `ack_wait`.

use std::time::Duration;

use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How many messages one pull request asks for.
pub const PULL_BATCH: usize = 1000;
/// How often the server sends an idle heartbeat on a pull request.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long one pull request lives before it is renewed.
pub const EXPIRES: Duration = Duration::from_secs(30);
/// First and largest delay before re-creating a failed subscription.
pub const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// How a consumer groups pulled messages: at most `max_messages`, and no
/// message waits longer than `max_wait` for the batch to fill.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_messages: usize,
    pub max_wait: Duration,
}

/// Pulls from `consumer` until `stop`, yielding complete batches.
pub fn pull(
    consumer: PullConsumer,
    batching: Batching,
    stop: CancellationToken,
) -> mpsc::Receiver<Vec<Message>> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut backoff = BACKOFF.0;
        while !stop.is_cancelled() {
            let mut messages = match subscribe(&consumer).await {
                Ok(m) => m,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "cannot pull from jetstream");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF.1);
                    continue;
                }
            };
            backoff = BACKOFF.0;
            loop {
                // Wait for the first message of a batch...
                let first = tokio::select! {
                    () = stop.cancelled() => return,
                    next = messages.next() => next,
                };
                let first = match first {
                    Some(Ok(m)) => m,
                    Some(Err(error)) => {
                        tracing::warn!(%error, "pull stream error");
                        continue;
                    }
                    // The subscription ended: make a new one.
                    None => break,
                };
                // ...then take more until the batch is full or old enough.
                let batch = fill_batch(first, &mut messages, batching).await;
                tokio::select! {
                    () = stop.cancelled() => return,
                    sent = tx.send(batch) => if sent.is_err() { return },
                }
            }
        }
    });
    rx
}

async fn subscribe(
    consumer: &PullConsumer,
) -> Result<
    async_nats::jetstream::consumer::pull::Stream,
    async_nats::jetstream::consumer::StreamError,
> {
    consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .heartbeat(HEARTBEAT)
        .expires(EXPIRES)
        .messages()
        .await
}

/// Completes a batch that starts with `first`: takes more messages from
/// `messages` until the batch is full or `max_wait` has passed.
async fn fill_batch<T, S, E>(first: T, messages: &mut S, batching: Batching) -> Vec<T>
where
    S: futures::Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Display,
{
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    fn batching(max_messages: usize, max_wait_ms: u64) -> Batching {
        Batching {
            max_messages,
            max_wait: Duration::from_millis(max_wait_ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_closes_when_full() {
        let mut rest = futures::stream::iter((2..10).map(Ok::<_, Infallible>));
        let batch = fill_batch(1, &mut rest, batching(4, 100)).await;
        assert_eq!(batch, vec![1, 2, 3, 4]);
        // What was not taken stays for the next batch.
        assert_eq!(rest.next().await.map(Result::ok), Some(Some(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_closes_when_its_first_message_is_max_wait_old() {
        // Messages every 30 ms: a 100 ms batch takes the first and three more.
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            for n in 2..20 {
                tokio::time::sleep(Duration::from_millis(30)).await;
                if tx.send(Ok::<_, Infallible>(n)).await.is_err() {
                    break;
                }
            }
        });
        let mut rest = tokio_stream::wrappers::ReceiverStream::new(rx);
        let start = tokio::time::Instant::now();
        let batch = fill_batch(1, &mut rest, batching(1000, 100)).await;
        assert_eq!(batch, vec![1, 2, 3, 4]);
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn an_ended_stream_closes_the_batch_at_once() {
        let mut rest = futures::stream::iter([Ok::<_, &str>(2), Err("gap"), Ok(3)]);
        let batch = fill_batch(1, &mut rest, batching(10, 100)).await;
        assert_eq!(batch, vec![1, 2, 3], "an error item is skipped, not fatal");
    }
}
