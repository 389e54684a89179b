//! Requests turned into validated queries: every list request's common
//! part (severity floor, time range, limit, page) is parsed once by
//! [`parse_page`]; each query adds its own filters.

use chrono::{DateTime, Utc};
use vigil_common::error::{ApiError, FieldViolation};
use vigil_proto::query::v1::{ListEventsRequest, ListFindingsRequest};

use super::page_token::PageTokens;
use super::{DEFAULT_LIMIT, MAX_LIMIT};

/// What every list query has: a severity floor, a time range, a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<I> {
    /// OCSF severity, 0 (no filter) or 1..=6.
    pub min_severity: i32,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub limit: u32,
    /// The keyset position after which this page starts.
    pub after: Option<(DateTime<Utc>, I)>,
    /// The filters, as the text page tokens are bound to.
    pub filters: String,
}

/// The common fields of a list request, as sent.
pub struct PageRequest<'a> {
    pub min_severity: i32,
    pub start_time: i64,
    pub end_time: i64,
    pub limit: u32,
    pub page_token: &'a str,
}

/// A list request of the API: it has the common fields.
pub trait ListRequest {
    fn page(&self) -> PageRequest<'_>;
}

/// Both list requests carry the common fields under the same names.
macro_rules! list_request {
    ($($request:ty),*) => {$(
        impl ListRequest for $request {
            fn page(&self) -> PageRequest<'_> {
                PageRequest {
                    min_severity: self.min_severity,
                    start_time: self.start_time,
                    end_time: self.end_time,
                    limit: self.limit,
                    page_token: &self.page_token,
                }
            }
        }
    )*};
}

list_request!(ListEventsRequest, ListFindingsRequest);

/// Parses the common part of a list request; `filters` is the text the
/// page token must have been issued for.
pub fn parse_page<I: std::str::FromStr>(
    request: PageRequest<'_>,
    filters: String,
    tokens: &PageTokens,
    caller: &str,
    violations: &mut Vec<FieldViolation>,
) -> Page<I> {
    check_min_severity(request.min_severity, violations);
    let (start, end) = time_range(request.start_time, request.end_time, violations);
    let after = match request.page_token {
        "" => None,
        token => tokens
            .decode(caller, &filters, token)
            .map_err(|reason| violations.push(FieldViolation::new("page_token", reason)))
            .ok(),
    };
    Page {
        min_severity: request.min_severity,
        start,
        end,
        limit: page_limit(request.limit),
        after,
        filters,
    }
}

/// A validated `ListEvents`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventQuery {
    pub page: Page<uuid::Uuid>,
    pub class_uids: Vec<i32>,
    pub source_device: Option<String>,
}

impl EventQuery {
    pub fn parse(
        request: &ListEventsRequest,
        tokens: &PageTokens,
        caller: &str,
    ) -> Result<Self, ApiError> {
        let mut violations = Vec::new();
        if request.class_uids.len() > 64 {
            violations.push(FieldViolation::new("class_uids", "at most 64 classes"));
        }
        if request.source_device.len() > 64 {
            violations.push(FieldViolation::new("source_device", "at most 64 bytes"));
        }
        let mut class_uids = request.class_uids.clone();
        class_uids.sort_unstable();
        class_uids.dedup();
        let filters = filter_text(
            request.min_severity,
            &class_uids,
            &request.source_device,
            request.start_time,
            request.end_time,
        );
        let page = parse_page(request.page(), filters, tokens, caller, &mut violations);
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(sorted(violations)));
        }
        Ok(Self {
            page,
            class_uids,
            source_device: (!request.source_device.is_empty())
                .then(|| request.source_device.clone()),
        })
    }
}

/// A validated `ListFindings`.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingQuery {
    pub page: Page<String>,
    pub rule_id: Option<String>,
}

impl FindingQuery {
    pub fn parse(
        request: &ListFindingsRequest,
        tokens: &PageTokens,
        caller: &str,
    ) -> Result<Self, ApiError> {
        let mut violations = Vec::new();
        if request.rule_id.len() > 64 {
            violations.push(FieldViolation::new("rule_id", "at most 64 bytes"));
        }
        let filters = filter_text(
            request.min_severity,
            &[],
            &format!("findings|{}", request.rule_id),
            request.start_time,
            request.end_time,
        );
        let page = parse_page(request.page(), filters, tokens, caller, &mut violations);
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(sorted(violations)));
        }
        Ok(Self {
            page,
            rule_id: (!request.rule_id.is_empty()).then(|| request.rule_id.clone()),
        })
    }
}

/// Violations in the order of the request's fields, whichever check found
/// them first.
fn sorted(mut violations: Vec<FieldViolation>) -> Vec<FieldViolation> {
    const ORDER: [&str; 8] = [
        "min_severity",
        "class_uids",
        "source_device",
        "rule_id",
        "start_time",
        "end_time",
        "page_token",
        "limit",
    ];
    violations.sort_by_key(|v| {
        ORDER
            .iter()
            .position(|f| *f == v.field)
            .unwrap_or(ORDER.len())
    });
    violations
}

fn check_min_severity(min_severity: i32, violations: &mut Vec<FieldViolation>) {
    if !(0..=6).contains(&min_severity) {
        violations.push(FieldViolation::new(
            "min_severity",
            format!("{min_severity} is not a severity from 0 to 6"),
        ));
    }
}

/// `[start_time, end_time)` from epoch milliseconds, 0 meaning open.
fn time_range(
    start_ms: i64,
    end_ms: i64,
    violations: &mut Vec<FieldViolation>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let mut time = |ms: i64, field: &str| match ms {
        0 => None,
        ms => DateTime::from_timestamp_millis(ms).or_else(|| {
            violations.push(FieldViolation::new(field, "out of range"));
            None
        }),
    };
    let start = time(start_ms, "start_time");
    let end = time(end_ms, "end_time");
    if let (Some(s), Some(e)) = (start, end)
        && s >= e
    {
        violations.push(FieldViolation::new("end_time", "must be after start_time"));
    }
    (start, end)
}

pub fn page_limit(limit: u32) -> u32 {
    match limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    }
}

/// The filters a page token is bound to, as the text its HMAC covers.
fn filter_text(
    min_severity: i32,
    class_uids: &[i32],
    device: &str,
    start: i64,
    end: i64,
) -> String {
    format!("{min_severity}|{class_uids:?}|{device}|{start}|{end}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use proptest::prelude::*;

    const ANA: &str = "spiffe://vigil.local/user/analyst";
    const OTHER: &str = "spiffe://vigil.local/user/acme-analyst";

    fn tokens() -> PageTokens {
        PageTokens::new(b"0123456789abcdef0123456789abcdef")
    }

    fn request() -> ListEventsRequest {
        ListEventsRequest {
            min_severity: 4,
            limit: 10,
            ..Default::default()
        }
    }

    fn parse(r: &ListEventsRequest, caller: &str) -> Result<EventQuery, ApiError> {
        EventQuery::parse(r, &tokens(), caller)
    }

    fn token_for(caller: &str) -> (String, DateTime<Utc>, uuid::Uuid) {
        let q = parse(&request(), caller).map_err(|e| e.to_string());
        let Ok(q) = q else { panic!("{q:?}") };
        let time = DateTime::from_timestamp_millis(1_790_000_000_123).unwrap_or_default();
        let id = uuid::Uuid::now_v7();
        (
            tokens().encode(caller, &q.page.filters, time, &id.to_string()),
            time,
            id,
        )
    }

    fn is_bad_token(result: Result<EventQuery, ApiError>) -> bool {
        matches!(result, Err(ApiError::InvalidArgument(v)) if v[0].field == "page_token")
    }

    #[test]
    fn token_round_trips_for_the_same_filters_and_caller_only() {
        let (token, time, id) = token_for(ANA);
        let mut next = request();
        next.page_token = token.clone();
        assert_eq!(
            parse(&next, ANA).ok().and_then(|q| q.page.after),
            Some((time, id))
        );
        // Another caller replaying it.
        assert!(is_bad_token(parse(&next, OTHER)));
        // Other filters.
        let mut other = request();
        other.min_severity = 5;
        other.page_token = token.clone();
        assert!(is_bad_token(parse(&other, ANA)));
        // Another reader key.
        let foreign = PageTokens::new(b"another key, another deployment!");
        assert!(is_bad_token(EventQuery::parse(&next, &foreign, ANA)));
    }

    #[test]
    fn tampered_tokens_are_invalid_argument() {
        let (token, time, _) = token_for(ANA);
        let (position, mac) = token.split_once('.').unwrap_or_default();
        // Move the keyset position (e.g. to skip ahead) and keep the mac.
        let moved = URL_SAFE_NO_PAD.encode(format!(
            "v2.{}.{}",
            time.timestamp_millis() + 1,
            uuid::Uuid::now_v7()
        ));
        let mut flipped = mac.to_owned().into_bytes();
        if let Some(b) = flipped.first_mut() {
            *b = if *b == b'A' { b'B' } else { b'A' };
        }
        let flipped = String::from_utf8(flipped).unwrap_or_default();
        for bad in [
            format!("{moved}.{mac}"),
            format!("{position}.{flipped}"),
            position.to_owned(),
            format!("{position}."),
        ] {
            let mut r = request();
            r.page_token = bad.clone();
            assert!(is_bad_token(parse(&r, ANA)), "{bad}");
        }
    }

    #[test]
    fn garbage_tokens_and_bad_filters_are_invalid_argument() {
        for token in [
            "x",
            "!!!",
            &URL_SAFE_NO_PAD.encode("v1.1.2.3"),
            &"A".repeat(300),
        ] {
            let mut r = request();
            r.page_token = token.to_owned();
            assert!(is_bad_token(parse(&r, ANA)), "{token}");
        }
        let mut r = request();
        r.min_severity = 7;
        r.start_time = 20;
        r.end_time = 10;
        let Err(ApiError::InvalidArgument(v)) = parse(&r, ANA) else {
            panic!("expected invalid")
        };
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["min_severity", "end_time"]);
    }

    #[test]
    fn limit_defaults_and_caps() {
        let mut r = request();
        r.limit = 0;
        assert_eq!(
            parse(&r, ANA).map(|q| q.page.limit).ok(),
            Some(DEFAULT_LIMIT)
        );
        r.limit = 50_000;
        assert_eq!(parse(&r, ANA).map(|q| q.page.limit).ok(), Some(MAX_LIMIT));
    }

    proptest! {
        /// No string a client can send is accepted as a page token unless
        /// the reader issued it; none makes parsing panic.
        #[test]
        fn arbitrary_tokens_are_refused(token in "\\PC{1,300}") {
            let mut r = request();
            r.page_token = token;
            prop_assert!(is_bad_token(parse(&r, ANA)));
        }

        /// A token with any single byte changed is refused.
        #[test]
        fn any_single_byte_change_is_refused(at in 0usize..200, to in 0u8..128) {
            let (token, _, _) = token_for(ANA);
            let mut bytes = token.clone().into_bytes();
            let at = at % bytes.len();
            prop_assume!(bytes[at] != to);
            bytes[at] = to;
            let mut r = request();
            r.page_token = String::from_utf8_lossy(&bytes).into_owned();
            prop_assert!(is_bad_token(parse(&r, ANA)));
        }
    }
}
