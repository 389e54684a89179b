//! `vigil status`: the first thing an operator runs. Each service's
//! readiness, version and uptime (from its `/metrics`: the readiness model
//! its health port reports), the streams' depths and every consumer's lag
//! (JetStream info, as the admin user), the DLQ's size and the events/s
//! the gateways accepted over the last minute.
//!
//! Exit 0 when every service is reachable and ready, 1 otherwise (the
//! report is printed either way).

use std::net::SocketAddr;
use std::time::Duration;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use futures::TryStreamExt;
use serde_json::{Value, json};
use vigil_common::metrics::{sample, scrape};
use vigil_common::subjects;

use crate::Output;
use crate::commands::admin::NatsAdmin;
use crate::exit::{Failure, code};

/// The services to ask and where their `/metrics` is.
#[derive(clap::Args)]
pub struct Status {
    #[command(flatten)]
    nats: NatsAdmin,
    /// Each service's metrics address, as name=host:port (comma-separated
    /// or repeated); the defaults are the services' default ports.
    #[arg(
        long = "metrics",
        env = "VIGIL_STATUS_METRICS",
        value_delimiter = ',',
        value_parser = parse_target,
        default_value = "gateway=127.0.0.1:4447,writer=127.0.0.1:4455,reader=127.0.0.1:4448,correlator=127.0.0.1:4465"
    )]
    targets: Vec<(String, SocketAddr)>,
}

fn parse_target(s: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("expected name=host:port, got {s:?}"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("{name}: bad address {addr:?}: {e}"))?;
    Ok((name.to_owned(), addr))
}

/// How long one scrape or JetStream request may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

struct ServiceStatus {
    name: String,
    addr: SocketAddr,
    /// `None`: unreachable (the reason).
    scraped: Result<Scraped, String>,
}

struct Scraped {
    ready: bool,
    version: String,
    uptime_seconds: f64,
    down: Vec<String>,
    accepted_last_minute: Option<f64>,
}

fn label(line: &str, key: &str) -> Option<String> {
    let at = line.find(&format!("{key}=\""))? + key.len() + 2;
    let rest = &line[at..];
    Some(rest[..rest.find('"')?].to_owned())
}

fn read(text: &str) -> Scraped {
    let version = text
        .lines()
        .find(|l| l.starts_with("vigil_build_info{"))
        .and_then(|l| label(l, "version"))
        .unwrap_or_default();
    let started = sample(text, "process_start_time_seconds", &[]).unwrap_or(0.0);
    let now = vigil_common::now_millis() as f64 / 1000.0;
    let down = text
        .lines()
        .filter(|l| l.starts_with("vigil_dependency_up{") && l.ends_with(" 0"))
        .filter_map(|l| label(l, "dependency"))
        .collect();
    Scraped {
        ready: sample(text, "vigil_ready", &[]) == Some(1.0),
        version,
        uptime_seconds: if started > 0.0 { now - started } else { 0.0 },
        down,
        accepted_last_minute: sample(text, "vigil_gateway_accepted_events_last_minute", &[]),
    }
}

fn uptime(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

pub async fn status(args: Status, ca: &std::path::Path, out: Output) -> Result<(), Failure> {
    let mut services = Vec::new();
    for (name, addr) in &args.targets {
        let scraped = match tokio::time::timeout(ASK_TIMEOUT, scrape(*addr)).await {
            Ok(Ok(text)) => Ok(read(&text)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        };
        services.push(ServiceStatus {
            name: name.clone(),
            addr: *addr,
            scraped,
        });
    }

    let client = tokio::time::timeout(ASK_TIMEOUT, args.nats.connect(ca))
        .await
        .map_err(|_| Failure::new(code::UNAVAILABLE, "NATS: connect timed out"))??;
    let js = async_nats::jetstream::new(client);
    let jetstream_failed = |e: String| Failure::new(code::UNAVAILABLE, format!("JetStream: {e}"));
    let mut streams = Vec::new();
    let mut consumers = Vec::new();
    for name in [
        subjects::EVENTS_STREAM,
        subjects::FINDINGS_STREAM,
        subjects::AUDIT_STREAM,
        subjects::DLQ_STREAM,
    ] {
        let mut stream = tokio::time::timeout(ASK_TIMEOUT, js.get_stream(name))
            .await
            .map_err(|_| jetstream_failed(format!("{name}: timed out")))?
            .map_err(|e| jetstream_failed(format!("{name}: {e}")))?;
        let info = stream
            .info()
            .await
            .map_err(|e| jetstream_failed(format!("{name}: {e}")))?
            .clone();
        streams.push((name, info.state.messages, info.state.bytes));
        let listed: Vec<_> = stream
            .consumers()
            .try_collect()
            .await
            .map_err(|e| jetstream_failed(format!("{name} consumers: {e}")))?;
        for c in listed {
            consumers.push((
                name,
                c.name,
                c.num_pending,
                c.num_ack_pending,
                c.num_redelivered,
            ));
        }
    }
    consumers.sort();
    let dlq = streams
        .iter()
        .find(|(n, ..)| *n == subjects::DLQ_STREAM)
        .map_or(0, |(_, m, _)| *m);
    let accepted_last_minute: f64 = services
        .iter()
        .filter_map(|s| s.scraped.as_ref().ok()?.accepted_last_minute)
        .sum();
    let events_per_second = accepted_last_minute / 60.0;
    let healthy = services
        .iter()
        .all(|s| s.scraped.as_ref().is_ok_and(|x| x.ready));

    match out {
        Output::Json | Output::Ocsf => {
            let body = json!({
                "healthy": healthy,
                "services": services.iter().map(|s| match &s.scraped {
                    Ok(x) => json!({
                        "service": s.name, "address": s.addr.to_string(), "reachable": true,
                        "ready": x.ready, "version": x.version,
                        "uptime_seconds": x.uptime_seconds.round(), "dependencies_down": x.down,
                    }),
                    Err(e) => json!({
                        "service": s.name, "address": s.addr.to_string(), "reachable": false,
                        "ready": false, "error": e,
                    }),
                }).collect::<Vec<Value>>(),
                "streams": streams.iter().map(|(n, m, b)| json!({"stream": n, "messages": m, "bytes": b})).collect::<Vec<_>>(),
                "consumers": consumers.iter().map(|(s, c, p, a, r)| json!({
                    "stream": s, "consumer": c, "pending": p, "ack_pending": a, "redelivered": r,
                })).collect::<Vec<_>>(),
                "dlq_messages": dlq,
                "events_per_second_last_minute": (events_per_second * 10.0).round() / 10.0,
            });
            println!("{body:#}");
        }
        Output::Table => {
            let table = |header: &[&str]| {
                let mut t = Table::new();
                t.load_preset(UTF8_FULL_CONDENSED)
                    .set_content_arrangement(ContentArrangement::Dynamic)
                    .set_header(header.to_vec());
                t
            };
            let mut t = table(&["service", "address", "ready", "version", "uptime", "detail"]);
            for s in &services {
                match &s.scraped {
                    Ok(x) => t.add_row(vec![
                        s.name.clone(),
                        s.addr.to_string(),
                        if x.ready { "ready" } else { "NOT READY" }.to_owned(),
                        x.version.clone(),
                        uptime(x.uptime_seconds),
                        if x.down.is_empty() {
                            String::new()
                        } else {
                            format!("down: {}", x.down.join(", "))
                        },
                    ]),
                    Err(e) => t.add_row(vec![
                        s.name.clone(),
                        s.addr.to_string(),
                        "UNREACHABLE".to_owned(),
                        String::new(),
                        String::new(),
                        e.clone(),
                    ]),
                };
            }
            println!("{t}");
            let mut t = table(&["stream", "messages", "bytes"]);
            for (n, m, b) in &streams {
                t.add_row(vec![n.to_string(), m.to_string(), b.to_string()]);
            }
            println!("{t}");
            let mut t = table(&[
                "stream",
                "consumer",
                "pending",
                "ack pending",
                "redelivered",
            ]);
            for (s, c, p, a, r) in &consumers {
                t.add_row(vec![
                    s.to_string(),
                    c.clone(),
                    p.to_string(),
                    a.to_string(),
                    r.to_string(),
                ]);
            }
            println!("{t}");
            println!(
                "DLQ: {dlq} messages · accepted in the last minute: {events_per_second:.1} events/s"
            );
        }
    }
    if healthy {
        Ok(())
    } else {
        Err(Failure::new(
            code::FAILED,
            "not every service is reachable and ready",
        ))
    }
}
