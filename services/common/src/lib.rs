//! Plumbing every vigil service shares, so a cross-cutting change lands in
//! one place.
//!
//! - [`service`]: the runner every `main.rs` calls and the lifecycle it
//!   gives each service (load settings, bind, build, run, drain, exit code).
//! - [`settings`]: the flags and `VIGIL_<SERVICE>_*` variables every service
//!   shares (health, edge, NATS, Postgres, batching), each validated once
//!   into a loaded value; [`config`]: those values, and [`config::ConfigErrors`],
//!   which names every bad setting at once.
//! - [`readiness`]: `grpc.health.v1` on its own port, driven by each
//!   service's declared hard dependencies.
//! - [`grpc`]: the one way a service serves gRPC to the outside (the call
//!   pipeline: load shedding, concurrency limit, rate limit, identity).
//! - [`tls`]: rustls server config that fails closed and reloads, and the
//!   accept loop that turns a verified client certificate into a
//!   [`identity::PeerInfo`]; [`identity`]: reading the identity out of a
//!   certificate (the scheme is the `vigil-identity` crate).
//! - [`policy`]: identity to role and tenants, live-reloaded.
//! - [`nats`], [`subjects`] and [`consume`]: connecting as a service's own
//!   NATS user (its events drive readiness), every subject, stream and
//!   consumer name, and the one JetStream pull loop.
//! - [`postgres`]: a pool with per-session settings, and its readiness probe.
//! - [`provision`] and [`dlq`]: the admin step that creates streams,
//!   consumers and the KV bucket; dead-letter list, replay and discard.
//! - [`error`]: the one table from API errors to gRPC and NATS codes.
//! - [`metrics`], [`telemetry`] and [`shutdown`]: `/metrics`, JSON logs,
//!   signals and the bounded drain.

pub mod config;
pub mod consume;
pub mod dlq;
pub mod error;
pub mod grpc;
pub mod grpc_metrics;
pub mod identity;
pub mod metrics;
pub mod nats;
pub mod policy;
pub mod postgres;
pub mod provision;
pub mod readiness;
pub mod service;
pub mod settings;
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
