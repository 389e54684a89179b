//! A finding as it leaves the correlator: an OCSF Detection Finding on
//! `findings.<tenant>.<rule>`.

use vigil_proto::event::v1::{Metadata, Observable, Product};
use vigil_proto::finding::v1::{
    Analytic, Attack, Finding as FindingPb, FindingInfo, RelatedEvent, Technique,
};

use crate::engine::Finding;

/// OCSF class of every finding.
pub const DETECTION_FINDING: i32 = vigil_ocsf::DETECTION_FINDING;

/// OCSF analytic type_id 1: Rule.
const ANALYTIC_RULE: i32 = 1;
/// OCSF finding status_id 1: New.
const STATUS_NEW: i32 = 1;

/// The OCSF observable type of a group-by field (2 IP Address, 4 User
/// Name, 1 Hostname, 7 File Name, 9 Process Name, 99 Other).
fn observable_type(path: &str) -> i32 {
    match path.rsplit('.').next().unwrap_or_default() {
        "ip" => 2,
        "name" if path.contains("user") => 4,
        "hostname" => 1,
        "name" if path.starts_with("file") => 7,
        "name" if path.contains("process") => 9,
        _ => 99,
    }
}

pub fn to_proto(f: &Finding) -> FindingPb {
    let key = f
        .group_key
        .iter()
        .map(|(field, value)| format!("{field}={value}"))
        .collect::<Vec<_>>()
        .join(", ");
    let now = vigil_common::now_millis();
    FindingPb {
        class_uid: DETECTION_FINDING,
        category_uid: DETECTION_FINDING / 1000,
        activity_id: f.activity_id,
        type_uid: i64::from(DETECTION_FINDING) * 100 + i64::from(f.activity_id),
        severity_id: f.severity_id,
        status_id: STATUS_NEW,
        time: now,
        message: format!("{} ({key})", f.title),
        metadata: Some(Metadata {
            uid: format!("{}-v{}", f.id, f.version),
            version: vigil_ocsf::VERSION.into(),
            product: Some(Product {
                name: "vigil-correlator".into(),
                vendor_name: "vigil".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            tenant_uid: f.tenant.clone(),
            logged_time: now,
            sequence: i32::try_from(f.version).unwrap_or(i32::MAX),
            ..Default::default()
        }),
        finding_info: Some(FindingInfo {
            uid: f.id.clone(),
            title: f.title.clone(),
            analytic: Some(Analytic {
                uid: f.rule_id.clone(),
                name: f.rule_id.clone(),
                type_id: ANALYTIC_RULE,
            }),
            related_events: f
                .event_ids
                .iter()
                .map(|uid| RelatedEvent { uid: uid.clone() })
                .collect(),
            attacks: (!f.technique.is_empty())
                .then(|| Attack {
                    technique: Some(Technique {
                        uid: f.technique.clone(),
                        name: String::new(),
                    }),
                })
                .into_iter()
                .collect(),
            modified_time: now,
        }),
        start_time: f.window_start,
        end_time: f.window_end,
        count: i32::try_from(f.count).unwrap_or(i32::MAX),
        observables: f
            .group_key
            .iter()
            .map(|(field, value)| Observable {
                name: field.clone(),
                type_id: observable_type(field),
                value: value.clone(),
            })
            .collect(),
    }
}
