//! The state bound documented in `engine.rs`: a million events over many
//! keys (the device library's traffic: thousands of users, hundreds of
//! thousands of source addresses) and the engine's state follows the keys
//! live in its horizon, not the traffic: it plateaus once the horizon is
//! full, every live key had an event within the horizon (or holds a
//! finding), and each key stays within its caps.

use std::collections::{HashMap, HashSet};

use rand::SeedableRng;
use vigil_correlator::engine::{Engine, Settings, State};
use vigil_correlator::{fields, rules};

#[test]
fn state_follows_the_live_keys_not_the_traffic() -> Result<(), Box<dyn std::error::Error>> {
    let rules = rules::parse(rules::DEFAULT_RULES)?;
    let settings = Settings {
        allowed_lateness_ms: 30_000,
        late_retention_ms: 300_000,
        max_keys: 1_000_000,
    };
    let mut engine = Engine::new(rules.clone(), settings.clone(), State::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let start = 1_790_000_000_000i64;
    let n: i64 = 1_000_000;
    // 500 events/s of event time: 2,000 s, over six times the horizon.
    let rate = 500;
    // When each (rule, key) last had a matching event.
    let mut last_seen: HashMap<(usize, Vec<String>), i64> = HashMap::new();
    let mut sizes = Vec::new();
    for i in 0..n {
        let kind = vigil_client::events::random_kind(&mut rng);
        let event = vigil_client::events::sample(kind, &mut rng, start + i * 1000 / rate);
        for (r, rule) in rules.iter().enumerate() {
            if rule.step_of(&event).is_none() {
                continue;
            }
            let key: Option<Vec<String>> = rule
                .group_by
                .iter()
                .map(|f| fields::value(&event, f))
                .collect();
            if let Some(key) = key {
                last_seen.insert((r, key), event.time);
            }
        }
        engine.ingest("acme", &event);
        if (i + 1) % 250_000 == 0 {
            let bytes = postcard::to_allocvec(engine.state())?.len();
            sizes.push((engine.state().live_keys(), bytes));
        }
    }
    let now = engine.clock("acme").max_event_time;
    // The horizon of the longest rule: window + hop + lateness + retention.
    let horizon = rules
        .iter()
        .map(|r| r.window_ms + r.hop_ms)
        .max()
        .unwrap_or(0)
        + settings.allowed_lateness_ms
        + settings.late_retention_ms;
    let in_horizon: HashSet<&(usize, Vec<String>)> = last_seen
        .iter()
        .filter(|(_, t)| **t > now - horizon)
        .map(|(k, _)| k)
        .collect();
    let with_findings = engine.state().findings().count();
    let live = engine.state().live_keys();
    println!(
        "1M events, {} keys seen, {} in the horizon, {live} live ({with_findings} findings); (live keys, state bytes) every 250K events: {sizes:?}",
        last_seen.len(),
        in_horizon.len(),
    );
    assert!(
        live <= in_horizon.len() + with_findings,
        "{live} live keys, {} in the horizon",
        in_horizon.len()
    );
    // A plateau of keys once the horizon is full: the keys live after 1M
    // events are no more than after 500K (beyond the noise of which keys
    // happen to be live), although four times as many were seen by then.
    let (half, end) = (sizes[1].0 as f64, sizes[3].0 as f64);
    assert!(
        end < half * 1.15,
        "live keys grew with the traffic: {sizes:?}"
    );
    // Bytes per key within the per-key caps: a key without a finding holds
    // a few panes of single events (~200 bytes); one with a finding adds
    // at most MAX_EVENT_IDS evidence ids (~4.5 KB).
    let bytes = sizes[3].1;
    assert!(
        bytes < live * 512 + with_findings * 6_000,
        "{bytes} bytes for {live} keys and {with_findings} findings"
    );
    assert_eq!(engine.global().evicted_keys, 0);
    Ok(())
}
