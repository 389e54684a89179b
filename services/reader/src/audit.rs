//! The audit trail: every query the reader answers (or refuses) becomes an
//! `AuditRecord` on `audit.reader`, which the writer appends to the `audit`
//! table. A query whose record JetStream does not acknowledge is not
//! answered: no unaudited reads.

use std::time::Duration;

use async_nats::jetstream;
use prost::Message;
use vigil_common::error::ApiError;
use vigil_common::subjects::{MESSAGE_TYPE_HEADER, PROTOBUF_CONTENT_TYPE};
use vigil_proto::audit::v1::AuditRecord;

/// How long a query waits for its audit record to be durable.
pub const AUDIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A `ListEvents` request's filters as its audit record states them (the
/// page token itself is left out; only whether there was one).
pub fn list_events_filter(r: &vigil_proto::query::v1::ListEventsRequest) -> serde_json::Value {
    serde_json::json!({
        "min_severity": r.min_severity,
        "class_uids": r.class_uids,
        "source_device": r.source_device,
        "start_time": r.start_time,
        "end_time": r.end_time,
        "limit": r.limit,
        "next_page": !r.page_token.is_empty(),
    })
}

#[derive(Clone)]
pub struct Auditor {
    js: jetstream::Context,
    subject: String,
}

/// What one call did, for its record.
pub struct Entry<'a> {
    pub caller: &'a str,
    pub rpc: &'a str,
    pub filter: serde_json::Value,
    pub rows: usize,
    pub outcome: &'static str,
}

impl Auditor {
    pub fn new(nats: async_nats::Client) -> Self {
        Self {
            js: jetstream::new(nats),
            subject: vigil_common::subjects::audit_subject("reader"),
        }
    }

    /// Publishes the record and waits for JetStream to store it.
    pub async fn record(&self, entry: Entry<'_>) -> Result<(), ApiError> {
        let record = AuditRecord {
            audit_id: uuid::Uuid::now_v7().to_string(),
            time: vigil_common::now_millis(),
            service: "reader".into(),
            caller: entry.caller.to_owned(),
            rpc: entry.rpc.to_owned(),
            filter_json: entry.filter.to_string(),
            rows: u32::try_from(entry.rows).unwrap_or(u32::MAX),
            outcome: entry.outcome.to_owned(),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", record.audit_id.as_str());
        headers.insert("Content-Type", PROTOBUF_CONTENT_TYPE);
        headers.insert(MESSAGE_TYPE_HEADER, "vigil.audit.v1.AuditRecord");
        let unavailable = |reason: String| ApiError::Unavailable {
            reason: format!("audit log unavailable, query not answered: {reason}"),
            retry_after: Duration::from_secs(1),
        };
        let ack = self
            .js
            .publish_with_headers(self.subject.clone(), headers, record.encode_to_vec().into())
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        tokio::time::timeout(AUDIT_TIMEOUT, ack)
            .await
            .map_err(|_| unavailable("no acknowledgement".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(())
    }

    /// Records a call's outcome: a successful answer is returned only once
    /// its record is durable; a failed call is recorded best-effort and
    /// its own error returned.
    pub async fn seal<T>(
        &self,
        caller: &str,
        rpc: &str,
        filter: serde_json::Value,
        result: Result<T, ApiError>,
        rows: impl FnOnce(&T) -> usize,
    ) -> Result<T, ApiError> {
        match result {
            Ok(answer) => {
                self.record(Entry {
                    caller,
                    rpc,
                    filter,
                    rows: rows(&answer),
                    outcome: "OK",
                })
                .await?;
                Ok(answer)
            }
            Err(error) => {
                let entry = Entry {
                    caller,
                    rpc,
                    filter,
                    rows: 0,
                    outcome: error.code_name(),
                };
                if let Err(audit_error) = self.record(entry).await {
                    tracing::warn!(%audit_error, caller, rpc, "refused call not audited");
                }
                Err(error)
            }
        }
    }
}
