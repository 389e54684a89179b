//! Delivery under faults (docs/delivery.md): tens of thousands of events
//! through the real processes while something crashes, stalls or goes
//! away. Every event a device was told OK must be stored, exactly once.
//!
//! The tests take turns (one fault at a time on a two-core machine keeps
//! the timings meaningful); each prints its row of the outcome table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use vigil_e2e::load::{self, Ledger, LoadOptions, Outcome};
use vigil_e2e::stack::Stack;
use vigil_e2e::{MeshOptions, wait_until};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const RECOVERY_TIMEOUT: Duration = Duration::from_secs(90);

struct Run {
    stack: Stack,
    ledger: Arc<Ledger>,
    load: JoinHandle<anyhow::Result<()>>,
}

async fn start(options: MeshOptions, load_options: LoadOptions) -> anyhow::Result<Run> {
    let stack = Stack::start(options).await?;
    let ledger = Arc::new(Ledger::default());
    let load = tokio::spawn(load::run(
        stack.gateway_url(),
        stack.pki.clone(),
        load_options,
        ledger.clone(),
    ));
    Ok(Run {
        stack,
        ledger,
        load,
    })
}

/// Waits for the load to finish and every acknowledged event to land, then
/// prints and checks the outcome.
async fn finish(name: &str, run: Run, fault_end: Instant) -> anyhow::Result<Outcome> {
    let Run {
        stack,
        ledger,
        load,
    } = run;
    let recovery = ledger
        .recovery(&stack.pool, fault_end, RECOVERY_TIMEOUT)
        .await?;
    let loaded = load.await?;
    let outcome = ledger
        .check(&stack.pool, recovery, RECOVERY_TIMEOUT)
        .await?;
    eprintln!("{}\n{}", Outcome::HEADER, outcome.row(name));
    if loaded.is_err() || outcome.lost > 0 || outcome.duplicated > 0 {
        stack.dump_logs();
    }
    loaded?;
    assert_eq!(outcome.lost, 0, "{name}: acknowledged events lost");
    assert_eq!(outcome.duplicated, 0, "{name}: duplicated rows");
    assert!(outcome.unknown_present <= outcome.unknown);
    assert_eq!(outcome.sent, 20_000);
    Ok(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_killed_repeatedly() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut run = start(MeshOptions::default(), LoadOptions::default()).await?;
    for round in 1..=3u64 {
        run.ledger.progress(round * 4_000).await?;
        run.stack.writer.kill9();
        tokio::time::sleep(Duration::from_millis(500)).await; // down for a moment
        run.stack.writer.start().await?;
    }
    let fault_end = Instant::now();
    finish("kill -9 writer (x3)", run, fault_end).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_devices_reconnect_and_retry() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut run = start(MeshOptions::default(), LoadOptions::default()).await?;
    run.ledger.progress(4_000).await?;
    run.stack.gateway.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    run.stack.gateway.start().await?;
    let fault_end = Instant::now();
    finish("kill -9 gateway", run, fault_end).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_killed_and_restarted() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut run = start(
        MeshOptions {
            publish_timeout_secs: 2,
            ..Default::default()
        },
        LoadOptions::default(),
    )
    .await?;
    run.ledger.progress(4_000).await?;
    run.stack.nats.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    run.stack.nats.spawn().await?;
    let fault_end = Instant::now();
    finish("kill -9 nats-server", run, fault_end).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_paused() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let run = start(
        MeshOptions {
            publish_timeout_secs: 2,
            ..Default::default()
        },
        LoadOptions::default(),
    )
    .await?;
    run.ledger.progress(4_000).await?;
    run.stack.pause_nats();
    tokio::time::sleep(Duration::from_secs(4)).await; // publishes time out: outcome unknown
    run.stack.resume_nats();
    let fault_end = Instant::now();
    finish("SIGSTOP nats-server 4 s", run, fault_end).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_for_twenty_seconds() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let run = start(MeshOptions::default(), LoadOptions::default()).await?;
    run.ledger.progress(4_000).await?;
    run.stack.pg_proxy.cut();
    // The writer notices and says so...
    wait_until(
        Duration::from_secs(15),
        "writer to report NOT_SERVING",
        || async { run.stack.writer_serving().await.ok() == Some(false) },
    )
    .await?;
    // ...while devices keep getting OKs: JetStream holds their events.
    let at_cut = run
        .ledger
        .acknowledged
        .load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let during = run
        .ledger
        .acknowledged
        .load(std::sync::atomic::Ordering::Relaxed)
        - at_cut;
    assert!(
        during > 1_000,
        "only {during} events acknowledged while Postgres was away"
    );
    run.stack.pg_proxy.restore();
    let fault_end = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "writer to report SERVING again",
        || async { run.stack.writer_serving().await.ok() == Some(true) },
    )
    .await?;
    finish("Postgres unreachable 20 s", run, fault_end).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_stack_restarted_mid_load() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut run = start(MeshOptions::default(), LoadOptions::default()).await?;
    run.ledger.progress(4_000).await?;
    // SIGTERM drains: each service must exit cleanly within its grace period.
    let grace = Duration::from_secs(15);
    run.stack.gateway.terminate(grace).await?;
    run.stack.reader.terminate(grace).await?;
    run.stack.writer.terminate(grace).await?;
    run.stack.correlator.terminate(grace).await?;
    run.stack.nats.kill();
    run.stack.nats.spawn().await?;
    run.stack.correlator.start().await?;
    run.stack.writer.start().await?;
    run.stack.gateway.start().await?;
    run.stack.reader.start().await?;
    let fault_end = Instant::now();
    finish("restart whole stack", run, fault_end).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlator_killed_mid_stream_emits_what_an_uninterrupted_run_would() -> anyhow::Result<()>
{
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut stack = Stack::start(MeshOptions::default()).await?;
    let devices: Vec<(String, String)> = [
        ("acme", "cam-01"),
        ("globex", "sensor-01"),
        ("initech", "ws-01"),
    ]
    .iter()
    .map(|(t, d)| ((*t).to_owned(), (*d).to_owned()))
    .collect();
    let end = vigil_common::now_millis() - 1_000;
    let scenario = vigil_client::scenario::generate(&devices, end - 30 * 60_000, end, 3_000, 9);
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sender = {
        let (url, pki, events, sent) = (
            stack.gateway_url(),
            stack.pki.clone(),
            scenario.events.clone(),
            sent.clone(),
        );
        tokio::spawn(async move {
            let mut clients = std::collections::HashMap::new();
            for chunk in events.chunks(50) {
                for (tenant, device, event) in chunk {
                    if !clients.contains_key(tenant) {
                        let p = pki.device(tenant, device);
                        let files = vigil_client::TlsFiles {
                            ca: pki.ca(),
                            cert: p.cert,
                            key: p.key,
                        };
                        clients.insert(
                            tenant.clone(),
                            vigil_client::device::DeviceClient::connect(
                                &url,
                                &files,
                                Default::default(),
                            )
                            .await?,
                        );
                    }
                    if let Some(client) = clients.get_mut(tenant) {
                        client.publish(vec![event.clone()]).await?;
                    }
                }
                sent.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
            }
            anyhow::Ok(())
        })
    };
    wait_until(
        Duration::from_secs(60),
        "a third of the scenario sent",
        || async { sent.load(std::sync::atomic::Ordering::Relaxed) > scenario.events.len() / 3 },
    )
    .await?;
    stack.correlator.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.correlator.start().await?;
    sender.await??;
    let total = scenario.events.len() as i64;
    wait_until(
        Duration::from_secs(60),
        "every scenario event stored",
        || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
                .fetch_one(&stack.pool)
                .await
                .ok()
                == Some(total)
        },
    )
    .await?;

    let expected = vigil_e2e::uninterrupted_findings(&stack.pool).await?;
    assert_eq!(expected.len(), 18);
    let stored = || vigil_e2e::stored_findings(&stack.pool);
    let matched = wait_until(
        Duration::from_secs(60),
        "findings equal to an uninterrupted run",
        || async { stored().await == expected },
    )
    .await;
    if matched.is_err() {
        stack.dump_logs();
        assert_eq!(stored().await, expected);
    }
    eprintln!(
        "| kill -9 correlator | {} events | {} findings, equal to an uninterrupted run |",
        scenario.events.len(),
        expected.len()
    );
    Ok(())
}
