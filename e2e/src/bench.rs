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
use std::sync::Arc;
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
    /// The writer is stopped during the load and started after it, so the
    /// committed rate is the writer's alone draining a backlog (its ratio
    /// to the raw insert limit is then not bounded by what the gateway
    /// accepted).
    pub backlog: bool,
    /// Give every event a fresh random source address (hundreds of
    /// thousands of group keys per minute for the correlator, instead of
    /// the templates' few thousand).
    pub fresh_sources: bool,
    /// Rows bulk-loaded after the ingest run for the query phase (0: no
    /// query phase).
    pub query_rows: u64,
    /// Calls per caller and query in the query phase.
    pub query_calls: usize,
    /// Rows bulk-loaded before the run (the committed rate with a table
    /// that already holds millions of rows).
    pub preload_rows: u64,
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
            backlog: false,
            fresh_sources: false,
            query_rows: 0,
            query_calls: 200,
            preload_rows: 0,
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
    /// Seconds the query phase's bulk load took (0 without one).
    pub query_load_seconds: f64,
    pub queries: Vec<QueryFigure>,
    /// With `--correlator`.
    pub correlator: Option<CorrelatorFigures>,
}

/// How the correlator kept up beside the writer.
#[derive(Debug, Clone, Serialize)]
pub struct CorrelatorFigures {
    /// EVENTS messages not yet absorbed (pending + unacked) when the load ended.
    pub pending_at_load_end: u64,
    /// Seconds after the load until it had absorbed everything.
    pub caught_up_seconds: f64,
    /// From its `/metrics` at the end.
    pub live_keys: u64,
    pub state_bytes: u64,
    pub last_checkpoint_bytes: u64,
    /// Mean commit duration over the run.
    pub mean_commit_seconds: f64,
    pub snapshots: u64,
    pub evicted_keys: u64,
    pub findings: u64,
}

/// The text of `/metrics` on `port`.
async fn scrape(port: u16) -> anyhow::Result<String> {
    Ok(vigil_common::metrics::scrape(([127, 0, 0, 1], port).into()).await?)
}

/// The report as a table a person reads.
impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
        if let Some(c) = &self.correlator {
            line(format!(
                "correlator: {} messages behind when the load ended; caught up {:.1} s after it; {} live keys, state {:.1} MB at the last of {} snapshots, last checkpoint write {} bytes, commits {:.3} s on average, {} keys evicted, {} finding versions",
                c.pending_at_load_end,
                c.caught_up_seconds,
                c.live_keys,
                c.state_bytes as f64 / 1e6,
                c.snapshots,
                c.last_checkpoint_bytes,
                c.mean_commit_seconds,
                c.evicted_keys,
                c.findings
            ));
        }
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
        if !self.queries.is_empty() {
            line(format!(
                "queries over gRPC (audit included), after a bulk load of {:.0} s:",
                self.query_load_seconds
            ));
            for q in &self.queries {
                line(format!(
                    "  {:<44} {:<22} {:<34} {:>4} rows  p50 {:>7.2} ms  p99 {:>7.2} ms",
                    q.state, q.caller, q.query, q.rows, q.p50_ms, q.p99_ms
                ));
            }
        }
        line(format!(
            "exactly once: {} acknowledged, {} missing, {} rows, {} duplicated, {} of unknown outcome -> {}",
            e.acknowledged,
            e.acknowledged_missing,
            e.rows,
            e.duplicated_rows,
            e.rows_of_unknown,
            if e.ok { "ok" } else { "FAILED" }
        ));
        f.write_str(&out)
    }
}

/// What the devices saw.
#[derive(Default)]
struct DeviceOutcome {
    /// Why the gateway refused the first refused event, if it did.
    first_rejection: Option<String>,
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
        "rows_already_in_the_table": options.preload_rows,
        "writer": if options.backlog { "stopped during the load, then drains the backlog alone" } else { "running during the load" },
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

    if options.preload_rows > 0 {
        let sample = sample_message(1);
        let event = EventBatch::decode(sample.as_ref())?
            .events
            .pop()
            .map(|e| e.encode_to_vec())
            .unwrap_or_default();
        bulk_load(&stack.pool, options.preload_rows, &event).await?;
    }
    // Rows of this run are those stored from now on.
    let run_start: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&stack.pool)
        .await?;
    if options.backlog {
        // Nothing is in flight yet.
        stack.writer.kill9();
    }
    let bench_cpu_before = process_cpu_seconds(std::process::id());
    let load_started = Instant::now();
    let outcome = drive(&stack, &devices, options).await?;
    let load_seconds = load_started.elapsed().as_secs_f64();
    let bench_cpu = process_cpu_seconds(std::process::id()) - bench_cpu_before;
    let accepted = outcome.acknowledged.len() as u64;
    if let Some(reason) = &outcome.first_rejection {
        anyhow::bail!(
            "the gateway rejected {} valid events, the first: {reason}",
            outcome.rejected
        );
    }
    if options.backlog {
        stack.writer.start().await?;
    }

    // Drained: the writer's consumer has nothing pending or unacked.
    let drain_started = Instant::now();
    let admin = vigil_common::nats::connect(&stack.nats.settings("admin"), "bench-admin").await?;
    let js = async_nats::jetstream::new(admin);
    let pending_at_load_end = if options.correlator {
        let c: Result<async_nats::jetstream::consumer::PullConsumer, _> = js
            .get_consumer_from_stream(
                vigil_common::subjects::correlator_consumer(0),
                vigil_common::subjects::EVENTS_STREAM,
            )
            .await;
        match c {
            Ok(mut c) => c
                .info()
                .await
                .ok()
                .map(|i| (i.num_pending + i.num_ack_pending as u64, 0u64)),
            Err(_) => None,
        }
    } else {
        None
    };
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
    // The correlator beside it: how far behind it was when the load ended,
    // and when it had absorbed everything.
    let mut correlator = None;
    if options.correlator {
        let name = vigil_common::subjects::correlator_consumer(0);
        let info = |js: async_nats::jetstream::Context| {
            let name = name.clone();
            async move {
                let mut c: async_nats::jetstream::consumer::PullConsumer = js
                    .get_consumer_from_stream(&name, vigil_common::subjects::EVENTS_STREAM)
                    .await?;
                let i = c.info().await?;
                anyhow::Ok((i.num_pending, i.num_ack_pending as u64))
            }
        };
        let (pending_at_end, _) = pending_at_load_end.unwrap_or_default();
        loop {
            let (pending, unacked) = info(js.clone()).await.unwrap_or((u64::MAX, 0));
            if pending == 0 && unacked == 0 {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("the correlator did not catch up: {pending} pending");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let caught_up_seconds = drain_started.elapsed().as_secs_f64();
        let metrics = scrape(stack.correlator_metrics_port)
            .await
            .unwrap_or_default();
        // Summed over labels (findings are counted by rule).
        let value = |name: &str| vigil_common::metrics::sample(&metrics, name, &[]).unwrap_or(0.0);
        correlator = Some(CorrelatorFigures {
            pending_at_load_end: pending_at_end,
            caught_up_seconds,
            live_keys: value("vigil_correlator_live_keys") as u64,
            state_bytes: value("vigil_correlator_state_bytes") as u64,
            last_checkpoint_bytes: value("vigil_correlator_checkpoint_bytes") as u64,
            mean_commit_seconds: value("vigil_correlator_commit_duration_seconds_sum")
                / value("vigil_correlator_commit_duration_seconds_count").max(1.0),
            snapshots: value("vigil_correlator_snapshots_total") as u64,
            evicted_keys: value("vigil_correlator_evicted_keys_total") as u64,
            findings: value("vigil_correlator_findings_total") as u64,
        });
    }
    sampling.cancel();
    let postgres_peak_kib = postgres_peak.await.unwrap_or(0);

    let mut usage = vec![Usage {
        process: "devices (this process)".into(),
        cpu_seconds: bench_cpu,
        peak_rss_mib: status_kib(std::process::id(), "VmHWM:") as f64 / 1024.0,
    }];
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
         FROM events WHERE stored_at >= $1",
    )
    .bind(run_start)
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
    let sample: Vec<u8> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE stored_at >= $1 ORDER BY length(payload) DESC LIMIT 1",
    )
    .bind(run_start)
    .fetch_optional(&stack.pool)
    .await?
    .unwrap_or_default();
    let per_message = events_per_message.round().max(1.0) as usize;
    let message = sample_message(per_message);
    let message_bytes = message.len();
    let (query_load_seconds, queries) = if options.query_rows > 0 {
        query_phase(&mut stack, options.query_rows, options.query_calls, &sample).await?
    } else {
        (0.0, Vec::new())
    };

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
        query_load_seconds,
        queries,
        correlator,
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
    // A device sends what it observes; generating realistic events is not
    // its work, so every device draws from 1,000 events of the device-sim
    // mix made up front and sends them with fresh ids and the current
    // time.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let start = vigil_common::now_millis();
    let templates: Arc<Vec<SecurityEvent>> = Arc::new(
        (0..1000)
            .map(|_| {
                let kind = vigil_client::events::random_kind(&mut rng);
                vigil_client::events::sample(kind, &mut rng, start)
            })
            .collect(),
    );
    let begin = tokio::time::Instant::now();
    let stop_at = begin + options.duration;
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
        let templates = templates.clone();
        let fresh_sources = options.fresh_sources;
        // Devices are not synchronised: each starts at its own offset
        // within the send interval.
        let first_send = begin + interval.mul_f64(i as f64 / devices.len() as f64);
        tasks.spawn(async move {
            let mut client = DeviceClient::connect(&url, &files, policy)
                .await
                .context("device connect")?;
            let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
            let mut next = i * 37;
            let mut out = DeviceOutcome::default();
            let mut tick = tokio::time::interval_at(first_send, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if tokio::time::Instant::now() >= stop_at {
                    break;
                }
                let now = vigil_common::now_millis();
                let mut ids = Vec::with_capacity(batch);
                let events: Vec<SecurityEvent> = (0..batch)
                    .map(|_| {
                        let mut e = templates[next % templates.len()].clone();
                        next += 1;
                        let uid = uuid::Builder::from_unix_timestamp_millis(
                            u64::try_from(now).unwrap_or(0),
                            &rand::Rng::random(&mut rng),
                        )
                        .into_uuid();
                        ids.push(uid.as_u128());
                        e.time = now;
                        e.metadata.get_or_insert_default().uid = uid.to_string();
                        if fresh_sources && let Some(src) = e.src_endpoint.as_mut() {
                            let a: u32 = rand::Rng::random(&mut rng);
                            src.ip = std::net::Ipv4Addr::from(a | 0x0100_0000).to_string();
                        }
                        e
                    })
                    .collect();
                let sent = Instant::now();
                match client.publish(events).await {
                    Ok(response) => {
                        out.latencies_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
                        let rejected: HashSet<u32> =
                            response.rejected.iter().map(|r| r.index).collect();
                        out.rejected += rejected.len() as u64;
                        if let Some(first) = response.rejected.first()
                            && out.first_rejection.is_none()
                        {
                            out.first_rejection = Some(format!("{first:?}"));
                        }
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
        all.first_rejection = all.first_rejection.or(out.first_rejection);
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
/// server (a payload of `payload`'s size, ids time-ordered like the
/// devices' UUIDv7), `sessions` sessions of 5,000-row transactions, for
/// `duration`.
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
                     SELECT (ARRAY['acme', 'globex', 'initech'])[1 + i % 3],
                            encode(overlay(uuid_send(gen_random_uuid()) PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::int8) FROM 3) FROM 1 FOR 6), 'hex')::uuid,
                            clock_timestamp(),
                            1 + i % 6, (ARRAY[1001, 1007, 3002, 3003, 4001, 4002, 4003, 4007])[1 + i % 8],
                            'bench-' || lpad((($1 * 5000 + i) / 500 % 1000)::text, 4, '0'), now(), $2
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

/// Clock ticks per second of `/proc/<pid>/stat` (asked once).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
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
    crate::stack::proc_status_kib(pid, field).unwrap_or(0)
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

/// One query's latency over gRPC (audit included), in one state of the
/// table's statistics.
#[derive(Debug, Clone, Serialize)]
pub struct QueryFigure {
    pub state: String,
    pub caller: String,
    pub query: String,
    pub rows: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Tenants of the bulk-loaded rows: the devices' three and 17 more, so a
/// one-tenant analyst sees a twentieth of the table.
fn bulk_tenants() -> Vec<String> {
    TENANTS
        .iter()
        .map(|t| (*t).to_owned())
        .chain((3..20).map(|i| format!("tenant-{i:02}")))
        .collect()
}

/// Loads `rows` events spread over the last six days into the stack's
/// table (day partitions created as the writer would), in two sessions
/// of one-million-row statements, and never analyzes them.
async fn bulk_load(pool: &sqlx::PgPool, rows: u64, payload: &[u8]) -> anyhow::Result<f64> {
    let today = chrono::Utc::now().date_naive();
    // The six days of rows, today, and tomorrow (as the writer does).
    for offset in -6..=1 {
        sqlx::query("SELECT vigil_event_partition($1)")
            .bind(today + chrono::Duration::days(offset))
            .execute(pool)
            .await?;
    }
    let started = Instant::now();
    let chunk = 1_000_000u64;
    let chunks: Vec<u64> = (0..rows.div_ceil(chunk)).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..2 {
        let pool = pool.clone();
        let mine: Vec<u64> = chunks.iter().copied().filter(|c| c % 2 == lane).collect();
        let payload = payload.to_vec();
        let tenants = bulk_tenants();
        tasks.spawn(async move {
            for c in mine {
                let first = c * chunk;
                let n = chunk.min(rows - first);
                sqlx::query(
                    "INSERT INTO events (tenant, uid, time, severity_id, class_uid, device_uid, logged_time, payload)
                     SELECT ($4::text[])[1 + (i % 1000) % 20],
                            encode(overlay(uuid_send(gen_random_uuid()) PLACING substring(int8send((extract(epoch FROM t) * 1000)::int8) FROM 3) FROM 1 FOR 6), 'hex')::uuid,
                            t,
                            CASE WHEN (i / 1000) % 100 < 40 THEN 1 WHEN (i / 1000) % 100 < 70 THEN 2
                                 WHEN (i / 1000) % 100 < 90 THEN 3 WHEN (i / 1000) % 100 < 97 THEN 4
                                 WHEN (i / 1000) % 100 < 99 THEN 5 ELSE 6 END,
                            (ARRAY[1001, 1007, 3002, 3003, 4001, 4002, 4003, 4007])[1 + (i / 7) % 8],
                            'bench-' || lpad((i % 1000)::text, 4, '0'), now(), $5
                     FROM generate_series($1::int8, $2::int8) AS i,
                          LATERAL (SELECT now() - interval '1 minute' - (i * (interval '6 days' / $3)) AS t) AS at",
                )
                .bind(i64::try_from(first).unwrap_or(0))
                .bind(i64::try_from(first + n - 1).unwrap_or(0))
                .bind(i64::try_from(rows).unwrap_or(1).max(1))
                .bind(&tenants)
                .bind(&payload)
                .execute(&pool)
                .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Each caller's first page of each query, `calls` times, over gRPC.
async fn measure_queries(
    stack: &Stack,
    state: &str,
    calls: usize,
) -> anyhow::Result<Vec<QueryFigure>> {
    use vigil_proto::query::v1::ListEventsRequest;
    use vigil_proto::query::v1::query_service_client::QueryServiceClient;
    let url = format!("https://127.0.0.1:{}", stack.reader_port);
    let queries: [(&str, ListEventsRequest); 3] = [
        (
            "newest 10 >= HIGH",
            ListEventsRequest {
                min_severity: 4,
                limit: 10,
                ..Default::default()
            },
        ),
        (
            "a page of 100, class 3002",
            ListEventsRequest {
                class_uids: vec![3002],
                limit: 100,
                ..Default::default()
            },
        ),
        (
            "a page of 100, device bench-0000",
            ListEventsRequest {
                source_device: "bench-0000".into(),
                limit: 100,
                ..Default::default()
            },
        ),
    ];
    let mut figures = Vec::new();
    for (user, caller) in [
        ("acme-analyst", "one-tenant analyst"),
        ("analyst", "three-tenant analyst"),
        ("admin", "admin"),
    ] {
        let paths = stack.pki.user(user);
        let files = TlsFiles {
            ca: stack.pki.ca(),
            cert: paths.cert,
            key: paths.key,
        };
        let mut client = QueryServiceClient::new(vigil_client::connect(&url, &files).await?);
        for (what, request) in &queries {
            let mut took = Vec::with_capacity(calls);
            let mut rows = 0;
            for i in 0..calls + 5 {
                let started = Instant::now();
                let page = client.list_events(request.clone()).await?.into_inner();
                // The first calls warm the connection and the caches.
                if i >= 5 {
                    took.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                rows = page.events.len();
            }
            let p = Percentiles::of_millis(took);
            figures.push(QueryFigure {
                state: state.into(),
                caller: caller.into(),
                query: (*what).into(),
                rows,
                p50_ms: p.p50,
                p99_ms: p.p99,
            });
        }
    }
    Ok(figures)
}

/// Bulk-loads `rows` rows, then measures the queries right after the load
/// (no ANALYZE), with Postgres forced onto generic plans, and after
/// ANALYZE.
async fn query_phase(
    stack: &mut Stack,
    rows: u64,
    calls: usize,
    payload: &[u8],
) -> anyhow::Result<(f64, Vec<QueryFigure>)> {
    let load_seconds = bulk_load(&stack.pool, rows, payload).await?;
    let mut figures =
        measure_queries(stack, "right after the bulk load, before ANALYZE", calls).await?;
    // A database setting reaches new sessions: restart the reader.
    let database = stack.db.name().to_owned();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {database} SET plan_cache_mode = force_generic_plan"
    )))
    .execute(&stack.pool)
    .await?;
    stack.reader.terminate(Duration::from_secs(10)).await?;
    stack.reader.start().await?;
    figures.extend(measure_queries(stack, "forced generic plans", calls).await?);
    sqlx::raw_sql("ANALYZE events").execute(&stack.pool).await?;
    figures.extend(measure_queries(stack, "forced generic plans, after ANALYZE", calls).await?);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {database} RESET plan_cache_mode"
    )))
    .execute(&stack.pool)
    .await?;
    Ok((load_seconds, figures))
}
