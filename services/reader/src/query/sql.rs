//! The SQL of every query, run in a transaction that row-level security
//! scopes to the caller's tenants and that Postgres cancels at the caller's
//! deadline; rows decoded back into protobuf.

use chrono::{DateTime, Utc};
use prost::Message;
use sqlx::{PgPool, Postgres, QueryBuilder, Row, Transaction};
use vigil_common::error::{ApiError, FieldViolation};
use vigil_proto::audit::v1::AuditRecord;
use vigil_proto::event::v1::SecurityEvent;
use vigil_proto::finding::v1::Finding;
use vigil_proto::query::v1::{
    GetEventRequest, GetFindingRequest, GetFindingResponse, ListAuditRecordsRequest,
    ListEventsResponse, ListFindingsResponse,
};

use super::page_token::PageTokens;
use super::request::{EventQuery, FindingQuery, page_limit};
use super::{Caller, TenantScope};

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

/// Planner settings of a list query's transaction: walk an index in order,
/// whatever the statistics say. Every list query is built so an index
/// delivers its rows in the order asked ([`list_events_sql`]), and the
/// plan that does is right at any table size; statistics of an
/// append-only, freshly partitioned table lag its newest rows (a day
/// partition is empty when analyzed), and with them the planner chose a
/// sort of every matching row (1.37 s at 13M rows). JIT is off: a page
/// of ten rows never repays compiling.
pub const ORDERED_WALK: [(&str, &str); 4] = [
    ("enable_sort", "off"),
    ("enable_seqscan", "off"),
    ("enable_bitmapscan", "off"),
    ("jit", "off"),
];

impl Db {
    /// [`Db::begin`] for a list query: the planner walks an index in order
    /// ([`ORDERED_WALK`]).
    pub async fn begin_list(
        &self,
        caller: &Caller,
        deadline: Option<std::time::Duration>,
    ) -> Result<Transaction<'static, Postgres>, ApiError> {
        let mut tx = self.begin(caller, deadline).await?;
        let (names, values): (Vec<&str>, Vec<&str>) = ORDERED_WALK.iter().copied().unzip();
        sqlx::query("SELECT set_config(name, value, true) FROM unnest($1::text[], $2::text[]) AS s (name, value)")
            .bind(names)
            .bind(values)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        Ok(tx)
    }
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

/// The tenant condition on `$1`: an equality for one tenant (so the
/// `(tenant, time, ...)` indexes deliver rows in order), `ANY` for several,
/// nothing for all.
fn tenant_clause(scope: &TenantScope) -> &'static str {
    match scope {
        TenantScope::All => "$1::text[] IS NULL",
        TenantScope::Only(t) if t.len() == 1 => "tenant = ($1::text[])[1]",
        TenantScope::Only(_) => "tenant = ANY($1::text[])",
    }
}

/// The severity floor as a literal (an integer bounded to 1..=6 by the
/// request parser), so the planner can use the partial HIGH+ indexes.
fn severity_clause(min_severity: i32) -> String {
    match min_severity {
        n @ 1..=6 => format!(" AND severity_id BETWEEN {n} AND 6"),
        _ => String::new(),
    }
}

/// The SQL of `ListEvents` for `query` in `scope`, after `prefix` (e.g.
/// `EXPLAIN `), with its parameters bound.
///
/// Built so the plan does not depend on the parameters' values or on the
/// table's statistics (issue #11: a generic plan of the previous
/// catch-all statement sorted a million rows): only the filters the
/// request has are in the text; the severity floor and the limit are
/// literals (integers bounded by the request parser), so the planner sees
/// the partial HIGH+ indexes apply and that it needs a handful of rows;
/// one tenant is an equality, so the `(tenant, time, uid)` key delivers
/// rows in order; several tenants are one such walk per tenant
/// (`LATERAL`), merged, so a three-tenant analyst never sorts the union;
/// one device or one class is an equality that the `(tenant, device_uid,
/// time, uid)` and `(tenant, class_uid, time, uid)` indexes deliver in
/// order.
/// Day partitions are ordered by time, so the newest partition is walked
/// first and the rest only if it has too few rows.
pub fn list_events_sql(
    prefix: &str,
    query: &EventQuery,
    scope: &TenantScope,
) -> QueryBuilder<Postgres> {
    let limit = u64::from(query.page.limit) + 1;
    let mut sql = QueryBuilder::new(prefix);
    let several = match scope {
        TenantScope::Only(tenants) if tenants.len() > 1 => {
            sql.push("SELECT payload, time, uid FROM unnest(")
                .push_bind(tenants.clone())
                .push("::text[]) AS scope (tenant) CROSS JOIN LATERAL (");
            true
        }
        _ => false,
    };
    sql.push("SELECT payload, time, uid FROM events WHERE ");
    match scope {
        TenantScope::All => sql.push("true"),
        TenantScope::Only(t) if t.len() == 1 => sql.push("tenant = ").push_bind(t[0].clone()),
        TenantScope::Only(_) => sql.push("events.tenant = scope.tenant"),
    };
    sql.push(severity_clause(query.page.min_severity));
    // One class is an equality, so `(tenant, class_uid, time, uid)`
    // delivers its rows in order; several are filtered on the tenant's walk.
    match query.class_uids.as_slice() {
        [] => {}
        [class] => {
            sql.push(" AND class_uid = ").push_bind(*class);
        }
        several => {
            sql.push(" AND class_uid = ANY(")
                .push_bind(several.to_vec())
                .push(")");
        }
    }
    if let Some(device) = &query.source_device {
        sql.push(" AND device_uid = ").push_bind(device.clone());
    }
    if let Some(start) = query.page.start {
        sql.push(" AND time >= ").push_bind(start);
    }
    if let Some(end) = query.page.end {
        sql.push(" AND time < ").push_bind(end);
    }
    if let Some((time, uid)) = query.page.after {
        sql.push(" AND (time, uid) < (")
            .push_bind(time)
            .push(", ")
            .push_bind(uid)
            .push(")");
    }
    sql.push(format_args!(" ORDER BY time DESC, uid DESC LIMIT {limit}"));
    if several {
        sql.push(format_args!(
            ") AS page ORDER BY time DESC, uid DESC LIMIT {limit}"
        ));
    }
    sql
}

/// Runs a query: newest first by (time, uid), one page.
pub async fn list_events(
    db: &Db,
    caller: &Caller,
    deadline: Option<std::time::Duration>,
    query: &EventQuery,
) -> Result<ListEventsResponse, ApiError> {
    let mut sql = list_events_sql("", query, &caller.scope);
    let mut tx = db.begin_list(caller, deadline).await?;
    let rows = sql.build().fetch_all(&mut *tx).await.map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    let (events, next_page_token) = decode_page::<SecurityEvent, uuid::Uuid>(
        &rows,
        &query.page,
        Keyset {
            time: "time",
            id: "uid",
            what: "event",
        },
        &db.tokens,
        &caller.name,
    )?;
    Ok(ListEventsResponse {
        events,
        next_page_token,
    })
}

/// The columns a page is ordered by, and what its rows are.
struct Keyset {
    time: &'static str,
    id: &'static str,
    what: &'static str,
}

/// Decodes up to `page.limit` rows (the query asked for one more, to know
/// whether another page follows) and the token of the next page.
fn decode_page<M, I>(
    rows: &[sqlx::postgres::PgRow],
    page: &super::request::Page<I>,
    keyset: Keyset,
    tokens: &PageTokens,
    caller: &str,
) -> Result<(Vec<M>, String), ApiError>
where
    M: Message + Default,
    I: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres> + std::fmt::Display,
{
    let limit = page.limit as usize;
    let mut items = Vec::with_capacity(rows.len().min(limit));
    let mut last = None;
    for row in rows.iter().take(limit) {
        let payload: Vec<u8> = row.try_get("payload").map_err(db_error)?;
        let time: DateTime<Utc> = row.try_get(keyset.time).map_err(db_error)?;
        let id: I = row.try_get(keyset.id).map_err(db_error)?;
        items.push(
            M::decode(payload.as_slice())
                .map_err(|e| ApiError::Internal(format!("stored {} {id}: {e}", keyset.what)))?,
        );
        last = Some((time, id));
    }
    let next = match (rows.len() > limit, last) {
        (true, Some((time, id))) => tokens.encode(caller, &page.filters, time, &id.to_string()),
        _ => String::new(),
    };
    Ok((items, next))
}

/// Findings newest first by (window end, id), one page.
pub async fn list_findings(
    db: &Db,
    caller: &Caller,
    deadline: Option<std::time::Duration>,
    query: &FindingQuery,
) -> Result<ListFindingsResponse, ApiError> {
    let tenant = tenant_clause(&caller.scope);
    let severity = severity_clause(query.page.min_severity);
    let sql = format!(
        "SELECT payload, end_time, uid FROM findings
         WHERE {tenant}
           {severity}
           AND ($2::text IS NULL OR analytic_uid = $2)
           AND ($3::timestamptz IS NULL OR end_time >= $3)
           AND ($4::timestamptz IS NULL OR end_time < $4)
           AND ($5::timestamptz IS NULL OR (end_time, uid) < ($5, $6::text))
         ORDER BY end_time DESC, uid DESC
         LIMIT $7"
    );
    // Audited: only fixed text and an integer bounded to 1..=6 are interpolated.
    let mut tx = db.begin(caller, deadline).await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenants_param(&caller.scope))
        .bind(&query.rule_id)
        .bind(query.page.start)
        .bind(query.page.end)
        .bind(query.page.after.as_ref().map(|a| a.0))
        .bind(query.page.after.as_ref().map(|a| a.1.clone()))
        .bind(i64::from(query.page.limit) + 1)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    let (findings, next_page_token) = decode_page::<Finding, String>(
        &rows,
        &query.page,
        Keyset {
            time: "end_time",
            id: "uid",
            what: "finding",
        },
        &db.tokens,
        &caller.name,
    )?;
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
    let row = sqlx::query("SELECT payload FROM findings WHERE uid = $1 AND ($2::text[] IS NULL OR tenant = ANY($2)) ORDER BY tenant LIMIT 1")
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
        .related_event_uids()
        .into_iter()
        .filter_map(|i| uuid::Uuid::parse_str(i).ok())
        .collect();
    let rows = sqlx::query(
        "SELECT payload FROM events WHERE tenant = $1 AND uid = ANY($2) ORDER BY time, uid",
    )
    .bind(finding.tenant_uid())
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
        "SELECT payload FROM events WHERE uid = $1 AND ($2::text[] IS NULL OR tenant = ANY($2)) ORDER BY tenant LIMIT 1",
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
