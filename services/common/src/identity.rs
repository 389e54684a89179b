//! Caller identities, taken from the URI SAN of a verified client
//! certificate and never from anything the caller sends in a request. The
//! scheme itself (trust domain, URI formats) is `vigil-identity`.

use std::net::SocketAddr;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub use vigil_identity::{
    DEFAULT_TRUST_DOMAIN, Identity, IdentityError, Principal, TrustDomain, is_valid_name,
};

/// The one URI SAN of a DER certificate (none or several is an error).
pub fn single_uri(der: &[u8]) -> Result<String, IdentityError> {
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
    Ok(first.to_owned())
}

/// The identity in a DER certificate: exactly one URI SAN, of `domain`.
pub fn from_certificate(der: &[u8], domain: &TrustDomain) -> Result<Identity, IdentityError> {
    domain.parse(&single_uri(der)?)
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

    fn der(path: &std::path::Path) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        Ok(CertificateDer::from_pem_file(path)?.to_vec())
    }

    #[test]
    fn the_trust_domain_the_pki_issues_in_is_the_one_services_accept()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let corp = TrustDomain::new("corp.example")?;
        let pki = vigil_certs::generate(
            dir.path(),
            &vigil_certs::Options {
                trust_domain: corp.clone(),
                ..Default::default()
            },
        )?;
        let device = der(&pki.device("acme", "cam-01").cert)?;
        let identity = from_certificate(&device, &corp)?;
        assert_eq!(
            identity.principal,
            Principal::Device {
                tenant: "acme".into(),
                device: "cam-01".into()
            }
        );
        assert_eq!(
            identity.to_string(),
            "spiffe://corp.example/tenant/acme/device/cam-01"
        );
        assert!(matches!(
            from_certificate(&device, &TrustDomain::default()),
            Err(IdentityError::Unrecognised(_))
        ));
        assert_eq!(
            from_certificate(&der(&pki.bad("two-uris").cert)?, &corp),
            Err(IdentityError::SeveralUris)
        );
        Ok(())
    }
}
