//! A finding as it leaves the correlator: the protobuf message on
//! `findings.<tenant>.<rule>`.

use vigil_proto::finding::v1::{Finding as FindingPb, KeyPart};

use crate::engine::Finding;

/// OCSF class of every finding.
pub const DETECTION_FINDING: i32 = 2004;

pub fn to_proto(f: &Finding) -> FindingPb {
    FindingPb {
        finding_id: f.id.clone(),
        activity_id: f.activity_id,
        version: f.version,
        rule_id: f.rule_id.clone(),
        title: f.title.clone(),
        severity_id: f.severity_id,
        technique: f.technique.clone(),
        tenant: f.tenant.clone(),
        group_key: f
            .group_key
            .iter()
            .map(|(field, value)| KeyPart {
                field: field.clone(),
                value: value.clone(),
            })
            .collect(),
        window_start: f.window_start,
        window_end: f.window_end,
        count: u32::try_from(f.count).unwrap_or(u32::MAX),
        event_ids: f.event_ids.clone(),
        time: vigil_common::now_millis(),
        class_uid: DETECTION_FINDING,
        category_uid: DETECTION_FINDING / 1000,
        type_uid: i64::from(DETECTION_FINDING) * 100 + i64::from(f.activity_id),
    }
}
