//! `vigil-correlator`: parse config, build, correlate until SIGINT/SIGTERM
//! (SIGHUP reloads the rules).

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "vigil correlator: event-time detection rules over EVENTS"
)]
struct Cli {
    #[command(flatten)]
    config: vigil_correlator::Config,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    vigil_common::telemetry::init("vigil-correlator");
    let correlator = match vigil_correlator::build(&cli.config).await {
        Ok(c) => c,
        // A bad configuration names every bad setting and exits 64.
        Err(vigil_correlator::BuildError::Config(e)) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(64);
        }
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            eprintln!("vigil-correlator: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    tracing::info!(
        partition = cli.config.partition,
        partitions = cli.config.partitions,
        health = %correlator.health_addr().map(|a| a.to_string()).unwrap_or_default(),
        metrics = %correlator.metrics_addr().map(|a| a.to_string()).unwrap_or_default(),
        "correlator consuming"
    );
    match correlator
        .run_until_stopped(vigil_common::shutdown::on_signal())
        .await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "correlator failed");
            std::process::ExitCode::from(1)
        }
    }
}
