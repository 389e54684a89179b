//! The reader's queries keep the plan that serves them whatever the state
//! of Postgres' statistics (issue #11): a generic plan of the earlier
//! catch-all statement sorted a million rows (1.37 s) on a freshly loaded
//! table. Here statistics are taken on the empty table, the table is then
//! loaded with a million rows (autovacuum off, so nothing re-analyzes it),
//! and every session is forced onto generic plans; each query must still
//! walk the index that serves it (checked with EXPLAIN EXECUTE of the very
//! statement the reader builds, under the planner settings the reader's
//! list transactions use) and answer within a bound.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{Connection, Row};
use vigil_e2e::TestDb;
use vigil_reader::query::request::Page;
use vigil_reader::query::{Caller, Db, EventQuery, PageTokens, TenantScope};

const ROWS: i64 = 1_000_000;

fn query(min_severity: i32, class_uids: Vec<i32>, device: Option<&str>) -> EventQuery {
    EventQuery {
        page: Page {
            min_severity,
            start: None,
            end: None,
            limit: 10,
            after: None,
            filters: String::new(),
        },
        class_uids,
        source_device: device.map(str::to_owned),
    }
}

/// The generic plan of `q` for `scope`: the reader's own SQL, prepared
/// under `plan_cache_mode = force_generic_plan` and explained with the
/// values the reader would bind (`literals`, in bind order).
async fn generic_plan(
    conn: &mut sqlx::PgConnection,
    q: &EventQuery,
    scope: &TenantScope,
    literals: &[&str],
) -> anyhow::Result<String> {
    let sql = vigil_reader::query::list_events_sql("PREPARE q AS ", q, scope).sql();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.as_str().to_owned()))
        .execute(&mut *conn)
        .await?;
    let explain = if literals.is_empty() {
        "EXPLAIN EXECUTE q".to_owned()
    } else {
        format!("EXPLAIN EXECUTE q({})", literals.join(", "))
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(explain))
        .fetch_all(&mut *conn)
        .await?;
    sqlx::raw_sql("DEALLOCATE q").execute(&mut *conn).await?;
    Ok(rows
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect::<Vec<_>>()
        .join("\n"))
}

#[tokio::test]
async fn queries_walk_their_index_with_generic_plans_and_stale_statistics() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let owner = sqlx::PgPool::connect(&db.url).await?;
    vigil_writer::MIGRATOR.run(&owner).await?;
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&owner).await?;
    // The day partitions of the last 40 hours, analyzed while empty, never
    // again.
    let first = (now - chrono::Duration::hours(40)).date_naive();
    for day in first.iter_days().take_while(|d| *d <= now.date_naive()) {
        let name: String = sqlx::query_scalar("SELECT vigil_event_partition($1)")
            .bind(day)
            .fetch_one(&owner)
            .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {name} SET (autovacuum_enabled = false)"
        )))
        .execute(&owner)
        .await?;
    }
    sqlx::raw_sql("ANALYZE events").execute(&owner).await?;
    // A million events over the last 40 hours: 20 tenants, 1,000 devices,
    // eight classes, OCSF severities skewed low as real traffic is (HIGH
    // and above ~10 %).
    let load = Instant::now();
    sqlx::query(
        "INSERT INTO events (tenant, uid, time, severity_id, class_uid, device_uid, logged_time, payload)
         SELECT 't' || (i % 20), gen_random_uuid(), $2 - (i * interval '144 milliseconds'),
                CASE WHEN (i / 20) % 100 < 40 THEN 1 WHEN (i / 20) % 100 < 70 THEN 2 WHEN (i / 20) % 100 < 90 THEN 3
                     WHEN (i / 20) % 100 < 97 THEN 4 WHEN (i / 20) % 100 < 99 THEN 5 ELSE 6 END,
                (ARRAY[1001, 1007, 3002, 3003, 4001, 4002, 4003, 4007])[1 + (i / 7) % 8],
                'device-' || (i % 1000), $2, ''::bytea
         FROM generate_series(1, $1) AS i",
    )
    .bind(ROWS)
    .bind(now)
    .execute(&owner)
    .await?;
    eprintln!("loaded {ROWS} rows in {:?}", load.elapsed());
    let analyzed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_user_tables WHERE relname LIKE 'events_%' AND n_live_tup > 0 AND last_autoanalyze IS NOT NULL",
    )
    .fetch_one(&owner)
    .await?;
    assert_eq!(analyzed, 0, "nothing may have refreshed the statistics");

    // The reader's own role (row-level security applies), on generic plans.
    let mut conn = sqlx::PgConnection::connect(&db.role_url("reader")).await?;
    sqlx::raw_sql(
        "SET plan_cache_mode = force_generic_plan; SELECT set_config('vigil.tenants', '*', false)",
    )
    .execute(&mut conn)
    .await?;
    for (name, value) in vigil_reader::query::ORDERED_WALK {
        sqlx::query("SELECT set_config($1, $2, false)")
            .bind(name)
            .bind(value)
            .execute(&mut conn)
            .await?;
    }
    let one = TenantScope::Only(vec!["t7".into()]);
    let three = TenantScope::Only(vec!["t3".into(), "t7".into(), "t11".into()]);
    let cases: Vec<(&str, EventQuery, TenantScope, Vec<&str>, &str)> = vec![
        (
            "HIGH+, one tenant",
            query(4, vec![], None),
            one.clone(),
            vec!["'t7'"],
            "events_tenant_high_time",
        ),
        (
            "HIGH+, three tenants",
            query(4, vec![], None),
            three.clone(),
            vec!["ARRAY['t3','t7','t11']"],
            "events_tenant_high_time",
        ),
        (
            "HIGH+, all tenants",
            query(4, vec![], None),
            TenantScope::All,
            vec![],
            "events_high_time",
        ),
        (
            "CRITICAL, one tenant",
            query(6, vec![], None),
            one.clone(),
            vec!["'t7'"],
            "events_tenant_high_time",
        ),
        (
            "any severity, one tenant",
            query(0, vec![], None),
            one.clone(),
            vec!["'t7'"],
            "events_pkey",
        ),
        (
            "class filter, one tenant",
            query(0, vec![3002], None),
            one.clone(),
            vec!["'t7'", "3002"],
            "events_tenant_class_time",
        ),
        (
            "class filter, all tenants",
            query(0, vec![4001], None),
            TenantScope::All,
            vec!["4001"],
            "events_time",
        ),
        (
            "device filter, one tenant",
            query(0, vec![], Some("device-7")),
            one.clone(),
            vec!["'t7'", "'device-7'"],
            "events_tenant_device_time",
        ),
        (
            "device filter, three tenants",
            query(0, vec![], Some("device-7")),
            three.clone(),
            vec!["ARRAY['t3','t7','t11']", "'device-7'"],
            "events_tenant_device_time",
        ),
    ];
    // A partition's index is named after its columns; plans are checked
    // against the parent index each one belongs to.
    let parents: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, p.relname::text FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relkind = 'I'",
    )
    .fetch_all(&owner)
    .await?;
    for (what, q, scope, literals, index) in &cases {
        let plan = generic_plan(&mut conn, q, scope, literals).await?;
        let walked: Vec<&str> = plan
            .lines()
            .filter(|l| l.contains("Index Scan"))
            .filter_map(|l| l.split_once(" using ").map(|(_, rest)| rest))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(|child| {
                parents
                    .iter()
                    .find(|(c, _)| c == child)
                    .map_or(child, |(_, parent)| parent.as_str())
            })
            .collect();
        assert!(
            !walked.is_empty() && walked.iter().all(|w| w == index),
            "{what}: expected only walks of {index}, got {walked:?}:\n{plan}"
        );
        assert!(
            !plan.contains("Seq Scan") && !plan.contains("Bitmap"),
            "{what}: no table scan:\n{plan}"
        );
        // The only sort allowed is the merge of several tenants' pages
        // (at most tenants x limit rows), above the per-tenant walks.
        let sorts = plan.matches("Sort Key").count();
        let allowed = usize::from(matches!(scope, TenantScope::Only(t) if t.len() > 1));
        assert!(sorts <= allowed, "{what}: {sorts} sorts:\n{plan}");
        if allowed == 1 {
            assert!(
                plan.contains("Function Scan on unnest"),
                "{what}: one walk per tenant:\n{plan}"
            );
        }
    }

    // The same queries through the reader's code, each timed (p99 of 30
    // runs), on a pool forced onto generic plans.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        })
        .connect(&db.role_url("reader"))
        .await?;
    let reader = Db {
        pool,
        tokens: PageTokens::new(b"plan-stability"),
        max_statement_time: Duration::from_secs(10),
    };
    for (what, q, scope, _, _) in &cases {
        let caller = Caller {
            name: "spiffe://vigil.local/user/analyst".into(),
            scope: scope.clone(),
        };
        let mut took = Vec::new();
        let mut rows = 0;
        for _ in 0..30 {
            let start = Instant::now();
            rows = vigil_reader::query::list_events(&reader, &caller, None, q)
                .await?
                .events
                .len();
            took.push(start.elapsed());
        }
        took.sort();
        let p99 = took[took.len() * 99 / 100];
        eprintln!(
            "{what}: {rows} rows, p50 {:?}, p99 {p99:?}",
            took[took.len() / 2]
        );
        assert_eq!(rows, 10, "{what}: a full page");
        // Debug build on a shared machine; the failure this guards against
        // took 1.37 s.
        assert!(p99 < Duration::from_millis(100), "{what}: p99 {p99:?}");
    }
    Ok(())
}
