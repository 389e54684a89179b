//! vigil's identity scheme, defined once: every identity is a SPIFFE URI in
//! one trust domain (default [`DEFAULT_TRUST_DOMAIN`], configurable with
//! `VIGIL_TRUST_DOMAIN`). `vigil-certs` issues certificates with these URIs
//! and the services parse them back; `nats-config/users.conf` names the
//! NATS users by the same URIs.
//!
//! | URI SAN | principal |
//! |---|---|
//! | `spiffe://<domain>/tenant/<tenant>/device/<device>` | [`Principal::Device`] |
//! | `spiffe://<domain>/user/<name>` | [`Principal::User`] |
//! | `spiffe://<domain>/nats/<service>` | [`Principal::Service`] |

#![forbid(unsafe_code)]

use std::fmt;
use std::sync::Arc;

/// The trust domain of the development PKI and of `nats-config/users.conf`.
pub const DEFAULT_TRUST_DOMAIN: &str = "vigil.local";

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-` and `_`
/// (the SPIFFE ID standard's alphabet), at most 255 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrustDomain(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a trust domain (lowercase letters, digits, '.', '-', '_'; 1 to 255 characters)"
)]
pub struct InvalidTrustDomain(String);

impl TrustDomain {
    pub fn new(name: &str) -> Result<Self, InvalidTrustDomain> {
        let ok = !name.is_empty()
            && name.len() <= 255
            && name.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
            });
        if ok {
            Ok(Self(name.into()))
        } else {
            Err(InvalidTrustDomain(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identity of `principal` in this domain.
    pub fn identity(&self, principal: Principal) -> Identity {
        Identity {
            domain: self.clone(),
            principal,
        }
    }

    pub fn device_uri(&self, tenant: &str, device: &str) -> String {
        self.identity(Principal::Device {
            tenant: tenant.to_owned(),
            device: device.to_owned(),
        })
        .to_string()
    }

    pub fn user_uri(&self, name: &str) -> String {
        self.identity(Principal::User {
            name: name.to_owned(),
        })
        .to_string()
    }

    /// The URI of a service's NATS client certificate.
    pub fn service_uri(&self, service: &str) -> String {
        self.identity(Principal::Service {
            name: service.to_owned(),
        })
        .to_string()
    }

    /// Parses a URI of this domain; any other domain is
    /// [`IdentityError::Unrecognised`].
    pub fn parse(&self, uri: &str) -> Result<Identity, IdentityError> {
        let unrecognised = || IdentityError::Unrecognised(uri.to_owned());
        let path = uri
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.strip_prefix(self.as_str()))
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(unrecognised)?;
        let parts: Vec<&str> = path.split('/').collect();
        if !parts.iter().all(|p| is_valid_name(p)) {
            return Err(unrecognised());
        }
        let principal = match parts.as_slice() {
            ["tenant", tenant, "device", device] => Principal::Device {
                tenant: (*tenant).to_owned(),
                device: (*device).to_owned(),
            },
            ["user", name] => Principal::User {
                name: (*name).to_owned(),
            },
            ["nats", name] => Principal::Service {
                name: (*name).to_owned(),
            },
            _ => return Err(unrecognised()),
        };
        Ok(self.identity(principal))
    }
}

impl Default for TrustDomain {
    fn default() -> Self {
        Self(DEFAULT_TRUST_DOMAIN.into())
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who holds a certificate, within a trust domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    Device { tenant: String, device: String },
    User { name: String },
    Service { name: String },
}

/// A principal in a trust domain; displays as its SPIFFE URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub domain: TrustDomain,
    pub principal: Principal,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let domain = &self.domain;
        match &self.principal {
            Principal::Device { tenant, device } => {
                write!(f, "spiffe://{domain}/tenant/{tenant}/device/{device}")
            }
            Principal::User { name } => write!(f, "spiffe://{domain}/user/{name}"),
            Principal::Service { name } => write!(f, "spiffe://{domain}/nats/{name}"),
        }
    }
}

/// Why a certificate carries no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("no client certificate")]
    NoCertificate,
    #[error("client certificate cannot be parsed")]
    Unparseable,
    #[error("client certificate has no URI SAN identity")]
    NoUri,
    #[error("client certificate has more than one URI SAN identity")]
    SeveralUris,
    #[error("URI SAN {0:?} is not a vigil identity")]
    Unrecognised(String),
}

/// A name segment: what tenants, devices and users may be called. Keeps
/// identities safe to use as NATS subject tokens and in logs.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_and_round_trips() {
        let domain = TrustDomain::default();
        for uri in [
            "spiffe://vigil.local/tenant/acme/device/cam-01",
            "spiffe://vigil.local/user/analyst",
            "spiffe://vigil.local/nats/writer",
        ] {
            let id = domain.parse(uri);
            assert_eq!(id.as_ref().map(ToString::to_string).as_deref(), Ok(uri));
        }
        assert_eq!(
            domain.device_uri("acme", "cam-01"),
            "spiffe://vigil.local/tenant/acme/device/cam-01"
        );
    }

    #[test]
    fn refuses_foreign_domains_and_odd_paths() {
        let domain = TrustDomain::default();
        for uri in [
            "spiffe://evil.local/user/analyst",
            "spiffe://vigil.localx/user/analyst",
            "spiffe://vigil.local/tenant/acme/device/",
            "spiffe://vigil.local/tenant/ac.me/device/cam",
            "spiffe://vigil.local/tenant/acme/device/cam/extra",
            "spiffe://vigil.local/user/a*b",
            "https://vigil.local/user/analyst",
        ] {
            assert!(domain.parse(uri).is_err(), "{uri}");
        }
    }

    #[test]
    fn another_domain_is_its_own_world() -> Result<(), InvalidTrustDomain> {
        let corp = TrustDomain::new("corp.example")?;
        let uri = corp.user_uri("analyst");
        assert_eq!(uri, "spiffe://corp.example/user/analyst");
        assert!(corp.parse(&uri).is_ok());
        assert!(TrustDomain::default().parse(&uri).is_err());
        for bad in ["", "Vigil.local", "a/b", "a b"] {
            assert!(TrustDomain::new(bad).is_err(), "{bad:?}");
        }
        Ok(())
    }
}
