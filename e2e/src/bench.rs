//! The ingest benchmark of the real system (`deploy/bench`, issue #11).
//!
//! 1. **Pipeline.** Starts the stack as processes on loopback with the
//!    production settings (mTLS everywhere, TLS to NATS and Postgres, each
//!    service its own least-privilege user, JetStream `sync_interval:
//!    always`, Postgres `synchronous_commit` as the server has it), drives
//!    it through the device library (`vigil_client::device`) with N devices
//!    for a fixed time, waits until the writer's consumer has nothing
//!    pending, and measures: accepted events/s, committed rows/s sustained
//!    (first to last commit), ack latency, ingest→committed latency, CPU
//!    seconds and peak memory per process.
//! 2. **Raw JetStream.** The same messages (an `EventBatch` of the size the
//!    gateway published) into a fresh nats-server of the same config, with
//!    256 acks in flight: what no gateway can beat.
//! 3. **Raw Postgres.** Rows generated inside Postgres into the same
//!    `events` table (same migrations: partitions, keys, indexes) of a fresh
//!    database, in 5,000-row transactions from two sessions: what no writer
//!    can beat.
//!
//! Then each stage's ratio to its limit, and the exactly-once check: every
//! acknowledged event is in Postgres once, no row is doubled.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prost::Message;
use rand::SeedableRng;
use serde::Serialize;
use sqlx::Row;
use vigil_client::TlsFiles;
use vigil_client::device::{DeviceClient, PublishError, RetryPolicy};
use vigil_proto::event::v1::{EventBatch, SecurityEvent};

use crate::stack::{Stack, StackOptions};
use crate::{MeshOptions, NatsServer, TestDb};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Devices, each with its own certificate and connection, spread over
    /// [`TENANTS`].
    pub devices: usize,
    /// Events per Publish call.
    pub batch: usize,
    /// Events per second offered across all devices (each device sends
    /// one batch at a time and waits for its answer, so a slow system
    /// gets less).
    pub rate: f64,
    pub duration: Duration,
    /// How long each raw limit is measured.
    pub raw_duration: Duration,
    /// Postgres sessions of the raw insert.
    pub raw_sessions: usize,
    /// Whether the correlator runs beside the writer.
    pub correlator: bool,
    /// The longest the writer may take to drain after the load.
    pub drain_timeout: Duration,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            devices: 5,
            batch: 500,
            rate: 200_000.0,
            duration: Duration::from_secs(30),
            raw_duration: Duration::from_secs(15),
            raw_sessions: 2,
            correlator: false,
            drain_timeout: Duration::from_secs(300),
        }
    }
}

/// The tenants the devices belong to.
pub const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

impl Percentiles {
    fn of_millis(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i]
        };
        Self {
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub process: String,
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExactlyOnce {
    pub acknowledged: u64,
    pub acknowledged_missing: u64,
    pub rows: u64,
    pub duplicated_rows: u64,
    /// Rows beyond the acknowledged ones: events whose outcome the device
    /// was not told (must be at most `unknown`).
    pub rows_of_unknown: u64,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub settings: serde_json::Value,
    pub accepted: u64,
    pub rejected: u64,
    pub unknown: u64,
    pub accepted_per_sec: f64,
    pub committed_rows: u64,
    pub committed_per_sec: f64,
    pub drain_seconds: f64,
    pub ack_latency_ms: Percentiles,
    pub ingest_to_committed_ms: Percentiles,
    pub events_per_message: f64,
    pub message_bytes: usize,
    pub usage: Vec<Usage>,
    pub raw_jetstream_events_per_sec: f64,
    pub raw_postgres_rows_per_sec: f64,
    pub gateway_ratio_to_jetstream: f64,
    pub writer_ratio_to_postgres: f64,
    pub exactly_once: ExactlyOnce,
}

impl Report {
    /// The report as a table a person reads.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!("settings: {}", self.settings));
        line(format!(
            "accepted {} events ({} rejected, {} unknown): {:.0} events/s",
            self.accepted, self.rejected, self.unknown, self.accepted_per_sec
        ));
        line(format!(
            "committed {} rows: {:.0} rows/s sustained (first to last commit); drained {:.1} s after the load",
            self.committed_rows, self.committed_per_sec, self.drain_seconds
        ));
        line(format!(
            "ack latency ms: p50 {:.2} p99 {:.2} p99.9 {:.2}",
            self.ack_latency_ms.p50, self.ack_latency_ms.p99, self.ack_latency_ms.p999
        ));
        line(format!(
            "ingest->committed ms: p50 {:.1} p99 {:.1}",
            self.ingest_to_committed_ms.p50, self.ingest_to_committed_ms.p99
        ));
        line(format!(
            "gateway messages: {:.1} events, {} bytes each",
            self.events_per_message, self.message_bytes
        ));
        line("process            cpu s   peak RSS MiB".into());
        for u in &self.usage {
            line(format!(
                "{:<18} {:>6.1}   {:>8.1}",
                u.process, u.cpu_seconds, u.peak_rss_mib
            ));
        }
        line(format!(
            "raw JetStream publish (same messages): {:.0} events/s -> gateway at {:.0} %",
            self.raw_jetstream_events_per_sec,
            self.gateway_ratio_to_jetstream * 100.0
        ));
        line(format!(
            "raw Postgres insert (same table): {:.0} rows/s -> writer at {:.0} %",
            self.raw_postgres_rows_per_sec,
            self.writer_ratio_to_postgres * 100.0
        ));
        let e = &self.exactly_once;
        line(format!(
            "exactly once: {} acknowledged, {} missing, {} rows, {} duplicated, {} of unknown outcome -> {}",
            e.acknowledged,
            e.acknowledged_missing,
            e.rows,
            e.duplicated_rows,
            e.rows_of_unknown,
            if e.ok { "ok" } else { "FAILED" }
        ));
        out
    }
}

/// What the devices saw.
#[derive(Default)]
struct DeviceOutcome {
    acknowledged: Vec<u128>,
    rejected: u64,
    unknown: u64,
    latencies_ms: Vec<f64>,
}

/// Runs the three phases and checks exactly once.
pub async fn run(options: &BenchOptions) -> anyhow::Result<Report> {
    anyhow::ensure!(options.devices >= 1, "at least one device");
    anyhow::ensure!(
        (1..=1000).contains(&options.batch),
        "a batch is 1 to 1000 events"
    );
    let devices: Vec<(String, String)> = (0..options.devices)
        .map(|i| {
            (
                TENANTS[i % TENANTS.len()].to_owned(),
                format!("bench-{i:04}"),
            )
        })
        .collect();
    let mesh = MeshOptions {
        publish_timeout_secs: 10,
        limits: vigil_common::provision::StreamLimits::default(),
        writer_max_deliveries: 5,
        writer_retry_base_ms: 1000,
        rate_per_sec: 1_000_000,
        rate_burst: 1_000_000,
        ..MeshOptions::default()
    };
    let postgres_before = postgres_cpu();
    let mut stack = Stack::start_with(
        mesh,
        StackOptions {
            devices: devices.clone(),
            correlator: options.correlator,
            postgres_proxy: false,
        },
    )
    .await?;
    let synchronous_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&stack.pool)
        .await?;
    let settings = serde_json::json!({
        "devices": options.devices,
        "batch": options.batch,
        "offered_events_per_sec": options.rate,
        "duration_secs": options.duration.as_secs_f64(),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "nats": "nats-config/nats-server.conf (TLS, sync_interval: always)",
        "postgres_synchronous_commit": synchronous_commit,
        "correlator": options.correlator,
        "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
    });

    // Memory is sampled while the load runs (Postgres' is the sum over
    // its processes, so only a sample can give its peak).
    let sampling = tokio_util::sync::CancellationToken::new();
    let postgres_peak = tokio::spawn({
        let stop = sampling.clone();
        async move {
            let mut peak = 0u64;
            while !stop.is_cancelled() {
                peak = peak.max(postgres_rss_kib());
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
            peak
        }
    });

    let load_started = Instant::now();
    let outcome = drive(&stack, &devices, options).await?;
    let load_seconds = load_started.elapsed().as_secs_f64();
    let accepted = outcome.acknowledged.len() as u64;

    // Drained: the writer's consumer has nothing pending or unacked.
    let drain_started = Instant::now();
    let admin = vigil_common::nats::connect(&stack.nats.settings("admin"), "bench-admin").await?;
    let js = async_nats::jetstream::new(admin);
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream(
            vigil_common::subjects::WRITER_CONSUMER,
            vigil_common::subjects::EVENTS_STREAM,
        )
        .await?;
    let deadline = Instant::now() + options.drain_timeout;
    loop {
        let info = consumer.info().await?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        if Instant::now() > deadline {
            stack.dump_logs();
            anyhow::bail!(
                "the writer did not drain within {:?}: {} pending, {} unacked",
                options.drain_timeout,
                info.num_pending,
                info.num_ack_pending
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    sampling.cancel();
    let postgres_peak_kib = postgres_peak.await.unwrap_or(0);

    let mut usage = Vec::new();
    for (name, pid) in [
        ("gateway", stack.gateway.pid()),
        ("nats-server", stack.nats.pid()),
        ("writer", stack.writer.pid()),
        ("correlator", stack.correlator.pid()),
    ] {
        if let Some(pid) = pid {
            usage.push(Usage {
                process: name.into(),
                cpu_seconds: process_cpu_seconds(pid),
                peak_rss_mib: status_kib(pid, "VmHWM:") as f64 / 1024.0,
            });
        }
    }
    usage.push(Usage {
        process: "postgres (all)".into(),
        cpu_seconds: postgres_cpu() - postgres_before,
        peak_rss_mib: postgres_peak_kib as f64 / 1024.0,
    });

    let mut events_stream = js.get_stream(vigil_common::subjects::EVENTS_STREAM).await?;
    let stream = events_stream.info().await?.state.clone();
    let events_per_message = if stream.messages > 0 {
        accepted.max(1) as f64 / stream.messages as f64
    } else {
        0.0
    };
    let stats = sqlx::query(
        "SELECT count(*) AS rows,
                count(*) - count(DISTINCT (tenant, uid)) AS duplicated,
                coalesce(extract(epoch FROM max(stored_at) - min(stored_at)), 0)::float8 AS span,
                coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - logged_time)), 0)::float8 AS p50,
                coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - logged_time)), 0)::float8 AS p99,
                coalesce(percentile_cont(0.999) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - logged_time)), 0)::float8 AS p999,
                coalesce(avg(length(payload)), 0)::float8 AS payload_bytes
         FROM events",
    )
    .fetch_one(&stack.pool)
    .await?;
    let rows = u64::try_from(stats.get::<i64, _>("rows")).unwrap_or(0);
    let duplicated = u64::try_from(stats.get::<i64, _>("duplicated")).unwrap_or(0);
    let span: f64 = stats.get("span");
    // A commit span of zero (one transaction) would divide by zero.
    let committed_per_sec = rows as f64 / span.max(0.001);
    let ingest_to_committed_ms = Percentiles {
        p50: stats.get::<f64, _>("p50") * 1000.0,
        p99: stats.get::<f64, _>("p99") * 1000.0,
        p999: stats.get::<f64, _>("p999") * 1000.0,
    };

    // Exactly once.
    let acknowledged: HashSet<u128> = outcome.acknowledged.iter().copied().collect();
    let mut stored =
        sqlx::query_scalar::<_, uuid::Uuid>("SELECT uid FROM events").fetch(&stack.pool);
    let mut found = 0u64;
    while let Some(uid) = stored.next().await {
        if acknowledged.contains(&uid?.as_u128()) {
            found += 1;
        }
    }
    drop(stored);
    let rows_of_unknown = rows.saturating_sub(found + duplicated);
    let exactly_once = ExactlyOnce {
        acknowledged: acknowledged.len() as u64,
        acknowledged_missing: (acknowledged.len() as u64).saturating_sub(found),
        rows,
        duplicated_rows: duplicated,
        rows_of_unknown,
        ok: found == acknowledged.len() as u64
            && duplicated == 0
            && rows_of_unknown <= outcome.unknown,
    };

    // A payload of the size the pipeline stored, for the raw insert; the
    // message the gateway published, for the raw publish.
    let sample: Vec<u8> =
        sqlx::query_scalar("SELECT payload FROM events ORDER BY length(payload) DESC LIMIT 1")
            .fetch_optional(&stack.pool)
            .await?
            .unwrap_or_default();
    let per_message = events_per_message.round().max(1.0) as usize;
    let message = sample_message(per_message);
    let message_bytes = message.len();
    // The raw limits run alone (the stack's processes stopped; its PKI,
    // which the raw publisher uses too, stays until the end).
    stack.gateway.terminate(Duration::from_secs(10)).await.ok();
    stack.writer.terminate(Duration::from_secs(10)).await.ok();
    stack
        .correlator
        .terminate(Duration::from_secs(10))
        .await
        .ok();
    stack.reader.terminate(Duration::from_secs(10)).await.ok();
    stack.nats.kill();

    let raw_jetstream =
        raw_jetstream(&stack.pki, message, per_message, options.raw_duration).await?;
    let raw_postgres = raw_postgres(&sample, options.raw_sessions, options.raw_duration).await?;
    drop(stack);

    Ok(Report {
        settings,
        accepted,
        rejected: outcome.rejected,
        unknown: outcome.unknown,
        accepted_per_sec: accepted as f64 / load_seconds,
        committed_rows: rows,
        committed_per_sec,
        drain_seconds,
        ack_latency_ms: Percentiles::of_millis(outcome.latencies_ms),
        ingest_to_committed_ms,
        events_per_message,
        message_bytes,
        usage,
        raw_jetstream_events_per_sec: raw_jetstream,
        raw_postgres_rows_per_sec: raw_postgres,
        gateway_ratio_to_jetstream: accepted as f64 / load_seconds / raw_jetstream.max(1.0),
        writer_ratio_to_postgres: committed_per_sec / raw_postgres.max(1.0),
        exactly_once,
    })
}

/// Every device sends batches at its share of the rate until the
/// duration is up, one request at a time, and records each outcome.
async fn drive(
    stack: &Stack,
    devices: &[(String, String)],
    options: &BenchOptions,
) -> anyhow::Result<DeviceOutcome> {
    let interval =
        Duration::from_secs_f64(options.batch as f64 * devices.len() as f64 / options.rate);
    let policy = RetryPolicy {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(2),
        max_elapsed: Duration::from_secs(30),
        attempt_timeout: Duration::from_secs(15),
    };
    let url = stack.gateway_url();
    let stop_at = tokio::time::Instant::now() + options.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (tenant, device)) in devices.iter().enumerate() {
        let paths = stack.pki.device(tenant, device);
        let files = TlsFiles {
            ca: stack.pki.ca(),
            cert: paths.cert,
            key: paths.key,
        };
        let url = url.clone();
        let policy = policy.clone();
        let batch = options.batch;
        tasks.spawn(async move {
            let mut client = DeviceClient::connect(&url, &files, policy)
                .await
                .context("device connect")?;
            let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
            let mut out = DeviceOutcome::default();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if tokio::time::Instant::now() >= stop_at {
                    break;
                }
                let now = vigil_common::now_millis();
                let events: Vec<SecurityEvent> = (0..batch)
                    .map(|_| {
                        let kind = vigil_client::events::random_kind(&mut rng);
                        vigil_client::events::sample(kind, &mut rng, now)
                    })
                    .collect();
                let ids: Vec<u128> = events
                    .iter()
                    .filter_map(|e| uuid::Uuid::parse_str(e.uid()).ok())
                    .map(|u| u.as_u128())
                    .collect();
                let sent = Instant::now();
                match client.publish(events).await {
                    Ok(response) => {
                        out.latencies_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
                        let rejected: HashSet<u32> =
                            response.rejected.iter().map(|r| r.index).collect();
                        out.rejected += rejected.len() as u64;
                        out.acknowledged.extend(
                            ids.iter()
                                .enumerate()
                                .filter(|(i, _)| !rejected.contains(&(*i as u32)))
                                .map(|(_, id)| *id),
                        );
                    }
                    Err(PublishError::Unknown { .. }) => out.unknown += ids.len() as u64,
                    Err(PublishError::Refused(status)) => {
                        anyhow::bail!("the gateway refused a valid batch: {status}")
                    }
                }
            }
            anyhow::Ok(out)
        });
    }
    let mut all = DeviceOutcome::default();
    while let Some(result) = tasks.join_next().await {
        let out = result??;
        all.acknowledged.extend(out.acknowledged);
        all.rejected += out.rejected;
        all.unknown += out.unknown;
        all.latencies_ms.extend(out.latencies_ms);
    }
    Ok(all)
}

/// An `EventBatch` of `events` events of the device mix, as the gateway
/// would publish it.
fn sample_message(events: usize) -> bytes::Bytes {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let now = vigil_common::now_millis();
    let events = (0..events)
        .map(|_| {
            let kind = vigil_client::events::random_kind(&mut rng);
            let mut e = vigil_client::events::sample(kind, &mut rng, now);
            let meta = e.metadata.get_or_insert_default();
            meta.tenant_uid = "acme".into();
            meta.logged_time = now;
            e
        })
        .collect();
    bytes::Bytes::from(EventBatch { events }.encode_to_vec())
}

/// Events/s of JetStream alone: `message` (carrying `per_message` events)
/// published as the gateway user to a fresh server of the same config,
/// 256 acks in flight, for `duration`.
async fn raw_jetstream(
    pki: &vigil_certs::Pki,
    message: bytes::Bytes,
    per_message: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    const IN_FLIGHT: usize = 256;
    let nats = NatsServer::start(pki).await?;
    let admin = vigil_common::nats::connect(&nats.settings("admin"), "bench-admin").await?;
    vigil_common::provision::provision(&admin, &Default::default()).await?;
    let client = vigil_common::nats::connect(&nats.settings("gateway"), "bench-raw").await?;
    let js = async_nats::jetstream::new(client);
    let started = Instant::now();
    let mut acks = FuturesUnordered::new();
    let mut published = 0u64;
    let mut i = 0u64;
    while started.elapsed() < duration {
        if acks.len() >= IN_FLIGHT
            && let Some(ack) = acks.next().await
        {
            let _: async_nats::jetstream::publish::PublishAck = ack?;
            published += 1;
        }
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(message.clone())
            .message_id(format!("raw-{i}"));
        i += 1;
        acks.push(
            js.send_publish("events.acme.3002", publish)
                .await?
                .into_future(),
        );
    }
    while let Some(ack) = acks.next().await {
        ack?;
        published += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(published as f64 * per_message as f64 / seconds)
}

/// Rows/s of Postgres alone into the same table: rows generated by the
/// server (a payload of `payload`'s size), `sessions` sessions of
/// 5,000-row transactions, for `duration`.
async fn raw_postgres(payload: &[u8], sessions: usize, duration: Duration) -> anyhow::Result<f64> {
    let db = TestDb::create().await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(u32::try_from(sessions).unwrap_or(2) + 1)
        .connect(&db.url)
        .await?;
    vigil_writer::MIGRATOR.run(&pool).await?;
    let today = chrono::Utc::now().date_naive();
    for day in [today.pred_opt(), Some(today), today.succ_opt()]
        .into_iter()
        .flatten()
    {
        sqlx::query("SELECT vigil_event_partition($1)")
            .bind(day)
            .execute(&pool)
            .await?;
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..sessions {
        let pool = pool.clone();
        let payload = payload.to_vec();
        tasks.spawn(async move {
            let mut rows = 0u64;
            while started.elapsed() < duration {
                let result = sqlx::query(
                    "INSERT INTO events (tenant, uid, time, severity_id, class_uid, device_uid, logged_time, payload)
                     SELECT (ARRAY['acme', 'globex', 'initech'])[1 + i % 3], gen_random_uuid(), clock_timestamp(),
                            1 + i % 6, (ARRAY[1001, 1007, 3002, 3003, 4001, 4002, 4003, 4007])[1 + i % 8],
                            'bench-' || ($1 * 5000 + i) % 1000, now(), $2
                     FROM generate_series(1, 5000) AS i",
                )
                .bind(i64::try_from(s).unwrap_or(0))
                .bind(&payload)
                .execute(&pool)
                .await?;
                rows += result.rows_affected();
            }
            anyhow::Ok(rows)
        });
    }
    let mut rows = 0u64;
    while let Some(result) = tasks.join_next().await {
        rows += result??;
    }
    let seconds = started.elapsed().as_secs_f64();
    pool.close().await;
    Ok(rows as f64 / seconds)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of `pid` so far (Linux `/proc`).
fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 here.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / clock_ticks()
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn postgres_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .collect()
}

/// CPU seconds of every Postgres process so far (the server is shared:
/// other databases' work counts too).
fn postgres_cpu() -> f64 {
    postgres_pids().into_iter().map(process_cpu_seconds).sum()
}

/// Private memory of every Postgres process (shared buffers, counted
/// once by the kernel, are left out).
fn postgres_rss_kib() -> u64 {
    postgres_pids()
        .into_iter()
        .map(|pid| status_kib(pid, "RssAnon:"))
        .sum()
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}
