//! The throughput bench's helper (`scripts/bench-throughput.sh` drives it; not a product
//! subcommand):
//!
//! ```text
//! throughput configs FILE CONTAINERS PER_CONTAINER   write a config file for the worker
//! throughput preload N                               N Event Grid events into BLOB_EVENTS
//! throughput forward CONCURRENCY [routed]            the do-nothing forwarder, until drained
//! throughput wait-drained blob-router|forwarder      time until that consumer has nothing left
//! throughput reset                                   delete the streams (the next run starts clean)
//! ```
//!
//! The **forwarder** is the yardstick: a durable pull consumer on `BLOB_EVENTS`; each
//! message is published again (its bytes padded to the size of the worker's routed
//! envelope for the same event, so both write the same bytes) with a `Nats-Msg-Id`,
//! its PubAck awaited, then the input acked: the worker's delivery guarantees, without
//! the routing. Events go to the containers of the generated configs, each matched by
//! the last of its container's configs (the others are tried first and do not match).
//! Its messages are polled by its own task, as the worker's are (`src/commands/run.rs`),
//! on a runtime with one worker thread, where its connections' tasks run too (as the
//! worker's message runtime);
//! `FORWARDER_DISPATCH=tasks`, a diagnostic, gives each its own task instead, as the
//! worker did before the sixth session of 2026-12-03: that cost the forwarder 20.5-21.5
//! µs of CPU per event against 11.0-13.2 then (README, Performance), on a runtime of
//! two workers; on this one-worker runtime it measures a task per message, not the
//! worker as it was.
//! It publishes on a connection of its own, as the worker does; `FORWARDER_CONNECTIONS=1`,
//! a diagnostic, publishes on the consuming connection instead, as both did before
//! 2026-12-03's seventh session.
//! With `routed`, a diagnostic, the forwarder writes the very subjects (one per config)
//! and headers the worker writes for the same events, so nats-server does the same work
//! for both and what is left between them is the worker's own.
//! `FORWARDER_BUSY_NS=N`, a diagnostic, spends N ns of CPU on each message before
//! publishing it: what a given amount of work per event costs a forwarder that does no
//! routing (nats-server's work per event grows with it too, README, Performance).
//! `FORWARDER_PUBLISH=numbered`, a diagnostic, publishes with the worker's own publisher
//! (PubAcks handed back by number, `src/nats/publisher.rs`) instead of async-nats's
//! JetStream publish, which the yardstick keeps as a do-nothing forwarder would.
//! `FORWARDER_LINGER=1` keeps the forwarder running after it drained, until SIGTERM, so
//! that `wait-drained` (which the bench times both clients with, the same way) can read
//! its CPU time at the end.
//! `$NATS_URL` names the server.

/// The worker's allocator (see `src/main.rs`), so that the yardstick has what the worker
/// has: on the system allocator this forwarder drained the bench's events about 15%
/// slower (README, Performance), which flattered the worker's ratio.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, stream};
use async_nats::HeaderMap;
use blob_router::nats::publisher::Publisher;
use blob_router::nats::pull::{PullSettings, Puller};
use futures::StreamExt;
use serde_json::json;

const INPUT: &str = "BLOB_EVENTS";
const ROUTED: &str = "BLOB_ROUTED";
const DLQ: &str = "BLOB_DLQ";

fn url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// The config documents: `containers` containers with `per` configs each; the last of
/// each container matches every event the preload sends there.
fn configs(containers: usize, per: usize) -> Vec<serde_json::Value> {
    let mut docs = Vec::with_capacity(containers * per);
    for c in 0..containers {
        for k in 0..per {
            let pattern = if k + 1 == per {
                "results/{plantation_id}/{crop}/{batch_id}.json".to_string()
            } else {
                format!("other-{k}/{{a}}/**/*.csv")
            };
            docs.push(json!({
                "_id": format!("cfg-{c}-{k}"),
                "priority": per - k,
                "version": 1,
                "ingestion": {"mode": "blob_trigger", "landing_container": format!("container-{c}"),
                              "path_pattern": {"pattern": pattern}}
            }));
        }
    }
    docs
}

/// Event `n` of the preload, for one of `containers` containers.
fn event(n: u64, containers: u64) -> Vec<u8> {
    let c = n % containers;
    serde_json::to_vec(&json!({
        "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/bench",
        "subject": format!("/blobServices/default/containers/container-{c}/blobs/results/plantation-{}/tea/batch-{n}.json", n % 97),
        "eventType": "Microsoft.Storage.BlobCreated",
        "id": format!("bench-{n}"),
        "data": {"api": "PutBlob", "eTag": "0x8DC73F1B2E4A9C1", "contentType": "application/json",
                 "contentLength": 18234, "blobType": "BlockBlob",
                 "url": format!("https://bench.blob.core.windows.net/container-{c}/results/{n}.json")},
        "dataVersion": "", "metadataVersion": "1", "eventTime": "2026-11-20T10:00:00.0000000Z"
    }))
    .expect("event serializes")
}

async fn ensure_streams(js: &jetstream::Context) -> anyhow::Result<()> {
    for (name, subjects) in [
        (INPUT, "blob.events.>"),
        (ROUTED, "blob.routed.>"),
        (DLQ, "blob.dlq.>"),
    ] {
        js.get_or_create_stream(stream::Config {
            name: name.into(),
            subjects: vec![subjects.into()],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .with_context(|| format!("stream {name}"))?;
    }
    Ok(())
}

async fn preload(js: &jetstream::Context, n: u64, containers: u64) -> anyhow::Result<()> {
    ensure_streams(js).await?;
    let started = Instant::now();
    let mut acks = futures::stream::FuturesUnordered::new();
    for i in 0..n {
        let pending = js
            .publish(
                format!("blob.events.bench.{}", i % 4),
                event(i, containers).into(),
            )
            .await?;
        acks.push(std::future::IntoFuture::into_future(pending));
        while acks.len() >= 4096 {
            acks.next().await.expect("non-empty")?;
        }
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    eprintln!(
        "preloaded {n} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Bytes the worker's routed envelope adds to an event of this preload (measured with the
/// library: envelope of the parsed event, minus the raw bytes).
fn envelope_padding(containers: u64) -> usize {
    use blob_router::config::SourceConfig;
    let body = event(0, containers);
    let record = blob_router::event::parse(&body, None)
        .remove(0)
        .expect("a created event");
    let doc = &configs(1, 1)[0];
    let config = SourceConfig::from_value(doc, "blob.routed").expect("valid config");
    let metadata = [
        ("plantation_id", "plantation-0"),
        ("crop", "tea"),
        ("batch_id", "batch-0"),
    ];
    let envelope = blob_router::output::Envelope::new(&config, &metadata, &record).to_bytes();
    envelope.len().saturating_sub(body.len())
}

/// What the forwarder writes: the yardstick's one subject and one header, or (`routed`,
/// a diagnostic) exactly the subjects and headers the worker writes for the same events,
/// so that the server's share of the work is the same for both.
#[derive(Clone, Copy, PartialEq)]
enum Outputs {
    Plain,
    Routed { containers: u64, per: u64 },
}

impl Outputs {
    /// Subject and headers of the output for the input at stream sequence `seq`.
    fn of(self, seq: u64) -> (String, HeaderMap) {
        let mut h = HeaderMap::new();
        match self {
            Outputs::Plain => {
                h.insert("Nats-Msg-Id", format!("fwd-{seq}").as_str());
                ("blob.routed.forwarded".to_string(), h)
            }
            Outputs::Routed { containers, per } => {
                // Event `n` is the preload's `seq - 1`th, for container `n % containers`,
                // matched by that container's last config.
                let n = seq.saturating_sub(1);
                let event_id = format!("bench-{n}");
                let source = format!("cfg-{}-{}", n % containers, per.saturating_sub(1));
                let msg_id = blob_router::output::routed_msg_id(&event_id, &source);
                h.insert("Nats-Msg-Id", msg_id.as_str());
                h.insert("Blob-Router-Source-Id", source.as_str());
                h.insert("Blob-Router-Event-Id", event_id.as_str());
                (format!("blob.routed.{source}"), h)
            }
        }
    }
}

/// How the forwarder runs its messages: polled by its own task, as the worker does
/// (the yardstick), or a task each (`FORWARDER_DISPATCH=tasks`, the earlier yardstick).
#[derive(Clone, Copy, PartialEq)]
enum Dispatch {
    Inline,
    Tasks,
}

/// How the forwarder runs: the yardstick, or one of the diagnostics (module doc).
#[derive(Clone, Copy)]
struct Shape {
    outputs: Outputs,
    dispatch: Dispatch,
    /// Publish on a connection of their own (the yardstick), or on the consuming one.
    own_connection: bool,
    /// CPU time spent on each message before it is published (zero for the yardstick).
    busy: Duration,
    /// Publish with the worker's publisher rather than async-nats's JetStream publish.
    numbered: bool,
}

/// Spins for `busy`: work that costs CPU and nothing else.
fn spin(busy: Duration) {
    if busy.is_zero() {
        return;
    }
    let started = Instant::now();
    while started.elapsed() < busy {
        std::hint::spin_loop();
    }
}

/// How the forwarder publishes: async-nats's JetStream publish (the yardstick), or
/// (`FORWARDER_PUBLISH=numbered`, a diagnostic) the worker's own publisher, whose PubAcks
/// come back by number on an inbox of its own (`src/nats/publisher.rs`).
#[derive(Clone)]
enum Publish {
    JetStream(jetstream::Context),
    Numbered(Publisher),
}

/// One message forwarded: published (with its PubAck awaited), then acked on the
/// connection it came from.
async fn forward_one(
    publish: &Publish,
    msg: jetstream::Message,
    body: Vec<u8>,
    shape: Shape,
) -> anyhow::Result<()> {
    let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
    spin(shape.busy);
    let (subject, h) = shape.outputs.of(seq);
    let stored = match publish {
        Publish::JetStream(js) => js
            .publish_with_headers(subject, h, body.into())
            .await?
            .await
            .is_ok(),
        Publish::Numbered(p) => p.publish(&subject, h, body.into()).await.is_ok(),
    };
    if stored {
        msg.ack().await.map_err(|e| anyhow::anyhow!(e))?;
    }
    Ok(())
}

async fn forward(
    js: &jetstream::Context,
    concurrency: usize,
    containers: u64,
    shape: Shape,
) -> anyhow::Result<()> {
    // Listened for from the start: the observer may see the consumer drained, and stop
    // this forwarder, before it has printed its own line.
    let mut linger = match std::env::var("FORWARDER_LINGER").as_deref() {
        Ok("1") => Some(tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        )?),
        _ => None,
    };
    let padding = vec![b' '; envelope_padding(containers)];
    // Connected before the consumer exists: the observer's clock starts when it does,
    // and the worker too is connected before its clock starts (it is ready first).
    let publish_client = if shape.own_connection {
        async_nats::connect(url()).await?
    } else {
        js.client()
    };
    let publish = if shape.numbered {
        Publish::Numbered(Publisher::new(publish_client.clone(), Duration::from_secs(10)).await?)
    } else {
        Publish::JetStream(jetstream::new(publish_client.clone()))
    };
    let stream = js.get_stream(INPUT).await?;
    let consumer = stream
        .get_or_create_consumer(
            "forwarder",
            pull::Config {
                durable_name: Some("forwarder".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 1024,
                ..Default::default()
            },
        )
        .await?;
    let total = consumer.cached_info().num_pending;
    // Pulled as the worker pulls (src/nats/pull.rs), so that both get their messages the
    // same way.
    let settings = PullSettings {
        batch: concurrency,
        expires: Duration::from_secs(5),
    };
    let mut messages = Puller::new(js.clone(), &consumer, settings).await?;
    let started = Instant::now();
    let cpu = CpuClock::start("forwarder", "self");
    let body = |msg: &jetstream::Message| {
        let mut body = Vec::with_capacity(msg.payload.len() + padding.len());
        body.extend_from_slice(&msg.payload);
        body.extend_from_slice(&padding);
        body
    };
    match shape.dispatch {
        // As the worker handles its messages (src/commands/run.rs): polled by this task.
        Dispatch::Inline => {
            let mut in_flight = futures::stream::FuturesUnordered::new();
            let mut pulled = 0u64;
            while pulled < total || !in_flight.is_empty() {
                tokio::select! {
                    biased;
                    Some(r) = in_flight.next(), if !in_flight.is_empty() => r?,
                    msg = messages.next(), if pulled < total && in_flight.len() < concurrency => {
                        let msg = msg?;
                        let body = body(&msg);
                        in_flight.push(Box::pin(forward_one(&publish, msg, body, shape)));
                        pulled += 1;
                    }
                }
            }
        }
        // A task per message, as the worker did before 2026-12-03's sixth session.
        Dispatch::Tasks => {
            let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..total {
                let permit = permits.clone().acquire_owned().await?;
                let msg = messages.next().await?;
                let body = body(&msg);
                let publish = publish.clone();
                tasks.spawn(async move {
                    let r = forward_one(&publish, msg, body, shape).await;
                    drop(permit);
                    r
                });
                while let Some(r) = tasks.try_join_next() {
                    r??;
                }
            }
            while let Some(r) = tasks.join_next().await {
                r??;
            }
        }
    }
    // The last acks are only queued in the client: the run ends when the server has
    // them (as the worker's does), and they are not lost when the process exits.
    js.client().flush().await?;
    publish_client.flush().await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "forwarder {total} events in {secs:.2} s: {:.0}/s; {}",
        total as f64 / secs,
        cpu.per_event(total)
    );
    // Kept running until told to stop, so that the bench's observer (`wait-drained`),
    // which times this forwarder as it times the worker, can still read its CPU time.
    if let Some(term) = linger.as_mut() {
        tokio::time::timeout(DRAIN_LIMIT, term.recv()).await.ok();
    }
    Ok(())
}

/// CPU time (user + system) that processes use over a run, from `/proc/PID/stat` (Linux;
/// clock ticks of 10 ms): the client under test (`self`, or the pid in
/// `$BENCH_CLIENT_PID`: the worker's or the forwarder's, for `wait-drained`) and nats-server (`$BENCH_SERVER_PID`), per event. Shows where the
/// two cores went, whatever the rate.
struct CpuClock {
    processes: Vec<(&'static str, String, Option<Duration>)>,
}

impl CpuClock {
    fn start(label: &'static str, pid: &str) -> Self {
        let mut processes = vec![(label, pid.to_string())];
        if let Ok(server) = std::env::var("BENCH_SERVER_PID") {
            processes.push(("nats-server", server));
        }
        CpuClock {
            processes: processes
                .into_iter()
                .map(|(label, pid)| {
                    let at = cpu_time(&pid);
                    (label, pid, at)
                })
                .collect(),
        }
    }

    /// `cpu per event: <label> X µs, nats-server Y µs`.
    fn per_event(&self, events: u64) -> String {
        let parts: Vec<String> = self
            .processes
            .iter()
            .map(|(label, pid, start)| match (start, cpu_time(pid)) {
                (Some(start), Some(now)) if events > 0 => format!(
                    "{label} {:.1} µs",
                    (now - *start).as_secs_f64() * 1e6 / events as f64
                ),
                _ => format!("{label} ?"),
            })
            .collect();
        format!("cpu per event: {}", parts.join(", "))
    }
}

/// User + system CPU time of process `pid` (`self` for this one) so far. Assumes Linux's
/// USER_HZ of 100 (that of every common architecture).
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 (state) on:
    // utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Whether process `pid` still runs (neither gone nor a zombie).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.get(stat.rfind(')')? + 2..)?.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// Longest wait for a consumer to drain before the bench gives up.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);
/// No progress for this long is reported (once per stall) with the consumer's state.
const STALL: Duration = Duration::from_secs(2);

/// Waits until `consumer` exists and has nothing pending or unacked; prints the rate of
/// the messages it finished after the clock started (those done before the first look
/// are not counted, so a head start does not flatter it).
async fn wait_drained(
    js: &jetstream::Context,
    consumer: &str,
    label: &'static str,
) -> anyhow::Result<()> {
    let mut started = None;
    let mut cpu = None;
    let client_pid = std::env::var("BENCH_CLIENT_PID").ok();
    let stream = js.get_stream(INPUT).await?;
    let total = stream.clone().info().await?.state.messages;
    let mut done_before = 0;
    // Progress (messages done) and when it last moved: a round that stops moving for a
    // while says what the consumer looked like meanwhile, so a slow round can be explained.
    let mut last = (u64::MAX, Instant::now());
    let mut reported = false;
    loop {
        // One request per look (the consumer's info comes with it), every 20 ms: the
        // same load on the server for both clients, which are looked at alike.
        if let Ok(c) = stream.get_consumer::<pull::Config>(consumer).await {
            let info = c.cached_info();
            if started.is_none() {
                started = Some(Instant::now());
                cpu = client_pid.as_deref().map(|pid| CpuClock::start(label, pid));
                done_before = total.saturating_sub(info.num_pending + info.num_ack_pending as u64);
            }
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                break;
            }
            let done = total.saturating_sub(info.num_pending + info.num_ack_pending as u64);
            if done != last.0 {
                last = (done, Instant::now());
                reported = false;
            } else if !reported && last.1.elapsed() > STALL {
                reported = true;
                eprintln!(
                    "{consumer}: no progress for {STALL:?} at {done} of {total} done: {} pending, \
                     {} delivered and unacked, {} redelivered, {} pull requests waiting",
                    info.num_pending, info.num_ack_pending, info.num_redelivered, info.num_waiting
                );
            }
        }
        if let Some(pid) = client_pid.as_deref() {
            anyhow::ensure!(
                alive(pid),
                "the {label} (pid {pid}) exited before its consumer `{consumer}` drained"
            );
        }
        anyhow::ensure!(
            started.is_none_or(|s| s.elapsed() < DRAIN_LIMIT),
            "{consumer} did not drain within {DRAIN_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started
        .expect("set on the first look")
        .elapsed()
        .as_secs_f64();
    let counted = total - done_before;
    let cpu = cpu.map(|c| format!("; {}", c.per_event(counted)));
    println!(
        "{label} {counted} events in {secs:.2} s: {:.0}/s{}",
        counted as f64 / secs,
        cpu.unwrap_or_default()
    );
    Ok(())
}

async fn reset(js: &jetstream::Context) -> anyhow::Result<()> {
    for name in [INPUT, ROUTED, DLQ] {
        let _ = js.delete_stream(name).await;
    }
    Ok(())
}

// One runtime worker, as the worker handles its messages (`MessageRuntime` in
// src/commands/run.rs): the forwarding task and the connections' tasks share its thread.
#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let num = |i: usize, default: u64| arg(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let containers = std::env::var("BENCH_CONTAINERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100u64);
    if arg(0) == Some("configs") {
        let path = arg(1).context("configs FILE CONTAINERS PER_CONTAINER")?;
        let docs = configs(num(2, 100) as usize, num(3, 10) as usize);
        std::fs::write(path, serde_json::to_string(&docs)?)?;
        eprintln!("wrote {} configs to {path}", docs.len());
        return Ok(());
    }
    let js = jetstream::new(async_nats::connect(url()).await?);
    match arg(0) {
        Some("preload") => preload(&js, num(1, 100_000), containers).await,
        Some("forward") => {
            let outputs = match arg(2) {
                Some("routed") => Outputs::Routed {
                    containers,
                    per: std::env::var("BENCH_PER")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(10),
                },
                _ => Outputs::Plain,
            };
            let concurrency = num(1, 64) as usize;
            let dispatch = match std::env::var("FORWARDER_DISPATCH").as_deref() {
                Ok("tasks") => Dispatch::Tasks,
                Ok("inline") | Err(_) => Dispatch::Inline,
                Ok(other) => {
                    anyhow::bail!("FORWARDER_DISPATCH is `inline` or `tasks`, not `{other}`")
                }
            };
            let own_connection = match std::env::var("FORWARDER_CONNECTIONS").as_deref() {
                Ok("2") | Err(_) => true,
                Ok("1") => false,
                Ok(other) => anyhow::bail!("FORWARDER_CONNECTIONS is 1 or 2, not `{other}`"),
            };
            let busy = match std::env::var("FORWARDER_BUSY_NS") {
                Ok(ns) => Duration::from_nanos(ns.parse().with_context(|| {
                    format!("FORWARDER_BUSY_NS is a number of nanoseconds, not `{ns}`")
                })?),
                Err(_) => Duration::ZERO,
            };
            let numbered = match std::env::var("FORWARDER_PUBLISH").as_deref() {
                Ok("jetstream") | Err(_) => false,
                Ok("numbered") => true,
                Ok(other) => {
                    anyhow::bail!("FORWARDER_PUBLISH is `jetstream` or `numbered`, not `{other}`")
                }
            };
            let shape = Shape {
                outputs,
                dispatch,
                own_connection,
                busy,
                numbered,
            };
            // On the runtime's worker, not on this thread: wake-ups of the forwarding
            // task (or of the tasks it spawns per message) go to that worker's queue.
            tokio::spawn(async move { forward(&js, concurrency, containers, shape).await }).await?
        }
        Some("wait-drained") => {
            // Named as the bench prints it: the worker's consumer is `blob-router`.
            let (consumer, label) = match arg(1).unwrap_or("blob-router") {
                "forwarder" => ("forwarder", "forwarder"),
                "blob-router" => ("blob-router", "worker"),
                other => anyhow::bail!("wait-drained blob-router|forwarder, not `{other}`"),
            };
            wait_drained(&js, consumer, label).await
        }
        Some("reset") => reset(&js).await,
        _ => anyhow::bail!(
            "usage: throughput configs|preload|forward|wait-drained|reset (see the module doc)"
        ),
    }
}
