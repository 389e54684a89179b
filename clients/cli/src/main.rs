//! `vigil`: the analyst's and operator's command line.
//!
//! Data goes to stdout (a table, or JSON with `-o json`); diagnostics go to
//! stderr. Exit codes: 0 ok, 2 usage, 3 cannot connect, 4 refused identity,
//! 5 invalid request, 1 anything else.

mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use vigil_client::{ClientError, TlsFiles};
use vigil_proto::ingest::v1::PublishRequest;
use vigil_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use vigil_proto::query::v1::query_service_client::QueryServiceClient;
use vigil_proto::query::v1::{
    GetEventRequest, GetFindingRequest, ListAuditRecordsRequest, ListEventsRequest,
    ListFindingsRequest,
};

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Query and feed the vigil security-event mesh"
)]
struct Cli {
    /// Reader (QueryService) address.
    #[arg(
        long,
        global = true,
        env = "VIGIL_READER_ADDR",
        default_value = "https://127.0.0.1:4445"
    )]
    reader: String,
    /// Gateway (IngestService) address.
    #[arg(
        long,
        global = true,
        env = "VIGIL_GATEWAY_ADDR",
        default_value = "https://127.0.0.1:4443"
    )]
    gateway: String,
    /// CA certificate the servers' certificates chain to.
    #[arg(
        long,
        global = true,
        env = "VIGIL_CA",
        default_value = "certs/out/ca.crt"
    )]
    ca: PathBuf,
    /// Your (analyst) certificate.
    #[arg(
        long,
        global = true,
        env = "VIGIL_CERT",
        default_value = "certs/out/users/analyst.crt"
    )]
    cert: PathBuf,
    /// Your (analyst) private key.
    #[arg(
        long,
        global = true,
        env = "VIGIL_KEY",
        default_value = "certs/out/users/analyst.key"
    )]
    key: PathBuf,
    /// Output format.
    #[arg(
        short,
        long,
        global = true,
        env = "VIGIL_OUTPUT",
        default_value = "table"
    )]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// List events, newest first (e.g. `vigil events --min-severity high --limit 10`).
    Events {
        /// Only events at or above this severity (informational, low, medium, high, critical, fatal).
        #[arg(long, value_parser = parse_severity)]
        min_severity: Option<i32>,
        /// Only these OCSF class uids (repeat the flag).
        #[arg(long = "class")]
        classes: Vec<i32>,
        /// Only events from this device id.
        #[arg(long)]
        device: Option<String>,
        /// Only events newer than this (e.g. 90s, 15m, 2h, 7d).
        #[arg(long, value_parser = parse_duration)]
        since: Option<Duration>,
        /// At most this many events (the reader caps pages at 1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Continue from a previous page's token.
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Show one event by id.
    Event { event_id: String },
    /// List findings (detections), newest first.
    Findings {
        /// Only findings at or above this severity.
        #[arg(long, value_parser = parse_severity)]
        min_severity: Option<i32>,
        /// Only this rule (e.g. brute-force).
        #[arg(long)]
        rule: Option<String>,
        /// Only findings whose window ended within this (e.g. 1h, 7d).
        #[arg(long, value_parser = parse_duration)]
        since: Option<Duration>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Show one finding with its contributing events.
    Finding { finding_id: String },
    /// The audit trail: who queried what, newest first (admins only).
    Audit {
        /// Only this caller's records (e.g. spiffe://vigil.local/user/analyst).
        #[arg(long)]
        caller: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Send one test event as a device.
    Send {
        /// Device certificate (its URI SAN names tenant and device).
        #[arg(
            long,
            env = "VIGIL_DEVICE_CERT",
            default_value = "certs/out/devices/acme.cam-01.crt"
        )]
        device_cert: PathBuf,
        #[arg(
            long,
            env = "VIGIL_DEVICE_KEY",
            default_value = "certs/out/devices/acme.cam-01.key"
        )]
        device_key: PathBuf,
        /// auth-success, auth-failure, process, network, dns or file.
        #[arg(long, default_value = "auth-failure")]
        kind: String,
        /// Override the severity.
        #[arg(long, value_parser = parse_severity)]
        severity: Option<i32>,
        /// Override the message.
        #[arg(long)]
        message: Option<String>,
    },
    /// Operator commands.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Dead letters: messages a consumer could not process.
    Dlq {
        #[command(flatten)]
        nats: NatsAdmin,
        #[command(subcommand)]
        command: DlqCommand,
    },
}

/// How operator commands reach NATS: as the admin user.
#[derive(clap::Args)]
struct NatsAdmin {
    #[arg(long, env = "VIGIL_NATS_URL", default_value = "tls://127.0.0.1:4333")]
    nats_url: String,
    /// The admin NATS user's certificate.
    #[arg(
        long,
        env = "VIGIL_NATS_ADMIN_CERT",
        default_value = "certs/out/nats/admin.crt"
    )]
    nats_cert: PathBuf,
    #[arg(
        long,
        env = "VIGIL_NATS_ADMIN_KEY",
        default_value = "certs/out/nats/admin.key"
    )]
    nats_key: PathBuf,
}

impl NatsAdmin {
    async fn connect(&self, ca: &std::path::Path) -> Result<async_nats::Client, Failure> {
        let settings = vigil_common::config::NatsSettings {
            url: self.nats_url.clone(),
            ca: ca.to_owned(),
            cert: self.nats_cert.clone(),
            key: self.nats_key.clone(),
            inbox_prefix: vigil_common::subjects::inbox_prefix("admin"),
        };
        vigil_common::nats::connect(&settings, "vigil-admin")
            .await
            .map_err(|e| Failure {
                code: 3,
                message: e.to_string(),
            })
    }
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create the JetStream streams and durable consumers (idempotent).
    Provision {
        #[command(flatten)]
        nats: NatsAdmin,
    },
    /// Apply the database schema, and create the services' own roles
    /// (`<database>_writer`, `<database>_reader`) with their grants and
    /// row-level security. Runs as the schema owner, never as a service.
    Migrate {
        /// The owner's URL (needs CREATE ROLE), e.g.
        /// postgres://postgres@127.0.0.1:5432/vigil?sslmode=require
        #[arg(long, env = "VIGIL_ADMIN_DATABASE_URL")]
        database_url: String,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters, oldest first.
    List,
    /// Republish dead letters to their original subject (after fixing the
    /// cause), then remove them from the DLQ.
    Replay {
        /// The dead letter's sequence (from `vigil dlq list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        sequence: Option<u64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Remove dead letters without replaying them.
    Discard {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        sequence: Option<u64>,
        #[arg(long)]
        all: bool,
    },
}

fn parse_severity(s: &str) -> Result<i32, String> {
    vigil_client::names::parse_severity(s)
        .map(|s| s as i32)
        .ok_or_else(|| {
            format!("unknown severity {s:?} (informational, low, medium, high, critical, fatal)")
        })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 15m, got {s:?}"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit in {s:?} (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(secs))
}

/// A failure, with the exit code that classifies it.
struct Failure {
    code: u8,
    message: String,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match e {
            ClientError::Read { .. } | ClientError::BadAddress { .. } => 2,
            ClientError::Connect { .. } => 3,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

/// How a refused client certificate surfaces in a failed first call.
const REFUSAL_HINTS: &[&str] = &[
    "cancel",
    "transport error",
    "tls",
    "certificate",
    "handshake",
    "connection reset",
    "broken pipe",
    "alert",
];

/// Classifies a failed call. `cert` is the certificate we presented: with
/// TLS 1.3 a server refuses a client certificate only after the client
/// thinks the handshake is done, so a refusal shows up as the first call
/// being cancelled or reset.
fn status_failure(
    what: &str,
    addr: &str,
    cert: &std::path::Path,
    status: tonic::Status,
) -> Failure {
    use tonic::Code;
    let detail = status.message();
    let lower = detail.to_ascii_lowercase();
    let (code, message) = match status.code() {
        Code::PermissionDenied => (4, format!("{what}: refused identity: {detail}")),
        Code::Unauthenticated => (4, format!("{what}: not authenticated: {detail}")),
        Code::InvalidArgument => (5, format!("{what}: invalid request: {detail}")),
        Code::NotFound => (1, format!("{what}: {detail}")),
        Code::Cancelled | Code::Unavailable | Code::Unknown
            if REFUSAL_HINTS.iter().any(|w| lower.contains(w)) =>
        {
            (
                4,
                format!(
                    "{what}: {addr} closed the connection after the TLS handshake: it most likely refused our certificate {} (is it issued by the vigil CA and still valid?) [{detail}]",
                    cert.display()
                ),
            )
        }
        Code::Unavailable => (3, format!("{what}: {addr} unavailable: {detail}")),
        _ => (1, format!("{what}: {} {detail}", status.code())),
    };
    Failure { code, message }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("vigil: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let analyst = TlsFiles {
        ca: cli.ca.clone(),
        cert: cli.cert.clone(),
        key: cli.key.clone(),
    };
    match cli.command {
        Command::Events {
            min_severity,
            classes,
            device,
            since,
            limit,
            page_token,
        } => {
            let channel = vigil_client::connect(&cli.reader, &analyst).await?;
            let mut client = QueryServiceClient::new(channel);
            let start_time = since.map_or(0, |d| {
                chrono::Utc::now().timestamp_millis()
                    - i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
            });
            let request = ListEventsRequest {
                min_severity: min_severity.unwrap_or(0),
                class_uids: classes,
                source_device: device.unwrap_or_default(),
                start_time,
                end_time: 0,
                limit,
                page_token: page_token.unwrap_or_default(),
            };
            let response = client
                .list_events(request)
                .await
                .map_err(|s| status_failure("events", &cli.reader, &cli.cert, s))?
                .into_inner();
            output::events(cli.output, &response.events, &response.next_page_token);
            Ok(())
        }
        Command::Findings {
            min_severity,
            rule,
            since,
            limit,
            page_token,
        } => {
            let channel = vigil_client::connect(&cli.reader, &analyst).await?;
            let start_time = since.map_or(0, |d| {
                chrono::Utc::now().timestamp_millis()
                    - i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
            });
            let response = QueryServiceClient::new(channel)
                .list_findings(ListFindingsRequest {
                    min_severity: min_severity.unwrap_or(0),
                    rule_id: rule.unwrap_or_default(),
                    start_time,
                    end_time: 0,
                    limit,
                    page_token: page_token.unwrap_or_default(),
                })
                .await
                .map_err(|s| status_failure("findings", &cli.reader, &cli.cert, s))?
                .into_inner();
            output::findings(cli.output, &response.findings, &response.next_page_token);
            Ok(())
        }
        Command::Audit { caller, limit } => {
            let channel = vigil_client::connect(&cli.reader, &analyst).await?;
            let response = QueryServiceClient::new(channel)
                .list_audit_records(ListAuditRecordsRequest {
                    caller: caller.unwrap_or_default(),
                    before_time: 0,
                    limit,
                })
                .await
                .map_err(|s| status_failure("audit", &cli.reader, &cli.cert, s))?
                .into_inner();
            output::audit(cli.output, &response.records);
            Ok(())
        }
        Command::Finding { finding_id } => {
            let channel = vigil_client::connect(&cli.reader, &analyst).await?;
            let response = QueryServiceClient::new(channel)
                .get_finding(GetFindingRequest { finding_id })
                .await
                .map_err(|s| status_failure("finding", &cli.reader, &cli.cert, s))?
                .into_inner();
            if let Some(finding) = response.finding {
                output::findings(cli.output, std::slice::from_ref(&finding), "");
                output::events(cli.output, &response.events, "");
            }
            Ok(())
        }
        Command::Event { event_id } => {
            let channel = vigil_client::connect(&cli.reader, &analyst).await?;
            let response = QueryServiceClient::new(channel)
                .get_event(GetEventRequest { event_id })
                .await
                .map_err(|s| status_failure("event", &cli.reader, &cli.cert, s))?
                .into_inner();
            if let Some(event) = response.event {
                output::event(cli.output, &event);
            }
            Ok(())
        }
        Command::Send {
            device_cert,
            device_key,
            kind,
            severity,
            message,
        } => {
            let kind = vigil_client::events::Kind::parse(&kind).ok_or_else(|| Failure {
                code: 2,
                message: format!("unknown kind {kind:?} (auth-success, auth-failure, process, network, dns, file)"),
            })?;
            let mut event = vigil_client::events::sample(
                kind,
                &mut rand::rng(),
                chrono::Utc::now().timestamp_millis(),
            );
            if let Some(s) = severity {
                event.severity_id = s;
            }
            if let Some(m) = message {
                event.message = m;
            }
            let device = TlsFiles {
                ca: cli.ca.clone(),
                cert: device_cert.clone(),
                key: device_key,
            };
            let channel = vigil_client::connect(&cli.gateway, &device).await?;
            let id = event.event_id.clone();
            let response = IngestServiceClient::new(channel)
                .publish(PublishRequest {
                    events: vec![event],
                })
                .await
                .map_err(|s| status_failure("send", &cli.gateway, &device_cert, s))?
                .into_inner();
            if let Some(r) = response.rejected.first() {
                return Err(Failure {
                    code: 5,
                    message: format!("send: event rejected: {}: {}", r.field, r.reason),
                });
            }
            output::sent(cli.output, &id);
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::Migrate { database_url },
        } => {
            let failure = |message: String| Failure { code: 3, message };
            let pool = sqlx::PgPool::connect(&database_url)
                .await
                .map_err(|e| failure(format!("cannot connect to the database: {e}")))?;
            vigil_writer::MIGRATOR
                .run(&pool)
                .await
                .map_err(|e| failure(format!("migration failed: {e}")))?;
            pool.close().await;
            eprintln!(
                "database schema is current; roles <database>_writer and <database>_reader granted"
            );
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::Provision { nats },
        } => {
            let client = nats.connect(&cli.ca).await?;
            vigil_common::provision::provision(
                &client,
                &vigil_common::provision::StreamLimits::default(),
            )
            .await
            .map_err(|e| Failure {
                code: 1,
                message: e.to_string(),
            })?;
            let _ = client.flush().await;
            eprintln!(
                "provisioned streams {}, {}, {} and {} (append-only), the writer's and correlator's consumers, and the {} bucket",
                vigil_common::subjects::EVENTS_STREAM,
                vigil_common::subjects::FINDINGS_STREAM,
                vigil_common::subjects::DLQ_STREAM,
                vigil_common::subjects::AUDIT_STREAM,
                vigil_common::subjects::CORRELATOR_BUCKET
            );
            Ok(())
        }
        Command::Dlq { nats, command } => {
            let client = nats.connect(&cli.ca).await?;
            let js = async_nats::jetstream::new(client);
            let failed = |e: vigil_common::dlq::DlqError| Failure {
                code: 1,
                message: format!("dlq: {e}"),
            };
            let letters = vigil_common::dlq::list(&js).await.map_err(failed)?;
            let chosen = |sequence: Option<u64>| -> Vec<u64> {
                match sequence {
                    Some(s) => vec![s],
                    None => letters.iter().map(|l| l.sequence).collect(),
                }
            };
            match command {
                DlqCommand::List => output::dead_letters(cli.output, &letters),
                DlqCommand::Replay { sequence, .. } => {
                    for s in chosen(sequence) {
                        vigil_common::dlq::replay(&js, s).await.map_err(failed)?;
                        eprintln!("replayed dead letter {s}");
                    }
                }
                DlqCommand::Discard { sequence, .. } => {
                    for s in chosen(sequence) {
                        vigil_common::dlq::discard(&js, s).await.map_err(failed)?;
                        eprintln!("discarded dead letter {s}");
                    }
                }
            }
            Ok(())
        }
    }
}
