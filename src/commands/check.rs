//! The `check` command: can this worker run here? Each check prints one line; the exit
//! code names the first that failed, so scripts and init containers can branch on it.

use std::process::ExitCode;
use std::time::Duration;

use async_nats::jetstream;

use crate::cli::CheckArgs;
use crate::config::SourceConfig;
use crate::store::mongo::{Deployment, CONTAINER_FIELD};
use crate::store::{self, ConfigStore, Store};
use crate::telemetry::Chain;

/// Exit codes of `check`.
pub mod exit {
    // 1 is a failure to start at all and 2 a usage error (clap's), so these start at 3.
    pub const NATS: u8 = 3;
    pub const STREAMS: u8 = 4;
    pub const CONFIG_SOURCE: u8 = 5;
}

/// `blob-router check`: one line per check, exit code of the first that failed.
pub async fn main(args: CheckArgs) -> ExitCode {
    let mut failed: Option<u8> = None;

    if !check_source(&args).await {
        failed.get_or_insert(exit::CONFIG_SOURCE);
    }
    let mut fail = |code: u8| {
        failed.get_or_insert(code);
    };

    // NATS and the streams.
    let connected = match args.nats.connect_settings() {
        Ok(mut settings) => {
            // A check answers now; it does not wait out a server starting up.
            settings.patience = Duration::from_secs(3);
            crate::nats::connect(&settings, "blob-router-check")
                .await
                .map_err(anyhow::Error::from)
        }
        Err(e) => Err(e.into()),
    };
    match connected {
        Ok(client) => {
            let shown = crate::nats::redact_url(&args.nats.nats_url);
            println!("ok    NATS reachable at {shown}");
            let js = jetstream::new(client);
            match crate::nats::streams::ensure(&js, &args.nats.topology(), args.nats.create_streams)
                .await
            {
                Ok(created) if created.is_empty() => println!("ok    streams present"),
                Ok(created) => println!("ok    streams present (created {})", created.join(", ")),
                Err(e) => {
                    println!("FAIL  streams: {}", Chain(&e));
                    fail(exit::STREAMS);
                }
            }
        }
        Err(e) => {
            println!("FAIL  NATS: {}", Chain(e.as_ref()));
            fail(exit::NATS);
            println!("skip  streams (no NATS)");
        }
    }

    match failed {
        None => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(code),
    }
}

/// The config source: reachable, (for MongoDB) a deployment with change streams, and
/// every document valid. Prints a line per finding; false when any failed.
async fn check_source(args: &CheckArgs) -> bool {
    let store = match store::open(&args.source.selection()).await {
        Ok(store) => store,
        Err(e) => {
            println!("FAIL  config source: {}", Chain(&e));
            return false;
        }
    };
    let mut ok = true;
    if let Store::Mongo(mongo) = &store {
        let shown = mongo.describe();
        match mongo.deployment().await {
            Ok(Deployment::ReplicaSet(name)) => {
                println!("ok    MongoDB {shown}: replica set `{name}`, change streams available")
            }
            Ok(Deployment::Sharded) => {
                println!("ok    MongoDB {shown}: sharded cluster, change streams available")
            }
            Ok(Deployment::Standalone) => {
                println!(
                    "FAIL  MongoDB {shown}: a standalone server; change streams need a replica \
                     set or a sharded cluster. Start mongod with `--replSet rs0` and run \
                     `rs.initiate()` once (a one-node replica set is enough; \
                     docker-compose.yaml does both)."
                );
                ok = false;
            }
            Err(e) => {
                println!("FAIL  {}", Chain(&e));
                println!("skip  configs (no MongoDB)");
                return false;
            }
        }
        match mongo.has_container_index().await {
            Ok(true) => println!("ok    index on {CONTAINER_FIELD}"),
            Ok(false) => println!(
                "warn  no index on {CONTAINER_FIELD}: forced reads scan the collection. \
                 `blob-router configs import` creates it, or run \
                 db.{}.createIndex({{\"{CONTAINER_FIELD}\": 1}})",
                args.source.collection
            ),
            Err(e) => println!("warn  could not list indexes: {}", Chain(&e)),
        }
    }
    validate(&*store.config_store(), &args.nats.routed_prefix).await && ok
}

/// Loads the snapshot and validates every document.
async fn validate(source: &dyn ConfigStore, routed_prefix: &str) -> bool {
    match source.snapshot().await {
        Ok(docs) => {
            let refused: Vec<_> = docs
                .iter()
                .filter_map(|d| SourceConfig::from_value(d, routed_prefix).err())
                .collect();
            if refused.is_empty() {
                println!(
                    "ok    config source {}: {} configs valid",
                    source.describe(),
                    docs.len()
                );
                true
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
                false
            }
        }
        Err(e) => {
            println!("FAIL  config source {}: {}", source.describe(), Chain(&e));
            false
        }
    }
}
