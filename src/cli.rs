//! The command line. Every flag is also an environment variable `BLOB_ROUTER_*`, so the
//! same binary is configured by flags on a laptop and by environment in a deployment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::nats::consumer::ConsumerSettings;
use crate::nats::streams::{StreamSpec, Topology};
use crate::store::mongo::MongoSettings;
use crate::store::StoreSelection;
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "blob-router",
    version,
    about = "Routes blob-created events from NATS JetStream by source config"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Check NATS, the streams and the config source, then exit (0 when all is well).
    Check(CheckArgs),
    /// Import, export, validate or list source configs (MongoDB or a file).
    Configs(ConfigsArgs),
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log output format.
    #[arg(
        long,
        global = true,
        env = "BLOB_ROUTER_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `blob_router=debug`.
    #[arg(
        long,
        global = true,
        env = "BLOB_ROUTER_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
}

#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long,
        env = "BLOB_ROUTER_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// How long to keep retrying the first connection to NATS.
    #[arg(long, env = "BLOB_ROUTER_NATS_CONNECT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub nats_connect_timeout: Duration,
    /// Create missing streams (input, routed, dead-letter) at startup.
    #[arg(long, env = "BLOB_ROUTER_CREATE_STREAMS", default_value_t = true, action = clap::ArgAction::Set)]
    pub create_streams: bool,
    /// Input stream name.
    #[arg(long, env = "BLOB_ROUTER_INPUT_STREAM", default_value = "BLOB_EVENTS")]
    pub input_stream: String,
    /// Subjects of the input stream (comma-separated), used when creating it.
    #[arg(
        long,
        env = "BLOB_ROUTER_INPUT_SUBJECTS",
        value_delimiter = ',',
        default_value = "blob.events.>"
    )]
    pub input_subjects: Vec<String>,
    /// Routed output stream name.
    #[arg(long, env = "BLOB_ROUTER_ROUTED_STREAM", default_value = "BLOB_ROUTED")]
    pub routed_stream: String,
    /// Subjects of the routed stream (comma-separated), used when creating it. Configs
    /// routing elsewhere need a stream of their own, or are dead-lettered.
    #[arg(
        long,
        env = "BLOB_ROUTER_ROUTED_SUBJECTS",
        value_delimiter = ',',
        default_value = "blob.routed.>"
    )]
    pub routed_subjects: Vec<String>,
    /// Prefix of the default routed subject `<prefix>.<source_id>`.
    #[arg(long, env = "BLOB_ROUTER_ROUTED_PREFIX", default_value = "blob.routed")]
    pub routed_prefix: String,
    /// Dead-letter stream name.
    #[arg(long, env = "BLOB_ROUTER_DLQ_STREAM", default_value = "BLOB_DLQ")]
    pub dlq_stream: String,
    /// Dead letters are published to `<prefix>.<reason>`.
    #[arg(long, env = "BLOB_ROUTER_DLQ_PREFIX", default_value = "blob.dlq")]
    pub dlq_prefix: String,
    /// Durable consumer name, shared by all replicas.
    #[arg(long, env = "BLOB_ROUTER_CONSUMER", default_value = "blob-router")]
    pub consumer: String,
    /// Publish de-duplication window of created streams.
    #[arg(long, env = "BLOB_ROUTER_DUPLICATE_WINDOW", value_parser = humantime::parse_duration, default_value = "2m")]
    pub duplicate_window: Duration,
}

impl NatsArgs {
    pub fn topology(&self) -> Topology {
        Topology {
            input: StreamSpec {
                name: self.input_stream.clone(),
                subjects: self.input_subjects.clone(),
            },
            routed: StreamSpec {
                name: self.routed_stream.clone(),
                subjects: self.routed_subjects.clone(),
            },
            dlq: StreamSpec {
                name: self.dlq_stream.clone(),
                subjects: vec![format!("{}.>", self.dlq_prefix)],
            },
            consumer: self.consumer.clone(),
            dlq_prefix: self.dlq_prefix.clone(),
            duplicate_window: self.duplicate_window,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Source configs from a JSON or YAML file (a list of documents), watched for
    /// changes. Without it (and without --mongodb-uri) the embedded default configs are
    /// used.
    #[arg(long, env = "BLOB_ROUTER_CONFIGS", conflicts_with = "mongodb_uri")]
    pub configs: Option<PathBuf>,
    /// Source configs from MongoDB (a replica set or sharded cluster: change streams
    /// need one), e.g. `mongodb://host:27017/?replicaSet=rs0` or `mongodb+srv://...`.
    /// Never logged.
    #[arg(long, env = "BLOB_ROUTER_MONGODB_URI", hide_env_values = true)]
    pub mongodb_uri: Option<String>,
    /// MongoDB database [default: the URI's database, else `blob_router`].
    #[arg(long, env = "BLOB_ROUTER_DATABASE", requires = "mongodb_uri")]
    pub database: Option<String>,
    /// MongoDB collection holding the source configs.
    #[arg(long, env = "BLOB_ROUTER_COLLECTION", default_value = "source_configs")]
    pub collection: String,
    /// Keep the change stream's resume token in this file, so a restarted worker resumes
    /// the stream where the previous one stopped (a token the server no longer knows
    /// falls back to a full reload).
    #[arg(long, env = "BLOB_ROUTER_RESUME_TOKEN_FILE", requires = "mongodb_uri")]
    pub resume_token_file: Option<PathBuf>,
}

impl SourceArgs {
    /// The store these flags select: MongoDB, a file, or the embedded default.
    pub fn selection(&self) -> StoreSelection {
        match (&self.mongodb_uri, &self.configs) {
            (Some(uri), _) => StoreSelection::Mongo(MongoSettings {
                uri: uri.clone(),
                database: self.database.clone(),
                collection: self.collection.clone(),
                resume_token_file: self.resume_token_file.clone(),
            }),
            (None, Some(path)) => StoreSelection::File(path.clone()),
            (None, None) => StoreSelection::Embedded,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Address of the HTTP server (health, metrics).
    #[arg(long, env = "BLOB_ROUTER_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Unacknowledged messages the server hands this consumer at most (all replicas).
    #[arg(long, env = "BLOB_ROUTER_MAX_ACK_PENDING", default_value_t = 1024, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_ack_pending: i64,
    /// Messages processed concurrently by this replica.
    #[arg(long, env = "BLOB_ROUTER_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub concurrency: u32,
    /// How long the server waits for an ack before redelivering.
    #[arg(long, env = "BLOB_ROUTER_ACK_WAIT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub ack_wait: Duration,
    /// Full resync of the config cache (fallback for missed changes).
    #[arg(long, env = "BLOB_ROUTER_CACHE_TTL", value_parser = humantime::parse_duration, default_value = "5m")]
    pub cache_ttl: Duration,
    /// Forced reads (cache misses) running at once, across containers.
    #[arg(long, env = "BLOB_ROUTER_MAX_FORCED_READS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_forced_reads: u32,
    /// How long shutdown may take to finish in-flight messages.
    #[arg(long, env = "BLOB_ROUTER_SHUTDOWN_TIMEOUT", value_parser = humantime::parse_duration, default_value = "20s")]
    pub shutdown_timeout: Duration,
}

impl RunArgs {
    pub fn consumer(&self) -> ConsumerSettings {
        ConsumerSettings {
            stream: self.nats.input_stream.clone(),
            durable: self.nats.consumer.clone(),
            max_ack_pending: self.max_ack_pending,
            ack_wait: self.ack_wait,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub source: SourceArgs,
}

// `configs` and its actions.

#[derive(Debug, Args)]
pub struct ConfigsArgs {
    #[command(subcommand)]
    pub action: ConfigsAction,
}

#[derive(Debug, Subcommand)]
pub enum ConfigsAction {
    /// Validate a JSON/YAML file and upsert its configs into MongoDB by `_id`. Nothing is
    /// written when any document is refused.
    Import(ImportArgs),
    /// Write the configs (all of them, disabled too) to a file or stdout.
    Export(ExportArgs),
    /// Validate configs: the given file, else the source the flags select.
    Validate(ValidateArgs),
    /// One line per config: id, state, container, pattern, subject.
    List(ListArgs),
}

/// Validation needs the routed prefix (it completes the default subject).
#[derive(Debug, Clone, Args)]
pub struct PrefixArg {
    /// Prefix of the default routed subject `<prefix>.<source_id>`.
    #[arg(long, env = "BLOB_ROUTER_ROUTED_PREFIX", default_value = "blob.routed")]
    pub routed_prefix: String,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file to import (a list of config documents, JSON or YAML).
    pub file: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub prefix: PrefixArg,
    /// Also delete configs that are in the collection but not in the file.
    #[arg(long)]
    pub prune: bool,
    /// Validate and show what would change, write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Output format [default: json for a `.json` file, else yaml].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// A file to validate; without it, the configs of the selected source.
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub prefix: PrefixArg,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub prefix: PrefixArg,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_bad_values() {
        let cli = Cli::try_parse_from(["blob-router", "run"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(run.nats.input_stream, "BLOB_EVENTS");
        assert_eq!(run.nats.input_subjects, vec!["blob.events.>"]);
        assert!(run.nats.create_streams);
        assert_eq!(run.cache_ttl, Duration::from_secs(300));
        let err = Cli::try_parse_from(["blob-router", "run", "--concurrency", "0"]).unwrap_err();
        assert!(err.to_string().contains("concurrency"), "{err}");
        let err = Cli::try_parse_from(["blob-router", "run", "--cache-ttl", "soon"]).unwrap_err();
        assert!(err.to_string().contains("cache-ttl"), "{err}");
        let cli = Cli::try_parse_from(["blob-router", "run", "--create-streams", "false"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("run expected")
        };
        assert!(!run.nats.create_streams);
    }
}
