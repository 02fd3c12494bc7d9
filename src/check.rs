//! The `check` command: can this worker run here? Each check prints one line; the exit
//! code names the first that failed, so scripts and init containers can branch on it.

use std::process::ExitCode;
use std::time::Duration;

use async_nats::jetstream;

use crate::app::config_source;
use crate::cli::CheckArgs;
use crate::config::SourceConfig;

/// Exit codes of `check`.
pub mod exit {
    // 1 is a failure to start at all and 2 a usage error (clap's), so these start at 3.
    pub const NATS: u8 = 3;
    pub const STREAMS: u8 = 4;
    pub const CONFIG_SOURCE: u8 = 5;
}

pub async fn check(args: CheckArgs) -> ExitCode {
    let mut failed: Option<u8> = None;
    let mut fail = |code: u8| {
        failed.get_or_insert(code);
    };

    // Config source: loads, and every document validates.
    let source = config_source(&args.source);
    match source.snapshot().await {
        Ok(docs) => {
            let refused: Vec<_> = docs
                .iter()
                .filter_map(|d| SourceConfig::from_value(d, &args.nats.routed_prefix).err())
                .collect();
            if refused.is_empty() {
                println!(
                    "ok    config source {}: {} configs valid",
                    source.describe(),
                    docs.len()
                );
            } else {
                println!(
                    "FAIL  config source {}: {} of {} configs refused",
                    source.describe(),
                    refused.len(),
                    docs.len()
                );
                for e in &refused {
                    println!("        {e}");
                }
                fail(exit::CONFIG_SOURCE);
            }
        }
        Err(e) => {
            println!("FAIL  config source {}: {e}", source.describe());
            fail(exit::CONFIG_SOURCE);
        }
    }

    // NATS and the streams.
    let shown = crate::nats::redact_url(&args.nats.nats_url);
    match crate::nats::connect(
        &args.nats.nats_url,
        "blob-router-check",
        Duration::from_secs(3),
    )
    .await
    {
        Ok(client) => {
            println!("ok    NATS reachable at {shown}");
            let js = jetstream::new(client);
            match crate::nats::streams::ensure(&js, &args.nats.topology(), args.nats.create_streams)
                .await
            {
                Ok(created) if created.is_empty() => println!("ok    streams present"),
                Ok(created) => println!("ok    streams present (created {})", created.join(", ")),
                Err(e) => {
                    println!("FAIL  streams: {e}");
                    fail(exit::STREAMS);
                }
            }
        }
        Err(e) => {
            println!("FAIL  NATS: {e}");
            fail(exit::NATS);
            println!("skip  streams (no NATS)");
        }
    }

    match failed {
        None => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(code),
    }
}
