//! `blob-router loadgen`: publishes synthetic blob-created events and measures what the
//! pipeline sustains, as a user sees it: from the input subject to the routed and
//! dead-letter streams.
//!
//! - **Open loop.** Event `n` is due at `start + n / rate`, whether or not the pipeline
//!   keeps up. Latency is measured from that *intended* time to the output's arrival, so
//!   a stalled pipeline (or a stalled publisher) shows up in the tail instead of being
//!   hidden by sending less (coordinated omission). `--rate 0` sends as fast as the
//!   server accepts; latency is then measured from each actual send.
//! - **Exactly once.** Every accepted event must appear exactly once across the routed
//!   and dead-letter streams (read with ordered consumers from where they stood at the
//!   start, headers only). After the last publish, loadgen waits up to `--settle` for the
//!   outputs, then until it has read both streams to their end, and lists what is
//!   missing or duplicated; either makes the exit code non-zero.
//! - **Repeatable.** `--seed` fixes formats, containers and paths; event ids carry a run
//!   id as well, so a rerun is not swallowed by JetStream's de-duplication of the last.
//!
//! `--configs-out FILE` writes the configs that route these events (three per container:
//! a `results/{plantation_id}/{crop}/{batch_id}.json` pattern, `images/**`, and a
//! catch-all), so `loadgen --configs-out c.yaml`, `run --configs c.yaml` and `loadgen` is
//! a complete load test on one machine.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy};
use async_nats::HeaderMap;
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::cli::{FormatMix, LoadFormat, LoadgenArgs};
use crate::event;
use crate::nats;
use crate::output::headers;
use crate::progress::Progress;

/// Events published when neither `--count` nor `--duration` is given.
const DEFAULT_COUNT: u64 = 10_000;
/// Longest latency the histogram holds (1 hour, in microseconds); longer ones saturate.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Missing or duplicated ids listed in the report (the counts are always complete).
const LISTED: usize = 20;

/// `blob-router loadgen`: exit 0 when every accepted event came out exactly once and
/// every publish was accepted; 1 otherwise.
pub async fn main(args: LoadgenArgs) -> ExitCode {
    if let Some(path) = &args.configs_out {
        return match write_configs(path, args.containers) {
            Ok(n) => {
                eprintln!(
                    "wrote {n} configs for {} containers to {}; now `blob-router run --configs {}`, then `blob-router loadgen --containers {}`",
                    args.containers,
                    path.display(),
                    path.display(),
                    args.containers
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}", crate::telemetry::Chain(e.as_ref()));
                ExitCode::FAILURE
            }
        };
    }
    match loadgen(&args).await {
        Ok(report) => {
            report.print();
            if let Some(path) = &args.report {
                let text = serde_json::to_string_pretty(&report).expect("report serializes");
                if let Err(e) = std::fs::write(path, text + "\n") {
                    eprintln!("error: writing {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {}", crate::telemetry::Chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// The container name of index `i`, shared by the configs and the events.
fn container(i: u32) -> String {
    format!("lg-{i:04}")
}

/// The configs that route what [`Generator`] makes for `containers` containers.
pub fn configs(containers: u32) -> Vec<Value> {
    let mut docs = Vec::with_capacity(containers as usize * 3);
    for i in 0..containers {
        let c = container(i);
        docs.push(json!({
            "_id": format!("{c}-results"),
            "priority": 10,
            "ingestion": {
                "mode": "blob_trigger",
                "landing_container": c,
                "path_pattern": {
                    "pattern": "results/{plantation_id}/{crop}/{batch_id}.json",
                    "extract_fields": ["plantation_id", "crop", "batch_id"]
                },
                "file_format": "json"
            },
            "version": 1
        }));
        docs.push(json!({
            "_id": format!("{c}-images"),
            "priority": 5,
            "ingestion": {
                "mode": "blob_trigger",
                "landing_container": c,
                "path_pattern": {"pattern": "images/**"},
                "file_format": "jpeg"
            },
            "version": 1
        }));
        docs.push(json!({
            "_id": format!("{c}-raw"),
            "ingestion": {"mode": "blob_trigger", "landing_container": c},
            "version": 1
        }));
    }
    docs
}

fn write_configs(path: &Path, containers: u32) -> anyhow::Result<usize> {
    let docs = configs(containers);
    let text = if path.extension().is_some_and(|e| e == "json") {
        serde_json::to_string_pretty(&docs)? + "\n"
    } else {
        serde_yaml_ng::to_string(&docs)?
    };
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(docs.len())
}

/// One synthetic event, ready to publish.
pub struct Synthetic {
    pub format: LoadFormat,
    pub body: Vec<u8>,
    /// `eventType` for GCS, as Pub/Sub carries it.
    pub event_type: Option<&'static str>,
    /// The id the worker will give it (its own, or derived from its content).
    pub id: String,
}

/// Makes synthetic events: repeatable for one seed, unique within a run.
pub struct Generator {
    rng: fastrand::Rng,
    /// Cumulative weights, for picking a format.
    mix: Vec<(LoadFormat, u32)>,
    total_weight: u32,
    containers: u32,
    unmatched_ratio: f64,
    run: String,
}

const CROPS: [&str; 4] = ["tea", "coffee", "cocoa", "rubber"];
const ACCOUNT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-loadgen/providers/Microsoft.Storage/storageAccounts/loadgen";

impl Generator {
    pub fn new(
        seed: u64,
        mix: &FormatMix,
        containers: u32,
        unmatched_ratio: f64,
        run: &str,
    ) -> Self {
        let mut cumulative = Vec::with_capacity(mix.0.len());
        let mut total = 0;
        for (f, w) in &mix.0 {
            total += w;
            cumulative.push((*f, total));
        }
        Generator {
            rng: fastrand::Rng::with_seed(seed),
            mix: cumulative,
            total_weight: total,
            containers,
            unmatched_ratio,
            run: run.to_owned(),
        }
    }

    /// Event number `n`.
    pub fn next(&mut self, n: u64) -> Synthetic {
        let pick = self.rng.u32(0..self.total_weight);
        let format = self
            .mix
            .iter()
            .find(|(_, upto)| pick < *upto)
            .map(|(f, _)| *f)
            .expect("pick below the total weight");
        let container = if self.rng.f64() < self.unmatched_ratio {
            format!("lg-unmatched-{:02}", self.rng.u32(0..16))
        } else {
            container(self.rng.u32(0..self.containers))
        };
        let path = match self.rng.u8(0..10) {
            0..=5 => format!(
                "results/plantation-{}/{}/batch-{}-{n}.json",
                self.rng.u32(1..200),
                CROPS[self.rng.usize(0..CROPS.len())],
                self.run
            ),
            6..=8 => format!("images/2026/11/{}/{}-{n}.jpg", self.rng.u8(1..29), self.run),
            _ => format!("misc/{}-{n}.bin", self.run),
        };
        let size = self.rng.u64(100..5_000_000);
        let id = format!("lg-{}-{n}", self.run);
        let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let (body, event_type) = match format {
            LoadFormat::EventGrid => (
                json!({
                    "topic": ACCOUNT,
                    "subject": format!("/blobServices/default/containers/{container}/blobs/{path}"),
                    "eventType": "Microsoft.Storage.BlobCreated",
                    "id": id,
                    "data": {
                        "api": "PutBlob", "eTag": format!("0x{:016X}", self.rng.u64(..)),
                        "contentType": "application/octet-stream", "contentLength": size,
                        "blobType": "BlockBlob",
                        "url": format!("https://loadgen.blob.core.windows.net/{container}/{path}")
                    },
                    "dataVersion": "", "metadataVersion": "1", "eventTime": now
                }),
                None,
            ),
            LoadFormat::CloudEvents => (
                json!({
                    "specversion": "1.0", "type": "Microsoft.Storage.BlobCreated",
                    "source": ACCOUNT, "id": id, "time": now,
                    "subject": format!("/blobServices/default/containers/{container}/blobs/{path}"),
                    "data": {
                        "api": "PutBlob", "eTag": format!("0x{:016X}", self.rng.u64(..)),
                        "contentType": "application/octet-stream", "contentLength": size,
                        "blobType": "BlockBlob"
                    }
                }),
                None,
            ),
            LoadFormat::S3 => {
                let mut record = json!({"eventVersion": "2.1", "eventSource": "aws:s3",
                                        "awsRegion": "eu-west-1", "eventName": "ObjectCreated:Put"});
                record["eventTime"] = now.into();
                record["s3"] = s3_entity(&container, &path, size, self.rng.u128(..), n);
                (json!({"Records": [record]}), None)
            }
            LoadFormat::Minio => {
                let mut record = json!({"eventVersion": "2.0", "eventSource": "minio:s3",
                                        "awsRegion": "", "eventName": "s3:ObjectCreated:Put"});
                record["eventTime"] = now.into();
                // MinIO encodes `/` in keys.
                record["s3"] = s3_entity(
                    &container,
                    &path.replace('/', "%2F"),
                    size,
                    self.rng.u128(..),
                    n,
                );
                (
                    json!({"EventName": "s3:ObjectCreated:Put", "Key": format!("{container}/{path}"), "Records": [record]}),
                    None,
                )
            }
            LoadFormat::Gcs => (
                json!({
                    "kind": "storage#object",
                    "id": format!("{container}/{path}/{n}"),
                    "name": path, "bucket": container,
                    "generation": n.to_string(), "metageneration": "1",
                    "contentType": "application/octet-stream",
                    "timeCreated": now, "updated": now, "size": size.to_string()
                }),
                Some("OBJECT_FINALIZE"),
            ),
        };
        let body = serde_json::to_vec(&body).expect("synthetic events serialize");
        // The id the worker will see: its own, or the one it derives (S3, MinIO).
        let id = event::parse(&body, event_type)
            .into_iter()
            .next()
            .and_then(|r| r.ok())
            .map(|r| r.event.id.into_owned())
            .unwrap_or(id);
        Synthetic {
            format,
            body,
            event_type,
            id,
        }
    }
}

/// The `s3` object of an S3 or MinIO record.
fn s3_entity(bucket: &str, key: &str, size: u64, etag: u128, n: u64) -> Value {
    json!({
        "s3SchemaVersion": "1.0", "configurationId": "loadgen",
        "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
        "object": {"key": key, "size": size, "eTag": format!("{etag:032x}"), "sequencer": format!("{n:018X}")}
    })
}

/// What became of the events of this run, as the output streams show it.
#[derive(Default)]
struct Tracker {
    /// Accepted (or in flight) events: when each was due, and how often it came out.
    events: HashMap<String, Entry>,
    /// Events not seen at the outputs yet.
    unseen: usize,
    outcomes: BTreeMap<String, u64>,
    outputs: u64,
    foreign: u64,
    first_output: Option<Instant>,
    last_output: Option<Instant>,
    latency: Option<Histogram<u64>>,
}

struct Entry {
    due: Instant,
    seen: u32,
}

impl Tracker {
    fn output(&mut self, id: Option<&str>, outcome: String, at: Instant) {
        let Some(entry) = id.and_then(|id| self.events.get_mut(id)) else {
            self.foreign += 1;
            return;
        };
        entry.seen += 1;
        if entry.seen == 1 {
            self.unseen -= 1;
        }
        self.outputs += 1;
        *self.outcomes.entry(outcome).or_default() += 1;
        self.first_output.get_or_insert(at);
        self.last_output = Some(at);
        if entry.seen == 1 {
            let us = at.saturating_duration_since(entry.due).as_micros() as u64;
            if let Some(h) = &mut self.latency {
                h.saturating_record(us.clamp(1, MAX_LATENCY_US));
            }
        }
    }

    /// An event published (or about to be) that must come out once.
    fn expect(&mut self, id: String, due: Instant) {
        if self.events.insert(id, Entry { due, seen: 0 }).is_none() {
            self.unseen += 1;
        }
    }

    /// An event whose publish failed: not expected after all.
    fn forget(&mut self, id: &str) {
        if self.events.remove(id).is_some_and(|e| e.seen == 0) {
            self.unseen -= 1;
        }
    }
}

/// Follows one output stream from its end at the start, headers only.
async fn watch(
    js: jetstream::Context,
    stream_name: String,
    tracker: Arc<Mutex<Tracker>>,
    last_seen: Arc<AtomicU64>,
    ready: tokio::sync::oneshot::Sender<()>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut stream = js
        .get_stream(&stream_name)
        .await
        .with_context(|| format!("output stream {stream_name}"))?;
    let start = stream.info().await?.state.last_sequence;
    last_seen.store(start, Relaxed);
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            headers_only: true,
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start + 1,
            },
            ..Default::default()
        })
        .await
        .with_context(|| format!("reading {stream_name}"))?;
    let mut messages = consumer.messages().await?;
    let _ = ready.send(());
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            m = messages.next() => match m {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(stream = %stream_name, error = %e, "reading an output stream");
                    continue;
                }
                None => return Ok(()),
            },
        };
        let at = Instant::now();
        let h = msg.headers.as_ref();
        let get = |name: &str| h.and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
        let outcome = match get(headers::REASON) {
            Some(reason) => format!("dead_lettered:{reason}"),
            None => "routed".to_owned(),
        };
        let id = get(headers::EVENT_ID);
        tracker
            .lock()
            .expect("tracker lock")
            .output(id.as_deref(), outcome, at);
        if let Ok(info) = msg.info() {
            last_seen.store(info.stream_sequence, Relaxed);
        }
    }
}

/// The report, printed as a table and written as JSON with `--report`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub run_id: String,
    pub seed: u64,
    pub formats: BTreeMap<String, u64>,
    pub containers: u32,
    pub unmatched_ratio: f64,
    /// Target events per second (0: as fast as possible).
    pub rate: f64,
    pub published: u64,
    pub publish_failures: u64,
    pub publish_seconds: f64,
    /// Accepted publishes per second.
    pub accepted_rate: f64,
    pub outputs: u64,
    /// Outputs per second, from the first event's due time to the last output.
    pub output_rate: f64,
    /// End to end, from each event's intended send time to its first output (ms).
    pub latency_ms: Latency,
    pub outcomes: BTreeMap<String, u64>,
    pub missing: u64,
    pub missing_ids: Vec<String>,
    pub duplicated: u64,
    pub duplicated_ids: Vec<String>,
    /// Outputs of events this run did not publish (another producer, an earlier run).
    pub foreign_outputs: u64,
    pub exactly_once: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    fn from(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

impl Report {
    /// Every accepted event came out exactly once, and every publish was accepted.
    pub fn ok(&self) -> bool {
        self.exactly_once && self.publish_failures == 0
    }

    fn print(&self) {
        let row = |k: &str, v: String| println!("  {k:<34} {v}");
        println!("loadgen run {} (seed {})", self.run_id, self.seed);
        let formats: Vec<String> = self
            .formats
            .iter()
            .map(|(f, n)| format!("{f}={n}"))
            .collect();
        row("formats", formats.join(" "));
        row(
            "target rate",
            if self.rate > 0.0 {
                format!("{:.0}/s", self.rate)
            } else {
                "as fast as possible".into()
            },
        );
        row(
            "published",
            format!(
                "{} in {:.2} s ({:.0}/s accepted), {} failed",
                self.published, self.publish_seconds, self.accepted_rate, self.publish_failures
            ),
        );
        row(
            "outputs",
            format!("{} ({:.0}/s end to end)", self.outputs, self.output_rate),
        );
        let l = &self.latency_ms;
        row(
            "latency (ms)",
            format!(
                "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}",
                l.p50, l.p90, l.p99, l.p999, l.max, l.mean
            ),
        );
        for (outcome, n) in &self.outcomes {
            row(outcome, n.to_string());
        }
        row("missing", self.missing.to_string());
        row("duplicated", self.duplicated.to_string());
        if self.foreign_outputs > 0 {
            row("other outputs", self.foreign_outputs.to_string());
        }
        for id in &self.missing_ids {
            println!("  missing    {id}");
        }
        for id in &self.duplicated_ids {
            println!("  duplicated {id}");
        }
        println!(
            "{}",
            if self.ok() {
                "exactly once: every accepted event came out once"
            } else if !self.exactly_once {
                "NOT exactly once: see missing / duplicated above"
            } else {
                "publishes failed: see above"
            }
        );
    }
}

/// A run id: distinct per run, so reruns with one seed are not de-duplicated away.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:08x}",
        (nanos as u64 ^ std::process::id() as u64 ^ fastrand::u64(..)) as u32
    )
}

async fn loadgen(args: &LoadgenArgs) -> anyhow::Result<Report> {
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let run = run_id();
    let client = nats::connect(&args.nats.connect_settings()?, "blob-router-loadgen").await?;
    let js = jetstream::new(client.clone());
    let tracker = Arc::new(Mutex::new(Tracker {
        latency: Some(
            Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds"),
        ),
        ..Default::default()
    }));

    // Watch the outputs before the first publish, from where they stand now.
    let stop_watch = CancellationToken::new();
    let mut watchers = Vec::new();
    let mut positions = Vec::new();
    for name in [&args.nats.routed_stream, &args.nats.dlq_stream] {
        let last = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        positions.push((name.clone(), last.clone()));
        let task = tokio::spawn(watch(
            js.clone(),
            name.clone(),
            tracker.clone(),
            last,
            ready_tx,
            stop_watch.clone(),
        ));
        // Each watcher stands at its stream's end before anything is published.
        if ready_rx.await.is_err() {
            return Err(match task.await {
                Ok(Err(e)) => e,
                _ => anyhow::anyhow!("watching {name} failed"),
            });
        }
        watchers.push(task);
    }

    let count = match (args.count, args.duration) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_COUNT),
    };
    let expected_total = count.unwrap_or_else(|| {
        args.duration
            .map(|d| (d.as_secs_f64() * args.rate) as u64)
            .unwrap_or(0)
    });
    let progress = Progress::new("sent", expected_total);
    let mut generator = Generator::new(
        seed,
        &args.formats,
        args.containers,
        args.unmatched_ratio,
        &run,
    );
    let mut formats: BTreeMap<String, u64> = BTreeMap::new();
    // PubAcks awaited while the next sends go out: a send is never queued behind them.
    let mut in_flight = FuturesUnordered::new();
    let mut publish_failures = 0u64;
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let mut n = 0u64;
    loop {
        if count.is_some_and(|c| n >= c) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if args.rate > 0.0 {
            let due = started + Duration::from_secs_f64(n as f64 / args.rate);
            // Settle acks while waiting for the due time, never past it.
            loop {
                tokio::select! {
                    biased;
                    _ = tokio::time::sleep_until(due.into()) => break,
                    Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                        publish_failures += settle_publish(&tracker, done, &progress);
                    }
                }
            }
        }
        while in_flight.len() >= args.max_in_flight as usize {
            if let Some(done) = in_flight.next().await {
                publish_failures += settle_publish(&tracker, done, &progress);
            }
        }
        let ev = generator.next(n);
        n += 1;
        *formats.entry(ev.format.name().to_owned()).or_default() += 1;
        let mut h = HeaderMap::new();
        if let Some(t) = ev.event_type {
            h.insert(headers::EVENT_TYPE, t);
        }
        h.insert(headers::MSG_ID, ev.id.as_str());
        // Due on the open-loop schedule; at `--rate 0`, when it is actually sent.
        let due = if args.rate > 0.0 {
            started + Duration::from_secs_f64((n - 1) as f64 / args.rate)
        } else {
            Instant::now()
        };
        tracker
            .lock()
            .expect("tracker lock")
            .expect(ev.id.clone(), due);
        let sent = js
            .publish_with_headers(args.subject.clone(), h, ev.body.into())
            .await;
        let id = ev.id;
        match sent {
            Ok(pending) => in_flight.push(async move { (id, pending.await.map(|_| ())) }),
            Err(e) => publish_failures += settle_publish(&tracker, (id, Err(e)), &progress),
        }
    }
    while let Some(done) = in_flight.next().await {
        publish_failures += settle_publish(&tracker, done, &progress);
    }
    let publish_seconds = started.elapsed().as_secs_f64();
    progress.finish();
    let published = n - publish_failures;
    eprintln!("published {published} events in {publish_seconds:.2} s; waiting up to {:?} for the outputs", args.settle);

    // Settle: every accepted event seen, then both streams read to their end (so a
    // duplicate stored meanwhile is counted too), or the settle time is up.
    let settle_deadline = Instant::now() + args.settle;
    while tracker.lock().expect("tracker lock").unseen > 0 && Instant::now() < settle_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (name, last) in &positions {
        let end = match js.get_stream(name).await {
            Ok(mut s) => s.info().await.map(|i| i.state.last_sequence).unwrap_or(0),
            Err(_) => 0,
        };
        while last.load(Relaxed) < end && Instant::now() < settle_deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop_watch.cancel();
    for w in watchers {
        if let Ok(Err(e)) = w.await {
            tracing::warn!(error = %crate::telemetry::Chain(e.as_ref()), "output watcher");
        }
    }

    let t = tracker.lock().expect("tracker lock");
    let mut missing_ids: Vec<String> = t
        .events
        .iter()
        .filter(|(_, e)| e.seen == 0)
        .map(|(id, _)| id.clone())
        .collect();
    let mut duplicated_ids: Vec<String> = t
        .events
        .iter()
        .filter(|(_, e)| e.seen > 1)
        .map(|(id, _)| id.clone())
        .collect();
    missing_ids.sort();
    duplicated_ids.sort();
    let (missing, duplicated) = (missing_ids.len() as u64, duplicated_ids.len() as u64);
    missing_ids.truncate(LISTED);
    duplicated_ids.truncate(LISTED);
    let output_secs = t
        .last_output
        .map(|l| l.saturating_duration_since(started).as_secs_f64())
        .unwrap_or(0.0);
    Ok(Report {
        run_id: run,
        seed,
        formats,
        containers: args.containers,
        unmatched_ratio: args.unmatched_ratio,
        rate: args.rate,
        published,
        publish_failures,
        publish_seconds,
        accepted_rate: published as f64 / publish_seconds.max(1e-9),
        outputs: t.outputs,
        output_rate: if output_secs > 0.0 {
            t.outputs as f64 / output_secs
        } else {
            0.0
        },
        latency_ms: t.latency.as_ref().map(Latency::from).unwrap_or_default(),
        outcomes: t.outcomes.clone(),
        missing,
        missing_ids,
        duplicated,
        duplicated_ids,
        foreign_outputs: t.foreign,
        exactly_once: missing == 0 && duplicated == 0,
    })
}

/// Accounts for one PubAck (or failure); returns 1 for a failed publish, whose event is
/// then not expected at the outputs.
fn settle_publish(
    tracker: &Mutex<Tracker>,
    (id, acked): (
        String,
        Result<(), async_nats::jetstream::context::PublishError>,
    ),
    progress: &Progress,
) -> u64 {
    progress.inc(1);
    match acked {
        Ok(()) => 0,
        Err(e) => {
            tracing::warn!(error = %crate::telemetry::Chain(&e), %id, "publish failed");
            tracker.lock().expect("tracker lock").forget(&id);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::ConfigCache;
    use crate::router;
    use crate::telemetry::metrics::Metrics;

    fn mix(spec: &[(LoadFormat, u32)]) -> FormatMix {
        FormatMix(spec.to_vec())
    }

    #[test]
    fn every_generated_event_parses_and_routes_by_the_generated_configs() {
        let cache = ConfigCache::new(Metrics::detached(), "blob.routed");
        cache.reset(configs(4));
        assert!(cache.health().refused.is_empty());
        let all = mix(&LoadFormat::ALL.map(|f| (f, 1)));
        let mut g = Generator::new(7, &all, 4, 0.0, "run1");
        let mut seen = std::collections::HashSet::new();
        for n in 0..500 {
            let ev = g.next(n);
            let records = event::parse(&ev.body, ev.event_type);
            assert_eq!(records.len(), 1, "{}", String::from_utf8_lossy(&ev.body));
            let record = records
                .into_iter()
                .next()
                .unwrap()
                .expect("a created event");
            assert_eq!(record.event.id, ev.id);
            assert!(seen.insert(ev.id.clone()), "ids are unique: {}", ev.id);
            let m = router::decide(&record.event, &cache.load()).expect("routed");
            let expected = if record.event.path.starts_with("results/") {
                "-results"
            } else if record.event.path.starts_with("images/") {
                "-images"
            } else {
                "-raw"
            };
            assert!(
                m.config.id.ends_with(expected),
                "{} -> {}",
                record.event.path,
                m.config.id
            );
        }
    }

    #[test]
    fn a_seed_repeats_the_mix_and_unmatched_events_match_nothing() {
        let all = mix(&[(LoadFormat::EventGrid, 3), (LoadFormat::Gcs, 1)]);
        let shape = |seed| {
            let mut g = Generator::new(seed, &all, 10, 0.5, "r");
            (0..200)
                .map(|n| {
                    let ev = g.next(n);
                    let r = event::parse(&ev.body, ev.event_type).remove(0).unwrap();
                    (
                        ev.format,
                        r.event.container.into_owned(),
                        r.event.path.into_owned(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(1), shape(1));
        assert_ne!(shape(1), shape(2));
        let cache = ConfigCache::new(Metrics::detached(), "blob.routed");
        cache.reset(configs(10));
        let unmatched = shape(1)
            .into_iter()
            .filter(|(_, c, _)| c.starts_with("lg-unmatched"))
            .count();
        assert!(
            (60..=140).contains(&unmatched),
            "{unmatched} of 200 at ratio 0.5"
        );
        assert!(shape(1).iter().any(|(f, _, _)| *f == LoadFormat::Gcs));
    }

    #[test]
    fn the_tracker_counts_outcomes_duplicates_and_strangers() {
        let mut t = Tracker {
            latency: Some(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap()),
            ..Default::default()
        };
        let due = Instant::now();
        t.expect("a".into(), due);
        t.expect("b".into(), due);
        let later = due + Duration::from_millis(5);
        t.output(Some("a"), "routed".into(), later);
        t.output(Some("a"), "routed".into(), later);
        t.output(Some("zzz"), "routed".into(), later);
        t.output(None, "dead_lettered:malformed_event".into(), later);
        assert_eq!(t.unseen, 1);
        t.forget("b");
        assert_eq!(t.unseen, 0);
        assert_eq!(t.outputs, 2);
        assert_eq!(t.foreign, 2);
        assert_eq!(t.events["a"].seen, 2);
        let l = Latency::from(t.latency.as_ref().unwrap());
        assert!((4.9..=5.1).contains(&l.p50), "{l:?}");
    }

    #[test]
    fn bad_mixes_are_refused() {
        use clap::Parser;
        let parse = |spec: &str| {
            crate::cli::Cli::try_parse_from(["blob-router", "loadgen", "--formats", spec])
                .map(|_| ())
        };
        assert!(parse("eventgrid=2,gcs=1").is_ok());
        assert!(parse("eventgrid").is_ok());
        for (bad, says) in [
            ("kafka=1", "unknown format `kafka`"),
            ("s3=x", "not a whole number"),
            ("s3=0", "no format has a positive weight"),
            ("s3=1,s3=2", "given twice"),
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let err =
            crate::cli::Cli::try_parse_from(["blob-router", "loadgen", "--unmatched-ratio", "2"])
                .unwrap_err()
                .to_string();
        assert!(err.contains("ratio"), "{err}");
    }
}
