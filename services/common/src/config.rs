//! Settings shared by services, and validation that names every bad setting.

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

/// A server's certificate, its key, and the CA that client certificates must
/// chain to.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl ServerTlsFiles {
    /// Checks the files exist; `prefix` is the env var prefix (e.g. `VIGIL_GATEWAY`).
    pub fn check(&self, prefix: &str, errors: &mut ConfigErrors) {
        errors.check_file(&format!("{prefix}_TLS_CERT"), &self.cert);
        errors.check_file(&format!("{prefix}_TLS_KEY"), &self.key);
        errors.check_file(&format!("{prefix}_TLS_CLIENT_CA"), &self.client_ca);
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

impl NatsSettings {
    pub fn check(&self, prefix: &str, errors: &mut ConfigErrors) {
        if !(self.url.starts_with("tls://") || self.url.starts_with("nats://")) {
            errors.add(
                &format!("{prefix}_NATS_URL"),
                "must start with tls:// or nats://",
            );
        }
        errors.check_file(&format!("{prefix}_NATS_CA"), &self.ca);
        errors.check_file(&format!("{prefix}_NATS_CERT"), &self.cert);
        errors.check_file(&format!("{prefix}_NATS_KEY"), &self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_bad_setting_by_name() {
        let mut errors = ConfigErrors::new();
        let nats = NatsSettings {
            url: "http://x".into(),
            ca: "/nonexistent/ca.crt".into(),
            cert: "/nonexistent/c.crt".into(),
            key: "/nonexistent/c.key".into(),
            inbox_prefix: "_INBOX_x".into(),
        };
        nats.check("VIGIL_WRITER", &mut errors);
        let Err(err) = errors.into_result() else {
            panic!("expected errors")
        };
        let text = err.to_string();
        for setting in [
            "VIGIL_WRITER_NATS_URL",
            "VIGIL_WRITER_NATS_CA",
            "VIGIL_WRITER_NATS_CERT",
            "VIGIL_WRITER_NATS_KEY",
        ] {
            assert!(text.contains(setting), "{text}");
        }
    }
}
