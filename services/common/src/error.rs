//! The errors a vigil API call can end in, and their one mapping to
//! `tonic::Status` (with `BadRequest` field violations and `RetryInfo`
//! details, so clients can act on them without parsing messages).

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// One offending field: a dotted path (`events[3].time`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub reason: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; nothing was done.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// No usable caller identity.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A known caller asked for something its identity does not allow.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Missing, or not visible to this caller (no existence oracle).
    #[error("{0} not found")]
    NotFound(String),
    /// Over a limit; retry later.
    #[error("resource exhausted: {reason}")]
    ResourceExhausted {
        reason: String,
        retry_after: Duration,
    },
    /// A dependency is down and nothing was persisted, or the outcome is
    /// unknown; the caller retries with the same event ids.
    #[error("unavailable: {reason}")]
    Unavailable {
        reason: String,
        retry_after: Duration,
    },
    /// The work took longer than allowed and was cancelled (nothing changed).
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// A bug or an unexpected failure; details are logged, never returned.
    #[error("internal error: {0}")]
    Internal(String),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// The gRPC code's canonical name (`PERMISSION_DENIED`), for audit
    /// records and logs.
    pub fn code_name(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument(_) => "INVALID_ARGUMENT",
            ApiError::Unauthenticated(_) => "UNAUTHENTICATED",
            ApiError::PermissionDenied(_) => "PERMISSION_DENIED",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::ResourceExhausted { .. } => "RESOURCE_EXHAUSTED",
            ApiError::Unavailable { .. } => "UNAVAILABLE",
            ApiError::DeadlineExceeded(_) => "DEADLINE_EXCEEDED",
            ApiError::Internal(_) => "INTERNAL",
        }
    }

    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::InvalidArgument(vec![FieldViolation::new(field, reason)])
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        match error {
            ApiError::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for v in &violations {
                    details.add_bad_request_violation(v.field.clone(), v.reason.clone());
                }
                Status::with_error_details(Code::InvalidArgument, describe(&violations), details)
            }
            ApiError::Unauthenticated(m) => Status::unauthenticated(m),
            ApiError::PermissionDenied(m) => Status::permission_denied(m),
            ApiError::NotFound(what) => Status::not_found(format!("{what} not found")),
            ApiError::ResourceExhausted {
                reason,
                retry_after,
            } => Status::with_error_details(
                Code::ResourceExhausted,
                reason,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            ApiError::Unavailable {
                reason,
                retry_after,
            } => Status::with_error_details(
                Code::Unavailable,
                reason,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            ApiError::DeadlineExceeded(m) => Status::deadline_exceeded(m),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_its_code_and_details_round_trip() {
        let cases = [
            (
                ApiError::invalid("events[3].time", "too far ahead"),
                Code::InvalidArgument,
            ),
            (
                ApiError::Unauthenticated("no cert".into()),
                Code::Unauthenticated,
            ),
            (
                ApiError::PermissionDenied("device".into()),
                Code::PermissionDenied,
            ),
            (ApiError::NotFound("event".into()), Code::NotFound),
            (
                ApiError::ResourceExhausted {
                    reason: "full".into(),
                    retry_after: Duration::from_secs(2),
                },
                Code::ResourceExhausted,
            ),
            (
                ApiError::Unavailable {
                    reason: "nats down".into(),
                    retry_after: Duration::from_secs(1),
                },
                Code::Unavailable,
            ),
            (
                ApiError::DeadlineExceeded("query cancelled".into()),
                Code::DeadlineExceeded,
            ),
            (
                ApiError::Internal("db password wrong".into()),
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            let details = status.get_error_details();
            match code {
                Code::InvalidArgument => {
                    let bad = details
                        .bad_request()
                        .map(|b| b.field_violations.clone())
                        .unwrap_or_default();
                    assert_eq!(bad.len(), 1);
                    assert_eq!(bad[0].field, "events[3].time");
                }
                Code::Unavailable | Code::ResourceExhausted => {
                    assert!(
                        details
                            .retry_info()
                            .is_some_and(|r| r.retry_delay.is_some())
                    );
                }
                Code::Internal => assert!(!status.message().contains("password")),
                _ => {}
            }
        }
    }
}
