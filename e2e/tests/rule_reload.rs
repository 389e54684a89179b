//! Rules reload on SIGHUP without a restart: a bad file is refused and the
//! running rules stay in force; a good file takes effect. (Its own test
//! binary: SIGHUP goes to the whole process.)

use std::time::Duration;

use vigil_e2e::{Mesh, MeshOptions, wait_until};
use vigil_proto::ingest::v1::PublishRequest;
use vigil_proto::query::v1::ListFindingsRequest;

fn failures(ip: &str, n: usize, time: i64) -> Vec<vigil_proto::event::v1::SecurityEvent> {
    (0..n)
        .map(|i| {
            let mut e = vigil_client::events::sample(
                vigil_client::events::Kind::LoginFailure,
                &mut rand::rng(),
                time + i as i64,
            );
            e.status_id = 2;
            e.user = Some(vigil_proto::event::v1::User {
                name: format!("u{i}-{ip}"),
                ..Default::default()
            });
            e.src_endpoint = Some(vigil_proto::event::v1::NetworkEndpoint {
                ip: ip.into(),
                ..Default::default()
            });
            e
        })
        .collect()
}

fn hangup() {
    let _ = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(std::process::id().to_string())
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_good_rules_and_refuses_bad_ones() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.toml");
    let shipped = std::fs::read_to_string(vigil_e2e::workspace_root().join("deploy/rules.toml"))?;
    std::fs::write(&rules, &shipped)?;
    let mesh = Mesh::start_with(MeshOptions {
        rules: Some(rules.clone()),
        ..Default::default()
    })
    .await?;
    let mut device = mesh.device("acme", "cam-01").await?;
    let mut analyst = mesh.analyst().await?;
    let brute_force_findings = || {
        let mut analyst = analyst.clone();
        async move {
            analyst
                .list_findings(ListFindingsRequest {
                    rule_id: "brute-force".into(),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().findings.len())
                .unwrap_or(0)
        }
    };
    let now = vigil_common::now_millis();
    let base = now - now.rem_euclid(300_000) - 600_000; // a closed 5-minute window

    // A broken file: refused, the shipped rules keep working.
    std::fs::write(&rules, shipped.replace("threshold = 5", "threshold = 0"))?;
    hangup();
    wait_for_metric(&mesh, "vigil_correlator_rule_reload_failures_total", 1.0).await?;
    device
        .publish(PublishRequest {
            events: failures("203.0.113.50", 5, base + 1_000),
        })
        .await?;
    wait_until(
        Duration::from_secs(30),
        "a brute-force finding under the old rules",
        || async { brute_force_findings().await == 1 },
    )
    .await?;

    // A good file lowering the threshold to 3 takes effect.
    std::fs::write(
        &rules,
        shipped.replace(
            "threshold = 5\nmatch = { class_uid = 3002, status_id = 2 }",
            "threshold = 3\nmatch = { class_uid = 3002, status_id = 2 }",
        ),
    )?;
    hangup();
    wait_for_metric(&mesh, "vigil_correlator_rule_reloads_total", 1.0).await?;
    device
        .publish(PublishRequest {
            events: failures("203.0.113.51", 3, base + 2_000),
        })
        .await?;
    wait_until(
        Duration::from_secs(30),
        "a brute-force finding from 3 failures under the new rules",
        || async { brute_force_findings().await == 2 },
    )
    .await?;
    let _ = analyst
        .list_findings(ListFindingsRequest::default())
        .await?;
    mesh.stop().await;
    Ok(())
}

async fn wait_for_metric(mesh: &Mesh, name: &str, value: f64) -> anyhow::Result<()> {
    let addr = mesh.correlator_metrics[0];
    wait_until(Duration::from_secs(10), name, || async move {
        vigil_common::metrics::scrape(addr)
            .await
            .is_ok_and(|text| vigil_common::metrics::sample(&text, name, &[]) == Some(value))
    })
    .await
}
