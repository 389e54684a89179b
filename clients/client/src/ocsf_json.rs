//! Events and findings as OCSF JSON, the form OCSF tools (SIEMs, data
//! lakes, `ocsf::cast`) consume: attribute names as OCSF spells them (the
//! protobuf field names are OCSF's), integers as JSON numbers (also the
//! 64-bit ones, which proto3 JSON would quote), enums as their ids, absent
//! attributes left out, and the `*_name` siblings OCSF defines next to
//! each id (`class_name`, `category_name`, `activity_name`, `type_name`,
//! `severity`, `status`) taken from the schema vigil compiles in.

use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::{Value, json};
use vigil_proto::event::v1::SecurityEvent;
use vigil_proto::finding::v1::Finding;

fn pool() -> Option<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(vigil_proto::FILE_DESCRIPTOR_SET).ok())
        .as_ref()
}

/// `message` (of protobuf type `name`) as JSON with OCSF's conventions.
fn to_json(name: &str, encoded: &[u8]) -> Value {
    let Some(descriptor) = pool().and_then(|p| p.get_message_by_name(name)) else {
        return Value::Null;
    };
    let Ok(message) = DynamicMessage::decode(descriptor, encoded) else {
        return Value::Null;
    };
    let options = SerializeOptions::new()
        .stringify_64_bit_integers(false)
        .use_enum_numbers(true)
        .use_proto_field_name(true)
        .skip_default_fields(true);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .unwrap_or(Value::Null)
}

/// Adds the OCSF `*_name` siblings of the classification ids.
fn add_names(
    value: &mut Value,
    class_uid: i32,
    activity_id: i32,
    severity_id: i32,
    status_id: i32,
) {
    let Value::Object(map) = value else { return };
    let class = vigil_ocsf::schema().class(class_uid);
    let caption = |attribute: &str, id: i32| -> Option<String> {
        class?
            .attributes
            .get(attribute)?
            .values
            .get(&id.to_string())
            .cloned()
    };
    let mut put = |key: &str, v: Option<String>| {
        if let Some(v) = v {
            map.insert(key.to_owned(), Value::String(v));
        }
    };
    put("class_name", class.map(|c| c.caption.clone()));
    put("category_name", class.map(|c| c.category_name.clone()));
    let activity = caption("activity_id", activity_id);
    put(
        "type_name",
        class
            .zip(activity.as_ref())
            .map(|(c, a)| format!("{}: {a}", c.caption)),
    );
    put("activity_name", activity);
    put("severity", caption("severity_id", severity_id));
    put("status", caption("status_id", status_id));
    // The ids OCSF requires even when they are 0 (Unknown).
    for (key, id) in [
        ("activity_id", activity_id),
        ("severity_id", severity_id),
        ("status_id", status_id),
    ] {
        map.entry(key).or_insert(json!(id));
    }
}

/// An event as OCSF JSON.
pub fn event(e: &SecurityEvent) -> Value {
    let mut value = to_json("vigil.event.v1.SecurityEvent", &e.encode_to_vec());
    add_names(
        &mut value,
        e.class_uid,
        e.activity_id,
        e.severity_id,
        e.status_id,
    );
    value
}

/// A finding as OCSF JSON (a Detection Finding).
pub fn finding(f: &Finding) -> Value {
    let mut value = to_json("vigil.finding.v1.Finding", &f.encode_to_vec());
    add_names(
        &mut value,
        f.class_uid,
        f.activity_id,
        f.severity_id,
        f.status_id,
    );
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_stay_numbers_and_names_sit_beside_ids() {
        let mut rng = rand::rng();
        let mut e = crate::events::sample(
            crate::events::Kind::LoginFailure,
            &mut rng,
            1_790_000_000_000,
        );
        e.type_uid = 300_201;
        e.category_uid = 3;
        let v = event(&e);
        assert_eq!(v["class_uid"], 3002);
        assert_eq!(v["type_uid"], 300_201, "int64 is a number, not a string");
        assert_eq!(v["time"], 1_790_000_000_000i64);
        assert_eq!(v["class_name"], "Authentication");
        assert_eq!(v["activity_name"], "Logon");
        assert_eq!(v["type_name"], "Authentication: Logon");
        assert_eq!(v["status_id"], 2);
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["metadata"]["uid"], e.uid());
        assert!(v["user"]["name"].is_string());
        assert!(v.get("file").is_none(), "absent attributes are left out");
        assert!(v.get("unmapped").is_none());
    }
}
