//! `vigil`: the analyst's and operator's command line.
//!
//! Data goes to stdout (a table, or JSON with `-o json`); diagnostics go to
//! stderr. Exit codes ([`exit::code`]): 0 ok, 2 usage, 3 cannot connect,
//! 4 refused identity, 5 invalid request, 1 anything else.
//!
//! - this file: the command line (clap) and the dispatch to a command;
//! - [`commands`]: one module per group of commands;
//! - [`exit`]: failures and their exit codes;
//! - [`output`]: tables and JSON.

mod commands;
mod exit;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use commands::admin::{AdminCommand, DlqCommand, NatsAdmin};
use commands::query::{EventFilter, FindingFilter, Reader};
use exit::Failure;

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
    /// OCSF JSON, one event or finding per line (what OCSF tools read).
    Ocsf,
}

#[derive(Subcommand)]
enum Command {
    /// List events, newest first (e.g. `vigil events --min-severity high --limit 10`).
    Events(EventFilter),
    /// Show one event by id.
    Event { event_id: String },
    /// List findings (detections), newest first.
    Findings(FindingFilter),
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
    Send(commands::send::Send),
    /// The OCSF classes the gateway accepts (the schema catalogue).
    Schemas,
    /// One class: its activities and attributes (`-o json` adds its JSON
    /// Schema), e.g. `vigil schema 3002` or `vigil schema authentication`.
    Schema {
        /// The class uid or OCSF name.
        class: String,
    },
    /// Is the mesh healthy and keeping up? Every service's readiness,
    /// version and uptime, stream depths, consumer lag, DLQ size and the
    /// events/s of the last minute (exit 1 if a service is not ready).
    Status(commands::status::Status),
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

pub(crate) fn parse_severity(s: &str) -> Result<i32, String> {
    vigil_client::names::parse_severity(s)
        .map(|s| s as i32)
        .ok_or_else(|| {
            format!("unknown severity {s:?} (informational, low, medium, high, critical, fatal)")
        })
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 15m, got {s:?}"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in {s:?} (use s, m, h or d)")),
    };
    n.checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long a duration"))
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
    let reader = Reader::new(&cli);
    let Cli {
        command,
        gateway,
        ca,
        output,
        ..
    } = cli;
    match command {
        Command::Events(filter) => commands::query::events(&reader, filter).await,
        Command::Findings(filter) => commands::query::findings(&reader, filter).await,
        Command::Audit { caller, limit } => commands::query::audit(&reader, caller, limit).await,
        Command::Finding { finding_id } => commands::query::finding(&reader, finding_id).await,
        Command::Event { event_id } => commands::query::event(&reader, event_id).await,
        Command::Send(args) => commands::send::send(args, &gateway, ca, output).await,
        Command::Schemas => commands::schema::list(&reader.files, &gateway, output).await,
        Command::Schema { class } => {
            commands::schema::show(&reader.files, &gateway, output, &class).await
        }
        Command::Admin {
            command: AdminCommand::Migrate { database_url },
        } => commands::admin::migrate(&database_url).await,
        Command::Admin {
            command: AdminCommand::Provision { nats },
        } => commands::admin::provision(&nats, &ca).await,
        Command::Admin {
            command:
                AdminCommand::Retention {
                    database_url,
                    keep_days,
                },
        } => commands::admin::retention(&database_url, keep_days).await,
        Command::Status(args) => commands::status::status(args, &ca, output).await,
        Command::Dlq { nats, command } => commands::admin::dlq(&nats, &ca, output, command).await,
    }
}
