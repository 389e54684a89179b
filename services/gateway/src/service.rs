//! `vigil.ingest.v1.IngestService`: who is calling (from the certificate),
//! per-event validation, and publishing before answering.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use vigil_common::error::ApiError;
use vigil_common::identity::{Identity, PeerInfo, Principal};
use vigil_proto::event::v1::SecurityEvent;
use vigil_proto::ingest::v1::ingest_service_server::IngestService;
use vigil_proto::ingest::v1::{
    PublishRequest, PublishResponse, PublishStreamRequest, PublishStreamResponse, Rejection,
};

use crate::publish;
use crate::validate::{self, Device, Limits};

#[derive(Clone)]
pub struct IngestApi {
    inner: Arc<Inner>,
}

struct Inner {
    js: async_nats::jetstream::Context,
    limits: Limits,
    max_batch_events: usize,
    publish_timeout: Duration,
    pseudonyms: Option<crate::pseudonym::Pseudonymiser>,
    metrics: crate::metrics::GatewayMetrics,
}

/// What one batch came to.
struct Outcome {
    accepted: u32,
    rejected: Vec<Rejection>,
}

impl IngestApi {
    pub fn new(
        js: async_nats::jetstream::Context,
        limits: Limits,
        max_batch_events: usize,
        publish_timeout: Duration,
        pseudonyms: Option<crate::pseudonym::Pseudonymiser>,
        metrics: crate::metrics::GatewayMetrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                js,
                limits,
                max_batch_events,
                publish_timeout,
                pseudonyms,
                metrics,
            }),
        }
    }

    async fn ingest(
        &self,
        device: &Device,
        events: Vec<SecurityEvent>,
    ) -> Result<Outcome, ApiError> {
        let inner = &self.inner;
        if events.is_empty() {
            return Err(ApiError::invalid(
                "events",
                "at least one event is required",
            ));
        }
        if events.len() > inner.max_batch_events {
            return Err(ApiError::invalid(
                "events",
                format!(
                    "{} events in one request; at most {}",
                    events.len(),
                    inner.max_batch_events
                ),
            ));
        }
        let metrics = &inner.metrics;
        metrics.batch_events.observe(events.len() as f64);
        let now = vigil_common::now_millis();
        let mut seen = HashSet::with_capacity(events.len());
        let mut accepted = Vec::with_capacity(events.len());
        let mut repeats = 0u32;
        let mut rejected = Vec::new();
        for (index, event) in events.into_iter().enumerate() {
            let sent_id: String = event.uid().chars().take(64).collect();
            match validate::validate(event, device, now, &inner.limits) {
                Ok(mut ok) => {
                    if let Some(p) = &inner.pseudonyms {
                        p.apply(&ok.tenant, &mut ok.event);
                    }
                    // The same id twice in one request is one event.
                    if seen.insert(ok.event.uid().to_owned()) {
                        accepted.push(ok);
                    } else {
                        repeats += 1;
                    }
                }
                Err(refusal) => {
                    metrics
                        .events
                        .with_label_values(&["rejected", refusal.code.as_str_name()])
                        .inc();
                    rejected.push(Rejection {
                        index: u32::try_from(index).unwrap_or(u32::MAX),
                        event_id: sent_id,
                        code: refusal.code as i32,
                        field: refusal.field.to_owned(),
                        reason: refusal.reason,
                    })
                }
            }
        }
        let count = u32::try_from(accepted.len()).unwrap_or(u32::MAX) + repeats;
        if !accepted.is_empty() {
            let valid = accepted.len() as u64;
            let batches = publish::group(accepted);
            let messages = batches.len() as u64;
            let start = std::time::Instant::now();
            let published = publish::publish_all(&inner.js, batches, inner.publish_timeout).await;
            let result = match &published {
                Ok(()) => "ok",
                Err(ApiError::ResourceExhausted { .. }) => "store_full",
                Err(_) => "unavailable",
            };
            metrics
                .publish_duration
                .with_label_values(&[result])
                .observe(start.elapsed().as_secs_f64());
            if let Err(error) = published {
                metrics
                    .published_messages
                    .with_label_values(&["failed"])
                    .inc_by(messages);
                metrics
                    .events
                    .with_label_values(&["unavailable", result])
                    .inc_by(valid + u64::from(repeats));
                return Err(error);
            }
            metrics
                .published_messages
                .with_label_values(&["ok"])
                .inc_by(messages);
            metrics
                .events
                .with_label_values(&["accepted", ""])
                .inc_by(valid);
            metrics.accepted_last_minute.add(valid);
            metrics
                .events
                .with_label_values(&["duplicate", ""])
                .inc_by(u64::from(repeats));
        }
        tracing::debug!(tenant = %device.tenant, device = %device.device, accepted = count, rejected = rejected.len(), "batch ingested");
        Ok(Outcome {
            accepted: count,
            rejected,
        })
    }
}

/// The calling device, from the certificate the TLS layer verified.
fn caller_device<T>(request: &Request<T>) -> Result<Device, ApiError> {
    let info = request
        .extensions()
        .get::<PeerInfo>()
        .ok_or_else(|| ApiError::Unauthenticated("no verified client certificate".into()))?;
    match &info.identity {
        Ok(Identity {
            principal: Principal::Device { tenant, device },
            ..
        }) => Ok(Device {
            tenant: tenant.clone(),
            device: device.clone(),
        }),
        Ok(other) => Err(ApiError::PermissionDenied(format!(
            "{other} is not a device; only devices may publish"
        ))),
        Err(e) => Err(ApiError::Unauthenticated(e.to_string())),
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<PublishStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl IngestService for IngestApi {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let device = caller_device(&request)?;
        let outcome = self.ingest(&device, request.into_inner().events).await?;
        Ok(Response::new(PublishResponse {
            accepted: outcome.accepted,
            rejected: outcome.rejected,
        }))
    }

    type PublishStreamStream = ResponseStream;

    async fn publish_stream(
        &self,
        request: Request<Streaming<PublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let device = caller_device(&request)?;
        let mut inbound = request.into_inner();
        // One batch at a time, acked in order; a small buffer so a slow
        // reader of acks pushes back on the device.
        let (tx, rx) = mpsc::channel(4);
        let api = self.clone();
        tokio::spawn(async move {
            let mut received = 0u64;
            loop {
                let next = match inbound.message().await {
                    Ok(Some(next)) => next,
                    Ok(None) if received == 0 => {
                        // Also what tonic reports for a stream whose only
                        // frame was cut after its length prefix.
                        let _ = tx
                            .send(Err(ApiError::invalid(
                                "stream",
                                "the stream ended before its first complete batch",
                            )
                            .into()))
                            .await;
                        break;
                    }
                    Ok(None) => break,
                    Err(status) => {
                        // A malformed or oversized frame ends the stream
                        // with a status that says so (a client that went
                        // away never reads it); batches before it were
                        // answered.
                        tracing::debug!(%status, "publish stream read failed");
                        let _ = tx
                            .send(Err(ApiError::invalid(
                                "stream",
                                format!("cannot read the next batch: {}", status.message()),
                            )
                            .into()))
                            .await;
                        break;
                    }
                };
                received += 1;
                let reply = match api.ingest(&device, next.events).await {
                    Ok(outcome) => Ok(PublishStreamResponse {
                        batch_seq: next.batch_seq,
                        accepted: outcome.accepted,
                        rejected: outcome.rejected,
                    }),
                    // The stream ends with the error: batches after this one
                    // were not looked at, and the device resends from here.
                    Err(error) => Err(Status::from(error)),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
