//! "The newest N events of a tenant at or above HIGH" is answered by
//! walking an index in order, never by sorting the table.

use sqlx::Row;
use vigil_e2e::TestDb;
use vigil_reader::query::TenantScope;

async fn plan(pool: &sqlx::PgPool, scope: TenantScope) -> anyhow::Result<String> {
    let sql = format!("EXPLAIN {}", vigil_reader::query::list_sql(4, &scope));
    let tenants = match scope {
        TenantScope::All => None,
        TenantScope::Only(t) => Some(t),
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenants)
        .bind(Vec::<i32>::new())
        .bind(None::<String>)
        .bind(None::<chrono::DateTime<chrono::Utc>>)
        .bind(None::<chrono::DateTime<chrono::Utc>>)
        .bind(None::<chrono::DateTime<chrono::Utc>>)
        .bind(None::<uuid::Uuid>)
        .bind(10i64)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect::<Vec<_>>()
        .join("\n"))
}

#[tokio::test]
async fn newest_high_events_are_an_index_scan() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    vigil_writer::MIGRATOR.run(&pool).await?;
    // 20 tenants, 20,000 events over a day, every severity.
    sqlx::query(
        "INSERT INTO events (tenant, uid, time, severity_id, class_uid, activity_id, status_id, device_uid, message, logged_time, payload)
         SELECT 't' || (i % 20), gen_random_uuid(), now() - i * interval '4 seconds', (i % 6) + 1, 3002, 1, 1, 'd', 'm', now(), ''::bytea
         FROM generate_series(1, 20000) AS i",
    )
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE events").execute(&pool).await?;

    let one_tenant = plan(&pool, TenantScope::Only(vec!["t7".into()])).await?;
    let all_tenants = plan(&pool, TenantScope::All).await?;
    for plan in [one_tenant, all_tenants] {
        // Walks a HIGH+ partial index newest first and stops after 10 rows:
        // no table scan, no sort.
        assert!(
            plan.contains("Index Scan using events_") && plan.contains("high_time"),
            "{plan}"
        );
        assert!(
            !plan.contains("Sort") && !plan.contains("Seq Scan"),
            "{plan}"
        );
    }
    pool.close().await;
    Ok(())
}
