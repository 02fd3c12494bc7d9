//! `blob-router replay`: puts dead letters back on their input subject once a config is
//! fixed, or (`--dry-run`) shows what they would become, without changing anything.
//!
//! Selection reads the dead-letter stream with an ordered consumer (no acks, nothing
//! consumed away), filtered by reason on the server when one reason is asked for, from
//! `--since` on (stream time), and by everything else here. It stops at the stream's end
//! as it was when the replay started: dead letters that replayed events produce again
//! are not picked up by the same run.
//!
//! # Exactly once
//!
//! Each selected dead letter is republished (its original bytes and the input's own
//! headers) with a `Nats-Msg-Id` naming the *input message* it came from
//! ([`DeadLetter::replay_msg_id`]: `replay:dlq:<input stream>:<seq>:<body hash>`), and
//! deleted only after the PubAck. The id is the same for every replay of one dead letter,
//! and for every dead letter of one input (a message whose records failed separately goes
//! back once), so the input stream's de-duplication drops a second copy: a replay killed
//! between publish and delete and run again, or two replays racing over one selection,
//! store each input once (a delete that finds the dead letter already gone means another
//! replay did it). That guarantee holds within the input stream's duplicate window
//! (`--duplicate-window`, 2 minutes by default); rerunning later, the worker's own output
//! de-duplication is what is left. Records of a multi-record message that were routed
//! the first time are routed again by a replay; the routed stream drops them as
//! duplicates only within its own window.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::response::Response;
use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy, ErrorCode};
use async_nats::HeaderMap;
use futures::stream::StreamExt;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::cache::ConfigCache;
use crate::cli::{OutputFormat, ReplayArgs};
use crate::config::SourceConfig;
use crate::event::{self, RecordResult};
use crate::nats;
use crate::output::{headers, DeadLetter, Reason};
use crate::progress::Progress;
use crate::router;
use crate::store::{self, ConfigStore};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::Chain;

/// `blob-router replay`: exit 0 when everything selected was replayed (or, with
/// `--dry-run`, evaluated), 1 when anything failed.
pub async fn main(args: ReplayArgs) -> ExitCode {
    match replay(&args).await {
        Ok(summary) => {
            summary.print(args.output);
            if summary.failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {}", Chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// What a replay did, printed at the end (`--output json` for machines).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub dry_run: bool,
    /// Dead letters read from the stream.
    pub scanned: u64,
    /// Dead letters the filters selected.
    pub selected: u64,
    /// Republished (and deleted, unless `--keep`).
    pub replayed: u64,
    /// Selected but not replayed, with why (truncated bodies, replayed by a concurrent run).
    pub skipped: u64,
    pub failed: u64,
    /// Messages of the stream that are not dead letters this worker wrote.
    pub unreadable: u64,
    /// Dead letters counted at the start that were gone before they could be read.
    pub unread: u64,
    pub by_reason: BTreeMap<String, u64>,
    pub by_container: BTreeMap<String, u64>,
    pub skipped_why: BTreeMap<String, u64>,
    /// With `--dry-run` and a config store: what the selected dead letters would become.
    pub would: Option<BTreeMap<String, u64>>,
    pub samples: Vec<Sample>,
    pub failures: Vec<String>,
}

/// One dead letter shown in full by a dry run.
#[derive(Debug, Serialize)]
pub struct Sample {
    pub seq: u64,
    pub reason: String,
    pub received_at: String,
    pub event_id: Option<String>,
    pub subject: String,
    pub container: Option<String>,
    pub path: Option<String>,
    pub detail: String,
    /// What it would become now, per record (with a config store).
    pub would: Vec<String>,
}

impl Summary {
    fn print(&self, format: OutputFormat) {
        if format == OutputFormat::Json {
            println!(
                "{}",
                serde_json::to_string_pretty(self).expect("summary serializes")
            );
            return;
        }
        for s in &self.samples {
            println!(
                "#{} {} received {} event {} on {}",
                s.seq,
                s.reason,
                s.received_at,
                s.event_id.as_deref().unwrap_or("-"),
                s.subject
            );
            if let (Some(c), Some(p)) = (&s.container, &s.path) {
                println!("    blob {c}/{p}");
            }
            println!("    detail: {}", s.detail);
            for w in &s.would {
                println!("    {w}");
            }
        }
        let counts = |title: &str, map: &BTreeMap<String, u64>| {
            if !map.is_empty() {
                println!("{title}:");
                for (k, n) in map {
                    println!("  {n:>8}  {k}");
                }
            }
        };
        counts("by reason", &self.by_reason);
        counts("by container", &self.by_container);
        if let Some(would) = &self.would {
            counts("now", would);
        }
        counts("skipped", &self.skipped_why);
        for f in &self.failures {
            println!("failed: {f}");
        }
        let verb = if self.dry_run {
            "dry run, nothing changed"
        } else {
            "replay"
        };
        println!(
            "{verb}: scanned {}, selected {}, replayed {}, skipped {}, failed {}{}",
            self.scanned,
            self.selected,
            self.replayed,
            self.skipped,
            self.failed,
            if self.unreadable > 0 {
                format!(", {} not dead letters", self.unreadable)
            } else {
                String::new()
            }
        );
    }
}

/// The filters that need the dead letter itself (the reason filter also runs on the
/// server when it names one reason).
struct Filter<'a> {
    args: &'a ReplayArgs,
}

impl Filter<'_> {
    /// Whether `dl` is selected; `records` are its events as the worker parses them.
    fn selects(&self, dl: &DeadLetter, records: &[RecordResult]) -> bool {
        let a = self.args;
        if !a.reasons.is_empty() && !a.reasons.contains(&dl.reason) {
            return false;
        }
        if a.since.is_some_and(|t| dl.received_at < t)
            || a.until.is_some_and(|t| dl.received_at >= t)
        {
            return false;
        }
        if let Some(id) = &a.event_id {
            // The header holds a header-safe copy; the records hold the id itself.
            let in_records = records
                .iter()
                .any(|r| r.as_ref().is_ok_and(|r| r.event.id == *id));
            if dl.event_id.as_ref() != Some(id) && !in_records {
                return false;
            }
        }
        if a.container.is_none() && a.path_prefix.is_none() {
            return true;
        }
        records.iter().filter_map(|r| r.as_ref().ok()).any(|r| {
            a.container.as_ref().is_none_or(|c| *c == r.event.container)
                && a.path_prefix
                    .as_ref()
                    .is_none_or(|p| r.event.path.starts_with(p.as_str()))
        })
    }
}

/// The records of a dead letter that it is about: the one its event id names, else all.
fn records_of(dl: &DeadLetter) -> Vec<RecordResult<'_>> {
    let event_type = dl
        .other_headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(headers::EVENT_TYPE))
        .map(|(_, v)| v.as_str());
    let all = event::parse(&dl.payload, event_type);
    let Some(id) = &dl.event_id else {
        return all;
    };
    let (own, others): (Vec<RecordResult>, Vec<RecordResult>) =
        all.into_iter().partition(|r| match r {
            Ok(rec) => rec.event.id == *id,
            Err(e) => e.event_id.as_deref() == Some(id),
        });
    if own.is_empty() {
        others
    } else {
        own
    }
}

/// What a record would become against the current configs: the config that would take
/// it, or why it would be dead-lettered again.
fn verdict(record: &RecordResult, cache: &ConfigCache) -> Result<Arc<SourceConfig>, Reason> {
    match record {
        Err(e) => Err(Reason::from(&e.error)),
        Ok(r) => router::decide(&r.event, &cache.load())
            .map(|m| m.config)
            .ok_or(Reason::NoMatchingConfig),
    }
}

/// [`verdict`] in words, checking streams too: a routed message no stream captures
/// would be dead-lettered `no_stream_for_subject`.
async fn evaluate(
    record: &RecordResult<'_>,
    cache: &ConfigCache,
    streams: &mut SubjectStreams<'_>,
) -> String {
    match verdict(record, cache) {
        Ok(config) if streams.captured(&config.subject).await => {
            format!("would route to {}", config.id)
        }
        Ok(_) => format!("would dead-letter again: {}", Reason::NoStreamForSubject),
        Err(reason) => format!("would dead-letter again: {reason}"),
    }
}

/// The configs to evaluate a dry run against, when a store was named.
async fn current_configs(args: &ReplayArgs) -> anyhow::Result<Option<ConfigCache>> {
    if args.source.configs.is_none() && args.source.mongodb_uri.is_none() {
        return Ok(None);
    }
    let store = store::open(&args.source.selection())
        .await
        .context("opening the config source")?;
    let source: Arc<dyn ConfigStore> = store.config_store();
    let docs = source
        .snapshot()
        .await
        .with_context(|| format!("reading configs from {}", source.describe()))?;
    let cache = ConfigCache::new(Metrics::detached(), &args.nats.routed_prefix);
    cache.reset(docs);
    let refused = cache.health().refused.len();
    if refused > 0 {
        eprintln!(
            "note: {refused} configs of {} are refused; they route nothing",
            source.describe()
        );
    }
    Ok(Some(cache))
}

/// With no dead letter for this long, the stream has been read to its end (the ones
/// still counted as pending were deleted meanwhile, by another replay or a limit). The
/// summary says how many were counted at the start but never read.
const IDLE_END: Duration = Duration::from_secs(5);

async fn replay(args: &ReplayArgs) -> anyhow::Result<Summary> {
    let evaluator = if args.dry_run {
        current_configs(args).await?
    } else {
        None
    };
    let client = nats::connect(&args.nats.connect_settings()?, "blob-router-replay").await?;
    let js = jetstream::new(client.clone());
    let mut stream = js
        .get_stream(&args.nats.dlq_stream)
        .await
        .with_context(|| format!("dead-letter stream {}", args.nats.dlq_stream))?;
    let end = stream
        .info()
        .await
        .context("dead-letter stream info")?
        .state
        .last_sequence;

    let filter_subject = match args.reasons.as_slice() {
        [one] => one.subject(&args.nats.dlq_prefix),
        _ => String::new(),
    };
    let deliver_policy = match args.since {
        Some(t) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from(t),
        },
        None => DeliverPolicy::All,
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject,
            deliver_policy,
            ..Default::default()
        })
        .await
        .context("reading the dead-letter stream")?;
    let pending = consumer.cached_info().num_pending;
    let mut summary = Summary {
        dry_run: args.dry_run,
        would: evaluator.as_ref().map(|_| BTreeMap::new()),
        ..Default::default()
    };
    let progress = Progress::new("scanned", pending);
    let filter = Filter { args };
    let mut streams_of = SubjectStreams::new(&js);
    let replayer = Replayer {
        js: js.clone(),
        dlq_stream: args.nats.dlq_stream.clone(),
        to: args.to.clone(),
        keep: args.keep,
    };
    let mut in_flight = JoinSet::new();
    let mut messages = consumer
        .messages()
        .await
        .context("reading the dead-letter stream")?;
    let mut read = 0u64;
    while read < pending {
        let msg = match tokio::time::timeout(IDLE_END, messages.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(Ok(msg))) => msg,
            Ok(Some(Err(e))) => {
                // The ordered consumer recreates itself (missed heartbeats and the like).
                tracing::warn!(error = %Chain(&e), "reading the dead-letter stream; continuing");
                continue;
            }
        };
        read += 1;
        progress.inc(1);
        let Ok(info) = msg.info() else { continue };
        let seq = info.stream_sequence;
        if seq > end {
            break;
        }
        let last = info.pending == 0 || seq == end;
        summary.scanned += 1;
        let dl = match DeadLetter::read(msg.headers.as_ref(), msg.payload.clone()) {
            Ok(dl) => dl,
            Err(e) => {
                summary.unreadable += 1;
                tracing::debug!(seq, error = %e, "not a dead letter; left alone");
                if last {
                    break;
                }
                continue;
            }
        };
        let records = records_of(&dl);
        if filter.selects(&dl, &records) {
            summary.selected += 1;
            *summary.by_reason.entry(dl.reason.to_string()).or_default() += 1;
            let container = records
                .iter()
                .find_map(|r| r.as_ref().ok())
                .map(|r| r.event.container.to_string());
            *summary
                .by_container
                .entry(container.clone().unwrap_or_else(|| "(unknown)".into()))
                .or_default() += 1;
            let mut would = Vec::new();
            if let Some(cache) = &evaluator {
                for r in &records {
                    would.push(evaluate(r, cache, &mut streams_of).await);
                }
            }
            if let Some(totals) = &mut summary.would {
                for w in &would {
                    *totals.entry(w.clone()).or_default() += 1;
                }
            }
            if args.dry_run {
                if summary.samples.len() < args.samples {
                    let first = records.iter().find_map(|r| r.as_ref().ok());
                    summary.samples.push(Sample {
                        seq,
                        reason: dl.reason.to_string(),
                        received_at: humantime::format_rfc3339_millis(dl.received_at).to_string(),
                        event_id: dl.event_id.clone(),
                        subject: dl.original_subject.clone(),
                        container,
                        path: first.map(|r| r.event.path.to_string()),
                        detail: dl.detail.clone(),
                        would,
                    });
                }
            } else if let Some(original) = dl.truncated {
                account(
                    &mut summary,
                    Done::Failed(format!(
                        "#{seq}: the body was cut from {original} bytes when dead-lettered; not replayed"
                    )),
                );
            } else {
                while in_flight.len() >= args.concurrency as usize {
                    if let Some(done) = in_flight.join_next().await {
                        account(
                            &mut summary,
                            done.unwrap_or_else(|e| Done::Failed(format!("replay task: {e}"))),
                        );
                    }
                }
                let replayer = replayer.clone();
                in_flight.spawn(async move { replayer.republish(seq, dl).await });
            }
            if args.limit.is_some_and(|l| summary.selected >= l) {
                break;
            }
        }
        if last {
            break;
        }
    }
    while let Some(done) = in_flight.join_next().await {
        account(
            &mut summary,
            done.unwrap_or_else(|e| Done::Failed(format!("replay task: {e}"))),
        );
    }
    if read < pending && args.limit.is_none_or(|l| summary.selected < l) {
        summary.unread = pending - read;
        eprintln!(
            "note: {} dead letters counted at the start were not there to read (deleted meanwhile, \
             by another replay or a stream limit); run again to be sure nothing is left",
            summary.unread
        );
    }
    progress.finish();
    // Bounded: the deletes and publishes above were all acknowledged already.
    let _ = tokio::time::timeout(Duration::from_secs(3), client.flush()).await;
    Ok(summary)
}

/// Which subjects a stream captures, asked once per subject (a dry run's "would route"
/// is only true when the routed message can be stored).
struct SubjectStreams<'a> {
    js: &'a jetstream::Context,
    known: HashMap<String, bool>,
}

impl<'a> SubjectStreams<'a> {
    fn new(js: &'a jetstream::Context) -> Self {
        SubjectStreams {
            js,
            known: HashMap::new(),
        }
    }

    async fn captured(&mut self, subject: &str) -> bool {
        if let Some(known) = self.known.get(subject) {
            return *known;
        }
        use jetstream::context::GetStreamByNameErrorKind as Kind;
        let captured = !matches!(
            self.js.stream_by_subject(subject).await,
            Err(e) if e.kind() == Kind::NotFound
        );
        self.known.insert(subject.to_owned(), captured);
        captured
    }
}

/// How one republish ended.
enum Done {
    Replayed,
    /// Republished (or found already republished) but deleted by another replay first.
    AlreadyDeleted,
    Failed(String),
}

/// Failures listed in the summary (the count is always complete).
const LISTED_FAILURES: usize = 20;

fn account(summary: &mut Summary, done: Done) {
    match done {
        Done::Replayed => summary.replayed += 1,
        Done::AlreadyDeleted => {
            summary.skipped += 1;
            *summary
                .skipped_why
                .entry("already replayed by another run".into())
                .or_default() += 1;
        }
        Done::Failed(why) => {
            summary.failed += 1;
            if summary.failures.len() < LISTED_FAILURES {
                summary.failures.push(why);
            }
        }
    }
}

/// What every republish needs; cheap to clone into a task.
#[derive(Clone)]
struct Replayer {
    js: jetstream::Context,
    dlq_stream: String,
    to: Option<String>,
    keep: bool,
}

/// The reply to a `STREAM.MSG.DELETE` request.
#[derive(serde::Deserialize)]
struct Deleted {
    success: bool,
}

impl Replayer {
    /// Republishes one dead letter, waits for the PubAck, then deletes it (unless
    /// `--keep`).
    async fn republish(&self, seq: u64, dl: DeadLetter) -> Done {
        let subject = self
            .to
            .clone()
            .unwrap_or_else(|| dl.original_subject.clone());
        let mut h = HeaderMap::new();
        for (k, v) in &dl.other_headers {
            h.append(k.as_str(), v.as_str());
        }
        h.insert(
            headers::MSG_ID,
            dl.replay_msg_id(&self.dlq_stream, seq).as_str(),
        );
        let ack = match self
            .js
            .publish_with_headers(subject.clone(), h, dl.payload)
            .await
        {
            Ok(pending) => pending.await,
            Err(e) => Err(e),
        };
        if let Err(e) = ack {
            return Done::Failed(format!("#{seq}: publishing to {subject}: {}", Chain(&e)));
        }
        if self.keep {
            return Done::Replayed;
        }
        match self.delete(seq).await {
            Ok(()) => Done::Replayed,
            // Deleted first by a replay racing this one (which published too: one of the
            // two copies was dropped as a duplicate).
            Err(DeleteError::Gone) => Done::AlreadyDeleted,
            Err(DeleteError::Failed(why)) => Done::Failed(format!(
                "#{seq}: republished, but deleting the dead letter failed (a rerun within the \
                 duplicate window will not duplicate it): {why}"
            )),
        }
    }

    /// Deletes a dead letter without the secure erase (an fsync per message) that the
    /// client's `delete_message` asks for: nothing secret is in it.
    async fn delete(&self, seq: u64) -> Result<(), DeleteError> {
        let subject = format!("STREAM.MSG.DELETE.{}", self.dlq_stream);
        let reply: Result<Response<Deleted>, _> = self
            .js
            .request(subject, &serde_json::json!({"seq": seq, "no_erase": true}))
            .await;
        match reply {
            Ok(Response::Ok(Deleted { success: true })) => Ok(()),
            Ok(Response::Ok(Deleted { success: false })) => {
                Err(DeleteError::Failed("the server did not delete it".into()))
            }
            Ok(Response::Err { error }) if is_gone(&error) => Err(DeleteError::Gone),
            Ok(Response::Err { error }) => Err(DeleteError::Failed(error.to_string())),
            Err(e) => Err(DeleteError::Failed(Chain(&e).to_string())),
        }
    }
}

enum DeleteError {
    /// No longer there: another replay deleted it.
    Gone,
    Failed(String),
}

/// Whether a delete failed because the message is no longer there. Servers say so with
/// different codes: sequence not found (10043), message not found (10037), or a failed
/// delete (10057) whose text says "no message found".
fn is_gone(e: &jetstream::Error) -> bool {
    let code = e.error_code();
    code == ErrorCode::SEQUENCE_NOT_FOUND
        || code == ErrorCode::NO_MESSAGE_FOUND
        || (code == ErrorCode::STREAM_MESSAGE_DELETE_FAILED
            && e.to_string().to_lowercase().contains("not found"))
        || (code == ErrorCode::STREAM_MESSAGE_DELETE_FAILED
            && e.to_string().to_lowercase().contains("no message"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    use bytes::Bytes;
    use clap::Parser;

    use crate::cli::{Cli, Command};
    use crate::output::{dead_letter_headers, InputMessage};

    fn args(flags: &[&str]) -> ReplayArgs {
        let mut argv = vec!["blob-router", "replay"];
        argv.extend_from_slice(flags);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Replay(a) => a,
            _ => unreachable!(),
        }
    }

    fn dead_letter(body: &'static [u8], reason: Reason, event_id: Option<&str>) -> DeadLetter {
        let payload = Bytes::from_static(body);
        let input = InputMessage {
            subject: "blob.events.x",
            payload: &payload,
            headers: None,
            stream: "BLOB_EVENTS",
            stream_seq: 1,
            received_at: crate::output::Received::At(SystemTime::now()),
        };
        let h = dead_letter_headers(&input, 0, reason, "d", event_id);
        DeadLetter::read(Some(&h), payload.clone()).unwrap()
    }

    const EVENT_GRID: &[u8] = include_bytes!("../../fixtures/events/eventgrid.json");

    #[test]
    fn filters_combine() {
        let dl = dead_letter(EVENT_GRID, Reason::NoMatchingConfig, None);
        let records = records_of(&dl);
        let event = &records[0].as_ref().unwrap().event;
        let (container, path) = (event.container.clone(), event.path.clone());
        let sel = |flags: &[&str]| Filter { args: &args(flags) }.selects(&dl, &records);
        assert!(sel(&[]));
        assert!(sel(&["--reason", "no_matching_config"]));
        assert!(sel(&["--reason", "malformed_event,no_matching_config"]));
        assert!(!sel(&["--reason", "malformed_event"]));
        assert!(sel(&["--container", &container]));
        assert!(!sel(&["--container", "elsewhere"]));
        assert!(sel(&["--path-prefix", &path[..3]]));
        assert!(!sel(&["--path-prefix", "zzz/"]));
        assert!(sel(&[
            "--container",
            &container,
            "--path-prefix",
            &path[..3],
            "--since",
            "1h"
        ]));
        assert!(!sel(&["--since", "2999-01-01T00:00:00Z"]));
        assert!(!sel(&["--until", "1h"]));
        assert!(!sel(&["--event-id", "other"]));
    }

    #[test]
    fn a_malformed_dead_letter_has_no_container_and_would_fail_again() {
        let dl = dead_letter(b"not json", Reason::MalformedEvent, None);
        let records = records_of(&dl);
        assert!(!Filter {
            args: &args(&["--container", "c"])
        }
        .selects(&dl, &records));
        let cache = ConfigCache::new(Metrics::detached(), "blob.routed");
        assert_eq!(
            verdict(&records[0], &cache).unwrap_err(),
            Reason::MalformedEvent
        );
    }

    #[test]
    fn bad_flags_fail_with_a_message() {
        let err = Cli::try_parse_from(["blob-router", "replay", "--reason", "nope"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown dead-letter reason `nope`"),
            "{err}"
        );
        let err =
            Cli::try_parse_from(["blob-router", "replay", "--since", "last tuesday"]).unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
        let err = Cli::try_parse_from(["blob-router", "replay", "--limit", "0"]).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }
}
