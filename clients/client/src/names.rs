//! Human names for OCSF numbers, from the OCSF schema vigil compiles in
//! (`vigil-ocsf`).

use vigil_proto::event::v1::SeverityId;

/// The OCSF class caption, or `class <uid>` for a class OCSF does not define.
pub fn class_name(class_uid: i32) -> String {
    vigil_ocsf::schema()
        .class(class_uid)
        .map_or_else(|| format!("class {class_uid}"), |c| c.caption.clone())
}

/// The OCSF caption of `severity_id` (`High`, `Critical`, ...); unknown
/// numbers print as themselves.
pub fn severity_name(severity_id: i32) -> String {
    enum_caption("severity_id", severity_id)
}

/// The caption of `id` in the base event's enum attribute `attribute`
/// (`severity_id`, `status_id`, the same in every event class), or the number.
pub fn enum_caption(attribute: &str, id: i32) -> String {
    vigil_ocsf::schema()
        .class(3002)
        .and_then(|c| c.attributes.get(attribute))
        .and_then(|a| a.values.get(&id.to_string()).cloned())
        .unwrap_or_else(|| id.to_string())
}

/// Parses a severity as analysts type it: `high`, `Critical`,
/// `SEVERITY_ID_HIGH`, or a number.
pub fn parse_severity(s: &str) -> Option<SeverityId> {
    if let Ok(n) = s.trim().parse::<i32>() {
        return SeverityId::try_from(n).ok();
    }
    let upper = s.trim().to_ascii_uppercase();
    if upper == "UNKNOWN" {
        return Some(SeverityId::Unspecified);
    }
    let name = if upper.starts_with("SEVERITY_ID_") {
        upper
    } else {
        format!("SEVERITY_ID_{upper}")
    };
    SeverityId::from_str_name(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_schema() {
        assert_eq!(class_name(3002), "Authentication");
        assert_eq!(class_name(1001), "File System Activity");
        assert_eq!(class_name(2004), "Detection Finding");
        assert_eq!(class_name(77), "class 77");
        assert_eq!(severity_name(4), "High");
        assert_eq!(enum_caption("status_id", 2), "Failure");
        assert_eq!(severity_name(42), "42");
    }

    #[test]
    fn severity_names_round_trip() {
        for id in [0, 1, 2, 3, 4, 5, 6, 99] {
            assert_eq!(
                parse_severity(&severity_name(id)).map(|s| s as i32),
                Some(id)
            );
        }
        assert_eq!(parse_severity("high"), Some(SeverityId::High));
        assert_eq!(parse_severity("4"), Some(SeverityId::High));
        assert_eq!(parse_severity("severe"), None);
        assert_eq!(parse_severity("7"), None);
    }
}
