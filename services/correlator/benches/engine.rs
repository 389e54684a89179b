//! Rule-engine throughput and state size with the default rule set, on one
//! core: the device library's event mix (logins, processes, network, DNS,
//! file; thousands of users, hundreds of thousands of source addresses)
//! over simulated time, every event through every rule.
//!
//! Run: `cargo bench -p vigil-correlator --bench engine`

use std::time::Instant;

use rand::{Rng, SeedableRng};
use vigil_correlator::engine::{Engine, Settings, State};
use vigil_correlator::rules;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn run(label: &str, n: usize, rate: i64) -> Result<(), Box<dyn std::error::Error>> {
    let rules = rules::parse(rules::DEFAULT_RULES)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let start_time = 1_790_000_000_000i64;
    let events: Vec<_> = (0..n)
        .map(|i| {
            let kind = vigil_client::events::random_kind(&mut rng);
            // `rate` events/s of simulated time, up to 2 s out of order.
            let time = start_time + i as i64 * 1000 / rate - rng.random_range(0..2_000);
            vigil_client::events::sample(kind, &mut rng, time)
        })
        .collect();
    let before = rss_kib();
    let mut engine = Engine::new(rules, Settings::default(), State::default());
    let started = Instant::now();
    let mut findings = 0usize;
    for event in &events {
        findings += engine.ingest("acme", event).len();
    }
    let seconds = started.elapsed().as_secs_f64();
    let grown = rss_kib().saturating_sub(before);
    // What one delta since the start holds: every key.
    let delta = engine.take_delta();
    let snapshot = postcard::to_allocvec(engine.state())?.len();
    let keys = engine.state().live_keys().max(1);
    println!(
        "engine ({label}): {n} events, 3 rules, {findings} findings emitted, {seconds:.2} s, {:.0} events/s on one core; {keys} live keys, {} changed, state {:.1} MB encoded ({} B/key), memory +{} MiB ({} B/key)",
        n as f64 / seconds,
        delta.changes.len(),
        snapshot as f64 / 1e6,
        snapshot / keys,
        grown / 1024,
        grown as usize * 1024 / keys,
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1,000 events/s of simulated time (the earlier figure's mix) and the
    // mesh's full rate, 30,000 events/s: many more keys per second.
    run("1K events/s of event time", 500_000, 1_000)?;
    run("30K events/s of event time", 1_000_000, 30_000)?;
    Ok(())
}
