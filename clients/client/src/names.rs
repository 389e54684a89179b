//! Human names for OCSF numbers (from the OCSF 1.x schema).

use vigil_proto::event::v1::SeverityId;

/// The OCSF class name, or the number when vigil does not know the class.
pub fn class_name(class_uid: i32) -> String {
    match class_uid {
        1001 => "File System Activity".into(),
        1007 => "Process Activity".into(),
        2004 => "Detection Finding".into(),
        3002 => "Authentication".into(),
        4001 => "Network Activity".into(),
        4003 => "DNS Activity".into(),
        4002 => "HTTP Activity".into(),
        other => format!("class {other}"),
    }
}

/// `High`, `Critical`, ...; unknown numbers print as themselves.
pub fn severity_name(severity_id: i32) -> String {
    match SeverityId::try_from(severity_id) {
        Ok(SeverityId::Unspecified) => "Unknown".into(),
        Ok(SeverityId::Informational) => "Informational".into(),
        Ok(SeverityId::Low) => "Low".into(),
        Ok(SeverityId::Medium) => "Medium".into(),
        Ok(SeverityId::High) => "High".into(),
        Ok(SeverityId::Critical) => "Critical".into(),
        Ok(SeverityId::Fatal) => "Fatal".into(),
        Ok(SeverityId::Other) => "Other".into(),
        Err(_) => severity_id.to_string(),
    }
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
