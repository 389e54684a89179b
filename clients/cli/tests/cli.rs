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

    let id = events[0]["uid"].as_str().unwrap_or_default().to_owned();
    let one = vigil(&mesh, &["event", &id, "-o", "json"])?;
    let value: serde_json::Value = serde_json::from_slice(&one.stdout)?;
    assert_eq!(value["uid"], id);
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
