//! `vigil-writer`: parse config, build, consume until SIGINT/SIGTERM.

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "vigil writer: JetStream EVENTS into Postgres, exactly once"
)]
struct Cli {
    #[command(flatten)]
    config: vigil_writer::Config,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    vigil_common::telemetry::init("vigil-writer");
    let writer = match vigil_writer::build(&cli.config).await {
        Ok(w) => w,
        // A bad configuration names every bad setting and exits 64.
        Err(vigil_writer::WriterError::Config(e)) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(64);
        }
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            eprintln!("vigil-writer: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    tracing::info!(health = %writer.health_addr().map(|a| a.to_string()).unwrap_or_default(), "writer consuming");
    match writer
        .run_until_stopped(vigil_common::shutdown::on_signal())
        .await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "writer failed");
            std::process::ExitCode::from(1)
        }
    }
}
