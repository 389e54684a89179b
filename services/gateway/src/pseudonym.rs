//! Per-tenant pseudonymisation: chosen fields of a tenant's events are
//! replaced by a keyed hash at the gateway, before the event reaches
//! JetStream, so no stream, table or finding ever holds the raw value.
//! The hash is deterministic per tenant (HMAC-SHA256 under a key derived
//! from the master key and the tenant), so equal values stay equal and the
//! correlator still groups and joins on them; the same value in two tenants
//! gets unrelated pseudonyms.
//!
//! The file (`VIGIL_GATEWAY_PSEUDONYMISE`) names fields per tenant:
//!
//! ```toml
//! [tenant.globex]
//! fields = ["user.name", "actor.user.name", "src_endpoint.ip"]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::Deserialize;
use vigil_proto::event::v1::SecurityEvent;

/// Fields that may be pseudonymised.
pub const FIELDS: &[&str] = &[
    "user.name",
    "user.uid",
    "actor.user.name",
    "actor.user.uid",
    "src_endpoint.ip",
    "src_endpoint.hostname",
    "dst_endpoint.ip",
    "dst_endpoint.hostname",
];

/// Every pseudonym starts with this, so an analyst can tell one apart.
pub const PREFIX: &str = "ps_";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tenant: BTreeMap<String, TenantFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantFile {
    fields: Vec<String>,
}

struct Tenant {
    key: hmac::Key,
    fields: Vec<&'static str>,
}

/// The configured tenants and their keys.
pub struct Pseudonymiser {
    tenants: HashMap<String, Tenant>,
}

impl Pseudonymiser {
    /// Reads the field file and the master key (at least 32 bytes); errors
    /// name the file and the problem.
    pub fn load(config: &Path, master_key: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(config)
            .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
        let secret = std::fs::read(master_key)
            .map_err(|e| format!("cannot read {}: {e}", master_key.display()))?;
        Self::parse(&text, &secret).map_err(|e| format!("{}: {e}", config.display()))
    }

    pub fn parse(text: &str, master_key: &[u8]) -> Result<Self, String> {
        if master_key.len() < 32 {
            return Err("the pseudonym key must hold at least 32 bytes".into());
        }
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let master = hmac::Key::new(hmac::HMAC_SHA256, master_key);
        let mut tenants = HashMap::new();
        for (tenant, rule) in file.tenant {
            let mut fields = Vec::new();
            for field in &rule.fields {
                let known = FIELDS
                    .iter()
                    .find(|f| **f == field.as_str())
                    .ok_or_else(|| {
                        format!(
                            "tenant {tenant}: {field:?} cannot be pseudonymised (one of {})",
                            FIELDS.join(", ")
                        )
                    })?;
                fields.push(*known);
            }
            let derived = hmac::sign(&master, format!("vigil-pseudonym|{tenant}").as_bytes());
            tenants.insert(
                tenant,
                Tenant {
                    key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
                    fields,
                },
            );
        }
        Ok(Self { tenants })
    }

    /// Replaces the tenant's chosen fields of `event` (an accepted event of
    /// `tenant`) by their pseudonyms. Empty values stay empty.
    pub fn apply(&self, tenant: &str, event: &mut SecurityEvent) {
        let Some(t) = self.tenants.get(tenant) else {
            return;
        };
        for field in &t.fields {
            let value = match *field {
                "user.name" => event.user.as_mut().map(|u| &mut u.name),
                "user.uid" => event.user.as_mut().map(|u| &mut u.uid),
                "actor.user.name" => event
                    .actor
                    .as_mut()
                    .and_then(|a| a.user.as_mut())
                    .map(|u| &mut u.name),
                "actor.user.uid" => event
                    .actor
                    .as_mut()
                    .and_then(|a| a.user.as_mut())
                    .map(|u| &mut u.uid),
                "src_endpoint.ip" => event.src_endpoint.as_mut().map(|e| &mut e.ip),
                "src_endpoint.hostname" => event.src_endpoint.as_mut().map(|e| &mut e.hostname),
                "dst_endpoint.ip" => event.dst_endpoint.as_mut().map(|e| &mut e.ip),
                "dst_endpoint.hostname" => event.dst_endpoint.as_mut().map(|e| &mut e.hostname),
                _ => None,
            };
            if let Some(value) = value
                && !value.is_empty()
            {
                *value = pseudonym(&t.key, value);
            }
        }
    }
}

fn pseudonym(key: &hmac::Key, value: &str) -> String {
    let tag = hmac::sign(key, value.as_bytes());
    // 128 bits: collisions are not a practical concern for grouping.
    format!(
        "{PREFIX}{}",
        URL_SAFE_NO_PAD.encode(tag.as_ref().get(..16).unwrap_or_default())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::event::v1::{Actor, NetworkEndpoint, User};

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn event(user: &str, ip: &str) -> SecurityEvent {
        SecurityEvent {
            actor: Some(Actor {
                user: Some(User {
                    name: user.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            src_endpoint: Some(NetworkEndpoint {
                ip: ip.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn parts(e: &SecurityEvent) -> (String, String) {
        (
            e.actor
                .as_ref()
                .and_then(|a| a.user.as_ref())
                .map(|u| u.name.clone())
                .unwrap_or_default(),
            e.src_endpoint
                .as_ref()
                .map(|s| s.ip.clone())
                .unwrap_or_default(),
        )
    }

    #[test]
    fn configured_fields_are_replaced_deterministically_per_tenant() -> Result<(), String> {
        let p = Pseudonymiser::parse(
            "[tenant.globex]\nfields = [\"actor.user.name\", \"src_endpoint.ip\"]\n[tenant.acme]\nfields = [\"actor.user.name\"]\n",
            KEY,
        )?;
        let (mut a, mut b) = (event("alice", "10.1.2.3"), event("alice", "10.1.2.3"));
        p.apply("globex", &mut a);
        p.apply("globex", &mut b);
        let (user, ip) = parts(&a);
        assert!(user.starts_with(PREFIX) && ip.starts_with(PREFIX));
        assert_ne!(user, ip);
        assert_eq!(parts(&a), parts(&b), "equal values, equal pseudonyms");
        let mut other = event("alice", "10.1.2.3");
        p.apply("acme", &mut other);
        let (acme_user, acme_ip) = parts(&other);
        assert_ne!(acme_user, user, "tenants' pseudonyms are unrelated");
        assert_eq!(acme_ip, "10.1.2.3", "acme keeps the ip");
        let mut untouched = event("alice", "");
        p.apply("initech", &mut untouched);
        assert_eq!(parts(&untouched), ("alice".into(), String::new()));
        Ok(())
    }

    #[test]
    fn unknown_fields_and_short_keys_are_refused() {
        let unknown = Pseudonymiser::parse("[tenant.a]\nfields = [\"message\"]\n", KEY).err();
        assert!(unknown.is_some_and(|e| e.contains("\"message\"")));
        assert!(Pseudonymiser::parse("", b"short").is_err());
    }
}
