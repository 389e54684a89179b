//! A smoke run of the ingest benchmark (`deploy/bench`) with a tiny load,
//! so the command cannot rot: every phase runs against the real processes,
//! every figure is there, and exactly once holds.

use std::time::Duration;

use vigil_e2e::bench::{BenchOptions, run};

#[tokio::test]
async fn the_benchmark_runs_and_checks_exactly_once() -> anyhow::Result<()> {
    let report = run(&BenchOptions {
        devices: 3,
        batch: 50,
        rate: 1_500.0,
        duration: Duration::from_secs(3),
        raw_duration: Duration::from_secs(1),
        raw_sessions: 1,
        correlator: true,
        drain_timeout: Duration::from_secs(60),
        backlog: false,
        fresh_sources: false,
        query_rows: 20_000,
        query_calls: 3,
        preload_rows: 5_000,
    })
    .await?;
    eprintln!("{report}");
    assert!(report.exactly_once.ok, "{report}");
    assert!(report.accepted > 1_000, "{report}");
    assert_eq!(report.rejected, 0, "{report}");
    assert_eq!(
        report.committed_rows,
        report.accepted + report.exactly_once.rows_of_unknown
    );
    assert!(
        report.committed_per_sec > 0.0 && report.accepted_per_sec > 0.0,
        "{report}"
    );
    assert!(report.ack_latency_ms.p50 > 0.0, "{report}");
    assert!(report.ingest_to_committed_ms.p99 >= report.ingest_to_committed_ms.p50);
    assert!(report.raw_jetstream_events_per_sec > 0.0, "{report}");
    assert!(report.raw_postgres_rows_per_sec > 0.0, "{report}");
    for process in [
        "gateway",
        "nats-server",
        "writer",
        "correlator",
        "postgres (all)",
    ] {
        let usage = report
            .usage
            .iter()
            .find(|u| u.process == process)
            .unwrap_or_else(|| panic!("no figures for {process}: {report}"));
        assert!(usage.peak_rss_mib > 0.0, "{process}: {report}");
    }
    // Three states of the statistics x three callers x three queries,
    // each a full page.
    assert_eq!(report.queries.len(), 27, "{report}");
    for q in &report.queries {
        assert!(q.rows > 0 && q.p99_ms > 0.0, "{q:?}");
    }
    let json = serde_json::to_value(&report)?;
    assert!(json["writer_ratio_to_postgres"].as_f64().is_some());
    Ok(())
}
