//! `vigil-certs`: writes vigil's development PKI into a directory.

use std::path::PathBuf;

use clap::Parser;

/// Generate the development PKI (CA, servers, NATS users, devices, analysts,
/// and a foreign CA for negative tests).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Output directory (keep it out of git; `certs/out` is ignored).
    #[arg(long, env = "VIGIL_CERTS_DIR", default_value = "certs/out")]
    out: PathBuf,
    /// Devices to issue, as `tenant/device`; repeat the flag. Default: two
    /// devices in each of the tenants acme and globex.
    #[arg(long = "device", value_parser = parse_device)]
    devices: Vec<(String, String)>,
    /// Analyst users to issue; repeat the flag. Default: analyst.
    #[arg(long = "user")]
    users: Vec<String>,
    /// Instead of generating: revoke this certificate (issued by the CA in
    /// --out) by adding it to `ca.crl`; services reload the CRL and cut its
    /// connections within seconds.
    #[arg(long, value_name = "CERT")]
    revoke: Option<PathBuf>,
    /// Validity of leaf certificates in days.
    #[arg(long, default_value_t = 90)]
    days: i64,
    /// The SPIFFE trust domain of every identity issued; the services read
    /// the same variable.
    #[arg(long, env = "VIGIL_TRUST_DOMAIN", default_value = vigil_certs::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
}

fn parse_device(s: &str) -> Result<(String, String), String> {
    let valid = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    match s.split_once('/') {
        Some((t, d)) if valid(t) && valid(d) => Ok((t.to_owned(), d.to_owned())),
        _ => Err(format!(
            "expected tenant/device with [A-Za-z0-9_-], got {s:?}"
        )),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(cert) = &args.revoke {
        vigil_certs::revoke(&args.out, cert)?;
        println!(
            "revoked {}; {} updated",
            cert.display(),
            args.out.join("ca.crl").display()
        );
        return Ok(());
    }
    let mut options = vigil_certs::Options {
        validity_days: args.days,
        trust_domain: vigil_certs::TrustDomain::new(&args.trust_domain)
            .map_err(|e| anyhow::anyhow!("--trust-domain (VIGIL_TRUST_DOMAIN): {e}"))?,
        ..Default::default()
    };
    if !args.devices.is_empty() {
        options.devices = args.devices;
    }
    if !args.users.is_empty() {
        options.users = args.users;
    }
    let pki = vigil_certs::generate(&args.out, &options)?;
    println!("wrote vigil PKI to {}", pki.dir.display());
    for (tenant, device, _) in pki.devices()? {
        println!("  device {tenant}/{device}");
    }
    Ok(())
}
