//! `device-sim`: a fleet of simulated devices, one per device certificate
//! in `<certs>/devices/`, each sending a realistic OCSF mix (logins that
//! succeed and fail, processes, network, DNS, file access) to the gateway
//! over its own mTLS connection, at a chosen total rate.
//!
//! Each device publishes through `vigil_client::device`: a batch the
//! gateway did not acknowledge is resent unchanged (same event ids) with
//! backoff, so a flaky gateway never duplicates events.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use rand::{Rng, SeedableRng};
use vigil_client::TlsFiles;
use vigil_client::device::{DeviceClient, PublishError, RetryPolicy};

#[derive(Parser)]
#[command(
    version,
    about = "Simulated devices sending security events to the vigil gateway"
)]
struct Args {
    #[arg(
        long,
        env = "VIGIL_GATEWAY_ADDR",
        default_value = "https://127.0.0.1:4443"
    )]
    gateway: String,
    /// PKI directory from `vigil-certs` (uses ca.crt and devices/*).
    #[arg(long, env = "VIGIL_CERTS_DIR", default_value = "certs/out")]
    certs: PathBuf,
    /// Events per second across all devices.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Events per request.
    #[arg(long, default_value_t = 25)]
    batch: usize,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Instead of steady traffic: inject one attack scenario per tenant
    /// (brute force, credential compromise, port scan, and near-misses that
    /// must not trigger) into the last 30 minutes of background traffic,
    /// write the ground truth (JSON) to this file, and exit.
    #[arg(long)]
    scenario_truth: Option<PathBuf>,
}

#[derive(Default)]
struct Stats {
    accepted: AtomicU64,
    rejected: AtomicU64,
    unknown: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let args = Args::parse();
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(
        (1..=1000).contains(&args.batch),
        "--batch must be 1 to 1000"
    );
    let pki = vigil_certs::Pki::at(&args.certs);
    let devices = pki.devices()?;
    anyhow::ensure!(
        !devices.is_empty(),
        "no device certificates in {}/devices",
        args.certs.display()
    );
    if let Some(truth) = &args.scenario_truth {
        return send_scenario(&args, &pki, &devices, truth).await;
    }
    let per_device = args.rate / devices.len() as f64;
    let interval = Duration::from_secs_f64(args.batch as f64 / per_device);
    tracing::info!(
        devices = devices.len(),
        rate = args.rate,
        ?interval,
        "starting fleet"
    );
    let stats = Arc::new(Stats::default());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (tenant, device, paths)) in devices.into_iter().enumerate() {
        let files = TlsFiles {
            ca: pki.ca(),
            cert: paths.cert,
            key: paths.key,
        };
        let gateway = args.gateway.clone();
        let stats = stats.clone();
        let batch = args.batch;
        tasks.spawn(async move {
            if let Err(e) = run_device(&gateway, &files, batch, interval, i as u64, &stats).await {
                tracing::error!(%tenant, %device, error = %e, "device stopped");
            }
        });
    }
    let report = {
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                tracing::info!(
                    accepted = stats.accepted.load(Ordering::Relaxed),
                    rejected = stats.rejected.load(Ordering::Relaxed),
                    unknown = stats.unknown.load(Ordering::Relaxed),
                    "fleet"
                );
            }
        })
    };
    let until = async {
        match args.duration_secs {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = until => {}
        _ = async { while tasks.join_next().await.is_some() {} } => {}
    }
    report.abort();
    println!(
        "device-sim: accepted {} rejected {} unknown {}",
        stats.accepted.load(Ordering::Relaxed),
        stats.rejected.load(Ordering::Relaxed),
        stats.unknown.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn run_device(
    gateway: &str,
    files: &TlsFiles,
    batch: usize,
    interval: Duration,
    seed: u64,
    stats: &Stats,
) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ rand::random::<u64>());
    let mut client = DeviceClient::connect(gateway, files, RetryPolicy::default()).await?;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Events happened over the interval since the last batch.
        let now = chrono_now();
        let spread = i64::try_from(interval.as_millis()).unwrap_or(1).max(1);
        let events = (0..batch)
            .map(|_| {
                let kind = vigil_client::events::random_kind(&mut rng);
                let time = now - rng.random_range(0..spread);
                vigil_client::events::sample(kind, &mut rng, time)
            })
            .collect::<Vec<_>>();
        match client.publish(events).await {
            Ok(r) => {
                stats
                    .accepted
                    .fetch_add(u64::from(r.accepted), Ordering::Relaxed);
                stats
                    .rejected
                    .fetch_add(r.rejected.len() as u64, Ordering::Relaxed);
            }
            Err(PublishError::Unknown { attempts, last }) => {
                stats.unknown.fetch_add(batch as u64, Ordering::Relaxed);
                tracing::warn!(attempts, %last, "gave up on a batch; outcome unknown");
            }
            Err(PublishError::Refused(status)) => anyhow::bail!("gateway refused: {status}"),
        }
    }
}

async fn send_scenario(
    args: &Args,
    pki: &vigil_certs::Pki,
    devices: &[(String, String, vigil_certs::CertPaths)],
    truth_path: &std::path::Path,
) -> anyhow::Result<()> {
    let pairs: Vec<(String, String)> = devices
        .iter()
        .map(|(t, d, _)| (t.clone(), d.clone()))
        .collect();
    let end = chrono_now() - 1_000;
    let scenario =
        vigil_client::scenario::generate(&pairs, end - 30 * 60_000, end, 500, rand::random());
    let mut sent = 0usize;
    for (tenant, device, paths) in devices {
        let events: Vec<_> = scenario
            .events
            .iter()
            .filter(|(t, d, _)| t == tenant && d == device)
            .map(|(_, _, e)| e.clone())
            .collect();
        if events.is_empty() {
            continue;
        }
        let files = TlsFiles {
            ca: pki.ca(),
            cert: paths.cert.clone(),
            key: paths.key.clone(),
        };
        let mut client =
            DeviceClient::connect(&args.gateway, &files, RetryPolicy::default()).await?;
        for chunk in events.chunks(args.batch) {
            client.publish(chunk.to_vec()).await?;
            sent += chunk.len();
        }
    }
    std::fs::write(truth_path, serde_json::to_vec_pretty(&scenario.truth)?)?;
    let attacks = scenario.truth.iter().filter(|t| t.expect_finding).count();
    println!(
        "device-sim: sent {sent} scenario events; {attacks} attacks and {} near-misses injected; ground truth in {}",
        scenario.truth.len() - attacks,
        truth_path.display()
    );
    Ok(())
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
