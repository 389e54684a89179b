//! `query.events` over NATS request/reply: a `ListEventsRequest` in, a
//! `ListEventsResponse` out, for NATS-native clients. Errors come back as an
//! empty payload with `Nats-Service-Error` (reason) and
//! `Nats-Service-Error-Code` (HTTP-style code), as NATS micro services do.
//! Who may ask is decided by NATS permissions (only users allowed to
//! publish `query.events`).

use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use vigil_common::error::ApiError;
use vigil_common::subjects::{
    MESSAGE_TYPE_HEADER, PROTOBUF_CONTENT_TYPE, QUERY_EVENTS, QUERY_QUEUE_GROUP,
    SERVICE_ERROR_CODE_HEADER, SERVICE_ERROR_HEADER,
};
use vigil_proto::query::v1::ListEventsRequest;

use crate::query::{self, EventQuery, TenantScope};

/// Subscribes (queue group `reader`) and answers until `shutdown`.
pub async fn serve(
    nats: async_nats::Client,
    pool: PgPool,
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
        let pool = pool.clone();
        tasks.spawn(async move {
            let (payload, headers) = match answer(&pool, &message.payload).await {
                Ok(payload) => {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Content-Type", PROTOBUF_CONTENT_TYPE);
                    headers.insert(MESSAGE_TYPE_HEADER, "vigil.query.v1.ListEventsResponse");
                    (payload, headers)
                }
                Err(error) => {
                    let (code, reason) = error_reply(&error);
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(SERVICE_ERROR_HEADER, reason.as_str());
                    headers.insert(SERVICE_ERROR_CODE_HEADER, code);
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

async fn answer(pool: &PgPool, payload: &[u8]) -> Result<Bytes, ApiError> {
    let request = ListEventsRequest::decode(payload)
        .map_err(|_| ApiError::invalid("request", "not a vigil.query.v1.ListEventsRequest"))?;
    let query = EventQuery::parse(&request)?;
    let response = query::list_events(pool, &TenantScope::All, &query).await?;
    Ok(Bytes::from(response.encode_to_vec()))
}

fn error_reply(error: &ApiError) -> (&'static str, String) {
    let code = match error {
        ApiError::InvalidArgument(_) => "400",
        ApiError::Unauthenticated(_) => "401",
        ApiError::PermissionDenied(_) => "403",
        ApiError::NotFound(_) => "404",
        ApiError::ResourceExhausted { .. } => "429",
        ApiError::Unavailable { .. } => "503",
        ApiError::Internal(detail) => {
            tracing::error!(%detail, "internal error answering query.events");
            return ("500", "internal error".into());
        }
    };
    (code, error.to_string())
}
