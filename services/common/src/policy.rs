//! Who may see what: a policy file mapping caller identities to roles.
//!
//! ```toml
//! [[grant]]
//! identity = "spiffe://vigil.local/user/acme-analyst"   # `*` matches one segment
//! role = "analyst"
//! tenants = ["acme"]
//!
//! [[grant]]
//! identity = "spiffe://vigil.local/user/admin"
//! role = "admin"                                          # every tenant
//! ```
//!
//! The first grant whose pattern matches wins; a user no grant matches may
//! do nothing. The tenant scope always comes from here, never from a
//! request field.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::identity::{Identity, Principal, is_valid_name};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// May query the listed tenants.
    Analyst { tenants: Vec<String> },
    /// May query every tenant.
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    pattern: Vec<String>,
    role: Role,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    grants: Vec<Grant>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy grant {grant}: {field}: {reason}")]
pub struct PolicyError {
    pub grant: String,
    pub field: &'static str,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    grant: Vec<RawGrant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    identity: String,
    role: String,
    #[serde(default)]
    tenants: Vec<String>,
}

impl Policy {
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let file: File = toml::from_str(text).map_err(|e| PolicyError {
            grant: "-".into(),
            field: "file",
            reason: e.message().to_owned(),
        })?;
        let mut grants = Vec::new();
        for (i, raw) in file.grant.into_iter().enumerate() {
            let err = |field, reason: String| PolicyError {
                grant: format!("#{} ({})", i + 1, raw.identity),
                field,
                reason,
            };
            let pattern: Vec<String> = raw.identity.split('/').map(str::to_owned).collect();
            if !raw.identity.starts_with("spiffe://") {
                return Err(err("identity", "must be a spiffe:// URI pattern".into()));
            }
            let role = match raw.role.as_str() {
                "admin" if raw.tenants.is_empty() => Role::Admin,
                "admin" => {
                    return Err(err(
                        "tenants",
                        "an admin sees every tenant; leave tenants out".into(),
                    ));
                }
                "analyst" if raw.tenants.is_empty() => {
                    return Err(err(
                        "tenants",
                        "an analyst needs at least one tenant".into(),
                    ));
                }
                "analyst" => {
                    if let Some(bad) = raw.tenants.iter().find(|t| !is_valid_name(t)) {
                        return Err(err("tenants", format!("{bad:?} is not a tenant name")));
                    }
                    Role::Analyst {
                        tenants: raw.tenants.clone(),
                    }
                }
                other => return Err(err("role", format!("{other:?} is not analyst or admin"))),
            };
            grants.push(Grant { pattern, role });
        }
        Ok(Self { grants })
    }

    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            grant: "-".into(),
            field: "file",
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::parse(&text)
    }

    /// The role of a user identity, if any grant matches it.
    pub fn role_of(&self, identity: &Identity) -> Option<&Role> {
        let Principal::User { .. } = identity.principal else {
            return None;
        };
        let uri = identity.to_string();
        let segments: Vec<&str> = uri.split('/').collect();
        self.grants
            .iter()
            .find(|g| {
                g.pattern.len() == segments.len()
                    && g.pattern
                        .iter()
                        .zip(&segments)
                        .all(|(p, s)| p == "*" || p == s)
            })
            .map(|g| &g.role)
    }
}

/// A policy that follows its file: checked for changes every few seconds;
/// a file that no longer parses is refused and the last good policy stays.
#[derive(Clone)]
pub struct LivePolicy {
    current: Arc<RwLock<Policy>>,
    reloads: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
}

impl LivePolicy {
    pub fn fixed(policy: Policy) -> Self {
        Self {
            current: Arc::new(RwLock::new(policy)),
            reloads: Arc::new(AtomicU64::new(0)),
            failures: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Policy files loaded since start-up.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Policy files refused since start-up (the previous policy stayed).
    pub fn reload_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Re-reads `path` (already loaded into this policy) when it changes,
    /// checking every `every`, until `shutdown`.
    pub fn watch(
        &self,
        path: PathBuf,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let live = self.clone();
        let modified = |p: &Path| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        let mut seen = modified(&path);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let now = modified(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                match Policy::load(&path) {
                    Ok(policy) => {
                        tracing::info!(path = %path.display(), "policy reloaded");
                        if let Ok(mut guard) = live.current.write() {
                            *guard = policy;
                        }
                        live.reloads.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        tracing::error!(%error, "policy file refused; the previous policy stays in force");
                        live.failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }

    pub fn role_of(&self, identity: &Identity) -> Option<Role> {
        self.current
            .read()
            .ok()
            .and_then(|p| p.role_of(identity).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[[grant]]
identity = "spiffe://vigil.local/user/acme-analyst"
role = "analyst"
tenants = ["acme"]

[[grant]]
identity = "spiffe://vigil.local/user/admin"
role = "admin"

[[grant]]
identity = "spiffe://vigil.local/user/*"
role = "analyst"
tenants = ["acme", "globex"]
"#;

    fn user(name: &str) -> Identity {
        crate::identity::TrustDomain::default().identity(Principal::User { name: name.into() })
    }

    #[test]
    fn first_matching_grant_wins() -> Result<(), PolicyError> {
        let p = Policy::parse(POLICY)?;
        assert_eq!(
            p.role_of(&user("acme-analyst")),
            Some(&Role::Analyst {
                tenants: vec!["acme".into()]
            })
        );
        assert_eq!(p.role_of(&user("admin")), Some(&Role::Admin));
        assert_eq!(
            p.role_of(&user("bob")),
            Some(&Role::Analyst {
                tenants: vec!["acme".into(), "globex".into()]
            })
        );
        let device = crate::identity::TrustDomain::default().identity(Principal::Device {
            tenant: "acme".into(),
            device: "cam-01".into(),
        });
        assert_eq!(p.role_of(&device), None);
        Ok(())
    }

    #[test]
    fn bad_grants_are_refused_by_name() {
        for (text, field) in [
            (
                "[[grant]]\nidentity = \"spiffe://vigil.local/user/x\"\nrole = \"root\"",
                "role",
            ),
            (
                "[[grant]]\nidentity = \"spiffe://vigil.local/user/x\"\nrole = \"analyst\"",
                "tenants",
            ),
            (
                "[[grant]]\nidentity = \"user/x\"\nrole = \"admin\"",
                "identity",
            ),
            (
                "[[grant]]\nidentity = \"spiffe://vigil.local/user/x\"\nrole = \"analyst\"\ntenants = [\"a.b\"]",
                "tenants",
            ),
        ] {
            assert_eq!(
                Policy::parse(text).map_err(|e| e.field),
                Err(field),
                "{text}"
            );
        }
    }
}
