//! The library device makers embed: publishing with retries that never
//! duplicate, and a bounded buffer that batches.
//!
//! ```no_run
//! use vigil_client::{TlsFiles, device::{Batcher, BatchOptions, DeviceClient, RetryPolicy}, events};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let files = TlsFiles { ca: "ca.crt".into(), cert: "device.crt".into(), key: "device.key".into() };
//! let client = DeviceClient::connect("https://gateway:4443", &files, RetryPolicy::default()).await?;
//! let batcher = Batcher::spawn(client, BatchOptions::default());
//! let now = chrono::Utc::now().timestamp_millis();
//! let mut failed_login = events::base(3002, 1, vigil_proto::event::v1::SeverityId::High, now, "bad password for root");
//! failed_login.status_id = vigil_proto::event::v1::StatusId::Failure as i32;
//! batcher.send(failed_login).await?;           // waits if the buffer is full
//! let report = batcher.close().await;           // flushes and reports
//! println!("{} accepted, {} rejected", report.accepted, report.rejected.len());
//! # Ok(()) }
//! ```
//!
//! Guarantees: an event is retried with the same `event_id`, so the gateway
//! and the writer store it once however often it is sent; an OK means the
//! event is durable; an event whose retries ran out is reported as
//! *unknown* (it may or may not be stored), never silently dropped.

use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use vigil_proto::event::v1::SecurityEvent;
use vigil_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use vigil_proto::ingest::v1::{PublishRequest, PublishResponse, Rejection};

use crate::{ClientError, TlsFiles};

/// How long and how often to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Give up (outcome unknown) after retrying this long.
    pub max_elapsed: Duration,
    /// Deadline of one attempt.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(120),
            attempt_timeout: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The gateway refused the request itself (not retryable: fix it).
    #[error("refused: {0}")]
    Refused(tonic::Status),
    /// Retries ran out; the events may or may not be stored. Sending them
    /// again later (same ids) is safe.
    #[error("gave up after {attempts} attempts, outcome unknown: {last}")]
    Unknown { attempts: u32, last: tonic::Status },
}

/// Codes after which the same request may be sent again: the gateway did
/// not answer OK, and resending the same event ids cannot duplicate.
pub fn is_retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Unknown
            | Code::Cancelled
    )
}

/// A device's connection to the gateway.
#[derive(Clone)]
pub struct DeviceClient {
    client: IngestServiceClient<Channel>,
    policy: RetryPolicy,
}

impl DeviceClient {
    /// Connects now (so a wrong address or certificate fails here, named);
    /// later the channel reconnects by itself.
    pub async fn connect(
        addr: &str,
        files: &TlsFiles,
        policy: RetryPolicy,
    ) -> Result<Self, ClientError> {
        Ok(Self::from_channel(
            crate::connect(addr, files).await?,
            policy,
        ))
    }

    pub fn from_channel(channel: Channel, policy: RetryPolicy) -> Self {
        Self {
            client: IngestServiceClient::new(channel),
            policy,
        }
    }

    /// Publishes `events` once they are durable, retrying the identical
    /// request on UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED and
    /// broken connections, with exponential backoff and full jitter, waiting
    /// at least what the gateway's RetryInfo asks.
    pub async fn publish(
        &mut self,
        events: Vec<SecurityEvent>,
    ) -> Result<PublishResponse, PublishError> {
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let mut request = tonic::Request::new(PublishRequest {
                events: events.clone(),
            });
            request.set_timeout(self.policy.attempt_timeout);
            let result = match tokio::time::timeout(
                self.policy.attempt_timeout,
                self.client.publish(request),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(tonic::Status::deadline_exceeded(
                    "no answer within the attempt timeout",
                )),
            };
            let status = match result {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if is_retryable(&status) => status,
                Err(status) => return Err(PublishError::Refused(status)),
            };
            let delay = self.delay(attempts, &status);
            if started.elapsed() + delay > self.policy.max_elapsed {
                return Err(PublishError::Unknown {
                    attempts,
                    last: status,
                });
            }
            tokio::time::sleep(delay).await;
        }
    }

    fn delay(&self, attempt: u32, status: &tonic::Status) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let ceiling = self
            .policy
            .initial_backoff
            .saturating_mul(1 << exponent)
            .min(self.policy.max_backoff);
        let jittered = ceiling.mul_f64(rand::rng().random_range(0.0..=1.0));
        let asked = status
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay)
            .unwrap_or_default();
        jittered.max(asked.min(self.policy.max_backoff))
    }
}

/// How a [`Batcher`] groups events.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Events per request.
    pub max_batch: usize,
    /// Send a partial batch after waiting this long.
    pub linger: Duration,
    /// Events held in memory; `send` waits when it is full.
    pub capacity: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            max_batch: 100,
            linger: Duration::from_millis(200),
            capacity: 10_000,
        }
    }
}

/// What a [`Batcher`] did, reported when it is closed.
#[derive(Debug, Default)]
pub struct BatchReport {
    pub accepted: u64,
    pub rejected: Vec<Rejection>,
    /// Events whose outcome is unknown (retries ran out); resend them.
    pub unknown: Vec<SecurityEvent>,
    /// Events the gateway refused as a request (e.g. identity refused).
    pub refused: Vec<SecurityEvent>,
}

/// A bounded buffer in front of a [`DeviceClient`]: events go in one at a
/// time, batches go out, one request in flight (so order is kept).
pub struct Batcher {
    tx: mpsc::Sender<SecurityEvent>,
    task: JoinHandle<BatchReport>,
}

/// The event given back because the batcher has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the batcher has stopped")]
pub struct Closed(pub Box<SecurityEvent>);

/// The event given back by [`Batcher::try_send`].
#[derive(Debug, thiserror::Error)]
pub enum TrySendError {
    #[error("the buffer is full")]
    Full(Box<SecurityEvent>),
    #[error("the batcher has stopped")]
    Closed(Box<SecurityEvent>),
}

impl Batcher {
    pub fn spawn(mut client: DeviceClient, options: BatchOptions) -> Self {
        let (tx, mut rx) = mpsc::channel::<SecurityEvent>(options.capacity.max(1));
        let task = tokio::spawn(async move {
            let mut report = BatchReport::default();
            let mut open = true;
            while open {
                let Some(first) = rx.recv().await else { break };
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + options.linger;
                while batch.len() < options.max_batch {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(event)) => batch.push(event),
                        Ok(None) => {
                            open = false;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                match client.publish(batch.clone()).await {
                    Ok(response) => {
                        report.accepted += u64::from(response.accepted);
                        report.rejected.extend(response.rejected);
                    }
                    Err(PublishError::Unknown { .. }) => report.unknown.extend(batch),
                    Err(PublishError::Refused(_)) => report.refused.extend(batch),
                }
            }
            report
        });
        Self { tx, task }
    }

    /// Queues an event, waiting while the buffer is full (back-pressure).
    pub async fn send(&self, event: SecurityEvent) -> Result<(), Closed> {
        self.tx.send(event).await.map_err(|e| Closed(Box::new(e.0)))
    }

    /// Queues an event if there is room; gives it back if not.
    pub fn try_send(&self, event: SecurityEvent) -> Result<(), TrySendError> {
        self.tx.try_send(event).map_err(|e| match e {
            mpsc::error::TrySendError::Full(e) => TrySendError::Full(Box::new(e)),
            mpsc::error::TrySendError::Closed(e) => TrySendError::Closed(Box::new(e)),
        })
    }

    /// Sends what is buffered and reports.
    pub async fn close(self) -> BatchReport {
        drop(self.tx);
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_codes_are_the_ones_that_leave_the_outcome_open() {
        for code in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
        ] {
            assert!(is_retryable(&tonic::Status::new(code, "")));
        }
        for code in [
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::Unauthenticated,
        ] {
            assert!(!is_retryable(&tonic::Status::new(code, "")));
        }
    }
}
