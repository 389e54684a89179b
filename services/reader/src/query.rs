//! The query layer: `ListEvents`/`GetEvent` requests turned into validated
//! queries, run against Postgres, paged with an opaque keyset token. Both
//! the gRPC service and the NATS responder call this; neither builds SQL.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use prost::Message;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use vigil_common::error::{ApiError, FieldViolation};
use vigil_proto::event::v1::SecurityEvent;
use vigil_proto::finding::v1::Finding;
use vigil_proto::query::v1::{
    GetEventRequest, GetFindingRequest, GetFindingResponse, ListEventsRequest, ListEventsResponse,
    ListFindingsRequest, ListFindingsResponse,
};

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

/// Which tenants a caller may see. `All` is for callers the reader trusts
/// with every tenant (today: every user identity, and the NATS API whose
/// callers NATS permissions restrict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    All,
    Only(Vec<String>),
}

/// A validated `ListEvents`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventQuery {
    /// OCSF severity, 0 (no filter) or 1..=6.
    min_severity: i32,
    class_uids: Vec<i32>,
    source_device: Option<String>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    limit: u32,
    after: Option<(DateTime<Utc>, uuid::Uuid)>,
    filter_hash: String,
}

/// A validated `ListFindings`.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingQuery {
    min_severity: i32,
    rule_id: Option<String>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    limit: u32,
    after: Option<(DateTime<Utc>, String)>,
    filter_hash: String,
}

impl FindingQuery {
    pub fn parse(request: &ListFindingsRequest) -> Result<Self, ApiError> {
        let mut violations = Vec::new();
        check_min_severity(request.min_severity, &mut violations);
        if request.rule_id.len() > 64 {
            violations.push(FieldViolation::new("rule_id", "at most 64 bytes"));
        }
        let (start, end) = time_range(request.start_time, request.end_time, &mut violations);
        let filter_hash = filter_hash(
            request.min_severity,
            &[],
            &format!("findings|{}", request.rule_id),
            request.start_time,
            request.end_time,
        );
        let after = page_after(&request.page_token, &filter_hash, &mut violations);
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations));
        }
        Ok(Self {
            min_severity: request.min_severity,
            rule_id: (!request.rule_id.is_empty()).then(|| request.rule_id.clone()),
            start,
            end,
            limit: page_limit(request.limit),
            after,
            filter_hash,
        })
    }
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

/// The keyset position a page token carries, if there is one.
fn page_after<I: std::str::FromStr>(
    token: &str,
    filter_hash: &str,
    violations: &mut Vec<FieldViolation>,
) -> Option<(DateTime<Utc>, I)> {
    if token.is_empty() {
        return None;
    }
    decode_token(token, filter_hash)
        .map_err(|reason| violations.push(FieldViolation::new("page_token", reason)))
        .ok()
}

fn page_limit(limit: u32) -> u32 {
    match limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    }
}

impl EventQuery {
    pub fn parse(request: &ListEventsRequest) -> Result<Self, ApiError> {
        let mut violations = Vec::new();
        check_min_severity(request.min_severity, &mut violations);
        if request.class_uids.len() > 64 {
            violations.push(FieldViolation::new("class_uids", "at most 64 classes"));
        }
        if request.source_device.len() > 64 {
            violations.push(FieldViolation::new("source_device", "at most 64 bytes"));
        }
        let (start, end) = time_range(request.start_time, request.end_time, &mut violations);
        let mut class_uids = request.class_uids.clone();
        class_uids.sort_unstable();
        class_uids.dedup();
        let filter_hash = filter_hash(
            request.min_severity,
            &class_uids,
            &request.source_device,
            request.start_time,
            request.end_time,
        );
        let after = page_after(&request.page_token, &filter_hash, &mut violations);
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations));
        }
        Ok(Self {
            min_severity: request.min_severity,
            class_uids,
            source_device: (!request.source_device.is_empty())
                .then(|| request.source_device.clone()),
            start,
            end,
            limit: page_limit(request.limit),
            after,
            filter_hash,
        })
    }
}

fn filter_hash(
    min_severity: i32,
    class_uids: &[i32],
    device: &str,
    start: i64,
    end: i64,
) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "{min_severity}|{class_uids:?}|{device}|{start}|{end}"
    ));
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `v1.<time ms>.<event id>.<filter hash>`, base64url. The hash ties a token
/// to the filters it was issued for.
fn encode_token(time: DateTime<Utc>, id: &str, filter_hash: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "v1.{}.{}.{}",
        time.timestamp_millis(),
        id,
        filter_hash
    ))
}

fn decode_token<I: std::str::FromStr>(
    token: &str,
    filter_hash: &str,
) -> Result<(DateTime<Utc>, I), &'static str> {
    const MALFORMED: &str = "malformed page token";
    if token.len() > 256 {
        return Err(MALFORMED);
    }
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| MALFORMED)?;
    let text = String::from_utf8(raw).map_err(|_| MALFORMED)?;
    let parts: Vec<&str> = text.split('.').collect();
    let ["v1", time, id, hash] = parts.as_slice() else {
        return Err(MALFORMED);
    };
    let time = time
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .ok_or(MALFORMED)?;
    let id = id.parse::<I>().map_err(|_| MALFORMED)?;
    if *hash != filter_hash {
        return Err("page token was issued for different filters");
    }
    Ok((time, id))
}

fn db_error(error: sqlx::Error) -> ApiError {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            ApiError::Unavailable {
                reason: "event database unavailable".into(),
                retry_after: std::time::Duration::from_secs(1),
            }
        }
        other => ApiError::Internal(other.to_string()),
    }
}

fn tenants_param(scope: &TenantScope) -> Option<Vec<String>> {
    match scope {
        TenantScope::All => None,
        TenantScope::Only(t) => Some(t.clone()),
    }
}

/// The SQL of `ListEvents`, with `$1` the scope's tenants (`text[]`, NULL
/// for all), `$2` classes, `$3` device, `$4`/`$5` time range, `$6`/`$7`
/// keyset position, `$8` limit.
///
/// The severity bound is a literal (an integer bounded to 1..=6 by
/// [`EventQuery::parse`]) so the planner can use the partial HIGH+ indexes,
/// and a one-tenant scope is an equality so `(tenant, time, event_id)`
/// indexes deliver rows in order; everything else is bound.
pub fn list_sql(min_severity: i32, scope: &TenantScope) -> String {
    let severity = match min_severity {
        n @ 1..=6 => format!("AND severity_id BETWEEN {n} AND 6"),
        _ => String::new(),
    };
    let tenant = match scope {
        TenantScope::All => "$1::text[] IS NULL",
        TenantScope::Only(t) if t.len() == 1 => "tenant = ($1::text[])[1]",
        TenantScope::Only(_) => "tenant = ANY($1::text[])",
    };
    format!(
        "SELECT payload, time, event_id FROM events
         WHERE {tenant}
           {severity}
           AND (cardinality($2::int4[]) = 0 OR class_uid = ANY($2))
           AND ($3::text IS NULL OR device = $3)
           AND ($4::timestamptz IS NULL OR time >= $4)
           AND ($5::timestamptz IS NULL OR time < $5)
           AND ($6::timestamptz IS NULL OR (time, event_id) < ($6, $7::uuid))
         ORDER BY time DESC, event_id DESC
         LIMIT $8"
    )
}

/// Runs a query: newest first by (time, event_id), one page.
pub async fn list_events(
    pool: &PgPool,
    scope: &TenantScope,
    query: &EventQuery,
) -> Result<ListEventsResponse, ApiError> {
    let sql = list_sql(query.min_severity, scope);
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenants_param(scope))
        .bind(&query.class_uids)
        .bind(&query.source_device)
        .bind(query.start)
        .bind(query.end)
        .bind(query.after.map(|a| a.0))
        .bind(query.after.map(|a| a.1))
        .bind(i64::from(query.limit) + 1)
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
    let more = rows.len() > query.limit as usize;
    let mut events = Vec::with_capacity(rows.len().min(query.limit as usize));
    let mut last = None;
    for row in rows.iter().take(query.limit as usize) {
        let payload: Vec<u8> = row.try_get("payload").map_err(db_error)?;
        let time: DateTime<Utc> = row.try_get("time").map_err(db_error)?;
        let id: uuid::Uuid = row.try_get("event_id").map_err(db_error)?;
        events.push(
            SecurityEvent::decode(payload.as_slice())
                .map_err(|e| ApiError::Internal(format!("stored event {id}: {e}")))?,
        );
        last = Some((time, id));
    }
    let next_page_token = match (more, last) {
        (true, Some((time, id))) => encode_token(time, &id.to_string(), &query.filter_hash),
        _ => String::new(),
    };
    Ok(ListEventsResponse {
        events,
        next_page_token,
    })
}

/// Findings newest first by (window end, id), one page.
pub async fn list_findings(
    pool: &PgPool,
    scope: &TenantScope,
    query: &FindingQuery,
) -> Result<ListFindingsResponse, ApiError> {
    let tenant = match scope {
        TenantScope::All => "$1::text[] IS NULL",
        TenantScope::Only(t) if t.len() == 1 => "tenant = ($1::text[])[1]",
        TenantScope::Only(_) => "tenant = ANY($1::text[])",
    };
    let severity = match query.min_severity {
        n @ 1..=6 => format!("AND severity_id BETWEEN {n} AND 6"),
        _ => String::new(),
    };
    let sql = format!(
        "SELECT payload, window_end, finding_id FROM findings
         WHERE {tenant}
           {severity}
           AND ($2::text IS NULL OR rule_id = $2)
           AND ($3::timestamptz IS NULL OR window_end >= $3)
           AND ($4::timestamptz IS NULL OR window_end < $4)
           AND ($5::timestamptz IS NULL OR (window_end, finding_id) < ($5, $6::text))
         ORDER BY window_end DESC, finding_id DESC
         LIMIT $7"
    );
    // Audited: only fixed text and an integer bounded to 1..=6 are interpolated.
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenants_param(scope))
        .bind(&query.rule_id)
        .bind(query.start)
        .bind(query.end)
        .bind(query.after.as_ref().map(|a| a.0))
        .bind(query.after.as_ref().map(|a| a.1.clone()))
        .bind(i64::from(query.limit) + 1)
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
    let more = rows.len() > query.limit as usize;
    let mut findings = Vec::new();
    let mut last = None;
    for row in rows.iter().take(query.limit as usize) {
        let payload: Vec<u8> = row.try_get("payload").map_err(db_error)?;
        let end: DateTime<Utc> = row.try_get("window_end").map_err(db_error)?;
        let id: String = row.try_get("finding_id").map_err(db_error)?;
        findings.push(
            Finding::decode(payload.as_slice())
                .map_err(|e| ApiError::Internal(format!("stored finding {id}: {e}")))?,
        );
        last = Some((end, id));
    }
    let next_page_token = match (more, last) {
        (true, Some((end, id))) => encode_token(end, &id, &query.filter_hash),
        _ => String::new(),
    };
    Ok(ListFindingsResponse {
        findings,
        next_page_token,
    })
}

/// One finding with its stored contributing events, or NOT_FOUND.
pub async fn get_finding(
    pool: &PgPool,
    scope: &TenantScope,
    request: &GetFindingRequest,
) -> Result<GetFindingResponse, ApiError> {
    let id = request.finding_id.as_str();
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::invalid("finding_id", "not a finding id"));
    }
    let row = sqlx::query("SELECT payload FROM findings WHERE finding_id = $1 AND ($2::text[] IS NULL OR tenant = ANY($2)) ORDER BY tenant LIMIT 1")
        .bind(id)
        .bind(tenants_param(scope))
        .fetch_optional(pool)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::NotFound(format!("finding {id}")))?;
    let payload: Vec<u8> = row.try_get("payload").map_err(db_error)?;
    let finding = Finding::decode(payload.as_slice())
        .map_err(|e| ApiError::Internal(format!("stored finding {id}: {e}")))?;
    let ids: Vec<uuid::Uuid> = finding
        .event_ids
        .iter()
        .filter_map(|i| uuid::Uuid::parse_str(i).ok())
        .collect();
    let rows = sqlx::query("SELECT payload FROM events WHERE tenant = $1 AND event_id = ANY($2) ORDER BY time, event_id")
        .bind(&finding.tenant)
        .bind(ids)
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let payload: Vec<u8> = row.try_get("payload").map_err(db_error)?;
        events.push(
            SecurityEvent::decode(payload.as_slice())
                .map_err(|e| ApiError::Internal(format!("stored event: {e}")))?,
        );
    }
    Ok(GetFindingResponse {
        finding: Some(finding),
        events,
    })
}

/// One event by id, or NOT_FOUND (also when it is outside the scope).
pub async fn get_event(
    pool: &PgPool,
    scope: &TenantScope,
    request: &GetEventRequest,
) -> Result<SecurityEvent, ApiError> {
    let id = uuid::Uuid::parse_str(&request.event_id)
        .map_err(|_| ApiError::invalid("event_id", "not a UUID"))?;
    let row = sqlx::query(
        "SELECT payload FROM events WHERE event_id = $1 AND ($2::text[] IS NULL OR tenant = ANY($2)) ORDER BY tenant LIMIT 1",
    )
    .bind(id)
    .bind(tenants_param(scope))
    .fetch_optional(pool)
    .await
    .map_err(db_error)?
    .ok_or_else(|| ApiError::NotFound(format!("event {id}")))?;
    let payload: Vec<u8> = row.try_get("payload").map_err(db_error)?;
    SecurityEvent::decode(payload.as_slice())
        .map_err(|e| ApiError::Internal(format!("stored event {id}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ListEventsRequest {
        ListEventsRequest {
            min_severity: 4,
            limit: 10,
            ..Default::default()
        }
    }

    #[test]
    fn token_round_trips_for_the_same_filters_only() {
        let q = EventQuery::parse(&request()).map_err(|e| e.to_string());
        let Ok(q) = q else { panic!("{q:?}") };
        let time = DateTime::from_timestamp_millis(1_790_000_000_123).unwrap_or_default();
        let id = uuid::Uuid::now_v7();
        let token = encode_token(time, &id.to_string(), &q.filter_hash);
        let mut next = request();
        next.page_token = token.clone();
        assert_eq!(
            EventQuery::parse(&next).ok().and_then(|q| q.after),
            Some((time, id))
        );
        let mut other = request();
        other.min_severity = 5;
        other.page_token = token;
        assert!(
            matches!(EventQuery::parse(&other), Err(ApiError::InvalidArgument(v)) if v[0].field == "page_token")
        );
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
            assert!(
                matches!(EventQuery::parse(&r), Err(ApiError::InvalidArgument(_))),
                "{token}"
            );
        }
        let mut r = request();
        r.min_severity = 7;
        r.start_time = 20;
        r.end_time = 10;
        let Err(ApiError::InvalidArgument(v)) = EventQuery::parse(&r) else {
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
            EventQuery::parse(&r).map(|q| q.limit).ok(),
            Some(DEFAULT_LIMIT)
        );
        r.limit = 50_000;
        assert_eq!(EventQuery::parse(&r).map(|q| q.limit).ok(), Some(MAX_LIMIT));
    }
}
