//! The command line. Every flag is also an environment variable `BLOB_ROUTER_*`, so the
//! same binary is configured by flags on a laptop and by environment in a deployment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::nats::consumer::ConsumerSettings;
use crate::nats::streams::{StreamSpec, Topology};
use crate::nats::{AuthSpec, ConnectSettings, Secret, SecretSource, SettingsError, TlsSpec};
use crate::output::Reason;
use crate::store::mongo::MongoSettings;
use crate::store::StoreSelection;
use crate::subject;
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

/// Secrets read from the environment only: a value on the command line would show in
/// `ps` and in shell history. (Files are the other way to give them.)
const ENV_ONLY: [(&str, &str, &str); 2] = [
    (
        "nats_token",
        "--nats-token",
        "BLOB_ROUTER_NATS_TOKEN or --nats-token-file",
    ),
    (
        "nats_password",
        "--nats-password",
        "BLOB_ROUTER_NATS_PASSWORD or --nats-password-file",
    ),
];

impl Cli {
    /// [`Parser::parse`], refusing a secret given on the command line (exit 2).
    pub fn parse_checked() -> Self {
        Self::try_parse_checked(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// [`Parser::try_parse_from`], refusing a secret given on the command line.
    pub fn try_parse_checked<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut matches = Self::command().try_get_matches_from(args)?;
        if let Some((_, sub)) = matches.subcommand() {
            for (id, flag, instead) in ENV_ONLY {
                if sub.ids().any(|i| i == id)
                    && sub.value_source(id) == Some(ValueSource::CommandLine)
                {
                    return Err(Self::command().error(
                        ErrorKind::ValueValidation,
                        format!(
                            "{flag} is not accepted on the command line, where `ps` shows it: \
                             use {instead}"
                        ),
                    ));
                }
            }
        }
        Self::from_arg_matches_mut(&mut matches)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Check NATS, the streams and the config source, then exit (0 when all is well).
    Check(CheckArgs),
    /// Import, export, validate or list source configs (MongoDB or a file).
    Configs(ConfigsArgs),
    /// Put dead letters back on their input subject (after fixing a config), or with
    /// --dry-run see what they would become.
    Replay(ReplayArgs),
    /// Publish synthetic blob-created events and measure what the pipeline sustains.
    Loadgen(LoadgenArgs),
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
    /// How long to keep retrying the first connection to NATS (wrong credentials and
    /// TLS failures are not retried).
    #[arg(long, env = "BLOB_ROUTER_NATS_CONNECT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub nats_connect_timeout: Duration,
    /// NATS credentials file (user JWT + NKey seed, as `nsc generate creds` writes it).
    #[arg(
        long,
        env = "BLOB_ROUTER_NATS_CREDS",
        value_name = "FILE",
        conflicts_with_all = ["nats_nkey", "nats_token", "nats_token_file", "nats_user"]
    )]
    pub nats_creds: Option<PathBuf>,
    /// File holding an NKey seed (`SU...`).
    #[arg(
        long,
        env = "BLOB_ROUTER_NATS_NKEY",
        value_name = "FILE",
        conflicts_with_all = ["nats_token", "nats_token_file", "nats_user"]
    )]
    pub nats_nkey: Option<PathBuf>,
    /// NATS token: from the environment only (a value on the command line is refused,
    /// since `ps` shows it). Or --nats-token-file.
    #[arg(
        long,
        env = "BLOB_ROUTER_NATS_TOKEN",
        hide_env_values = true,
        value_name = "ENV ONLY",
        conflicts_with_all = ["nats_token_file", "nats_user"]
    )]
    pub nats_token: Option<Secret>,
    /// File holding the NATS token.
    #[arg(
        long,
        env = "BLOB_ROUTER_NATS_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "nats_user"
    )]
    pub nats_token_file: Option<PathBuf>,
    /// NATS user name; the password comes from BLOB_ROUTER_NATS_PASSWORD or
    /// --nats-password-file.
    #[arg(long, env = "BLOB_ROUTER_NATS_USER")]
    pub nats_user: Option<String>,
    /// Password of --nats-user: from the environment only (a value on the command line
    /// is refused, since `ps` shows it). Or --nats-password-file.
    #[arg(
        long,
        env = "BLOB_ROUTER_NATS_PASSWORD",
        hide_env_values = true,
        value_name = "ENV ONLY",
        requires = "nats_user",
        conflicts_with = "nats_password_file"
    )]
    pub nats_password: Option<Secret>,
    /// File holding the password of --nats-user.
    #[arg(
        long,
        env = "BLOB_ROUTER_NATS_PASSWORD_FILE",
        value_name = "FILE",
        requires = "nats_user"
    )]
    pub nats_password_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) that signed the server's certificate [default: the
    /// system's roots]. Any --nats-tls-* flag makes TLS required.
    #[arg(long, env = "BLOB_ROUTER_NATS_TLS_CA", value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), for servers that verify clients (with --nats-tls-key).
    #[arg(
        long,
        env = "BLOB_ROUTER_NATS_TLS_CERT",
        value_name = "FILE",
        requires = "nats_tls_key"
    )]
    pub nats_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --nats-tls-cert.
    #[arg(
        long,
        env = "BLOB_ROUTER_NATS_TLS_KEY",
        value_name = "FILE",
        requires = "nats_tls_cert"
    )]
    pub nats_tls_key: Option<PathBuf>,
    /// TLS handshake before anything else, for servers configured with
    /// `handshake_first` (nats-server 2.10.4+).
    #[arg(long, env = "BLOB_ROUTER_NATS_TLS_FIRST")]
    pub nats_tls_first: bool,
    /// Create missing streams (input, routed, dead-letter) at startup.
    #[arg(long, env = "BLOB_ROUTER_CREATE_STREAMS", default_value_t = true, action = clap::ArgAction::Set)]
    pub create_streams: bool,
    /// Input stream name.
    #[arg(long, env = "BLOB_ROUTER_INPUT_STREAM", value_parser = parse_name, default_value = "BLOB_EVENTS")]
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
    #[arg(long, env = "BLOB_ROUTER_ROUTED_STREAM", value_parser = parse_name, default_value = "BLOB_ROUTED")]
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
    #[arg(long, env = "BLOB_ROUTER_ROUTED_PREFIX", value_parser = parse_subject, default_value = "blob.routed")]
    pub routed_prefix: String,
    /// Dead-letter stream name.
    #[arg(long, env = "BLOB_ROUTER_DLQ_STREAM", value_parser = parse_name, default_value = "BLOB_DLQ")]
    pub dlq_stream: String,
    /// Dead letters are published to `<prefix>.<reason>`.
    #[arg(long, env = "BLOB_ROUTER_DLQ_PREFIX", value_parser = parse_subject, default_value = "blob.dlq")]
    pub dlq_prefix: String,
    /// Durable consumer name, shared by all replicas.
    #[arg(long, env = "BLOB_ROUTER_CONSUMER", value_parser = parse_name, default_value = "blob-router")]
    pub consumer: String,
    /// Publish de-duplication window of created streams.
    #[arg(long, env = "BLOB_ROUTER_DUPLICATE_WINDOW", value_parser = humantime::parse_duration, default_value = "2m")]
    pub duplicate_window: Duration,
}

impl NatsArgs {
    /// The connection settings these flags name, their files read and checked: one path
    /// for every command that talks to NATS.
    pub fn connect_settings(&self) -> Result<ConnectSettings, SettingsError> {
        let auth = if let Some(path) = &self.nats_creds {
            AuthSpec::Creds(path.clone())
        } else if let Some(path) = &self.nats_nkey {
            AuthSpec::NKey(path.clone())
        } else if let Some(token) = &self.nats_token {
            AuthSpec::Token(SecretSource::Value(token.clone()))
        } else if let Some(path) = &self.nats_token_file {
            AuthSpec::Token(SecretSource::File(path.clone()))
        } else if let Some(user) = &self.nats_user {
            AuthSpec::UserPassword {
                user: user.clone(),
                password: match (&self.nats_password, &self.nats_password_file) {
                    (Some(pw), _) => Some(SecretSource::Value(pw.clone())),
                    (None, Some(path)) => Some(SecretSource::File(path.clone())),
                    (None, None) => None,
                },
            }
        } else {
            AuthSpec::None
        };
        let tls = TlsSpec {
            ca: self.nats_tls_ca.clone(),
            client: self.nats_tls_cert.clone().zip(self.nats_tls_key.clone()),
            first: self.nats_tls_first,
        };
        ConnectSettings::load(&self.nats_url, self.nats_connect_timeout, &auth, &tls)
    }

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
    /// Messages processed concurrently by this replica (all polled by one task: a
    /// replica's routing work uses one core; scale out with replicas).
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
    /// Deliveries of one input message at most. A message still failing on its last one
    /// (its outputs cannot be stored) is dead-lettered `max_deliveries_exceeded` and acked.
    #[arg(long, env = "BLOB_ROUTER_MAX_DELIVER", default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_deliver: i64,
    /// Delays before a failed message is redelivered (comma-separated): the n-th after
    /// delivery n, the last one repeated.
    #[arg(long, env = "BLOB_ROUTER_RETRY_BACKOFF", value_delimiter = ',', value_parser = humantime::parse_duration, default_value = "500ms,1s,2s,4s,8s,16s,30s")]
    pub retry_backoff: Vec<Duration>,
    /// How long one output may take, from being sent to its PubAck, before the message
    /// is retried.
    #[arg(long, env = "BLOB_ROUTER_PUBLISH_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub publish_timeout: Duration,
    /// How long a message the server stopped delivering unseen (or whose dead letter
    /// failed on its last delivery) is retried from its stored copy before it is
    /// reported abandoned.
    #[arg(long, env = "BLOB_ROUTER_STORED_COPY_PATIENCE", value_parser = humantime::parse_duration, default_value = "2m")]
    pub stored_copy_patience: Duration,
    /// Input messages larger than this (bytes) are dead-lettered `oversized_event`
    /// without being parsed.
    #[arg(long, env = "BLOB_ROUTER_MAX_EVENT_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_event_bytes: u64,
}

impl RunArgs {
    pub fn consumer(&self) -> ConsumerSettings {
        ConsumerSettings {
            stream: self.nats.input_stream.clone(),
            durable: self.nats.consumer.clone(),
            max_ack_pending: self.max_ack_pending,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            retry_backoff: self.retry_backoff.clone(),
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

/// How a command prints its summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// With --dry-run: evaluate every selected dead letter against the configs of this
    /// store (--configs or --mongodb-uri), as `run` would now.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Only dead letters with this reason (repeatable, or comma-separated).
    #[arg(long = "reason", env = "BLOB_ROUTER_REPLAY_REASON", value_delimiter = ',', value_parser = parse_reason)]
    pub reasons: Vec<Reason>,
    /// Only dead letters whose event landed in this container.
    #[arg(long, env = "BLOB_ROUTER_REPLAY_CONTAINER")]
    pub container: Option<String>,
    /// Only dead letters whose blob path starts with this.
    #[arg(long, env = "BLOB_ROUTER_REPLAY_PATH_PREFIX")]
    pub path_prefix: Option<String>,
    /// Only dead letters received at or after this time: RFC 3339, or a duration meaning
    /// "ago" (`2h`, `30m`).
    #[arg(long, env = "BLOB_ROUTER_REPLAY_SINCE", value_parser = parse_time)]
    pub since: Option<SystemTime>,
    /// Only dead letters received before this time (RFC 3339, or a duration ago).
    #[arg(long, env = "BLOB_ROUTER_REPLAY_UNTIL", value_parser = parse_time)]
    pub until: Option<SystemTime>,
    /// Only the dead letter of this event id.
    #[arg(long, env = "BLOB_ROUTER_REPLAY_EVENT_ID")]
    pub event_id: Option<String>,
    /// At most this many dead letters.
    #[arg(long, env = "BLOB_ROUTER_REPLAY_LIMIT", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Publish to this subject instead of each dead letter's original subject.
    #[arg(long, env = "BLOB_ROUTER_REPLAY_TO")]
    pub to: Option<String>,
    /// Keep replayed dead letters (default: delete each once it is republished).
    #[arg(long, env = "BLOB_ROUTER_REPLAY_KEEP")]
    pub keep: bool,
    /// Change nothing: count the selection by reason and container, show samples and,
    /// given --configs or --mongodb-uri, what each dead letter would become now.
    #[arg(long, env = "BLOB_ROUTER_REPLAY_DRY_RUN")]
    pub dry_run: bool,
    /// With --dry-run: how many dead letters to show in full.
    #[arg(long, env = "BLOB_ROUTER_REPLAY_SAMPLES", default_value_t = 5)]
    pub samples: usize,
    /// Republished dead letters awaiting their PubAck at once.
    #[arg(long, env = "BLOB_ROUTER_REPLAY_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Summary format.
    #[arg(long, env = "BLOB_ROUTER_OUTPUT", value_enum, default_value = "text")]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Args)]
pub struct LoadgenArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Events to publish [default: 10000, unless --duration is given].
    #[arg(long, env = "BLOB_ROUTER_LOADGEN_COUNT", conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Publish for this long instead of a fixed count (`30s`, `5m`).
    #[arg(long, env = "BLOB_ROUTER_LOADGEN_DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Events per second, paced on an open-loop schedule; 0 publishes as fast as the
    /// server accepts.
    #[arg(long, env = "BLOB_ROUTER_LOADGEN_RATE", default_value_t = 1000.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Mix of formats by weight.
    #[arg(long, env = "BLOB_ROUTER_LOADGEN_FORMATS", default_value = "eventgrid=5,s3=3,cloudevents=1,minio=1,gcs=1", value_parser = parse_mix)]
    pub formats: FormatMix,
    /// Containers the events land in (and the generated configs name).
    #[arg(long, env = "BLOB_ROUTER_LOADGEN_CONTAINERS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub containers: u32,
    /// Share of events for containers no config names (dead-lettered `no_matching_config`).
    #[arg(long, env = "BLOB_ROUTER_LOADGEN_UNMATCHED_RATIO", default_value_t = 0.0, value_parser = parse_ratio)]
    pub unmatched_ratio: f64,
    /// Seed for a repeatable run [default: random, printed in the report].
    #[arg(long, env = "BLOB_ROUTER_LOADGEN_SEED")]
    pub seed: Option<u64>,
    /// Input subject to publish to.
    #[arg(
        long,
        env = "BLOB_ROUTER_LOADGEN_SUBJECT",
        default_value = "blob.events.loadgen"
    )]
    pub subject: String,
    /// Write the configs matching --containers to this file (YAML, or JSON for `.json`)
    /// and exit: `run --configs FILE` then routes what loadgen sends.
    #[arg(long, env = "BLOB_ROUTER_LOADGEN_CONFIGS_OUT")]
    pub configs_out: Option<PathBuf>,
    /// How long to wait for outputs after the last publish before calling events missing.
    #[arg(long, env = "BLOB_ROUTER_LOADGEN_SETTLE", value_parser = humantime::parse_duration, default_value = "30s")]
    pub settle: Duration,
    /// Publishes awaiting their PubAck at once (at most the NATS client's own bound of
    /// 5,000, beyond which a send would wait for an ack nobody is collecting).
    #[arg(long, env = "BLOB_ROUTER_LOADGEN_MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub max_in_flight: u32,
    /// Also write the report as JSON to this file.
    #[arg(long, env = "BLOB_ROUTER_LOADGEN_REPORT")]
    pub report: Option<PathBuf>,
}

/// A synthetic event format of `loadgen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LoadFormat {
    EventGrid,
    CloudEvents,
    S3,
    Minio,
    Gcs,
}

impl LoadFormat {
    pub const ALL: [LoadFormat; 5] = [
        LoadFormat::EventGrid,
        LoadFormat::CloudEvents,
        LoadFormat::S3,
        LoadFormat::Minio,
        LoadFormat::Gcs,
    ];

    /// The name used in `--formats`.
    pub fn name(self) -> &'static str {
        match self {
            LoadFormat::EventGrid => "eventgrid",
            LoadFormat::CloudEvents => "cloudevents",
            LoadFormat::S3 => "s3",
            LoadFormat::Minio => "minio",
            LoadFormat::Gcs => "gcs",
        }
    }
}

/// `--formats`: formats with positive weights.
#[derive(Debug, Clone, PartialEq)]
pub struct FormatMix(pub Vec<(LoadFormat, u32)>);

fn parse_mix(s: &str) -> Result<FormatMix, String> {
    let mut mix = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
        let format = LoadFormat::ALL
            .into_iter()
            .find(|f| f.name() == name.trim())
            .ok_or_else(|| {
                format!(
                    "unknown format `{name}` (known: {})",
                    LoadFormat::ALL.map(LoadFormat::name).join(", ")
                )
            })?;
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| format!("weight of `{name}` is not a whole number: `{weight}`"))?;
        if mix.iter().any(|(f, _)| *f == format) {
            return Err(format!("`{name}` is given twice"));
        }
        if weight > 0 {
            mix.push((format, weight));
        }
    }
    if mix.is_empty() {
        return Err("no format has a positive weight".into());
    }
    Ok(FormatMix(mix))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a rate (events per second, 0 or more)"
        )),
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("`{s}` is not a ratio between 0 and 1")),
    }
}

/// A stream or consumer name (see [`crate::subject`]).
fn parse_name(s: &str) -> Result<String, String> {
    subject::check_name(s).map_err(|why| format!("{s:?} {why}"))?;
    Ok(s.to_owned())
}

/// A subject prefix: itself a subject to publish to (see [`crate::subject`]).
fn parse_subject(s: &str) -> Result<String, String> {
    subject::check_publish(s).map_err(|why| format!("{s:?} is not a valid NATS subject: {why}"))?;
    Ok(s.to_owned())
}

fn parse_reason(s: &str) -> Result<Reason, String> {
    s.parse::<Reason>().map_err(|e| {
        format!(
            "{e} (known: {})",
            Reason::ALL.map(Reason::as_str).join(", ")
        )
    })
}

/// An RFC 3339 time, or a duration meaning that long ago.
fn parse_time(s: &str) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    match humantime::parse_duration(s) {
        Ok(ago) => SystemTime::now()
            .checked_sub(ago)
            .ok_or_else(|| format!("`{s}` ago is before the epoch")),
        Err(_) => Err(format!(
            "`{s}` is neither an RFC 3339 time (2026-11-20T10:00:00Z) nor a duration ago (2h)"
        )),
    }
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
    #[arg(long, env = "BLOB_ROUTER_ROUTED_PREFIX", value_parser = parse_subject, default_value = "blob.routed")]
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

    /// Names and prefixes that end up in subjects are refused at once, with what is
    /// wrong: the worker's connections trust them (see `crate::subject`).
    #[test]
    fn names_and_prefixes_that_would_break_a_subject_are_refused() {
        for (flag, value, says) in [
            ("--input-stream", "BLOB EVENTS", "contains ' '"),
            ("--routed-stream", "a.b", "contains '.'"),
            ("--dlq-stream", "", "is empty"),
            ("--consumer", "blob*router", "contains '*'"),
            ("--dlq-prefix", "blob dlq", "it contains whitespace"),
            ("--routed-prefix", "blob.>", "wildcards"),
            ("--dlq-prefix", "blob..dlq", "empty token"),
        ] {
            let err = Cli::try_parse_from(["blob-router", "run", flag, value]).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(flag) && text.contains(says),
                "{flag} {value:?}: {text}"
            );
        }
        let cli = Cli::try_parse_from([
            "blob-router",
            "run",
            "--input-stream",
            "IN-1",
            "--consumer",
            "c_2",
            "--dlq-prefix",
            "x.dead",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(
            (
                run.nats.input_stream.as_str(),
                run.nats.consumer.as_str(),
                run.nats.dlq_prefix.as_str()
            ),
            ("IN-1", "c_2", "x.dead")
        );
    }

    #[test]
    fn delivery_flags() {
        let cli = Cli::try_parse_from(["blob-router", "run"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(run.max_deliver, 20);
        assert_eq!(run.retry_backoff.len(), 7);
        assert_eq!(run.retry_backoff[6], Duration::from_secs(30));
        assert_eq!(run.max_event_bytes, 1024 * 1024);
        let cli = Cli::try_parse_from([
            "blob-router",
            "run",
            "--retry-backoff",
            "50ms,2s",
            "--max-deliver",
            "3",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(
            run.retry_backoff,
            [Duration::from_millis(50), Duration::from_secs(2)]
        );
        assert_eq!(run.consumer().max_deliver, 3);
        let err = Cli::try_parse_from(["blob-router", "run", "--max-deliver", "0"]).unwrap_err();
        assert!(err.to_string().contains("max-deliver"), "{err}");
    }

    #[test]
    fn replay_selects_the_backstop_reasons() {
        let cli = Cli::try_parse_from([
            "blob-router",
            "replay",
            "--reason",
            "max_deliveries_exceeded,oversized_event",
        ])
        .unwrap();
        let Command::Replay(replay) = cli.command else {
            panic!("replay expected")
        };
        assert_eq!(
            replay.reasons,
            [Reason::MaxDeliveriesExceeded, Reason::OversizedEvent]
        );
    }

    #[test]
    fn secrets_are_refused_on_the_command_line() {
        for flag in ["--nats-password", "--nats-token"] {
            let mut args = vec!["blob-router", "check", flag, "s3cret-value"];
            if flag == "--nats-password" {
                args.extend(["--nats-user", "bob"]);
            }
            let err = Cli::try_parse_checked(args).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            let text = err.to_string();
            assert!(text.contains(flag) && text.contains("ps"), "{text}");
            assert!(!text.contains("s3cret-value"), "{text}");
        }
        // Every command that talks to NATS has the flags; `configs` has none.
        for command in ["run", "check", "replay", "loadgen"] {
            let cli = Cli::try_parse_checked([
                "blob-router",
                command,
                "--nats-user",
                "bob",
                "--nats-password-file",
                "/pw",
                "--nats-tls-ca",
                "/ca.pem",
            ])
            .unwrap();
            let shown = format!("{cli:?}");
            assert!(shown.contains("nats_user: Some(\"bob\")"), "{shown}");
        }
        assert!(Cli::try_parse_checked(["blob-router", "configs", "list"]).is_ok());
    }

    #[test]
    fn one_kind_of_credentials_at_a_time() {
        let conflicts: [&[&str]; 5] = [
            &["--nats-creds", "a", "--nats-nkey", "b"],
            &["--nats-creds", "a", "--nats-user", "bob"],
            &["--nats-nkey", "a", "--nats-token-file", "b"],
            &["--nats-token-file", "a", "--nats-user", "bob"],
            &["--nats-password-file", "a"],
        ];
        for extra in conflicts {
            let mut args = vec!["blob-router", "run"];
            args.extend_from_slice(extra);
            let err = Cli::try_parse_checked(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{extra:?}: {err}");
        }
        let err =
            Cli::try_parse_checked(["blob-router", "run", "--nats-tls-cert", "c"]).unwrap_err();
        assert!(err.to_string().contains("--nats-tls-key"), "{err}");
    }

    #[test]
    fn a_secret_in_the_arguments_never_shows_in_debug() {
        let args = NatsArgs {
            nats_token: Some(Secret::new("tok-s3cret")),
            nats_password: Some(Secret::new("pw-s3cret")),
            ..Cli::try_parse_checked(["blob-router", "check"])
                .map(|cli| match cli.command {
                    Command::Check(check) => check.nats,
                    _ => unreachable!(),
                })
                .unwrap()
        };
        let shown = format!("{args:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
