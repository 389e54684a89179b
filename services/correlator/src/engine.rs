//! The rule engine: event-time tumbling windows per (rule, tenant, group
//! key), a watermark that closes them, late events that update findings
//! already emitted, and suppression that folds repeats into one finding.
//!
//! Deterministic by construction: a window's outcome depends only on the
//! set of events in it (each counted once by `event_id`), evaluated when
//! the watermark passes its end; finding ids derive from (rule, tenant,
//! key, window start). So shuffling events within the allowed lateness,
//! or delivering them twice, yields the same findings.
//!
//! The whole [`State`] is serialisable: the service checkpoints it before
//! acknowledging the events it has absorbed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vigil_proto::event::v1::SecurityEvent;

use crate::fields;
use crate::rules::{Kind, Rule};

/// At most this many contributing event ids are carried by a finding.
pub const MAX_EVENT_IDS: usize = 100;

#[derive(Debug, Clone)]
pub struct Settings {
    /// How far behind the newest event time the watermark trails.
    pub allowed_lateness_ms: i64,
    /// How long (in event time) closed windows are kept for late events.
    pub late_retention_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            allowed_lateness_ms: 30_000,
            late_retention_ms: 3_600_000,
        }
    }
}

/// One event's part in a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Contribution {
    time: i64,
    step: usize,
    /// The distinct-count field's value.
    value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Window {
    rule: String,
    tenant: String,
    key: Vec<(String, String)>,
    start: i64,
    end: i64,
    events: BTreeMap<String, Contribution>,
    closed: bool,
    /// The finding this window fed, and what it contributed to it.
    finding: Option<String>,
    contributed: usize,
}

/// A finding as the engine keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    pub rule_id: String,
    pub title: String,
    pub severity_id: i32,
    pub technique: String,
    pub tenant: String,
    pub group_key: Vec<(String, String)>,
    pub window_start: i64,
    pub window_end: i64,
    pub count: usize,
    /// The first [`MAX_EVENT_IDS`] contributing events by (time, id).
    pub event_ids: Vec<String>,
    /// OCSF activity: 1 Create, 2 Update.
    pub activity_id: i32,
    /// Increases with every change; part of the message id.
    pub version: u32,
}

/// Everything the engine knows; checkpointed as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub max_event_time: i64,
    pub watermark: i64,
    /// Keyed by window id.
    windows: BTreeMap<String, Window>,
    /// Keyed by finding id.
    pub findings: BTreeMap<String, Finding>,
    /// Latest finding per (rule, tenant, key), for suppression.
    latest: BTreeMap<String, String>,
    /// Events that arrived after their window closed.
    pub late_events: u64,
    /// Late events whose window was already forgotten.
    pub dropped_late_events: u64,
    /// Open windows by end (derived from `windows`, rebuilt on load), so
    /// advancing the watermark touches only the windows it closes.
    #[serde(skip)]
    open: std::collections::BTreeSet<(i64, String)>,
    /// Closed windows by end, for forgetting them after the retention.
    #[serde(skip)]
    closed: std::collections::BTreeSet<(i64, String)>,
}

pub struct Engine {
    rules: Vec<Rule>,
    settings: Settings,
    pub state: State,
}

fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn key_text(key: &[(String, String)]) -> String {
    key.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The start of the window of size `size` holding `time` (floor, also for
/// negative times).
pub fn window_start(time: i64, size: i64) -> i64 {
    // Saturates at the very bottom of the range instead of overflowing
    // (the gateway never lets such times in; the engine still must not
    // panic on them).
    time.saturating_sub(time.rem_euclid(size))
}

/// The deterministic id of the finding a window creates.
pub fn finding_id(rule: &str, tenant: &str, key: &[(String, String)], start: i64) -> String {
    digest(&[rule, tenant, &key_text(key), &start.to_string()])
}

impl Engine {
    pub fn new(rules: Vec<Rule>, settings: Settings, mut state: State) -> Self {
        state.open.clear();
        state.closed.clear();
        for (id, w) in &state.windows {
            let index = if w.closed {
                &mut state.closed
            } else {
                &mut state.open
            };
            index.insert((w.end, id.clone()));
        }
        Self {
            rules,
            settings,
            state,
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Swaps the rule set; state of rules that remain is kept, state of
    /// removed rules is dropped.
    pub fn replace_rules(&mut self, rules: Vec<Rule>) {
        let ids: std::collections::HashSet<&str> = rules.iter().map(|r| r.id.as_str()).collect();
        self.state
            .windows
            .retain(|_, w| ids.contains(w.rule.as_str()));
        self.rules = rules;
        let state = std::mem::take(&mut self.state);
        self.state = Engine::new(Vec::new(), self.settings.clone(), state).state;
    }

    /// Absorbs one event of `tenant`; returns findings created or updated.
    pub fn ingest(&mut self, tenant: &str, event: &SecurityEvent) -> Vec<Finding> {
        let mut out = Vec::new();
        for r in 0..self.rules.len() {
            let rule = &self.rules[r];
            let Some(step) = rule.step_of(event) else {
                continue;
            };
            let Some(key) = rule
                .group_by
                .iter()
                .map(|f| fields::value(event, f).map(|v| (f.clone(), v)))
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            let value = match &rule.kind {
                Kind::DistinctCount { field, .. } => match fields::value(event, field) {
                    Some(v) => Some(v),
                    None => continue,
                },
                _ => None,
            };
            let start = window_start(event.time, rule.window_ms);
            let end = start.saturating_add(rule.window_ms);
            let id = digest(&[&rule.id, tenant, &key_text(&key), &start.to_string()]);
            if !self.state.windows.contains_key(&id)
                && end
                    <= self
                        .state
                        .watermark
                        .saturating_sub(self.settings.late_retention_ms)
            {
                // So late its window is forgotten: counted, not silently lost.
                self.state.late_events += 1;
                self.state.dropped_late_events += 1;
                continue;
            }
            let watermark = self.state.watermark;
            let window = self.state.windows.entry(id.clone()).or_insert_with(|| {
                let index = if end <= watermark {
                    &mut self.state.closed
                } else {
                    &mut self.state.open
                };
                index.insert((end, id.clone()));
                Window {
                    rule: rule.id.clone(),
                    tenant: tenant.to_owned(),
                    key,
                    start,
                    end,
                    events: BTreeMap::new(),
                    closed: end <= watermark,
                    finding: None,
                    contributed: 0,
                }
            });
            if window.events.contains_key(event.uid()) {
                continue; // the same event again: counted once
            }
            window.events.insert(
                event.uid().to_owned(),
                Contribution {
                    time: event.time,
                    step,
                    value,
                },
            );
            if window.closed {
                self.state.late_events += 1;
                if let Some(f) = self.evaluate_window(&id) {
                    out.push(f);
                }
            }
        }
        if event.time > self.state.max_event_time {
            self.state.max_event_time = event.time;
        }
        out.extend(
            self.advance(
                self.state
                    .max_event_time
                    .saturating_sub(self.settings.allowed_lateness_ms),
            ),
        );
        out
    }

    /// Moves the watermark forward to `watermark` (never back), closing the
    /// windows it passes. The service calls this with an idle-time estimate
    /// when no events arrive, so a quiet source does not stall windows.
    pub fn advance(&mut self, watermark: i64) -> Vec<Finding> {
        if watermark <= self.state.watermark {
            return Vec::new();
        }
        self.state.watermark = watermark;
        // Close in event-time order (the index's order) so suppression
        // chains form the same way whatever order events arrived in.
        let still_open = self
            .state
            .open
            .split_off(&(watermark.saturating_add(1), String::new()));
        let closing = std::mem::replace(&mut self.state.open, still_open);
        let mut out = Vec::new();
        for (end, id) in closing {
            if let Some(w) = self.state.windows.get_mut(&id) {
                w.closed = true;
            }
            self.state.closed.insert((end, id.clone()));
            if let Some(f) = self.evaluate_window(&id) {
                out.push(f);
            }
        }
        let horizon = watermark.saturating_sub(self.settings.late_retention_ms);
        let kept = self
            .state
            .closed
            .split_off(&(horizon.saturating_add(1), String::new()));
        let forgotten = std::mem::replace(&mut self.state.closed, kept);
        for (_, id) in &forgotten {
            self.state.windows.remove(id);
        }
        if !forgotten.is_empty() {
            // Findings nothing can update any more (no window left, past any
            // suppression period) leave the state; they are on the bus.
            let suppress = self.rules.iter().map(|r| r.suppress_ms).max().unwrap_or(0);
            let live: std::collections::HashSet<&String> = self
                .state
                .windows
                .values()
                .filter_map(|w| w.finding.as_ref())
                .collect();
            let keep: std::collections::BTreeMap<String, Finding> = self
                .state
                .findings
                .iter()
                .filter(|(id, f)| {
                    live.contains(id) || f.window_end.saturating_add(suppress) > horizon
                })
                .map(|(id, f)| (id.clone(), f.clone()))
                .collect();
            self.state.findings = keep;
            let findings = &self.state.findings;
            self.state.latest.retain(|_, id| findings.contains_key(id));
        }
        out
    }

    /// Applies a closed window's current contents to its finding.
    fn evaluate_window(&mut self, id: &str) -> Option<Finding> {
        let window = self.state.windows.get(id)?;
        let rule = self.rules.iter().find(|r| r.id == window.rule)?;
        let (count, mut contributors) = outcome(rule, window)?;
        if count <= window.contributed {
            return None; // nothing new
        }
        let chain_key = digest(&[&rule.id, &window.tenant, &key_text(&window.key)]);
        let existing = window.finding.clone().or_else(|| {
            // Suppression: a recent finding for the same rule and key absorbs
            // this window instead of a new finding being created.
            let latest = self.state.latest.get(&chain_key)?;
            let f = self.state.findings.get(latest)?;
            (rule.suppress_ms > 0
                && window.start < f.window_end.saturating_add(rule.suppress_ms)
                && window.start >= f.window_start)
                .then(|| latest.clone())
        });
        let added = count - window.contributed;
        let (wstart, wend, tenant, key) = (
            window.start,
            window.end,
            window.tenant.clone(),
            window.key.clone(),
        );
        contributors.sort();
        let finding = match existing {
            Some(fid) => {
                let f = self.state.findings.get_mut(&fid)?;
                f.count += added;
                f.window_start = f.window_start.min(wstart);
                f.window_end = f.window_end.max(wend);
                f.event_ids = merge_ids(&f.event_ids, &contributors);
                f.activity_id = 2;
                f.version += 1;
                f.clone()
            }
            None => {
                let fid = finding_id(&rule.id, &tenant, &key, wstart);
                let f = Finding {
                    id: fid.clone(),
                    rule_id: rule.id.clone(),
                    title: rule.title.clone(),
                    severity_id: rule.severity_id,
                    technique: rule.technique.clone(),
                    tenant: tenant.clone(),
                    group_key: key,
                    window_start: wstart,
                    window_end: wend,
                    count,
                    event_ids: contributors
                        .iter()
                        .take(MAX_EVENT_IDS)
                        .map(|(_, i)| i.clone())
                        .collect(),
                    activity_id: 1,
                    version: 1,
                };
                self.state.findings.insert(fid.clone(), f.clone());
                self.state.latest.insert(chain_key, fid);
                f
            }
        };
        if let Some(w) = self.state.windows.get_mut(id) {
            w.finding = Some(finding.id.clone());
            w.contributed = count;
        }
        Some(finding)
    }
}

fn merge_ids(existing: &[String], more: &[(i64, String)]) -> Vec<String> {
    let mut ids: Vec<String> = existing.to_vec();
    for (_, id) in more {
        if ids.len() >= MAX_EVENT_IDS {
            break;
        }
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    ids
}

/// Whether a window's events satisfy the rule: the count, and the
/// contributing events as (time, id).
fn outcome(rule: &Rule, window: &Window) -> Option<(usize, Vec<(i64, String)>)> {
    let all = || {
        window
            .events
            .iter()
            .map(|(id, c)| (c.time, id.clone()))
            .collect::<Vec<_>>()
    };
    match &rule.kind {
        Kind::Threshold { threshold, .. } => {
            (window.events.len() >= *threshold).then(|| (window.events.len(), all()))
        }
        Kind::DistinctCount { threshold, .. } => {
            let distinct: std::collections::BTreeSet<&String> = window
                .events
                .values()
                .filter_map(|c| c.value.as_ref())
                .collect();
            (distinct.len() >= *threshold).then(|| (distinct.len(), all()))
        }
        Kind::Sequence { steps } => {
            let mut ordered: Vec<(i64, &String, usize)> = window
                .events
                .iter()
                .map(|(id, c)| (c.time, id, c.step))
                .collect();
            ordered.sort();
            let (mut current, mut count) = (0usize, 0usize);
            let mut used = Vec::new();
            for (time, id, step) in ordered {
                if current + 1 < steps.len()
                    && step == current + 1
                    && count >= steps[current].at_least
                {
                    current += 1;
                    count = 1;
                    used.push((time, id.clone()));
                } else if step == current {
                    count += 1;
                    used.push((time, id.clone()));
                }
            }
            (current == steps.len() - 1 && count >= steps[current].at_least)
                .then_some((used.len(), used))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules;
    use proptest::prelude::*;
    use rand::seq::SliceRandom;
    use vigil_proto::event::v1::{Metadata, NetworkEndpoint, User};

    const T0: i64 = 1_790_000_000_000 - 1_790_000_000_000 % 3_600_000; // an hour boundary

    fn engine() -> Engine {
        let rules = rules::parse(rules::DEFAULT_RULES).unwrap_or_default();
        Engine::new(rules, Settings::default(), State::default())
    }

    fn login(id: &str, time: i64, ip: &str, user: &str, success: bool) -> SecurityEvent {
        SecurityEvent {
            metadata: Some(Metadata {
                uid: id.into(),
                ..Default::default()
            }),
            class_uid: 3002,
            activity_id: 1,
            status_id: if success { 1 } else { 2 },
            time,
            user: Some(User {
                name: user.into(),
                ..Default::default()
            }),
            src_endpoint: Some(NetworkEndpoint {
                ip: ip.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn connection(id: &str, time: i64, ip: &str, port: i32) -> SecurityEvent {
        SecurityEvent {
            metadata: Some(Metadata {
                uid: id.into(),
                ..Default::default()
            }),
            class_uid: 4001,
            activity_id: 6,
            time,
            src_endpoint: Some(NetworkEndpoint {
                ip: ip.into(),
                ..Default::default()
            }),
            dst_endpoint: Some(NetworkEndpoint {
                ip: "10.9.9.9".into(),
                port,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A scenario: 5 failures + success for bob from one IP (brute force and
    /// credential compromise), a 20-port scan, and near-misses (4 failures,
    /// 19 ports, success before failures), plus a late closing event.
    fn scenario() -> Vec<SecurityEvent> {
        let mut v = Vec::new();
        for i in 0..5 {
            v.push(login(
                &format!("bf{i}"),
                T0 + 10_000 + i * 1000,
                "203.0.113.7",
                "bob",
                false,
            ));
        }
        v.push(login("bf-ok", T0 + 20_000, "203.0.113.7", "bob", true));
        for i in 0..4 {
            v.push(login(
                &format!("nm{i}"),
                T0 + 30_000 + i * 1000,
                "198.51.100.4",
                "carol",
                false,
            ));
        }
        v.push(login("early-ok", T0 + 40_000, "192.0.2.1", "dave", true));
        for i in 0..5 {
            v.push(login(
                &format!("late-fail{i}"),
                T0 + 45_000 + i * 100,
                "192.0.2.2",
                "dave",
                false,
            ));
        }
        for p in 0..20 {
            v.push(connection(
                &format!("scan{p}"),
                T0 + 50_000 + i64::from(p) * 100,
                "203.0.113.9",
                1000 + p,
            ));
        }
        for p in 0..19 {
            v.push(connection(
                &format!("near{p}"),
                T0 + 50_000 + i64::from(p) * 100,
                "203.0.113.10",
                2000 + p,
            ));
        }
        // Something much later so every window closes.
        v.push(connection("tick", T0 + 3_000_000, "10.0.0.1", 80));
        v
    }

    fn run(events: &[SecurityEvent]) -> BTreeMap<String, (String, usize)> {
        let mut e = engine();
        for ev in events {
            e.ingest("acme", ev);
        }
        e.state
            .findings
            .iter()
            .map(|(id, f)| {
                (
                    id.clone(),
                    (format!("{}:{}", f.rule_id, key_text(&f.group_key)), f.count),
                )
            })
            .collect()
    }

    #[test]
    fn finds_the_attacks_and_not_the_near_misses() {
        let found: Vec<(String, usize)> = run(&scenario()).into_values().collect();
        let mut found = found;
        found.sort();
        assert_eq!(
            found,
            vec![
                ("brute-force:src_endpoint.ip=192.0.2.2".to_owned(), 5),
                ("brute-force:src_endpoint.ip=203.0.113.7".to_owned(), 5),
                ("credential-compromise:user.name=bob".to_owned(), 6),
                ("port-scan:src_endpoint.ip=203.0.113.9".to_owned(), 20),
            ]
        );
    }

    #[test]
    fn shuffled_within_lateness_and_duplicated_gives_the_same_findings() {
        let events = scenario();
        let expected = run(&events);
        let mut rng = rand::rng();
        for _ in 0..20 {
            // Everything but the final tick is within 30 s of lateness of
            // each other; shuffle them and send some twice.
            let (body, tick) = events.split_at(events.len() - 1);
            let mut shuffled = body.to_vec();
            shuffled.extend(body.iter().take(10).cloned());
            shuffled.shuffle(&mut rng);
            shuffled.extend(tick.iter().cloned());
            assert_eq!(run(&shuffled), expected);
        }
    }

    #[test]
    fn a_late_event_is_counted_and_updates_its_finding() {
        let mut e = engine();
        for i in 0..5 {
            e.ingest(
                "acme",
                &login(&format!("f{i}"), T0 + i * 1000, "203.0.113.7", "bob", false),
            );
        }
        let closing = e.ingest("acme", &connection("tick", T0 + 600_000, "10.0.0.1", 80));
        assert_eq!(closing.len(), 1);
        assert_eq!((closing[0].count, closing[0].activity_id), (5, 1));
        // A sixth failure in the closed window arrives late.
        let late = e.ingest(
            "acme",
            &login("f5", T0 + 5_000, "203.0.113.7", "bob", false),
        );
        assert_eq!(e.state.late_events, 1);
        assert_eq!(late.len(), 1);
        assert_eq!(
            (
                late[0].id.as_str(),
                late[0].count,
                late[0].activity_id,
                late[0].version
            ),
            (closing[0].id.as_str(), 6, 2, 2)
        );
        // The same late event again changes nothing.
        assert!(
            e.ingest(
                "acme",
                &login("f5", T0 + 5_000, "203.0.113.7", "bob", false)
            )
            .is_empty()
        );
    }

    #[test]
    fn repeats_within_the_suppression_period_update_one_finding() {
        let mut e = engine();
        for w in 0..3 {
            for i in 0..5 {
                e.ingest(
                    "acme",
                    &login(
                        &format!("w{w}f{i}"),
                        T0 + w * 300_000 + i * 1000,
                        "203.0.113.7",
                        "x",
                        false,
                    ),
                );
            }
        }
        e.ingest("acme", &connection("tick", T0 + 3_000_000, "10.0.0.1", 80));
        let bf: Vec<&Finding> = e
            .state
            .findings
            .values()
            .filter(|f| f.rule_id == "brute-force")
            .collect();
        assert_eq!(bf.len(), 1);
        assert_eq!(
            (bf[0].count, bf[0].window_end - bf[0].window_start),
            (15, 900_000)
        );
    }

    #[test]
    fn a_restored_checkpoint_continues_exactly_like_an_uninterrupted_run() {
        let events = scenario();
        let expected = run(&events);
        for cut in [1, 7, 20, events.len() - 1] {
            let mut first = engine();
            for ev in &events[..cut] {
                first.ingest("acme", ev);
            }
            let saved = serde_json::to_vec(&first.state).unwrap_or_default();
            let restored: State = serde_json::from_slice(&saved).unwrap_or_default();
            let rules = rules::parse(rules::DEFAULT_RULES).unwrap_or_default();
            let mut second = Engine::new(rules, Settings::default(), restored);
            // Redelivery after a crash: some events before the cut come again.
            for ev in &events[cut.saturating_sub(3)..] {
                second.ingest("acme", ev);
            }
            let got: BTreeMap<String, (String, usize)> = second
                .state
                .findings
                .iter()
                .map(|(id, f)| {
                    (
                        id.clone(),
                        (format!("{}:{}", f.rule_id, key_text(&f.group_key)), f.count),
                    )
                })
                .collect();
            assert_eq!(got, expected, "cut at {cut}");
        }
    }

    #[test]
    fn reloading_rules_keeps_the_state_of_rules_that_remain() {
        let mut e = engine();
        for i in 0..3 {
            e.ingest(
                "acme",
                &login(&format!("a{i}"), T0 + i * 1000, "203.0.113.7", "bob", false),
            );
        }
        // Reload: the same rules minus the port scan.
        let rules: Vec<Rule> = rules::parse(rules::DEFAULT_RULES)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.id != "port-scan")
            .collect();
        e.replace_rules(rules);
        for i in 3..5 {
            e.ingest(
                "acme",
                &login(&format!("a{i}"), T0 + i * 1000, "203.0.113.7", "bob", false),
            );
        }
        let closing = e.ingest("acme", &connection("tick", T0 + 600_000, "10.0.0.1", 80));
        assert_eq!(
            closing
                .iter()
                .map(|f| (f.rule_id.as_str(), f.count))
                .collect::<Vec<_>>(),
            vec![("brute-force", 5)]
        );
    }

    proptest! {
        #[test]
        fn every_time_falls_in_exactly_its_window(time in -10_000_000_000_000i64..10_000_000_000_000, size in 1i64..100_000_000) {
            let start = window_start(time, size);
            prop_assert!(start <= time && time < start + size);
            prop_assert_eq!(start.rem_euclid(size), 0);
        }

        #[test]
        fn extreme_times_never_overflow(time in proptest::num::i64::ANY) {
            let mut e = engine();
            e.ingest("acme", &login("x", time, "203.0.113.7", "bob", false));
            e.ingest("acme", &login("y", i64::MIN, "203.0.113.7", "bob", false));
            e.advance(i64::MAX);
            prop_assert_eq!(e.state.watermark, i64::MAX);
        }

        #[test]
        fn the_watermark_never_goes_back(times in proptest::collection::vec(0i64..10_000_000, 1..200)) {
            let mut e = engine();
            let mut last = i64::MIN;
            for (i, t) in times.iter().enumerate() {
                e.ingest("acme", &login(&format!("e{i}"), T0 + t, "203.0.113.7", "bob", false));
                prop_assert!(e.state.watermark >= last);
                prop_assert!(e.state.watermark <= e.state.max_event_time);
                last = e.state.watermark;
            }
        }
    }
}
