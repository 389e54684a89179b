//! What fsync-before-ack costs, and what batching buys back: publishes
//! EventBatch messages to a real nats-server (config from nats-config/,
//! with and without `sync_interval: always`) as the gateway does, with up
//! to 256 acks outstanding, and prints events/s.
//!
//! Run: `cargo bench -p vigil-e2e --bench durability`

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prost::Message;
use vigil_e2e::{NatsServer, workspace_root};
use vigil_proto::event::v1::EventBatch;

const IN_FLIGHT: usize = 256;

async fn measure(
    pki: &vigil_certs::Pki,
    always: bool,
    batch: usize,
    messages: usize,
) -> anyhow::Result<(f64, f64, usize)> {
    let dir = tempfile::tempdir()?;
    let conf = std::fs::read_to_string(workspace_root().join("nats-config/nats-server.conf"))?;
    let conf = if always {
        conf
    } else {
        conf.replace("sync_interval: always", "")
    };
    std::fs::write(dir.path().join("nats-server.conf"), conf)?;
    std::fs::copy(
        workspace_root().join("nats-config/users.conf"),
        dir.path().join("users.conf"),
    )?;
    let nats = NatsServer::start_with_config(pki, dir.path().join("nats-server.conf")).await?;
    let admin = vigil_common::nats::connect(&nats.settings("admin"), "bench-admin").await?;
    vigil_common::provision::provision(&admin, &Default::default()).await?;
    let client = vigil_common::nats::connect(&nats.settings("gateway"), "bench").await?;
    let js = async_nats::jetstream::new(client);

    let mut rng = rand::rng();
    let now = vigil_common::now_millis();
    let events: Vec<_> = (0..batch)
        .map(|_| {
            let kind = vigil_client::events::random_kind(&mut rng);
            vigil_client::events::sample(kind, &mut rng, now)
        })
        .collect();
    let payload = Bytes::from(EventBatch { events }.encode_to_vec());
    let started = Instant::now();
    let mut acks = FuturesUnordered::new();
    for i in 0..messages {
        if acks.len() >= IN_FLIGHT
            && let Some(ack) = acks.next().await
        {
            let _: async_nats::jetstream::publish::PublishAck = ack?;
        }
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .message_id(format!("bench-{i}"));
        acks.push(
            js.send_publish("events.acme.3002", publish)
                .await?
                .into_future(),
        );
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((
        messages as f64 / seconds,
        (messages * batch) as f64 / seconds,
        payload.len(),
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = vigil_certs::generate(dir.path(), &vigil_certs::Options::default())?;
    println!("| sync_interval | events per message | message bytes | messages/s | events/s |");
    println!("|---|---|---|---|---|");
    for (always, batch, messages) in [
        (true, 1, 20_000),
        (false, 1, 50_000),
        (true, 100, 3_000),
        (false, 100, 5_000),
    ] {
        let (mps, eps, bytes) = measure(&pki, always, batch, messages).await?;
        let sync = if always {
            "always (fsync per ack)"
        } else {
            "default (2 min)"
        };
        println!("| {sync} | {batch} | {bytes} | {mps:.0} | {eps:.0} |");
    }
    Ok(())
}
