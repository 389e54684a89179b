//! The settings every service shares, declared once, and how a service's
//! settings get their names.
//!
//! Each piece ([`RunArgs`], [`EdgeArgs`], [`NatsArgs`], [`PostgresArgs`],
//! [`BatchArgs`]) is a `clap::Args` struct that a service flattens into its
//! own `Config`. Every setting is a flag (`--nats-url`) and an environment
//! variable. The variable's name is resolved at start-up from the service
//! (as linkerd2-proxy's `env.rs` does): the key [`key::NATS_URL`] becomes
//! `VIGIL_GATEWAY_NATS_URL` for the gateway and `VIGIL_WRITER_NATS_URL` for
//! the writer, so one machine can run every service from one environment
//! and each keeps its own certificate. Keys that already start with
//! `VIGIL_` ([`key::TRUST_DOMAIN`]) are shared by every service.
//!
//! Defaults that differ per service (ports, rate limits) come from the
//! service's [`crate::service::Service::DEFAULTS`]; `{service}` in a default
//! (`certs/out/nats/{service}.crt`) is the service's name.
//!
//! Each piece's `load` validates and returns the loaded value (parse, don't
//! validate), recording every problem in [`ConfigErrors`] by the setting's
//! variable name so an operator fixes them in one pass.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Allowlist, ConfigErrors, NatsSettings, ServerTlsFiles};

/// The key of every shared setting; the variable is `VIGIL_<SERVICE>_<KEY>`.
pub mod key {
    pub const LISTEN: &str = "LISTEN";
    pub const HEALTH_LISTEN: &str = "HEALTH_LISTEN";
    pub const METRICS_LISTEN: &str = "METRICS_LISTEN";
    pub const INSECURE_DEV: &str = "INSECURE_DEV";
    pub const TLS_CERT: &str = "TLS_CERT";
    pub const TLS_KEY: &str = "TLS_KEY";
    pub const TLS_CLIENT_CA: &str = "TLS_CLIENT_CA";
    pub const TLS_CRL: &str = "TLS_CRL";
    pub const ALLOW: &str = "ALLOW";
    pub const RATE_PER_SEC: &str = "RATE_PER_SEC";
    pub const RATE_BURST: &str = "RATE_BURST";
    pub const NATS_URL: &str = "NATS_URL";
    pub const NATS_CA: &str = "NATS_CA";
    pub const NATS_CERT: &str = "NATS_CERT";
    pub const NATS_KEY: &str = "NATS_KEY";
    pub const DATABASE_URL: &str = "DATABASE_URL";
    pub const DATABASE_MAX_CONNECTIONS: &str = "DATABASE_MAX_CONNECTIONS";
    pub const BATCH_MAX_MESSAGES: &str = "BATCH_MAX_MESSAGES";
    pub const BATCH_MAX_WAIT_MS: &str = "BATCH_MAX_WAIT_MS";
    /// Shared by every service and by `vigil-certs`: the SPIFFE trust
    /// domain of every identity.
    pub const TRUST_DOMAIN: &str = "VIGIL_TRUST_DOMAIN";
}

/// How one service names its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names {
    /// `gateway`, `writer`, `reader`, `correlator`.
    pub service: &'static str,
}

impl Names {
    pub const fn new(service: &'static str) -> Self {
        Self { service }
    }

    /// `VIGIL_GATEWAY`.
    pub fn prefix(&self) -> String {
        format!("VIGIL_{}", self.service.to_ascii_uppercase())
    }

    /// The environment variable of `key` for this service.
    pub fn env(&self, key: &str) -> String {
        if key.starts_with("VIGIL_") {
            key.to_owned()
        } else {
            format!("{}_{key}", self.prefix())
        }
    }

    /// Gives every argument of `command` its variable name and this
    /// service's defaults (`defaults` by key, then `{service}` replaced).
    pub fn apply(&self, command: clap::Command, defaults: &[(&str, &str)]) -> clap::Command {
        command.mut_args(|arg| {
            let Some(key) = arg.get_env().and_then(|k| k.to_str()).map(str::to_owned) else {
                return arg;
            };
            let mut arg = arg.env(self.env(&key));
            if let Some((_, value)) = defaults.iter().find(|(k, _)| *k == key) {
                arg = arg.default_value(value.to_string());
            }
            let substituted: Vec<String> = arg
                .get_default_values()
                .iter()
                .filter_map(|v| v.to_str())
                .filter(|v| v.contains("{service}"))
                .map(|v| v.replace("{service}", self.service))
                .collect();
            if !substituted.is_empty() {
                arg = arg.default_values(substituted);
            }
            arg
        })
    }
}

/// What every service has: its health port and the development escape hatch.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Address of the plaintext grpc.health.v1 listener (probes cannot
    /// present a client certificate).
    #[arg(long, env = key::HEALTH_LISTEN, default_value = "127.0.0.1:0")]
    pub health_listen: SocketAddr,
    /// Address of the plaintext Prometheus listener (`GET /metrics`).
    #[arg(long, env = key::METRICS_LISTEN, default_value = "127.0.0.1:0")]
    pub metrics_listen: SocketAddr,
    /// Allow insecure settings (a wildcard allowlist, Postgres without TLS);
    /// for development only, and said so at start-up.
    #[arg(long, env = key::INSECURE_DEV)]
    pub insecure_dev: bool,
}

/// The mTLS gRPC listener of a service that faces devices or analysts.
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeArgs {
    /// Address of the mTLS gRPC listener.
    #[arg(long, env = key::LISTEN, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The server certificate (PEM); re-read when it changes.
    #[arg(long, env = key::TLS_CERT, default_value = "certs/out/server/{service}.crt")]
    pub tls_cert: PathBuf,
    /// The server certificate's key (PEM); re-read when it changes.
    #[arg(long, env = key::TLS_KEY, default_value = "certs/out/server/{service}.key")]
    pub tls_key: PathBuf,
    /// CA bundle that client certificates must chain to.
    #[arg(long, env = key::TLS_CLIENT_CA, default_value = "certs/out/ca.crt")]
    pub tls_client_ca: PathBuf,
    /// CRL (PEM) of revoked client certificates; re-read when it changes,
    /// and connections of newly revoked certificates are cut.
    #[arg(long, env = key::TLS_CRL)]
    pub tls_crl: Option<PathBuf>,
    /// Networks (CIDR, comma-separated) allowed to connect; others are
    /// closed before the TLS handshake.
    #[arg(
        long,
        env = key::ALLOW,
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128"
    )]
    pub allow: Vec<ipnet::IpNet>,
    /// Calls per second allowed per client identity (sustained).
    #[arg(long, env = key::RATE_PER_SEC, default_value_t = 50)]
    pub rate_per_sec: u32,
    /// Calls per client identity allowed in a burst.
    #[arg(long, env = key::RATE_BURST, default_value_t = 100)]
    pub rate_burst: u32,
    /// The SPIFFE trust domain of client identities
    /// (`spiffe://<domain>/...`); shared by every service.
    #[arg(long, env = key::TRUST_DOMAIN, default_value = vigil_identity::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
}

impl EdgeArgs {
    /// Loads the TLS material, the allowlist and the rate limiter.
    pub fn load(
        &self,
        names: Names,
        insecure_dev: bool,
        errors: &mut ConfigErrors,
    ) -> Option<crate::grpc::Edge> {
        let files = ServerTlsFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            client_ca: self.tls_client_ca.clone(),
            crl: self.tls_crl.clone(),
        };
        let before = errors.len();
        errors.check_file(&names.env(key::TLS_CERT), &files.cert);
        errors.check_file(&names.env(key::TLS_KEY), &files.key);
        errors.check_file(&names.env(key::TLS_CLIENT_CA), &files.client_ca);
        if let Some(crl) = &files.crl {
            errors.check_file(&names.env(key::TLS_CRL), crl);
        }
        let allow = Allowlist::new(self.allow.clone());
        allow.check(&names.env(key::ALLOW), insecure_dev, errors);
        let rate = crate::grpc::RateLimit {
            per_second: self.rate_per_sec,
            burst: self.rate_burst,
        };
        if rate.per_second == 0 {
            errors.add(&names.env(key::RATE_PER_SEC), "must be at least 1");
        }
        if rate.burst == 0 {
            errors.add(&names.env(key::RATE_BURST), "must be at least 1");
        }
        let trust_domain = vigil_identity::TrustDomain::new(&self.trust_domain)
            .map_err(|e| errors.add(key::TRUST_DOMAIN, e))
            .ok();
        if errors.len() > before {
            return None;
        }
        match crate::grpc::Edge::load(self.listen, &files, allow, rate, trust_domain?) {
            Ok(edge) => Some(edge),
            Err(e) => {
                errors.add(&names.env(key::TLS_CERT), e);
                None
            }
        }
    }
}

/// How a service reaches NATS: always TLS, always its own certificate.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL (`tls://host:port`; several comma-separated for a cluster).
    #[arg(long, env = key::NATS_URL, default_value = "tls://127.0.0.1:4333")]
    pub nats_url: String,
    /// CA bundle the NATS server's certificate must chain to.
    #[arg(long, env = key::NATS_CA, default_value = "certs/out/ca.crt")]
    pub nats_ca: PathBuf,
    /// The service's NATS client certificate; nats-server maps its URI SAN
    /// to the service's user.
    #[arg(long, env = key::NATS_CERT, default_value = "certs/out/nats/{service}.crt")]
    pub nats_cert: PathBuf,
    /// The key of that certificate.
    #[arg(long, env = key::NATS_KEY, default_value = "certs/out/nats/{service}.key")]
    pub nats_key: PathBuf,
}

impl NatsArgs {
    pub fn load(&self, names: Names, errors: &mut ConfigErrors) -> Option<NatsSettings> {
        let before = errors.len();
        if !self
            .nats_url
            .split(',')
            .all(|u| u.starts_with("tls://") || u.starts_with("nats://"))
        {
            errors.add(
                &names.env(key::NATS_URL),
                "must start with tls:// or nats://",
            );
        }
        errors.check_file(&names.env(key::NATS_CA), &self.nats_ca);
        errors.check_file(&names.env(key::NATS_CERT), &self.nats_cert);
        errors.check_file(&names.env(key::NATS_KEY), &self.nats_key);
        (errors.len() == before).then(|| NatsSettings {
            url: self.nats_url.clone(),
            ca: self.nats_ca.clone(),
            cert: self.nats_cert.clone(),
            key: self.nats_key.clone(),
            inbox_prefix: crate::subjects::inbox_prefix(names.service),
        })
    }
}

/// A Postgres connection pool.
#[derive(Debug, Clone, clap::Args)]
pub struct PostgresArgs {
    /// Postgres URL, e.g. `postgres://vigil_writer@127.0.0.1:5432/vigil?sslmode=require`.
    #[arg(long, env = key::DATABASE_URL)]
    pub database_url: String,
    /// Connections in the pool.
    #[arg(long, env = key::DATABASE_MAX_CONNECTIONS, default_value_t = 4)]
    pub database_max_connections: u32,
}

impl PostgresArgs {
    pub fn load(
        &self,
        names: Names,
        insecure_dev: bool,
        errors: &mut ConfigErrors,
    ) -> Option<crate::postgres::PostgresSettings> {
        let before = errors.len();
        crate::config::check_database_url(
            &names.env(key::DATABASE_URL),
            &self.database_url,
            insecure_dev,
            errors,
        );
        if !(1..=100).contains(&self.database_max_connections) {
            errors.add(
                &names.env(key::DATABASE_MAX_CONNECTIONS),
                "must be 1 to 100",
            );
        }
        (errors.len() == before).then(|| crate::postgres::PostgresSettings {
            url: self.database_url.clone(),
            max_connections: self.database_max_connections,
        })
    }
}

/// How a JetStream consumer groups what it pulls.
#[derive(Debug, Clone, clap::Args)]
pub struct BatchArgs {
    /// Hand a batch on once this many NATS messages are pending...
    #[arg(long, env = key::BATCH_MAX_MESSAGES, default_value_t = 200)]
    pub batch_max_messages: usize,
    /// ...or once the oldest pending message has waited this long.
    #[arg(long, env = key::BATCH_MAX_WAIT_MS, default_value_t = 100)]
    pub batch_max_wait_ms: u64,
}

impl BatchArgs {
    pub fn load(
        &self,
        names: Names,
        errors: &mut ConfigErrors,
    ) -> Option<crate::consume::Batching> {
        let before = errors.len();
        if !(1..=10_000).contains(&self.batch_max_messages) {
            errors.add(&names.env(key::BATCH_MAX_MESSAGES), "must be 1 to 10000");
        }
        if !(1..=60_000).contains(&self.batch_max_wait_ms) {
            errors.add(&names.env(key::BATCH_MAX_WAIT_MS), "must be 1 to 60000");
        }
        (errors.len() == before).then(|| crate::consume::Batching {
            max_messages: self.batch_max_messages,
            max_wait: Duration::from_millis(self.batch_max_wait_ms),
        })
    }
}

/// One row per setting of `command`: variable, flag, default, help. The
/// table in `docs/settings.md` is generated from it.
pub fn table(command: &clap::Command) -> Vec<[String; 4]> {
    command
        .get_arguments()
        .filter(|a| a.get_id() != "help" && a.get_id() != "version")
        .map(|a| {
            [
                a.get_env()
                    .and_then(|e| e.to_str())
                    .unwrap_or_default()
                    .to_owned(),
                a.get_long().map(|l| format!("--{l}")).unwrap_or_default(),
                a.get_default_values()
                    .iter()
                    .filter_map(|v| v.to_str())
                    .collect::<Vec<_>>()
                    .join(","),
                a.get_help()
                    .map(|h| h.to_string().replace('\n', " "))
                    .unwrap_or_default(),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};

    #[derive(Debug, clap::Args)]
    struct Both {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        nats: NatsArgs,
    }

    fn command() -> clap::Command {
        Names::new("writer").apply(
            Both::augment_args(clap::Command::new("t")),
            &[(key::HEALTH_LISTEN, "127.0.0.1:4454")],
        )
    }

    #[test]
    fn variables_get_the_service_prefix_and_defaults_its_name() -> Result<(), clap::Error> {
        let matches = command().try_get_matches_from(["t"])?;
        let both = Both::from_arg_matches(&matches)?;
        assert_eq!(both.run.health_listen.to_string(), "127.0.0.1:4454");
        assert_eq!(
            both.nats.nats_cert,
            PathBuf::from("certs/out/nats/writer.crt")
        );
        let rows = table(&command());
        let vars: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
        assert!(vars.contains(&"VIGIL_WRITER_NATS_URL"), "{vars:?}");
        assert!(vars.contains(&"VIGIL_WRITER_HEALTH_LISTEN"), "{vars:?}");
        assert!(
            vars.iter().all(|v| v.starts_with("VIGIL_WRITER_")),
            "{vars:?}"
        );
        Ok(())
    }

    #[test]
    fn every_setting_is_named_by_its_flag() {
        // The key of each variable is its flag, upper-cased: one name to
        // learn per setting.
        for [var, flag, ..] in table(&command()) {
            let key = flag
                .trim_start_matches("--")
                .replace('-', "_")
                .to_uppercase();
            assert_eq!(var, format!("VIGIL_WRITER_{key}"));
        }
    }

    #[test]
    fn reports_every_bad_setting_by_name() {
        let mut errors = ConfigErrors::new();
        let nats = NatsArgs {
            nats_url: "http://x".into(),
            nats_ca: "/nonexistent/ca.crt".into(),
            nats_cert: "/nonexistent/c.crt".into(),
            nats_key: "/nonexistent/c.key".into(),
        };
        assert!(nats.load(Names::new("writer"), &mut errors).is_none());
        let batch = BatchArgs {
            batch_max_messages: 0,
            batch_max_wait_ms: 0,
        };
        assert!(batch.load(Names::new("writer"), &mut errors).is_none());
        let Err(err) = errors.into_result() else {
            panic!("expected errors")
        };
        let text = err.to_string();
        for setting in [
            "VIGIL_WRITER_NATS_URL",
            "VIGIL_WRITER_NATS_CA",
            "VIGIL_WRITER_NATS_CERT",
            "VIGIL_WRITER_NATS_KEY",
            "VIGIL_WRITER_BATCH_MAX_MESSAGES",
            "VIGIL_WRITER_BATCH_MAX_WAIT_MS",
        ] {
            assert!(text.contains(setting), "{text}");
        }
    }
}
