//! Every NATS subject, stream and consumer name vigil uses, built here and
//! nowhere else. `nats-config/users.conf` grants each service exactly these.

/// The stream that holds accepted events (`events.>`).
pub const EVENTS_STREAM: &str = "EVENTS";
/// Subjects of [`EVENTS_STREAM`].
pub const EVENTS_WILDCARD: &str = "events.>";
/// The writer's durable pull consumer on [`EVENTS_STREAM`].
pub const WRITER_CONSUMER: &str = "writer";
/// The stream of findings (`findings.>`).
pub const FINDINGS_STREAM: &str = "FINDINGS";
/// Subjects of [`FINDINGS_STREAM`].
pub const FINDINGS_WILDCARD: &str = "findings.>";
/// The writer's durable consumer on [`FINDINGS_STREAM`] (same name as on
/// EVENTS: it is the writer's, on another stream).
pub const WRITER_FINDINGS_CONSUMER: &str = "writer";
/// The JetStream key-value bucket where correlators checkpoint their state.
pub const CORRELATOR_BUCKET: &str = "CORRELATOR";
/// Partitions `nats-config/users.conf` grants the correlator user.
pub const MAX_CORRELATOR_PARTITIONS: u32 = 4;

/// The dead-letter stream (`dlq.>`): messages a consumer gave up on.
pub const DLQ_STREAM: &str = "DLQ";
/// Subjects of [`DLQ_STREAM`].
pub const DLQ_WILDCARD: &str = "dlq.>";
/// The append-only stream of audit records (`audit.>`): no message can be
/// deleted and the stream cannot be purged.
pub const AUDIT_STREAM: &str = "AUDIT";
/// Subjects of [`AUDIT_STREAM`].
pub const AUDIT_WILDCARD: &str = "audit.>";
/// The writer's durable consumer on [`AUDIT_STREAM`].
pub const WRITER_AUDIT_CONSUMER: &str = "writer";

/// `audit.<service>`: where `service` records who asked it what.
pub fn audit_subject(service: &str) -> String {
    format!("audit.{service}")
}

/// Request/reply subject the reader answers `ListEvents` on.
pub const QUERY_EVENTS: &str = "query.events";
/// Queue group of the readers on [`QUERY_EVENTS`], so each request is
/// answered once however many readers run.
pub const QUERY_QUEUE_GROUP: &str = "reader";

/// Headers a dead-lettered message carries besides its original ones.
pub mod dlq_headers {
    /// Subject the message was originally published to (replay target).
    pub const SUBJECT: &str = "Vigil-Dlq-Subject";
    /// Why the consumer gave up.
    pub const REASON: &str = "Vigil-Dlq-Reason";
    /// Sequence of the message in its original stream.
    pub const STREAM_SEQUENCE: &str = "Vigil-Dlq-Stream-Sequence";
    pub const STREAM: &str = "Vigil-Dlq-Stream";
    pub const CONSUMER: &str = "Vigil-Dlq-Consumer";
    /// How many times it was delivered before it was dead-lettered.
    pub const DELIVERIES: &str = "Vigil-Dlq-Deliveries";
    /// Its original `Nats-Msg-Id`, if it had one.
    pub const ORIGINAL_MSG_ID: &str = "Vigil-Dlq-Original-Msg-Id";
}

/// `Content-Type` header of every protobuf payload vigil publishes.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";
/// Header naming the protobuf message type of the payload.
pub const MESSAGE_TYPE_HEADER: &str = "Vigil-Message-Type";
/// Header carrying an error reason on a NATS reply (NATS micro convention).
pub const SERVICE_ERROR_HEADER: &str = "Nats-Service-Error";
pub const SERVICE_ERROR_CODE_HEADER: &str = "Nats-Service-Error-Code";

/// Partition slots of EVENTS: nats-server.conf maps every
/// `events.<tenant>.<class>` to `events.<tenant>.<class>.<slot>`, the slot
/// a hash of the tenant (NATS's `partition(12,1)` subject mapping).
/// Correlator partition `n` of `N` consumes the slots with `slot % N == n`.
pub const EVENT_SLOTS: u32 = 12;

/// The filter of one slot's events: `events.*.*.<slot>`.
pub fn events_slot_filter(slot: u32) -> String {
    format!("events.*.*.{slot}")
}

/// The slot token of a stored event subject (`events.<t>.<c>.<slot>`).
pub fn slot_of_subject(subject: &str) -> Option<u32> {
    let mut tokens = subject.split('.');
    match (
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
    ) {
        (Some("events"), Some(_), Some(_), Some(slot), None) => {
            slot.parse().ok().filter(|s| *s < EVENT_SLOTS)
        }
        _ => None,
    }
}

/// The slots correlator partition `partition` of `partitions` owns.
pub fn correlator_slots(partition: u32, partitions: u32) -> Vec<u32> {
    (0..EVENT_SLOTS)
        .filter(|s| s % partitions.max(1) == partition)
        .collect()
}

/// `events.<tenant>.<class_uid>`: where the gateway publishes a batch of one
/// tenant's events of one class (stored with its slot appended, see
/// [`EVENT_SLOTS`]). `tenant` must be a valid identity name
/// ([`crate::identity::is_valid_name`]), which keeps it one subject token.
pub fn events_subject(tenant: &str, class_uid: i32) -> String {
    debug_assert!(crate::identity::is_valid_name(tenant));
    format!("events.{tenant}.{class_uid}")
}

/// `dlq.<stream>.<consumer>`: where `consumer` of `stream` dead-letters.
pub fn dlq_subject(stream: &str, consumer: &str) -> String {
    format!("dlq.{stream}.{consumer}")
}

/// `findings.<tenant>.<rule_id>`: where the correlator publishes.
pub fn findings_subject(tenant: &str, rule_id: &str) -> String {
    format!("findings.{tenant}.{rule_id}")
}

/// The durable consumer of correlator partition `partition` on EVENTS.
pub fn correlator_consumer(partition: u32) -> String {
    format!("correlator-{partition}")
}

/// The checkpoint key prefix of event slot `slot` (one per slot, so a
/// change in the number of partitions only changes who loads which).
pub fn correlator_checkpoint_key(slot: u32) -> String {
    format!("slot-{slot}")
}

/// The inbox prefix of a service's NATS user (`_INBOX_<service>`): replies
/// to its requests arrive there and only there.
pub fn inbox_prefix(service: &str) -> String {
    format!("_INBOX_{service}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_subject_has_three_tokens() {
        assert_eq!(events_subject("acme", 3002), "events.acme.3002");
    }

    #[test]
    fn a_stored_subject_names_its_slot_and_partitions_share_the_slots() {
        assert_eq!(slot_of_subject("events.acme.3002.7"), Some(7));
        assert_eq!(slot_of_subject("events.acme.3002"), None);
        assert_eq!(slot_of_subject("events.acme.3002.12"), None);
        assert_eq!(slot_of_subject("findings.acme.x.1"), None);
        for n in 1..=MAX_CORRELATOR_PARTITIONS {
            let mut all: Vec<u32> = (0..n).flat_map(|p| correlator_slots(p, n)).collect();
            all.sort();
            assert_eq!(all, (0..EVENT_SLOTS).collect::<Vec<_>>(), "{n} partitions");
            assert!((0..n).all(|p| correlator_slots(p, n).len() == (EVENT_SLOTS / n) as usize));
        }
    }
}
