//! Idempotency survives time partitioning (issue #11): the key of a
//! partitioned `events` holds the event's time, which the device fixes, so
//! a re-delivered batch or a re-sent event lands on the same key in the
//! same day partition, also after more partitions were added; a partition
//! dropped by retention under a running writer is created again.

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use prost::Message;
use vigil_e2e::TestDb;
use vigil_writer::store::{Record, Row, Store};

fn event(tenant: &str, time: DateTime<Utc>) -> anyhow::Result<Record> {
    let mut e = vigil_client::events::sample(
        vigil_client::events::Kind::LoginFailure,
        &mut rand::rng(),
        time.timestamp_millis(),
    );
    let meta = e.metadata.get_or_insert_default();
    meta.tenant_uid = tenant.into();
    meta.logged_time = time.timestamp_millis();
    let payload = Bytes::from(e.encode_to_vec());
    Ok(Record::Event(Row::new(&e, payload)?))
}

async fn count(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?)
}

async fn partitions(pool: &sqlx::PgPool) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'events'::regclass ORDER BY 1",
    )
    .fetch_all(pool)
    .await?)
}

#[tokio::test]
async fn a_re_sent_event_adds_no_row_across_partition_boundaries() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let owner = sqlx::PgPool::connect(&db.url).await?;
    vigil_writer::MIGRATOR.run(&owner).await?;
    let settings = vigil_common::postgres::PostgresSettings {
        url: db.role_url("writer"),
        max_connections: 4,
    };
    let store = Store::new(
        vigil_common::postgres::connect(&settings, vigil_writer::store::session()).await?,
    );

    let now = Utc::now();
    // Yesterday just before midnight, today just after: two partitions.
    let midnight = now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    let mut batch = Vec::new();
    for t in [midnight - Duration::milliseconds(1), midnight, now] {
        batch.push(event("acme", t)?);
        batch.push(event("globex", t)?);
    }
    assert_eq!(store.insert(&batch).await?, 6);
    let before = partitions(&owner).await?;
    // The writer made yesterday's, today's and tomorrow's partitions.
    assert_eq!(before.len(), 3, "{before:?}");

    // Another partition is added (the day after tomorrow), then the batch
    // comes again, whole and one event at a time: nothing new.
    let later = (now + Duration::days(2)).date_naive();
    sqlx::query("SELECT vigil_event_partition($1)")
        .bind(later)
        .execute(&owner)
        .await?;
    assert_eq!(partitions(&owner).await?.len(), 4);
    assert_eq!(store.insert(&batch).await?, 0, "a re-delivered batch");
    for record in &batch {
        assert_eq!(
            store.insert(std::slice::from_ref(record)).await?,
            0,
            "a re-sent event"
        );
    }
    // Twice in one batch (a re-sent request beside its original): once.
    let fresh = event("acme", now)?;
    assert_eq!(store.insert(&[fresh.clone(), fresh.clone()]).await?, 1);
    assert_eq!(count(&owner).await?, 7);
    let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT (tenant, uid)) FROM events")
        .fetch_one(&owner)
        .await?;
    assert_eq!(distinct, 7);

    // Retention drops yesterday's partition under the running writer,
    // which still believes it exists: an event of yesterday is stored
    // anyway (the partition is created again), not dead-lettered.
    let dropped: Vec<String> = sqlx::query_scalar("SELECT vigil_drop_event_partitions($1)")
        .bind(now.date_naive())
        .fetch_all(&owner)
        .await?;
    assert_eq!(dropped, vec![before[0].clone()]);
    assert_eq!(count(&owner).await?, 5, "yesterday's two rows went with it");
    assert_eq!(
        store
            .insert(&[event("acme", midnight - Duration::hours(1))?])
            .await?,
        1
    );
    assert_eq!(partitions(&owner).await?.len(), 4);

    // The writer may create partitions, not drop them.
    let refused = sqlx::query("SELECT vigil_drop_event_partitions($1)")
        .bind(now.date_naive())
        .execute(&store.pool)
        .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("permission denied")),
        "the writer may not drop partitions: {refused:?}"
    );
    Ok(())
}
