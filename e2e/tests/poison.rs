//! Poison messages mixed into good traffic: every good event lands, each
//! poison message is retried with backoff a bounded number of times, then
//! dead-lettered with its reason and original subject, without holding up
//! the messages behind it; replaying a fixed one lands it exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use vigil_common::dlq;
use vigil_common::subjects::{self, PROTOBUF_CONTENT_TYPE};
use vigil_e2e::load::{self, Ledger, LoadOptions, Outcome};
use vigil_e2e::{Mesh, MeshOptions, wait_until};
use vigil_proto::ingest::v1::PublishRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_goes_to_the_dlq_and_a_fixed_one_replays_once() -> anyhow::Result<()> {
    let options = MeshOptions {
        writer_max_deliveries: 3,
        writer_retry_base_ms: 100,
        ..Default::default()
    };
    let mesh = Mesh::start_with(options).await?;
    // An operator's mistaken constraint makes some valid events unstorable.
    sqlx::query(
        "ALTER TABLE events ADD CONSTRAINT no_quarantine CHECK (position(convert_to('QUARANTINE', 'UTF8') IN payload) = 0)",
    )
    .execute(&mesh.pool)
    .await?;

    let ledger = Arc::new(Ledger::default());
    let good = tokio::spawn(load::run(
        mesh.gateway_url(),
        mesh.pki.clone(),
        LoadOptions {
            events_per_device: 2_500,
            rate: 4_000.0,
            ..Default::default()
        },
        ledger.clone(),
    ));
    ledger.progress(1_000).await?;

    // Poison 1: three undecodable messages, straight onto the bus (as the
    // gateway user, the only one allowed to publish events).
    let gateway_nats =
        vigil_common::nats::connect(&mesh.nats.settings("gateway"), "poisoner").await?;
    let js = jetstream::new(gateway_nats.clone());
    for i in 0..3 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Content-Type", PROTOBUF_CONTENT_TYPE);
        js.publish_with_headers(
            subjects::events_subject("acme", 3002),
            headers,
            Bytes::from(format!("\u{ff}garbage {i}")),
        )
        .await?
        .await?;
    }
    // Poison 2: three valid requests of five events each that Postgres
    // refuses.
    let mut device = mesh.device("acme", "cam-01").await?;
    let mut rng = rand::rng();
    let mut quarantined = Vec::new();
    for _ in 0..3 {
        let events: Vec<_> = (0..5)
            .map(|_| {
                let mut e = vigil_client::events::sample(
                    vigil_client::events::Kind::File,
                    &mut rng,
                    vigil_common::now_millis(),
                );
                e.message = "QUARANTINE this file".into();
                e
            })
            .collect();
        quarantined.extend(events.iter().map(|e| e.uid().to_owned()));
        assert_eq!(
            device
                .publish(PublishRequest { events })
                .await?
                .into_inner()
                .accepted,
            5
        );
    }

    // Good traffic is not held up: all of it lands.
    good.await??;
    let outcome = ledger
        .check(&mesh.pool, Duration::ZERO, Duration::from_secs(60))
        .await?;
    eprintln!("{}\n{}", Outcome::HEADER, outcome.row("poison mixed in"));
    assert_eq!(
        (outcome.lost, outcome.duplicated, outcome.acknowledged),
        (0, 0, 10_000)
    );

    // Each poison message ends in the DLQ after exactly 3 deliveries.
    let admin = vigil_common::nats::connect(&mesh.nats.settings("admin"), "operator").await?;
    let admin_js = jetstream::new(admin);
    wait_until(Duration::from_secs(30), "6 dead letters", || async {
        dlq::list(&admin_js).await.map(|l| l.len()).unwrap_or(0) == 6
    })
    .await?;
    let letters = dlq::list(&admin_js).await?;
    // A delivery is spent on a message only when Postgres refuses it, or
    // when its insert failed for another reason (Postgres unreachable, the
    // pool timed out under load), which the writer counts by result.
    let writer = mesh.registries[1].render();
    let other_failures = vigil_common::metrics::sample(
        &writer,
        "vigil_writer_insert_duration_seconds_count",
        &[r#"result="unavailable""#],
    )
    .unwrap_or(0.0);
    for letter in &letters {
        if other_failures == 0.0 {
            assert_eq!(letter.deliveries, "3", "{letter:?}");
        } else {
            eprintln!("{other_failures} inserts failed for other reasons than the data");
            assert!(
                ["3", "4", "5"].contains(&letter.deliveries.as_str()),
                "{letter:?}"
            );
        }
        assert!(
            letter.original_subject.starts_with("events.acme."),
            "{letter:?}"
        );
        assert_eq!(letter.consumer, "EVENTS/writer");
    }
    let (garbage, refused): (Vec<_>, Vec<_>) = letters
        .iter()
        .partition(|l| l.reason.contains("EventBatch"));
    assert_eq!((garbage.len(), refused.len()), (3, 3), "{letters:#?}");
    assert!(
        refused.iter().all(|l| l.reason.contains("no_quarantine")),
        "{refused:#?}"
    );
    let stored_quarantined = |pool: sqlx::PgPool, ids: Vec<String>| async move {
        let ids: Vec<uuid::Uuid> = ids
            .iter()
            .filter_map(|i| uuid::Uuid::parse_str(i).ok())
            .collect();
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE uid = ANY($1)")
            .bind(ids)
            .fetch_one(&pool)
            .await
    };
    assert_eq!(
        stored_quarantined(mesh.pool.clone(), quarantined.clone()).await?,
        0
    );

    // The operator fixes the cause and replays one letter: its five events
    // land, once; the letter is gone, so replaying it again is refused.
    sqlx::query("ALTER TABLE events DROP CONSTRAINT no_quarantine")
        .execute(&mesh.pool)
        .await?;
    let first = refused[0].sequence;
    let started = Instant::now();
    dlq::replay(&admin_js, first).await?;
    mesh.wait_for_events(10_005).await?;
    eprintln!("replayed dead letter landed in {:?}", started.elapsed());
    assert!(matches!(
        dlq::replay(&admin_js, first).await,
        Err(dlq::DlqError::NotFound(_))
    ));
    // The other two, and the garbage discarded.
    for letter in &refused[1..] {
        dlq::replay(&admin_js, letter.sequence).await?;
    }
    for letter in &garbage {
        dlq::discard(&admin_js, letter.sequence).await?;
    }
    mesh.wait_for_events(10_015).await?;
    assert_eq!(
        stored_quarantined(mesh.pool.clone(), quarantined).await?,
        15
    );
    assert!(dlq::list(&admin_js).await?.is_empty());
    // Nothing else turns up later.
    device
        .publish(PublishRequest {
            events: vec![vigil_client::events::sample(
                vigil_client::events::Kind::Dns,
                &mut rng,
                vigil_common::now_millis(),
            )],
        })
        .await?;
    mesh.wait_for_events(10_016).await?;
    mesh.stop().await;
    Ok(())
}
