//! How `vigil` fails: every failure carries one of the named exit codes,
//! and a message that names the problem (printed on stderr).

use vigil_client::ClientError;

/// The exit codes of `vigil`, documented in `--help` and the README.
pub mod code {
    /// Anything else (including NOT_FOUND).
    pub const FAILED: u8 = 1;
    /// Bad usage: an unreadable file, a bad address or value.
    pub const USAGE: u8 = 2;
    /// Cannot connect, or the service is unavailable.
    pub const UNAVAILABLE: u8 = 3;
    /// Our identity was refused (not authenticated, not permitted).
    pub const REFUSED: u8 = 4;
    /// The service refused the request as invalid.
    pub const INVALID: u8 = 5;
}

/// A failure, with the exit code that classifies it.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match e {
            ClientError::Read { .. } | ClientError::BadAddress { .. } => code::USAGE,
            ClientError::Connect { .. } => code::UNAVAILABLE,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

/// How a refused client certificate surfaces in a failed first call.
const REFUSAL_HINTS: &[&str] = &[
    "cancel",
    "transport error",
    "tls",
    "certificate",
    "handshake",
    "connection reset",
    "broken pipe",
    "alert",
];

/// Classifies a failed call. `cert` is the certificate we presented: with
/// TLS 1.3 a server refuses a client certificate only after the client
/// thinks the handshake is done, so a refusal shows up as the first call
/// being cancelled or reset.
pub fn status_failure(
    what: &str,
    addr: &str,
    cert: &std::path::Path,
    status: tonic::Status,
) -> Failure {
    use tonic::Code;
    let detail = status.message();
    let lower = detail.to_ascii_lowercase();
    let (exit, message) = match status.code() {
        Code::PermissionDenied => (code::REFUSED, format!("{what}: refused identity: {detail}")),
        Code::Unauthenticated => (
            code::REFUSED,
            format!("{what}: not authenticated: {detail}"),
        ),
        Code::InvalidArgument => (code::INVALID, format!("{what}: invalid request: {detail}")),
        Code::NotFound => (code::FAILED, format!("{what}: {detail}")),
        Code::Cancelled | Code::Unavailable | Code::Unknown
            if REFUSAL_HINTS.iter().any(|w| lower.contains(w)) =>
        {
            (
                code::REFUSED,
                format!(
                    "{what}: {addr} closed the connection after the TLS handshake: it most likely refused our certificate {} (is it issued by the vigil CA and still valid?) [{detail}]",
                    cert.display()
                ),
            )
        }
        Code::Unavailable => (
            code::UNAVAILABLE,
            format!("{what}: {addr} unavailable: {detail}"),
        ),
        _ => (code::FAILED, format!("{what}: {} {detail}", status.code())),
    };
    Failure {
        code: exit,
        message,
    }
}
