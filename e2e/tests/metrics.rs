//! Every service's `/metrics` after a known load: it parses as Prometheus
//! exposition (`promtool check metrics`, the reference parser) and the
//! counters moved by exactly the load: 100 accepted events, 3 rejected by
//! their codes, one poison message dead-lettered, one connection that was
//! not TLS, and the consumer lag back at 0.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use async_nats::jetstream;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use vigil_common::metrics::{sample, scrape};
use vigil_common::subjects::{self, PROTOBUF_CONTENT_TYPE};
use vigil_e2e::{Mesh, MeshOptions, wait_until};
use vigil_proto::ingest::v1::{PublishRequest, RejectionCode};

/// `promtool check metrics` on `text`; its complaints, if any (lint
/// findings on naming and units are printed even with exit 0).
fn promtool_check(name: &str, text: &str) -> anyhow::Result<()> {
    let said = promtool(&["check", "metrics"], Some(text))?;
    ensure!(
        said.trim().is_empty(),
        "{name}: promtool check metrics: {said}"
    );
    Ok(())
}

fn value(text: &str, name: &str, labels: &[&str]) -> f64 {
    sample(text, name, labels).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_counts_a_known_load_exactly() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions {
        writer_max_deliveries: 2,
        writer_retry_base_ms: 100,
        ..Default::default()
    })
    .await?;
    let m = mesh.metrics.clone();

    // 100 valid events in two requests, then one request with 3 bad ones.
    let mut device = mesh.device("acme", "cam-01").await?;
    let mut rng = rand::rng();
    let now = vigil_common::now_millis();
    let good = |rng: &mut rand::rngs::ThreadRng| {
        vigil_client::events::sample(vigil_client::events::Kind::LoginSuccess, rng, now)
    };
    for _ in 0..2 {
        let events = (0..50).map(|_| good(&mut rng)).collect();
        let reply = device
            .publish(PublishRequest { events })
            .await?
            .into_inner();
        ensure!(
            reply.accepted == 50 && reply.rejected.is_empty(),
            "{reply:?}"
        );
    }
    let mut bad = Vec::new();
    for i in 0..3 {
        let mut e = good(&mut rng);
        match i {
            // No event time.
            0 => e.time = 0,
            // Another tenant's event.
            1 => {
                if let Some(meta) = e.metadata.as_mut() {
                    meta.tenant_uid = "globex".into();
                }
            }
            // An unknown OCSF class.
            _ => e.class_uid = 999_999,
        }
        bad.push(e);
    }
    let reply = device
        .publish(PublishRequest { events: bad })
        .await?
        .into_inner();
    ensure!(
        reply.accepted == 0 && reply.rejected.len() == 3,
        "{reply:?}"
    );
    let mut rejected: BTreeMap<&str, f64> = BTreeMap::new();
    for r in &reply.rejected {
        let code = RejectionCode::try_from(r.code).unwrap_or(RejectionCode::Unspecified);
        *rejected.entry(code.as_str_name()).or_default() += 1.0;
    }

    // One poison message, straight onto the bus as the gateway user.
    let gateway_nats =
        vigil_common::nats::connect(&mesh.nats.settings("gateway"), "poisoner").await?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", PROTOBUF_CONTENT_TYPE);
    jetstream::new(gateway_nats)
        .publish_with_headers(
            subjects::events_subject("acme", 3002),
            headers,
            Bytes::from_static(b"\xffnot an EventBatch"),
        )
        .await?
        .await?;

    // One client that does not speak TLS at all.
    let mut plain = tokio::net::TcpStream::connect(mesh.gateway_addr).await?;
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    drop(plain);

    // The writer stored the 100, dead-lettered the poison message, and its
    // lag watcher saw the DLQ at 1 and its consumer caught up.
    let writer = m.writer;
    wait_until(
        Duration::from_secs(60),
        "the writer's metrics to show the load",
        || async move {
            let Ok(t) = scrape(writer).await else {
                return false;
            };
            value(
                &t,
                "vigil_writer_rows_total",
                &[r#"table="events""#, r#"result="inserted""#],
            ) == 100.0
                && value(
                    &t,
                    "vigil_writer_messages_total",
                    &[r#"result="dead_lettered""#],
                ) == 1.0
                && value(&t, "vigil_nats_stream_messages", &[r#"stream="DLQ""#]) == 1.0
                && value(
                    &t,
                    "vigil_nats_consumer_ack_pending_messages",
                    &[r#"stream="EVENTS""#],
                ) == 0.0
                && sample(
                    &t,
                    "vigil_nats_consumer_pending_messages",
                    &[r#"stream="EVENTS""#],
                ) == Some(0.0)
        },
    )
    .await?;
    let gateway = m.gateway;
    wait_until(
        Duration::from_secs(20),
        "the gateway to count the refused handshake",
        || async move {
            scrape(gateway)
                .await
                .is_ok_and(|t| value(&t, "vigil_tls_handshake_failures_total", &[]) >= 1.0)
        },
    )
    .await?;
    let correlator = m.correlators[0];
    wait_until(
        Duration::from_secs(30),
        "the correlator to absorb the load",
        || async move {
            scrape(correlator).await.is_ok_and(|t| {
                value(&t, "vigil_correlator_events_total", &[]) == 100.0
                    && value(&t, "vigil_correlator_undecodable_messages_total", &[]) == 1.0
            })
        },
    )
    .await?;

    let mut texts = Vec::new();
    let all: Vec<(&str, SocketAddr)> = vec![
        ("gateway", m.gateway),
        ("writer", m.writer),
        ("reader", m.reader),
        ("correlator", correlator),
    ];
    for (name, addr) in &all {
        let text = scrape(*addr).await?;
        promtool_check(name, &text)?;
        ensure!(
            value(&text, "vigil_build_info", &[&format!("service=\"{name}\"")]) == 1.0,
            "{name}: build info"
        );
        ensure!(value(&text, "vigil_ready", &[]) == 1.0, "{name}: not ready");
        texts.push(text);
    }
    let g = &texts[0];
    let gw = |labels: &[&str]| value(g, "vigil_gateway_events_total", labels);
    assert_eq!(gw(&[r#"result="accepted""#]), 100.0);
    assert_eq!(gw(&[r#"result="rejected""#]), 3.0);
    for (code, n) in &rejected {
        assert_eq!(
            gw(&[r#"result="rejected""#, &format!("reason=\"{code}\"")]),
            *n,
            "{code}"
        );
    }
    assert_eq!(gw(&[r#"result="unavailable""#]), 0.0);
    assert_eq!(value(g, "vigil_gateway_batch_events_count", &[]), 3.0);
    assert_eq!(value(g, "vigil_gateway_batch_events_sum", &[]), 103.0);
    assert_eq!(
        value(
            g,
            "vigil_gateway_publish_duration_seconds_count",
            &[r#"result="ok""#]
        ),
        2.0
    );
    assert_eq!(
        value(
            g,
            "vigil_rpc_server_requests_total",
            &[
                r#"rpc_service="vigil.ingest.v1.IngestService""#,
                r#"rpc_method="Publish""#,
                r#"rpc_grpc_status_code="OK""#
            ]
        ),
        3.0
    );
    assert_eq!(
        value(
            g,
            "vigil_rpc_server_duration_seconds_count",
            &[r#"rpc_method="Publish""#]
        ),
        3.0
    );
    assert_eq!(
        value(
            g,
            "vigil_tls_handshake_failures_total",
            &[r#"reason="protocol""#]
        ),
        1.0
    );
    assert_eq!(value(g, "vigil_rpc_server_refused_total", &[]), 0.0);
    // The served certificate's notAfter, in the future.
    let expiry = value(g, "vigil_tls_certificate_expiry_timestamp_seconds", &[]);
    assert!(expiry > now as f64 / 1000.0, "{expiry}");

    let w = &texts[1];
    assert_eq!(
        value(w, "vigil_writer_rows_total", &[r#"result="duplicate""#]),
        0.0
    );
    assert_eq!(
        value(w, "vigil_writer_ingest_to_commit_seconds_count", &[]),
        100.0
    );
    // The poison message was tried once, retried, then dead-lettered.
    assert_eq!(
        value(w, "vigil_writer_messages_total", &[r#"result="retried""#]),
        1.0
    );
    assert_eq!(
        value(
            w,
            "vigil_writer_messages_total",
            &[r#"stream="EVENTS""#, r#"result="committed""#]
        ),
        2.0
    );
    assert_eq!(
        value(w, "vigil_dependency_up", &[r#"dependency="postgres""#]),
        1.0
    );
    Ok(())
}

/// The metric names an expression uses (`vigil_*` and `process_*`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if at_word_start && (expr[i..].starts_with("vigil_") || expr[i..].starts_with("process_")) {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |n| i + n);
            names.push(expr[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// Runs promtool (Debian package prometheus; deploy/test installs it) in
/// the workspace with `stdin`; what it printed, or an error if it failed.
fn promtool(args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    use std::io::Write;
    use std::process::Stdio;
    let promtool = std::env::var("VIGIL_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = std::process::Command::new(&promtool)
        .args(args)
        .current_dir(vigil_e2e::workspace_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {promtool}"))?;
    let mut input = child.stdin.take().context("promtool stdin")?;
    input.write_all(stdin.unwrap_or_default().as_bytes())?;
    drop(input);
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "promtool {}: {said}", args.join(" "));
    Ok(said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_dashboard_use_only_exported_metrics() -> anyhow::Result<()> {
    // The rules load, their unit tests pass, the scrape config is valid.
    promtool(
        &["check", "config", "deploy/prometheus/prometheus.yml"],
        None,
    )?;
    promtool(&["check", "rules", "deploy/prometheus/alerts.yml"], None)?;
    promtool(
        &["test", "rules", "deploy/prometheus/alerts_test.yml"],
        None,
    )?;

    let mesh = Mesh::start().await?;
    let exported: std::collections::BTreeSet<String> =
        mesh.registries.iter().flat_map(|r| r.names()).collect();
    let known = |name: &str| {
        exported.contains(name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name.strip_suffix(s).is_some_and(|b| exported.contains(b)))
    };
    let root = vigil_e2e::workspace_root();
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        root.join("deploy/grafana/vigil-dashboard.json"),
    )?)?;
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().context("panels")? {
        for target in panel["targets"].as_array().context("targets")? {
            queries.push(target["expr"].as_str().context("expr")?.to_owned());
        }
    }
    ensure!(queries.len() >= 10, "{} dashboard queries", queries.len());
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml"))?;
    let mut used = 0;
    for (source, text) in queries
        .iter()
        .map(|q| ("dashboard", q.as_str()))
        .chain([("alerts.yml", rules.as_str())])
    {
        for name in metric_names(text) {
            ensure!(
                known(&name),
                "{source} uses {name}, which no service exports"
            );
            used += 1;
        }
    }
    ensure!(used >= 30, "only {used} metric references found");
    mesh.stop().await;
    Ok(())
}
