//! The `run` command: startup in the order the contract requires, the consumer loop, and
//! shutdown.
//!
//! Startup: metrics and HTTP (live, not ready) -> NATS connected, streams present ->
//! config feed opened -> snapshot loaded -> feed drained continuously -> ready ->
//! consume. Shutdown (SIGTERM/SIGINT): stop fetching, let in-flight messages finish and
//! ack (bounded by `--shutdown-timeout`), flush, exit 0.

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;

use async_nats::jetstream::{self, AckKind};
use backon::Retryable;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::cache::miss::MissResolver;
use crate::cache::{sync, ConfigCache};
use crate::cli::RunArgs;
use crate::http::{self, HttpState};
use crate::nats::consumer::Delivered;
use crate::nats::given_up::{self, Advisory};
use crate::nats::pull::{PullSettings, Puller};
use crate::nats::{self, publisher::Publisher, streams};
use crate::pipeline::{Pipeline, PUBLISH_WINDOW};
use crate::shutdown;
use crate::store::{self, retry_policy, ChangeFeed, ConfigStore, StoreError};
use crate::telemetry::events::{GivenUpLost, InternalEvent};
use crate::telemetry::{Chain, Telemetry};

/// Warms the cache. A database that is not reachable yet (the worker started before
/// MongoDB, or during a failover) is waited for, with backoff, not ready meanwhile; a file
/// that cannot be read fails fast, since waiting would not fix it.
async fn warm(
    cache: &ConfigCache,
    source: &dyn ConfigStore,
    wait_for_source: bool,
) -> Result<ChangeFeed, StoreError> {
    if !wait_for_source {
        return sync::warm(cache, source).await;
    }
    (|| sync::warm(cache, source))
        .retry(retry_policy())
        .sleep(tokio::time::sleep)
        .when(StoreError::is_unavailable)
        .notify(|e, wait| {
            tracing::warn!(error = %Chain(e), retry_in = ?wait, "config source not available; not ready, retrying")
        })
        .await
}

/// Longest wait for the final flush at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait for more prefetched messages once fetching has stopped.
const HAND_BACK_WAIT: Duration = Duration::from_millis(50);

/// `blob-router run`: works until SIGTERM/SIGINT, then exits 0; exits 1 on a failure
/// that stops the worker (logged with its whole cause chain).
pub async fn main(args: RunArgs) -> ExitCode {
    let stop = CancellationToken::new();
    shutdown::cancel_on_signal(stop.clone());
    match run(args, stop).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %Chain(e.as_ref()), "blob-router failed");
            ExitCode::FAILURE
        }
    }
}

/// The worker, until `stop` is cancelled.
pub async fn run(args: RunArgs, stop: CancellationToken) -> anyhow::Result<()> {
    // Credentials and certificates first: a file that cannot be used stops the worker
    // before it starts anything.
    let nats_settings = args.nats.connect_settings()?;
    let telemetry = Telemetry::init()?;
    let source = store::open(&args.source.selection())
        .await
        .context("opening the config source")?
        .config_store();
    if args.source.configs.is_none() && args.source.mongodb_uri.is_none() {
        tracing::warn!("no --configs given: running on the embedded default configs");
    }
    let cache = Arc::new(ConfigCache::new(
        telemetry.metrics.clone(),
        &args.nats.routed_prefix,
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let nats_cell = Arc::new(OnceLock::new());
    let http_stop = CancellationToken::new();
    let (_addr, http_task) = http::serve(
        args.http_addr,
        HttpState {
            ready: ready.clone(),
            nats: nats_cell.clone(),
            cache: cache.clone(),
            registry: telemetry.registry.clone(),
            source: source.describe(),
        },
        http_stop.clone(),
    )
    .await?;

    let messages_rt = MessageRuntime::start()?;
    let result = async {
        // The outputs go on a connection of their own: nats-server reads each
        // connection on one goroutine, so the routed messages it stores are then read
        // beside the pulls and acks of the other, not queued behind them (README,
        // Performance, 2026-12-03's seventh session). Both are made at once, within
        // one --nats-connect-timeout. The publishing connection's one subscription
        // takes the PubAcks of every output in flight: room for all of them
        // (src/nats/publisher.rs).
        // Every subject either publishes to is a config's, a flag's, the server's or the
        // client's own (checked, see crate::subject; an advisory's names are compared
        // with the flags', never used): the client need not check each publish's again.
        let consume_settings = nats_settings.clone().with_subjects_checked();
        let publish_settings = consume_settings.clone().with_subscription_capacity(
            (args.concurrency as usize)
                .saturating_mul(PUBLISH_WINDOW)
                .max(DEFAULT_SUBSCRIPTION_CAPACITY),
        );
        let (client, publish_client) = tokio::select! {
            c = futures::future::try_join(
                messages_rt.connect(&consume_settings, "blob-router"),
                messages_rt.connect(&publish_settings, "blob-router-publish"),
            ) => c?,
            _ = stop.cancelled() => return Ok(()),
        };
        let _ = nats_cell.set(vec![client.clone(), publish_client.clone()]);
        let js = jetstream::new(client.clone());
        streams::ensure(&js, &args.nats.topology(), args.nats.create_streams).await?;

        let feed = tokio::select! {
            feed = warm(&cache, &*source, args.source.mongodb_uri.is_some()) => feed?,
            _ = stop.cancelled() => return Ok(()),
        };
        let maintainer = tokio::spawn(sync::maintain(cache.clone(), source.clone(), feed, args.cache_ttl, stop.clone()));
        let maintainer_abort = maintainer.abort_handle();
        // The cache must keep following its source: if the maintainer ends before the
        // stop (a panic), shut down and exit non-zero so the orchestrator restarts us.
        let maintainer_died = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let ended = maintainer.await;
                if stop.is_cancelled() {
                    return false;
                }
                shutdown::log_task_end("config cache maintainer", ended);
                tracing::error!("the config cache no longer follows its source; shutting down");
                stop.cancel();
                true
            })
        };

        let (consumer, delivery) = nats::consumer::durable(&js, &args.consumer()).await?;
        // Before the first message: an advisory for any message from here on is caught.
        // On the publishing connection: the consuming one is dropped by a header the
        // client cannot read (see nats::given_up), and an advisory read with it would be
        // lost.
        let advisories = given_up::subscribe(&publish_client, &args.nats.input_stream, &args.nats.consumer)
            .await
            .context("subscribing to the consumer's max-deliveries advisories")?;
        // PubAcks awaited at most --publish-timeout each, and handed out by a task on
        // the message runtime, beside the connection they come on.
        let publisher = {
            let client = publish_client.clone();
            let timeout = args.publish_timeout;
            messages_rt
                .handle()
                .spawn(async move { Publisher::new(client, timeout).await })
                .await
                .context("the publisher's start task ended abnormally")?
                .context("subscribing to the PubAcks' inbox")?
        };
        let pipeline = Arc::new(Pipeline {
            cache: cache.clone(),
            resolver: MissResolver::new(cache.clone(), source.clone(), args.max_forced_reads as usize),
            publisher,
            dlq_prefix: args.nats.dlq_prefix.clone(),
            delivery,
            max_event_bytes: usize::try_from(args.max_event_bytes).unwrap_or(usize::MAX),
        });
        let watch_stop = stop.child_token();
        let watcher = messages_rt.handle().spawn(watch_given_up(
            jetstream::new(publish_client.clone()),
            advisories,
            Watched {
                stream: args.nats.input_stream.clone(),
                consumer: args.nats.consumer.clone(),
            },
            pipeline.clone(),
            args.stored_copy_patience,
            watch_stop.clone(),
        ));
        ready.store(true, Relaxed);
        tracing::info!(stream = %args.nats.input_stream, consumer = %args.nats.consumer, "ready; consuming");
        let consuming = consume(
            js.clone(),
            consumer,
            pipeline,
            Limits {
                concurrency: args.concurrency as usize,
                shutdown_timeout: args.shutdown_timeout,
            },
            stop.clone(),
        );
        // Its result is looked at after the flush below: the acks of the messages that
        // finished before a failure must still reach the server.
        let consumed = messages_rt.handle().spawn(consuming).await;
        ready.store(false, Relaxed);
        // Bounded by itself (GIVEN_UP_GRACE).
        watch_stop.cancel();
        shutdown::log_task_end("max-deliveries watcher", watcher.await);
        maintainer_abort.abort();
        let died = maintainer_died.await.unwrap_or(false);
        // Bounded: with NATS away a flush would wait for a reconnection forever. Every
        // output had its PubAck before its input was acked; what may still be queued
        // is acks (and naks) on the consuming connection, and whatever the publishing
        // one still holds (a timed-out publish).
        let flushed = futures::future::try_join(client.flush(), publish_client.flush());
        match tokio::time::timeout(FLUSH_TIMEOUT, flushed).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing NATS at shutdown"),
            Err(_) => tracing::warn!("NATS unreachable at shutdown; not flushed"),
        }
        consumed.context("the consume task ended abnormally")??;
        if died {
            anyhow::bail!("the config cache maintainer ended unexpectedly");
        }
        Ok(())
    }
    .await;

    // Its tasks are the NATS connections', flushed above.
    drop(messages_rt);
    http_stop.cancel();
    shutdown::log_task_end("HTTP server", http_task.await);
    telemetry.shutdown();
    result
}

/// How long a stop waits for the message being handled from its stored copy.
const GIVEN_UP_GRACE: Duration = Duration::from_secs(5);
/// How long the whole dead letter of a stored copy that kept failing may take.
const GIVEN_UP_DEAD_LETTER: Duration = Duration::from_secs(30);

/// Handles from its stored copy each message the server stops delivering unseen (see
/// [`nats::given_up`]), one advisory at a time, until `stop`. One that cannot be
/// handled (see [`handle_given_up`]), whose handling panics, or that a stop cuts off
/// (after [`GIVEN_UP_GRACE`]) is reported abandoned once, with its sequence; so are the
/// advisories still on their way at the stop.
async fn watch_given_up(
    js: jetstream::Context,
    mut advisories: async_nats::Subscriber,
    watched: Watched,
    pipeline: Arc<Pipeline>,
    patience: Duration,
    stop: CancellationToken,
) {
    let metrics = pipeline.cache.metrics();
    let lost = |advisory: &Advisory, e: &anyhow::Error| {
        GivenUpLost {
            seq: advisory.stream_seq,
            deliveries: advisory.deliveries,
            error: e.as_ref(),
        }
        .emit(metrics)
    };
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            msg = advisories.next() => match msg {
                Some(msg) => msg,
                None => return,
            },
        };
        let advisory = match Advisory::parse(&msg.payload) {
            Ok(advisory) => advisory,
            Err(e) => {
                tracing::warn!(error = %e, subject = %msg.subject, "unreadable max-deliveries advisory; ignored");
                continue;
            }
        };
        if !watched.names(&advisory) {
            // Anyone who may publish on the advisory subject can send one: its names
            // are not put in a subject (the connection trusts its subjects, see
            // crate::subject), nor is another stream read for it.
            tracing::warn!(
                stream = %advisory.stream,
                consumer = %advisory.consumer,
                seq = advisory.stream_seq,
                "max-deliveries advisory for another stream or consumer; ignored"
            );
            continue;
        }
        // A panic ends this message's handling, not the watcher (it is the same code as a
        // delivery's, which the consume loop guards the same way).
        let handling = AssertUnwindSafe(handle_given_up(&js, &pipeline, &advisory, patience))
            .catch_unwind()
            .map(|done| done.unwrap_or_else(|_| Err(anyhow::anyhow!("its handling panicked"))));
        tokio::pin!(handling);
        let outcome = tokio::select! {
            outcome = &mut handling => outcome,
            _ = stop.cancelled() => match tokio::time::timeout(GIVEN_UP_GRACE, &mut handling).await {
                Ok(outcome) => outcome,
                Err(_) => Err(anyhow::anyhow!("stopping")),
            },
        };
        match outcome {
            Ok(unreadable_headers) => tracing::warn!(
                seq = advisory.stream_seq,
                deliveries = advisory.deliveries,
                unreadable_headers,
                "the server stopped delivering a message none of whose deliveries was seen to its end; handled from its stored copy"
            ),
            Err(e) => lost(&advisory, &e),
        }
    }
    // Stopping: no more advisories come here (the queue group's other members take them),
    // and those already sent here are reported, not dropped unseen: a drain reads up to
    // the server's answer to the unsubscribe.
    let _ = advisories.drain().await;
    while let Ok(Some(msg)) = tokio::time::timeout(GIVEN_UP_GRACE, advisories.next()).await {
        if let Ok(advisory) = Advisory::parse(&msg.payload) {
            lost(&advisory, &anyhow::anyhow!("stopping"));
        }
    }
}

/// The input stream and consumer whose advisories are handled: the flags' names, which
/// were checked when they were parsed.
struct Watched {
    stream: String,
    consumer: String,
}

impl Watched {
    /// Whether `advisory` is about this stream and consumer.
    fn names(&self, advisory: &Advisory) -> bool {
        advisory.stream == self.stream && advisory.consumer == self.consumer
    }
}

/// Reads the message an advisory names and handles it, retried with backoff until
/// `patience` has passed (an attempt under way then finishes: each publish in it is
/// bounded by `--publish-timeout`); a copy that still fails is dead-lettered whole as
/// `max_deliveries_exceeded`, as its last delivery would have been, within
/// [`GIVEN_UP_DEAD_LETTER`]. Returns how many of its header lines could not be read
/// (they are dropped).
async fn handle_given_up(
    js: &jetstream::Context,
    pipeline: &Pipeline,
    advisory: &Advisory,
    patience: Duration,
) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + patience;
    let in_time = move || tokio::time::Instant::now() < deadline;
    let policy = || retry_policy().with_total_delay(Some(patience));
    let seq = advisory.stream_seq;
    let stored = (|| given_up::fetch(js, &advisory.stream, seq))
        .retry(policy())
        .sleep(tokio::time::sleep)
        .when(|e| e.is_transient() && in_time())
        .notify(|e, wait| tracing::warn!(error = %Chain(e), retry_in = ?wait, seq, "reading a message the server gave up on"))
        .await?;
    let handled = (|| pipeline.handle_stored(&advisory.stream, seq, &stored))
        .retry(policy())
        .sleep(tokio::time::sleep)
        .when(|_| in_time())
        .notify(|e, wait| tracing::warn!(error = %Chain(e), retry_in = ?wait, seq, "handling a message the server gave up on"))
        .await;
    if let Err(e) = handled {
        // As a last delivery that fails: dead-lettered whole, with the error.
        let failure = Chain(&e).to_string();
        tokio::time::timeout(
            GIVEN_UP_DEAD_LETTER,
            pipeline.dead_letter_stored(&advisory.stream, seq, &stored, &failure),
        )
        .await
        .map_err(|_| anyhow::anyhow!("its dead letter took over {GIVEN_UP_DEAD_LETTER:?}"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("dead-lettering it after its stored copy failed: {failure}"))?;
        tracing::warn!(
            seq,
            failure,
            "a stored copy failed; dead-lettered as max_deliveries_exceeded"
        );
    }
    Ok(stored.unreadable_headers)
}

/// The runtime the messages are handled on: one thread of its own, where the consume
/// task and both NATS connections' tasks run (async-nats runs a connection's I/O on the
/// runtime that connected it). A message's wake-ups (its delivery, its PubAck, its
/// ack) then stay on that thread, instead of waking a second worker of a shared runtime
/// for each: that cost the worker 2-5 µs of CPU per event (README, Performance,
/// 2026-12-03's seventh session). The main runtime keeps the rest (HTTP, the cache's
/// maintenance, MongoDB), so a long resync of a large cache does not hold the messages
/// up; only a forced read on a miss is awaited here (a file's on this runtime's
/// blocking pool).
struct MessageRuntime(Option<tokio::runtime::Runtime>);

impl MessageRuntime {
    fn start() -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("blob-router-messages")
            .enable_all()
            .build()
            .context("starting the message runtime")?;
        Ok(Self(Some(rt)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("running until stopped").handle()
    }

    /// Connects to NATS from this runtime, so that the connection's tasks run on it.
    async fn connect(
        &self,
        settings: &nats::ConnectSettings,
        name: &'static str,
    ) -> anyhow::Result<async_nats::Client> {
        let settings = settings.clone();
        let client = self
            .handle()
            .spawn(async move { nats::connect(&settings, name).await })
            .await
            .context("the NATS connect task ended abnormally")??;
        Ok(client)
    }
}

/// Stops the runtime without waiting for its tasks (the connections' own, which end
/// with the process): dropping a runtime as it is, in async code, would panic.
impl Drop for MessageRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// What bounds the consume loop (from the flags).
struct Limits {
    /// Messages in flight at most (`--concurrency`).
    concurrency: usize,
    /// Longest wait for them at shutdown (`--shutdown-timeout`).
    shutdown_timeout: Duration,
}

/// async-nats's own room per subscription.
const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 64 * 1024;

/// A pull request expires after this long (or the consumer's `max_expires` if that is
/// shorter): an idle worker sends one request per this time.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// How often, in turns of the consume loop, a stop is looked for while messages keep it
/// busy: a turn takes a message or reports a finished one (at 60,000 events a second, two
/// turns take about 17 µs), so a stop is seen within about half a millisecond. The
/// messages taken meanwhile (at most 63) are handled like the others in flight, within
/// the shutdown timeout, rather than handed back.
const STOP_CHECK_TURNS: u32 = 64;

/// Pulls messages and handles up to `--concurrency` at once until `stop`, then waits
/// (bounded) for the ones in flight. Each pull request asks for at most `concurrency`
/// messages, so that no more are fetched than can be worked on (prefetched messages
/// wait unacked); see [`nats::pull`] for why the pulling is our own.
async fn consume(
    js: jetstream::Context,
    consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    pipeline: Arc<Pipeline>,
    limits: Limits,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let concurrency = limits.concurrency;
    let settings = PullSettings {
        batch: concurrency,
        expires: PULL_EXPIRES,
    };
    // The connection the messages come on, which their acks go back on: held here once
    // rather than copied into each message (see `Delivered`).
    let acks = js.client();
    let mut messages = Puller::new(js, &consumer, settings)
        .await
        .context("starting to consume")?;
    // The messages in flight, polled by this task rather than a task each: no spawn, no
    // permit and no join bookkeeping per message, and their wake-ups come to this one
    // task (the client's work stays on one thread, the other core left to nats-server
    // or to other replicas). Boxed: a handler's future is some kilobytes.
    let mut in_flight = FuturesUnordered::new();
    let handle = |msg| AssertUnwindSafe(Box::pin(pipeline.handle(msg))).catch_unwind();
    // A final pulling error ends the loop like a stop: what is in flight still finishes.
    let mut ended = None;
    // Polled last, and only when nothing else is ready: each poll of a token's future
    // takes locks. While messages keep coming it is not polled at all, so the token is
    // also looked at every `STOP_CHECK_TURNS` turns of the loop (the first included):
    // `is_cancelled` takes the token's lock too, which every turn would make two locks
    // per event.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    let mut turns = 0u32;
    loop {
        if turns.is_multiple_of(STOP_CHECK_TURNS) && stop.is_cancelled() {
            break;
        }
        turns = turns.wrapping_add(1);
        // The wait for the next message lives in the puller, not in a future of this
        // loop: a handler finishing meanwhile leaves it as it is (its request on the
        // way, its watch for the server's heartbeats), and a message already on the
        // inbox is taken through a `poll_fn` that holds one reference.
        let next = tokio::select! {
            biased;
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                report(done);
                continue;
            }
            next = std::future::poll_fn(|cx| messages.poll_next_message(cx)),
                if in_flight.len() < concurrency => next,
            _ = &mut stopped => break,
        };
        match next {
            Ok(msg) => in_flight.push(handle(Delivered::new(msg, &acks))),
            Err(e) if e.is_final() => {
                ended = Some(e);
                break;
            }
            Err(e) => {
                // JetStream away for a moment (restarting, electing a leader).
                tracing::warn!(error = %e, "pulling from the consumer");
                let pause = async {
                    tokio::select! {
                        _ = &mut stopped => {}
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                };
                alongside(&mut in_flight, pause).await;
            }
        }
    }
    // Hand back what was prefetched but never started, so another replica can take it
    // after one pull expiry rather than after ack_wait. Not at once: until they expire,
    // this worker's requests could be handed the messages again, with no one left to
    // take them (see `Puller::stop`). A message on its last delivery is not handed back
    // (the server would not deliver it again: it would be lost); it is handled here,
    // within the shutdown timeout, like the ones in flight.
    let expiry = messages.expires();
    let pulled = alongside(&mut in_flight, messages.stop(HAND_BACK_WAIT)).await;
    let mut last = Vec::new();
    let hand_back = async {
        let mut handed_back = 0;
        for msg in pulled {
            let delivered = Delivered::new(msg, &acks);
            if pipeline.delivery.is_last(delivered.delivery().delivered) {
                last.push(delivered);
            } else if delivered.ack_with(AckKind::Nak(Some(expiry))).await.is_ok() {
                handed_back += 1;
            }
        }
        handed_back
    };
    let handed_back = alongside(&mut in_flight, hand_back).await;
    for msg in last {
        in_flight.push(handle(msg));
    }
    tracing::info!(handed_back, "returned prefetched messages");
    tracing::info!(
        in_flight = in_flight.len(),
        "stopped fetching; finishing in-flight messages"
    );
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while let Some(done) = in_flight.next().await {
            report(done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = in_flight.len(),
            "shutdown timeout: unfinished messages will be redelivered"
        );
    }
    match ended {
        Some(e) => Err(e).context("the consumer's message stream ended"),
        None => Ok(()),
    }
}

/// Runs `work` while the messages in flight go on: they are polled by the consume task
/// alone, so anything it awaits must poll them too.
async fn alongside<T>(
    in_flight: &mut (impl Stream<Item = std::thread::Result<()>> + Unpin),
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            // None when nothing is in flight: the branch is then off for this turn.
            Some(done) = in_flight.next() => {
                report(done);
            }
        }
    }
}

/// How a message's handling ended: a panic (its message and place already logged by the
/// hook) is logged as an error, and the others go on; the message comes back after
/// `ack_wait`. Returns whether it panicked.
fn report(done: std::thread::Result<()>) -> bool {
    let panicked = done.is_err();
    if panicked {
        tracing::error!(task = "message handler", "task panicked");
    }
    panicked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_is_reported_and_the_others_finish() {
        let mut in_flight = FuturesUnordered::new();
        for n in 0..3 {
            in_flight.push(
                AssertUnwindSafe(async move {
                    tokio::task::yield_now().await;
                    assert_ne!(n, 1, "handler {n} fails");
                })
                .catch_unwind(),
            );
        }
        let mut panicked = 0;
        let mut finished = 0;
        while let Some(done) = in_flight.next().await {
            if report(done) {
                panicked += 1;
            } else {
                finished += 1;
            }
        }
        assert_eq!((panicked, finished), (1, 2));
    }
}
