//! Load with a ledger, Jepsen style: devices publish through the device
//! library; every event is recorded as acknowledged (the gateway said OK)
//! or unknown (retries ran out). After the fault, [`Ledger::check`] sorts
//! each event into ok (acknowledged and stored), lost (acknowledged, not
//! stored: must be 0) and unknown (not acknowledged; stored at most once),
//! and counts duplicated rows (must be 0).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use sqlx::PgPool;
use tokio::sync::Mutex;
use vigil_client::TlsFiles;
use vigil_client::device::{DeviceClient, PublishError, RetryPolicy};
use vigil_proto::event::v1::SecurityEvent;

/// What happened to one event, as the device saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    Acknowledged,
    Unknown,
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `(tenant, device)` pairs; each sends from its own connection.
    pub devices: Vec<(String, String)>,
    pub events_per_device: usize,
    pub batch: usize,
    /// Total events per second across devices.
    pub rate: f64,
    pub policy: RetryPolicy,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            devices: vec![
                ("acme".into(), "cam-01".into()),
                ("acme".into(), "host-01".into()),
                ("globex".into(), "sensor-01".into()),
                ("globex".into(), "host-02".into()),
            ],
            events_per_device: 5_000,
            batch: 100,
            rate: 2_000.0,
            policy: RetryPolicy {
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(2),
                max_elapsed: Duration::from_secs(60),
                attempt_timeout: Duration::from_secs(5),
            },
        }
    }
}

/// Every event sent, and what the device was told.
#[derive(Default)]
pub struct Ledger {
    pub events: Mutex<HashMap<String, Ack>>,
    /// Events acknowledged so far (to time faults against progress).
    pub acknowledged: AtomicU64,
    /// When each acknowledgement arrived.
    pub ack_times: Mutex<Vec<Instant>>,
}

/// Runs the load to completion against `gateway_url`, recording into
/// `ledger`.
pub async fn run(
    gateway_url: String,
    pki: vigil_certs::Pki,
    options: LoadOptions,
    ledger: Arc<Ledger>,
) -> anyhow::Result<()> {
    let per_device_interval =
        Duration::from_secs_f64(options.batch as f64 * options.devices.len() as f64 / options.rate);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (tenant, device)) in options.devices.iter().enumerate() {
        let paths = pki.device(tenant, device);
        let files = TlsFiles {
            ca: pki.ca(),
            cert: paths.cert,
            key: paths.key,
        };
        let url = gateway_url.clone();
        let ledger = ledger.clone();
        let options = options.clone();
        tasks.spawn(async move {
            let mut client = DeviceClient::connect(&url, &files, options.policy.clone()).await?;
            let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
            let mut tick = tokio::time::interval(per_device_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut sent = 0;
            while sent < options.events_per_device {
                tick.tick().await;
                let n = options.batch.min(options.events_per_device - sent);
                let now = vigil_common::now_millis();
                let batch: Vec<SecurityEvent> = (0..n)
                    .map(|_| {
                        let kind = vigil_client::events::random_kind(&mut rng);
                        vigil_client::events::sample(kind, &mut rng, now)
                    })
                    .collect();
                let ids: Vec<String> = batch.iter().map(|e| e.uid().to_owned()).collect();
                let outcome = match client.publish(batch).await {
                    Ok(r) => {
                        anyhow::ensure!(
                            r.rejected.is_empty(),
                            "valid events rejected: {:?}",
                            r.rejected
                        );
                        ledger.acknowledged.fetch_add(n as u64, Ordering::Relaxed);
                        ledger.ack_times.lock().await.push(Instant::now());
                        Ack::Acknowledged
                    }
                    Err(PublishError::Unknown { .. }) => Ack::Unknown,
                    Err(PublishError::Refused(status)) => {
                        anyhow::bail!("gateway refused a valid batch: {status}")
                    }
                };
                let mut events = ledger.events.lock().await;
                for id in ids {
                    events.insert(id, outcome);
                }
                sent += n;
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

/// The outcome classes of one fault test.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub sent: usize,
    pub acknowledged: usize,
    pub present: usize,
    pub lost: usize,
    pub duplicated: i64,
    pub unknown: usize,
    pub unknown_present: usize,
    pub recovery: Duration,
    /// The longest time no device got an OK: how long the fault stalled
    /// the edge.
    pub longest_stall: Duration,
}

impl Outcome {
    pub const HEADER: &'static str = "| test | sent | acknowledged | present | lost | duplicated | unknown (of which stored) | time to recover |";

    pub fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {} | {} | {} | {} | {} | {} ({}) | {:.1} s | {:.1} s |",
            self.sent,
            self.acknowledged,
            self.present,
            self.lost,
            self.duplicated,
            self.unknown,
            self.unknown_present,
            self.longest_stall.as_secs_f64(),
            self.recovery.as_secs_f64()
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.row("-"))
    }
}

impl Ledger {
    /// Waits until at least `n` events have been acknowledged.
    pub async fn progress(&self, n: u64) -> anyhow::Result<()> {
        crate::wait_until(
            Duration::from_secs(60),
            &format!("{n} acknowledged events"),
            || async { self.acknowledged.load(Ordering::Relaxed) >= n },
        )
        .await
    }

    /// The events acknowledged so far.
    pub async fn acknowledged_ids(&self) -> HashSet<String> {
        let events = self.events.lock().await;
        events
            .iter()
            .filter(|(_, a)| **a == Ack::Acknowledged)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Time to recover: from the end of a fault until every event that was
    /// acknowledged by then is stored.
    pub async fn recovery(
        &self,
        pool: &PgPool,
        fault_end: Instant,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let ids = self.acknowledged_ids().await;
        let deadline = fault_end + timeout;
        loop {
            let stored: i64 =
                sqlx::query_scalar("SELECT count(*) FROM events WHERE uid = ANY($1::uuid[])")
                    .bind(
                        ids.iter()
                            .filter_map(|id| uuid::Uuid::parse_str(id).ok())
                            .collect::<Vec<_>>(),
                    )
                    .fetch_one(pool)
                    .await?;
            if stored as usize >= ids.len() || Instant::now() > deadline {
                return Ok(fault_end.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to `timeout`) until every acknowledged event is stored,
    /// then classifies every event. `recovery` is reported as measured.
    pub async fn check(
        &self,
        pool: &PgPool,
        recovery: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Outcome> {
        let recovery_start = Instant::now();
        let events = self.events.lock().await.clone();
        let acknowledged: HashSet<&String> = events
            .iter()
            .filter(|(_, a)| **a == Ack::Acknowledged)
            .map(|(id, _)| id)
            .collect();
        let deadline = recovery_start + timeout;
        let mut stored: HashSet<String>;
        loop {
            stored = sqlx::query_scalar::<_, uuid::Uuid>("SELECT uid FROM events")
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|u| u.to_string())
                .collect();
            if acknowledged.iter().all(|id| stored.contains(*id)) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (rows, distinct): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(DISTINCT uid) FROM events")
                .fetch_one(pool)
                .await?;
        let mut times = self.ack_times.lock().await.clone();
        times.sort();
        let longest_stall = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        let unknown: Vec<&String> = events
            .iter()
            .filter(|(_, a)| **a == Ack::Unknown)
            .map(|(id, _)| id)
            .collect();
        Ok(Outcome {
            sent: events.len(),
            acknowledged: acknowledged.len(),
            present: events.keys().filter(|id| stored.contains(*id)).count(),
            lost: acknowledged
                .iter()
                .filter(|id| !stored.contains(**id))
                .count(),
            duplicated: rows - distinct,
            unknown: unknown.len(),
            unknown_present: unknown.iter().filter(|id| stored.contains(**id)).count(),
            recovery,
            longest_stall,
        })
    }
}
