//! If JetStream cannot be reached the gateway answers UNAVAILABLE, never
//! OK, and the same batch succeeds once it is back.

use vigil_e2e::{Mesh, MeshOptions};
use vigil_proto::ingest::v1::PublishRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_unavailable_while_nats_is_down_then_recovers() -> anyhow::Result<()> {
    let mut mesh = Mesh::start_with(MeshOptions {
        publish_timeout_secs: 2,
        ..Default::default()
    })
    .await?;
    let mut device = mesh.device("acme", "cam-01").await?;
    let mut rng = rand::rng();
    let now = vigil_common::now_millis();
    let batch: Vec<_> = (0..10)
        .map(|_| vigil_client::events::sample(vigil_client::events::Kind::Network, &mut rng, now))
        .collect();

    assert!(mesh.gateway_serving().await?);
    mesh.nats.kill();
    let status = device
        .publish(PublishRequest {
            events: batch.clone(),
        })
        .await;
    let status = match status {
        Ok(r) => anyhow::bail!("OK while JetStream was down: {:?}", r.into_inner()),
        Err(status) => status,
    };
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    assert!(status.message().contains("retry"), "{}", status.message());

    // The gateway tells its probes it cannot make anything durable now.
    vigil_e2e::wait_until(
        std::time::Duration::from_secs(10),
        "gateway NOT_SERVING",
        || async { mesh.gateway_serving().await.ok() == Some(false) },
    )
    .await?;

    // Same store, same port: the gateway reconnects and the retried batch
    // (same event ids) is stored once.
    mesh.nats.spawn().await?;
    vigil_e2e::wait_until(
        std::time::Duration::from_secs(30),
        "the retried batch to be accepted",
        || {
            let mut device = device.clone();
            let batch = batch.clone();
            async move {
                device
                    .publish(PublishRequest { events: batch })
                    .await
                    .is_ok_and(|r| r.into_inner().accepted == 10)
            }
        },
    )
    .await?;
    mesh.wait_for_events(10).await?;
    vigil_e2e::wait_until(
        std::time::Duration::from_secs(10),
        "gateway SERVING again",
        || async { mesh.gateway_serving().await.ok() == Some(true) },
    )
    .await?;
    mesh.stop().await;
    Ok(())
}
