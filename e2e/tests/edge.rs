//! The edge of the mesh under attack: certificates that must be refused at
//! every listener (gateway, reader, NATS), revocation that cuts live
//! streams, rotation without a restart, the IP allowlist before TLS, and
//! rate limits keyed on the verified identity.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use vigil_client::TlsFiles;
use vigil_e2e::{Mesh, MeshOptions, wait_until};
use vigil_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use vigil_proto::ingest::v1::{PublishRequest, PublishStreamRequest};
use vigil_proto::query::v1::ListEventsRequest;
use vigil_proto::query::v1::query_service_client::QueryServiceClient;

fn events(n: usize) -> Vec<vigil_proto::event::v1::SecurityEvent> {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| {
            vigil_client::events::sample(
                vigil_client::events::Kind::LoginFailure,
                &mut rng,
                vigil_common::now_millis(),
            )
        })
        .collect()
}

fn files(mesh: &Mesh, paths: vigil_certs::CertPaths) -> TlsFiles {
    TlsFiles {
        ca: mesh.pki.ca(),
        cert: paths.cert,
        key: paths.key,
    }
}

/// Publish with `files`: Ok(()) if it succeeded, Err(reason) if the
/// connection or the call failed.
async fn try_publish(mesh: &Mesh, files: &TlsFiles) -> Result<(), String> {
    let channel = vigil_client::connect(&mesh.gateway_url(), files)
        .await
        .map_err(|e| e.to_string())?;
    IngestServiceClient::new(channel)
        .publish(PublishRequest { events: events(1) })
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

async fn try_query(mesh: &Mesh, files: &TlsFiles) -> Result<(), String> {
    let channel = vigil_client::connect(&mesh.reader_url(), files)
        .await
        .map_err(|e| e.to_string())?;
    QueryServiceClient::new(channel)
        .list_events(ListEventsRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_certificate_is_refused_at_the_handshake() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    for case in vigil_certs::BAD_CASES {
        let f = files(&mesh, mesh.pki.bad(case));
        let publish = try_publish(&mesh, &f).await;
        let query = try_query(&mesh, &f).await;
        // Refused at the TLS layer: the call never reaches a service, so
        // no gRPC status from a handler (those carry a gRPC code name).
        for (listener, result) in [("gateway", publish), ("reader", query)] {
            let Err(reason) = result else {
                anyhow::bail!("{case} accepted by the {listener}");
            };
            assert!(
                !reason.starts_with("PermissionDenied") && !reason.starts_with("Unauthenticated"),
                "{case} reached the {listener}'s handler: {reason}"
            );
        }
    }
    // NATS: the same certificate checks for a NATS user. (Not `ca-leaf`:
    // nats-server, like Go's crypto/x509, accepts a CA certificate as a
    // client leaf; docs/security.md says why that is bounded.)
    for case in ["expired", "not-yet-valid", "server-only"] {
        let paths = mesh.pki.bad(&format!("nats-{case}"));
        let settings = vigil_common::config::NatsSettings {
            cert: paths.cert,
            key: paths.key,
            ..mesh.nats.settings("subscriber")
        };
        let connected = vigil_common::nats::connect(&settings, "bad-cert").await;
        assert!(connected.is_err(), "nats accepted nats-{case}");
    }
    // The good certificates of the same identities still work.
    vigil_common::nats::connect(&mesh.nats.settings("subscriber"), "good-cert").await?;
    try_publish(&mesh, &mesh.device_files("acme", "cam-01"))
        .await
        .map_err(anyhow::Error::msg)?;
    try_query(&mesh, &mesh.analyst_files())
        .await
        .map_err(anyhow::Error::msg)?;
    // Nothing from a refused client was stored: only the good event (the
    // refused ones were sent first, and none was acknowledged).
    mesh.wait_for_events(1).await?;
    assert_eq!(mesh.stored_events().await?, 1);
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_outside_the_trust_domain_is_unauthenticated() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let f = files(&mesh, mesh.pki.bad("other-domain"));
    for result in [try_publish(&mesh, &f).await, try_query(&mesh, &f).await] {
        let reason = result.err().unwrap_or_default();
        assert!(reason.starts_with("Unauthenticated"), "{reason}");
        assert!(reason.contains("evil.example"), "{reason}");
    }
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_device_cuts_its_live_stream_within_seconds() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    // cam-01 holds a PublishStream open; host-01 another.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut victim = mesh
        .device("acme", "cam-01")
        .await?
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    tx.send(PublishStreamRequest {
        events: events(2),
        ..Default::default()
    })
    .await?;
    assert!(victim.message().await?.is_some());
    let mut bystander = mesh.device("acme", "host-01").await?;
    bystander
        .publish(PublishRequest { events: events(1) })
        .await?;

    let revoked_at = Instant::now();
    vigil_certs::revoke(&mesh.pki.dir, &mesh.pki.device("acme", "cam-01").cert)?;
    // The open stream is cut: the next message fails within seconds.
    let cut = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = victim.message().await {}
    })
    .await;
    assert!(cut.is_ok(), "revoked stream still open after 10 s");
    let took = revoked_at.elapsed();
    println!("revoked stream cut after {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    drop(tx);
    // New handshakes with the revoked certificate fail, on both listeners.
    assert!(
        try_publish(&mesh, &mesh.device_files("acme", "cam-01"))
            .await
            .is_err()
    );
    // The bystander's open connection is untouched.
    bystander
        .publish(PublishRequest { events: events(1) })
        .await?;
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_ca_bundle_and_crl_rotate_without_a_restart() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    // An open connection from the old PKI.
    let mut old = mesh.device("acme", "cam-01").await?;
    old.publish(PublishRequest { events: events(1) }).await?;

    // A new CA: the server certificate comes from it, the client bundle
    // and the CRL list both CAs (devices move over one by one).
    let new_dir = tempfile::tempdir()?;
    let new = vigil_certs::generate(
        new_dir.path(),
        &vigil_certs::Options {
            ca_name: "vigil dev CA 2".into(),
            ..Default::default()
        },
    )?;
    let cat = |a: &std::path::Path, b: &std::path::Path| -> anyhow::Result<Vec<u8>> {
        let mut out = std::fs::read(a)?;
        out.extend(std::fs::read(b)?);
        Ok(out)
    };
    let bundle = cat(&mesh.pki.ca(), &new.ca())?;
    let crls = cat(&mesh.pki.crl(), &new.crl())?;
    std::fs::write(mesh.pki.crl(), crls)?;
    std::fs::write(mesh.pki.ca(), &bundle)?;
    let server = mesh.pki.server("gateway");
    std::fs::copy(new.server("gateway").key, &server.key)?;
    std::fs::copy(new.server("gateway").cert, &server.cert)?;

    // A device of the new CA, trusting only the new CA, gets in once the
    // gateway has reloaded.
    let new_device = TlsFiles {
        ca: new.ca(),
        cert: new.device("acme", "cam-01").cert,
        key: new.device("acme", "cam-01").key,
    };
    wait_until(
        Duration::from_secs(10),
        "gateway serves the new certificate",
        || {
            let mesh = &mesh;
            let new_device = &new_device;
            async move { try_publish(mesh, new_device).await.is_ok() }
        },
    )
    .await?;
    // The connection opened before the rotation still works.
    old.publish(PublishRequest { events: events(1) }).await?;
    // Old-CA devices still get in (their CA is in the bundle), as long as
    // they trust the new server certificate's CA.
    let old_device_new_trust = TlsFiles {
        ca: new.ca(),
        ..mesh.device_files("acme", "host-01")
    };
    try_publish(&mesh, &old_device_new_trust)
        .await
        .map_err(anyhow::Error::msg)?;

    // A broken file is refused and the running material kept.
    let refused = mesh.gateway_tls.reload_failures();
    std::fs::write(&server.cert, b"-----BEGIN CERTIFICATE-----\nnot base64\n")?;
    wait_until(
        Duration::from_secs(10),
        "the broken file to be refused",
        || async { mesh.gateway_tls.reload_failures() > refused },
    )
    .await?;
    try_publish(&mesh, &new_device)
        .await
        .map_err(|e| anyhow::anyhow!("broken cert file replaced the good one: {e}"))?;
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_outside_the_allowlist_are_closed_before_tls() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions {
        allow: Some(vec!["10.0.0.0/8".parse()?, "::ffff:10.0.0.0/104".parse()?]),
        ..Default::default()
    })
    .await?;
    for addr in [mesh.gateway_addr, mesh.reader_addr] {
        // A raw ClientHello-sized write gets no ServerHello: the server
        // closes the socket without reading TLS.
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        let _ = tcp
            .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0])
            .await;
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => anyhow::bail!("{addr} answered {n} bytes to a refused address"),
            Err(_) => anyhow::bail!("{addr} kept a refused connection open"),
        }
    }
    assert!(
        try_publish(&mesh, &mesh.device_files("acme", "cam-01"))
            .await
            .is_err()
    );
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_device_is_limited_and_its_neighbour_is_not() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions {
        rate_per_sec: 20,
        rate_burst: 20,
        ..Default::default()
    })
    .await?;
    let mut neighbour = mesh.device("acme", "host-01").await?;
    // The neighbour's latency alone.
    let mut quiet = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        neighbour
            .publish(PublishRequest { events: events(1) })
            .await?;
        quiet.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // cam-01 floods from 4 concurrent tasks for 2 seconds.
    let flooder = mesh.device("acme", "cam-01").await?;
    let stop = Instant::now() + Duration::from_secs(2);
    let mut floods = Vec::new();
    for _ in 0..4 {
        let mut client = flooder.clone();
        floods.push(tokio::spawn(async move {
            let (mut ok, mut limited, mut retry_info) = (0u32, 0u32, 0u32);
            while Instant::now() < stop {
                match client.publish(PublishRequest { events: events(1) }).await {
                    Ok(_) => ok += 1,
                    Err(s) if s.code() == Code::ResourceExhausted => {
                        limited += 1;
                        use tonic_types::StatusExt;
                        if s.get_details_retry_info()
                            .is_some_and(|r| r.retry_delay.is_some())
                        {
                            retry_info += 1;
                        }
                    }
                    Err(s) => return Err(anyhow::anyhow!("flood call failed: {s}")),
                }
            }
            Ok((ok, limited, retry_info))
        }));
    }
    let mut busy = Vec::new();
    while Instant::now() < stop {
        let t = Instant::now();
        neighbour
            .publish(PublishRequest { events: events(1) })
            .await?;
        busy.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let (mut ok, mut limited, mut retry_info) = (0, 0, 0);
    for f in floods {
        let (o, l, r) = f.await??;
        ok += o;
        limited += l;
        retry_info += r;
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    let (quiet, busy_median) = (median(&mut quiet), median(&mut busy));
    println!(
        "flooder: {ok} accepted, {limited} RESOURCE_EXHAUSTED; neighbour median {quiet:?} alone, {busy_median:?} during the flood ({} calls, all OK)",
        busy.len()
    );
    // 20 burst + 20/s for 2 s, with slack for timing.
    assert!(ok <= 70, "flooder got {ok} calls through");
    assert!(limited > 0);
    assert_eq!(retry_info, limited, "every refusal carries RetryInfo");
    assert!(
        busy_median < quiet + Duration::from_millis(50),
        "neighbour slowed from {quiet:?} to {busy_median:?}"
    );
    mesh.stop().await;
    Ok(())
}
