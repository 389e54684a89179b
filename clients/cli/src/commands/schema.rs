//! `vigil schemas` and `vigil schema <class>`: the gateway's schema
//! catalogue, which says what the gateway accepts (any identity may ask).

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::json;
use vigil_client::TlsFiles;
use vigil_proto::schema::v1::schema_service_client::SchemaServiceClient;
use vigil_proto::schema::v1::{GetClassRequest, ListClassesRequest, Requirement};

use crate::Output;
use crate::exit::{Failure, code, status_failure};

async fn client(
    files: &TlsFiles,
    gateway: &str,
) -> Result<SchemaServiceClient<tonic::transport::Channel>, Failure> {
    Ok(SchemaServiceClient::new(
        vigil_client::connect(gateway, files).await?,
    ))
}

pub async fn list(files: &TlsFiles, gateway: &str, out: Output) -> Result<(), Failure> {
    let response = client(files, gateway)
        .await?
        .list_classes(ListClassesRequest {})
        .await
        .map_err(|s| status_failure("schemas", gateway, &files.cert, s))?
        .into_inner();
    match out {
        Output::Json | Output::Ocsf => {
            let classes: Vec<_> = response
                .classes
                .iter()
                .map(|c| json!({"uid": c.uid, "name": c.name, "caption": c.caption, "category_uid": c.category_uid, "category_name": c.category_name}))
                .collect();
            println!(
                "{:#}",
                json!({"ocsf_version": response.ocsf_version, "classes": classes})
            );
        }
        Output::Table => {
            let mut table = Table::new();
            table
                .load_preset(UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_header(["class_uid", "class", "name", "category"]);
            for c in &response.classes {
                table.add_row([
                    c.uid.to_string(),
                    c.caption.clone(),
                    c.name.clone(),
                    format!("{} ({})", c.category_name, c.category_uid),
                ]);
            }
            println!("{table}");
            eprintln!("OCSF {}", response.ocsf_version);
        }
    }
    Ok(())
}

pub async fn show(
    files: &TlsFiles,
    gateway: &str,
    out: Output,
    class: &str,
) -> Result<(), Failure> {
    let mut client = client(files, gateway).await?;
    let class_uid = match class.parse::<i32>() {
        Ok(uid) => uid,
        Err(_) => client
            .list_classes(ListClassesRequest {})
            .await
            .map_err(|s| status_failure("schema", gateway, &files.cert, s))?
            .into_inner()
            .classes
            .into_iter()
            .find(|c| c.name == class || c.caption.eq_ignore_ascii_case(class))
            .map(|c| c.uid)
            .ok_or_else(|| {
                Failure::new(
                    code::USAGE,
                    format!("schema: no class {class:?} (see `vigil schemas`)"),
                )
            })?,
    };
    let response = client
        .get_class(GetClassRequest { class_uid })
        .await
        .map_err(|s| status_failure("schema", gateway, &files.cert, s))?
        .into_inner();
    let requirement = |r: i32| match Requirement::try_from(r) {
        Ok(Requirement::Required) => "required",
        Ok(Requirement::Recommended) => "recommended",
        _ => "optional",
    };
    match out {
        Output::Json | Output::Ocsf => {
            let schema: serde_json::Value =
                serde_json::from_str(&response.json_schema).unwrap_or_default();
            let attributes: Vec<_> = response
                .attributes
                .iter()
                .map(|a| json!({"name": a.name, "type": a.r#type, "object_type": a.object_type, "requirement": requirement(a.requirement), "is_array": a.is_array, "profile": a.profile}))
                .collect();
            let activities: Vec<_> = response
                .activities
                .iter()
                .map(|a| json!({"id": a.id, "name": a.name}))
                .collect();
            println!(
                "{:#}",
                json!({
                    "ocsf_version": response.ocsf_version,
                    "class": response.class.as_ref().map(|c| json!({"uid": c.uid, "name": c.name, "caption": c.caption})),
                    "activities": activities,
                    "attributes": attributes,
                    "json_schema": schema,
                })
            );
        }
        Output::Table => {
            if let Some(c) = &response.class {
                println!(
                    "{} ({}), category {} ({}), OCSF {}",
                    c.caption, c.uid, c.category_name, c.category_uid, response.ocsf_version
                );
            }
            let activities: Vec<String> = response
                .activities
                .iter()
                .map(|a| format!("{} {}", a.id, a.name))
                .collect();
            println!("activities: {}", activities.join(", "));
            let mut table = Table::new();
            table
                .load_preset(UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_header(["attribute", "type", "requirement", "profile"]);
            let mut attributes = response.attributes.clone();
            attributes.sort_by_key(|a| (a.requirement, a.name.clone()));
            for a in &attributes {
                let ty = match (a.object_type.as_str(), a.is_array) {
                    ("", false) => a.r#type.clone(),
                    ("", true) => format!("{}[]", a.r#type),
                    (o, false) => o.to_owned(),
                    (o, true) => format!("{o}[]"),
                };
                table.add_row([
                    a.name.clone(),
                    ty,
                    requirement(a.requirement).to_owned(),
                    a.profile.clone(),
                ]);
            }
            println!("{table}");
        }
    }
    Ok(())
}
