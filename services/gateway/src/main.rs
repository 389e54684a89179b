//! `vigil-gateway`: parse config, build (which validates it), log the bound addresses, serve
//! until SIGINT/SIGTERM.

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "vigil gateway: device mTLS ingest into JetStream")]
struct Cli {
    #[command(flatten)]
    config: vigil_gateway::Config,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    vigil_common::telemetry::init("vigil-gateway");
    let gateway = match vigil_gateway::build(&cli.config).await {
        Ok(g) => g,
        // A bad configuration names every bad setting and exits 64.
        Err(vigil_gateway::GatewayError::Config(e)) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(64);
        }
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            eprintln!("vigil-gateway: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    tracing::info!(
        listen = %gateway.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        health = %gateway.health_addr().map(|a| a.to_string()).unwrap_or_default(),
        "gateway listening"
    );
    match gateway
        .run_until_stopped(vigil_common::shutdown::on_signal())
        .await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gateway failed");
            std::process::ExitCode::from(1)
        }
    }
}
