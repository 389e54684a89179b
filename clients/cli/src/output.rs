//! Rendering for humans (tables) and machines (JSON).

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Value, json};
use vigil_client::names::{class_name, severity_name};
use vigil_proto::event::v1::SecurityEvent;

use crate::Output;

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// An event in `-o json` listings: its OCSF JSON (as `-o ocsf`), which
/// loses nothing.
pub fn event_json(e: &SecurityEvent) -> Value {
    vigil_client::ocsf_json::event(e)
}

pub fn events(output: Output, events: &[SecurityEvent], next_page_token: &str) {
    match output {
        Output::Ocsf => {
            for e in events {
                println!("{}", vigil_client::ocsf_json::event(e));
            }
            page_hint(next_page_token);
        }
        Output::Json => {
            let body = json!({
                "events": events.iter().map(event_json).collect::<Vec<_>>(),
                "next_page_token": next_page_token,
            });
            println!("{body:#}");
        }
        Output::Table => {
            let mut table = Table::new();
            table
                .load_preset(UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_header(["time", "tenant", "device", "class", "severity", "message"]);
            for e in events {
                table.add_row([
                    time(e.time),
                    e.tenant_uid().to_owned(),
                    e.device_uid().to_owned(),
                    class_name(e.class_uid),
                    severity_name(e.severity_id),
                    e.message.clone(),
                ]);
            }
            println!("{table}");
            if events.is_empty() {
                eprintln!("no matching events");
            }
            if !next_page_token.is_empty() {
                eprintln!("more: --page-token {next_page_token}");
            }
        }
    }
}

pub fn event(output: Output, e: &SecurityEvent) {
    let value = event_json(e);
    match output {
        Output::Ocsf => println!("{}", vigil_client::ocsf_json::event(e)),
        Output::Json => println!("{value:#}"),
        Output::Table => {
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED);
            if let Value::Object(map) = value {
                for (k, v) in map {
                    let text = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    table.add_row([k, text]);
                }
            }
            println!("{table}");
        }
    }
}

pub fn sent(output: Output, event_id: &str) {
    match output {
        Output::Json | Output::Ocsf => {
            println!("{}", json!({"uid": event_id, "status": "durable"}))
        }
        Output::Table => println!("sent {event_id} (durable)"),
    }
}

pub fn dead_letters(output: Output, letters: &[vigil_common::dlq::DeadLetter]) {
    match output {
        Output::Json | Output::Ocsf => {
            let body: Vec<Value> = letters
                .iter()
                .map(|l| {
                    json!({
                        "sequence": l.sequence,
                        "time": l.time,
                        "subject": l.original_subject,
                        "consumer": l.consumer,
                        "deliveries": l.deliveries,
                        "reason": l.reason,
                        "bytes": l.payload_bytes,
                    })
                })
                .collect();
            println!("{:#}", Value::Array(body));
        }
        Output::Table => {
            let mut table = Table::new();
            table
                .load_preset(UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_header([
                    "seq",
                    "time",
                    "subject",
                    "consumer",
                    "deliveries",
                    "bytes",
                    "reason",
                ]);
            for l in letters {
                table.add_row([
                    l.sequence.to_string(),
                    l.time.clone(),
                    l.original_subject.clone(),
                    l.consumer.clone(),
                    l.deliveries.clone(),
                    l.payload_bytes.to_string(),
                    l.reason.clone(),
                ]);
            }
            println!("{table}");
            if letters.is_empty() {
                eprintln!("no dead letters");
            }
        }
    }
}

/// A finding in `-o json` listings: its OCSF JSON (a Detection Finding).
pub fn finding_json(f: &vigil_proto::finding::v1::Finding) -> Value {
    vigil_client::ocsf_json::finding(f)
}

pub fn audit(output: Output, records: &[vigil_proto::audit::v1::AuditRecord]) {
    match output {
        Output::Json | Output::Ocsf => {
            let body = json!({
                "records": records.iter().map(|r| json!({
                    "audit_id": r.audit_id,
                    "time": r.time,
                    "service": r.service,
                    "caller": r.caller,
                    "rpc": r.rpc,
                    "filter": serde_json::from_str::<serde_json::Value>(&r.filter_json)
                        .unwrap_or(serde_json::Value::Null),
                    "rows": r.rows,
                    "outcome": r.outcome,
                })).collect::<Vec<_>>(),
            });
            println!("{body:#}");
        }
        Output::Table => {
            let mut table = Table::new();
            table
                .load_preset(UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_header(["time", "caller", "rpc", "filter", "rows", "outcome"]);
            for r in records {
                table.add_row([
                    time(r.time),
                    r.caller.clone(),
                    r.rpc.rsplit('/').next().unwrap_or_default().to_owned(),
                    r.filter_json.clone(),
                    r.rows.to_string(),
                    r.outcome.clone(),
                ]);
            }
            println!("{table}");
        }
    }
}

pub fn findings(
    output: Output,
    findings: &[vigil_proto::finding::v1::Finding],
    next_page_token: &str,
) {
    match output {
        Output::Ocsf => {
            for f in findings {
                println!("{}", vigil_client::ocsf_json::finding(f));
            }
            page_hint(next_page_token);
        }
        Output::Json => {
            let body = json!({
                "findings": findings.iter().map(finding_json).collect::<Vec<_>>(),
                "next_page_token": next_page_token,
            });
            println!("{body:#}");
        }
        Output::Table => {
            let mut table = Table::new();
            table
                .load_preset(UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_header([
                    "window end",
                    "tenant",
                    "rule",
                    "severity",
                    "count",
                    "key",
                    "technique",
                    "finding",
                ]);
            for f in findings {
                let key = f
                    .observables
                    .iter()
                    .map(|k| format!("{}={}", k.name, k.value))
                    .collect::<Vec<_>>()
                    .join(" ");
                table.add_row([
                    time(f.end_time),
                    f.tenant_uid().to_owned(),
                    f.rule_id().to_owned(),
                    severity_name(f.severity_id),
                    f.count.to_string(),
                    key,
                    f.technique().to_owned(),
                    f.uid().to_owned(),
                ]);
            }
            println!("{table}");
            if findings.is_empty() {
                eprintln!("no matching findings");
            }
            if !next_page_token.is_empty() {
                eprintln!("more: --page-token {next_page_token}");
            }
        }
    }
}

/// Where a machine-readable listing continues (on stderr, so stdout stays
/// one document per line).
fn page_hint(next_page_token: &str) {
    if !next_page_token.is_empty() {
        eprintln!("more: --page-token {next_page_token}");
    }
}
