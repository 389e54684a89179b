//! The shipped rules against a generated scenario: every injected attack
//! is found, no near-miss is, in any arrival order within the lateness,
//! with duplicates.

use std::collections::BTreeSet;

use rand::seq::SliceRandom;
use vigil_correlator::engine::{Engine, Settings, State};
use vigil_correlator::rules;

type Events = [(String, String, vigil_proto::event::v1::SecurityEvent)];

fn found(events: &Events) -> BTreeSet<(String, String, String, usize)> {
    let mut engine = Engine::new(
        rules::parse(rules::DEFAULT_RULES).unwrap_or_default(),
        Settings::default(),
        State::default(),
    );
    // The newest version of every finding emitted.
    let mut emitted = std::collections::BTreeMap::new();
    for (tenant, _, event) in events {
        for f in engine.ingest(tenant, event) {
            emitted.insert(f.id.clone(), f);
        }
    }
    for f in engine.advance(i64::MAX) {
        emitted.insert(f.id.clone(), f);
    }
    emitted
        .values()
        .map(|f| {
            (
                f.tenant.clone(),
                f.rule_id.clone(),
                f.group_key
                    .iter()
                    .map(|k| k.1.clone())
                    .collect::<Vec<_>>()
                    .join(","),
                f.count,
            )
        })
        .collect()
}

#[test]
fn scenario_findings_equal_the_ground_truth() {
    let devices = vec![
        ("acme".to_owned(), "cam-01".to_owned()),
        ("globex".to_owned(), "sensor-01".to_owned()),
    ];
    let end = 1_790_000_000_000;
    let scenario = vigil_client::scenario::generate(&devices, end - 1_800_000, end, 2_000, 1);
    let got = found(&scenario.events);
    let keys: BTreeSet<(String, String, String)> = got
        .iter()
        .map(|(t, r, k, _)| (t.clone(), r.clone(), k.clone()))
        .collect();
    assert_eq!(keys, scenario.expected());
    assert_eq!(
        scenario.truth.iter().filter(|t| !t.expect_finding).count(),
        8
    );

    // Shuffled within the 30 s lateness (inside 20 s buckets of event
    // time), and every tenth event sent twice.
    let mut rng = rand::rng();
    let mut shuffled = scenario.events.clone();
    let last = shuffled.pop();
    for chunk in shuffled.chunk_by_mut(|a, b| a.2.time / 20_000 == b.2.time / 20_000) {
        chunk.shuffle(&mut rng);
    }
    let again: Vec<_> = shuffled.iter().step_by(10).cloned().collect();
    shuffled.extend(again);
    shuffled.extend(last);
    assert_eq!(found(&shuffled), got);
}
