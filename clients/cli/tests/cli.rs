//! The `vigil` binary against a real mesh, as an analyst runs it.

use std::process::Output;

use vigil_e2e::Mesh;

fn vigil(mesh: &Mesh, args: &[&str]) -> anyhow::Result<Output> {
    let analyst = mesh.analyst_files();
    let device = mesh.device_files("acme", "cam-01");
    Ok(std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .env("VIGIL_READER_ADDR", mesh.reader_url())
        .env("VIGIL_GATEWAY_ADDR", mesh.gateway_url())
        .env("VIGIL_CA", &analyst.ca)
        .env("VIGIL_CERT", &analyst.cert)
        .env("VIGIL_KEY", &analyst.key)
        .env("VIGIL_DEVICE_CERT", &device.cert)
        .env("VIGIL_DEVICE_KEY", &device.key)
        .env_remove("VIGIL_OUTPUT")
        .output()?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_then_list_as_table_and_json() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let sent = vigil(
        &mesh,
        &[
            "send",
            "--kind",
            "process",
            "--severity",
            "critical",
            "--message",
            "miner started on cam-01",
        ],
    )?;
    assert!(sent.status.success(), "{}", text(&sent.stderr));
    vigil(
        &mesh,
        &[
            "send",
            "--kind",
            "dns",
            "--severity",
            "informational",
            "--message",
            "quiet lookup",
        ],
    )?;
    mesh.wait_for_events(2).await?;

    let table = vigil(
        &mesh,
        &["events", "--min-severity", "high", "--limit", "10"],
    )?;
    assert!(table.status.success(), "{}", text(&table.stderr));
    let out = text(&table.stdout);
    for expected in [
        "time",
        "tenant",
        "device",
        "class",
        "severity",
        "message",
        "acme",
        "cam-01",
        "Process Activity",
        "Critical",
        "miner started on cam-01",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
    assert!(
        !out.contains("quiet lookup"),
        "informational event shown at --min-severity high:\n{out}"
    );

    let json = vigil(&mesh, &["events", "-o", "json", "--limit", "10"])?;
    assert!(json.status.success(), "{}", text(&json.stderr));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    let events = value["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["severity"] == "Critical" && e["class_uid"] == 1007)
            .count(),
        1
    );

    let id = events[0]["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let one = vigil(&mesh, &["event", &id, "-o", "json"])?;
    let value: serde_json::Value = serde_json::from_slice(&one.stdout)?;
    assert_eq!(value["metadata"]["uid"], id);
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_problem() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;

    let missing = vigil(&mesh, &["events", "--cert", "/nonexistent/analyst.crt"])?;
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("/nonexistent/analyst.crt"),
        "{}",
        text(&missing.stderr)
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let unreachable = vigil(&mesh, &["events", "--reader", &format!("https://{closed}")])?;
    assert_eq!(
        unreachable.status.code(),
        Some(3),
        "{}",
        text(&unreachable.stderr)
    );
    assert!(
        text(&unreachable.stderr).contains(&closed.to_string()),
        "{}",
        text(&unreachable.stderr)
    );

    // A device certificate is a valid identity, but not one that may query.
    let device = mesh.device_files("acme", "cam-01");
    let refused = vigil(
        &mesh,
        &[
            "events",
            "--cert",
            &device.cert.to_string_lossy(),
            "--key",
            &device.key.to_string_lossy(),
        ],
    )?;
    assert_eq!(refused.status.code(), Some(4));
    assert!(
        text(&refused.stderr).contains("refused identity"),
        "{}",
        text(&refused.stderr)
    );

    // A certificate from a foreign CA is refused at the handshake.
    let foreign = mesh.pki.foreign_user();
    let foreign = vigil(
        &mesh,
        &[
            "events",
            "--cert",
            &foreign.cert.to_string_lossy(),
            "--key",
            &foreign.key.to_string_lossy(),
        ],
    )?;
    assert_eq!(foreign.status.code(), Some(4), "{}", text(&foreign.stderr));
    assert!(
        text(&foreign.stderr).contains("refused our certificate"),
        "{}",
        text(&foreign.stderr)
    );

    let bad_severity = vigil(&mesh, &["events", "--min-severity", "severe"])?;
    assert_eq!(bad_severity.status.code(), Some(2));
    assert!(text(&bad_severity.stderr).contains("severe"));
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_read_the_audit_trail_and_analysts_may_not() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let listed = vigil(&mesh, &["events", "--limit", "3"])?;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let admin = mesh.pki.user("admin");
    let (cert, key) = (admin.cert.to_string_lossy(), admin.key.to_string_lossy());
    let args = |caller: &'static str| {
        vec![
            "audit", "--cert", &cert, "--key", &key, "--caller", caller, "-o", "json",
        ]
    };
    // The audit record is written by the writer after the reader answered.
    let records = std::cell::RefCell::new(Vec::new());
    vigil_e2e::wait_until(
        std::time::Duration::from_secs(10),
        "the analyst's query in the audit trail",
        || async {
            let Ok(out) = vigil(&mesh, &args("spiffe://vigil.local/user/analyst")) else {
                return false;
            };
            let Ok(body) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                return false;
            };
            *records.borrow_mut() = body["records"].as_array().cloned().unwrap_or_default();
            !records.borrow().is_empty()
        },
    )
    .await?;
    let records = records.into_inner();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["rpc"], "/vigil.query.v1.QueryService/ListEvents");
    assert_eq!(records[0]["filter"]["limit"], 3);
    assert_eq!(records[0]["outcome"], "OK");

    let refused = vigil(&mesh, &["audit"])?;
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("only admins may read the audit trail"),
        "{}",
        text(&refused.stderr)
    );
    mesh.stop().await;
    Ok(())
}

/// The Python that has the independent OCSF validator
/// (deploy/install-ocsf-validator; deploy/test sets VIGIL_OCSF_PYTHON).
fn ocsf_python() -> anyhow::Result<std::path::PathBuf> {
    // A relative path is relative to the repository root, where deploy/ runs.
    let path = vigil_e2e::workspace_root().join(
        std::env::var_os("VIGIL_OCSF_PYTHON")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| ".tools/venv/bin/python".into()),
    );
    let ok = std::process::Command::new(&path)
        .args(["-c", "import ocsf_json_schema, jsonschema"])
        .output()
        .is_ok_and(|o| o.status.success());
    anyhow::ensure!(
        ok,
        "{} cannot import the OCSF validator: run deploy/install-ocsf-validator (deploy/test does)",
        path.display()
    );
    Ok(path)
}

/// Runs deploy/ocsf/validate.py with `args`; fails with what it printed.
fn validate(python: &std::path::Path, args: &[std::path::PathBuf]) -> anyhow::Result<()> {
    let out = std::process::Command::new(python)
        .arg(vigil_e2e::workspace_root().join("deploy/ocsf/validate.py"))
        .args(args)
        .output()?;
    println!("{}", text(&out.stdout));
    anyhow::ensure!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    Ok(())
}

/// `-o ocsf` prints OCSF JSON that an independent validator accepts, for
/// every class vigil accepts and for a Detection Finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsf_output_of_every_class_and_of_a_finding_validates() -> anyhow::Result<()> {
    let python = ocsf_python()?;
    let mesh = Mesh::start().await?;
    let mut device = mesh.device("acme", "cam-01").await?;
    let mut rng = rand::rng();
    let now = vigil_common::now_millis();
    let mut events: Vec<_> = vigil_client::events::Kind::ALL
        .iter()
        .map(|k| vigil_client::events::sample(*k, &mut rng, now - 1000))
        .collect();
    // Six failed logins from one address 20 minutes ago: a brute force the
    // correlator reports once the window closed.
    for i in 0..6 {
        let mut e = vigil_client::events::sample(
            vigil_client::events::Kind::LoginFailure,
            &mut rng,
            now - 20 * 60_000 + i * 1000,
        );
        e.src_endpoint = Some(vigil_proto::event::v1::NetworkEndpoint {
            ip: "203.0.113.77".into(),
            ..Default::default()
        });
        events.push(e);
    }
    let n = events.len() as i64;
    let response = device
        .publish(vigil_proto::ingest::v1::PublishRequest { events })
        .await?
        .into_inner();
    assert!(response.rejected.is_empty(), "{:?}", response.rejected);
    mesh.wait_for_events(n).await?;
    vigil_e2e::wait_until(std::time::Duration::from_secs(30), "a finding", || async {
        mesh.stored_findings().await.ok() >= Some(1)
    })
    .await?;

    let dir = tempfile::tempdir()?;
    let mut files = Vec::new();
    for (name, args) in [
        ("events", vec!["events", "-o", "ocsf", "--limit", "100"]),
        ("findings", vec!["findings", "-o", "ocsf"]),
    ] {
        let out = vigil(&mesh, &args)?;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let lines = text(&out.stdout);
        for line in lines.lines() {
            let doc: serde_json::Value = serde_json::from_str(line)?;
            assert!(
                doc["class_uid"].is_i64() && doc["type_uid"].is_i64(),
                "{line}"
            );
        }
        let path = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&path, lines)?;
        files.push(path);
    }
    let classes: std::collections::BTreeSet<i64> = std::fs::read_to_string(&files[0])?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["class_uid"].as_i64())
        .collect();
    assert_eq!(
        classes.len(),
        vigil_ocsf::SUPPORTED_CLASSES.len(),
        "{classes:?}"
    );
    validate(&python, &files)?;

    // The schema catalogue: the classes, and each class's JSON Schema,
    // which the same events satisfy.
    let listed = vigil(&mesh, &["schemas", "-o", "json"])?;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout)?;
    assert_eq!(listed["ocsf_version"], vigil_ocsf::VERSION);
    assert_eq!(
        listed["classes"].as_array().map(Vec::len),
        Some(vigil_ocsf::SUPPORTED_CLASSES.len())
    );
    let table = vigil(&mesh, &["schema", "authentication"])?;
    assert!(
        text(&table.stdout).contains("required"),
        "{}",
        text(&table.stdout)
    );
    let shown = vigil(&mesh, &["schema", "3002", "-o", "json"])?;
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout)?;
    let schema_file = dir.path().join("3002.schema.json");
    std::fs::write(&schema_file, shown["json_schema"].to_string())?;
    let logins: String = std::fs::read_to_string(&files[0])?
        .lines()
        .filter(|l| l.contains("\"class_uid\":3002"))
        .map(|l| format!("{l}\n"))
        .collect();
    let logins_file = dir.path().join("3002.jsonl");
    std::fs::write(&logins_file, logins)?;
    validate(&python, &["--schema".into(), schema_file, logins_file])?;
    let unknown = vigil(&mesh, &["schema", "9999"])?;
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown.stderr));
    assert!(
        text(&unknown.stderr).contains("9999"),
        "{}",
        text(&unknown.stderr)
    );
    mesh.stop().await;
    Ok(())
}

#[tokio::test]
async fn retention_drops_whole_days_older_than_kept_and_refuses_too_few() -> anyhow::Result<()> {
    let db = vigil_e2e::TestDb::create().await?;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["admin"])
            .args(args)
            .args(["--database-url", &db.url])
            .output()
    };
    let migrated = run(&["migrate"])?;
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
    let owner = sqlx::PgPool::connect(&db.url).await?;
    let today = chrono::Utc::now().date_naive();
    let mut names = Vec::new();
    for back in [10, 8, 7, 0] {
        let name: String = sqlx::query_scalar("SELECT vigil_event_partition($1)")
            .bind(today - chrono::Duration::days(back))
            .fetch_one(&owner)
            .await?;
        names.push(name);
    }

    let refused = run(&["retention", "--keep-days", "3"])?;
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("--keep-days 3"),
        "{}",
        text(&refused.stderr)
    );

    // Eight days kept: today and the seven before it.
    let kept = run(&["retention", "--keep-days", "8"])?;
    assert!(kept.status.success(), "{}", text(&kept.stderr));
    assert!(
        text(&kept.stderr).contains(&names[0]) && text(&kept.stderr).contains(&names[1]),
        "{}",
        text(&kept.stderr)
    );
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'events'::regclass ORDER BY 1",
    )
    .fetch_all(&owner)
    .await?;
    assert_eq!(left, vec![names[2].clone(), names[3].clone()]);
    owner.close().await;
    Ok(())
}

/// `vigil status -o json` against `mesh`, with its exit status.
fn status(mesh: &Mesh) -> anyhow::Result<(bool, serde_json::Value)> {
    let m = &mesh.metrics;
    let targets = format!(
        "gateway={},writer={},reader={},correlator={}",
        m.gateway, m.writer, m.reader, m.correlators[0]
    );
    let admin = mesh.pki.nats_client("admin");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["status", "-o", "json"])
        .env("VIGIL_STATUS_METRICS", targets)
        .env("VIGIL_NATS_URL", mesh.nats.url())
        .env("VIGIL_NATS_ADMIN_CERT", &admin.cert)
        .env("VIGIL_NATS_ADMIN_KEY", &admin.key)
        .env("VIGIL_CA", mesh.pki.ca())
        .output()?;
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("{e}: {}{}", text(&out.stdout), text(&out.stderr)))?;
    Ok((out.status.success(), body))
}

fn service<'a>(body: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    body["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

fn consumer(body: &serde_json::Value, stream: &str, name: &str) -> (u64, u64) {
    body["consumers"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["stream"] == stream && c["consumer"] == name)
        })
        .map_or((u64::MAX, u64::MAX), |c| {
            (
                c["pending"].as_u64().unwrap_or(u64::MAX),
                c["ack_pending"].as_u64().unwrap_or(u64::MAX),
            )
        })
}

fn stream(body: &serde_json::Value, name: &str) -> u64 {
    body["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stream"] == name))
        .and_then(|s| s["messages"].as_u64())
        .unwrap_or(u64::MAX)
}

async fn publish_batch(mesh: &Mesh, n: usize) -> anyhow::Result<()> {
    let mut device = mesh.device("acme", "cam-01").await?;
    let mut rng = rand::rng();
    let events = (0..n)
        .map(|_| {
            vigil_client::events::sample(
                vigil_client::events::Kind::Dns,
                &mut rng,
                vigil_common::now_millis(),
            )
        })
        .collect();
    let reply = device
        .publish(vigil_proto::ingest::v1::PublishRequest { events })
        .await?
        .into_inner();
    anyhow::ensure!(reply.accepted as usize == n, "{reply:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_readiness_depths_and_a_stopped_writer_falling_behind() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    // Two requests of one class and tenant: two EventBatch messages.
    publish_batch(&mesh, 50).await?;
    publish_batch(&mesh, 50).await?;
    mesh.wait_for_events(100).await?;

    // Healthy: every service ready with its version, EVENTS holds the two
    // messages, the writer has read them all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let body = loop {
        let (ok, body) = status(&mesh)?;
        if ok && consumer(&body, "EVENTS", "writer") == (0, 0) {
            break body;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "status never healthy and caught up: {body:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    for name in ["gateway", "writer", "reader", "correlator"] {
        let s = service(&body, name);
        assert_eq!(s["ready"], true, "{body:#}");
        assert_eq!(s["version"], env!("CARGO_PKG_VERSION"), "{body:#}");
    }
    assert_eq!(stream(&body, "EVENTS"), 2, "{body:#}");
    assert_eq!(stream(&body, "DLQ"), 0, "{body:#}");
    assert_eq!(body["dlq_messages"], 0);
    // 100 accepted in the last minute.
    assert_eq!(
        body["events_per_second_last_minute"].as_f64(),
        Some((100.0f64 / 60.0 * 10.0).round() / 10.0),
        "{body:#}"
    );

    // The writer loses Postgres: not ready, naming it, and exit 1; what
    // the devices send piles up on its consumer.
    mesh.pg_proxy.cut();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (ok, body) = status(&mesh)?;
        let writer = service(&body, "writer");
        if !ok && writer["ready"] == false {
            assert_eq!(writer["dependencies_down"], serde_json::json!(["postgres"]));
            assert_eq!(body["healthy"], false);
            assert_eq!(service(&body, "gateway")["ready"], true, "{body:#}");
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the writer never showed not ready: {body:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let behind = |body: &serde_json::Value| {
        let (pending, ack_pending) = consumer(body, "EVENTS", "writer");
        pending + ack_pending
    };
    publish_batch(&mesh, 10).await?;
    let (_, first) = status(&mesh)?;
    publish_batch(&mesh, 10).await?;
    publish_batch(&mesh, 10).await?;
    let (_, second) = status(&mesh)?;
    assert!(behind(&first) >= 1, "{first:#}");
    assert!(
        behind(&second) >= behind(&first) + 2,
        "{first:#}\n{second:#}"
    );
    assert_eq!(stream(&second, "EVENTS"), 5);
    mesh.pg_proxy.restore();
    mesh.stop().await;
    Ok(())
}
