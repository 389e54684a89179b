//! `vigil send`: one test event, as a device.

use std::path::PathBuf;

use vigil_client::TlsFiles;
use vigil_proto::ingest::v1::PublishRequest;
use vigil_proto::ingest::v1::ingest_service_client::IngestServiceClient;

use crate::exit::{Failure, code, status_failure};
use crate::{Output, output};

/// `vigil send`'s own flags.
#[derive(clap::Args)]
pub struct Send {
    /// Device certificate (its URI SAN names tenant and device).
    #[arg(
        long,
        env = "VIGIL_DEVICE_CERT",
        default_value = "certs/out/devices/acme.cam-01.crt"
    )]
    pub device_cert: PathBuf,
    #[arg(
        long,
        env = "VIGIL_DEVICE_KEY",
        default_value = "certs/out/devices/acme.cam-01.key"
    )]
    pub device_key: PathBuf,
    /// auth-success, auth-failure, authorize, process, network, http, dns, ssh or file.
    #[arg(long, default_value = "auth-failure")]
    pub kind: String,
    /// Override the severity.
    #[arg(long, value_parser = crate::parse_severity)]
    pub severity: Option<i32>,
    /// Override the message.
    #[arg(long)]
    pub message: Option<String>,
}

pub async fn send(args: Send, gateway: &str, ca: PathBuf, out: Output) -> Result<(), Failure> {
    let Send {
        device_cert,
        device_key,
        kind,
        severity,
        message,
    } = args;
    let kind = vigil_client::events::Kind::parse(&kind).ok_or_else(|| {
        Failure::new(
            code::USAGE,
            format!(
                "unknown kind {kind:?} (auth-success, auth-failure, process, network, dns, file)"
            ),
        )
    })?;
    let mut event = vigil_client::events::sample(
        kind,
        &mut rand::rng(),
        chrono::Utc::now().timestamp_millis(),
    );
    if let Some(s) = severity {
        event.severity_id = s;
    }
    if let Some(m) = message {
        event.message = m;
    }
    let device = TlsFiles {
        ca,
        cert: device_cert.clone(),
        key: device_key,
    };
    let channel = vigil_client::connect(gateway, &device).await?;
    let id = event.uid().to_owned();
    let response = IngestServiceClient::new(channel)
        .publish(PublishRequest {
            events: vec![event],
        })
        .await
        .map_err(|s| status_failure("send", gateway, &device_cert, s))?
        .into_inner();
    if let Some(r) = response.rejected.first() {
        return Err(Failure::new(
            code::INVALID,
            format!("send: event rejected: {}: {}", r.field, r.reason),
        ));
    }
    output::sent(out, &id);
    Ok(())
}
