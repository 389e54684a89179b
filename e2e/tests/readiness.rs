//! One readiness model for every service: each reports NOT_SERVING on its
//! health port within 2 s of losing a hard dependency and SERVING within
//! 2 s of its return, and on shutdown says NOT_SERVING first and keeps
//! answering until it has drained.
//!
//! | service | hard dependencies |
//! |---|---|
//! | gateway | JetStream |
//! | writer | JetStream, Postgres |
//! | reader | Postgres, JetStream (it answers nothing unaudited) |
//! | correlator | JetStream, its KV bucket |

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vigil_common::service::Service;
use vigil_correlator::Correlator;
use vigil_e2e::{Mesh, serving, wait_until};
use vigil_gateway::Gateway;
use vigil_proto::ingest::v1::PublishStreamRequest;
use vigil_reader::Reader;
use vigil_writer::Writer;

/// How soon readiness must follow a dependency.
const WITHIN: Duration = Duration::from_secs(2);

/// Waits until `(addr, service)` reports `want`, within `limit`; returns
/// how long it took.
async fn wait_for(
    addr: SocketAddr,
    service: &str,
    want: bool,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let what = format!("{service} {}", if want { "SERVING" } else { "NOT_SERVING" });
    wait_until(limit, &what, || async {
        serving(addr, service).await == Some(want)
    })
    .await?;
    let took = start.elapsed();
    println!("{what} after {took:?}");
    Ok(took)
}

/// Kills nats-server and brings it back: `(addr, service)` follows.
async fn flip_jetstream(mesh: &mut Mesh, addr: SocketAddr, service: &str) -> anyhow::Result<()> {
    mesh.nats.kill();
    wait_for(addr, service, false, WITHIN).await?;
    mesh.nats.spawn().await?;
    wait_for(addr, service, true, WITHIN).await?;
    Ok(())
}

/// Cuts Postgres and restores it: `(addr, service)` follows.
async fn flip_postgres(mesh: &Mesh, addr: SocketAddr, service: &str) -> anyhow::Result<()> {
    mesh.pg_proxy.cut();
    wait_for(addr, service, false, WITHIN).await?;
    mesh.pg_proxy.restore();
    wait_for(addr, service, true, WITHIN).await?;
    Ok(())
}

async fn started() -> anyhow::Result<Mesh> {
    let mesh = Mesh::start().await?;
    let h = mesh.health.clone();
    for (addr, service) in [
        (h.gateway, Gateway::HEALTH_SERVICE),
        (h.writer, Writer::HEALTH_SERVICE),
        (h.reader, Reader::HEALTH_SERVICE),
        (h.correlators[0], Correlator::HEALTH_SERVICE),
    ] {
        wait_for(addr, service, true, Duration::from_secs(10)).await?;
    }
    Ok(mesh)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_follows_jetstream() -> anyhow::Result<()> {
    let mut mesh = started().await?;
    let addr = mesh.health.gateway;
    flip_jetstream(&mut mesh, addr, Gateway::HEALTH_SERVICE).await?;
    // Postgres is none of the gateway's business.
    mesh.pg_proxy.cut();
    wait_for(mesh.health.writer, Writer::HEALTH_SERVICE, false, WITHIN).await?;
    assert_eq!(serving(addr, Gateway::HEALTH_SERVICE).await, Some(true));
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_follows_jetstream_and_postgres() -> anyhow::Result<()> {
    let mut mesh = started().await?;
    let addr = mesh.health.writer;
    flip_jetstream(&mut mesh, addr, Writer::HEALTH_SERVICE).await?;
    flip_postgres(&mesh, addr, Writer::HEALTH_SERVICE).await?;
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_follows_postgres_and_jetstream() -> anyhow::Result<()> {
    let mut mesh = started().await?;
    let addr = mesh.health.reader;
    flip_postgres(&mesh, addr, Reader::HEALTH_SERVICE).await?;
    flip_jetstream(&mut mesh, addr, Reader::HEALTH_SERVICE).await?;
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlator_follows_jetstream_and_its_bucket() -> anyhow::Result<()> {
    let mut mesh = started().await?;
    let addr = mesh.health.correlators[0];
    flip_jetstream(&mut mesh, addr, Correlator::HEALTH_SERVICE).await?;
    // The checkpoint bucket disappears (an operator's mistake), then is
    // provisioned again.
    let admin = vigil_common::nats::connect(&mesh.nats.settings("admin"), "test-admin").await?;
    let js = async_nats::jetstream::new(admin.clone());
    js.delete_key_value(vigil_common::subjects::CORRELATOR_BUCKET)
        .await?;
    wait_for(addr, Correlator::HEALTH_SERVICE, false, WITHIN).await?;
    assert_eq!(
        serving(mesh.health.gateway, Gateway::HEALTH_SERVICE).await,
        Some(true),
        "the bucket is the correlator's alone"
    );
    vigil_common::provision::provision(&admin, &Default::default()).await?;
    wait_for(addr, Correlator::HEALTH_SERVICE, true, WITHIN).await?;
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_shutdown_health_says_not_serving_first_and_answers_until_drained() -> anyhow::Result<()>
{
    let mesh = started().await?;
    // An open PublishStream the gateway must let finish.
    let mut device = mesh.device("acme", "cam-01").await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut acks = device
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let event = vigil_client::events::sample(
        vigil_client::events::Kind::Network,
        &mut rand::rng(),
        vigil_common::now_millis(),
    );
    tx.send(PublishStreamRequest {
        batch_seq: 1,
        events: vec![event],
    })
    .await?;
    let ack = acks.message().await?;
    assert_eq!(ack.map(|a| a.accepted), Some(1));

    mesh.begin_shutdown();
    let addr = mesh.health.gateway;
    wait_for(addr, Gateway::HEALTH_SERVICE, false, WITHIN).await?;
    // Still draining (the stream is open): the port answers, NOT_SERVING.
    assert_eq!(serving(addr, Gateway::HEALTH_SERVICE).await, Some(false));
    assert_eq!(serving(addr, "").await, Some(true), "the process is alive");
    // The device finishes; the gateway has drained and its health port closes.
    drop(tx);
    while acks.message().await?.is_some() {}
    wait_until(
        Duration::from_secs(10),
        "the health port to close",
        || async { serving(addr, Gateway::HEALTH_SERVICE).await.is_none() },
    )
    .await?;
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_names_every_setting_and_exits_64() -> anyhow::Result<()> {
    let missing = "/nonexistent/vigil.pem";
    for (binary, env, names) in [
        (
            "vigil-gateway",
            vec![
                ("VIGIL_GATEWAY_NATS_URL", "http://x"),
                ("VIGIL_GATEWAY_TLS_CERT", missing),
                ("VIGIL_GATEWAY_MAX_BATCH_EVENTS", "0"),
                ("VIGIL_GATEWAY_ALLOW", "0.0.0.0/0"),
            ],
            vec![
                "VIGIL_GATEWAY_NATS_URL",
                "VIGIL_GATEWAY_TLS_CERT",
                "VIGIL_GATEWAY_MAX_BATCH_EVENTS",
                "VIGIL_GATEWAY_ALLOW",
            ],
        ),
        (
            "vigil-writer",
            vec![
                (
                    "VIGIL_WRITER_DATABASE_URL",
                    "postgres://h/db?sslmode=disable",
                ),
                ("VIGIL_WRITER_BATCH_MAX_MESSAGES", "0"),
                ("VIGIL_WRITER_NATS_KEY", missing),
            ],
            vec![
                "VIGIL_WRITER_DATABASE_URL",
                "VIGIL_WRITER_BATCH_MAX_MESSAGES",
                "VIGIL_WRITER_NATS_KEY",
            ],
        ),
        (
            "vigil-reader",
            vec![
                (
                    "VIGIL_READER_DATABASE_URL",
                    "postgres://h/db?sslmode=require",
                ),
                ("VIGIL_READER_POLICY", missing),
                ("VIGIL_TRUST_DOMAIN", "Not A Domain"),
            ],
            vec!["VIGIL_READER_POLICY", "VIGIL_TRUST_DOMAIN"],
        ),
        (
            "vigil-correlator",
            vec![
                ("VIGIL_CORRELATOR_PARTITION", "3"),
                ("VIGIL_CORRELATOR_BATCH_MAX_WAIT_MS", "0"),
                ("VIGIL_CORRELATOR_RULES", missing),
            ],
            vec![
                "VIGIL_CORRELATOR_PARTITION",
                "VIGIL_CORRELATOR_BATCH_MAX_WAIT_MS",
                "VIGIL_CORRELATOR_RULES",
            ],
        ),
        // A value that does not even parse is a bad setting too.
        (
            "vigil-writer",
            vec![
                (
                    "VIGIL_WRITER_DATABASE_URL",
                    "postgres://h/db?sslmode=require",
                ),
                ("VIGIL_WRITER_HEALTH_LISTEN", "not-an-address"),
            ],
            vec!["--health-listen"],
        ),
    ] {
        let out = tokio::process::Command::new(vigil_e2e::stack::binary(binary)?)
            .current_dir(vigil_e2e::workspace_root())
            .envs(env)
            .output()
            .await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{binary}: {stderr}");
        for name in names {
            assert!(
                stderr.contains(name),
                "{binary} does not name {name}: {stderr}"
            );
        }
    }
    Ok(())
}
