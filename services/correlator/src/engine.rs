//! The rule engine: event-time sliding windows per (rule, tenant, group
//! key), a watermark that closes them, late events that amend findings
//! already emitted, and suppression that folds repeats into one finding.
//!
//! ## Windows
//!
//! A rule's `window` W slides by its `hop` H (H divides W). Time is cut
//! into panes of length H; the engine evaluates, when the watermark passes
//! the end of a pane, the W/H + 1 panes that end there. Every pattern whose
//! events lie within W of each other fits in such a run of panes, so it is
//! found wherever it falls in time (a pattern spread over up to W + H may
//! be found too). Overlapping windows that fire for the same key fold into
//! the key's open finding; so do windows within the rule's `suppress`.
//!
//! ## State, and its bound
//!
//! The state is one [`Track`] per live (rule, tenant, group key), holding
//! per pane only what the rule's outcome depends on: a count, up to
//! [`PANE_SEEN`] (or the threshold, if larger) event-id hashes for
//! deduplication, the first and last [`PANE_EVIDENCE`] event ids as
//! evidence, up to the threshold distinct-value hashes, and per sequence
//! step the first and last `at_least` marks. Never the events themselves.
//!
//! A pane is dropped `late_retention` after the last window holding it
//! has closed, a finding `max(late_retention, suppress)` past its window;
//! a key with neither is forgotten, and beyond `max_keys` keys without a
//! finding the least recently active one is (`evicted_keys`). Hence
//!
//! ```text
//! live keys  <=  min(max_keys, keys with a matching event in the last W + H + lateness + late_retention)
//!              + keys with a finding in the last max(late_retention, suppress)
//! state      <=  live keys × ((W + lateness + late_retention)/H + 1) panes × the per-pane bound
//! ```
//!
//! so memory and checkpoint size follow the number of live keys, not
//! events/s × retention. A late event behind the watermark later than
//! `late_retention` is dropped and counted (`dropped_late_events`).
//!
//! ## Determinism
//!
//! A window's outcome depends only on the set of events in it (each counted
//! once: by event-id hash while the pane's dedup set has room; a pane with
//! more than [`PANE_SEEN`] events may count a repeated event again, which
//! can raise a finding's count but never create a finding, as the threshold
//! is reached first), evaluated when the watermark passes its end; finding
//! ids derive from (rule, tenant, key, window start). So shuffling events
//! within the allowed lateness, or delivering them twice, yields the same
//! findings.
//!
//! The engine records which keys changed ([`Engine::take_delta`]); the
//! service checkpoints those changes, not the whole state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vigil_proto::event::v1::SecurityEvent;

use crate::fields;
use crate::rules::{Kind, Rule, Step};

/// At most this many contributing event ids are carried by a finding: the
/// first and the last half of them by (time, id).
pub const MAX_EVENT_IDS: usize = 100;
/// Evidence a pane keeps: its first and last this many event ids.
pub const PANE_EVIDENCE: usize = 8;
/// Event-id hashes a pane keeps to count each event once (or the rule's
/// threshold, if larger).
pub const PANE_SEEN: usize = 64;

#[derive(Debug, Clone)]
pub struct Settings {
    /// How far behind the newest event time the watermark trails.
    pub allowed_lateness_ms: i64,
    /// How long (in event time) a key keeps its panes after their windows
    /// closed, for late events.
    pub late_retention_ms: i64,
    /// At most this many keys without a finding are kept; beyond it the
    /// one whose newest event is oldest is forgotten (`evicted_keys`): a
    /// bound on memory however many distinct keys the traffic brings.
    pub max_keys: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            allowed_lateness_ms: 30_000,
            late_retention_ms: 3_600_000,
            max_keys: 400_000,
        }
    }
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
    /// The first and last [`MAX_EVENT_IDS`]/2 contributing events by (time, id).
    pub event_ids: Vec<String>,
    /// OCSF activity: 1 Create, 2 Update.
    pub activity_id: i32,
    /// Increases with every change; part of the message id.
    pub version: u32,
}

/// Marks (time, event-id hash) of one sequence step in a pane.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Marks {
    first: Vec<(i64, u64)>,
    last: Vec<(i64, u64)>,
}

/// What one pane of one key holds (see the module's bound).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Pane {
    /// Distinct matching events.
    count: u32,
    /// How much of this pane's weight a finding already counts.
    credited: u32,
    /// Sorted event-id hashes, for counting each event once.
    seen: Vec<u64>,
    /// The first and last [`PANE_EVIDENCE`] events by (time, id), sorted.
    evidence: Vec<(i64, String)>,
    /// Sorted hashes of distinct values (distinct_count rules).
    values: Vec<u64>,
    /// Per step (sequence rules).
    steps: Vec<Marks>,
}

/// Inserts into a vector growing 1, 2, 4, … (most of the engine's vectors
/// hold one or two items; the default first allocation holds four).
fn insert_at<T>(v: &mut Vec<T>, at: usize, x: T) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len().max(1));
    }
    v.insert(at, x);
}

/// Keeps `v` sorted and at most `keep` long, holding its smallest
/// (`smallest`) or largest items; false if `x` was already there.
fn insert_bounded<T: Ord>(v: &mut Vec<T>, x: T, keep: usize, smallest: bool) -> bool {
    match v.binary_search(&x) {
        Ok(_) => false,
        Err(pos) => {
            if v.len() < keep {
                insert_at(v, pos, x);
            } else if smallest && pos < v.len() {
                v.pop();
                insert_at(v, pos, x);
            } else if !smallest && pos > 0 {
                v.remove(0);
                insert_at(v, pos - 1, x);
            }
            true
        }
    }
}

/// Keeps `v` sorted, holding the `ends` smallest and `ends` largest
/// (time, id) seen (all of them while there are at most 2 × `ends`); the
/// id is copied only if kept.
fn keep_ends(v: &mut Vec<(i64, String)>, (time, id): (i64, &str), ends: usize) {
    let Err(pos) = v.binary_search_by(|(t, i)| (*t, i.as_str()).cmp(&(time, id))) else {
        return;
    };
    if v.len() >= 2 * ends && pos == ends {
        return; // the unkept middle
    }
    let x = (time, id.to_owned());
    if v.len() < 2 * ends {
        insert_at(v, pos, x);
    } else if pos < ends {
        // Into the first half; its largest falls into the unkept middle.
        v.remove(ends - 1);
        insert_at(v, pos, x);
    } else if pos > ends {
        v.remove(ends);
        insert_at(v, pos - 1, x);
    }
}

/// A key's panes by index, sorted (most keys have one or a few, so a
/// vector beats a tree).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
struct PaneMap(Vec<(i64, Pane)>);

impl PaneMap {
    fn at(&self, index: i64) -> usize {
        self.0.partition_point(|(i, _)| *i < index)
    }
    /// Panes with `lo <= index <= hi`.
    fn range(&self, lo: i64, hi: i64) -> &[(i64, Pane)] {
        let (a, b) = (self.at(lo), self.0.partition_point(|(i, _)| *i <= hi));
        &self.0[a..b.max(a)]
    }
    fn range_mut(&mut self, lo: i64, hi: i64) -> &mut [(i64, Pane)] {
        let (a, b) = (self.at(lo), self.0.partition_point(|(i, _)| *i <= hi));
        &mut self.0[a..b.max(a)]
    }
    fn entry(&mut self, index: i64) -> &mut Pane {
        let at = self.at(index);
        if self.0.get(at).is_none_or(|(i, _)| *i != index) {
            insert_at(&mut self.0, at, (index, Pane::default()));
        }
        &mut self.0[at].1
    }
    /// Indexes above `after`.
    fn after(&self, after: i64) -> impl Iterator<Item = i64> + '_ {
        self.0[self.0.partition_point(|(i, _)| *i <= after)..]
            .iter()
            .map(|(i, _)| *i)
    }
    fn first(&self) -> Option<i64> {
        self.0.first().map(|(i, _)| *i)
    }
    fn last(&self) -> Option<i64> {
        self.0.last().map(|(i, _)| *i)
    }
    fn retain(&mut self, keep: impl Fn(i64) -> bool) {
        self.0.retain(|(i, _)| keep(*i));
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn seen_cap(rule: &Rule) -> usize {
    match &rule.kind {
        Kind::Threshold { threshold, .. } | Kind::DistinctCount { threshold, .. } => {
            (*threshold).max(PANE_SEEN)
        }
        Kind::Sequence { steps } => steps
            .iter()
            .map(|s| s.at_least)
            .sum::<usize>()
            .max(PANE_SEEN),
    }
}

impl Pane {
    /// Adds one event; false if it was already counted.
    fn add(&mut self, rule: &Rule, id: &str, time: i64, step: usize, value: Option<u64>) -> bool {
        let hash = fnv1a(id);
        match self.seen.binary_search(&hash) {
            Ok(_) => return false,
            Err(pos) if self.seen.len() < seen_cap(rule) => insert_at(&mut self.seen, pos, hash),
            Err(_) => {}
        }
        self.count = self.count.saturating_add(1);
        keep_ends(&mut self.evidence, (time, id), PANE_EVIDENCE);
        match &rule.kind {
            Kind::DistinctCount { threshold, .. } => {
                if let Some(v) = value
                    && let Err(pos) = self.values.binary_search(&v)
                    && self.values.len() < (*threshold).max(PANE_SEEN)
                {
                    insert_at(&mut self.values, pos, v);
                }
            }
            Kind::Sequence { steps } => {
                if self.steps.len() < steps.len() {
                    self.steps.resize_with(steps.len(), Marks::default);
                }
                if let (Some(marks), Some(s)) = (self.steps.get_mut(step), steps.get(step)) {
                    insert_bounded(&mut marks.first, (time, hash), s.at_least, true);
                    insert_bounded(&mut marks.last, (time, hash), s.at_least, false);
                }
            }
            Kind::Threshold { .. } => {}
        }
        true
    }

    /// What this pane adds to a finding's count.
    fn weight(&self, rule: &Rule) -> u32 {
        match rule.kind {
            Kind::DistinctCount { .. } => u32::try_from(self.values.len()).unwrap_or(u32::MAX),
            _ => self.count,
        }
    }
}

/// A finding a key fed, with the evidence it has gathered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Held {
    finding: Finding,
    evidence: Vec<(i64, String)>,
}

/// Where a track sits in the engine's indexes (derived, not stored; equal
/// for any two tracks, so it never makes two states differ).
#[derive(Debug, Clone, Copy, Default)]
struct Index {
    /// (tenant number, when the track next needs attention).
    due: Option<(u32, i64)>,
    /// The start of its newest pane, if it has no finding (eviction order).
    lru: Option<i64>,
}

impl PartialEq for Index {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Index {}

/// Everything the engine keeps for one (rule, tenant, group key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    /// Shared with every track of the rule and of the tenant.
    rule: Arc<str>,
    tenant: Arc<str>,
    /// The values of the rule's `group_by` fields.
    key: Box<[String]>,
    #[serde(skip)]
    index: Index,
    /// By pane index (pane start / hop).
    panes: PaneMap,
    /// The window ending at every pane up to this index has been evaluated.
    evaluated: i64,
    /// Findings late events may still amend, oldest first.
    held: Vec<Held>,
}

/// One tenant's event-time clock. Tenants' devices are independent, so
/// each tenant has its own watermark: one tenant's backlog is not late
/// because another's clock is ahead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clock {
    pub max_event_time: i64,
    pub watermark: i64,
}

/// The engine's clocks and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Global {
    pub clocks: BTreeMap<String, Clock>,
    /// Events that arrived after their first window closed.
    pub late_events: u64,
    /// Late events nothing could take any more.
    pub dropped_late_events: u64,
    /// Keys forgotten early to stay within `max_keys`.
    pub evicted_keys: u64,
}

impl Global {
    /// The laggiest tenant's watermark (0 before any event).
    pub fn min_watermark(&self) -> i64 {
        self.clocks.values().map(|c| c.watermark).min().unwrap_or(0)
    }
}

/// A track's identity: the first 128 bits of SHA-256 of (rule, tenant, key).
pub type TrackId = u128;

/// Track ids are already uniform (a digest nobody can steer), so their
/// hash is their low 64 bits.
#[derive(Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used for u128 keys; a plain fold keeps it a hash anyway.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type IdHash = std::hash::BuildHasherDefault<IdHasher>;

/// Everything the engine knows: what a snapshot holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub global: Global,
    tracks: HashMap<TrackId, Track, IdHash>,
}

/// The changes since the last delta: each changed track's new value, or
/// `None` for a forgotten one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub global: Global,
    pub changes: Vec<(TrackId, Option<Track>)>,
}

impl State {
    /// Applies a delta taken from an engine that held this state.
    pub fn apply(&mut self, delta: Delta) {
        self.global = delta.global;
        for (id, track) in delta.changes {
            match track {
                Some(t) => self.tracks.insert(id, t),
                None => self.tracks.remove(&id),
            };
        }
    }

    /// Live (rule, tenant, key) tracks.
    pub fn live_keys(&self) -> usize {
        self.tracks.len()
    }

    /// Every finding still held (late events may amend it).
    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.tracks
            .values()
            .flat_map(|t| t.held.iter().map(|h| &h.finding))
    }
}

pub struct Engine {
    rules: Vec<Rule>,
    by_id: HashMap<String, usize>,
    settings: Settings,
    state: State,
    /// Tracks by tenant and when they next need attention (a window
    /// closes, a pane or finding expires); derived, rebuilt on load.
    due: BTreeSet<(u32, i64, TrackId)>,
    /// A small number per tenant, for `due`, and the shared name.
    tenants: HashMap<String, u32>,
    tenant_names: Vec<Arc<str>>,
    /// The rules' ids, shared by their tracks.
    rule_names: Vec<Arc<str>>,
    /// Keys without a finding, by their newest pane; derived.
    lru: BTreeSet<(i64, TrackId)>,
    /// Tracks changed since the last delta.
    changed: HashSet<TrackId, IdHash>,
}

fn digest(parts: &[&str]) -> [u8; 16] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// FNV-1a: a stable 64-bit hash for event ids and values (stable across
/// builds, as checkpoints keep it).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn key_text(key: &[(String, String)]) -> String {
    key.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `key_text` of the fields and their values, without building the pairs.
fn key_text_of(fields: &[String], values: &[String]) -> String {
    let mut text = String::new();
    for (i, (k, v)) in fields.iter().zip(values).enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(k);
        text.push('=');
        text.push_str(v);
    }
    text
}

/// The start of the window of size `size` holding `time` (floor, also for
/// negative times).
pub fn window_start(time: i64, size: i64) -> i64 {
    // Saturates at the very bottom of the range instead of overflowing
    // (the gateway never lets such times in; the engine still must not
    // panic on them).
    time.saturating_sub(time.rem_euclid(size))
}

/// The deterministic id of the finding a window starting at `start` creates.
pub fn finding_id(rule: &str, tenant: &str, key: &[(String, String)], start: i64) -> String {
    hex(&digest(&[rule, tenant, &key_text(key), &start.to_string()]))
}

/// The digest of (rule, tenant, `key_text`) fed piecewise, without
/// building the text.
fn track_id(rule: &str, tenant: &str, fields: &[String], values: &[fields::Value]) -> TrackId {
    let mut h = Sha256::new();
    for p in [rule, tenant] {
        h.update(p.as_bytes());
        h.update([0]);
    }
    for (i, (k, v)) in fields.iter().zip(values).enumerate() {
        if i > 0 {
            h.update(b",");
        }
        h.update(k.as_bytes());
        h.update(b"=");
        v.with_text(|t| h.update(t.as_bytes()));
    }
    h.update([0]);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    u128::from_be_bytes(out)
}

/// Pane arithmetic of one rule.
#[derive(Clone, Copy)]
struct Panes {
    hop: i64,
    /// Panes in a window besides the last (W / H).
    span: i64,
}

impl Panes {
    fn of(rule: &Rule) -> Self {
        let hop = rule.hop_ms.max(1);
        Self {
            hop,
            span: (rule.window_ms / hop).max(1),
        }
    }
    fn pane(self, time: i64) -> i64 {
        time.div_euclid(self.hop)
    }
    fn start(self, pane: i64) -> i64 {
        pane.saturating_mul(self.hop)
    }
    /// When the window ending at `pane` closes.
    fn close(self, pane: i64) -> i64 {
        self.start(pane.saturating_add(1))
    }
    /// When the last window holding `pane` closes.
    fn last_close(self, pane: i64) -> i64 {
        self.start(pane.saturating_add(self.span).saturating_add(1))
    }
}

/// Whether the steps occur in order within `panes` (greedy: each step's
/// `at_least`-th mark after the previous step's completes it). Exact when
/// a pane holds at most 2 × `at_least` marks of a step; else a step may
/// complete later than it did (never earlier).
fn sequence_holds(steps: &[Step], panes: &[&Pane]) -> bool {
    let mut after: Option<(i64, u64)> = None;
    for (i, step) in steps.iter().enumerate() {
        let mut known: Vec<(i64, u64)> = panes
            .iter()
            .filter_map(|p| p.steps.get(i))
            .flat_map(|m| m.first.iter().chain(m.last.iter()))
            .copied()
            .filter(|m| after.is_none_or(|a| *m > a))
            .collect();
        known.sort_unstable();
        known.dedup();
        let Some(&done) = known.get(step.at_least.saturating_sub(1)) else {
            return false;
        };
        after = Some(done);
    }
    true
}

/// Keeps the first and last half of `MAX_EVENT_IDS` of sorted, deduplicated evidence.
fn bound_evidence(evidence: &mut Vec<(i64, String)>) {
    evidence.sort();
    evidence.dedup();
    if evidence.len() > MAX_EVENT_IDS {
        let half = MAX_EVENT_IDS / 2;
        evidence.drain(half..evidence.len() - half);
    }
}

impl Engine {
    pub fn new(rules: Vec<Rule>, settings: Settings, state: State) -> Self {
        let mut engine = Self {
            by_id: HashMap::new(),
            rules: Vec::new(),
            settings,
            state,
            due: BTreeSet::new(),
            tenants: HashMap::new(),
            tenant_names: Vec::new(),
            rule_names: Vec::new(),
            lru: BTreeSet::new(),
            changed: HashSet::default(),
        };
        engine.set_rules(rules);
        let ids: Vec<TrackId> = engine.state.tracks.keys().copied().collect();
        for id in ids {
            // One shared name per tenant and rule, as ingest makes them.
            if let Some(t) = engine.state.tracks.get(&id) {
                let (tenant, rule) = (t.tenant.clone(), t.rule.clone());
                let ix = engine.tenant_ix(&tenant) as usize;
                let tenant = engine.tenant_names[ix].clone();
                let rule = engine
                    .by_id
                    .get(&*rule)
                    .map_or(rule, |&r| engine.rule_names[r].clone());
                if let Some(t) = engine.state.tracks.get_mut(&id) {
                    (t.tenant, t.rule) = (tenant, rule);
                }
            }
            engine.schedule(id);
        }
        engine
    }

    fn set_rules(&mut self, rules: Vec<Rule>) {
        self.by_id = rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
        self.rule_names = rules.iter().map(|r| Arc::from(r.id.as_str())).collect();
        self.rules = rules;
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn global(&self) -> &Global {
        &self.state.global
    }

    /// `tenant`'s clock (zero before its first event).
    pub fn clock(&self, tenant: &str) -> Clock {
        self.state
            .global
            .clocks
            .get(tenant)
            .copied()
            .unwrap_or_default()
    }

    fn tenant_ix(&mut self, tenant: &str) -> u32 {
        if let Some(&ix) = self.tenants.get(tenant) {
            return ix;
        }
        let ix = u32::try_from(self.tenants.len()).unwrap_or(u32::MAX);
        self.tenants.insert(tenant.to_owned(), ix);
        self.tenant_names.push(Arc::from(tenant));
        ix
    }

    /// Swaps the rule set; state of rules that remain unchanged is kept,
    /// state of removed or changed rules is dropped.
    pub fn replace_rules(&mut self, rules: Vec<Rule>) {
        let kept: HashSet<String> = rules
            .iter()
            .filter(|r| self.by_id.get(&r.id).and_then(|&i| self.rules.get(i)) == Some(*r))
            .map(|r| r.id.clone())
            .collect();
        let dropped: Vec<TrackId> = self
            .state
            .tracks
            .iter()
            .filter(|(_, t)| !kept.contains(&*t.rule))
            .map(|(id, _)| *id)
            .collect();
        for id in dropped {
            self.forget(id);
        }
        self.set_rules(rules);
    }

    fn forget(&mut self, id: TrackId) {
        if let Some(t) = self.state.tracks.remove(&id) {
            self.unindex(id, t.index);
        }
        self.changed.insert(id);
    }

    fn unindex(&mut self, id: TrackId, index: Index) {
        if let Some((t, due)) = index.due {
            self.due.remove(&(t, due, id));
        }
        if let Some(at) = index.lru {
            self.lru.remove(&(at, id));
        }
    }

    /// The changes since the last call, for an incremental checkpoint.
    pub fn take_delta(&mut self) -> Delta {
        let mut changes: Vec<(TrackId, Option<Track>)> = self
            .changed
            .drain()
            .map(|id| (id, self.state.tracks.get(&id).cloned()))
            .collect();
        changes.sort_unstable_by_key(|c| c.0);
        Delta {
            global: self.state.global.clone(),
            changes,
        }
    }

    /// Keys changed since the last delta.
    pub fn pending_changes(&self) -> usize {
        self.changed.len()
    }

    /// Absorbs one event of `tenant`; returns findings created or updated.
    pub fn ingest(&mut self, tenant: &str, event: &SecurityEvent) -> Vec<Finding> {
        let mut out = Vec::new();
        // Counted once per event, however many rules it is late for.
        let (mut was_late, mut was_dropped) = (false, false);
        for r in 0..self.rules.len() {
            let rule = &self.rules[r];
            let Some(step) = rule.step_of(event) else {
                continue;
            };
            let Some(key) = rule
                .group_by
                .iter()
                .map(|f| fields::get(event, f))
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            let value = match &rule.kind {
                Kind::DistinctCount { field, .. } => match fields::get(event, field) {
                    Some(v) => Some(v.with_text(fnv1a)),
                    None => continue,
                },
                _ => None,
            };
            let panes = Panes::of(rule);
            let pane = panes.pane(event.time);
            let watermark = self.clock(tenant).watermark;
            let late = panes.close(pane) <= watermark;
            let id = track_id(&rule.id, tenant, &rule.group_by, &key);

            let keep_until = panes
                .last_close(pane)
                .saturating_add(self.settings.late_retention_ms);
            if late && keep_until <= watermark {
                // So late nothing can take it: counted, not silently lost.
                (was_late, was_dropped) = (true, true);
                continue;
            }
            if !self.state.tracks.contains_key(&id) {
                let ix = self.tenant_ix(tenant) as usize;
                let track = Track {
                    rule: self.rule_names[r].clone(),
                    tenant: self.tenant_names[ix].clone(),
                    key: key.iter().map(|v| v.to_string()).collect(),
                    index: Index::default(),
                    panes: PaneMap::default(),
                    evaluated: i64::MIN,
                    held: Vec::new(),
                };
                self.state.tracks.insert(id, track);
            }
            let rule = &self.rules[r];
            let Some(track) = self.state.tracks.get_mut(&id) else {
                continue;
            };
            if !track
                .panes
                .entry(pane)
                .add(rule, event.uid(), event.time, step, value)
            {
                continue; // the same event again: counted once
            }
            self.changed.insert(id);
            if late {
                was_late = true;
                // Windows already evaluated that hold this pane, again.
                let again: Vec<i64> = track
                    .panes
                    .range(pane, pane.saturating_add(panes.span))
                    .iter()
                    .map(|(e, _)| *e)
                    .take_while(|e| *e <= track.evaluated)
                    .collect();
                for e in again {
                    out.extend(self.evaluate(r, id, e));
                }
                out.extend(self.settle(id, watermark));
            }
            self.schedule(id);
        }
        self.evict();
        let global = &mut self.state.global;
        global.late_events += u64::from(was_late);
        global.dropped_late_events += u64::from(was_dropped);
        let clock = match global.clocks.get_mut(tenant) {
            Some(c) => c,
            None => global.clocks.entry(tenant.to_owned()).or_default(),
        };
        if event.time > clock.max_event_time {
            clock.max_event_time = event.time;
            let watermark = event.time.saturating_sub(self.settings.allowed_lateness_ms);
            out.extend(self.advance_tenant(tenant, watermark));
        }
        out
    }

    /// Moves every tenant's watermark forward to `watermark`.
    pub fn advance(&mut self, watermark: i64) -> Vec<Finding> {
        let tenants: Vec<String> = self.state.global.clocks.keys().cloned().collect();
        tenants
            .iter()
            .flat_map(|t| self.advance_tenant(t, watermark))
            .collect()
    }

    /// Moves `tenant`'s watermark forward to `watermark` (never back),
    /// closing the windows it passes. The service calls this with an
    /// idle-time estimate for a tenant whose events stopped, so a quiet
    /// source does not stall windows.
    pub fn advance_tenant(&mut self, tenant: &str, watermark: i64) -> Vec<Finding> {
        let Some(clock) = self.state.global.clocks.get_mut(tenant) else {
            return Vec::new();
        };
        if watermark <= clock.watermark {
            return Vec::new();
        }
        clock.watermark = watermark;
        let t = self.tenant_ix(tenant);
        let mut out = Vec::new();
        // In (due, id) order, so suppression chains form the same way
        // whatever order events arrived in.
        while let Some(&(_, due, id)) = self
            .due
            .range((t, i64::MIN, 0)..=(t, watermark, TrackId::MAX))
            .next()
        {
            self.due.remove(&(t, due, id));
            if let Some(track) = self.state.tracks.get_mut(&id) {
                track.index.due = None;
            }
            out.extend(self.settle(id, watermark));
            self.schedule(id);
        }
        self.evict();
        out
    }

    /// Keeps at most `max_keys` keys without a finding: the least recently
    /// active go first (the order is event time, so it is deterministic).
    fn evict(&mut self) {
        while self.lru.len() > self.settings.max_keys && self.evict_oldest() {}
    }

    /// Keys without a finding (what `max_keys` bounds).
    pub fn evictable_keys(&self) -> usize {
        self.lru.len()
    }

    /// The start of the newest pane of the least recently active key
    /// without a finding.
    pub fn oldest_activity(&self) -> Option<i64> {
        self.lru.first().map(|(at, _)| *at)
    }

    /// Forgets the least recently active key without a finding (for a cap
    /// shared by several engines); false if there is none.
    pub fn evict_oldest(&mut self) -> bool {
        let Some(&(_, id)) = self.lru.first() else {
            return false;
        };
        self.forget(id);
        self.state.global.evicted_keys += 1;
        true
    }

    /// Evaluates the windows of `id` that closed by `watermark`, then drops
    /// what nothing can need any more.
    fn settle(&mut self, id: TrackId, watermark: i64) -> Vec<Finding> {
        let mut out = Vec::new();
        let Some(track) = self.state.tracks.get(&id) else {
            return out;
        };
        let Some(&r) = self.by_id.get(&*track.rule) else {
            self.forget(id);
            return out;
        };
        let rule = &self.rules[r];
        let panes = Panes::of(rule);
        let closing: Vec<i64> = track
            .panes
            .after(track.evaluated)
            .take_while(|e| panes.close(*e) <= watermark)
            .collect();
        for e in closing {
            out.extend(self.evaluate(r, id, e));
            if let Some(t) = self.state.tracks.get_mut(&id) {
                t.evaluated = e;
            }
            self.changed.insert(id);
        }
        let rule = &self.rules[r];
        let hold = self.settings.late_retention_ms.max(rule.suppress_ms);
        let retention = self.settings.late_retention_ms;
        let Some(track) = self.state.tracks.get_mut(&id) else {
            return out;
        };
        let before = (track.held.len(), track.panes.len());
        track
            .held
            .retain(|h| h.finding.window_end.saturating_add(hold) > watermark);
        let extra = retention;
        track
            .panes
            .retain(|p| panes.last_close(p).saturating_add(extra) > watermark);
        if before != (track.held.len(), track.panes.len()) {
            self.changed.insert(id);
        }
        if track.panes.is_empty() && track.held.is_empty() {
            self.forget(id);
        }
        out
    }

    /// When `id` next needs [`Engine::settle`].
    fn schedule(&mut self, id: TrackId) {
        let Some(track) = self.state.tracks.get(&id) else {
            return;
        };
        let (old, tenant) = (track.index, track.tenant.clone());
        let Some(rule) = self.by_id.get(&*track.rule).map(|&i| &self.rules[i]) else {
            return;
        };
        let panes = Panes::of(rule);
        let hold = self.settings.late_retention_ms.max(rule.suppress_ms);
        let extra = self.settings.late_retention_ms;
        let next_close = track
            .panes
            .after(track.evaluated)
            .next()
            .map(|e| panes.close(e));
        let pane_expiry = track
            .panes
            .first()
            .map(|p| panes.last_close(p).saturating_add(extra));
        let held_expiry = track
            .held
            .iter()
            .map(|h| h.finding.window_end.saturating_add(hold))
            .min();
        let lru = match (track.held.is_empty(), track.panes.last()) {
            (true, Some(p)) => Some(panes.start(p)),
            _ => None,
        };
        let due = [next_close, pane_expiry, held_expiry]
            .into_iter()
            .flatten()
            .min();
        let t = self.tenant_ix(&tenant);
        let index = Index {
            due: due.map(|d| (t, d)),
            lru,
        };
        if (old.due, old.lru) == (index.due, index.lru) {
            return; // most events leave a key's schedule as it was
        }
        self.unindex(id, old);
        if let Some(at) = lru {
            self.lru.insert((at, id));
        }
        if let Some(d) = due {
            self.due.insert((t, d, id));
        }
        if let Some(track) = self.state.tracks.get_mut(&id) {
            track.index = index;
        }
    }

    /// Evaluates the window of rule `r` ending at pane `end` of `id`, and
    /// applies it to the key's finding if the rule holds and the window
    /// adds something.
    fn evaluate(&mut self, r: usize, id: TrackId, end: i64) -> Option<Finding> {
        let rule = &self.rules[r];
        let panes = Panes::of(rule);
        let track = self.state.tracks.get_mut(&id)?;
        let lo = end.saturating_sub(panes.span);
        let window: Vec<&Pane> = track.panes.range(lo, end).iter().map(|(_, p)| p).collect();
        let holds = match &rule.kind {
            Kind::Threshold { threshold, .. } => {
                window.iter().map(|p| p.count as usize).sum::<usize>() >= *threshold
            }
            Kind::DistinctCount { threshold, .. } => {
                let mut values: Vec<u64> = window
                    .iter()
                    .flat_map(|p| p.values.iter().copied())
                    .collect();
                values.sort_unstable();
                values.dedup();
                values.len() >= *threshold
            }
            Kind::Sequence { steps } => sequence_holds(steps, &window),
        };
        if !holds {
            return None;
        }
        let added: u64 = window
            .iter()
            .map(|p| u64::from(p.weight(rule).saturating_sub(p.credited)))
            .sum();
        if added == 0 {
            return None; // nothing new
        }
        let evidence: Vec<(i64, String)> = window
            .iter()
            .flat_map(|p| p.evidence.iter().cloned())
            .collect();
        for (_, p) in track.panes.range_mut(lo, end) {
            p.credited = p.weight(rule);
        }
        let (start, stop) = (panes.start(lo), panes.close(end));
        let added = usize::try_from(added).unwrap_or(usize::MAX);
        let suppress = rule.suppress_ms;
        // Overlapping windows, and windows within the suppression period,
        // fold into the key's finding.
        let fold = track.held.iter().position(|h| {
            start < h.finding.window_end.saturating_add(suppress)
                && stop.saturating_add(suppress) > h.finding.window_start
        });
        let held = match fold {
            Some(i) => {
                let h = &mut track.held[i];
                let f = &mut h.finding;
                f.count = f.count.saturating_add(added);
                f.window_start = f.window_start.min(start);
                f.window_end = f.window_end.max(stop);
                f.activity_id = 2;
                f.version += 1;
                h
            }
            None => {
                track.held.push(Held {
                    finding: Finding {
                        id: hex(&digest(&[
                            &rule.id,
                            &track.tenant,
                            &key_text_of(&rule.group_by, &track.key),
                            &start.to_string(),
                        ])),
                        rule_id: rule.id.clone(),
                        title: rule.title.clone(),
                        severity_id: rule.severity_id,
                        technique: rule.technique.clone(),
                        tenant: track.tenant.to_string(),
                        group_key: rule
                            .group_by
                            .iter()
                            .cloned()
                            .zip(track.key.iter().cloned())
                            .collect(),
                        window_start: start,
                        window_end: stop,
                        count: added,
                        event_ids: Vec::new(),
                        activity_id: 1,
                        version: 1,
                    },
                    evidence: Vec::new(),
                });
                track.held.sort_by_key(|h| h.finding.window_start);
                let at = track
                    .held
                    .iter()
                    .position(|h| h.finding.window_start == start)?;
                &mut track.held[at]
            }
        };
        held.evidence.extend(evidence);
        bound_evidence(&mut held.evidence);
        held.finding.event_ids = held.evidence.iter().map(|(_, id)| id.clone()).collect();
        let finding = held.finding.clone();
        self.changed.insert(id);
        Some(finding)
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

    fn held(e: &Engine) -> BTreeMap<String, (String, usize)> {
        e.state()
            .findings()
            .map(|f| {
                (
                    f.id.clone(),
                    (format!("{}:{}", f.rule_id, key_text(&f.group_key)), f.count),
                )
            })
            .collect()
    }

    fn run(events: &[SecurityEvent]) -> BTreeMap<String, (String, usize)> {
        let mut e = engine();
        for ev in events {
            e.ingest("acme", ev);
        }
        held(&e)
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

    fn findings_of(e: &Engine) -> Vec<(String, String, usize)> {
        let mut v: Vec<_> = e
            .state()
            .findings()
            .map(|f| (f.rule_id.clone(), key_text(&f.group_key), f.count))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn patterns_across_a_window_boundary_are_found() {
        let mut e = engine();
        // Brute force: 3 failures before a 5-minute boundary, 2 after.
        for (i, t) in [296_000, 297_000, 298_000, 301_000, 302_000]
            .iter()
            .enumerate()
        {
            e.ingest(
                "acme",
                &login(&format!("bf{i}"), T0 + t, "203.0.113.7", "u", false),
            );
        }
        // Credential compromise: failures before a 10-minute boundary, the
        // success after it.
        for i in 0..5 {
            e.ingest(
                "acme",
                &login(
                    &format!("cc{i}"),
                    T0 + 595_000 + i * 1000,
                    &format!("198.51.100.{i}"),
                    "eve",
                    false,
                ),
            );
        }
        e.ingest(
            "acme",
            &login("cc-ok", T0 + 601_000, "198.51.100.99", "eve", true),
        );
        // Port scan: 10 ports before a minute boundary, 10 after.
        for p in 0..20 {
            e.ingest(
                "acme",
                &connection(
                    &format!("ps{p}"),
                    T0 + 55_000 + i64::from(p) * 500,
                    "203.0.113.9",
                    1000 + p,
                ),
            );
        }
        e.ingest("acme", &connection("tick", T0 + 3_000_000, "10.0.0.1", 80));
        assert_eq!(
            findings_of(&e),
            vec![
                (
                    "brute-force".to_owned(),
                    "src_endpoint.ip=203.0.113.7".to_owned(),
                    5
                ),
                (
                    "credential-compromise".to_owned(),
                    "user.name=eve".to_owned(),
                    6
                ),
                (
                    "port-scan".to_owned(),
                    "src_endpoint.ip=203.0.113.9".to_owned(),
                    20
                ),
            ]
        );
    }

    #[test]
    fn a_pattern_spread_wider_than_its_window_is_not_found() {
        let mut e = engine();
        // Five failures 105 s apart: any 5 minutes hold at most three, any
        // 5.5 minutes (window plus hop) at most four.
        for i in 0..5 {
            e.ingest(
                "acme",
                &login(
                    &format!("f{i}"),
                    T0 + i * 105_000,
                    "203.0.113.7",
                    "u",
                    false,
                ),
            );
        }
        // 19 distinct ports in one minute, the twentieth 2 minutes later.
        for p in 0..19 {
            e.ingest(
                "acme",
                &connection(
                    &format!("p{p}"),
                    T0 + i64::from(p) * 1000,
                    "203.0.113.9",
                    1000 + p,
                ),
            );
        }
        e.ingest(
            "acme",
            &connection("p19", T0 + 140_000, "203.0.113.9", 2000),
        );
        e.ingest("acme", &connection("tick", T0 + 3_000_000, "10.0.0.1", 80));
        assert_eq!(findings_of(&e), vec![]);
    }

    #[test]
    fn one_attack_seen_by_overlapping_windows_is_one_finding() {
        let mut rules = rules::parse(rules::DEFAULT_RULES).unwrap_or_default();
        for r in &mut rules {
            r.suppress_ms = 0; // overlap alone must fold
        }
        let mut e = Engine::new(rules, Settings::default(), State::default());
        let mut emitted = BTreeMap::new();
        for i in 0..12 {
            for f in e.ingest(
                "acme",
                &login(&format!("f{i}"), T0 + i * 20_000, "203.0.113.7", "u", false),
            ) {
                emitted.insert(f.id.clone(), f.count);
            }
        }
        for f in e.ingest("acme", &connection("tick", T0 + 3_000_000, "10.0.0.1", 80)) {
            emitted.insert(f.id.clone(), f.count);
        }
        let bf: Vec<(String, usize)> = findings_of(&e)
            .into_iter()
            .filter(|f| f.0 == "brute-force")
            .map(|f| (f.1, f.2))
            .collect();
        assert_eq!(bf, vec![("src_endpoint.ip=203.0.113.7".to_owned(), 12)]);
    }

    #[test]
    fn keys_without_a_finding_are_capped_least_recently_active_first() {
        let rules = rules::parse(rules::DEFAULT_RULES).unwrap_or_default();
        let settings = Settings {
            max_keys: 100,
            ..Settings::default()
        };
        let mut e = Engine::new(rules, settings, State::default());
        // 1,000 sources with one failure each, a second apart (and one user
        // with all of them and no success): 1,001 keys, none with a finding.
        for i in 0..1000 {
            e.ingest(
                "acme",
                &login(
                    &format!("e{i}"),
                    T0 + i * 1000,
                    &format!("10.0.{}.{}", i / 250, i % 250),
                    "u",
                    false,
                ),
            );
        }
        assert_eq!(e.state().live_keys(), 100);
        assert_eq!(e.global().evicted_keys, 901);
        // An attack from a source active now is still found: the cap takes
        // the least recently active keys.
        let mut found = Vec::new();
        for i in 0..5 {
            found.extend(e.ingest(
                "acme",
                &login(
                    &format!("a{i}"),
                    T0 + 1_000_000 + i * 1000,
                    "203.0.113.7",
                    "x",
                    false,
                ),
            ));
        }
        found.extend(e.ingest("acme", &connection("tick", T0 + 3_000_000, "10.0.0.1", 80)));
        assert_eq!(
            found
                .iter()
                .map(|f| (f.rule_id.as_str(), f.count))
                .collect::<Vec<_>>(),
            vec![("brute-force", 5)]
        );
        // A late event for an evicted key starts it afresh (what it had
        // counted is gone, which `evicted_keys` reports): counted as late.
        let late = e.global().late_events;
        e.ingest(
            "acme",
            &login("late", T0 + 2_900_000, "10.0.0.0", "u", false),
        );
        assert_eq!(e.global().late_events, late + 1);
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
        assert_eq!(e.global().late_events, 1);
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
            .state()
            .findings()
            .filter(|f| f.rule_id == "brute-force")
            .collect();
        assert_eq!(bf.len(), 1);
        // Three bursts 5 minutes apart, each its own window's worth.
        assert_eq!(bf[0].count, 15);
        assert!(bf[0].window_start <= T0 && bf[0].window_end > T0 + 604_000);
    }

    #[test]
    fn a_restored_checkpoint_continues_exactly_like_an_uninterrupted_run() {
        let events = scenario();
        let expected = run(&events);
        for cut in [1, 7, 20, events.len() - 1] {
            // A snapshot taken halfway and the delta since: what the
            // service's checkpoint holds.
            let half = cut / 2;
            let mut first = engine();
            for ev in &events[..half] {
                first.ingest("acme", ev);
            }
            let mut restored = State::default();
            restored.apply(first.take_delta());
            let snapshot = postcard::to_allocvec(&restored).unwrap_or_default();
            for ev in &events[half..cut] {
                first.ingest("acme", ev);
            }
            let delta = postcard::to_allocvec(&first.take_delta()).unwrap_or_default();
            let mut restored: State = postcard::from_bytes(&snapshot).unwrap_or_default();
            restored.apply(postcard::from_bytes(&delta).unwrap_or_default());
            assert_eq!(&restored, first.state(), "cut at {cut}");
            let rules = rules::parse(rules::DEFAULT_RULES).unwrap_or_default();
            let mut second = Engine::new(rules, Settings::default(), restored);
            // Redelivery after a crash: some events before the cut come again.
            for ev in &events[cut.saturating_sub(3)..] {
                second.ingest("acme", ev);
            }
            let got = held(&second);
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
            prop_assert_eq!(e.clock("acme").watermark, i64::MAX);
        }

        #[test]
        fn the_watermark_never_goes_back(times in proptest::collection::vec(0i64..10_000_000, 1..200)) {
            let mut e = engine();
            let mut last = i64::MIN;
            for (i, t) in times.iter().enumerate() {
                e.ingest("acme", &login(&format!("e{i}"), T0 + t, "203.0.113.7", "bob", false));
                let clock = e.clock("acme");
                prop_assert!(clock.watermark >= last);
                prop_assert!(clock.watermark <= clock.max_event_time);
                last = clock.watermark;
            }
        }
    }
}
