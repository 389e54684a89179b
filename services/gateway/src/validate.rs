//! Validation of one event against the caller's identity and the limits.
//! Pure: no I/O, no clock (the caller passes `now`), so it is tested here
//! exhaustively and cheaply.

use std::collections::HashMap;
use std::time::Duration;

use prost::Message;
use vigil_proto::event::v1::SecurityEvent;
use vigil_proto::ingest::v1::RejectionCode;

/// Bounds on what one event may carry.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Events whose time is further ahead of the gateway's clock are refused.
    pub max_future_skew: Duration,
    /// Events older than this are refused.
    pub max_age: Duration,
    /// `message` in bytes.
    pub max_message_bytes: usize,
    /// Any other string field, in bytes.
    pub max_string_bytes: usize,
    pub max_unmapped_entries: usize,
    pub max_unmapped_key_bytes: usize,
    pub max_unmapped_value_bytes: usize,
    /// The whole encoded event.
    pub max_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_future_skew: Duration::from_secs(5 * 60),
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_message_bytes: 4096,
            max_string_bytes: 256,
            max_unmapped_entries: 64,
            max_unmapped_key_bytes: 128,
            max_unmapped_value_bytes: 1024,
            max_event_bytes: 16 * 1024,
        }
    }
}

/// The device an event must belong to: taken from its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub tenant: String,
    pub device: String,
}

/// Why an event was refused; `field` is a dotted path within the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: RejectionCode,
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        code: RejectionCode::InvalidArgument,
        field,
        reason: reason.into(),
    }
}

/// An event that passed validation, normalised: tenant, device and ingest
/// time set by the gateway; category and type uids filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedEvent {
    pub tenant: String,
    pub class_uid: i32,
    pub event: SecurityEvent,
}

const SEVERITIES: &[i32] = &[0, 1, 2, 3, 4, 5, 6, 99];
const STATUSES: &[i32] = &[0, 1, 2, 99];

/// Validates `event` sent by `device` at `now_ms`.
pub fn validate(
    mut event: SecurityEvent,
    device: &Device,
    now_ms: i64,
    limits: &Limits,
) -> Result<AcceptedEvent, Refusal> {
    // Identity first: an event claiming someone else is refused as such,
    // whatever else is wrong with it.
    if let Some(meta) = &event.metadata {
        if !meta.tenant.is_empty() && meta.tenant != device.tenant {
            return Err(Refusal {
                code: RejectionCode::PermissionDenied,
                field: "metadata.tenant",
                reason: format!(
                    "tenant {:?} is not the caller's tenant",
                    truncate(&meta.tenant)
                ),
            });
        }
        if !meta.device.is_empty() && meta.device != device.device {
            return Err(Refusal {
                code: RejectionCode::PermissionDenied,
                field: "metadata.device",
                reason: format!("device {:?} is not the caller", truncate(&meta.device)),
            });
        }
    }

    let size = event.encoded_len();
    if size > limits.max_event_bytes {
        return Err(invalid(
            "event",
            format!(
                "encoded size {size} exceeds {} bytes",
                limits.max_event_bytes
            ),
        ));
    }

    if event.event_id.is_empty() {
        return Err(invalid("event_id", "required"));
    }
    match uuid::Uuid::parse_str(&event.event_id) {
        Ok(id) if id.get_version_num() == 7 => {
            // Store the canonical (lowercase, hyphenated) form so the same
            // id always deduplicates.
            event.event_id = id.hyphenated().to_string();
        }
        Ok(_) => return Err(invalid("event_id", "must be a UUIDv7")),
        Err(_) => return Err(invalid("event_id", "not a UUID")),
    }

    if event.class_uid <= 0 {
        return Err(invalid("class_uid", "required"));
    }
    if !(1000..100_000).contains(&event.class_uid) {
        return Err(invalid(
            "class_uid",
            format!("{} is not an OCSF class uid", event.class_uid),
        ));
    }
    let category = event.class_uid / 1000;
    if event.category_uid == 0 {
        event.category_uid = category;
    } else if event.category_uid != category {
        return Err(invalid(
            "category_uid",
            format!(
                "{} does not match class_uid {} (expected {category})",
                event.category_uid, event.class_uid
            ),
        ));
    }
    if !(0..=99).contains(&event.activity_id) {
        return Err(invalid(
            "activity_id",
            format!("{} is out of range 0..=99", event.activity_id),
        ));
    }
    let type_uid = i64::from(event.class_uid) * 100 + i64::from(event.activity_id);
    if event.type_uid == 0 {
        event.type_uid = type_uid;
    } else if event.type_uid != type_uid {
        return Err(invalid(
            "type_uid",
            format!(
                "{} is not class_uid * 100 + activity_id ({type_uid})",
                event.type_uid
            ),
        ));
    }
    if !SEVERITIES.contains(&event.severity_id) {
        return Err(invalid(
            "severity_id",
            format!("{} is not an OCSF severity (0-6 or 99)", event.severity_id),
        ));
    }
    if !STATUSES.contains(&event.status_id) {
        return Err(invalid(
            "status_id",
            format!("{} is not an OCSF status (0, 1, 2 or 99)", event.status_id),
        ));
    }

    if event.time <= 0 {
        return Err(invalid("time", "required (epoch milliseconds)"));
    }
    let ahead = event.time.saturating_sub(now_ms);
    if ahead > millis(limits.max_future_skew) {
        return Err(invalid(
            "time",
            format!(
                "{}s ahead of the gateway clock (at most {}s)",
                ahead / 1000,
                limits.max_future_skew.as_secs()
            ),
        ));
    }
    let age = now_ms.saturating_sub(event.time);
    if age > millis(limits.max_age) {
        return Err(invalid(
            "time",
            format!(
                "{}s old (at most {}s)",
                age / 1000,
                limits.max_age.as_secs()
            ),
        ));
    }

    if event.message.len() > limits.max_message_bytes {
        return Err(invalid(
            "message",
            format!("longer than {} bytes", limits.max_message_bytes),
        ));
    }
    let Some(meta) = event.metadata.as_mut() else {
        return Err(invalid("metadata", "required"));
    };
    if meta.version.is_empty() {
        return Err(invalid(
            "metadata.version",
            "required (the OCSF schema version)",
        ));
    }
    match &meta.product {
        Some(p) if !p.name.is_empty() => {
            check_len("metadata.product.name", &p.name, limits)?;
            check_len("metadata.product.vendor_name", &p.vendor_name, limits)?;
            check_len("metadata.product.version", &p.version, limits)?;
        }
        _ => return Err(invalid("metadata.product.name", "required")),
    }
    check_len("metadata.version", &meta.version, limits)?;
    meta.tenant = device.tenant.clone();
    meta.device = device.device.clone();
    meta.ingest_time = now_ms;

    if let Some(actor) = &event.actor {
        check_len("actor.process_name", &actor.process_name, limits)?;
        if let Some(user) = &actor.user {
            check_len("actor.user.name", &user.name, limits)?;
            check_len("actor.user.uid", &user.uid, limits)?;
            check_len("actor.user.domain", &user.domain, limits)?;
        }
    }
    for (prefix, endpoint) in [
        ("src_endpoint", &event.src_endpoint),
        ("dst_endpoint", &event.dst_endpoint),
    ] {
        if let Some(ep) = endpoint {
            let (ip_field, port_field, host_field) = match prefix {
                "src_endpoint" => (
                    "src_endpoint.ip",
                    "src_endpoint.port",
                    "src_endpoint.hostname",
                ),
                _ => (
                    "dst_endpoint.ip",
                    "dst_endpoint.port",
                    "dst_endpoint.hostname",
                ),
            };
            if !ep.ip.is_empty() && ep.ip.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid(
                    ip_field,
                    format!("{:?} is not an IP address", truncate(&ep.ip)),
                ));
            }
            if ep.port > 65_535 {
                return Err(invalid(port_field, format!("{} is not a port", ep.port)));
            }
            check_len(host_field, &ep.hostname, limits)?;
        }
    }
    check_unmapped(&event.unmapped, limits)?;

    Ok(AcceptedEvent {
        tenant: device.tenant.clone(),
        class_uid: event.class_uid,
        event,
    })
}

fn check_len(field: &'static str, value: &str, limits: &Limits) -> Result<(), Refusal> {
    if value.len() > limits.max_string_bytes {
        return Err(invalid(
            field,
            format!("longer than {} bytes", limits.max_string_bytes),
        ));
    }
    Ok(())
}

fn check_unmapped(map: &HashMap<String, String>, limits: &Limits) -> Result<(), Refusal> {
    if map.len() > limits.max_unmapped_entries {
        return Err(invalid(
            "unmapped",
            format!("more than {} entries", limits.max_unmapped_entries),
        ));
    }
    for (k, v) in map {
        if k.is_empty() || k.len() > limits.max_unmapped_key_bytes {
            return Err(invalid(
                "unmapped",
                format!("keys must be 1 to {} bytes", limits.max_unmapped_key_bytes),
            ));
        }
        if v.len() > limits.max_unmapped_value_bytes {
            return Err(invalid(
                "unmapped",
                format!(
                    "value of {:?} longer than {} bytes",
                    truncate(k),
                    limits.max_unmapped_value_bytes
                ),
            ));
        }
    }
    Ok(())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Echoing attacker-controlled strings back is fine, but not at length.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::event::v1::{Metadata, NetworkEndpoint, Product, SeverityId, StatusId};

    const NOW: i64 = 1_790_000_000_000;

    fn device() -> Device {
        Device {
            tenant: "acme".into(),
            device: "cam-01".into(),
        }
    }

    fn good() -> SecurityEvent {
        SecurityEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            class_uid: 3002,
            activity_id: 1,
            severity_id: SeverityId::High as i32,
            status_id: StatusId::Failure as i32,
            time: NOW - 1000,
            message: "login failed".into(),
            metadata: Some(Metadata {
                version: "1.5.0".into(),
                product: Some(Product {
                    name: "sshd".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn refusal(event: SecurityEvent) -> Refusal {
        match validate(event, &device(), NOW, &Limits::default()) {
            Ok(_) => panic!("expected a refusal"),
            Err(r) => r,
        }
    }

    #[test]
    fn accepts_and_normalises_a_good_event() {
        let accepted = validate(good(), &device(), NOW, &Limits::default()).ok();
        let Some(accepted) = accepted else {
            panic!("refused")
        };
        assert_eq!(accepted.tenant, "acme");
        assert_eq!(accepted.event.category_uid, 3);
        assert_eq!(accepted.event.type_uid, 300_201);
        let meta = accepted.event.metadata.unwrap_or_default();
        assert_eq!(
            (meta.tenant.as_str(), meta.device.as_str(), meta.ingest_time),
            ("acme", "cam-01", NOW)
        );
    }

    #[test]
    fn names_the_field_of_each_problem() {
        type Mutation = Box<dyn Fn(&mut SecurityEvent)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("event_id", Box::new(|e| e.event_id.clear())),
            (
                "event_id",
                Box::new(|e| e.event_id = uuid::Uuid::new_v4().to_string()),
            ),
            ("class_uid", Box::new(|e| e.class_uid = 0)),
            ("category_uid", Box::new(|e| e.category_uid = 4)),
            ("type_uid", Box::new(|e| e.type_uid = 300_299)),
            ("severity_id", Box::new(|e| e.severity_id = 7)),
            ("status_id", Box::new(|e| e.status_id = 5)),
            ("time", Box::new(|e| e.time = NOW + 365 * 24 * 3600 * 1000)),
            ("time", Box::new(|e| e.time = NOW - 8 * 24 * 3600 * 1000)),
            ("time", Box::new(|e| e.time = 0)),
            ("message", Box::new(|e| e.message = "x".repeat(5000))),
            ("metadata", Box::new(|e| e.metadata = None)),
            (
                "metadata.version",
                Box::new(|e| {
                    if let Some(m) = e.metadata.as_mut() {
                        m.version.clear()
                    }
                }),
            ),
            (
                "metadata.product.name",
                Box::new(|e| {
                    if let Some(m) = e.metadata.as_mut() {
                        m.product = None
                    }
                }),
            ),
            (
                "src_endpoint.ip",
                Box::new(|e| {
                    e.src_endpoint = Some(NetworkEndpoint {
                        ip: "10.0.0.300".into(),
                        ..Default::default()
                    })
                }),
            ),
            (
                "dst_endpoint.port",
                Box::new(|e| {
                    e.dst_endpoint = Some(NetworkEndpoint {
                        port: 70_000,
                        ..Default::default()
                    })
                }),
            ),
            (
                "unmapped",
                Box::new(|e| {
                    e.unmapped.insert(String::new(), "v".into());
                }),
            ),
            (
                "event",
                Box::new(|e| {
                    for i in 0..40 {
                        e.unmapped.insert(format!("k{i}"), "v".repeat(1000));
                    }
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut event = good();
            mutate(&mut event);
            let r = refusal(event);
            assert_eq!(
                (r.field, r.code),
                (field, RejectionCode::InvalidArgument),
                "{}",
                r.reason
            );
        }
    }

    #[test]
    fn another_tenant_or_device_is_permission_denied() {
        for (tenant, device_name, field) in [
            ("globex", "", "metadata.tenant"),
            ("", "cam-02", "metadata.device"),
        ] {
            let mut event = good();
            if let Some(m) = event.metadata.as_mut() {
                m.tenant = tenant.into();
                m.device = device_name.into();
            }
            let r = refusal(event);
            assert_eq!((r.field, r.code), (field, RejectionCode::PermissionDenied));
        }
    }

    #[test]
    fn the_callers_own_tenant_and_device_may_be_stated() {
        let mut event = good();
        if let Some(m) = event.metadata.as_mut() {
            m.tenant = "acme".into();
            m.device = "cam-01".into();
        }
        assert!(validate(event, &device(), NOW, &Limits::default()).is_ok());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use prost::Message;

        fn mutated() -> impl Strategy<Value = SecurityEvent> {
            (
                any::<i32>(),
                any::<i32>(),
                prop_oneof![Just(0i32), 1..=6, Just(99), any::<i32>()],
                -10_000_000i64..10_000_000,
                "\\PC{0,300}",
                prop_oneof![Just(String::new()), Just("acme".to_owned()), "[a-z]{1,8}"],
                prop_oneof![
                    Just(String::new()),
                    Just("cam-01".to_owned()),
                    "[a-z0-9-]{1,8}"
                ],
                proptest::collection::btree_map("\\PC{0,200}", "\\PC{0,2000}", 0..80),
                "\\PC{0,400}",
            )
                .prop_map(
                    |(class, activity, severity, skew, message, tenant, dev, unmapped, user)| {
                        let mut e = good();
                        if class % 3 == 0 {
                            e.class_uid = class;
                        }
                        if activity % 3 == 0 {
                            e.activity_id = activity;
                        }
                        e.severity_id = severity;
                        e.time = NOW + skew * 100;
                        e.message = message;
                        let meta = e.metadata.get_or_insert_default();
                        meta.tenant = tenant;
                        meta.device = dev;
                        e.unmapped = unmapped.into_iter().collect();
                        e.actor = Some(vigil_proto::event::v1::Actor {
                            user: Some(vigil_proto::event::v1::User {
                                name: user,
                                ..Default::default()
                            }),
                            ..Default::default()
                        });
                        e
                    },
                )
        }

        proptest! {
            /// Whatever is sent, an accepted event belongs to the caller,
            /// carries the gateway's ingest time, is within every limit,
            /// and has consistent OCSF uids.
            #[test]
            fn accepted_events_keep_every_invariant(event in mutated()) {
                let limits = Limits::default();
                if let Ok(a) = validate(event, &device(), NOW, &limits) {
                    let meta = a.event.metadata.clone().unwrap_or_default();
                    prop_assert_eq!(&a.tenant, "acme");
                    prop_assert_eq!(meta.tenant.as_str(), "acme");
                    prop_assert_eq!(meta.device.as_str(), "cam-01");
                    prop_assert_eq!(meta.ingest_time, NOW);
                    prop_assert!(a.event.encoded_len() <= limits.max_event_bytes);
                    prop_assert!(a.event.message.len() <= limits.max_message_bytes);
                    prop_assert!(a.event.unmapped.len() <= limits.max_unmapped_entries);
                    prop_assert!(SEVERITIES.contains(&a.event.severity_id));
                    prop_assert_eq!(a.event.category_uid, a.event.class_uid / 1000);
                    prop_assert_eq!(
                        a.event.type_uid,
                        i64::from(a.event.class_uid) * 100 + i64::from(a.event.activity_id)
                    );
                    prop_assert!(a.event.time <= NOW + 5 * 60 * 1000);
                }
            }

            /// Claiming another tenant or device is always PERMISSION_DENIED,
            /// whatever else is wrong with the event.
            #[test]
            fn another_identity_is_always_permission_denied(
                event in mutated(),
                tenant in "[a-z]{1,8}",
            ) {
                prop_assume!(tenant != "acme");
                let mut event = event;
                event.metadata.get_or_insert_default().tenant = tenant;
                let refused = validate(event, &device(), NOW, &Limits::default());
                prop_assert!(matches!(refused, Err(r) if r.code == RejectionCode::PermissionDenied));
            }

            /// Arbitrary bytes either fail to decode or validate without
            /// panicking; a refusal always names a field.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
                if let Ok(event) = SecurityEvent::decode(bytes.as_slice())
                    && let Err(r) = validate(event, &device(), NOW, &Limits::default())
                {
                    prop_assert!(!r.field.is_empty());
                    prop_assert!(!r.reason.is_empty());
                }
            }
        }
    }
}
