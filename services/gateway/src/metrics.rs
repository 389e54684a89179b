//! What the gateway reports on `/metrics` (besides the calls and TLS of
//! every edge server, [`vigil_common::grpc_metrics`]).

use prometheus::{Histogram, HistogramVec, IntCounterVec};
use vigil_common::metrics::{
    LATENCY_BUCKETS, LastMinute, Metrics, SIZE_BUCKETS, counter_vec, histogram, histogram_vec,
};

#[derive(Clone)]
pub struct GatewayMetrics {
    /// Events by result (`accepted`, `duplicate`: the same id twice in one
    /// request, `rejected`, `unavailable`: valid but not made durable) and,
    /// for `rejected`, the rejection code (the field is in the answer and
    /// the log, not a label: its values are not bounded).
    pub events: IntCounterVec,
    /// Events per request.
    pub batch_events: Histogram,
    /// One request's JetStream publishes, from the first send to the last
    /// ack, by result (`ok`, `unavailable`, `store_full`).
    pub publish_duration: HistogramVec,
    /// EventBatch messages published and acknowledged.
    pub published_messages: IntCounterVec,
    /// Events accepted over the last minute (what `vigil status` shows).
    pub accepted_last_minute: std::sync::Arc<LastMinute>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    pub fn new() -> Self {
        Self {
            events: counter_vec(
                "vigil_gateway_events_total",
                "Events received, by result (accepted; duplicate: the same id twice in one request; rejected, with the rejection code as reason; unavailable: valid but not made durable, the device retries).",
                &["result", "reason"],
            ),
            batch_events: histogram(
                "vigil_gateway_batch_events",
                "Events per publish request.",
                SIZE_BUCKETS,
            ),
            publish_duration: histogram_vec(
                "vigil_gateway_publish_duration_seconds",
                "JetStream publishes of one request, from the first send to the last acknowledgement, by result (ok, unavailable, store_full).",
                &["result"],
                LATENCY_BUCKETS,
            ),
            published_messages: counter_vec(
                "vigil_gateway_published_messages_total",
                "EventBatch messages published to JetStream, by result (ok, failed).",
                &["result"],
            ),
            accepted_last_minute: Default::default(),
        }
    }

    pub fn register(&self, metrics: &Metrics) {
        metrics.register(self.events.clone());
        metrics.register(self.batch_events.clone());
        metrics.register(self.publish_duration.clone());
        metrics.register(self.published_messages.clone());
        let last_minute = vigil_common::metrics::gauge(
            "vigil_gateway_accepted_events_last_minute",
            "Events accepted in the last 60 seconds.",
        );
        metrics.register(last_minute.clone());
        let window = self.accepted_last_minute.clone();
        metrics.on_scrape(move || last_minute.set(window.sum() as f64));
    }
}
