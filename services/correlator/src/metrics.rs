//! What the correlator reports on `/metrics`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counters the metrics endpoint reports.
#[derive(Default)]
pub struct Counters {
    pub events: AtomicU64,
    pub findings: AtomicU64,
    pub late_events: AtomicU64,
    pub dropped_late_events: AtomicU64,
    pub evicted_keys: AtomicU64,
    /// Messages of slots this partition does not own.
    pub foreign: AtomicU64,
    pub undecodable: AtomicU64,
    pub watermark_ms: AtomicI64,
    pub rule_reloads: AtomicU64,
    pub rule_reload_failures: AtomicU64,
    /// Size of the last checkpoint write (a delta, or a snapshot).
    pub checkpoint_bytes: AtomicU64,
    /// Size of the last snapshot: the whole state, encoded.
    pub state_bytes: AtomicU64,
    pub live_keys: AtomicU64,
    /// Stream sequence the state covers.
    pub position: AtomicU64,
    /// How long the last commit (findings + checkpoint) took.
    pub commit_micros: AtomicU64,
    pub commit_failures: AtomicU64,
    pub snapshots: AtomicU64,
    pub seeks: AtomicU64,
    /// Messages on EVENTS not yet delivered to this partition's consumer.
    pub behind: AtomicU64,
}

impl Counters {
    pub fn render(&self) -> String {
        use vigil_common::metrics::{Sample, render};
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        render(&[
            Sample {
                name: "vigil_correlator_events_total",
                help: "Events absorbed by this partition.",
                kind: "counter",
                value: n(&self.events),
            },
            Sample {
                name: "vigil_correlator_findings_total",
                help: "Finding versions published.",
                kind: "counter",
                value: n(&self.findings),
            },
            Sample {
                name: "vigil_correlator_late_events_total",
                help: "Events that arrived after their window closed.",
                kind: "counter",
                value: n(&self.late_events),
            },
            Sample {
                name: "vigil_correlator_dropped_late_events_total",
                help: "Late events whose window was already forgotten.",
                kind: "counter",
                value: n(&self.dropped_late_events),
            },
            Sample {
                name: "vigil_correlator_evicted_keys_total",
                help: "Keys without a finding forgotten, least recently active first, to stay within max_keys.",
                kind: "counter",
                value: n(&self.evicted_keys),
            },
            Sample {
                name: "vigil_correlator_foreign_messages_total",
                help: "Messages of event slots this partition does not own (skipped).",
                kind: "counter",
                value: n(&self.foreign),
            },
            Sample {
                name: "vigil_correlator_undecodable_messages_total",
                help: "Messages that were not an EventBatch.",
                kind: "counter",
                value: n(&self.undecodable),
            },
            Sample {
                name: "vigil_correlator_checkpoint_bytes",
                help: "Size of the last checkpoint write to KV (a delta of the changed keys, or a snapshot).",
                kind: "gauge",
                value: n(&self.checkpoint_bytes),
            },
            Sample {
                name: "vigil_correlator_state_bytes",
                help: "Size of the engine state at the last snapshot.",
                kind: "gauge",
                value: n(&self.state_bytes),
            },
            Sample {
                name: "vigil_correlator_live_keys",
                help: "Live (rule, tenant, group key) tracks in the engine.",
                kind: "gauge",
                value: n(&self.live_keys),
            },
            Sample {
                name: "vigil_correlator_commit_duration_seconds",
                help: "How long the last commit (findings published, checkpoint written) took.",
                kind: "gauge",
                value: self.commit_micros.load(Ordering::Relaxed) as f64 / 1e6,
            },
            Sample {
                name: "vigil_correlator_commit_failures_total",
                help: "Commit attempts that failed (each is retried).",
                kind: "counter",
                value: n(&self.commit_failures),
            },
            Sample {
                name: "vigil_correlator_snapshots_total",
                help: "Whole-state snapshots written.",
                kind: "counter",
                value: n(&self.snapshots),
            },
            Sample {
                name: "vigil_correlator_seeks_total",
                help: "Times the consumer was re-positioned at the checkpoint (start, missing delivery).",
                kind: "counter",
                value: n(&self.seeks),
            },
            Sample {
                name: "vigil_correlator_position",
                help: "EVENTS stream sequence the state covers.",
                kind: "gauge",
                value: n(&self.position),
            },
            Sample {
                name: "vigil_correlator_consumer_pending_messages",
                help: "Messages on EVENTS not yet delivered to this partition (at the last delivery).",
                kind: "gauge",
                value: n(&self.behind),
            },
            Sample {
                name: "vigil_correlator_watermark_seconds",
                help: "Event-time watermark.",
                kind: "gauge",
                value: self.watermark_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            },
            Sample {
                name: "vigil_correlator_watermark_lag_seconds",
                help: "Wall time minus the event-time watermark.",
                kind: "gauge",
                value: match self.watermark_ms.load(Ordering::Relaxed) {
                    0 => 0.0,
                    w => vigil_common::now_millis().saturating_sub(w) as f64 / 1000.0,
                },
            },
            Sample {
                name: "vigil_correlator_rule_reloads_total",
                help: "Rule files loaded on SIGHUP.",
                kind: "counter",
                value: n(&self.rule_reloads),
            },
            Sample {
                name: "vigil_correlator_rule_reload_failures_total",
                help: "Rule files refused on SIGHUP (the running rules stayed).",
                kind: "counter",
                value: n(&self.rule_reload_failures),
            },
        ])
    }
}
