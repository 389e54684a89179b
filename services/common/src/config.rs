//! Validated setting values shared by services, and [`ConfigErrors`], which
//! collects every bad setting by name. The flags and variables that produce
//! them are in [`crate::settings`].

use std::fmt;
use std::path::{Path, PathBuf};

/// Every problem found in a service's configuration, reported together so an
/// operator fixes them in one pass.
#[derive(Debug, Default)]
pub struct ConfigErrors(Vec<String>);

impl ConfigErrors {
    pub fn new() -> Self {
        Self::default()
    }
    /// Records a problem with `setting` (the env var or flag name).
    pub fn add(&mut self, setting: &str, problem: impl fmt::Display) {
        self.0.push(format!("{setting}: {problem}"));
    }
    /// Checks that `path` (given by `setting`) is a readable file.
    pub fn check_file(&mut self, setting: &str, path: &Path) {
        if let Err(e) = std::fs::metadata(path).and_then(|m| {
            if m.is_file() {
                Ok(())
            } else {
                Err(std::io::Error::other("not a regular file"))
            }
        }) {
            self.add(setting, format_args!("cannot read {}: {e}", path.display()));
        }
    }
    /// How many problems were recorded so far.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// `Ok(value)` when no problem was recorded; `value` is what the
    /// settings loaded into, `None` only if a problem was recorded.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, InvalidConfig> {
        match (self.into_result(), value) {
            (Ok(()), Some(value)) => Ok(value),
            (Err(e), _) => Err(e),
            (Ok(()), None) => Err(InvalidConfig(vec![
                "a setting failed to load without saying why (a bug)".into(),
            ])),
        }
    }
    pub fn into_result(self) -> Result<(), InvalidConfig> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(InvalidConfig(self.0))
        }
    }
}

/// A configuration that failed validation; displays one line per problem.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct InvalidConfig(pub Vec<String>);

/// A server's certificate, its key, the CA bundle that client certificates
/// must chain to, and optionally the CRL of revoked client certificates.
/// All are re-read when they change (see [`crate::tls::ServerTls`]).
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub crl: Option<PathBuf>,
}

/// The networks a listener accepts connections from; checked on the TCP
/// peer address before the TLS handshake. IPv4-mapped IPv6 peers
/// (`::ffff:10.0.0.1`) are matched as their IPv4 address.
#[derive(Debug, Clone)]
pub struct Allowlist(Vec<ipnet::IpNet>);

impl Allowlist {
    pub fn new(nets: Vec<ipnet::IpNet>) -> Self {
        Self(nets)
    }
    pub fn permits(&self, ip: std::net::IpAddr) -> bool {
        // An IPv4-mapped IPv6 peer counts as its IPv4 address.
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
    /// Whether the list lets every address in (`0.0.0.0/0` or `::/0`).
    pub fn is_wildcard(&self) -> bool {
        self.0.iter().any(|n| n.prefix_len() == 0)
    }
    /// Refuses an empty list, and a wildcard one unless `insecure_dev`.
    pub fn check(&self, setting: &str, insecure_dev: bool, errors: &mut ConfigErrors) {
        if self.0.is_empty() {
            errors.add(setting, "must name at least one network (CIDR)");
        } else if self.is_wildcard() && !insecure_dev {
            errors.add(
                setting,
                "admits every address; list the networks clients connect from, or pass --insecure-dev",
            );
        }
    }
}

/// Refuses a Postgres URL that would not insist on TLS (`sslmode` must be
/// `require`, `verify-ca` or `verify-full`) unless `insecure_dev`.
pub fn check_database_url(setting: &str, url: &str, insecure_dev: bool, errors: &mut ConfigErrors) {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        errors.add(setting, "must be a postgres:// URL");
        return;
    }
    let mode = url
        .split_once('?')
        .map(|(_, query)| query)
        .unwrap_or_default()
        .rsplit('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "sslmode")
        .map_or("prefer", |(_, v)| v);
    if !matches!(mode, "require" | "verify-ca" | "verify-full") && !insecure_dev {
        errors.add(
            setting,
            format_args!(
                "sslmode={mode} lets the connection fall back to plaintext; use sslmode=require, verify-ca or verify-full, or pass --insecure-dev"
            ),
        );
    }
}

/// How a service reaches NATS: always TLS, always its own client certificate.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// e.g. `tls://127.0.0.1:4333`
    pub url: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The service's inbox prefix; its NATS user may only subscribe there.
    pub inbox_prefix: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Allowlist {
        Allowlist::new(list.iter().filter_map(|n| n.parse().ok()).collect())
    }

    #[test]
    fn allowlist_matches_ipv4_mapped_ipv6_as_ipv4() {
        let allow = nets(&["10.1.0.0/16", "::1/128"]);
        for (ip, ok) in [
            ("10.1.2.3", true),
            ("::ffff:10.1.2.3", true),
            ("10.2.0.1", false),
            ("::ffff:10.2.0.1", false),
            ("::1", true),
            ("127.0.0.1", false),
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
            assert_eq!(allow.permits(ip), ok, "{ip}");
        }
    }

    #[test]
    fn wildcard_allowlist_and_plaintext_postgres_need_insecure_dev() {
        for insecure in [false, true] {
            let mut errors = ConfigErrors::new();
            nets(&["0.0.0.0/0"]).check("X_ALLOW", insecure, &mut errors);
            check_database_url("X_DB", "postgres://h/db", insecure, &mut errors);
            check_database_url(
                "X_DB2",
                "postgres://h/db?sslmode=disable",
                insecure,
                &mut errors,
            );
            check_database_url(
                "X_DB3",
                "postgres://h/db?sslmode=require",
                insecure,
                &mut errors,
            );
            let text = errors
                .into_result()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert_eq!(text.contains("X_ALLOW"), !insecure, "{text}");
            assert_eq!(text.contains("X_DB:"), !insecure, "{text}");
            assert_eq!(text.contains("X_DB2"), !insecure, "{text}");
            assert!(!text.contains("X_DB3"), "{text}");
        }
        let mut errors = ConfigErrors::new();
        nets(&[]).check("X_ALLOW", true, &mut errors);
        assert!(errors.into_result().is_err());
    }
}
