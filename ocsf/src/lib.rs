//! The OCSF schema vigil targets, compiled into the binary: the vendored
//! schema source in `schema/` is resolved by the build script (`extends`,
//! `$include`, dictionary types) into classes and objects, each attribute
//! with its type, requirement and whether it is an array. The gateway
//! validates events against it, the schema catalogue serves it, and the
//! tests check vigil's protobuf contracts against it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

/// The OCSF schema version vigil targets (events carry it in
/// `metadata.version`).
pub const VERSION: &str = env!("VIGIL_OCSF_VERSION");

/// The event classes vigil accepts from devices.
pub const SUPPORTED_CLASSES: [i32; 8] = [1001, 1007, 3002, 3003, 4001, 4002, 4003, 4007];

/// Detection Finding, the class of every finding the correlator emits.
pub const DETECTION_FINDING: i32 = 2004;

/// How much OCSF asks for an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Requirement {
    Required,
    Recommended,
    Optional,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Attribute {
    /// A scalar type (`string_t`, `port_t`, ...) or `object_t`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The object's name when `type_name` is `object_t`.
    #[serde(default)]
    pub object_type: Option<String>,
    pub requirement: Requirement,
    #[serde(default)]
    pub is_array: bool,
    /// Set when only this profile adds the attribute.
    #[serde(default)]
    pub profile: Option<String>,
    /// Enum ids and captions (`activity_id`, `severity_id`...).
    #[serde(default, rename = "enum")]
    pub values: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Constraints {
    /// At least one of these attributes must be present.
    #[serde(default)]
    pub at_least_one: Vec<String>,
    /// Exactly one of these attributes must be present.
    #[serde(default)]
    pub just_one: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Class {
    pub uid: i32,
    pub name: String,
    pub caption: String,
    pub category_uid: i32,
    pub category_name: String,
    /// Activity id → caption.
    pub activities: BTreeMap<String, String>,
    pub attributes: BTreeMap<String, Attribute>,
    #[serde(default)]
    pub constraints: Constraints,
}

impl Class {
    /// The caption of `activity_id`, if the class defines it.
    pub fn activity(&self, activity_id: i32) -> Option<&str> {
        self.activities
            .get(&activity_id.to_string())
            .map(String::as_str)
    }

    /// Attributes the class requires (profiles' excluded).
    pub fn required(&self) -> impl Iterator<Item = (&str, &Attribute)> {
        self.attributes
            .iter()
            .filter(|(_, a)| a.requirement == Requirement::Required && a.profile.is_none())
            .map(|(n, a)| (n.as_str(), a))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Object {
    pub attributes: BTreeMap<String, Attribute>,
    #[serde(default)]
    pub constraints: Constraints,
}

#[derive(Debug, Deserialize)]
pub struct Schema {
    pub version: String,
    /// Scalar type → the type it refines (`port_t` → `integer_t`).
    types: BTreeMap<String, serde_json::Value>,
    classes: BTreeMap<String, Class>,
    objects: BTreeMap<String, Object>,
}

impl Schema {
    pub fn class(&self, uid: i32) -> Option<&Class> {
        self.classes.get(&uid.to_string())
    }

    pub fn classes(&self) -> impl Iterator<Item = &Class> {
        self.classes.values()
    }

    pub fn object(&self, name: &str) -> Option<&Object> {
        self.objects.get(name)
    }

    /// The primitive a scalar type refines to: `integer_t`, `long_t`,
    /// `string_t`, `boolean_t`, `float_t` or `json_t`.
    pub fn base_type<'a>(&'a self, mut name: &'a str) -> &'a str {
        for _ in 0..8 {
            match self.types.get(name).and_then(|t| t.as_str()) {
                Some(parent) if parent != name => name = parent,
                _ => break,
            }
        }
        name
    }
}

/// The schema, parsed once on first use.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        match serde_json::from_str(include_str!(concat!(env!("OUT_DIR"), "/ocsf.json"))) {
            Ok(schema) => schema,
            // The build script wrote it from the vendored schema: a parse
            // failure is a build bug, caught by every test below.
            Err(e) => panic!("the compiled OCSF schema does not parse: {e}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_resolve_with_their_category_activities_and_requirements() {
        let s = schema();
        assert_eq!(s.version, VERSION);
        let auth = s.class(3002).map(|c| (c.name.as_str(), c.category_uid));
        assert_eq!(auth, Some(("authentication", 3)));
        for uid in SUPPORTED_CLASSES.iter().chain(&[DETECTION_FINDING]) {
            let class = s.class(*uid).unwrap_or_else(|| panic!("class {uid}"));
            assert_eq!(class.uid / 1000, class.category_uid, "{uid}");
            assert!(class.activity(1).is_some(), "{uid} has activity 1");
            let required: Vec<&str> = class.required().map(|(n, _)| n).collect();
            for base in [
                "class_uid",
                "category_uid",
                "activity_id",
                "type_uid",
                "severity_id",
                "time",
                "metadata",
            ] {
                assert!(
                    required.contains(&base),
                    "{uid} requires {base}: {required:?}"
                );
            }
        }
        let required = |uid| -> Vec<String> {
            s.class(uid)
                .map(|c| c.required().map(|(n, _)| n.to_owned()).collect())
                .unwrap_or_default()
        };
        assert!(required(3002).contains(&"user".to_owned()));
        assert!(required(1007).contains(&"process".to_owned()));
        assert!(required(1001).contains(&"file".to_owned()));
        assert_eq!(
            s.class(3002).map(|c| c.constraints.at_least_one.clone()),
            Some(vec!["service".to_owned(), "dst_endpoint".to_owned()])
        );
    }

    #[test]
    fn objects_and_types_resolve_through_extends() {
        let s = schema();
        let endpoint = s.object("network_endpoint").map(|o| &o.attributes);
        let ip = endpoint
            .and_then(|a| a.get("ip"))
            .map(|a| s.base_type(&a.type_name));
        assert_eq!(
            ip,
            Some("string_t"),
            "ip comes from the parent endpoint object"
        );
        let port = endpoint
            .and_then(|a| a.get("port"))
            .map(|a| s.base_type(&a.type_name));
        assert_eq!(port, Some("integer_t"));
        assert_eq!(s.base_type("timestamp_t"), "long_t");
        let metadata = s.object("metadata").map(|o| &o.attributes);
        assert!(metadata.and_then(|a| a.get("tenant_uid")).is_some());
        assert_eq!(
            metadata
                .and_then(|a| a.get("product"))
                .and_then(|a| a.object_type.as_deref()),
            Some("product")
        );
    }
}

/// The JSON Schema (draft 2020-12) of `class`: every attribute with its
/// type (enums of `*_id` attributes as their ids), the required ones, the
/// `at_least_one` and `just_one` constraints, and every object it refers
/// to, transitively, in `$defs`.
pub fn json_schema(class: &Class) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let schema = self::schema();
    let mut defs = Map::new();
    let mut pending: Vec<String> = Vec::new();

    fn attribute_schema(
        schema: &Schema,
        name: &str,
        attribute: &Attribute,
        pending: &mut Vec<String>,
    ) -> Value {
        let one = match attribute.object_type.as_deref() {
            Some("object") => json!({ "type": "object" }),
            Some(object) => {
                pending.push(object.to_owned());
                json!({ "$ref": format!("#/$defs/{object}") })
            }
            None => {
                let mut v = match schema.base_type(&attribute.type_name) {
                    "integer_t" | "long_t" => json!({ "type": "integer" }),
                    "boolean_t" => json!({ "type": "boolean" }),
                    "float_t" => json!({ "type": "number" }),
                    "json_t" => json!({}),
                    _ => json!({ "type": "string" }),
                };
                if name.ends_with("_id") && !attribute.values.is_empty() {
                    let ids: Vec<i64> = attribute
                        .values
                        .keys()
                        .filter_map(|k| k.parse().ok())
                        .collect();
                    v["enum"] = json!(ids);
                }
                v
            }
        };
        if attribute.is_array {
            json!({ "type": "array", "items": one })
        } else {
            one
        }
    }

    fn object_schema(
        schema: &Schema,
        attributes: &BTreeMap<String, Attribute>,
        constraints: &Constraints,
        pending: &mut Vec<String>,
    ) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("type".into(), json!("object"));
        let properties: Map<String, Value> = attributes
            .iter()
            .map(|(n, a)| (n.clone(), attribute_schema(schema, n, a, pending)))
            .collect();
        out.insert("properties".into(), Value::Object(properties));
        let required: Vec<&String> = attributes
            .iter()
            .filter(|(_, a)| a.requirement == Requirement::Required && a.profile.is_none())
            .map(|(n, _)| n)
            .collect();
        if !required.is_empty() {
            out.insert("required".into(), json!(required));
        }
        let mut all_of = Vec::new();
        if !constraints.at_least_one.is_empty() {
            let any: Vec<Value> = constraints
                .at_least_one
                .iter()
                .map(|a| json!({ "required": [a] }))
                .collect();
            all_of.push(json!({ "anyOf": any }));
        }
        if !constraints.just_one.is_empty() {
            let one: Vec<Value> = constraints
                .just_one
                .iter()
                .map(|a| json!({ "required": [a] }))
                .collect();
            all_of.push(json!({ "oneOf": one }));
        }
        if !all_of.is_empty() {
            out.insert("allOf".into(), json!(all_of));
        }
        out
    }

    let mut root = object_schema(schema, &class.attributes, &class.constraints, &mut pending);
    while let Some(name) = pending.pop() {
        if defs.contains_key(&name) {
            continue;
        }
        let Some(object) = schema.object(&name) else {
            defs.insert(name, json!({ "type": "object" }));
            continue;
        };
        let def = object_schema(
            schema,
            &object.attributes,
            &object.constraints,
            &mut pending,
        );
        defs.insert(name, Value::Object(def));
    }
    root.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    root.insert(
        "$id".into(),
        json!(format!(
            "https://schema.ocsf.io/schema/{}/classes/{}",
            schema.version, class.name
        )),
    );
    root.insert("title".into(), json!(class.caption));
    root.insert("$defs".into(), Value::Object(defs));
    Value::Object(root)
}

#[cfg(test)]
mod json_schema_tests {
    use super::*;

    #[test]
    fn a_class_schema_requires_what_the_class_requires_and_defines_its_objects() {
        let Some(auth) = schema().class(3002) else {
            panic!("3002")
        };
        let s = json_schema(auth);
        let required: Vec<&str> = s["required"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        assert!(
            required.contains(&"user") && required.contains(&"metadata"),
            "{required:?}"
        );
        assert_eq!(s["properties"]["user"]["$ref"], "#/$defs/user");
        assert_eq!(s["properties"]["time"]["type"], "integer");
        assert!(s["$defs"]["user"]["properties"]["name"].is_object());
        assert!(
            s["$defs"]["metadata"]["required"]
                .as_array()
                .is_some_and(|r| r.contains(&serde_json::json!("version")))
        );
        assert_eq!(s["allOf"][0]["anyOf"][0]["required"][0], "service");
        let ids = s["properties"]["activity_id"]["enum"]
            .as_array()
            .map(Vec::len);
        assert!(ids.is_some_and(|n| n >= 7), "{ids:?}");
    }
}
