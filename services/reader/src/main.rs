//! `vigil-reader`: parse config, build, serve until SIGINT/SIGTERM.

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "vigil reader: the QueryService over Postgres (gRPC and NATS)"
)]
struct Cli {
    #[command(flatten)]
    config: vigil_reader::Config,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    vigil_common::telemetry::init("vigil-reader");
    let reader = match vigil_reader::build(&cli.config).await {
        Ok(r) => r,
        // A bad configuration names every bad setting and exits 64.
        Err(vigil_reader::ReaderError::Config(e)) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(64);
        }
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            eprintln!("vigil-reader: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    tracing::info!(
        listen = %reader.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        health = %reader.health_addr().map(|a| a.to_string()).unwrap_or_default(),
        "reader listening"
    );
    match reader
        .run_until_stopped(vigil_common::shutdown::on_signal())
        .await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "reader failed");
            std::process::ExitCode::from(1)
        }
    }
}
