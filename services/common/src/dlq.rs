//! Dead letters: listing, replaying and discarding what a consumer gave up
//! on (`vigil dlq ...`). Run as the admin NATS user.
//!
//! Replay republishes a dead letter's payload and original headers to its
//! original subject with `Nats-Msg-Id: replay-dlq-<seq>` (so replaying the
//! same letter twice within the duplicate window stores it once, and the
//! writer's idempotent insert covers the rest), then deletes the letter.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};

use crate::subjects::{DLQ_STREAM, dlq_headers};

/// One dead letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its sequence in the DLQ stream: the id operators use.
    pub sequence: u64,
    /// When it was dead-lettered, RFC 3339.
    pub time: String,
    pub original_subject: String,
    pub reason: String,
    pub deliveries: String,
    pub consumer: String,
    pub payload_bytes: usize,
    headers: HeaderMap,
    payload: bytes::Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("cannot reach the DLQ stream: {0}")]
    Stream(String),
    #[error("no dead letter {0}")]
    NotFound(u64),
    #[error("dead letter {0} has no original subject under events.; refusing to replay")]
    NoSubject(u64),
    #[error("replaying dead letter {sequence}: {reason}")]
    Publish { sequence: u64, reason: String },
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

async fn stream(js: &jetstream::Context) -> Result<jetstream::stream::Stream, DlqError> {
    js.get_stream(DLQ_STREAM)
        .await
        .map_err(|e| DlqError::Stream(e.to_string()))
}

async fn get(stream: &jetstream::stream::Stream, sequence: u64) -> Result<DeadLetter, DlqError> {
    let m = stream
        .get_raw_message(sequence)
        .await
        .map_err(|_| DlqError::NotFound(sequence))?;
    Ok(DeadLetter {
        sequence,
        time: m.time.to_string(),
        original_subject: header(&m.headers, dlq_headers::SUBJECT),
        reason: header(&m.headers, dlq_headers::REASON),
        deliveries: header(&m.headers, dlq_headers::DELIVERIES),
        consumer: format!(
            "{}/{}",
            header(&m.headers, dlq_headers::STREAM),
            header(&m.headers, dlq_headers::CONSUMER)
        ),
        payload_bytes: m.payload.len(),
        headers: m.headers,
        payload: m.payload,
    })
}

/// Every dead letter, oldest first.
pub async fn list(js: &jetstream::Context) -> Result<Vec<DeadLetter>, DlqError> {
    let mut stream = stream(js).await?;
    let state = stream
        .info()
        .await
        .map_err(|e| DlqError::Stream(e.to_string()))?
        .state
        .clone();
    let mut letters = Vec::new();
    if state.messages == 0 {
        return Ok(letters);
    }
    for sequence in state.first_sequence..=state.last_sequence {
        match get(&stream, sequence).await {
            Ok(letter) => letters.push(letter),
            Err(DlqError::NotFound(_)) => continue, // deleted: replayed or discarded
            Err(e) => return Err(e),
        }
    }
    Ok(letters)
}

/// Republishes a dead letter to its original subject, then deletes it.
pub async fn replay(js: &jetstream::Context, sequence: u64) -> Result<(), DlqError> {
    let stream = stream(js).await?;
    let letter = get(&stream, sequence).await?;
    if !letter.original_subject.starts_with("events.") {
        return Err(DlqError::NoSubject(sequence));
    }
    let mut headers = HeaderMap::new();
    for (name, values) in letter.headers.iter() {
        let name_str: &str = name.as_ref();
        if name_str.starts_with("Vigil-Dlq-") || name_str == "Nats-Msg-Id" {
            continue;
        }
        for v in values {
            headers.append(name.clone(), v.clone());
        }
    }
    headers.insert("Nats-Msg-Id", format!("replay-dlq-{sequence}").as_str());
    let publish_error = |e: &dyn std::fmt::Display| DlqError::Publish {
        sequence,
        reason: e.to_string(),
    };
    js.send_publish(
        letter.original_subject.clone(),
        PublishMessage::build()
            .payload(letter.payload)
            .headers(headers),
    )
    .await
    .map_err(|e| publish_error(&e))?
    .await
    .map_err(|e| publish_error(&e))?;
    discard(js, sequence).await
}

/// Deletes a dead letter.
pub async fn discard(js: &jetstream::Context, sequence: u64) -> Result<(), DlqError> {
    let stream = stream(js).await?;
    match stream.delete_message(sequence).await {
        Ok(true) => Ok(()),
        _ => Err(DlqError::NotFound(sequence)),
    }
}
