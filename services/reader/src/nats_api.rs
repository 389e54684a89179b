//! `query.events` over NATS request/reply: a `ListEventsRequest` in, a
//! `ListEventsResponse` out, for NATS-native clients. Errors come back as an
//! empty payload with `Nats-Service-Error` (reason) and
//! `Nats-Service-Error-Code` (HTTP-style code), as NATS micro services do.
//! Who may ask is decided by NATS permissions (only users allowed to
//! publish `query.events`).

use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use vigil_common::error::ApiError;
use vigil_common::subjects::{
    MESSAGE_TYPE_HEADER, PROTOBUF_CONTENT_TYPE, QUERY_EVENTS, QUERY_QUEUE_GROUP,
    SERVICE_ERROR_CODE_HEADER, SERVICE_ERROR_HEADER,
};
use vigil_proto::query::v1::ListEventsRequest;

use crate::audit::Auditor;
use crate::query::{self, Caller, Db, EventQuery, TenantScope};

/// How NATS callers are named in page tokens and the audit trail; who they
/// are is NATS's business (only users allowed to publish `query.events`).
pub const NATS_CALLER: &str = "nats:query.events";

/// Subscribes (queue group `reader`) and answers until `shutdown`.
pub async fn serve(
    nats: async_nats::Client,
    db: Arc<Db>,
    audit: Auditor,
    shutdown: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let mut requests = nats
        .queue_subscribe(QUERY_EVENTS, QUERY_QUEUE_GROUP.to_owned())
        .await?;
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => break,
            m = requests.next() => match m { Some(m) => m, None => break },
        };
        let Some(reply) = message.reply.clone() else {
            continue;
        };
        let nats = nats.clone();
        let db = db.clone();
        let audit = audit.clone();
        tasks.spawn(async move {
            let (payload, headers) = match answer(&db, &audit, &message.payload).await {
                Ok(payload) => {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Content-Type", PROTOBUF_CONTENT_TYPE);
                    headers.insert(MESSAGE_TYPE_HEADER, "vigil.query.v1.ListEventsResponse");
                    (payload, headers)
                }
                Err(error) => {
                    let (code, reason) = error.nats_reply();
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(SERVICE_ERROR_HEADER, reason.as_str());
                    headers.insert(SERVICE_ERROR_CODE_HEADER, code.to_string().as_str());
                    (Bytes::new(), headers)
                }
            };
            if let Err(error) = nats.publish_with_headers(reply, headers, payload).await {
                tracing::warn!(%error, "cannot reply to query.events request");
            }
        });
    }
    let _ = requests.unsubscribe().await;
    tasks.close();
    tasks.wait().await;
    Ok(())
}

async fn answer(db: &Db, audit: &Auditor, payload: &[u8]) -> Result<Bytes, ApiError> {
    let caller = Caller {
        name: NATS_CALLER.to_owned(),
        scope: TenantScope::All,
    };
    let request = ListEventsRequest::decode(payload)
        .map_err(|_| ApiError::invalid("request", "not a vigil.query.v1.ListEventsRequest"));
    let filter = match &request {
        Ok(r) => crate::audit::list_events_filter(r),
        Err(_) => serde_json::json!({ "undecodable": true }),
    };
    let result = async {
        let query = EventQuery::parse(&request?, &db.tokens, &caller.name)?;
        query::list_events(db, &caller, None, &query).await
    }
    .await;
    let response = audit
        .seal(&caller.name, "nats:query.events", filter, result, |r| {
            r.events.len()
        })
        .await?;
    Ok(Bytes::from(response.encode_to_vec()))
}
