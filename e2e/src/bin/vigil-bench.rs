//! `vigil-bench`: the ingest benchmark of the real system (see
//! `vigil_e2e::bench`). Run it through `deploy/bench`, which builds the
//! release binaries it starts.

use std::time::Duration;

use clap::Parser;
use vigil_e2e::bench::{BenchOptions, run};

/// Starts the stack on loopback with production settings, drives it with
/// devices for a fixed time, measures the raw JetStream and Postgres
/// limits of this machine, and prints every stage's figures and ratio.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Devices, each its own certificate and connection.
    #[arg(long, default_value_t = 5)]
    devices: usize,
    /// Events per Publish call.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Events per second offered across devices.
    #[arg(long, default_value_t = 200_000.0)]
    rate: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// Seconds each raw limit is measured.
    #[arg(long, default_value_t = 15)]
    raw_secs: u64,
    /// Postgres sessions of the raw insert.
    #[arg(long, default_value_t = 2)]
    raw_sessions: usize,
    /// Run the correlator beside the writer.
    #[arg(long)]
    correlator: bool,
    /// Stop the writer during the load and let it drain the backlog alone
    /// afterwards (its rate is then the writer's, not the gateway's).
    #[arg(long)]
    backlog: bool,
    /// Give every event a fresh random source address (many more group
    /// keys for the correlator).
    #[arg(long)]
    fresh_sources: bool,
    /// Bulk-load this many rows after the run and measure the analysts'
    /// queries over gRPC (right after the load, with generic plans, after
    /// ANALYZE).
    #[arg(long, default_value_t = 0)]
    query_rows: u64,
    /// Calls per caller and query in the query phase.
    #[arg(long, default_value_t = 200)]
    query_calls: usize,
    /// Bulk-load this many rows before the run (the committed rate with a
    /// table that already holds them).
    #[arg(long, default_value_t = 0)]
    preload_rows: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let options = BenchOptions {
        devices: args.devices,
        batch: args.batch,
        rate: args.rate,
        duration: Duration::from_secs(args.duration_secs),
        raw_duration: Duration::from_secs(args.raw_secs),
        raw_sessions: args.raw_sessions,
        correlator: args.correlator,
        backlog: args.backlog,
        fresh_sources: args.fresh_sources,
        query_rows: args.query_rows,
        query_calls: args.query_calls,
        preload_rows: args.preload_rows,
        ..BenchOptions::default()
    };
    let report = match run(&options).await {
        Ok(r) => r,
        Err(error) => {
            eprintln!("vigil-bench: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    print!("{report}");
    let json = match serde_json::to_string_pretty(&report) {
        Ok(j) => j,
        Err(error) => {
            eprintln!("vigil-bench: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("{json}");
    if let Some(path) = args.json
        && let Err(error) = std::fs::write(&path, &json)
    {
        eprintln!("vigil-bench: cannot write {}: {error}", path.display());
        return std::process::ExitCode::FAILURE;
    }
    if report.exactly_once.ok {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("vigil-bench: the exactly-once check FAILED");
        std::process::ExitCode::FAILURE
    }
}
