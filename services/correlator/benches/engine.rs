//! Rule-engine throughput with the default rule set, on one core: a
//! realistic event mix (logins, processes, network, DNS, file) from 1,000
//! sources over simulated time, every event through every rule.
//!
//! Run: `cargo bench -p vigil-correlator --bench engine`

use std::time::Instant;

use rand::{Rng, SeedableRng};
use vigil_correlator::engine::{Engine, Settings, State};
use vigil_correlator::rules;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rules = rules::parse(rules::DEFAULT_RULES)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let n = 500_000;
    let start_time = 1_790_000_000_000i64;
    let events: Vec<_> = (0..n)
        .map(|i| {
            let kind = vigil_client::events::random_kind(&mut rng);
            // 1,000 events/s of simulated time, slightly out of order.
            let time = start_time + i as i64 - rng.random_range(0..2_000);
            vigil_client::events::sample(kind, &mut rng, time)
        })
        .collect();
    let mut engine = Engine::new(rules, Settings::default(), State::default());
    let started = Instant::now();
    let mut findings = 0usize;
    for event in &events {
        findings += engine.ingest("acme", event).len();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "engine: {n} events, 3 rules, {findings} findings emitted, {:.2} s, {:.0} events/s on one core",
        seconds,
        n as f64 / seconds
    );
    Ok(())
}
