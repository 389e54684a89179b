//! Operator commands: schema migration, provisioning, dead letters.

use std::path::PathBuf;

use clap::Subcommand;

use crate::exit::{Failure, code};
use crate::{Output, output};

/// How operator commands reach NATS: as the admin user.
#[derive(clap::Args)]
pub struct NatsAdmin {
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
    pub async fn connect(&self, ca: &std::path::Path) -> Result<async_nats::Client, Failure> {
        let settings = vigil_common::config::NatsSettings {
            url: self.nats_url.clone(),
            ca: ca.to_owned(),
            cert: self.nats_cert.clone(),
            key: self.nats_key.clone(),
            inbox_prefix: vigil_common::subjects::inbox_prefix("admin"),
        };
        vigil_common::nats::connect(&settings, "vigil-admin")
            .await
            .map_err(|e| Failure::new(code::UNAVAILABLE, e.to_string()))
    }
}

#[derive(Subcommand)]
pub enum AdminCommand {
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
    /// Drop the day partitions of events older than --keep-days (whole
    /// days, UTC; rows are not deleted one by one). Runs as the schema
    /// owner.
    Retention {
        /// The owner's URL, as for `migrate`.
        #[arg(long, env = "VIGIL_ADMIN_DATABASE_URL")]
        database_url: String,
        /// Days of events to keep, today included. At least 8: the gateway
        /// accepts events up to 7 days old, and dropping a day it still
        /// accepts would lose them.
        #[arg(long)]
        keep_days: u32,
    },
}

/// The fewest days `vigil admin retention` keeps (the gateway's oldest
/// accepted event is 7 days old).
pub const MIN_KEEP_DAYS: u32 = 8;

#[derive(Subcommand)]
pub enum DlqCommand {
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

/// `vigil admin migrate`.
pub async fn migrate(database_url: &str) -> Result<(), Failure> {
    let failure = |message: String| Failure::new(code::UNAVAILABLE, message);
    let pool = sqlx::PgPool::connect(database_url)
        .await
        .map_err(|e| failure(format!("cannot connect to the database: {e}")))?;
    vigil_writer::MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| failure(format!("migration failed: {e}")))?;
    pool.close().await;
    eprintln!("database schema is current; roles <database>_writer and <database>_reader granted");
    Ok(())
}

/// `vigil admin retention`.
pub async fn retention(database_url: &str, keep_days: u32) -> Result<(), Failure> {
    if keep_days < MIN_KEEP_DAYS {
        return Err(Failure::new(
            code::USAGE,
            format!(
                "--keep-days {keep_days}: must be at least {MIN_KEEP_DAYS} (the gateway accepts events up to 7 days old)"
            ),
        ));
    }
    let failure = |message: String| Failure::new(code::UNAVAILABLE, message);
    let pool = sqlx::PgPool::connect(database_url)
        .await
        .map_err(|e| failure(format!("cannot connect to the database: {e}")))?;
    let before = chrono::Utc::now().date_naive() - chrono::Duration::days(i64::from(keep_days) - 1);
    let dropped: Vec<String> = sqlx::query_scalar("SELECT vigil_drop_event_partitions($1)")
        .bind(before)
        .fetch_all(&pool)
        .await
        .map_err(|e| Failure::new(code::FAILED, format!("retention failed: {e}")))?;
    pool.close().await;
    if dropped.is_empty() {
        eprintln!("no event partition older than {before}");
    } else {
        eprintln!(
            "dropped {} event partition(s) older than {before}: {}",
            dropped.len(),
            dropped.join(", ")
        );
    }
    Ok(())
}

/// `vigil admin provision`.
pub async fn provision(nats: &NatsAdmin, ca: &std::path::Path) -> Result<(), Failure> {
    let client = nats.connect(ca).await?;
    vigil_common::provision::provision(&client, &vigil_common::provision::StreamLimits::default())
        .await
        .map_err(|e| Failure::new(code::FAILED, e.to_string()))?;
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

/// `vigil dlq ...`.
pub async fn dlq(
    nats: &NatsAdmin,
    ca: &std::path::Path,
    out: Output,
    command: DlqCommand,
) -> Result<(), Failure> {
    let client = nats.connect(ca).await?;
    let js = async_nats::jetstream::new(client);
    let failed = |e: vigil_common::dlq::DlqError| Failure::new(code::FAILED, format!("dlq: {e}"));
    let letters = vigil_common::dlq::list(&js).await.map_err(failed)?;
    let chosen = |sequence: Option<u64>| -> Vec<u64> {
        match sequence {
            Some(s) => vec![s],
            None => letters.iter().map(|l| l.sequence).collect(),
        }
    };
    match command {
        DlqCommand::List => output::dead_letters(out, &letters),
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
