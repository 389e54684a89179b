//! What the correlator reports on `/metrics`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counters the metrics endpoint reports.
#[derive(Default)]
pub struct Counters {
    pub events: AtomicU64,
    pub findings: AtomicU64,
    pub late_events: AtomicU64,
    pub dropped_late_events: AtomicU64,
    pub undecodable: AtomicU64,
    pub watermark_ms: AtomicI64,
    pub rule_reloads: AtomicU64,
    pub rule_reload_failures: AtomicU64,
    pub checkpoint_bytes: AtomicU64,
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
                name: "vigil_correlator_undecodable_messages_total",
                help: "Messages that were not an EventBatch.",
                kind: "counter",
                value: n(&self.undecodable),
            },
            Sample {
                name: "vigil_correlator_checkpoint_bytes",
                help: "Size of the last checkpoint written to KV (compressed).",
                kind: "gauge",
                value: n(&self.checkpoint_bytes),
            },
            Sample {
                name: "vigil_correlator_watermark_seconds",
                help: "Event-time watermark.",
                kind: "gauge",
                value: self.watermark_ms.load(Ordering::Relaxed) as f64 / 1000.0,
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
