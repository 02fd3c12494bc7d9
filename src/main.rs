//! The `blob-router` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use blob_router::cli::{Cli, Command};
use blob_router::{app, check, configs_cmd, shutdown, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::init_logging(cli.log.log_format, &cli.log.log_level) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => {
                let stop = CancellationToken::new();
                shutdown::cancel_on_signal(stop.clone());
                match app::run(args, stop).await {
                    Ok(()) => {
                        tracing::info!("stopped");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        tracing::error!(error = format!("{e:#}"), "blob-router failed");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Check(args) => check::check(args).await,
            Command::Configs(args) => configs_cmd::run(args).await,
        }
    })
}
