//! Client side of vigil: mTLS channels to the gateway and the reader, OCSF
//! event builders, and the names analysts read (classes, severities).
//! The CLI, the device simulator and the tests all connect through here;
//! [`device`] is the library a device embeds to publish reliably.

pub mod device;
pub mod events;
pub mod names;
pub mod ocsf_json;
pub mod scenario;

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The files a client presents: the CA it trusts, and its own certificate
/// and key (whose URI SAN is its identity).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad address {addr:?}: {reason}")]
    BadAddress { addr: String, reason: String },
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The innermost useful description of an error chain (tonic's top-level
/// "transport error" says nothing).
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut current = error.source();
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// Opens an mTLS channel to `addr` (`https://host:port`, or `host:port`).
pub async fn connect(addr: &str, files: &TlsFiles) -> Result<Channel, ClientError> {
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("https://{addr}")
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&files.ca)?))
        .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?));
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| ClientError::BadAddress {
            addr: addr.to_owned(),
            reason: root_cause(&e),
        })?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tls_config(tls)
        .map_err(|e| ClientError::BadAddress {
            addr: addr.to_owned(),
            reason: root_cause(&e),
        })?;
    endpoint.connect().await.map_err(|e| ClientError::Connect {
        addr: url,
        reason: root_cause(&e),
    })
}
