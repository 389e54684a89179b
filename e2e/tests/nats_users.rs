//! Each service's NATS user can do what its service needs and is refused
//! what it must not do (nats-config/users.conf), and NATS-native clients
//! get ListEvents on `query.events`.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use tokio::sync::mpsc;
use vigil_common::subjects::{
    self, EVENTS_STREAM, QUERY_EVENTS, SERVICE_ERROR_CODE_HEADER, WRITER_CONSUMER,
};
use vigil_e2e::Mesh;
use vigil_proto::event::v1::EventBatch;
use vigil_proto::ingest::v1::PublishRequest;
use vigil_proto::query::v1::{ListEventsRequest, ListEventsResponse};

/// A connection as `user`, with the server's permission errors collected.
async fn connect_as(
    mesh: &Mesh,
    user: &str,
) -> anyhow::Result<(async_nats::Client, mpsc::UnboundedReceiver<String>)> {
    let settings = mesh.nats.settings(user);
    let (tx, rx) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(settings.ca)
        .add_client_certificate(settings.cert, settings.key)
        .custom_inbox_prefix(settings.inbox_prefix)
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(mesh.nats.url())
        .await?;
    Ok((client, rx))
}

/// Waits for a permissions violation mentioning `what`.
async fn refused(errors: &mut mpsc::UnboundedReceiver<String>, what: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let e = tokio::time::timeout_at(deadline, errors.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no permissions violation for {what}"))?
            .ok_or_else(|| anyhow::anyhow!("connection closed"))?;
        if e.to_lowercase().contains("permissions violation") && e.contains(what) {
            return Ok(());
        }
    }
}

async fn stream_messages(js: &jetstream::Context) -> anyhow::Result<u64> {
    Ok(js
        .get_stream(EVENTS_STREAM)
        .await?
        .info()
        .await?
        .state
        .messages)
}

/// A JetStream publish that must not be stored: the request fails (no ack).
async fn js_publish_refused(client: &async_nats::Client, subject: &str) -> anyhow::Result<()> {
    let mut js = jetstream::new(client.clone());
    js.set_timeout(Duration::from_millis(500));
    let ack = js
        .publish(subject.to_owned(), Bytes::from_static(b"x"))
        .await;
    let result = match ack {
        Ok(ack) => ack.await.map(|_| ()),
        Err(e) => Err(e),
    };
    anyhow::ensure!(result.is_err(), "publish to {subject} was acknowledged");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_user_can_do_its_job_and_nothing_else() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let (admin, _) = connect_as(&mesh, "admin").await?;
    let admin_js = jetstream::new(admin.clone());
    let subject = subjects::events_subject("acme", 3002);

    // gateway: may publish events (and gets the ack on its inbox)...
    let (gateway, mut gateway_errors) = connect_as(&mesh, "gateway").await?;
    let batch = EventBatch::default().encode_to_vec();
    jetstream::new(gateway.clone())
        .publish(subject.clone(), batch.into())
        .await?
        .await?;
    assert_eq!(stream_messages(&admin_js).await?, 1);
    // ...but not answer queries, read events, or call the JetStream API.
    gateway.publish(QUERY_EVENTS, Bytes::new()).await?;
    refused(&mut gateway_errors, "query.events").await?;
    let _sub = gateway.subscribe("events.>").await?;
    refused(&mut gateway_errors, "events.>").await?;
    gateway
        .publish("$JS.API.STREAM.DELETE.EVENTS", Bytes::new())
        .await?;
    refused(&mut gateway_errors, "$JS.API.STREAM.DELETE.EVENTS").await?;

    // writer: may open its own consumer (the in-process writer pulling and
    // acking with this user is what stores events in every other test)...
    let (writer, mut writer_errors) = connect_as(&mesh, "writer").await?;
    let consumer: jetstream::consumer::PullConsumer = jetstream::new(writer.clone())
        .get_consumer_from_stream(WRITER_CONSUMER, EVENTS_STREAM)
        .await?;
    assert_eq!(
        consumer.cached_info().config.durable_name.as_deref(),
        Some(WRITER_CONSUMER)
    );
    // ...and dead-letter to its own DLQ subject only...
    jetstream::new(writer.clone())
        .publish(
            subjects::dlq_subject(EVENTS_STREAM, WRITER_CONSUMER),
            Bytes::from_static(b"x"),
        )
        .await?
        .await?;
    js_publish_refused(&writer, "dlq.EVENTS.someone-else").await?;
    refused(&mut writer_errors, "dlq.EVENTS.someone-else").await?;
    // ...but not publish events, nor touch streams.
    js_publish_refused(&writer, &subject).await?;
    refused(&mut writer_errors, "events.acme.3002").await?;
    writer
        .publish("$JS.API.STREAM.DELETE.EVENTS", Bytes::new())
        .await?;
    refused(&mut writer_errors, "$JS.API.STREAM.DELETE.EVENTS").await?;

    // reader: may not publish events or read the event firehose.
    let (reader, mut reader_errors) = connect_as(&mesh, "reader").await?;
    reader.publish(subject.clone(), Bytes::new()).await?;
    refused(&mut reader_errors, "events.acme.3002").await?;
    let _sub = reader.subscribe("events.>").await?;
    refused(&mut reader_errors, "events.>").await?;

    // admin: the JetStream API and DLQ replay to events, but not the live
    // firehose or the query API.
    let (admin2, mut admin_errors) = connect_as(&mesh, "admin").await?;
    let _sub = admin2.subscribe("events.>").await?;
    refused(&mut admin_errors, "events.>").await?;
    admin2.publish(QUERY_EVENTS, Bytes::new()).await?;
    refused(&mut admin_errors, "query.events").await?;

    // subscriber: live events and queries, no publishing events.
    let (subscriber, mut subscriber_errors) = connect_as(&mesh, "subscriber").await?;
    js_publish_refused(&subscriber, &subject).await?;
    refused(&mut subscriber_errors, "events.acme.3002").await?;

    // correlator: publishes findings and keeps its checkpoint...
    let (correlator, mut correlator_errors) = connect_as(&mesh, "correlator").await?;
    let cjs = jetstream::new(correlator.clone());
    cjs.publish(
        subjects::findings_subject("acme", "brute-force"),
        Bytes::from_static(b"x"),
    )
    .await?
    .await?;
    let bucket = cjs.get_key_value(subjects::CORRELATOR_BUCKET).await?;
    bucket.put("probe", Bytes::from_static(b"1")).await?;
    assert_eq!(bucket.get("probe").await?.as_deref(), Some(&b"1"[..]));
    // ...but may not publish events, read the firehose, or pull the
    // writer's consumer.
    js_publish_refused(&correlator, &subject).await?;
    refused(&mut correlator_errors, "events.acme.3002").await?;
    let _sub = correlator.subscribe("events.>").await?;
    refused(&mut correlator_errors, "events.>").await?;
    correlator
        .publish("$JS.API.CONSUMER.MSG.NEXT.EVENTS.writer", Bytes::new())
        .await?;
    refused(
        &mut correlator_errors,
        "$JS.API.CONSUMER.MSG.NEXT.EVENTS.writer",
    )
    .await?;

    // Nothing refused was stored.
    assert_eq!(stream_messages(&admin_js).await?, 1);
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_clients_query_events_and_see_what_grpc_sees() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let mut device = mesh.device("acme", "cam-01").await?;
    let mut rng = rand::rng();
    let now = vigil_common::now_millis();
    let events: Vec<_> = (0..30)
        .map(|i| {
            let mut e = vigil_client::events::sample(
                vigil_client::events::Kind::Dns,
                &mut rng,
                now - i * 1000,
            );
            e.severity_id = if i % 3 == 0 { 5 } else { 1 };
            e
        })
        .collect();
    device.publish(PublishRequest { events }).await?;
    mesh.wait_for_events(30).await?;

    let (subscriber, _) = connect_as(&mesh, "subscriber").await?;
    let request = ListEventsRequest {
        min_severity: 4,
        limit: 5,
        ..Default::default()
    };
    let reply = subscriber
        .request(QUERY_EVENTS, request.encode_to_vec().into())
        .await?;
    let over_nats = ListEventsResponse::decode(reply.payload.as_ref())?;
    let over_grpc = mesh
        .analyst()
        .await?
        .list_events(request)
        .await?
        .into_inner();
    assert_eq!(over_nats.events.len(), 5);
    assert_eq!(over_nats.events, over_grpc.events);
    // Page tokens are bound to their caller: the NATS client's token is no
    // good to the analyst.
    assert!(!over_nats.next_page_token.is_empty());
    assert_ne!(over_nats.next_page_token, over_grpc.next_page_token);
    let replayed = mesh
        .analyst()
        .await?
        .list_events(ListEventsRequest {
            min_severity: 4,
            limit: 5,
            page_token: over_nats.next_page_token.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        replayed.map(|_| ()).map_err(|s| s.code()),
        Err(tonic::Code::InvalidArgument)
    );

    // A bad request gets an error header naming the problem, not silence.
    let reply = subscriber
        .request(QUERY_EVENTS, Bytes::from_static(b"\xff\xff\xff"))
        .await?;
    let code = reply
        .headers
        .as_ref()
        .and_then(|h| h.get(SERVICE_ERROR_CODE_HEADER))
        .map(|v| v.as_str().to_owned());
    assert_eq!(code.as_deref(), Some("400"));
    let bad_token = ListEventsRequest {
        page_token: "garbage".into(),
        ..Default::default()
    };
    let reply = subscriber
        .request(QUERY_EVENTS, bad_token.encode_to_vec().into())
        .await?;
    let error = reply
        .headers
        .as_ref()
        .and_then(|h| h.get(subjects::SERVICE_ERROR_HEADER))
        .map(|v| v.as_str().to_owned());
    assert!(error.is_some_and(|e| e.contains("page_token")));

    // The live firehose is there for subscribers too.
    let mut live = subscriber.subscribe("events.>").await?;
    subscriber.flush().await?;
    let one = vigil_client::events::sample(
        vigil_client::events::Kind::File,
        &mut rng,
        vigil_common::now_millis(),
    );
    let id = one.uid().to_owned();
    device.publish(PublishRequest { events: vec![one] }).await?;
    let message = tokio::time::timeout(Duration::from_secs(5), live.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no live event"))?;
    // Stored and delivered with the tenant's partition slot appended.
    let subject = message.subject.as_str();
    assert!(subject.starts_with("events.acme.1001."), "{subject}");
    assert!(
        vigil_common::subjects::slot_of_subject(subject).is_some(),
        "{subject}"
    );
    assert_eq!(
        EventBatch::decode(message.payload.as_ref())?.events[0]
            .uid()
            .to_owned(),
        id
    );
    mesh.stop().await;
    Ok(())
}

/// Every service user × every kind of subject × publish and subscribe:
/// exactly the cells `nats-config/users.conf` allows succeed, every other
/// one is a permissions violation, and refused publishes store nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_matrix_of_every_user() -> anyhow::Result<()> {
    use std::collections::{BTreeMap, BTreeSet};
    let mesh = Mesh::start().await?;
    // (subject, the stream that would store a publish to it)
    let subjects: [(&str, Option<&str>); 9] = [
        ("events.acme.3002", Some("EVENTS")),
        ("findings.acme.brute-force", Some("FINDINGS")),
        ("dlq.EVENTS.writer", Some("DLQ")),
        ("audit.reader", Some("AUDIT")),
        ("query.events", None),
        ("$JS.API.STREAM.INFO.EVENTS", None),
        ("$KV.CORRELATOR.matrix-probe", Some("KV_CORRELATOR")),
        ("_INBOX_admin.matrix", None),
        ("_INBOX_subscriber.matrix", None),
    ];
    // What users.conf allows, per user: (publish, subscribe).
    let allowed: BTreeMap<&str, (Vec<&str>, Vec<&str>)> = BTreeMap::from([
        ("gateway", (vec!["events.acme.3002"], vec![])),
        ("writer", (vec!["dlq.EVENTS.writer"], vec![])),
        ("reader", (vec!["audit.reader"], vec!["query.events"])),
        (
            "admin",
            (
                vec!["events.acme.3002", "$JS.API.STREAM.INFO.EVENTS"],
                vec!["_INBOX_admin.matrix"],
            ),
        ),
        (
            "subscriber",
            (
                vec!["query.events"],
                vec![
                    "events.acme.3002",
                    "findings.acme.brute-force",
                    "_INBOX_subscriber.matrix",
                ],
            ),
        ),
        (
            "correlator",
            (
                vec!["findings.acme.brute-force", "$KV.CORRELATOR.matrix-probe"],
                vec![],
            ),
        ),
    ]);
    let (admin, _) = connect_as(&mesh, "admin").await?;
    let admin_js = jetstream::new(admin);
    let counts = |js: jetstream::Context| async move {
        let mut out = BTreeMap::new();
        for stream in ["EVENTS", "FINDINGS", "DLQ", "AUDIT", "KV_CORRELATOR"] {
            let info = js.get_stream(stream).await?.info().await?.state.messages;
            out.insert(stream, info);
        }
        anyhow::Ok(out)
    };
    let before = counts(admin_js.clone()).await?;
    let mut expected_growth: BTreeMap<&str, u64> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (user, (may_publish, may_subscribe)) in &allowed {
        let (client, mut errors) = connect_as(&mesh, user).await?;
        let mut subs = Vec::new();
        for (subject, stream) in subjects {
            client
                .publish(subject, Bytes::from_static(b"matrix"))
                .await?;
            if may_publish.contains(&subject)
                && let Some(stream) = stream
            {
                *expected_growth.entry(stream).or_insert(0) += 1;
            }
            subs.push(client.subscribe(subject).await?);
        }
        client.flush().await?;
        // Collect every violation the server reports for this user.
        let mut refused_pub = BTreeSet::new();
        let mut refused_sub = BTreeSet::new();
        let quiet = Duration::from_millis(700);
        while let Ok(Some(e)) = tokio::time::timeout(quiet, errors.recv()).await {
            for (subject, _) in subjects {
                // The server checks (and names) an event subject after its
                // slot mapping: events.acme.3002 is stored as events.acme.3002.<slot>.
                if e.contains(&format!("\"{subject}\"")) || e.contains(&format!("\"{subject}.")) {
                    if e.contains("Publish") {
                        refused_pub.insert(subject);
                    } else if e.contains("Subscription") {
                        refused_sub.insert(subject);
                    }
                }
            }
        }
        for (subject, _) in subjects {
            let pub_ok = !refused_pub.contains(subject);
            let sub_ok = !refused_sub.contains(subject);
            if pub_ok != may_publish.contains(&subject) {
                wrong.push(format!("{user} publish {subject}: allowed={pub_ok}"));
            }
            if sub_ok != may_subscribe.contains(&subject) {
                wrong.push(format!("{user} subscribe {subject}: allowed={sub_ok}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Allowed publishes to stream subjects were stored, refused ones not.
    let stored = || {
        let (js, before, expected) = (admin_js.clone(), &before, &expected_growth);
        async move {
            counts(js).await.is_ok_and(|now| {
                expected.iter().all(|(s, n)| {
                    now.get(s).copied().unwrap_or(0) >= before.get(s).copied().unwrap_or(0) + n
                })
            })
        }
    };
    vigil_e2e::wait_until(Duration::from_secs(5), "allowed publishes stored", stored).await?;
    let after = counts(admin_js).await?;
    for (stream, n) in &after {
        let grew = n - before.get(stream).copied().unwrap_or(0);
        let expected = expected_growth.get(stream).copied().unwrap_or(0);
        // The writer may dead-letter the undecodable probes, and the
        // running correlator checkpoints after reading them: DLQ and the
        // KV stream hold at least what was published to them.
        if *stream == "DLQ" || *stream == "KV_CORRELATOR" {
            assert!(
                grew >= expected,
                "{stream}: grew {grew}, expected {expected}"
            );
        } else {
            assert_eq!(grew, expected, "{stream}");
        }
    }
    mesh.stop().await;
    Ok(())
}
