//! Who may do what, attacked from every side: the role matrix over every
//! RPC, tenant isolation under 1,000 random queries, Postgres roles and
//! row-level security underneath the reader, the audit trail, and query
//! deadlines that Postgres honours too.

use std::collections::HashSet;
use std::time::Duration;

use prost::Message;
use rand::Rng;
use rand::seq::IndexedRandom;
use sqlx::{Connection, Row};
use tonic::Code;
use vigil_client::TlsFiles;
use vigil_e2e::{Mesh, wait_until};
use vigil_proto::event::v1::SecurityEvent;
use vigil_proto::finding::v1::Finding;
use vigil_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use vigil_proto::ingest::v1::{PublishRequest, PublishStreamRequest};
use vigil_proto::query::v1::query_service_client::QueryServiceClient;
use vigil_proto::query::v1::{
    GetEventRequest, GetFindingRequest, ListAuditRecordsRequest, ListEventsRequest,
    ListFindingsRequest,
};

const KINDS: [vigil_client::events::Kind; 4] = [
    vigil_client::events::Kind::LoginFailure,
    vigil_client::events::Kind::Dns,
    vigil_client::events::Kind::Process,
    vigil_client::events::Kind::Network,
];

/// `n` events of mixed kinds and severities over the last `n` seconds.
fn events(n: usize) -> Vec<SecurityEvent> {
    let mut rng = rand::rng();
    let now = vigil_common::now_millis();
    (0..n)
        .map(|i| {
            let kind = KINDS[i % KINDS.len()];
            let mut e = vigil_client::events::sample(kind, &mut rng, now - i as i64 * 1000);
            e.severity_id = rng.random_range(1..=6);
            e
        })
        .collect()
}

/// Publishes `n` findings for `tenant` as the correlator would.
async fn publish_findings(mesh: &Mesh, tenant: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let nats =
        vigil_common::nats::connect(&mesh.nats.settings("correlator"), "test-findings").await?;
    let js = async_nats::jetstream::new(nats);
    let now = vigil_common::now_millis();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{:032x}", rand::random::<u128>());
        let rule = ["brute-force", "port-scan"][i % 2];
        let finding = Finding {
            activity_id: 1,
            severity_id: (3 + (i % 3)) as i32,
            metadata: Some(vigil_proto::event::v1::Metadata {
                uid: format!("{id}-v1"),
                tenant_uid: tenant.into(),
                sequence: 1,
                ..Default::default()
            }),
            finding_info: Some(vigil_proto::finding::v1::FindingInfo {
                uid: id.clone(),
                title: "test finding".into(),
                analytic: Some(vigil_proto::finding::v1::Analytic {
                    uid: rule.into(),
                    name: rule.into(),
                    type_id: 1,
                }),
                ..Default::default()
            }),
            start_time: now - 60_000 * (i as i64 + 1),
            end_time: now - 60_000 * i as i64,
            count: 5,
            time: now,
            class_uid: 2004,
            category_uid: 2,
            type_uid: 200401,
            ..Default::default()
        };
        let subject = vigil_common::subjects::findings_subject(tenant, finding.rule_id());
        js.publish(subject, finding.encode_to_vec().into())
            .await?
            .await?;
        ids.push(id);
    }
    Ok(ids)
}

async fn wait_for_findings(mesh: &Mesh, n: i64) -> anyhow::Result<()> {
    wait_until(Duration::from_secs(20), "findings stored", || async {
        mesh.stored_findings().await.unwrap_or(0) >= n
    })
    .await
}

fn user_files(mesh: &Mesh, name: &str) -> TlsFiles {
    let p = mesh.pki.user(name);
    TlsFiles {
        ca: mesh.pki.ca(),
        cert: p.cert,
        key: p.key,
    }
}

/// The outcome of one call as the matrix writes it.
fn code<T>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_matrix_every_identity_times_every_rpc() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let mut device = mesh.device("acme", "cam-01").await?;
    let seeded = events(3);
    let event_id = seeded[0].uid().to_owned();
    device.publish(PublishRequest { events: seeded }).await?;
    let finding_id = publish_findings(&mesh, "acme", 1).await?.remove(0);
    mesh.wait_for_events(3).await?;
    wait_for_findings(&mesh, 1).await?;

    let service = {
        let p = mesh.pki.nats_client("writer");
        TlsFiles {
            ca: mesh.pki.ca(),
            cert: p.cert,
            key: p.key,
        }
    };
    let other = mesh.pki.bad("other-domain");
    let other = TlsFiles {
        ca: mesh.pki.ca(),
        cert: other.cert,
        key: other.key,
    };
    use Code::{Ok as OK, PermissionDenied as PD, Unauthenticated as UA};
    // Publish, PublishStream, ListEvents, GetEvent, ListFindings,
    // GetFinding, ListAuditRecords (operational: admins only), and the
    // schema catalogue's ListClasses and GetClass (any authenticated identity)
    let matrix: Vec<(&str, TlsFiles, [Code; 9])> = vec![
        (
            "device acme/cam-01",
            mesh.device_files("acme", "cam-01"),
            [OK, OK, PD, PD, PD, PD, PD, OK, OK],
        ),
        (
            "analyst (3 tenants)",
            user_files(&mesh, "analyst"),
            [PD, PD, OK, OK, OK, OK, PD, OK, OK],
        ),
        (
            "acme-analyst",
            user_files(&mesh, "acme-analyst"),
            [PD, PD, OK, OK, OK, OK, PD, OK, OK],
        ),
        (
            "admin",
            user_files(&mesh, "admin"),
            [PD, PD, OK, OK, OK, OK, OK, OK, OK],
        ),
        (
            "intern (no grant)",
            user_files(&mesh, "intern"),
            [PD, PD, PD, PD, PD, PD, PD, OK, OK],
        ),
        (
            "service nats/writer",
            service,
            [PD, PD, PD, PD, PD, PD, PD, OK, OK],
        ),
        (
            "spiffe://evil.example/user/admin",
            other,
            [UA, UA, UA, UA, UA, UA, UA, UA, UA],
        ),
    ];
    let mut table = String::from(
        "identity | Publish | PublishStream | ListEvents | GetEvent | ListFindings | GetFinding | ListAuditRecords | ListClasses | GetClass\n",
    );
    let mut wrong = Vec::new();
    for (who, files, expected) in matrix {
        let mut ingest =
            IngestServiceClient::new(vigil_client::connect(&mesh.gateway_url(), &files).await?);
        let mut query =
            QueryServiceClient::new(vigil_client::connect(&mesh.reader_url(), &files).await?);
        let mut catalogue =
            vigil_proto::schema::v1::schema_service_client::SchemaServiceClient::new(
                vigil_client::connect(&mesh.gateway_url(), &files).await?,
            );
        let stream_code = match ingest
            .publish_stream(tokio_stream::iter(vec![PublishStreamRequest {
                batch_seq: 1,
                events: events(1),
            }]))
            .await
        {
            Ok(response) => {
                let mut acks = response.into_inner();
                code(acks.message().await)
            }
            Err(s) => s.code(),
        };
        let got = [
            code(ingest.publish(PublishRequest { events: events(1) }).await),
            stream_code,
            code(query.list_events(ListEventsRequest::default()).await),
            code(
                query
                    .get_event(GetEventRequest {
                        event_id: event_id.clone(),
                    })
                    .await,
            ),
            code(query.list_findings(ListFindingsRequest::default()).await),
            code(
                query
                    .get_finding(GetFindingRequest {
                        finding_id: finding_id.clone(),
                    })
                    .await,
            ),
            code(
                query
                    .list_audit_records(ListAuditRecordsRequest::default())
                    .await,
            ),
            code(
                catalogue
                    .list_classes(vigil_proto::schema::v1::ListClassesRequest {})
                    .await,
            ),
            code(
                catalogue
                    .get_class(vigil_proto::schema::v1::GetClassRequest { class_uid: 3002 })
                    .await,
            ),
        ];
        table.push_str(&format!("{who} | {got:?}\n"));
        if got != expected {
            wrong.push(format!("{who}: expected {expected:?}, got {got:?}"));
        }
    }
    println!("{table}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_never_sees_another_tenants_rows_in_1000_random_queries() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let mut acme = mesh.device("acme", "cam-01").await?;
    let mut globex = mesh.device("globex", "sensor-01").await?;
    let (acme_events, globex_events) = (events(150), events(150));
    let mut all_event_ids: Vec<String> = acme_events
        .iter()
        .chain(&globex_events)
        .map(|e| e.uid().to_owned())
        .collect();
    let globex_ids: HashSet<String> = globex_events.iter().map(|e| e.uid().to_owned()).collect();
    acme.publish(PublishRequest {
        events: acme_events,
    })
    .await?;
    globex
        .publish(PublishRequest {
            events: globex_events,
        })
        .await?;
    let mut finding_ids = publish_findings(&mesh, "acme", 10).await?;
    let globex_findings = publish_findings(&mesh, "globex", 10).await?;
    finding_ids.extend(globex_findings.iter().cloned());
    mesh.wait_for_events(300).await?;
    wait_for_findings(&mesh, 20).await?;
    // Ids nobody has, for the "exactly like a missing one" comparison.
    all_event_ids.push(uuid::Uuid::now_v7().to_string());
    finding_ids.push(format!("{:032x}", rand::random::<u128>()));

    let mut analyst = mesh.user("acme-analyst").await?;
    let mut rng = rand::rng();
    let classes = [3002, 4003, 1007, 4001, 0, 99];
    let devices = ["", "cam-01", "sensor-01", "host-01"];
    let (mut rows_seen, mut not_found) = (0usize, 0usize);
    let mut page_token = String::new();
    for i in 0..1000 {
        match i % 4 {
            0 => {
                let request = ListEventsRequest {
                    min_severity: rng.random_range(0..=6),
                    class_uids: (0..rng.random_range(0..3))
                        .filter_map(|_| classes.choose(&mut rng).copied())
                        .collect(),
                    source_device: devices.choose(&mut rng).copied().unwrap_or("").into(),
                    start_time: if rng.random_bool(0.3) {
                        vigil_common::now_millis() - rng.random_range(0..200_000)
                    } else {
                        0
                    },
                    end_time: 0,
                    limit: rng.random_range(0..60),
                    page_token: std::mem::take(&mut page_token),
                };
                let response = match analyst.list_events(request).await {
                    Ok(r) => r.into_inner(),
                    // A token from an earlier, different query.
                    Err(s) if s.code() == Code::InvalidArgument => continue,
                    Err(s) => anyhow::bail!("ListEvents: {s}"),
                };
                for e in &response.events {
                    let tenant = e.metadata.as_ref().map(|m| m.tenant_uid.as_str());
                    assert_eq!(tenant, Some("acme"), "query {i} leaked {}", e.uid());
                    assert!(!globex_ids.contains(e.uid()));
                }
                rows_seen += response.events.len();
                if rng.random_bool(0.5) {
                    page_token = response.next_page_token;
                }
            }
            1 => {
                let id = all_event_ids.choose(&mut rng).cloned().unwrap_or_default();
                match analyst
                    .get_event(GetEventRequest {
                        event_id: id.clone(),
                    })
                    .await
                {
                    Ok(r) => {
                        let e = r.into_inner().event.unwrap_or_default();
                        assert!(!globex_ids.contains(&id), "GetEvent leaked {id}");
                        assert_eq!(e.metadata.map(|m| m.tenant_uid).as_deref(), Some("acme"));
                        rows_seen += 1;
                    }
                    Err(s) => {
                        assert_eq!(s.code(), Code::NotFound, "{s}");
                        assert_eq!(s.message(), format!("event {id} not found"));
                        not_found += 1;
                    }
                }
            }
            2 => {
                let request = ListFindingsRequest {
                    min_severity: rng.random_range(0..=6),
                    rule_id: ["", "brute-force", "port-scan"]
                        .choose(&mut rng)
                        .copied()
                        .unwrap_or("")
                        .into(),
                    limit: rng.random_range(0..30),
                    ..Default::default()
                };
                let response = analyst.list_findings(request).await?.into_inner();
                for f in &response.findings {
                    assert_eq!(f.tenant_uid(), "acme", "query {i} leaked {}", f.uid());
                }
                rows_seen += response.findings.len();
            }
            _ => {
                let id = finding_ids.choose(&mut rng).cloned().unwrap_or_default();
                match analyst
                    .get_finding(GetFindingRequest {
                        finding_id: id.clone(),
                    })
                    .await
                {
                    Ok(r) => {
                        let r = r.into_inner();
                        assert!(!globex_findings.contains(&id), "GetFinding leaked {id}");
                        assert_eq!(r.finding.as_ref().map(|f| f.tenant_uid()), Some("acme"));
                        rows_seen += 1;
                    }
                    Err(s) => {
                        assert_eq!(s.code(), Code::NotFound, "{s}");
                        assert_eq!(s.message(), format!("finding {id} not found"));
                        not_found += 1;
                    }
                }
            }
        }
    }
    println!("1000 queries: {rows_seen} acme rows returned, {not_found} NOT_FOUND, 0 globex rows");
    assert!(rows_seen > 1000, "the queries must actually return rows");
    assert!(
        not_found > 100,
        "foreign and missing ids must have been asked for"
    );
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_roles_grant_least_privilege_and_rls_scopes_the_reader() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let mut acme = mesh.device("acme", "cam-01").await?;
    let mut globex = mesh.device("globex", "sensor-01").await?;
    acme.publish(PublishRequest { events: events(5) }).await?;
    globex.publish(PublishRequest { events: events(7) }).await?;
    mesh.wait_for_events(12).await?;

    // The reader's role: nothing without a scope; its scope only; no writes.
    let mut reader = sqlx::PgConnection::connect(&mesh.db.role_url("reader")).await?;
    let count = |sql: &'static str| sqlx::query(sql);
    let n: i64 = count("SELECT count(*) FROM events")
        .fetch_one(&mut reader)
        .await?
        .try_get(0)?;
    assert_eq!(n, 0, "no vigil.tenants set: RLS shows nothing");
    let mut tx = reader.begin().await?;
    sqlx::query("SELECT set_config('vigil.tenants', 'acme', true)")
        .execute(&mut *tx)
        .await?;
    let tenants: Vec<String> = sqlx::query("SELECT DISTINCT tenant FROM events")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    assert_eq!(tenants, ["acme"]);
    // The audit trail is for all-tenants sessions (admins) only.
    let audit_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit")
        .fetch_one(&mut *tx)
        .await?;
    assert_eq!(audit_rows, 0);
    tx.rollback().await?;
    for sql in [
        "INSERT INTO events SELECT * FROM events LIMIT 1",
        "UPDATE events SET device_uid = 'x'",
        "DELETE FROM events",
        "DELETE FROM findings",
        "INSERT INTO audit SELECT * FROM audit",
        "CREATE TABLE stolen (x int)",
        "TRUNCATE events",
    ] {
        let err = sqlx::query(sql).execute(&mut reader).await.err();
        let code = err
            .as_ref()
            .and_then(|e| e.as_database_error())
            .and_then(|e| e.code().map(|c| c.into_owned()));
        assert_eq!(
            code.as_deref(),
            Some("42501"),
            "reader role ran {sql}: {err:?}"
        );
    }

    // The writer's role: inserts and reads what it writes; no deletes,
    // no updates of events, no DDL, and the audit trail is append-only.
    let mut writer = sqlx::PgConnection::connect(&mesh.db.role_url("writer")).await?;
    sqlx::query("SELECT set_config('vigil.tenants', '*', false)")
        .execute(&mut writer)
        .await?;
    for sql in [
        "UPDATE events SET device_uid = 'x'",
        "DELETE FROM events",
        "DELETE FROM findings",
        "UPDATE audit SET rows = 0",
        "DELETE FROM audit",
        "TRUNCATE audit",
        "CREATE TABLE stolen (x int)",
        "DROP TABLE events",
    ] {
        let err = sqlx::query(sql).execute(&mut writer).await.err();
        let code = err
            .as_ref()
            .and_then(|e| e.as_database_error())
            .and_then(|e| e.code().map(|c| c.into_owned()));
        assert!(
            matches!(code.as_deref(), Some("42501") | Some("42P01")),
            "writer role ran {sql}: {err:?}"
        );
    }
    // Even the owner cannot rewrite the audit trail.
    let mut owner = sqlx::PgConnection::connect(&mesh.db.url).await?;
    sqlx::query(
        "INSERT INTO audit (audit_id, time, service, caller, rpc, filter, rows, outcome)
         VALUES (gen_random_uuid(), now(), 'test', 'x', 'y', '{}', 0, 'OK')",
    )
    .execute(&mut owner)
    .await?;
    for sql in [
        "UPDATE audit SET rows = 1",
        "DELETE FROM audit",
        "TRUNCATE audit",
    ] {
        let err = sqlx::query(sql).execute(&mut owner).await.err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.to_string().contains("append-only")),
            "owner ran {sql}: {err:?}"
        );
    }
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_is_audited_and_the_trail_cannot_be_purged() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let mut device = mesh.device("acme", "cam-01").await?;
    device.publish(PublishRequest { events: events(4) }).await?;
    mesh.wait_for_events(4).await?;
    let mut analyst = mesh.user("acme-analyst").await?;
    let listed = analyst
        .list_events(ListEventsRequest {
            min_severity: 1,
            source_device: "cam-01".into(),
            limit: 3,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(listed.events.len(), 3);
    let missing = uuid::Uuid::now_v7().to_string();
    let _ = analyst
        .get_event(GetEventRequest {
            event_id: missing.clone(),
        })
        .await;
    let mut intern = mesh.user("intern").await?;
    let _ = intern.list_events(ListEventsRequest::default()).await;

    wait_until(Duration::from_secs(15), "audit rows", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM audit")
            .fetch_one(&mesh.pool)
            .await
            .unwrap_or(0)
            >= 3
    })
    .await?;
    let rows =
        sqlx::query("SELECT caller, rpc, filter::text, rows, outcome FROM audit ORDER BY time")
            .fetch_all(&mesh.pool)
            .await?;
    let seen: Vec<(String, String, serde_json::Value, i32, String)> = rows
        .iter()
        .map(|r| {
            let filter: String = r.try_get(2)?;
            Ok((
                r.try_get(0)?,
                r.try_get(1)?,
                serde_json::from_str(&filter)?,
                r.try_get(3)?,
                r.try_get(4)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let acme_analyst = "spiffe://vigil.local/user/acme-analyst";
    assert_eq!(seen[0].0, acme_analyst);
    assert_eq!(seen[0].1, "/vigil.query.v1.QueryService/ListEvents");
    assert_eq!(seen[0].2["source_device"], "cam-01");
    assert_eq!(seen[0].2["limit"], 3);
    assert_eq!((seen[0].3, seen[0].4.as_str()), (3, "OK"));
    assert_eq!(seen[1].1, "/vigil.query.v1.QueryService/GetEvent");
    assert_eq!(seen[1].2["event_id"], missing.as_str());
    assert_eq!((seen[1].3, seen[1].4.as_str()), (0, "NOT_FOUND"));
    assert_eq!(seen[2].0, "spiffe://vigil.local/user/intern");
    assert_eq!(seen[2].4, "PERMISSION_DENIED");

    // Admins read the trail over gRPC (an operational RPC, itself audited).
    let trail = mesh
        .user("admin")
        .await?
        .list_audit_records(ListAuditRecordsRequest {
            caller: acme_analyst.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .records;
    let rpcs: Vec<&str> = trail.iter().map(|r| r.rpc.as_str()).collect();
    assert_eq!(
        rpcs,
        [
            "/vigil.query.v1.QueryService/GetEvent",
            "/vigil.query.v1.QueryService/ListEvents"
        ]
    );

    // JetStream refuses to delete or purge the AUDIT stream's messages,
    // even for the admin user.
    let admin = vigil_common::nats::connect(&mesh.nats.settings("admin"), "test-admin").await?;
    let js = async_nats::jetstream::new(admin);
    let stream = js.get_stream(vigil_common::subjects::AUDIT_STREAM).await?;
    assert!(
        stream.delete_message(1).await.is_err(),
        "audit message deleted"
    );
    assert!(stream.purge().await.is_err(), "audit stream purged");
    // Only the reader may publish audit records.
    let subscriber =
        vigil_common::nats::connect(&mesh.nats.settings("subscriber"), "test-sub").await?;
    let forged = async_nats::jetstream::new(subscriber)
        .publish("audit.reader", "forged".into())
        .await;
    let acked = match forged {
        Ok(ack) => tokio::time::timeout(Duration::from_secs(2), ack)
            .await
            .is_ok_and(|a| a.is_ok()),
        Err(_) => false,
    };
    assert!(!acked, "a subscriber forged an audit record");
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_its_deadline_is_cancelled_in_postgres_too() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(vigil_e2e::MeshOptions {
        reader_query_timeout_secs: 2,
        ..Default::default()
    })
    .await?;
    // Hold a lock the reader's SELECT must wait for.
    let mut blocker = sqlx::PgConnection::connect(&mesh.db.url).await?;
    let mut tx = blocker.begin().await?;
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let mut analyst = mesh.analyst().await?;
    let mut request = tonic::Request::new(ListEventsRequest::default());
    request.set_timeout(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let status = analyst.list_events(request).await.err();
    let code = status.as_ref().map(tonic::Status::code);
    assert!(
        matches!(
            code,
            Some(Code::DeadlineExceeded)
                | Some(Code::Cancelled)
                | Some(Code::Unavailable)
                | Some(Code::Internal)
        ),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // While the lock is still held, Postgres has already cancelled the
    // reader's statement (statement_timeout = the caller's deadline).
    let reader_role = format!("{}_reader", mesh.db.name());
    wait_until(
        Duration::from_secs(3),
        "reader statement cancelled",
        || async {
            sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND wait_event_type = 'Lock'",
        )
        .bind(&reader_role)
        .fetch_one(&mesh.pool)
        .await
        .is_ok_and(|n| n == 0)
        },
    )
    .await?;
    // Without a client deadline, the reader's own limit (2 s here) applies,
    // and the caller is told so.
    let started = std::time::Instant::now();
    let status = analyst
        .list_events(ListEventsRequest::default())
        .await
        .err();
    assert_eq!(
        status.as_ref().map(tonic::Status::code),
        Some(Code::DeadlineExceeded),
        "{status:?}"
    );
    assert!(
        status
            .as_ref()
            .is_some_and(|s| s.message().contains("Postgres cancelled it")),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    tx.rollback().await?;
    // And the reader answers the next query normally.
    analyst.list_events(ListEventsRequest::default()).await?;
    mesh.stop().await;
    Ok(())
}
