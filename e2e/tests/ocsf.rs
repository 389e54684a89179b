//! Every OCSF class vigil accepts, end to end: a realistic event of each
//! is accepted by the gateway and comes back from the reader exactly as
//! sent (plus what the gateway sets: tenant, device, logged time, category
//! and type); without an attribute its class requires, or with a class or
//! activity OCSF does not define for it, it is refused naming the attribute.

use vigil_e2e::Mesh;
use vigil_proto::ingest::v1::PublishRequest;
use vigil_proto::query::v1::GetEventRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supported_class_round_trips_and_refusals_name_the_attribute() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let mut device = mesh.device("acme", "cam-01").await?;
    let mut analyst = mesh.analyst().await?;
    let mut rng = rand::rng();
    let now = vigil_common::now_millis();
    let sent: Vec<_> = vigil_client::events::Kind::ALL
        .iter()
        .map(|kind| vigil_client::events::sample(*kind, &mut rng, now - 1000))
        .collect();
    let classes: std::collections::BTreeSet<i32> = sent.iter().map(|e| e.class_uid).collect();
    assert_eq!(
        classes.into_iter().collect::<Vec<_>>(),
        {
            let mut all = vigil_ocsf::SUPPORTED_CLASSES.to_vec();
            all.sort_unstable();
            all
        },
        "the builders cover every supported class"
    );
    let response = device
        .publish(PublishRequest {
            events: sent.clone(),
        })
        .await?
        .into_inner();
    assert!(response.rejected.is_empty(), "{:?}", response.rejected);
    mesh.wait_for_events(sent.len() as i64).await?;
    for event in &sent {
        let got = analyst
            .get_event(GetEventRequest {
                event_id: event.uid().to_owned(),
            })
            .await?
            .into_inner()
            .event
            .ok_or_else(|| anyhow::anyhow!("no event {}", event.uid()))?;
        let mut expected = event.clone();
        let class = vigil_ocsf::schema()
            .class(event.class_uid)
            .ok_or_else(|| anyhow::anyhow!("class {}", event.class_uid))?;
        expected.category_uid = class.category_uid;
        expected.type_uid = i64::from(event.class_uid) * 100 + i64::from(event.activity_id);
        let meta = expected.metadata.get_or_insert_default();
        meta.tenant_uid = "acme".into();
        meta.logged_time = got.metadata.as_ref().map_or(0, |m| m.logged_time);
        // Device outside the System category is OCSF's host profile.
        if let Some(p) = class
            .attributes
            .get("device")
            .and_then(|a| a.profile.clone())
        {
            meta.profiles.push(p);
        }
        let d = expected.device.get_or_insert_default();
        d.uid = "cam-01".into();
        d.name = "cam-01".into();
        assert_eq!(got, expected, "class {}", event.class_uid);
    }

    // Refusals name the attribute and the OCSF rule.
    let mut cases = Vec::new();
    for event in &sent {
        let mut unknown = event.clone();
        unknown.class_uid = 1002;
        cases.push((unknown, "class_uid"));
        let mut activity = event.clone();
        activity.activity_id = 77;
        cases.push((activity, "activity_id"));
    }
    let mut foreign = sent[3].clone();
    foreign.src_endpoint = sent[0].src_endpoint.clone();
    cases.push((foreign, "src_endpoint"));
    let mut no_user = sent[0].clone();
    no_user.user = None;
    cases.push((no_user, "user"));
    let mut no_process = sent[3].clone();
    no_process.process = None;
    cases.push((no_process, "process"));
    let mut no_file = sent[8].clone();
    no_file.file = None;
    cases.push((no_file, "file"));
    let mut no_query = sent[6].clone();
    if let Some(q) = no_query.query.as_mut() {
        q.hostname.clear();
    }
    cases.push((no_query, "query.hostname"));
    for (event, field) in cases {
        let class = event.class_uid;
        let r = device
            .publish(PublishRequest {
                events: vec![event],
            })
            .await?
            .into_inner();
        let rejected = r.rejected.first();
        assert_eq!(
            rejected.map(|x| x.field.as_str()),
            Some(field),
            "class {class}: {rejected:?}"
        );
        assert!(
            rejected.is_some_and(|x| x.reason.contains("OCSF")),
            "{rejected:?}"
        );
    }
    mesh.stop().await;
    Ok(())
}
