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
//! | `ca.crl`, `revoked.txt` | the CA's revocation list (PEM) and the revoked serials it lists; [`revoke`] adds one |
//! | `bad/<case>.{crt,key}` | certificates every listener must refuse ([`BAD_CASES`]), and one it must accept but not authenticate (`other-domain`) |
//!
//! Private keys are written with mode 0600.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};

/// Certificates in `bad/` that every mTLS listener must refuse at the
/// handshake, each chaining to the vigil CA unless its name says otherwise:
/// `expired`, `not-yet-valid`, `server-only` (serverAuth EKU, no
/// clientAuth), `ca-leaf` (a CA certificate presented as a client),
/// `two-uris` (two URI SAN identities), `no-uri` (no identity at all),
/// `revoked` (device acme/revoked-01, listed in `ca.crl`). The first four
/// also exist as `nats-<case>` for the NATS user `subscriber`.
pub const BAD_CASES: &[&str] = &[
    "expired",
    "not-yet-valid",
    "server-only",
    "ca-leaf",
    "two-uris",
    "no-uri",
    "revoked",
];

pub use vigil_identity::{DEFAULT_TRUST_DOMAIN, TrustDomain};

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
    /// The CA's common name (distinct names let two CAs share a trust
    /// bundle during a rotation).
    pub ca_name: String,
    /// The trust domain of every identity issued (the services must be
    /// given the same `VIGIL_TRUST_DOMAIN`, and `nats-config/users.conf`
    /// names its users in the default one).
    pub trust_domain: TrustDomain,
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
            ca_name: "vigil dev CA".into(),
            trust_domain: TrustDomain::default(),
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
    /// The CA's CRL (PEM).
    pub fn crl(&self) -> PathBuf {
        self.dir.join("ca.crl")
    }
    /// A certificate of [`BAD_CASES`], or `other-domain` (a valid chain
    /// whose URI SAN `spiffe://evil.example/user/admin` is no vigil identity).
    pub fn bad(&self, case: &str) -> CertPaths {
        self.pair("bad", case)
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

struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

/// Generates a complete PKI into `dir` (created if missing; existing files
/// are overwritten).
pub fn generate(dir: &Path, options: &Options) -> anyhow::Result<Pki> {
    let pki = Pki::at(dir);
    for sub in ["server", "nats", "devices", "users", "foreign", "bad"] {
        fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let domain = &options.trust_domain;
    let ca = new_ca(&options.ca_name, &dir.join("ca.crt"), &dir.join("ca.key"))?;
    for server in ["gateway", "reader", "nats"] {
        issue_server(&ca, server, &pki.server(server), options.validity_days)?;
    }
    for service in NATS_USERS {
        issue_client(
            &ca,
            &format!("nats {service}"),
            &domain.service_uri(service),
            &pki.nats_client(service),
            options.validity_days,
        )?;
    }
    for (tenant, device) in &options.devices {
        issue_client(
            &ca,
            &format!("{tenant}/{device}"),
            &domain.device_uri(tenant, device),
            &pki.device(tenant, device),
            options.validity_days,
        )?;
    }
    for user in &options.users {
        issue_client(
            &ca,
            user,
            &domain.user_uri(user),
            &pki.user(user),
            options.validity_days,
        )?;
    }
    issue_bad(&ca, &pki, domain, options.validity_days)?;
    let foreign = new_ca("foreign CA", &pki.foreign_ca(), &dir.join("foreign/ca.key"))?;
    issue_client(
        &foreign,
        "acme/cam-01",
        &domain.device_uri("acme", "cam-01"),
        &pki.foreign_device(),
        options.validity_days,
    )?;
    issue_client(
        &foreign,
        "analyst",
        &domain.user_uri("analyst"),
        &pki.foreign_user(),
        options.validity_days,
    )?;
    Ok(pki)
}

/// A client certificate as [`issue_client`] makes it, with the knobs the
/// negative cases turn.
struct Leaf<'a> {
    cn: &'a str,
    uris: Vec<String>,
    eku: Vec<ExtendedKeyUsagePurpose>,
    is_ca: bool,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
}

impl<'a> Leaf<'a> {
    fn client(cn: &'a str, uri: &str, days: i64) -> Self {
        let now = time::OffsetDateTime::now_utc();
        Self {
            cn,
            uris: vec![uri.to_owned()],
            eku: vec![ExtendedKeyUsagePurpose::ClientAuth],
            is_ca: false,
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(days),
        }
    }

    fn issue(self, ca: &Ca, out: &CertPaths) -> anyhow::Result<()> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(self.cn);
        params.subject_alt_names = self
            .uris
            .iter()
            .map(|u| Ok(SanType::URI(u.as_str().try_into()?)))
            .collect::<anyhow::Result<_>>()?;
        params.serial_number = Some(SerialNumber::from(rand_serial()));
        if self.is_ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
        } else {
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        }
        params.extended_key_usages = self.eku;
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        let cert = params.signed_by(&key, &ca.issuer)?;
        write_public(&out.cert, &cert.pem())?;
        write_private(&out.key, &key.serialize_pem())
    }
}

fn rand_serial() -> u64 {
    // Positive and never zero: the top bit clear, the low bit set.
    (rand::random::<u64>() >> 1) | 1
}

fn issue_bad(ca: &Ca, pki: &Pki, domain: &TrustDomain, days: i64) -> anyhow::Result<()> {
    // The certificate-level cases, for a device (gateway, reader) and for a
    // NATS user (`nats-<case>`, URI of the subscriber user).
    for (prefix, uri) in [
        ("", domain.device_uri("acme", "cam-01")),
        ("nats-", domain.service_uri("subscriber")),
    ] {
        let now = time::OffsetDateTime::now_utc();
        let mut expired = Leaf::client("expired", &uri, days);
        expired.not_before = now - time::Duration::days(30);
        expired.not_after = now - time::Duration::days(1);
        expired.issue(ca, &pki.bad(&format!("{prefix}expired")))?;
        let mut early = Leaf::client("not yet valid", &uri, days);
        early.not_before = now + time::Duration::days(1);
        early.not_after = now + time::Duration::days(30);
        early.issue(ca, &pki.bad(&format!("{prefix}not-yet-valid")))?;
        let mut server_only = Leaf::client("server only", &uri, days);
        server_only.eku = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_only.issue(ca, &pki.bad(&format!("{prefix}server-only")))?;
        let mut ca_leaf = Leaf::client("a CA as a client", &uri, days);
        ca_leaf.is_ca = true;
        ca_leaf.issue(ca, &pki.bad(&format!("{prefix}ca-leaf")))?;
    }
    let uri = domain.device_uri("acme", "cam-01");
    let mut two = Leaf::client("two identities", &uri, days);
    two.uris.push(domain.user_uri("admin"));
    two.issue(ca, &pki.bad("two-uris"))?;
    let mut none = Leaf::client("no identity", &uri, days);
    none.uris.clear();
    none.issue(ca, &pki.bad("no-uri"))?;
    Leaf::client(
        "acme/revoked-01",
        &domain.device_uri("acme", "revoked-01"),
        days,
    )
    .issue(ca, &pki.bad("revoked"))?;
    Leaf::client("evil admin", "spiffe://evil.example/user/admin", days)
        .issue(ca, &pki.bad("other-domain"))?;
    fs::write(pki.dir.join("revoked.txt"), "")
        .with_context(|| format!("writing {}", pki.dir.join("revoked.txt").display()))?;
    revoke(&pki.dir, &pki.bad("revoked").cert)
}

/// Revokes the certificate at `cert` (issued by the CA in `dir`): adds its
/// serial to `revoked.txt` and rewrites `ca.crl`, signed by the CA. Services
/// pick the new CRL up within seconds and cut its open connections.
pub fn revoke(dir: &Path, cert: &Path) -> anyhow::Result<()> {
    let pem = fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    let (_, parsed) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", cert.display()))?;
    let x509 = parsed
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
    let serial = hex(x509.raw_serial());
    let list_path = dir.join("revoked.txt");
    let mut serials: Vec<String> = fs::read_to_string(&list_path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect();
    if !serials.contains(&serial) {
        serials.push(serial);
    }
    let key_pem = fs::read_to_string(dir.join("ca.key"))
        .with_context(|| format!("reading {}", dir.join("ca.key").display()))?;
    let ca_pem = fs::read(dir.join("ca.crt"))
        .with_context(|| format!("reading {}", dir.join("ca.crt").display()))?;
    let (_, ca_parsed) = x509_parser::pem::parse_x509_pem(&ca_pem)
        .map_err(|e| anyhow::anyhow!("ca.crt: not a PEM certificate: {e}"))?;
    let ca_x509 = ca_parsed
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("ca.crt: {e}"))?;
    let ca_cn = ca_x509
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .context("ca.crt has no common name")?
        .to_owned();
    let issuer = Issuer::new(ca_params(&ca_cn), KeyPair::from_pem(&key_pem)?);
    let now = time::OffsetDateTime::now_utc();
    let crl = CertificateRevocationListParams {
        this_update: now - time::Duration::minutes(5),
        next_update: now + time::Duration::days(7),
        crl_number: SerialNumber::from(u64::try_from(now.unix_timestamp()).unwrap_or(1)),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .filter_map(|s| unhex(s))
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: now - time::Duration::minutes(5),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)?;
    // Write the list first, then swap the CRL in atomically so a service
    // never reads half a file.
    fs::write(&list_path, serials.join("\n") + "\n")
        .with_context(|| format!("writing {}", list_path.display()))?;
    let tmp = dir.join("ca.crl.tmp");
    write_public(&tmp, &crl.pem()?)?;
    fs::rename(&tmp, dir.join("ca.crl")).with_context(|| "replacing ca.crl".to_owned())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
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
    let mut params = ca_params(cn);
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
    Leaf::client(cn, uri, days).issue(ca, out)
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
    use x509_parser::prelude::FromDer;

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
        for case in BAD_CASES.iter().chain(&["other-domain"]) {
            let pair = pki.bad(case);
            assert!(pair.cert.is_file(), "{case}");
            let mode = fs::metadata(&pair.key)?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{case}");
        }
        Ok(())
    }

    /// No private key is committed: every file git tracks is scanned.
    #[test]
    fn repository_holds_no_private_keys() -> anyhow::Result<()> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        if !root.join(".git").exists() {
            eprintln!("not a git checkout; nothing to scan");
            return Ok(());
        }
        let out = std::process::Command::new("git")
            .args(["ls-files", "-z"])
            .current_dir(&root)
            .output()?;
        anyhow::ensure!(out.status.success(), "git ls-files failed");
        let files: Vec<&[u8]> = out
            .stdout
            .split(|b| *b == 0)
            .filter(|f| !f.is_empty())
            .collect();
        assert!(
            files.len() > 50,
            "git ls-files listed only {} files",
            files.len()
        );
        let marker = concat!("PRIVATE", " KEY-----");
        for file in files {
            let path = root.join(String::from_utf8_lossy(file).as_ref());
            let Ok(bytes) = fs::read(&path) else { continue };
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(marker),
                "{} holds a private key",
                path.display()
            );
        }
        Ok(())
    }

    fn serial_of(cert: &Path) -> anyhow::Result<Vec<u8>> {
        let pem = fs::read(cert)?;
        let (_, parsed) = x509_parser::pem::parse_x509_pem(&pem)?;
        Ok(parsed.parse_x509()?.raw_serial().to_vec())
    }

    fn crl_serials(dir: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
        let pem = fs::read(dir.join("ca.crl"))?;
        let (_, parsed) = x509_parser::pem::parse_x509_pem(&pem)?;
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&parsed.contents)?;
        Ok(crl
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect())
    }

    #[test]
    fn revoke_adds_the_serial_to_the_cas_crl() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let pki = generate(dir.path(), &Options::default())?;
        let revoked = serial_of(&pki.bad("revoked").cert)?;
        assert_eq!(crl_serials(dir.path())?, vec![revoked.clone()]);
        let device = pki.device("acme", "cam-01").cert;
        revoke(dir.path(), &device)?;
        revoke(dir.path(), &device)?; // idempotent
        let serials = crl_serials(dir.path())?;
        assert_eq!(serials, vec![revoked, serial_of(&device)?]);
        // Issued by the CA (webpki checks its signature in e2e/tests/edge.rs).
        let ca_pem = fs::read(pki.ca())?;
        let (_, ca) = x509_parser::pem::parse_x509_pem(&ca_pem)?;
        let ca = ca.parse_x509()?;
        let crl_pem = fs::read(dir.path().join("ca.crl"))?;
        let (_, crl) = x509_parser::pem::parse_x509_pem(&crl_pem)?;
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&crl.contents)?;
        assert_eq!(crl.issuer(), ca.subject());
        Ok(())
    }
}
