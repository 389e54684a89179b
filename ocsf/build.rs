//! Resolves the vendored OCSF schema (`schema/`) into one JSON table that
//! the crate embeds: every event class with its category, activities,
//! attributes (type, requirement, array) after following `extends` and
//! `$include`, its constraints; every object likewise; the scalar types.
//! Attributes that only a profile adds are marked with the profile and are
//! optional.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

type Attrs = Map<String, Value>;

fn read(path: &Path) -> Result<Value, Box<dyn std::error::Error>> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            json_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

struct Schema {
    root: PathBuf,
    dictionary: Attrs,
    /// name -> file, for events and objects (to follow `extends`).
    events: BTreeMap<String, PathBuf>,
    objects: BTreeMap<String, PathBuf>,
}

impl Schema {
    /// The attributes a definition file declares, its includes and its
    /// parents', each merged over the dictionary entry.
    fn resolve(
        &self,
        path: &Path,
        objects: bool,
    ) -> Result<(Attrs, Map<String, Value>), Box<dyn std::error::Error>> {
        let def = read(path)?;
        let mut attrs = Attrs::new();
        let mut constraints = Map::new();
        if let Some(parent) = def.get("extends").and_then(Value::as_str) {
            let table = if objects { &self.objects } else { &self.events };
            if let Some(file) = table.get(parent).filter(|f| f.as_path() != path) {
                let (a, c) = self.resolve(file, objects)?;
                attrs = a;
                constraints = c;
            }
        }
        let own = def
            .get("attributes")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let includes: Vec<String> = match own.get("$include") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        for include in includes {
            let inc = read(&self.root.join(&include))?;
            let profile = include
                .strip_prefix("profiles/")
                .and_then(|p| p.strip_suffix(".json"));
            for (name, attr) in inc
                .get("attributes")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
            {
                if name == "$include" || attrs.contains_key(&name) {
                    continue;
                }
                let mut attr = attr.as_object().cloned().unwrap_or_default();
                if let Some(p) = profile {
                    attr.insert("profile".into(), json!(p));
                    attr.insert("requirement".into(), json!("optional"));
                }
                attrs.insert(name, Value::Object(attr));
            }
        }
        for (name, attr) in own {
            if name == "$include" {
                continue;
            }
            let mut merged = attrs
                .get(&name)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            // The class's own declaration is not a profile's.
            merged.remove("profile");
            for (k, v) in attr.as_object().cloned().unwrap_or_default() {
                // A class's enum extends its parent's (0 Unknown, 99 Other).
                if let (Some(Value::Object(old)), Value::Object(new)) = (merged.get(&k), &v)
                    && k == "enum"
                {
                    let mut union = old.clone();
                    union.extend(new.clone());
                    merged.insert(k, Value::Object(union));
                    continue;
                }
                merged.insert(k, v);
            }
            attrs.insert(name, Value::Object(merged));
        }
        if let Some(c) = def.get("constraints").and_then(Value::as_object) {
            for (k, v) in c {
                constraints.insert(k.clone(), v.clone());
            }
        }
        Ok((attrs, constraints))
    }

    /// Each attribute as `{type, object_type?, requirement, is_array, profile?, enum?}`.
    fn typed(&self, attrs: Attrs) -> Attrs {
        let mut out = Attrs::new();
        for (name, attr) in attrs {
            let dict = self
                .dictionary
                .get(&name)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let get = |k: &str| attr.get(k).or_else(|| dict.get(k)).cloned();
            let ty = get("type")
                .and_then(|t| t.as_str().map(str::to_owned))
                .unwrap_or_else(|| "string_t".into());
            let mut entry = Map::new();
            if ty.ends_with("_t") {
                entry.insert("type".into(), json!(ty));
            } else {
                entry.insert("type".into(), json!("object_t"));
                entry.insert("object_type".into(), json!(ty));
            }
            entry.insert(
                "requirement".into(),
                get("requirement").unwrap_or(json!("optional")),
            );
            entry.insert("is_array".into(), get("is_array").unwrap_or(json!(false)));
            if let Some(p) = attr.get("profile") {
                entry.insert("profile".into(), p.clone());
            }
            // A class's enum extends the dictionary's (0 Unknown, 99 Other).
            let mut values = dict
                .get("enum")
                .and_then(|e| e.as_object().cloned())
                .unwrap_or_default();
            if let Some(own) = attr.get("enum").and_then(|e| e.as_object()) {
                values.extend(own.clone());
            }
            if let Some(e) = (!values.is_empty()).then_some(values) {
                let ids: Map<String, Value> = e
                    .into_iter()
                    .map(|(id, v)| (id, v.get("caption").cloned().unwrap_or(json!(""))))
                    .collect();
                entry.insert("enum".into(), Value::Object(ids));
            }
            out.insert(name, Value::Object(entry));
        }
        out
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("schema");
    println!("cargo:rerun-if-changed={}", root.display());
    let dictionary = read(&root.join("dictionary.json"))?;
    let types: Map<String, Value> = dictionary["types"]["attributes"]
        .as_object()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|(name, t)| {
            let base = t.get("type").cloned().unwrap_or(json!(name.clone()));
            (name, base)
        })
        .collect();
    let categories = read(&root.join("categories.json"))?;
    let mut event_files = Vec::new();
    json_files(&root.join("events"), &mut event_files)?;
    let mut object_files = Vec::new();
    json_files(&root.join("objects"), &mut object_files)?;
    let name_of = |p: &PathBuf| -> Option<(String, PathBuf)> {
        let v = read(p).ok()?;
        Some((v.get("name")?.as_str()?.to_owned(), p.clone()))
    };
    let schema = Schema {
        root: root.clone(),
        dictionary: dictionary["attributes"]
            .as_object()
            .cloned()
            .unwrap_or_default(),
        events: event_files.iter().filter_map(name_of).collect(),
        objects: object_files.iter().filter_map(name_of).collect(),
    };
    let mut classes = Map::new();
    for file in &event_files {
        let def = read(file)?;
        let (Some(uid), Some(category)) = (
            def.get("uid").and_then(Value::as_i64),
            file.parent()
                .and_then(|d| d.file_name())
                .and_then(|n| n.to_str()),
        ) else {
            continue;
        };
        let Some(cat) = categories["attributes"].get(category) else {
            continue;
        };
        let Some(cat_uid) = cat.get("uid").and_then(Value::as_i64) else {
            continue;
        };
        // A category's own file is not a class.
        if def.get("name").and_then(Value::as_str) == Some(category) {
            continue;
        }
        let class_uid = cat_uid * 1000 + uid;
        let (attrs, constraints) = schema.resolve(file, false)?;
        let attributes = schema.typed(attrs);
        let activities = attributes
            .get("activity_id")
            .and_then(|a| a.get("enum"))
            .cloned()
            .unwrap_or(json!({}));
        classes.insert(
            class_uid.to_string(),
            json!({
                "uid": class_uid,
                "name": def["name"],
                "caption": def["caption"],
                "category_uid": cat_uid,
                "category_name": cat["caption"],
                "activities": activities,
                "attributes": attributes,
                "constraints": constraints,
            }),
        );
    }
    let mut objects = Map::new();
    for (name, file) in &schema.objects {
        let (attrs, constraints) = schema.resolve(file, true)?;
        objects.insert(
            name.clone(),
            json!({ "attributes": schema.typed(attrs), "constraints": constraints }),
        );
    }
    let version = read(&root.join("version.json"))?["version"].clone();
    println!(
        "cargo:rustc-env=VIGIL_OCSF_VERSION={}",
        version.as_str().unwrap_or("unknown")
    );
    let out = json!({ "version": version, "types": types, "classes": classes, "objects": objects });
    let path = PathBuf::from(std::env::var("OUT_DIR")?).join("ocsf.json");
    fs::write(path, serde_json::to_vec(&out)?)?;
    Ok(())
}
