//! Making accepted events durable: grouping them into `EventBatch` messages
//! (one per tenant and class, split to stay under the NATS payload limit),
//! each with a `Nats-Msg-Id` derived from the event ids it carries, and
//! waiting for JetStream to acknowledge every one.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use prost::Message;
use sha2::{Digest, Sha256};
use vigil_common::error::ApiError;
use vigil_common::subjects::{self, MESSAGE_TYPE_HEADER, PROTOBUF_CONTENT_TYPE};
use vigil_proto::event::v1::EventBatch;

use crate::validate::AcceptedEvent;

/// Batches stay under this many encoded bytes (nats-server's default
/// `max_payload` is 1 MiB; headers and framing need the rest).
pub const MAX_BATCH_BYTES: usize = 768 * 1024;

/// One message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingBatch {
    pub subject: String,
    pub msg_id: String,
    pub batch: EventBatch,
}

/// Groups accepted events by tenant and class, in first-seen order within a
/// group, splitting groups that would exceed [`MAX_BATCH_BYTES`]. The same
/// request always yields the same batches and message ids, so a retried
/// request is deduplicated by JetStream.
pub fn group(events: Vec<AcceptedEvent>) -> Vec<OutgoingBatch> {
    let mut groups: BTreeMap<(String, i32), Vec<Vec<vigil_proto::event::v1::SecurityEvent>>> =
        BTreeMap::new();
    let mut sizes: BTreeMap<(String, i32), usize> = BTreeMap::new();
    for accepted in events {
        let key = (accepted.tenant, accepted.class_uid);
        let len = accepted.event.encoded_len() + 8;
        let chunks = groups.entry(key.clone()).or_default();
        let size = sizes.entry(key).or_default();
        if chunks.is_empty() || *size + len > MAX_BATCH_BYTES {
            chunks.push(Vec::new());
            *size = 0;
        }
        *size += len;
        if let Some(last) = chunks.last_mut() {
            last.push(accepted.event);
        }
    }
    groups
        .into_iter()
        .flat_map(|((tenant, class_uid), chunks)| {
            let subject = subjects::events_subject(&tenant, class_uid);
            chunks.into_iter().map(move |events| OutgoingBatch {
                subject: subject.clone(),
                msg_id: batch_msg_id(&subject, events.iter().map(|e| e.uid())),
                batch: EventBatch { events },
            })
        })
        .collect()
}

/// `Nats-Msg-Id` of a batch: a hash of its subject and its event ids.
pub fn batch_msg_id<'a>(subject: &str, event_ids: impl Iterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(subject.as_bytes());
    for id in event_ids {
        hasher.update(b"\n");
        hasher.update(id.as_bytes());
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("eb-{hex}")
}

/// Publishes every batch and waits until JetStream has acknowledged all of
/// them (or `timeout` passes: then the outcome is unknown and the device
/// must retry with the same ids, which JetStream deduplicates).
pub async fn publish_all(
    js: &async_nats::jetstream::Context,
    batches: Vec<OutgoingBatch>,
    timeout: Duration,
) -> Result<(), ApiError> {
    let work = async {
        let mut acks = Vec::with_capacity(batches.len());
        for out in batches {
            let publish = PublishMessage::build()
                .payload(Bytes::from(out.batch.encode_to_vec()))
                .message_id(&out.msg_id)
                .header("Content-Type", PROTOBUF_CONTENT_TYPE)
                .header(MESSAGE_TYPE_HEADER, "vigil.event.v1.EventBatch");
            let ack = js
                .send_publish(out.subject, publish)
                .await
                .map_err(publish_error)?;
            acks.push(ack.into_future());
        }
        for result in futures::future::join_all(acks).await {
            result.map_err(publish_error)?;
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::Unavailable {
            reason: "jetstream did not acknowledge in time; outcome unknown, retry with the same event ids".into(),
            retry_after: Duration::from_secs(1),
        }),
    }
}

fn publish_error(error: async_nats::jetstream::context::PublishError) -> ApiError {
    if is_store_full(&error) {
        // JetStream refuses new messages when EVENTS is at its limits
        // (discard policy `new`): back-pressure to the device.
        return ApiError::ResourceExhausted {
            reason: "event store is full; retry later".into(),
            retry_after: Duration::from_secs(5),
        };
    }
    match error.kind() {
        PublishErrorKind::TimedOut => ApiError::Unavailable {
            reason: "jetstream did not acknowledge in time; outcome unknown, retry with the same event ids".into(),
            retry_after: Duration::from_secs(1),
        },
        _ => {
            tracing::warn!(%error, "publish to jetstream failed");
            ApiError::Unavailable {
                reason: "event store unavailable; nothing was acknowledged, retry with the same event ids".into(),
                retry_after: Duration::from_secs(1),
            }
        }
    }
}

/// Whether JetStream refused a publish because the stream (or the
/// account's storage) is full. async-nats gives no kind for it, so this
/// reads the JetStream API error the ack carried: the resource-limit codes
/// (10023, 10047), or 10077 "stream store failed" whose description is the
/// file store's `maximum bytes exceeded` / `maximum messages exceeded` (the
/// one case where only the text tells).
pub fn is_store_full(error: &async_nats::jetstream::context::PublishError) -> bool {
    use async_nats::jetstream::ErrorCode;
    const STREAM_STORE_FAILED: ErrorCode = ErrorCode(10077);
    let Some(api) = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
    else {
        return false;
    };
    match api.error_code() {
        ErrorCode::INSUFFICIENT_RESOURCES | ErrorCode::STORAGE_RESOURCES_EXCEEDED => true,
        STREAM_STORE_FAILED => api.to_string().contains("maximum"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::event::v1::SecurityEvent;

    fn accepted(tenant: &str, class_uid: i32, n: usize) -> AcceptedEvent {
        AcceptedEvent {
            tenant: tenant.into(),
            class_uid,
            event: SecurityEvent {
                metadata: Some(vigil_proto::event::v1::Metadata {
                    uid: format!("id-{tenant}-{class_uid}-{n}"),
                    ..Default::default()
                }),
                class_uid,
                message: "m".repeat(1000),
                ..Default::default()
            },
        }
    }

    #[test]
    fn groups_by_tenant_and_class_with_stable_ids() {
        let events = vec![
            accepted("acme", 3002, 1),
            accepted("globex", 3002, 2),
            accepted("acme", 3002, 3),
            accepted("acme", 1007, 4),
        ];
        let first = group(events.clone());
        assert_eq!(
            first
                .iter()
                .map(|b| (b.subject.as_str(), b.batch.events.len()))
                .collect::<Vec<_>>(),
            vec![
                ("events.acme.1007", 1),
                ("events.acme.3002", 2),
                ("events.globex.3002", 1)
            ]
        );
        assert_eq!(first, group(events), "same request, same batches and ids");
        let ids: std::collections::HashSet<_> = first.iter().map(|b| &b.msg_id).collect();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn a_full_store_is_told_by_its_jetstream_error_code() -> Result<(), serde_json::Error> {
        use async_nats::jetstream::context::PublishError;
        let refusal = |json: &str| -> Result<PublishError, serde_json::Error> {
            let api: async_nats::jetstream::Error = serde_json::from_str(json)?;
            Ok(PublishError::with_source(PublishErrorKind::Other, api))
        };
        for (json, full) in [
            (
                r#"{"code":503,"err_code":10077,"description":"maximum bytes exceeded"}"#,
                true,
            ),
            (
                r#"{"code":503,"err_code":10077,"description":"maximum messages exceeded"}"#,
                true,
            ),
            (
                r#"{"code":500,"err_code":10047,"description":"insufficient storage resources available"}"#,
                true,
            ),
            (
                r#"{"code":503,"err_code":10077,"description":"disk I/O error"}"#,
                false,
            ),
            (
                r#"{"code":400,"err_code":10071,"description":"wrong last sequence: 1"}"#,
                false,
            ),
        ] {
            assert_eq!(is_store_full(&refusal(json)?), full, "{json}");
        }
        assert!(!is_store_full(&PublishError::new(
            PublishErrorKind::TimedOut
        )));
        Ok(())
    }

    #[test]
    fn splits_batches_over_the_size_limit() {
        let events: Vec<_> = (0..2000).map(|n| accepted("acme", 3002, n)).collect();
        let batches = group(events);
        assert!(batches.len() >= 3);
        assert!(
            batches
                .iter()
                .all(|b| b.batch.encoded_len() <= MAX_BATCH_BYTES)
        );
        assert_eq!(
            batches.iter().map(|b| b.batch.events.len()).sum::<usize>(),
            2000
        );
    }
}
