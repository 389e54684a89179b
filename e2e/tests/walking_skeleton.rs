//! End to end over mTLS: devices publish through the generated client, the
//! events land in Postgres exactly once, an analyst reads them back newest
//! first with working pagination.

use std::collections::HashSet;

use rand::Rng;
use rand::SeedableRng;
use vigil_e2e::Mesh;
use vigil_proto::event::v1::{Metadata, SecurityEvent, SeverityId};
use vigil_proto::ingest::v1::{PublishRequest, RejectionCode};
use vigil_proto::query::v1::{GetEventRequest, ListEventsRequest};

/// `n` events from now backwards, one every ~3 s, severities spread over
/// every OCSF level.
fn events(n: usize, seed: u64) -> Vec<SecurityEvent> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let now = vigil_common::now_millis();
    (0..n)
        .map(|i| {
            let kind = vigil_client::events::random_kind(&mut rng);
            let time = now - (i as i64) * 3000 - rng.random_range(0..3000);
            let mut e = vigil_client::events::sample(kind, &mut rng, time);
            e.severity_id = [1, 2, 3, 4, 5, 6, 99][rng.random_range(0..7)];
            e
        })
        .collect()
}

fn is_high(e: &SecurityEvent) -> bool {
    (4..=6).contains(&e.severity_id)
}

/// Newest first, ties broken by event id, as the reader orders.
fn newest_first(mut events: Vec<SecurityEvent>) -> Vec<String> {
    events.sort_by(|a, b| (b.time, b.uid()).cmp(&(a.time, a.uid())));
    events.iter().map(|e| e.uid().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_events_from_two_tenants_land_once_and_page_newest_first() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let mut acme = mesh.device("acme", "cam-01").await?;
    let mut globex = mesh.device("globex", "sensor-01").await?;
    let acme_events = events(500, 1);
    let globex_events = events(500, 2);

    let send = |client: &mut vigil_e2e_client::Ingest, events: Vec<SecurityEvent>| {
        let mut client = client.clone();
        async move {
            let mut accepted = 0;
            for chunk in events.chunks(100) {
                let r = client
                    .publish(PublishRequest {
                        events: chunk.to_vec(),
                    })
                    .await?
                    .into_inner();
                assert!(r.rejected.is_empty(), "{:?}", r.rejected);
                accepted += r.accepted;
            }
            anyhow::Ok(accepted)
        }
    };
    let (a, g) = tokio::join!(
        send(&mut acme, acme_events.clone()),
        send(&mut globex, globex_events.clone())
    );
    assert_eq!(a? + g?, 1000);

    mesh.wait_for_events(1000).await?;
    let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT (tenant, uid)) FROM events")
        .fetch_one(&mesh.pool)
        .await?;
    assert_eq!(distinct, 1000);
    let per_tenant: Vec<(String, i64)> =
        sqlx::query_as("SELECT tenant, count(*) FROM events GROUP BY tenant ORDER BY tenant")
            .fetch_all(&mesh.pool)
            .await?;
    assert_eq!(
        per_tenant,
        vec![("acme".to_owned(), 500), ("globex".to_owned(), 500)]
    );

    let all: Vec<SecurityEvent> = acme_events.iter().chain(&globex_events).cloned().collect();
    let expected_high = newest_first(all.iter().filter(|e| is_high(e)).cloned().collect());
    let mut analyst = mesh.analyst().await?;

    // The analyst's first question: the 10 newest events at HIGH or above.
    let top = analyst
        .list_events(ListEventsRequest {
            min_severity: SeverityId::High as i32,
            limit: 10,
            ..Default::default()
        })
        .await?
        .into_inner();
    let ids: Vec<String> = top.events.iter().map(|e| e.uid().to_owned()).collect();
    assert_eq!(ids, expected_high[..10]);
    let first = &top.events[0];
    let meta = first.metadata.clone().unwrap_or_default();
    assert!(
        !meta.tenant_uid.is_empty() && !first.device_uid().is_empty() && meta.logged_time > 0,
        "{meta:?}"
    );

    // Paging through everything at HIGH+ returns each event exactly once,
    // in order.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = analyst
            .list_events(ListEventsRequest {
                min_severity: SeverityId::High as i32,
                limit: 37,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert!(page.events.len() <= 37);
        paged.extend(page.events.iter().map(|e| e.uid().to_owned()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, expected_high);

    // Filters: one class, one device.
    let auth = analyst
        .list_events(ListEventsRequest {
            class_uids: vec![3002],
            source_device: "sensor-01".into(),
            limit: 1000,
            ..Default::default()
        })
        .await?
        .into_inner();
    let expected_auth = globex_events.iter().filter(|e| e.class_uid == 3002).count();
    assert_eq!(auth.events.len(), expected_auth);
    assert!(
        auth.events
            .iter()
            .all(|e| e.class_uid == 3002 && e.device_uid() == "sensor-01")
    );

    // GetEvent returns the event with every field the device sent.
    let sent = &acme_events[7];
    let got = analyst
        .get_event(GetEventRequest {
            event_id: sent.uid().to_owned(),
        })
        .await?
        .into_inner()
        .event;
    let got = got.ok_or_else(|| anyhow::anyhow!("no event"))?;
    assert_eq!(
        (got.message.as_str(), got.time, got.src_endpoint.clone()),
        (sent.message.as_str(), sent.time, sent.src_endpoint.clone())
    );
    let missing = analyst
        .get_event(GetEventRequest {
            event_id: uuid::Uuid::now_v7().to_string(),
        })
        .await;
    assert_eq!(
        missing.map(|_| ()).map_err(|s| s.code()),
        Err(tonic::Code::NotFound)
    );

    mesh.stop().await;
    Ok(())
}

mod vigil_e2e_client {
    pub type Ingest =
        vigil_proto::ingest::v1::ingest_service_client::IngestServiceClient<vigil_e2e::Channel>;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resending_events_creates_no_new_rows() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let mut device = mesh.device("acme", "host-01").await?;
    let batch = events(200, 3);
    let r = device
        .publish(PublishRequest {
            events: batch.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(r.accepted, 200);
    mesh.wait_for_events(200).await?;

    // The same request again: JetStream drops it by Nats-Msg-Id.
    let again = device
        .publish(PublishRequest {
            events: batch.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(again.accepted, 200, "a retry is answered like the original");
    // The same events regrouped (a different Nats-Msg-Id): the writer's
    // idempotent insert drops them. A fresh sentinel event rides along so
    // we know when the writer has processed this request.
    let mut regrouped: Vec<SecurityEvent> = batch[50..120].iter().rev().cloned().collect();
    regrouped.push(events(1, 4).remove(0));
    device.publish(PublishRequest { events: regrouped }).await?;
    // And the same id twice within one request counts once.
    let sentinel = events(1, 5).remove(0);
    let r = device
        .publish(PublishRequest {
            events: vec![sentinel.clone(), sentinel],
        })
        .await?
        .into_inner();
    assert_eq!(r.accepted, 2);

    mesh.wait_for_events(202).await?;
    // Give any straggling duplicate every chance to land, then prove it
    // did not: a last sentinel is written after everything sent before it.
    device
        .publish(PublishRequest {
            events: events(1, 6),
        })
        .await?;
    mesh.wait_for_events(203).await?;
    assert_eq!(mesh.stored_events().await?, 203);
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_batch_accepts_the_valid_events_and_names_each_invalid_field() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let mut device = mesh.device("acme", "cam-01").await?;
    let mut batch = events(6, 7);
    batch[1].severity_id = 7;
    batch[2].class_uid = 0;
    batch[3].time = vigil_common::now_millis() + 365 * 24 * 3600 * 1000;
    batch[4].metadata = Some(Metadata {
        tenant_uid: "globex".into(),
        ..batch[4].metadata.clone().unwrap_or_default()
    });
    let r = device
        .publish(PublishRequest {
            events: batch.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(r.accepted, 2);
    let got: Vec<(u32, String, i32, String)> = r
        .rejected
        .iter()
        .map(|x| (x.index, x.field.clone(), x.code, x.event_id.clone()))
        .collect();
    let invalid = RejectionCode::InvalidArgument as i32;
    assert_eq!(
        got,
        vec![
            (
                1,
                "severity_id".to_owned(),
                invalid,
                batch[1].uid().to_owned()
            ),
            (
                2,
                "class_uid".to_owned(),
                invalid,
                batch[2].uid().to_owned()
            ),
            (3, "time".to_owned(), invalid, batch[3].uid().to_owned()),
            (
                4,
                "metadata.tenant_uid".to_owned(),
                RejectionCode::PermissionDenied as i32,
                batch[4].uid().to_owned()
            ),
        ]
    );
    assert!(r.rejected.iter().all(|x| !x.reason.is_empty()));

    mesh.wait_for_events(2).await?;
    let stored: HashSet<String> = sqlx::query_scalar::<_, uuid::Uuid>("SELECT uid FROM events")
        .fetch_all(&mesh.pool)
        .await?
        .into_iter()
        .map(|u| u.to_string())
        .collect();
    assert_eq!(
        stored,
        HashSet::from([batch[0].uid().to_owned(), batch[5].uid().to_owned()])
    );

    // Too many events in one request is refused as a whole.
    let too_many = events(1001, 8);
    let status = device
        .publish(PublishRequest { events: too_many })
        .await
        .map(|_| ())
        .map_err(|s| s.code());
    assert_eq!(status, Err(tonic::Code::InvalidArgument));
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_stream_acks_each_batch_in_order() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let mut device = mesh.device("globex", "host-02").await?;
    let batches: Vec<_> = (0..5u64)
        .map(|seq| vigil_proto::ingest::v1::PublishStreamRequest {
            batch_seq: seq,
            events: events(20, 100 + seq),
        })
        .collect();
    let mut acks = device
        .publish_stream(tokio_stream::iter(batches))
        .await?
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(ack) = acks.message().await? {
        assert_eq!(ack.accepted, 20);
        seqs.push(ack.batch_seq);
    }
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    mesh.wait_for_events(100).await?;
    mesh.stop().await;
    Ok(())
}
