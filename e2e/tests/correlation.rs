//! Detection end to end: a scenario's events go through the gateway as
//! devices send them; the correlator finds exactly the injected attacks
//! (not the near-misses), the writer stores the findings, and an analyst
//! reads them from the reader — with one correlator or with two splitting
//! the tenants between them.

use std::collections::BTreeSet;
use std::time::Duration;

use vigil_e2e::{Mesh, MeshOptions, wait_until};
use vigil_proto::ingest::v1::PublishRequest;
use vigil_proto::query::v1::{GetFindingRequest, ListFindingsRequest};

const DEVICES: [(&str, &str); 3] = [
    ("acme", "cam-01"),
    ("globex", "sensor-01"),
    ("initech", "ws-01"),
];

async fn run_scenario(mesh: &Mesh) -> anyhow::Result<()> {
    let devices: Vec<(String, String)> = DEVICES
        .iter()
        .map(|(t, d)| ((*t).to_owned(), (*d).to_owned()))
        .collect();
    let end = vigil_common::now_millis() - 1_000;
    let scenario = vigil_client::scenario::generate(&devices, end - 30 * 60_000, end, 300, 42);
    for (tenant, device) in &devices {
        let mut client = mesh.device(tenant, device).await?;
        let events: Vec<_> = scenario
            .events
            .iter()
            .filter(|(t, _, _)| t == tenant)
            .map(|(_, _, e)| e.clone())
            .collect();
        for chunk in events.chunks(100) {
            client
                .publish(PublishRequest {
                    events: chunk.to_vec(),
                })
                .await?;
        }
        // Every seventh event again, in other batches: counted once.
        let again: Vec<_> = events.iter().step_by(7).cloned().collect();
        client.publish(PublishRequest { events: again }).await?;
    }
    let expected = scenario.expected();
    assert_eq!(
        expected.len(),
        18,
        "3 tenants x 3 attacks, inside a window and across a boundary"
    );

    let mut analyst = mesh.analyst().await?;
    let found = || {
        let mut analyst = analyst.clone();
        async move {
            let page = analyst
                .list_findings(ListFindingsRequest {
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().findings)
                .unwrap_or_default();
            page.into_iter()
                .map(|f| {
                    (
                        f.tenant_uid().to_owned(),
                        f.rule_id().to_owned(),
                        f.observables
                            .iter()
                            .map(|k| k.value.clone())
                            .collect::<Vec<_>>()
                            .join(","),
                        f.count,
                    )
                })
                .collect::<BTreeSet<_>>()
        }
    };
    wait_until(Duration::from_secs(60), "the 18 findings", || async {
        found().await.len() >= expected.len()
    })
    .await?;
    // Let anything extra (a near-miss would be a bug) have time to show up:
    // one more event closes any window still open.
    let found_now = found().await;
    let keys: BTreeSet<(String, String, String)> = found_now
        .iter()
        .map(|(t, r, k, _)| (t.clone(), r.clone(), k.clone()))
        .collect();
    assert_eq!(keys, expected);
    for (_, rule, _, count) in &found_now {
        let want = match rule.as_str() {
            "brute-force" => 6,
            "credential-compromise" => 6,
            "port-scan" => 25,
            other => anyhow::bail!("unexpected rule {other}"),
        };
        assert_eq!(*count, want, "{rule}: duplicates must count once");
    }

    // Paging through findings returns each once.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = analyst
            .list_findings(ListFindingsRequest {
                limit: 4,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        paged.extend(page.findings.into_iter().map(|f| {
            assert_eq!(
                (f.class_uid, f.category_uid, f.type_uid),
                (2004, 2, 200_400 + i64::from(f.activity_id))
            );
            f.uid().to_owned()
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged.len(), 18);
    assert_eq!(paged.iter().collect::<BTreeSet<_>>().len(), 18);

    // A finding carries its evidence.
    let first = analyst
        .list_findings(ListFindingsRequest {
            rule_id: "port-scan".into(),
            limit: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    let id = first.findings[0].uid().to_owned();
    let detail = analyst
        .get_finding(GetFindingRequest { finding_id: id })
        .await?
        .into_inner();
    assert_eq!(detail.events.len(), 25);
    assert!(detail.events.iter().all(|e| e.class_uid == 4001));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_correlator_finds_exactly_the_injected_attacks() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    run_scenario(&mesh).await?;
    // The metrics endpoint counts what the correlator absorbed.
    let metrics = http_get(mesh.correlator_metrics[0]).await?;
    assert!(
        metrics.contains("vigil_correlator_late_events_total"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("vigil_correlator_events_total 0\n"),
        "{metrics}"
    );
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_correlators_split_the_tenants_without_missing_or_doubling() -> anyhow::Result<()> {
    let mut options = MeshOptions::default();
    options.limits.correlator_partitions = 2;
    let mesh = Mesh::start_with(options).await?;
    run_scenario(&mesh).await?;
    // Both partitions did work (initech hashes to 0, acme and globex to 1).
    for addr in &mesh.correlator_metrics {
        let metrics = http_get(*addr).await?;
        let events = metric(&metrics, "vigil_correlator_events_total");
        assert!(events > 0.0, "a partition absorbed nothing:\n{metrics}");
    }
    // No finding twice.
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT uid) FROM findings")
            .fetch_one(&mesh.pool)
            .await?;
    assert_eq!((rows, distinct), (18, 18));
    mesh.stop().await;
    Ok(())
}

async fn http_get(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    Ok(vigil_common::metrics::scrape(addr).await?)
}

fn metric(text: &str, name: &str) -> f64 {
    vigil_common::metrics::sample(text, name, &[]).unwrap_or(f64::NAN)
}
