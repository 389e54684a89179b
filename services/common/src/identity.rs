//! Caller identities, taken from the URI SAN of a verified client
//! certificate and never from anything the caller sends in a request.
//!
//! | URI SAN | identity |
//! |---|---|
//! | `spiffe://vigil.local/tenant/<tenant>/device/<device>` | [`Identity::Device`] |
//! | `spiffe://vigil.local/user/<name>` | [`Identity::User`] |
//! | `spiffe://vigil.local/nats/<service>` | [`Identity::Service`] |

use std::fmt;
use std::net::SocketAddr;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub const TRUST_DOMAIN: &str = "vigil.local";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Device { tenant: String, device: String },
    User { name: String },
    Service { name: String },
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Device { tenant, device } => {
                write!(f, "spiffe://{TRUST_DOMAIN}/tenant/{tenant}/device/{device}")
            }
            Identity::User { name } => write!(f, "spiffe://{TRUST_DOMAIN}/user/{name}"),
            Identity::Service { name } => write!(f, "spiffe://{TRUST_DOMAIN}/nats/{name}"),
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

impl Identity {
    /// Parses a vigil SPIFFE URI.
    pub fn from_uri(uri: &str) -> Result<Self, IdentityError> {
        let unrecognised = || IdentityError::Unrecognised(uri.to_owned());
        let path = uri
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.strip_prefix(TRUST_DOMAIN))
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(unrecognised)?;
        let parts: Vec<&str> = path.split('/').collect();
        if !parts.iter().all(|p| is_valid_name(p)) {
            return Err(unrecognised());
        }
        match parts.as_slice() {
            ["tenant", tenant, "device", device] => Ok(Identity::Device {
                tenant: (*tenant).to_owned(),
                device: (*device).to_owned(),
            }),
            ["user", name] => Ok(Identity::User {
                name: (*name).to_owned(),
            }),
            ["nats", name] => Ok(Identity::Service {
                name: (*name).to_owned(),
            }),
            _ => Err(unrecognised()),
        }
    }

    /// The identity in a DER certificate: exactly one URI SAN, recognised.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Unparseable)?;
        let san = cert
            .subject_alternative_name()
            .map_err(|_| IdentityError::Unparseable)?
            .ok_or(IdentityError::NoUri)?;
        let mut uris = san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
        let first = uris.next().ok_or(IdentityError::NoUri)?;
        if uris.next().is_some() {
            return Err(IdentityError::SeveralUris);
        }
        Self::from_uri(first)
    }
}

/// What the TLS layer learned about a connection; tonic puts it in every
/// request's extensions.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    pub identity: Result<Identity, IdentityError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_and_round_trips() {
        for uri in [
            "spiffe://vigil.local/tenant/acme/device/cam-01",
            "spiffe://vigil.local/user/analyst",
            "spiffe://vigil.local/nats/writer",
        ] {
            let id = Identity::from_uri(uri);
            assert_eq!(id.as_ref().map(ToString::to_string).as_deref(), Ok(uri));
        }
    }

    #[test]
    fn refuses_foreign_domains_and_odd_paths() {
        for uri in [
            "spiffe://evil.local/user/analyst",
            "spiffe://vigil.local/tenant/acme/device/",
            "spiffe://vigil.local/tenant/ac.me/device/cam",
            "spiffe://vigil.local/tenant/acme/device/cam/extra",
            "spiffe://vigil.local/user/a*b",
            "https://vigil.local/user/analyst",
        ] {
            assert!(Identity::from_uri(uri).is_err(), "{uri}");
        }
    }
}
