//! What the correlator reports on `/metrics` (besides the consumer lag of
//! [`vigil_common::nats::watch_lag`]).

use prometheus::{Gauge, Histogram, IntCounter, IntCounterVec, IntGauge};
use vigil_common::metrics::{
    LATENCY_BUCKETS, Metrics, counter, counter_vec, gauge, histogram, int_gauge,
};

/// Counters and gauges of one correlator partition.
pub struct Counters {
    pub events: IntCounter,
    /// Finding versions published, by rule.
    pub findings: IntCounterVec,
    pub late_events: IntCounter,
    pub dropped_late_events: IntCounter,
    pub evicted_keys: IntCounter,
    /// Messages of slots this partition does not own.
    pub foreign: IntCounter,
    pub undecodable: IntCounter,
    /// Event-time watermark (the least of the slots'), in milliseconds.
    pub watermark_ms: IntGauge,
    watermark_seconds: Gauge,
    watermark_lag: Gauge,
    pub rule_reloads: IntCounter,
    pub rule_reload_failures: IntCounter,
    /// Size of the last checkpoint write (a delta, or a snapshot).
    pub checkpoint_bytes: IntGauge,
    /// Size of the last snapshots: the whole state, encoded.
    pub state_bytes: IntGauge,
    pub live_keys: IntGauge,
    /// Stream sequence the state covers.
    pub position: IntGauge,
    /// How long each commit (findings + checkpoint) took.
    pub commit_duration: Histogram,
    pub commit_failures: IntCounter,
    pub snapshots: IntCounter,
    pub seeks: IntCounter,
    /// Messages on EVENTS not yet delivered to this partition (at the last
    /// delivery).
    pub behind: IntGauge,
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

impl Counters {
    pub fn new() -> Self {
        Self {
            events: counter(
                "vigil_correlator_events_total",
                "Events absorbed by this partition.",
            ),
            findings: counter_vec(
                "vigil_correlator_findings_total",
                "Finding versions published, by rule.",
                &["rule"],
            ),
            late_events: counter(
                "vigil_correlator_late_events_total",
                "Events that arrived after their window closed (they amend its finding).",
            ),
            dropped_late_events: counter(
                "vigil_correlator_dropped_late_events_total",
                "Late events whose window was already forgotten.",
            ),
            evicted_keys: counter(
                "vigil_correlator_evicted_keys_total",
                "Keys without a finding forgotten, least recently active first, to stay within max_keys.",
            ),
            foreign: counter(
                "vigil_correlator_foreign_messages_total",
                "Messages of event slots this partition does not own (skipped).",
            ),
            undecodable: counter(
                "vigil_correlator_undecodable_messages_total",
                "Messages that were not an EventBatch.",
            ),
            watermark_ms: int_gauge(
                "vigil_correlator_watermark_milliseconds",
                "Event-time watermark, in milliseconds since the Unix epoch.",
            ),
            watermark_seconds: gauge(
                "vigil_correlator_watermark_seconds",
                "Event-time watermark (the least of the partition's tenants), since the Unix epoch.",
            ),
            watermark_lag: gauge(
                "vigil_correlator_watermark_lag_seconds",
                "Wall time minus the event-time watermark (0 before the first event).",
            ),
            rule_reloads: counter(
                "vigil_correlator_rule_reloads_total",
                "Rule files loaded on SIGHUP.",
            ),
            rule_reload_failures: counter(
                "vigil_correlator_rule_reload_failures_total",
                "Rule files refused on SIGHUP (the running rules stayed).",
            ),
            checkpoint_bytes: int_gauge(
                "vigil_correlator_checkpoint_bytes",
                "Size of the last checkpoint write to KV (a delta of the changed keys, or a snapshot).",
            ),
            state_bytes: int_gauge(
                "vigil_correlator_state_bytes",
                "Size of the engine state (window state) at the last snapshots of every slot.",
            ),
            live_keys: int_gauge(
                "vigil_correlator_live_keys",
                "Live (rule, tenant, group key) tracks in the engine.",
            ),
            position: int_gauge(
                "vigil_correlator_position",
                "EVENTS stream sequence the state covers.",
            ),
            commit_duration: histogram(
                "vigil_correlator_commit_duration_seconds",
                "Duration of a commit (findings published, checkpoint written).",
                LATENCY_BUCKETS,
            ),
            commit_failures: counter(
                "vigil_correlator_commit_failures_total",
                "Commit attempts that failed (each is retried).",
            ),
            snapshots: counter(
                "vigil_correlator_snapshots_total",
                "Whole-state snapshots written.",
            ),
            seeks: counter(
                "vigil_correlator_seeks_total",
                "Times the consumer was re-positioned at the checkpoint (start, missing delivery).",
            ),
            behind: int_gauge(
                "vigil_correlator_consumer_pending_messages",
                "Messages on EVENTS not yet delivered to this partition (at the last delivery).",
            ),
        }
    }

    /// Registers every metric; the watermark gauges are derived at scrape.
    pub fn register(self: &std::sync::Arc<Self>, metrics: &Metrics) {
        metrics.register(self.events.clone());
        metrics.register(self.findings.clone());
        metrics.register(self.late_events.clone());
        metrics.register(self.dropped_late_events.clone());
        metrics.register(self.evicted_keys.clone());
        metrics.register(self.foreign.clone());
        metrics.register(self.undecodable.clone());
        metrics.register(self.watermark_seconds.clone());
        metrics.register(self.watermark_lag.clone());
        metrics.register(self.rule_reloads.clone());
        metrics.register(self.rule_reload_failures.clone());
        metrics.register(self.checkpoint_bytes.clone());
        metrics.register(self.state_bytes.clone());
        metrics.register(self.live_keys.clone());
        metrics.register(self.position.clone());
        metrics.register(self.commit_duration.clone());
        metrics.register(self.commit_failures.clone());
        metrics.register(self.snapshots.clone());
        metrics.register(self.seeks.clone());
        metrics.register(self.behind.clone());
        let me = std::sync::Arc::downgrade(self);
        metrics.on_scrape(move || {
            let Some(c) = me.upgrade() else { return };
            let watermark = c.watermark_ms.get();
            c.watermark_seconds.set(watermark as f64 / 1000.0);
            c.watermark_lag.set(match watermark {
                0 => 0.0,
                w => vigil_common::now_millis().saturating_sub(w) as f64 / 1000.0,
            });
        });
    }

    /// Raises a counter to `total` (a sum the engine keeps, restored with
    /// its state).
    pub fn raise_to(counter: &IntCounter, total: u64) {
        let now = counter.get();
        if total > now {
            counter.inc_by(total - now);
        }
    }
}
