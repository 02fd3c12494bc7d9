//! The `blob-router` binary: parses the command line, sets up logging and the runtime,
//! and dispatches to the command. Everything else lives in the library.

use std::process::ExitCode;

use blob_router::cli::{Cli, Command};

/// mimalloc instead of the system allocator: the per-event work is dominated by small,
/// short-lived allocations (parsed records, envelopes, headers), where glibc's malloc
/// cost about a fifth of the worker's CPU (see README, Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use blob_router::{commands, shutdown, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse_checked();
    if let Err(e) = telemetry::init_logging(cli.log.log_format, &cli.log.log_level) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    shutdown::log_panics();
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
    // The command runs as a task on the runtime's workers, not on this thread: what it
    // spawns (a task per message in `run`) then goes to a worker's own queue instead of
    // the runtime's shared one, with no thread to wake for it.
    let command = runtime.spawn(async move {
        match cli.command {
            Command::Run(args) => commands::run::main(args).await,
            Command::Check(args) => commands::check::main(args).await,
            Command::Configs(args) => commands::configs::main(args).await,
            Command::Replay(args) => commands::replay::main(args).await,
            Command::Loadgen(args) => commands::loadgen::main(args).await,
        }
    });
    match runtime.block_on(command) {
        Ok(code) => code,
        Err(e) => {
            // A panic was logged where it happened (shutdown::log_panics).
            eprintln!("error: the command ended abnormally: {e}");
            ExitCode::FAILURE
        }
    }
}
