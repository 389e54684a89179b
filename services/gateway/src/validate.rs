//! Validation of one event against the caller's identity, the limits and
//! the OCSF schema vigil compiles in (`vigil-ocsf`).
//! Pure: no I/O, no clock (the caller passes `now`), so it is tested here
//! exhaustively and cheaply.

use std::collections::HashMap;
use std::time::Duration;

use prost::Message;
use vigil_proto::event::v1::SecurityEvent;
use vigil_proto::ingest::v1::RejectionCode;

use crate::attributes::Node;

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
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Refusal {
    Refusal {
        code: RejectionCode::InvalidArgument,
        field: field.into(),
        reason: reason.into(),
    }
}

/// An event that passed validation, normalised: `metadata.tenant_uid`,
/// `device.uid` and `metadata.logged_time` set by the gateway; category and
/// type uids filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedEvent {
    pub tenant: String,
    pub class_uid: i32,
    pub event: SecurityEvent,
}

/// Validates `event` sent by `device` at `now_ms`: identity, limits, then
/// the OCSF schema (class, activity, type, enums, every required attribute
/// and constraint of the class and of each object it carries).
pub fn validate(
    mut event: SecurityEvent,
    device: &Device,
    now_ms: i64,
    limits: &Limits,
) -> Result<AcceptedEvent, Refusal> {
    // Identity first: an event claiming someone else is refused as such,
    // whatever else is wrong with it.
    if let Some(meta) = &event.metadata
        && !meta.tenant_uid.is_empty()
        && meta.tenant_uid != device.tenant
    {
        return Err(Refusal {
            code: RejectionCode::PermissionDenied,
            field: "metadata.tenant_uid".into(),
            reason: format!(
                "tenant {:?} is not the caller's tenant",
                truncate(&meta.tenant_uid)
            ),
        });
    }
    if let Some(d) = &event.device
        && !d.uid.is_empty()
        && d.uid != device.device
    {
        return Err(Refusal {
            code: RejectionCode::PermissionDenied,
            field: "device.uid".into(),
            reason: format!("device {:?} is not the caller", truncate(&d.uid)),
        });
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
    let Some(meta) = event.metadata.as_mut() else {
        return Err(invalid("metadata", "required by OCSF (every class)"));
    };
    if meta.uid.is_empty() {
        return Err(invalid("metadata.uid", "required (the event's UUIDv7)"));
    }
    match uuid::Uuid::parse_str(&meta.uid) {
        Ok(id) if id.get_version_num() == 7 => {
            // Store the canonical (lowercase, hyphenated) form so the same
            // id always deduplicates.
            meta.uid = id.hyphenated().to_string();
        }
        Ok(_) => return Err(invalid("metadata.uid", "must be a UUIDv7")),
        Err(_) => return Err(invalid("metadata.uid", "not a UUID")),
    }
    check_version(&meta.version)?;

    let class = check_classification(&mut event)?;
    check_time(event.time, now_ms, limits)?;
    if event.message.len() > limits.max_message_bytes {
        return Err(invalid(
            "message",
            format!("longer than {} bytes", limits.max_message_bytes),
        ));
    }
    for (field, endpoint) in [
        ("src_endpoint", &event.src_endpoint),
        ("dst_endpoint", &event.dst_endpoint),
    ] {
        if let Some(ep) = endpoint {
            if !ep.ip.is_empty() && ep.ip.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid(
                    format!("{field}.ip"),
                    format!("{:?} is not an IP address", truncate(&ep.ip)),
                ));
            }
            if !(0..=65_535).contains(&ep.port) {
                return Err(invalid(
                    format!("{field}.port"),
                    format!("{} is not a port", ep.port),
                ));
            }
        }
    }
    if event.observables.len() > limits.max_unmapped_entries {
        return Err(invalid(
            "observables",
            format!("more than {} observables", limits.max_unmapped_entries),
        ));
    }
    if event.privileges.len() > limits.max_unmapped_entries {
        return Err(invalid(
            "privileges",
            format!("more than {} privileges", limits.max_unmapped_entries),
        ));
    }
    check_unmapped(&event.unmapped, limits)?;

    // The gateway's own facts.
    let meta = event.metadata.get_or_insert_default();
    meta.tenant_uid = device.tenant.clone();
    meta.logged_time = now_ms;
    let d = event.device.get_or_insert_default();
    d.uid = device.device.clone();
    if d.name.is_empty() {
        d.name = device.device.clone();
    }

    // Device outside the System category comes with OCSF's host profile.
    if let Some(profile) = class
        .attributes
        .get("device")
        .and_then(|a| a.profile.clone())
    {
        let profiles = &mut event.metadata.get_or_insert_default().profiles;
        if !profiles.contains(&profile) {
            profiles.push(profile);
        }
    }
    let what = format!("OCSF {} ({})", class.caption, class.uid);
    check_attributes_belong(&event, class, &what)?;
    check_node(
        Node::Event(&event),
        &class.attributes,
        &class.constraints,
        "",
        &what,
        0,
        limits,
    )?;

    Ok(AcceptedEvent {
        tenant: device.tenant.clone(),
        class_uid: event.class_uid,
        event,
    })
}

/// `metadata.version` must be an OCSF version of the major version vigil
/// targets ([`vigil_ocsf::VERSION`]); OCSF keeps minor versions compatible.
fn check_version(version: &str) -> Result<(), Refusal> {
    let major = |v: &str| v.split('.').next().map(str::to_owned);
    if version.is_empty() {
        return Err(invalid(
            "metadata.version",
            format!(
                "required by OCSF (the schema version; vigil validates against {})",
                vigil_ocsf::VERSION
            ),
        ));
    }
    let numeric = version
        .split(['.', '-'])
        .take(2)
        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if !numeric || major(version) != major(vigil_ocsf::VERSION) || version.len() > 32 {
        return Err(invalid(
            "metadata.version",
            format!(
                "{:?} is not an OCSF {}.x version (vigil validates against {})",
                truncate(version),
                major(vigil_ocsf::VERSION).unwrap_or_default(),
                vigil_ocsf::VERSION
            ),
        ));
    }
    Ok(())
}

/// Class, category, activity, type and the enums, against the schema;
/// fills in `category_uid` and `type_uid` when they are 0.
fn check_classification(event: &mut SecurityEvent) -> Result<&'static vigil_ocsf::Class, Refusal> {
    if event.class_uid == 0 {
        return Err(invalid("class_uid", "required by OCSF (every class)"));
    }
    let class = vigil_ocsf::SUPPORTED_CLASSES
        .contains(&event.class_uid)
        .then(|| vigil_ocsf::schema().class(event.class_uid))
        .flatten()
        .ok_or_else(|| {
            invalid(
                "class_uid",
                format!(
                    "{} is not an OCSF class vigil accepts ({}; see `vigil schemas`)",
                    event.class_uid,
                    supported()
                ),
            )
        })?;
    if event.category_uid == 0 {
        event.category_uid = class.category_uid;
    } else if event.category_uid != class.category_uid {
        return Err(invalid(
            "category_uid",
            format!(
                "{} is not the category of {} (OCSF: {}, {})",
                event.category_uid, class.caption, class.category_uid, class.category_name
            ),
        ));
    }
    if class.activity(event.activity_id).is_none() {
        return Err(invalid(
            "activity_id",
            format!(
                "{} is not an activity of OCSF {} (it defines {})",
                event.activity_id,
                class.caption,
                ids(&class.activities)
            ),
        ));
    }
    let type_uid = i64::from(event.class_uid) * 100 + i64::from(event.activity_id);
    if event.type_uid == 0 {
        event.type_uid = type_uid;
    } else if event.type_uid != type_uid {
        return Err(invalid(
            "type_uid",
            format!(
                "{} is not class_uid * 100 + activity_id ({type_uid}, as OCSF defines it)",
                event.type_uid
            ),
        ));
    }
    for (field, value) in [
        ("severity_id", event.severity_id),
        ("status_id", event.status_id),
    ] {
        let values = class.attributes.get(field).map(|a| &a.values);
        if let Some(values) = values
            && !values.contains_key(&value.to_string())
        {
            return Err(invalid(
                field,
                format!(
                    "{value} is not an OCSF {field} (it defines {})",
                    ids(values)
                ),
            ));
        }
    }
    Ok(class)
}

fn supported() -> String {
    vigil_ocsf::SUPPORTED_CLASSES
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ids of an enum, numerically.
fn ids(values: &std::collections::BTreeMap<String, String>) -> String {
    let mut ids: Vec<i64> = values.keys().filter_map(|k| k.parse().ok()).collect();
    ids.sort_unstable();
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_time(time: i64, now_ms: i64, limits: &Limits) -> Result<(), Refusal> {
    if time <= 0 {
        return Err(invalid("time", "required by OCSF (epoch milliseconds)"));
    }
    let ahead = time.saturating_sub(now_ms);
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
    let age = now_ms.saturating_sub(time);
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
    Ok(())
}

/// The top-level attributes `SecurityEvent` can carry.
const EVENT_ATTRIBUTES: &[&str] = &[
    "message",
    "device",
    "actor",
    "user",
    "src_endpoint",
    "dst_endpoint",
    "process",
    "file",
    "query",
    "http_request",
    "service",
    "observables",
    "privileges",
    "status_detail",
    "unmapped",
];

/// Every attribute the event carries is one its class defines, and one
/// that only a profile adds is allowed only with that profile in
/// `metadata.profiles` (OCSF consumers refuse anything else).
fn check_attributes_belong(
    event: &SecurityEvent,
    class: &vigil_ocsf::Class,
    what: &str,
) -> Result<(), Refusal> {
    let node = Node::Event(event);
    let profiles = event
        .metadata
        .as_ref()
        .map(|m| m.profiles.as_slice())
        .unwrap_or_default();
    if profiles.len() > 16 {
        return Err(invalid("metadata.profiles", "at most 16 profiles"));
    }
    for (i, p) in profiles.iter().enumerate() {
        let known = class
            .attributes
            .values()
            .any(|a| a.profile.as_ref() == Some(p));
        if !known {
            return Err(invalid(
                format!("metadata.profiles[{i}]"),
                format!("{:?} is not an OCSF profile of {what}", truncate(p)),
            ));
        }
    }
    for name in EVENT_ATTRIBUTES {
        if !node.has(name) {
            continue;
        }
        match class.attributes.get(*name) {
            None => {
                return Err(invalid(*name, format!("not an attribute of {what}")));
            }
            Some(a) => {
                if let Some(p) = &a.profile
                    && !profiles.contains(p)
                {
                    return Err(invalid(
                        *name,
                        format!(
                            "an attribute of {what} only with the OCSF {p} profile; add {p:?} to metadata.profiles"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Whether OCSF types `attribute` as text (string_t and its refinements),
/// so only those are looked up for the length bound.
fn is_text(attribute: &vigil_ocsf::Attribute) -> bool {
    attribute.object_type.is_none()
        && !matches!(
            attribute.type_name.as_str(),
            "integer_t" | "long_t" | "timestamp_t" | "port_t" | "boolean_t" | "float_t" | "json_t"
        )
}

/// How deep objects nest before the check stops (a process's parent's
/// parent...).
const MAX_DEPTH: usize = 4;

/// Checks one node against its OCSF definition: every required attribute
/// present, every constraint met, then each object it carries against that
/// object's definition. `path` is the node's dotted path (`actor.user`).
fn check_node(
    node: Node<'_>,
    attributes: &std::collections::BTreeMap<String, vigil_ocsf::Attribute>,
    constraints: &vigil_ocsf::Constraints,
    path: &str,
    what: &str,
    depth: usize,
    limits: &Limits,
) -> Result<(), Refusal> {
    let too_long = || format!("longer than {} bytes", limits.max_string_bytes);
    let at = |name: &str| {
        if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    for (name, attribute) in attributes {
        if attribute.requirement == vigil_ocsf::Requirement::Required
            && attribute.profile.is_none()
            && !node.has(name)
        {
            return Err(invalid(at(name), format!("required by {what}")));
        }
        // Every string is bounded (`message` has its own, larger bound).
        if !is_text(attribute) {
            continue;
        }
        if attribute.is_array {
            for (i, text) in node.texts(name).iter().enumerate() {
                if text.len() > limits.max_string_bytes {
                    return Err(invalid(format!("{}[{i}]", at(name)), too_long()));
                }
            }
        } else if let Some(text) = node.text(name)
            && text.len() > limits.max_string_bytes
            && !(matches!(node, Node::Event(_)) && name == "message")
        {
            return Err(invalid(at(name), too_long()));
        }
    }
    if !constraints.at_least_one.is_empty() && !constraints.at_least_one.iter().any(|a| node.has(a))
    {
        let field = if path.is_empty() {
            constraints.at_least_one.join("|")
        } else {
            path.to_owned()
        };
        return Err(invalid(
            field,
            format!(
                "{what} needs at least one of {}",
                constraints.at_least_one.join(", ")
            ),
        ));
    }
    if depth >= MAX_DEPTH {
        return Ok(());
    }
    let schema = vigil_ocsf::schema();
    for (name, attribute) in attributes {
        let Some(object_name) = attribute.object_type.as_deref() else {
            continue;
        };
        let (child, children) = (node.child(name), node.children(name));
        if child.is_none() && children.is_empty() {
            continue;
        }
        let Some(object) = schema.object(object_name) else {
            continue;
        };
        // Spelled out only for an object the event carries.
        let label = format!("the OCSF {object_name} object");
        if let Some(child) = child {
            check_node(
                child,
                &object.attributes,
                &object.constraints,
                &at(name),
                &label,
                depth + 1,
                limits,
            )?;
        }
        for (i, child) in children.into_iter().enumerate() {
            let path = format!("{}[{i}]", at(name));
            check_node(
                child,
                &object.attributes,
                &object.constraints,
                &path,
                &label,
                depth + 1,
                limits,
            )?;
        }
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
    use vigil_proto::event::v1::{
        Metadata, NetworkEndpoint, Product, Service, SeverityId, StatusId, User,
    };

    const NOW: i64 = 1_790_000_000_000;

    fn device() -> Device {
        Device {
            tenant: "acme".into(),
            device: "cam-01".into(),
        }
    }

    fn good() -> SecurityEvent {
        SecurityEvent {
            class_uid: 3002,
            activity_id: 1,
            severity_id: SeverityId::High as i32,
            status_id: StatusId::Failure as i32,
            time: NOW - 1000,
            message: "login failed".into(),
            metadata: Some(Metadata {
                uid: uuid::Uuid::now_v7().to_string(),
                version: vigil_ocsf::VERSION.into(),
                product: Some(Product {
                    name: "sshd".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            user: Some(User {
                name: "alice".into(),
                ..Default::default()
            }),
            service: Some(Service {
                name: "sshd".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn meta(e: &mut SecurityEvent) -> &mut Metadata {
        e.metadata.get_or_insert_default()
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
        assert_eq!(
            (
                accepted.event.tenant_uid(),
                accepted.event.device_uid(),
                accepted.event.metadata.as_ref().map(|m| m.logged_time)
            ),
            ("acme", "cam-01", Some(NOW))
        );
    }

    #[test]
    fn names_the_field_of_each_problem() {
        type Mutation = Box<dyn Fn(&mut SecurityEvent)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("metadata.uid", Box::new(|e| meta(e).uid.clear())),
            (
                "metadata.uid",
                Box::new(|e| meta(e).uid = uuid::Uuid::new_v4().to_string()),
            ),
            (
                "metadata.version",
                Box::new(|e| meta(e).version = "2.0.0".into()),
            ),
            ("class_uid", Box::new(|e| e.class_uid = 0)),
            ("class_uid", Box::new(|e| e.class_uid = 9999)),
            ("activity_id", Box::new(|e| e.activity_id = 42)),
            ("user", Box::new(|e| e.user = None)),
            (
                "user.name",
                Box::new(|e| e.user.get_or_insert_default().name = "x".repeat(300)),
            ),
            (
                "metadata.profiles[0]",
                Box::new(|e| meta(e).profiles.push("x".repeat(300))),
            ),
            (
                "file",
                Box::new(|e| e.file = Some(vigil_proto::event::v1::File::default())),
            ),
            (
                "metadata.profiles[0]",
                Box::new(|e| meta(e).profiles.push("no-such-profile".into())),
            ),
            (
                "service|dst_endpoint",
                Box::new(|e| {
                    e.service = None;
                    e.dst_endpoint = None;
                }),
            ),
            ("user", Box::new(|e| e.user = Some(User::default()))),
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
                "metadata.product",
                Box::new(|e| {
                    if let Some(m) = e.metadata.as_mut() {
                        m.product = None
                    }
                }),
            ),
            (
                "metadata.product",
                Box::new(|e| {
                    if let Some(m) = e.metadata.as_mut() {
                        m.product = Some(Product::default())
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
                (r.field.as_str(), r.code),
                (field, RejectionCode::InvalidArgument),
                "{}",
                r.reason
            );
        }
    }

    /// A realistic event of every supported class passes; without each
    /// attribute its class requires, it is refused naming that attribute.
    #[test]
    fn every_supported_class_is_checked_against_its_required_attributes() {
        let mut rng = rand::rng();
        for kind in vigil_client::events::Kind::ALL {
            let event = vigil_client::events::sample(kind, &mut rng, NOW - 1000);
            let class = event.class_uid;
            let accepted = validate(event.clone(), &device(), NOW, &Limits::default());
            assert!(accepted.is_ok(), "{kind:?}: {:?}", accepted.err());
            let Some(schema) = vigil_ocsf::schema().class(class) else {
                panic!("class {class}")
            };
            for (name, attribute) in schema.required() {
                // Objects the device may leave out: the gateway sets device.
                if attribute.object_type.is_none() || name == "device" {
                    continue;
                }
                let mut without = event.clone();
                match name {
                    "metadata" => without.metadata = None,
                    "user" => without.user = None,
                    "actor" => without.actor = None,
                    "process" => without.process = None,
                    "file" => without.file = None,
                    other => {
                        panic!("class {class} requires {other}: give the test a way to drop it")
                    }
                }
                let r = refusal(without);
                assert_eq!(r.field, name, "{kind:?}: {}", r.reason);
                assert!(r.reason.contains("required by OCSF"), "{}", r.reason);
            }
        }
    }

    #[test]
    fn another_tenant_or_device_is_permission_denied() {
        for (tenant, device_name, field) in [
            ("globex", "", "metadata.tenant_uid"),
            ("", "cam-02", "device.uid"),
        ] {
            let mut event = good();
            meta(&mut event).tenant_uid = tenant.into();
            event.device.get_or_insert_default().uid = device_name.into();
            let r = refusal(event);
            assert_eq!(
                (r.field.as_str(), r.code),
                (field, RejectionCode::PermissionDenied)
            );
        }
    }

    #[test]
    fn the_callers_own_tenant_and_device_may_be_stated() {
        let mut event = good();
        meta(&mut event).tenant_uid = "acme".into();
        event.device.get_or_insert_default().uid = "cam-01".into();
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
                        e.metadata.get_or_insert_default().tenant_uid = tenant;
                        e.device.get_or_insert_default().uid = dev;
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
                    prop_assert_eq!(meta.tenant_uid.as_str(), "acme");
                    prop_assert_eq!(a.event.device_uid(), "cam-01");
                    prop_assert_eq!(meta.logged_time, NOW);
                    prop_assert!(a.event.encoded_len() <= limits.max_event_bytes);
                    prop_assert!(a.event.message.len() <= limits.max_message_bytes);
                    prop_assert!(a.event.unmapped.len() <= limits.max_unmapped_entries);
                    prop_assert!((0..=6).contains(&a.event.severity_id) || a.event.severity_id == 99);
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
                event.metadata.get_or_insert_default().tenant_uid = tenant;
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
