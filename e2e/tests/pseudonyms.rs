//! Pseudonymisation: a tenant's chosen fields never reach JetStream or
//! Postgres in the raw, and the correlator still finds the attack on the
//! pseudonyms.

use std::time::Duration;

use futures::StreamExt;
use vigil_e2e::{Mesh, MeshOptions, wait_until};
use vigil_proto::event::v1::{NetworkEndpoint, SecurityEvent, User};
use vigil_proto::ingest::v1::PublishRequest;
use vigil_proto::query::v1::{ListEventsRequest, ListFindingsRequest};

const USER: &str = "mallory";
const IP: &str = "203.0.113.77";

/// Six failed logins by `USER` from `IP`, 20 minutes ago (a closed window
/// of the brute-force rule).
fn attack() -> Vec<SecurityEvent> {
    let mut rng = rand::rng();
    let start = vigil_common::now_millis() - 20 * 60_000;
    (0..6)
        .map(|i| {
            let mut e = vigil_client::events::sample(
                vigil_client::events::Kind::LoginFailure,
                &mut rng,
                start + i * 1000,
            );
            e.user = Some(User {
                name: USER.into(),
                ..Default::default()
            });
            e.src_endpoint = Some(NetworkEndpoint {
                ip: IP.into(),
                ..Default::default()
            });
            e
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chosen_fields_are_pseudonymised_before_anything_is_stored() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("pseudonymise.toml");
    let key = dir.path().join("pseudonym.key");
    std::fs::write(
        &config,
        "[tenant.globex]\nfields = [\"user.name\", \"src_endpoint.ip\"]\n",
    )?;
    std::fs::write(&key, rand::random::<[u8; 32]>())?;
    let mesh = Mesh::start_with(MeshOptions {
        pseudonymise: Some((config, key)),
        ..Default::default()
    })
    .await?;
    // Watch what reaches NATS for globex.
    let subscriber =
        vigil_common::nats::connect(&mesh.nats.settings("subscriber"), "test-sub").await?;
    let mut wire = subscriber.subscribe("events.globex.>").await?;
    subscriber.flush().await?;

    mesh.device("globex", "sensor-01")
        .await?
        .publish(PublishRequest { events: attack() })
        .await?;
    mesh.device("acme", "cam-01")
        .await?
        .publish(PublishRequest { events: attack() })
        .await?;
    mesh.wait_for_events(12).await?;

    let message = tokio::time::timeout(Duration::from_secs(5), wire.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no message on events.globex.>"))?;
    assert!(!contains(&message.payload, USER), "raw user name on NATS");
    assert!(!contains(&message.payload, IP), "raw ip on NATS");

    // Postgres: globex rows hold no raw value; acme's (not configured) do.
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT tenant, payload FROM events")
        .fetch_all(&mesh.pool)
        .await?;
    for (tenant, payload) in &rows {
        let raw = contains(payload, USER) || contains(payload, IP);
        assert_eq!(raw, tenant == "acme", "{tenant}: raw values stored = {raw}");
    }

    // What an analyst sees: one stable pseudonym per value.
    let listed = mesh
        .analyst()
        .await?
        .list_events(ListEventsRequest {
            source_device: "sensor-01".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let names: std::collections::HashSet<String> = listed
        .events
        .iter()
        .filter_map(|e| e.user.as_ref().map(|u| u.name.clone()))
        .collect();
    assert_eq!(names.len(), 1);
    assert!(names.iter().all(|n| n.starts_with("ps_")), "{names:?}");

    // The correlator still finds the brute force, keyed on the pseudonym.
    let analyst = mesh.analyst().await?;
    wait_until(Duration::from_secs(20), "both brute-force findings", || {
        let mut analyst = analyst.clone();
        async move {
            analyst
                .list_findings(ListFindingsRequest {
                    rule_id: "brute-force".into(),
                    ..Default::default()
                })
                .await
                .is_ok_and(|r| r.into_inner().findings.len() >= 2)
        }
    })
    .await?;
    let findings = analyst
        .clone()
        .list_findings(ListFindingsRequest {
            rule_id: "brute-force".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .findings;
    for f in findings {
        let key: Vec<&str> = f.observables.iter().map(|k| k.value.as_str()).collect();
        if f.tenant_uid() == "globex" {
            assert!(key.iter().all(|v| v.starts_with("ps_")), "{key:?}");
        } else {
            assert_eq!(key, [IP]);
        }
    }
    mesh.stop().await;
    Ok(())
}
