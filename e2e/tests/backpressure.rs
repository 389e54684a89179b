//! When JetStream is full the gateway answers RESOURCE_EXHAUSTED with retry
//! information, never OK, so back-pressure reaches the device.

use tonic_types::StatusExt;
use vigil_e2e::{Mesh, MeshOptions};
use vigil_proto::ingest::v1::PublishRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_event_store_pushes_back_with_resource_exhausted() -> anyhow::Result<()> {
    let mut options = MeshOptions::default();
    options.limits.max_bytes = 256 * 1024;
    let mesh = Mesh::start_with(options).await?;
    let mut device = mesh.device("globex", "sensor-01").await?;
    let mut rng = rand::rng();
    let mut acknowledged = 0i64;
    let mut refusal = None;
    for _ in 0..100 {
        let events: Vec<_> = (0..100)
            .map(|_| {
                vigil_client::events::sample(
                    vigil_client::events::Kind::Process,
                    &mut rng,
                    vigil_common::now_millis(),
                )
            })
            .collect();
        match device.publish(PublishRequest { events }).await {
            Ok(r) => acknowledged += i64::from(r.into_inner().accepted),
            Err(status) => {
                refusal = Some(status);
                break;
            }
        }
    }
    let status = refusal.ok_or_else(|| anyhow::anyhow!("a 256 KiB stream never filled up"))?;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    assert!(
        status
            .get_error_details()
            .retry_info()
            .is_some_and(|r| r.retry_delay.is_some())
    );
    // Everything acknowledged before the store filled up is stored.
    assert!(acknowledged > 0);
    mesh.wait_for_events(acknowledged).await?;
    mesh.stop().await;
    Ok(())
}
