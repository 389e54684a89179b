//! vigil's development PKI, generated with rcgen (no key is ever committed).
//!
//! [`generate`] writes into one directory:
//!
//! | file | what |
//! |---|---|
//! | `ca.crt`, `ca.key` | the vigil CA every listener trusts |
//! | `server/{gateway,reader,nats}.{crt,key}` | server certificates, SAN `localhost` and `127.0.0.1` |
//! | `nats/{gateway,writer,reader,admin}.{crt,key}` | the services' NATS client certificates, URI SAN `spiffe://vigil.local/nats/<service>` (nats-server maps it to the user) |
//! | `devices/<tenant>.<device>.{crt,key}` | device certificates, URI SAN `spiffe://vigil.local/tenant/<tenant>/device/<device>` |
//! | `users/<name>.{crt,key}` | analyst certificates, URI SAN `spiffe://vigil.local/user/<name>` |
//! | `foreign/ca.crt`, `foreign/{device,analyst}.{crt,key}` | a second CA nobody trusts, and certificates it signed, for negative tests |
//!
//! Private keys are written with mode 0600.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The trust domain of every vigil identity.
pub const TRUST_DOMAIN: &str = "vigil.local";

/// The services that hold a NATS user of their own.
pub const NATS_USERS: &[&str] = &[
    "gateway",
    "writer",
    "reader",
    "admin",
    "subscriber",
    "correlator",
];

/// Which identities to issue besides the fixed service certificates.
#[derive(Debug, Clone)]
pub struct Options {
    /// `(tenant, device)` pairs.
    pub devices: Vec<(String, String)>,
    /// Analyst user names.
    pub users: Vec<String>,
    /// Validity of leaf certificates.
    pub validity_days: i64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            devices: vec![
                ("acme".into(), "cam-01".into()),
                ("acme".into(), "host-01".into()),
                ("globex".into(), "sensor-01".into()),
                ("globex".into(), "host-02".into()),
                ("initech".into(), "ws-01".into()),
            ],
            // `intern` is in no grant of deploy/policy.toml: refused.
            users: vec![
                "analyst".into(),
                "acme-analyst".into(),
                "admin".into(),
                "intern".into(),
            ],
            validity_days: 90,
        }
    }
}

/// A certificate and its key on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Paths into a generated PKI directory.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// Opens an already generated directory (no check that files exist).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn server(&self, name: &str) -> CertPaths {
        self.pair("server", name)
    }
    pub fn nats_client(&self, service: &str) -> CertPaths {
        self.pair("nats", service)
    }
    pub fn device(&self, tenant: &str, device: &str) -> CertPaths {
        self.pair("devices", &format!("{tenant}.{device}"))
    }
    pub fn user(&self, name: &str) -> CertPaths {
        self.pair("users", name)
    }
    pub fn foreign_ca(&self) -> PathBuf {
        self.dir.join("foreign/ca.crt")
    }
    /// A device certificate (`acme/cam-01`) signed by the foreign CA.
    pub fn foreign_device(&self) -> CertPaths {
        self.pair("foreign", "device")
    }
    /// A user certificate (`analyst`) signed by the foreign CA.
    pub fn foreign_user(&self) -> CertPaths {
        self.pair("foreign", "analyst")
    }
    /// Every device certificate in the directory, as `(tenant, device, paths)`.
    pub fn devices(&self) -> anyhow::Result<Vec<(String, String, CertPaths)>> {
        let dir = self.dir.join("devices");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "crt") {
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default();
                if let Some((tenant, device)) = stem.split_once('.') {
                    out.push((
                        tenant.to_owned(),
                        device.to_owned(),
                        self.device(tenant, device),
                    ));
                }
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok(out)
    }
    fn pair(&self, kind: &str, name: &str) -> CertPaths {
        CertPaths {
            cert: self.dir.join(kind).join(format!("{name}.crt")),
            key: self.dir.join(kind).join(format!("{name}.key")),
        }
    }
}

/// The URI SAN of a device.
pub fn device_uri(tenant: &str, device: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/tenant/{tenant}/device/{device}")
}

/// The URI SAN of an analyst user.
pub fn user_uri(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/user/{name}")
}

/// The URI SAN of a service's NATS client certificate; `nats-config/` names
/// its users by it.
pub fn nats_user_uri(service: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/nats/{service}")
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

/// Generates a complete PKI into `dir` (created if missing; existing files
/// are overwritten).
pub fn generate(dir: &Path, options: &Options) -> anyhow::Result<Pki> {
    let pki = Pki::at(dir);
    for sub in ["server", "nats", "devices", "users", "foreign"] {
        fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let ca = new_ca("vigil dev CA", &dir.join("ca.crt"), &dir.join("ca.key"))?;
    for server in ["gateway", "reader", "nats"] {
        issue_server(&ca, server, &pki.server(server), options.validity_days)?;
    }
    for service in NATS_USERS {
        issue_client(
            &ca,
            &format!("nats {service}"),
            &nats_user_uri(service),
            &pki.nats_client(service),
            options.validity_days,
        )?;
    }
    for (tenant, device) in &options.devices {
        issue_client(
            &ca,
            &format!("{tenant}/{device}"),
            &device_uri(tenant, device),
            &pki.device(tenant, device),
            options.validity_days,
        )?;
    }
    for user in &options.users {
        issue_client(
            &ca,
            user,
            &user_uri(user),
            &pki.user(user),
            options.validity_days,
        )?;
    }
    let foreign = new_ca("foreign CA", &pki.foreign_ca(), &dir.join("foreign/ca.key"))?;
    issue_client(
        &foreign,
        "acme/cam-01",
        &device_uri("acme", "cam-01"),
        &pki.foreign_device(),
        options.validity_days,
    )?;
    issue_client(
        &foreign,
        "analyst",
        &user_uri("analyst"),
        &pki.foreign_user(),
        options.validity_days,
    )?;
    Ok(pki)
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "vigil");
    dn.push(DnType::CommonName, cn);
    dn
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

fn new_ca(cn: &str, cert_path: &Path, key_path: &Path) -> anyhow::Result<Ca> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, 365);
    let cert = params.self_signed(&key)?;
    write_public(cert_path, &cert.pem())?;
    write_private(key_path, &key.serialize_pem())?;
    Ok(Ca {
        issuer: Issuer::new(params, key),
    })
}

fn issue_server(ca: &Ca, cn: &str, out: &CertPaths, days: i64) -> anyhow::Result<()> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    params.distinguished_name = name(cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut params, days);
    let cert = params.signed_by(&key, &ca.issuer)?;
    write_public(&out.cert, &cert.pem())?;
    write_private(&out.key, &key.serialize_pem())
}

fn issue_client(ca: &Ca, cn: &str, uri: &str, out: &CertPaths, days: i64) -> anyhow::Result<()> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn);
    params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, days);
    let cert = params.signed_by(&key, &ca.issuer)?;
    write_public(&out.cert, &cert.pem())?;
    write_private(&out.key, &key.serialize_pem())
}

fn write_public(path: &Path, pem: &str) -> anyhow::Result<()> {
    fs::write(path, pem).with_context(|| format!("writing {}", path.display()))
}

fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // Remove first so an existing file with looser permissions is not reused.
    let _ = fs::remove_file(path);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(pem.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generates_every_file_with_private_keys_0600() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let pki = generate(dir.path(), &Options::default())?;
        let mut pairs = vec![
            pki.server("gateway"),
            pki.nats_client("writer"),
            pki.user("analyst"),
        ];
        pairs.push(pki.foreign_device());
        for pair in pairs {
            assert!(fs::read_to_string(&pair.cert)?.starts_with("-----BEGIN CERTIFICATE-----"));
            let mode = fs::metadata(&pair.key)?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", pair.key.display());
        }
        assert_eq!(pki.devices()?.len(), 5);
        Ok(())
    }
}
