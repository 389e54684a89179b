//! `vigil send`: one test event, as a device.

use std::path::PathBuf;

use vigil_client::TlsFiles;
use vigil_proto::ingest::v1::PublishRequest;
use vigil_proto::ingest::v1::ingest_service_client::IngestServiceClient;

use crate::exit::{Failure, code, status_failure};
use crate::{Output, output};

pub struct Send {
    /// Gateway address.
    pub gateway: String,
    /// CA bundle the gateway's certificate chains to.
    pub ca: PathBuf,
    pub device_cert: PathBuf,
    pub device_key: PathBuf,
    pub kind: String,
    pub severity: Option<i32>,
    pub message: Option<String>,
}

pub async fn send(args: Send, out: Output) -> Result<(), Failure> {
    let Send {
        gateway,
        ca,
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
    let channel = vigil_client::connect(&gateway, &device).await?;
    let id = event.uid().to_owned();
    let response = IngestServiceClient::new(channel)
        .publish(PublishRequest {
            events: vec![event],
        })
        .await
        .map_err(|s| status_failure("send", &gateway, &device_cert, s))?
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
