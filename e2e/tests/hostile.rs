//! Hostile input against the real service processes: 10,000 malformed,
//! truncated, oversized or mislabelled gRPC frames per RPC, sent over raw
//! HTTP/2 with a valid client certificate. Each gets a clear non-OK
//! status, the processes stay up, their memory stays bounded, and the next
//! valid request succeeds. Plus oversized headers and too many concurrent
//! streams on one connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rand::Rng;
use vigil_e2e::MeshOptions;
use vigil_e2e::stack::Stack;

const PER_RPC: usize = 10_000;
const IN_FLIGHT: usize = 64;

/// An HTTP/2 connection speaking TLS with `cert` as its client identity.
async fn h2_connect(
    stack: &Stack,
    port: u16,
    cert: vigil_certs::CertPaths,
) -> anyhow::Result<h2::client::SendRequest<Bytes>> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in vigil_common::tls::load_certs(&stack.pki.ca())? {
        roots.add(ca)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vigil_common::tls::load_certs(&cert.cert)?,
            vigil_common::tls::load_key(&cert.key)?,
        )?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost")?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let (send, connection) = h2::client::handshake(tls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(send)
}

/// One hostile body for `kind`; returns the bytes and the content-type.
fn hostile(kind: usize, rng: &mut impl Rng) -> (Vec<u8>, &'static str) {
    let garbage = |rng: &mut dyn rand::RngCore, n: usize| {
        let mut v = vec![0u8; n];
        rng.fill_bytes(&mut v);
        v
    };
    let frame = |flag: u8, len: u32, body: &[u8]| {
        let mut v = vec![flag];
        v.extend(len.to_be_bytes());
        v.extend(body);
        v
    };
    match kind % 6 {
        // Well-framed, undecodable protobuf: random bytes after a tag of
        // field number 0, which no message has.
        0 => {
            let n = rng.random_range(1..512);
            let mut body = vec![0u8];
            body.extend(garbage(rng, n));
            (frame(0, body.len() as u32, &body), "application/grpc")
        }
        // Truncated: the prefix promises more than arrives.
        1 => {
            let n = rng.random_range(0..64);
            let body = garbage(rng, n);
            (frame(0, body.len() as u32 + 100, &body), "application/grpc")
        }
        // Oversized: a prefix claiming 1 GiB.
        2 => (frame(0, 1 << 30, b"xx"), "application/grpc"),
        // Compressed flag without any compression negotiated.
        3 => (frame(1, 4, b"abcd"), "application/grpc"),
        // Fewer than 5 bytes: not even a prefix.
        4 => {
            let n = rng.random_range(1..5);
            (garbage(rng, n), "application/grpc")
        }
        // Not gRPC at all.
        _ => (b"{\"events\": []}".to_vec(), "application/json"),
    }
}

/// Sends one request; returns the grpc-status it ended with (None if the
/// server gave none, which would be a failure).
async fn send(
    mut client: h2::client::SendRequest<Bytes>,
    path: &'static str,
    body: Vec<u8>,
    content_type: &'static str,
) -> anyhow::Result<Option<u32>> {
    let request = http::Request::post(format!("https://localhost{path}"))
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(())?;
    client = client.ready().await?;
    let (response, mut stream) = client.send_request(request, false)?;
    stream.send_data(Bytes::from(body), true)?;
    let response = response.await?;
    let status = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
    };
    if let Some(code) = status(response.headers()) {
        return Ok(Some(code));
    }
    if response.status() != http::StatusCode::OK {
        // Not a gRPC response at all (e.g. 415 for the wrong content
        // type): a clear refusal; count it as its own code.
        return Ok(Some(1000 + u32::from(response.status().as_u16())));
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(body.trailers().await?.as_ref().and_then(status))
}

async fn flood(
    client: &h2::client::SendRequest<Bytes>,
    path: &'static str,
) -> anyhow::Result<std::collections::BTreeMap<u32, usize>> {
    let mut rng = rand::rng();
    let mut codes = std::collections::BTreeMap::new();
    let mut pending = FuturesUnordered::new();
    for i in 0..PER_RPC {
        let (body, content_type) = hostile(i, &mut rng);
        pending.push(send(client.clone(), path, body, content_type));
        if pending.len() >= IN_FLIGHT
            && let Some(result) = pending.next().await
        {
            let code = result?.ok_or_else(|| anyhow::anyhow!("{path}: no grpc-status"))?;
            *codes.entry(code).or_insert(0) += 1;
        }
    }
    while let Some(result) = pending.next().await {
        let code = result?.ok_or_else(|| anyhow::anyhow!("{path}: no grpc-status"))?;
        *codes.entry(code).or_insert(0) += 1;
    }
    Ok(codes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_hostile_frames_per_rpc_change_nothing() -> anyhow::Result<()> {
    let stack = Stack::start(MeshOptions::default()).await?;
    let device = stack.pki.device("acme", "cam-01");
    let analyst = stack.pki.user("analyst");
    let rss_before = (
        stack.gateway.rss_kib().unwrap_or(0),
        stack.reader.rss_kib().unwrap_or(0),
    );
    let started = Instant::now();
    let targets: [(u16, &vigil_certs::CertPaths, &'static str); 6] = [
        (
            stack.gateway_port,
            &device,
            "/vigil.ingest.v1.IngestService/Publish",
        ),
        (
            stack.gateway_port,
            &device,
            "/vigil.ingest.v1.IngestService/PublishStream",
        ),
        (
            stack.reader_port,
            &analyst,
            "/vigil.query.v1.QueryService/ListEvents",
        ),
        (
            stack.reader_port,
            &analyst,
            "/vigil.query.v1.QueryService/GetEvent",
        ),
        (
            stack.reader_port,
            &analyst,
            "/vigil.query.v1.QueryService/ListFindings",
        ),
        (
            stack.reader_port,
            &analyst,
            "/vigil.query.v1.QueryService/GetFinding",
        ),
    ];
    for (port, cert, path) in targets {
        let client = h2_connect(&stack, port, cert.clone()).await?;
        let codes = flood(&client, path)
            .await
            .inspect_err(|_| stack.dump_logs())?;
        println!("{path}: {PER_RPC} hostile requests -> grpc-status counts {codes:?}");
        assert!(!codes.contains_key(&0), "{path}: a hostile request got OK");
        assert_eq!(codes.values().sum::<usize>(), PER_RPC);
    }
    let rss_after = (
        stack.gateway.rss_kib().unwrap_or(0),
        stack.reader.rss_kib().unwrap_or(0),
    );
    println!(
        "{} requests in {:?}; RSS gateway {} -> {} KiB, reader {} -> {} KiB",
        PER_RPC * 6,
        started.elapsed(),
        rss_before.0,
        rss_after.0,
        rss_before.1,
        rss_after.1
    );
    // Bounded: neither process grew by more than 64 MiB.
    assert!(rss_after.0 > 0 && rss_after.1 > 0, "a process died");
    assert!(rss_after.0 < rss_before.0 + 64 * 1024, "gateway grew");
    assert!(rss_after.1 < rss_before.1 + 64 * 1024, "reader grew");

    // Oversized headers: the connection is refused, nothing crashes.
    let mut client = h2_connect(&stack, stack.gateway_port, device.clone()).await?;
    let request = http::Request::post("https://localhost/vigil.ingest.v1.IngestService/Publish")
        .header("content-type", "application/grpc")
        .header("x-junk", "x".repeat(64 * 1024))
        .body(())?;
    client = client.ready().await?;
    let refused = match client.send_request(request, true) {
        Ok((response, _)) => match response.await {
            Ok(r) => r.status() != http::StatusCode::OK || r.headers().contains_key("grpc-status"),
            Err(_) => true,
        },
        Err(_) => true,
    };
    assert!(refused, "64 KiB of headers accepted");

    // Nothing got stored, and a valid request still works on both.
    let mut device_client =
        vigil_proto::ingest::v1::ingest_service_client::IngestServiceClient::new(
            vigil_client::connect(
                &stack.gateway_url(),
                &vigil_client::TlsFiles {
                    ca: stack.pki.ca(),
                    cert: device.cert.clone(),
                    key: device.key.clone(),
                },
            )
            .await?,
        );
    let mut rng = rand::rng();
    let event = vigil_client::events::sample(
        vigil_client::events::Kind::Dns,
        &mut rng,
        vigil_common::now_millis(),
    );
    device_client
        .publish(vigil_proto::ingest::v1::PublishRequest {
            events: vec![event],
        })
        .await?;
    vigil_e2e::wait_until(
        Duration::from_secs(15),
        "the valid event stored",
        || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
                .fetch_one(&stack.pool)
                .await
                .is_ok_and(|n| n == 1)
        },
    )
    .await?;
    let mut analyst_client = vigil_proto::query::v1::query_service_client::QueryServiceClient::new(
        vigil_client::connect(
            &format!("https://127.0.0.1:{}", stack.reader_port),
            &vigil_client::TlsFiles {
                ca: stack.pki.ca(),
                cert: analyst.cert.clone(),
                key: analyst.key.clone(),
            },
        )
        .await?,
    );
    let listed = analyst_client
        .list_events(vigil_proto::query::v1::ListEventsRequest::default())
        .await?
        .into_inner();
    assert_eq!(listed.events.len(), 1);
    Ok(())
}
