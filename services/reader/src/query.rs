//! The query layer: `ListEvents`/`GetEvent` requests turned into validated
//! queries, run against Postgres, paged with an opaque keyset token. Both
//! the gRPC service and the NATS responder call this; neither builds SQL.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use prost::Message;
use sqlx::{PgPool, Postgres, Row, Transaction};
use vigil_common::error::{ApiError, FieldViolation};
use vigil_proto::audit::v1::AuditRecord;
use vigil_proto::event::v1::SecurityEvent;
use vigil_proto::finding::v1::Finding;
use vigil_proto::query::v1::{
    GetEventRequest, GetFindingRequest, GetFindingResponse, ListAuditRecordsRequest,
    ListEventsRequest, ListEventsResponse, ListFindingsRequest, ListFindingsResponse,
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

/// Who is asking: the identity page tokens are bound to (and audit names),
/// and the tenants it may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub scope: TenantScope,
}

/// Signs and checks page tokens: HMAC-SHA256 over the keyset position, the
/// filters and the caller, so a token cannot be altered, reused with other
/// filters, or replayed by another caller.
pub struct PageTokens {
    key: ring::hmac::Key,
}

impl PageTokens {
    /// Tokens signed with `secret` (share it between readers behind one
    /// address so a page token works on any of them).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        }
    }

    /// Tokens signed with a random key: valid until this process exits.
    pub fn random() -> Result<Self, ApiError> {
        let key =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                .map_err(|_| ApiError::Internal("no randomness for the page token key".into()))?;
        Ok(Self { key })
    }

    fn signed(caller: &str, filters: &str, position: &str) -> String {
        format!("{caller}\n{filters}\n{position}")
    }

    /// `<base64url("v2.<time ms>.<id>")>.<mac>`.
    pub fn encode(&self, caller: &str, filters: &str, time: DateTime<Utc>, id: &str) -> String {
        let position = format!("v2.{}.{}", time.timestamp_millis(), id);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&position),
            URL_SAFE_NO_PAD.encode(ring::hmac::sign(
                &self.key,
                Self::signed(caller, filters, &position).as_bytes()
            ))
        )
    }

    /// The keyset position of a token issued by [`Self::encode`] to this
    /// caller for these filters.
    pub fn decode<I: std::str::FromStr>(
        &self,
        caller: &str,
        filters: &str,
        token: &str,
    ) -> Result<(DateTime<Utc>, I), &'static str> {
        const MALFORMED: &str = "malformed page token";
        if token.len() > 256 {
            return Err(MALFORMED);
        }
        let (position, mac) = token.split_once('.').ok_or(MALFORMED)?;
        let raw = URL_SAFE_NO_PAD.decode(position).map_err(|_| MALFORMED)?;
        let text = String::from_utf8(raw).map_err(|_| MALFORMED)?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| MALFORMED)?;
        // Constant-time comparison inside ring.
        ring::hmac::verify(
            &self.key,
            Self::signed(caller, filters, &text).as_bytes(),
            &mac,
        )
        .map_err(|_| "page token was not issued for this query and caller")?;
        let parts: Vec<&str> = text.split('.').collect();
        let ["v2", time, id] = parts.as_slice() else {
            return Err(MALFORMED);
        };
        let time = time
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .ok_or(MALFORMED)?;
        let id = id.parse::<I>().map_err(|_| MALFORMED)?;
        Ok((time, id))
    }
}

/// The reader's database: the pool of its own role, the token signer, and
/// the longest a statement may run.
pub struct Db {
    pub pool: PgPool,
    pub tokens: PageTokens,
    pub max_statement_time: std::time::Duration,
}

impl Db {
    /// A read transaction that Postgres row-level security scopes to the
    /// caller's tenants, and that Postgres cancels after `deadline` (or the
    /// configured maximum, whichever is shorter).
    pub async fn begin(
        &self,
        caller: &Caller,
        deadline: Option<std::time::Duration>,
    ) -> Result<Transaction<'static, Postgres>, ApiError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let tenants = match &caller.scope {
            TenantScope::All => "*".to_owned(),
            TenantScope::Only(t) => t.join(","),
        };
        let timeout = deadline
            .map_or(self.max_statement_time, |d| d.min(self.max_statement_time))
            .max(std::time::Duration::from_millis(1));
        sqlx::query(
            "SELECT set_config('vigil.tenants', $1, true), set_config('statement_timeout', $2, true)",
        )
        .bind(tenants)
        .bind(format!("{}ms", timeout.as_millis()))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        Ok(tx)
    }
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
    filters: String,
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
    filters: String,
}

impl FindingQuery {
    pub fn parse(
        request: &ListFindingsRequest,
        tokens: &PageTokens,
        caller: &str,
    ) -> Result<Self, ApiError> {
        let mut violations = Vec::new();
        check_min_severity(request.min_severity, &mut violations);
        if request.rule_id.len() > 64 {
            violations.push(FieldViolation::new("rule_id", "at most 64 bytes"));
        }
        let (start, end) = time_range(request.start_time, request.end_time, &mut violations);
        let filters = filter_text(
            request.min_severity,
            &[],
            &format!("findings|{}", request.rule_id),
            request.start_time,
            request.end_time,
        );
        let after = page_after(
            tokens,
            caller,
            &request.page_token,
            &filters,
            &mut violations,
        );
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
            filters,
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
    tokens: &PageTokens,
    caller: &str,
    token: &str,
    filters: &str,
    violations: &mut Vec<FieldViolation>,
) -> Option<(DateTime<Utc>, I)> {
    if token.is_empty() {
        return None;
    }
    tokens
        .decode(caller, filters, token)
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
    pub fn parse(
        request: &ListEventsRequest,
        tokens: &PageTokens,
        caller: &str,
    ) -> Result<Self, ApiError> {
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
        let filters = filter_text(
            request.min_severity,
            &class_uids,
            &request.source_device,
            request.start_time,
            request.end_time,
        );
        let after = page_after(
            tokens,
            caller,
            &request.page_token,
            &filters,
            &mut violations,
        );
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
            filters,
        })
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

fn db_error(error: sqlx::Error) -> ApiError {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            ApiError::Unavailable {
                reason: "event database unavailable".into(),
                retry_after: std::time::Duration::from_secs(1),
            }
        }
        // query_canceled: statement_timeout, i.e. the caller's deadline or
        // VIGIL_READER_QUERY_TIMEOUT_SECS.
        sqlx::Error::Database(e) if e.code().as_deref() == Some("57014") => {
            ApiError::DeadlineExceeded(
                "the query ran past its deadline and Postgres cancelled it".into(),
            )
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
    db: &Db,
    caller: &Caller,
    deadline: Option<std::time::Duration>,
    query: &EventQuery,
) -> Result<ListEventsResponse, ApiError> {
    let sql = list_sql(query.min_severity, &caller.scope);
    let mut tx = db.begin(caller, deadline).await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenants_param(&caller.scope))
        .bind(&query.class_uids)
        .bind(&query.source_device)
        .bind(query.start)
        .bind(query.end)
        .bind(query.after.map(|a| a.0))
        .bind(query.after.map(|a| a.1))
        .bind(i64::from(query.limit) + 1)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
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
        (true, Some((time, id))) => {
            db.tokens
                .encode(&caller.name, &query.filters, time, &id.to_string())
        }
        _ => String::new(),
    };
    Ok(ListEventsResponse {
        events,
        next_page_token,
    })
}

/// Findings newest first by (window end, id), one page.
pub async fn list_findings(
    db: &Db,
    caller: &Caller,
    deadline: Option<std::time::Duration>,
    query: &FindingQuery,
) -> Result<ListFindingsResponse, ApiError> {
    let tenant = match &caller.scope {
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
    let mut tx = db.begin(caller, deadline).await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenants_param(&caller.scope))
        .bind(&query.rule_id)
        .bind(query.start)
        .bind(query.end)
        .bind(query.after.as_ref().map(|a| a.0))
        .bind(query.after.as_ref().map(|a| a.1.clone()))
        .bind(i64::from(query.limit) + 1)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
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
        (true, Some((end, id))) => db.tokens.encode(&caller.name, &query.filters, end, &id),
        _ => String::new(),
    };
    Ok(ListFindingsResponse {
        findings,
        next_page_token,
    })
}

/// One finding with its stored contributing events, or NOT_FOUND.
pub async fn get_finding(
    db: &Db,
    caller: &Caller,
    deadline: Option<std::time::Duration>,
    request: &GetFindingRequest,
) -> Result<GetFindingResponse, ApiError> {
    let id = request.finding_id.as_str();
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::invalid("finding_id", "not a finding id"));
    }
    let mut tx = db.begin(caller, deadline).await?;
    let row = sqlx::query("SELECT payload FROM findings WHERE finding_id = $1 AND ($2::text[] IS NULL OR tenant = ANY($2)) ORDER BY tenant LIMIT 1")
        .bind(id)
        .bind(tenants_param(&caller.scope))
        .fetch_optional(&mut *tx)
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
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
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
    db: &Db,
    caller: &Caller,
    deadline: Option<std::time::Duration>,
    request: &GetEventRequest,
) -> Result<SecurityEvent, ApiError> {
    let id = uuid::Uuid::parse_str(&request.event_id)
        .map_err(|_| ApiError::invalid("event_id", "not a UUID"))?;
    let mut tx = db.begin(caller, deadline).await?;
    let row = sqlx::query(
        "SELECT payload FROM events WHERE event_id = $1 AND ($2::text[] IS NULL OR tenant = ANY($2)) ORDER BY tenant LIMIT 1",
    )
    .bind(id)
    .bind(tenants_param(&caller.scope))
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_error)?
    .ok_or_else(|| ApiError::NotFound(format!("event {id}")))?;
    tx.commit().await.map_err(db_error)?;
    let payload: Vec<u8> = row.try_get("payload").map_err(db_error)?;
    SecurityEvent::decode(payload.as_slice())
        .map_err(|e| ApiError::Internal(format!("stored event {id}: {e}")))
}

/// The audit trail newest first, for an all-tenants caller (the service
/// checks the role; row-level security hides every row from anyone else).
pub async fn list_audit(
    db: &Db,
    caller: &Caller,
    deadline: Option<std::time::Duration>,
    request: &ListAuditRecordsRequest,
) -> Result<Vec<AuditRecord>, ApiError> {
    let mut violations = Vec::new();
    if request.caller.len() > 256 {
        violations.push(FieldViolation::new("caller", "at most 256 bytes"));
    }
    let before = match request.before_time {
        0 => None,
        ms => DateTime::from_timestamp_millis(ms).or_else(|| {
            violations.push(FieldViolation::new("before_time", "out of range"));
            None
        }),
    };
    if !violations.is_empty() {
        return Err(ApiError::InvalidArgument(violations));
    }
    let mut tx = db.begin(caller, deadline).await?;
    let rows = sqlx::query(
        "SELECT audit_id, time, service, caller, rpc, filter::text AS filter, rows, outcome FROM audit
         WHERE ($1::text IS NULL OR caller = $1) AND ($2::timestamptz IS NULL OR time < $2)
         ORDER BY time DESC, audit_id DESC LIMIT $3",
    )
    .bind((!request.caller.is_empty()).then_some(request.caller.as_str()))
    .bind(before)
    .bind(i64::from(page_limit(request.limit)))
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    rows.iter()
        .map(|row| {
            let time: DateTime<Utc> = row.try_get("time")?;
            let id: uuid::Uuid = row.try_get("audit_id")?;
            let count: i32 = row.try_get("rows")?;
            Ok(AuditRecord {
                audit_id: id.to_string(),
                time: time.timestamp_millis(),
                service: row.try_get("service")?,
                caller: row.try_get("caller")?,
                rpc: row.try_get("rpc")?,
                filter_json: row.try_get("filter")?,
                rows: u32::try_from(count).unwrap_or(0),
                outcome: row.try_get("outcome")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(db_error)
}

#[cfg(test)]
mod tests {
    use super::*;
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
            tokens().encode(caller, &q.filters, time, &id.to_string()),
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
            parse(&next, ANA).ok().and_then(|q| q.after),
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
        assert_eq!(parse(&r, ANA).map(|q| q.limit).ok(), Some(DEFAULT_LIMIT));
        r.limit = 50_000;
        assert_eq!(parse(&r, ANA).map(|q| q.limit).ok(), Some(MAX_LIMIT));
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
