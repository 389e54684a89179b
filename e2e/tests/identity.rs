//! Who may connect, and who may call what: certificates from a foreign CA
//! and clients without a certificate never reach a service; devices may
//! only publish, users may only query.

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use vigil_client::TlsFiles;
use vigil_e2e::Mesh;
use vigil_proto::ingest::v1::PublishRequest;
use vigil_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use vigil_proto::query::v1::ListEventsRequest;
use vigil_proto::query::v1::query_service_client::QueryServiceClient;

fn one_event() -> Vec<vigil_proto::event::v1::SecurityEvent> {
    let mut rng = rand::rng();
    vec![vigil_client::events::sample(
        vigil_client::events::Kind::LoginFailure,
        &mut rng,
        vigil_common::now_millis(),
    )]
}

/// Calls Publish and ListEvents at `url` with `channel_result`; both must
/// fail (at connect or at the call). Returns the errors for the message.
async fn publish_fails(
    channel: Result<tonic::transport::Channel, String>,
) -> Result<String, String> {
    let channel = match channel {
        Err(e) => return Ok(e),
        Ok(c) => c,
    };
    match IngestServiceClient::new(channel)
        .publish(PublishRequest {
            events: one_event(),
        })
        .await
    {
        Ok(_) => Err("publish succeeded".into()),
        Err(status) => Ok(status.to_string()),
    }
}

async fn list_fails(channel: Result<tonic::transport::Channel, String>) -> Result<String, String> {
    let channel = match channel {
        Err(e) => return Ok(e),
        Ok(c) => c,
    };
    match QueryServiceClient::new(channel)
        .list_events(ListEventsRequest::default())
        .await
    {
        Ok(_) => Err("query succeeded".into()),
        Err(status) => Ok(status.to_string()),
    }
}

async fn without_certificate(
    url: &str,
    ca: &std::path::Path,
) -> Result<tonic::transport::Channel, String> {
    let ca = std::fs::read(ca).map_err(|e| e.to_string())?;
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .map_err(|e| e.to_string())?;
    endpoint
        .connect()
        .await
        .map_err(|e| vigil_client::root_cause(&e))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_ca_and_missing_certificates_cannot_connect() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let foreign_device = TlsFiles {
        ca: mesh.pki.ca(),
        cert: mesh.pki.foreign_device().cert,
        key: mesh.pki.foreign_device().key,
    };
    let foreign_user = TlsFiles {
        ca: mesh.pki.ca(),
        cert: mesh.pki.foreign_user().cert,
        key: mesh.pki.foreign_user().key,
    };

    let connect = |url: String, files: TlsFiles| async move {
        vigil_client::connect(&url, &files)
            .await
            .map_err(|e| e.to_string())
    };
    publish_fails(connect(mesh.gateway_url(), foreign_device.clone()).await)
        .await
        .map_err(|e| anyhow::anyhow!("foreign device on gateway: {e}"))?;
    list_fails(connect(mesh.reader_url(), foreign_user).await)
        .await
        .map_err(|e| anyhow::anyhow!("foreign user on reader: {e}"))?;
    publish_fails(without_certificate(&mesh.gateway_url(), &mesh.pki.ca()).await)
        .await
        .map_err(|e| anyhow::anyhow!("no certificate on gateway: {e}"))?;
    list_fails(without_certificate(&mesh.reader_url(), &mesh.pki.ca()).await)
        .await
        .map_err(|e| anyhow::anyhow!("no certificate on reader: {e}"))?;

    // A legitimate device still works afterwards, and nothing the refused
    // clients sent was stored.
    let mut device = mesh.device("acme", "cam-01").await?;
    assert_eq!(
        device
            .publish(PublishRequest {
                events: one_event()
            })
            .await?
            .into_inner()
            .accepted,
        1
    );
    mesh.wait_for_events(1).await?;
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_may_only_publish_and_users_may_only_query() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    // A device asking the reader.
    let device_on_reader =
        vigil_client::connect(&mesh.reader_url(), &mesh.device_files("acme", "cam-01")).await?;
    let status = QueryServiceClient::new(device_on_reader)
        .list_events(ListEventsRequest::default())
        .await;
    assert_eq!(
        status.map(|_| ()).map_err(|s| s.code()),
        Err(tonic::Code::PermissionDenied)
    );
    // The analyst publishing to the gateway.
    let analyst_on_gateway =
        vigil_client::connect(&mesh.gateway_url(), &mesh.analyst_files()).await?;
    let status = IngestServiceClient::new(analyst_on_gateway)
        .publish(PublishRequest {
            events: one_event(),
        })
        .await;
    assert_eq!(
        status.map(|_| ()).map_err(|s| s.code()),
        Err(tonic::Code::PermissionDenied)
    );
    // A service's NATS certificate is from the same CA but is no device.
    let p = mesh.pki.nats_client("gateway");
    let service = TlsFiles {
        ca: mesh.pki.ca(),
        cert: p.cert,
        key: p.key,
    };
    let service_on_gateway = vigil_client::connect(&mesh.gateway_url(), &service).await?;
    let status = IngestServiceClient::new(service_on_gateway)
        .publish(PublishRequest {
            events: one_event(),
        })
        .await;
    assert_eq!(
        status.map(|_| ()).map_err(|s| s.code()),
        Err(tonic::Code::PermissionDenied)
    );
    assert_eq!(mesh.stored_events().await?, 0);
    mesh.stop().await;
    Ok(())
}
