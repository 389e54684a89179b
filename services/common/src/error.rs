//! The errors a vigil API call can end in, and the one table that maps them
//! to a gRPC code (with `BadRequest` field violations and `RetryInfo`
//! details, so clients can act on them without parsing messages) and to the
//! NATS micro-service error code (`Nats-Service-Error-Code`, HTTP-style)
//! of the `query.events` API. The model is quickwit-proto's `error.rs`.

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

/// What kind of failure an [`ApiError`] is; one row of [`ErrorCode::TABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    ResourceExhausted,
    Unavailable,
    DeadlineExceeded,
    Internal,
}

impl ErrorCode {
    /// Each code, its gRPC code, its NATS service error code, its name.
    pub const TABLE: [(ErrorCode, Code, u16, &'static str); 8] = [
        (
            ErrorCode::InvalidArgument,
            Code::InvalidArgument,
            400,
            "INVALID_ARGUMENT",
        ),
        (
            ErrorCode::Unauthenticated,
            Code::Unauthenticated,
            401,
            "UNAUTHENTICATED",
        ),
        (
            ErrorCode::PermissionDenied,
            Code::PermissionDenied,
            403,
            "PERMISSION_DENIED",
        ),
        (ErrorCode::NotFound, Code::NotFound, 404, "NOT_FOUND"),
        (
            ErrorCode::ResourceExhausted,
            Code::ResourceExhausted,
            429,
            "RESOURCE_EXHAUSTED",
        ),
        (
            ErrorCode::Unavailable,
            Code::Unavailable,
            503,
            "UNAVAILABLE",
        ),
        (
            ErrorCode::DeadlineExceeded,
            Code::DeadlineExceeded,
            504,
            "DEADLINE_EXCEEDED",
        ),
        (ErrorCode::Internal, Code::Internal, 500, "INTERNAL"),
    ];

    fn row(self) -> (ErrorCode, Code, u16, &'static str) {
        Self::TABLE
            .into_iter()
            .find(|row| row.0 == self)
            .unwrap_or((ErrorCode::Internal, Code::Internal, 500, "INTERNAL"))
    }

    pub fn grpc(self) -> Code {
        self.row().1
    }

    /// The `Nats-Service-Error-Code` value.
    pub fn nats(self) -> u16 {
        self.row().2
    }

    /// The gRPC code's canonical name (`PERMISSION_DENIED`).
    pub fn name(self) -> &'static str {
        self.row().3
    }

    pub fn from_grpc(code: Code) -> Option<Self> {
        Self::TABLE
            .into_iter()
            .find(|row| row.1 == code)
            .map(|row| row.0)
    }

    pub fn from_nats(code: u16) -> Option<Self> {
        Self::TABLE
            .into_iter()
            .find(|row| row.2 == code)
            .map(|row| row.0)
    }
}

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            ApiError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            ApiError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::ResourceExhausted { .. } => ErrorCode::ResourceExhausted,
            ApiError::Unavailable { .. } => ErrorCode::Unavailable,
            ApiError::DeadlineExceeded(_) => ErrorCode::DeadlineExceeded,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The gRPC code's canonical name (`PERMISSION_DENIED`), for audit
    /// records and logs.
    pub fn code_name(&self) -> &'static str {
        self.code().name()
    }

    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::InvalidArgument(vec![FieldViolation::new(field, reason)])
    }

    /// The NATS micro-service error reply: `Nats-Service-Error-Code` and
    /// `Nats-Service-Error`. Internal details are logged, never sent.
    pub fn nats_reply(&self) -> (u16, String) {
        let code = self.code();
        match self {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (code.nats(), "internal error".into())
            }
            other => (code.nats(), other.to_string()),
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        let code = error.code().grpc();
        match error {
            ApiError::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for v in &violations {
                    details.add_bad_request_violation(v.field.clone(), v.reason.clone());
                }
                Status::with_error_details(code, describe(&violations), details)
            }
            ApiError::Unauthenticated(m)
            | ApiError::PermissionDenied(m)
            | ApiError::DeadlineExceeded(m) => Status::new(code, m),
            ApiError::NotFound(what) => Status::new(code, format!("{what} not found")),
            ApiError::ResourceExhausted {
                reason,
                retry_after,
            }
            | ApiError::Unavailable {
                reason,
                retry_after,
            } => Status::with_error_details(
                code,
                reason,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::new(code, "internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(status: &Status) -> ErrorCode {
        ErrorCode::from_grpc(status.code()).unwrap_or(ErrorCode::Internal)
    }

    #[test]
    fn the_code_table_round_trips_through_grpc_and_nats() {
        let mut grpc = std::collections::HashSet::new();
        let mut nats = std::collections::HashSet::new();
        for (code, grpc_code, nats_code, name) in ErrorCode::TABLE {
            assert_eq!(ErrorCode::from_grpc(code.grpc()), Some(code));
            assert_eq!(ErrorCode::from_nats(code.nats()), Some(code));
            assert_eq!(code.grpc(), grpc_code);
            assert_eq!(code.nats(), nats_code);
            assert_eq!(code.name(), name);
            assert!(
                grpc.insert(grpc_code) && nats.insert(nats_code),
                "{name} twice"
            );
        }
        assert_eq!(ErrorCode::from_grpc(Code::Ok), None);
        assert_eq!(ErrorCode::from_nats(200), None);
    }

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
            let (nats_code, nats_text) = error.nats_reply();
            assert_eq!(ErrorCode::from_nats(nats_code), ErrorCode::from_grpc(code));
            assert_eq!(error.code().grpc(), code);
            if code == Code::Internal {
                assert_eq!(nats_text, "internal error");
            }
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            assert_eq!(ErrorCode::from_grpc(status.code()), Some(code_of(&status)));
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
