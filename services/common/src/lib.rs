//! Plumbing every vigil service shares.
//!
//! - [`config`]: settings every service has (TLS files, NATS), and reporting
//!   every bad setting at once, by name.
//! - [`tls`]: rustls server config that fails closed, and the accept loop
//!   that turns a verified client certificate into a [`identity::PeerInfo`].
//! - [`identity`]: SPIFFE-style identities from certificate URI SANs.
//! - [`nats`] and [`subjects`]: connecting as a service's own NATS user, and
//!   every subject, stream and consumer name in one place.
//! - [`provision`]: the admin step that creates streams and consumers.
//! - [`error`]: the one mapping from API errors to `tonic::Status`.
//! - [`telemetry`] and [`shutdown`]: JSON logs, signals.

pub mod config;
pub mod dlq;
pub mod error;
pub mod grpc;
pub mod health;
pub mod identity;
pub mod metrics;
pub mod nats;
pub mod policy;
pub mod provision;
pub mod shutdown;
pub mod subjects;
pub mod telemetry;
pub mod tls;

/// Milliseconds since the Unix epoch, the unit of OCSF `time`.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
