//! vigil's protobuf contracts are OCSF: every field of the event (and of
//! every message it nests) is an OCSF attribute of that name, with the
//! OCSF type (integer_t as int32 or an enum, long_t and timestamp_t as
//! int64, string types as string, boolean_t as bool, objects as messages,
//! arrays as repeated). Walks the compiled descriptors, so a field added or
//! changed in a `.proto` that OCSF does not have fails here.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use vigil_ocsf::{Attribute, SUPPORTED_CLASSES, schema};

fn pool() -> DescriptorPool {
    match DescriptorPool::decode(vigil_proto::FILE_DESCRIPTOR_SET) {
        Ok(pool) => pool,
        Err(e) => panic!("descriptor set: {e}"),
    }
}

/// Why `field` does not carry `attribute`, if it does not.
fn mismatch(field: &FieldDescriptor, attribute: &Attribute) -> Option<String> {
    if field.is_map() {
        return (attribute.object_type.as_deref() != Some("object"))
            .then(|| "a map stands only for OCSF's free-form `object`".to_owned());
    }
    if field.is_list() != attribute.is_array {
        return Some(format!(
            "OCSF says is_array={}, the field is {}",
            attribute.is_array,
            if field.is_list() {
                "repeated"
            } else {
                "singular"
            }
        ));
    }
    let base = schema().base_type(&attribute.type_name);
    let ok = matches!(
        (field.kind(), base),
        (Kind::Message(_), "object_t")
            | (Kind::Int32 | Kind::Enum(_), "integer_t")
            | (Kind::Int64, "long_t")
            | (Kind::String, "string_t")
            | (Kind::Bool, "boolean_t")
            | (Kind::Double | Kind::Float, "float_t")
    );
    (!ok).then(|| {
        format!(
            "OCSF type {} ({base}), field kind {:?}",
            attribute.type_name,
            field.kind()
        )
    })
}

/// Checks every field of `message` against `attributes` (the OCSF class or
/// object it stands for).
fn walk(
    message: &MessageDescriptor,
    attributes: &BTreeMap<String, Attribute>,
    path: &str,
    seen: &mut BTreeSet<(String, String)>,
    problems: &mut Vec<String>,
) {
    for field in message.fields() {
        let at = format!("{path}.{}", field.name());
        match attributes.get(field.name()) {
            Some(attribute) => check_field(&field, attribute, &at, seen, problems),
            None => problems.push(format!("{at}: not an OCSF attribute here")),
        }
    }
}

/// Checks one field against its attribute, and a nested message against
/// the attribute's object.
fn check_field(
    field: &FieldDescriptor,
    attribute: &Attribute,
    at: &str,
    seen: &mut BTreeSet<(String, String)>,
    problems: &mut Vec<String>,
) {
    if let Some(why) = mismatch(field, attribute) {
        problems.push(format!("{at}: {why}"));
        return;
    }
    let (Kind::Message(nested), Some(object)) = (field.kind(), attribute.object_type.as_deref())
    else {
        return;
    };
    if field.is_map() || !seen.insert((nested.full_name().to_owned(), object.to_owned())) {
        return;
    }
    match schema().object(object) {
        Some(o) => walk(&nested, &o.attributes, at, seen, problems),
        None => problems.push(format!("{at}: OCSF object {object} is unknown")),
    }
}

#[test]
fn every_event_field_is_the_ocsf_attribute_of_its_name_and_type() {
    let pool = pool();
    let Some(event) = pool.get_message_by_name("vigil.event.v1.SecurityEvent") else {
        panic!("no SecurityEvent")
    };
    // A field must be an attribute of at least one class vigil accepts, of
    // the same type in each class that has it.
    let mut problems = Vec::new();
    for field in event.fields() {
        let mut classes = 0;
        for class in SUPPORTED_CLASSES
            .iter()
            .filter_map(|uid| schema().class(*uid))
        {
            if let Some(attribute) = class.attributes.get(field.name()) {
                classes += 1;
                let at = format!("{} SecurityEvent.{}", class.uid, field.name());
                check_field(&field, attribute, &at, &mut BTreeSet::new(), &mut problems);
            }
        }
        if classes == 0 {
            problems.push(format!(
                "SecurityEvent.{}: no supported class has this attribute",
                field.name()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_field_ocsf_does_not_have_is_caught() {
    // The check itself: a message whose field is no attribute fails.
    let pool = pool();
    let Some(batch) = pool.get_message_by_name("vigil.event.v1.EventBatch") else {
        panic!("no EventBatch")
    };
    let user = schema()
        .object("user")
        .map(|o| o.attributes.clone())
        .unwrap_or_default();
    let mut problems = Vec::new();
    walk(
        &batch,
        &user,
        "EventBatch",
        &mut BTreeSet::new(),
        &mut problems,
    );
    assert_eq!(problems, ["EventBatch.events: not an OCSF attribute here"]);
}

#[test]
fn every_finding_field_is_the_detection_finding_attribute_of_its_name_and_type() {
    let pool = pool();
    let Some(finding) = pool.get_message_by_name("vigil.finding.v1.Finding") else {
        panic!("no Finding")
    };
    let Some(class) = schema().class(vigil_ocsf::DETECTION_FINDING) else {
        panic!("no Detection Finding")
    };
    let mut problems = Vec::new();
    walk(
        &finding,
        &class.attributes,
        "Finding",
        &mut BTreeSet::new(),
        &mut problems,
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
