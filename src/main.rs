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
    match cli.command {
        // `run` runs as a task on the runtime's workers, not on this thread (its
        // messages have a runtime of their own, see `MessageRuntime` in
        // commands/run.rs; the rest, HTTP and the cache's upkeep, is woken into a
        // worker's queue rather than by unparking this thread). The other commands stay
        // on this thread: `replay` and `loadgen` read with async-nats's pull stream,
        // whose count race that placement makes frequent (see `nats::pull`).
        Command::Run(args) => match runtime.block_on(runtime.spawn(commands::run::main(args))) {
            Ok(code) => code,
            Err(e) => {
                // A panic was logged where it happened (shutdown::log_panics).
                eprintln!("error: the command ended abnormally: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check(args) => runtime.block_on(commands::check::main(args)),
        Command::Configs(args) => runtime.block_on(commands::configs::main(args)),
        Command::Replay(args) => runtime.block_on(commands::replay::main(args)),
        Command::Loadgen(args) => runtime.block_on(commands::loadgen::main(args)),
    }
}
