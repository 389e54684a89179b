//! What the writer reports on `/metrics` (besides the consumer lag and DLQ
//! depth of [`vigil_common::nats::watch_lag`]).

use prometheus::{Histogram, HistogramVec, IntCounterVec};
use vigil_common::metrics::{
    DELAY_BUCKETS, LATENCY_BUCKETS, Metrics, SIZE_BUCKETS, counter_vec, histogram, histogram_vec,
};

#[derive(Clone)]
pub struct WriterMetrics {
    /// Rows offered to Postgres by table and result (`inserted`, or
    /// `duplicate`: already stored, a redelivery).
    pub rows: IntCounterVec,
    /// Messages by stream and result (`committed`, `retried`: naked to be
    /// tried again, `dead_lettered`).
    pub messages: IntCounterVec,
    /// One insert transaction, by table and result (`ok`, `unavailable`,
    /// `refused`, `conflict`).
    pub insert_duration: HistogramVec,
    /// Rows per committed transaction, by table.
    pub batch_rows: HistogramVec,
    /// From the gateway's acceptance (`metadata.logged_time`) to the
    /// commit, per event.
    pub ingest_to_commit: Histogram,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WriterMetrics {
    pub fn new() -> Self {
        Self {
            rows: counter_vec(
                "vigil_writer_rows_total",
                "Rows offered to Postgres, by table and result (inserted; duplicate: already stored, a redelivery).",
                &["table", "result"],
            ),
            messages: counter_vec(
                "vigil_writer_messages_total",
                "JetStream messages handled, by stream and result (committed, retried, dead_lettered).",
                &["stream", "result"],
            ),
            insert_duration: histogram_vec(
                "vigil_writer_insert_duration_seconds",
                "Duration of one insert transaction, by table and result (ok, unavailable, refused, conflict).",
                &["table", "result"],
                LATENCY_BUCKETS,
            ),
            batch_rows: histogram_vec(
                "vigil_writer_batch_rows",
                "Rows per committed insert transaction, by table.",
                &["table"],
                SIZE_BUCKETS,
            ),
            ingest_to_commit: histogram(
                "vigil_writer_ingest_to_commit_seconds",
                "Per event, from its acceptance by the gateway (metadata.logged_time) to its commit in Postgres.",
                DELAY_BUCKETS,
            ),
        }
    }

    pub fn register(&self, metrics: &Metrics) {
        metrics.register(self.rows.clone());
        metrics.register(self.messages.clone());
        metrics.register(self.insert_duration.clone());
        metrics.register(self.batch_rows.clone());
        metrics.register(self.ingest_to_commit.clone());
    }
}
