//! The event fields rules may test and group by, by dotted path.

use vigil_proto::event::v1::{NetworkEndpoint, SecurityEvent, User};

/// Paths a rule may name (besides `unmapped.<key>`): OCSF attribute paths.
pub const FIELDS: &[&str] = &[
    "class_uid",
    "category_uid",
    "activity_id",
    "type_uid",
    "severity_id",
    "status_id",
    "message",
    "metadata.product.name",
    "device.uid",
    "device.hostname",
    "device.ip",
    "user.name",
    "user.uid",
    "user.domain",
    "actor.user.name",
    "actor.user.uid",
    "actor.user.domain",
    "actor.process.name",
    "process.name",
    "process.cmd_line",
    "process.file.path",
    "file.name",
    "file.path",
    "query.hostname",
    "http_request.url.hostname",
    "service.name",
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

/// A field's value as read from an event, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Text(&'a str),
    Number(i64),
}

impl Value<'_> {
    /// Whether it equals a rule's value (written as text).
    pub fn equals(self, want: &str) -> bool {
        match self {
            Value::Text(s) => s == want,
            Value::Number(n) => want.parse::<i64>() == Ok(n),
        }
    }

    /// Feeds its text to `f` without allocating for text values.
    pub fn with_text<R>(self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            Value::Text(s) => f(s),
            Value::Number(n) => f(&n.to_string()),
        }
    }
}

impl std::fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Text(s) => f.write_str(s),
            Value::Number(n) => write!(f, "{n}"),
        }
    }
}

/// The value of `path` in `event` as text, or `None` when it is absent or
/// empty (an absent field never matches and never forms a group key).
pub fn value(event: &SecurityEvent, path: &str) -> Option<String> {
    get(event, path).map(|v| v.to_string())
}

/// The value of `path` in `event`, borrowed (see [`value`]).
pub fn get<'a>(event: &'a SecurityEvent, path: &str) -> Option<Value<'a>> {
    let text = |s: &'a str| (!s.is_empty()).then_some(Value::Text(s));
    let number = |n: i64| Some(Value::Number(n));
    let port = |p: i32| (p > 0).then_some(Value::Number(p.into()));
    let user = |u: Option<&'a User>, field: &str| {
        let u = u?;
        text(match field {
            "name" => &u.name,
            "uid" => &u.uid,
            _ => &u.domain,
        })
    };
    let endpoint = |e: Option<&'a NetworkEndpoint>, field: &str| {
        let e = e?;
        match field {
            "ip" => text(&e.ip),
            "port" => port(e.port),
            _ => text(&e.hostname),
        }
    };
    let actor = event.actor.as_ref();
    match path {
        "class_uid" => number(event.class_uid.into()),
        "category_uid" => number(event.category_uid.into()),
        "activity_id" => number(event.activity_id.into()),
        "type_uid" => number(event.type_uid),
        "severity_id" => number(event.severity_id.into()),
        "status_id" => number(event.status_id.into()),
        "message" => text(&event.message),
        "metadata.product.name" => text(&event.metadata.as_ref()?.product.as_ref()?.name),
        "device.uid" => text(&event.device.as_ref()?.uid),
        "device.hostname" => text(&event.device.as_ref()?.hostname),
        "device.ip" => text(&event.device.as_ref()?.ip),
        "user.name" | "user.uid" | "user.domain" => user(event.user.as_ref(), &path[5..]),
        "actor.user.name" | "actor.user.uid" | "actor.user.domain" => {
            user(actor?.user.as_ref(), &path[11..])
        }
        "actor.process.name" => text(&actor?.process.as_ref()?.name),
        "process.name" => text(&event.process.as_ref()?.name),
        "process.cmd_line" => text(&event.process.as_ref()?.cmd_line),
        "process.file.path" => text(&event.process.as_ref()?.file.as_ref()?.path),
        "file.name" => text(&event.file.as_ref()?.name),
        "file.path" => text(&event.file.as_ref()?.path),
        "query.hostname" => text(&event.query.as_ref()?.hostname),
        "http_request.url.hostname" => text(&event.http_request.as_ref()?.url.as_ref()?.hostname),
        "service.name" => text(&event.service.as_ref()?.name),
        "src_endpoint.ip" | "src_endpoint.port" | "src_endpoint.hostname" => {
            endpoint(event.src_endpoint.as_ref(), &path[13..])
        }
        "dst_endpoint.ip" | "dst_endpoint.port" | "dst_endpoint.hostname" => {
            endpoint(event.dst_endpoint.as_ref(), &path[13..])
        }
        other => other
            .strip_prefix("unmapped.")
            .and_then(|k| event.unmapped.get(k))
            .and_then(|v| text(v.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_path_is_read_from_a_sample_that_has_it() {
        let mut rng = rand::rng();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            for kind in vigil_client::events::Kind::ALL {
                let mut e = vigil_client::events::sample(kind, &mut rng, 1_790_000_000_000);
                e.device.get_or_insert_default().uid = "cam-01".into();
                for path in FIELDS {
                    if value(&e, path).is_some() {
                        seen.insert(*path);
                    }
                }
            }
        }
        let never: Vec<_> = FIELDS.iter().filter(|p| !seen.contains(*p)).collect();
        // Paths the simulated fleet never fills (a device may).
        let allowed: &[&str] = &[
            "user.uid",
            "user.domain",
            "actor.user.uid",
            "actor.user.domain",
            "device.ip",
            "dst_endpoint.hostname",
            "src_endpoint.hostname",
        ];
        assert!(
            never.iter().all(|p| allowed.contains(*p)),
            "never read: {never:?}"
        );
    }

    #[test]
    fn every_listed_path_is_an_ocsf_attribute_path() {
        let schema = vigil_ocsf::schema();
        for path in FIELDS {
            let mut parts = path.split('.');
            let first = parts.next().unwrap_or_default();
            let class_has = |c: &vigil_ocsf::Class| c.attributes.get(first).cloned();
            let mut attribute = vigil_ocsf::SUPPORTED_CLASSES
                .iter()
                .filter_map(|uid| schema.class(*uid))
                .find_map(class_has);
            for part in parts {
                let object = attribute
                    .as_ref()
                    .and_then(|a| a.object_type.as_deref())
                    .and_then(|o| schema.object(o));
                attribute = object.and_then(|o| o.attributes.get(part).cloned());
            }
            assert!(attribute.is_some(), "{path} is not an OCSF attribute path");
        }
    }
}
