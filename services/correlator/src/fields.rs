//! The event fields rules may test and group by, by dotted path.

use vigil_proto::event::v1::SecurityEvent;

/// Paths a rule may name (besides `unmapped.<key>`).
pub const FIELDS: &[&str] = &[
    "class_uid",
    "category_uid",
    "activity_id",
    "type_uid",
    "severity_id",
    "status_id",
    "message",
    "metadata.product.name",
    "metadata.device",
    "actor.user.name",
    "actor.user.domain",
    "actor.process_name",
    "src_endpoint.ip",
    "src_endpoint.port",
    "src_endpoint.hostname",
    "dst_endpoint.ip",
    "dst_endpoint.port",
    "dst_endpoint.hostname",
];

/// Whether `path` names a field rules can use.
pub fn is_known(path: &str) -> bool {
    FIELDS.contains(&path)
        || path
            .strip_prefix("unmapped.")
            .is_some_and(|k| !k.is_empty())
}

/// The value of `path` in `event` as text, or `None` when it is absent or
/// empty (an absent field never matches and never forms a group key).
pub fn value(event: &SecurityEvent, path: &str) -> Option<String> {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let number = |n: i64| Some(n.to_string());
    match path {
        "class_uid" => number(event.class_uid.into()),
        "category_uid" => number(event.category_uid.into()),
        "activity_id" => number(event.activity_id.into()),
        "type_uid" => number(event.type_uid),
        "severity_id" => number(event.severity_id.into()),
        "status_id" => number(event.status_id.into()),
        "message" => non_empty(&event.message),
        "metadata.product.name" => event
            .metadata
            .as_ref()?
            .product
            .as_ref()
            .and_then(|p| non_empty(&p.name)),
        "metadata.device" => event.metadata.as_ref().and_then(|m| non_empty(&m.device)),
        "actor.user.name" => event
            .actor
            .as_ref()?
            .user
            .as_ref()
            .and_then(|u| non_empty(&u.name)),
        "actor.user.domain" => event
            .actor
            .as_ref()?
            .user
            .as_ref()
            .and_then(|u| non_empty(&u.domain)),
        "actor.process_name" => event
            .actor
            .as_ref()
            .and_then(|a| non_empty(&a.process_name)),
        "src_endpoint.ip" => event.src_endpoint.as_ref().and_then(|e| non_empty(&e.ip)),
        "src_endpoint.port" => event
            .src_endpoint
            .as_ref()
            .filter(|e| e.port > 0)
            .map(|e| e.port.to_string()),
        "src_endpoint.hostname" => event
            .src_endpoint
            .as_ref()
            .and_then(|e| non_empty(&e.hostname)),
        "dst_endpoint.ip" => event.dst_endpoint.as_ref().and_then(|e| non_empty(&e.ip)),
        "dst_endpoint.port" => event
            .dst_endpoint
            .as_ref()
            .filter(|e| e.port > 0)
            .map(|e| e.port.to_string()),
        "dst_endpoint.hostname" => event
            .dst_endpoint
            .as_ref()
            .and_then(|e| non_empty(&e.hostname)),
        other => other
            .strip_prefix("unmapped.")
            .and_then(|k| event.unmapped.get(k))
            .and_then(|v| non_empty(v)),
    }
}
