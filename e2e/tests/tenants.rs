//! A tenant's analyst sees only that tenant: the scope comes from the
//! caller's certificate and the policy file, never from the request;
//! another tenant's event is NOT_FOUND exactly like a missing one; users
//! without a grant are refused; policy changes apply without a restart.

use std::time::Duration;

use vigil_e2e::{Mesh, MeshOptions, wait_until};
use vigil_proto::ingest::v1::PublishRequest;
use vigil_proto::query::v1::{GetEventRequest, ListEventsRequest};

fn events(n: usize) -> Vec<vigil_proto::event::v1::SecurityEvent> {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| {
            let kind = vigil_client::events::random_kind(&mut rng);
            vigil_client::events::sample(kind, &mut rng, vigil_common::now_millis())
        })
        .collect()
}

async fn tenants_seen(
    client: &mut vigil_proto::query::v1::query_service_client::QueryServiceClient<
        vigil_e2e::Channel,
    >,
) -> anyhow::Result<Vec<String>> {
    let page = client
        .list_events(ListEventsRequest {
            limit: 1000,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut tenants: Vec<String> = page
        .events
        .iter()
        .filter_map(|e| e.metadata.as_ref().map(|m| m.tenant_uid.clone()))
        .collect();
    tenants.sort();
    tenants.dedup();
    Ok(tenants)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_see_only_their_granted_tenants() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policy.toml");
    std::fs::copy(
        vigil_e2e::workspace_root().join("deploy/policy.toml"),
        &policy,
    )?;
    let mesh = Mesh::start_with(MeshOptions {
        policy: Some(policy.clone()),
        ..Default::default()
    })
    .await?;
    let acme = events(20);
    let globex = events(20);
    mesh.device("acme", "cam-01")
        .await?
        .publish(PublishRequest {
            events: acme.clone(),
        })
        .await?;
    mesh.device("globex", "sensor-01")
        .await?
        .publish(PublishRequest {
            events: globex.clone(),
        })
        .await?;
    mesh.wait_for_events(40).await?;

    let mut acme_analyst = mesh.user("acme-analyst").await?;
    assert_eq!(tenants_seen(&mut acme_analyst).await?, ["acme"]);
    let own = acme_analyst
        .get_event(GetEventRequest {
            event_id: acme[0].uid().to_owned(),
        })
        .await;
    assert!(own.is_ok());
    let foreign = acme_analyst
        .get_event(GetEventRequest {
            event_id: globex[0].uid().to_owned(),
        })
        .await;
    let missing = acme_analyst
        .get_event(GetEventRequest {
            event_id: uuid::Uuid::now_v7().to_string(),
        })
        .await;
    let (foreign, missing) = (
        foreign
            .map(|_| ())
            .map_err(|s| (s.code(), !s.message().is_empty())),
        missing
            .map(|_| ())
            .map_err(|s| (s.code(), !s.message().is_empty())),
    );
    assert_eq!(foreign, Err((tonic::Code::NotFound, true)));
    assert_eq!(
        foreign, missing,
        "another tenant's event looks exactly like a missing one"
    );

    assert_eq!(
        tenants_seen(&mut mesh.user("admin").await?).await?,
        ["acme", "globex"]
    );
    assert_eq!(
        tenants_seen(&mut mesh.analyst().await?).await?,
        ["acme", "globex"]
    );

    // No grant, no data.
    let mut intern = mesh.user("intern").await?;
    let refused = intern
        .list_events(ListEventsRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| s.code());
    assert_eq!(refused, Err(tonic::Code::PermissionDenied));

    // Granting the intern globex takes effect without a restart...
    let mut text = std::fs::read_to_string(&policy)?;
    text.push_str("\n[[grant]]\nidentity = \"spiffe://vigil.local/user/intern\"\nrole = \"analyst\"\ntenants = [\"globex\"]\n");
    std::fs::write(&policy, &text)?;
    wait_until(Duration::from_secs(15), "the intern's grant", || {
        let mut intern = intern.clone();
        async move { tenants_seen(&mut intern).await.ok() == Some(vec!["globex".to_owned()]) }
    })
    .await?;
    // ...and a broken policy file is refused: the last good one stays.
    let refused = mesh.reader_policy.reload_failures();
    std::fs::write(
        &policy,
        "[[grant]]\nidentity = \"spiffe://vigil.local/user/intern\"\nrole = \"root\"\n",
    )?;
    wait_until(
        Duration::from_secs(15),
        "the broken policy to be refused",
        || async { mesh.reader_policy.reload_failures() > refused },
    )
    .await?;
    assert_eq!(tenants_seen(&mut intern).await?, ["globex"]);
    assert_eq!(tenants_seen(&mut acme_analyst).await?, ["acme"]);
    mesh.stop().await;
    Ok(())
}
