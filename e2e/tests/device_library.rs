//! The device library as a device maker embeds it: events pushed one at a
//! time through the bounded batcher arrive, batched, exactly once.

use vigil_client::device::{BatchOptions, Batcher, DeviceClient, RetryPolicy};
use vigil_e2e::Mesh;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batcher_delivers_every_event_once() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let client = DeviceClient::connect(
        &mesh.gateway_url(),
        &mesh.device_files("acme", "host-01"),
        RetryPolicy::default(),
    )
    .await?;
    // A small buffer, so `send` has to wait for the gateway (back-pressure).
    let batcher = Batcher::spawn(
        client,
        BatchOptions {
            max_batch: 50,
            capacity: 64,
            ..Default::default()
        },
    );
    let mut rng = rand::rng();
    for _ in 0..1_234 {
        let kind = vigil_client::events::random_kind(&mut rng);
        batcher
            .send(vigil_client::events::sample(
                kind,
                &mut rng,
                vigil_common::now_millis(),
            ))
            .await?;
    }
    let report = batcher.close().await;
    assert_eq!(report.accepted, 1_234);
    assert!(report.rejected.is_empty() && report.unknown.is_empty() && report.refused.is_empty());
    mesh.wait_for_events(1_234).await?;
    mesh.stop().await;
    Ok(())
}
