//! The analyst's queries against the reader: events, findings, the audit
//! trail, one event, one finding.

use std::time::Duration;

use vigil_client::TlsFiles;
use vigil_proto::query::v1::query_service_client::QueryServiceClient;
use vigil_proto::query::v1::{
    GetEventRequest, GetFindingRequest, ListAuditRecordsRequest, ListEventsRequest,
    ListFindingsRequest,
};

use crate::exit::{Failure, status_failure};
use crate::{Cli, Output, output};

/// Where and as whom the analyst connects.
pub struct Reader {
    pub addr: String,
    pub files: TlsFiles,
    pub output: Output,
}

impl Reader {
    pub fn new(cli: &Cli) -> Self {
        Self {
            addr: cli.reader.clone(),
            files: TlsFiles {
                ca: cli.ca.clone(),
                cert: cli.cert.clone(),
                key: cli.key.clone(),
            },
            output: cli.output,
        }
    }

    async fn client(&self) -> Result<QueryServiceClient<tonic::transport::Channel>, Failure> {
        Ok(QueryServiceClient::new(
            vigil_client::connect(&self.addr, &self.files).await?,
        ))
    }

    fn failed(&self, what: &'static str) -> impl Fn(tonic::Status) -> Failure + '_ {
        move |s| status_failure(what, &self.addr, &self.files.cert, s)
    }
}

/// Milliseconds since the epoch `since` ago (0: no bound).
fn start_time(since: Option<Duration>) -> i64 {
    since.map_or(0, |d| {
        chrono::Utc::now()
            .timestamp_millis()
            .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .max(1)
    })
}

#[derive(clap::Args)]
pub struct EventFilter {
    /// Only events at or above this severity (informational, low, medium, high, critical, fatal).
    #[arg(long, value_parser = crate::parse_severity)]
    pub min_severity: Option<i32>,
    /// Only these OCSF class uids (repeat the flag).
    #[arg(long = "class")]
    pub classes: Vec<i32>,
    /// Only events from this device id.
    #[arg(long)]
    pub device: Option<String>,
    /// Only events newer than this (e.g. 90s, 15m, 2h, 7d).
    #[arg(long, value_parser = crate::parse_duration)]
    pub since: Option<Duration>,
    /// At most this many events (the reader caps pages at 1000).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Continue from a previous page's token.
    #[arg(long)]
    pub page_token: Option<String>,
}

pub async fn events(reader: &Reader, filter: EventFilter) -> Result<(), Failure> {
    let request = ListEventsRequest {
        min_severity: filter.min_severity.unwrap_or(0),
        class_uids: filter.classes,
        source_device: filter.device.unwrap_or_default(),
        start_time: start_time(filter.since),
        end_time: 0,
        limit: filter.limit,
        page_token: filter.page_token.unwrap_or_default(),
    };
    let response = reader
        .client()
        .await?
        .list_events(request)
        .await
        .map_err(reader.failed("events"))?
        .into_inner();
    output::events(reader.output, &response.events, &response.next_page_token);
    Ok(())
}

#[derive(clap::Args)]
pub struct FindingFilter {
    /// Only findings at or above this severity.
    #[arg(long, value_parser = crate::parse_severity)]
    pub min_severity: Option<i32>,
    /// Only this rule (e.g. brute-force).
    #[arg(long)]
    pub rule: Option<String>,
    /// Only findings whose window ended within this (e.g. 1h, 7d).
    #[arg(long, value_parser = crate::parse_duration)]
    pub since: Option<Duration>,
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    #[arg(long)]
    pub page_token: Option<String>,
}

pub async fn findings(reader: &Reader, filter: FindingFilter) -> Result<(), Failure> {
    let response = reader
        .client()
        .await?
        .list_findings(ListFindingsRequest {
            min_severity: filter.min_severity.unwrap_or(0),
            rule_id: filter.rule.unwrap_or_default(),
            start_time: start_time(filter.since),
            end_time: 0,
            limit: filter.limit,
            page_token: filter.page_token.unwrap_or_default(),
        })
        .await
        .map_err(reader.failed("findings"))?
        .into_inner();
    output::findings(reader.output, &response.findings, &response.next_page_token);
    Ok(())
}

pub async fn audit(reader: &Reader, caller: Option<String>, limit: u32) -> Result<(), Failure> {
    let response = reader
        .client()
        .await?
        .list_audit_records(ListAuditRecordsRequest {
            caller: caller.unwrap_or_default(),
            before_time: 0,
            limit,
        })
        .await
        .map_err(reader.failed("audit"))?
        .into_inner();
    output::audit(reader.output, &response.records);
    Ok(())
}

pub async fn finding(reader: &Reader, finding_id: String) -> Result<(), Failure> {
    let response = reader
        .client()
        .await?
        .get_finding(GetFindingRequest { finding_id })
        .await
        .map_err(reader.failed("finding"))?
        .into_inner();
    if let Some(finding) = response.finding {
        output::findings(reader.output, std::slice::from_ref(&finding), "");
        output::events(reader.output, &response.events, "");
    }
    Ok(())
}

pub async fn event(reader: &Reader, event_id: String) -> Result<(), Failure> {
    let response = reader
        .client()
        .await?
        .get_event(GetEventRequest { event_id })
        .await
        .map_err(reader.failed("event"))?
        .into_inner();
    if let Some(event) = response.event {
        output::event(reader.output, &event);
    }
    Ok(())
}
