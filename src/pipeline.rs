//! What happens to one input message: parse -> match (with the miss path) -> publish the
//! routed envelopes and dead letters -> ack once every publish has its PubAck.
//!
//! Nothing is lost and nothing is doubled: the input is acked only after all its
//! outputs are durably stored; on a transient failure it is nak'ed with a delay and the
//! whole message is redone, and the stable `Nats-Msg-Id` of every output (see
//! [`crate::output`]) makes JetStream drop the copies it already has. Outcomes are
//! counted only when the input is acked, so a redelivery is not counted twice either.
//!
//! Bounded, whatever the input: a message over `--max-event-bytes` is dead-lettered
//! unparsed; the outputs of one message await their PubAcks at most [`PUBLISH_WINDOW`]
//! at a time; and a message that fails on its last allowed delivery (`--max-deliver`) is
//! dead-lettered `max_deliveries_exceeded` with its last error, then acked. If even that
//! dead letter fails it is left unacked: the server delivers it no more, and it is tried
//! again from its stored copy ([`Pipeline::handle_stored`]).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::AckKind;
use bytes::Bytes;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::cache::miss::MissResolver;
use crate::cache::ConfigCache;
use crate::event::{self, ParsedRecord, RecordResult};
use crate::nats::consumer::{Delivered, Delivery, DeliveryPolicy};
use crate::nats::given_up::StoredMessage;
use crate::nats::publisher::{PendingAck, PublishFailure, Publisher};
use crate::output::{self, headers, Envelope, InputMessage, Part, Reason, Received};
use crate::router::{self, Match};
use crate::store::StoreError;
use crate::telemetry::events::{InternalEvent, LastDeliveryUnfinished, MessageRetried};
use crate::telemetry::metrics::Counters;
use crate::telemetry::Chain;

/// Outputs of one message awaiting their PubAck at once: a message of many records
/// has at most this many publishes in flight.
pub const PUBLISH_WINDOW: usize = 64;

/// A message with many records tells the server every this many outputs that it is
/// still being worked on, so `ack_wait` does not hand it to another replica meanwhile.
const PROGRESS_EVERY: usize = 4096;

pub struct Pipeline {
    pub cache: Arc<ConfigCache>,
    pub resolver: MissResolver,
    pub publisher: Publisher,
    pub dlq_prefix: String,
    /// Nak delays and the last delivery, as the consumer has them.
    pub delivery: DeliveryPolicy,
    /// Larger inputs are dead-lettered `oversized_event` without being parsed.
    pub max_event_bytes: usize,
}

/// Where one record of a message is going. Plans live briefly in a per-message Vec;
/// boxing the large variant would cost an allocation per routed event instead.
#[allow(clippy::large_enum_variant)]
enum Plan<'a> {
    Route { m: Match, record: ParsedRecord<'a> },
    Dead(DeadLetterPlan),
}

/// A record (or the whole message) to dead-letter: why, the detail for humans, and the
/// event id when known.
struct DeadLetterPlan {
    reason: Reason,
    detail: String,
    event_id: Option<String>,
    /// Stands for the whole message rather than record `idx`.
    whole: bool,
}

impl DeadLetterPlan {
    /// A dead letter of the whole message.
    fn message(reason: Reason, detail: String) -> Self {
        Self {
            reason,
            detail,
            event_id: None,
            whole: true,
        }
    }

    /// The dead letter's headers, for record `idx` of `input` (or all of it).
    fn headers(&self, input: &InputMessage<'_>, idx: usize) -> async_nats::HeaderMap {
        let part = if self.whole {
            Part::Message
        } else {
            Part::Record(idx)
        };
        output::dead_letter_headers(
            input,
            part,
            self.reason,
            &self.detail,
            self.event_id.as_deref(),
        )
    }
}

/// The rest of a record's planning after a cache miss (see [`Pipeline::classify`]):
/// boxed, as misses are rare and the record lives in it.
type Miss<'s, 'm> = Pin<Box<dyn Future<Output = Result<Plan<'m>, Arc<StoreError>>> + Send + 's>>;

/// An output sent and awaiting its PubAck.
struct Sent<'p> {
    /// The record's position in the message (names its dead letter).
    idx: usize,
    /// A config's subject, or a dead letter's.
    subject: Cow<'p, str>,
    pending: PendingAck<'p>,
    plan: &'p Plan<'p>,
}

/// Why a message's stored copy could not be handled ([`Pipeline::handle_stored`]): both
/// may pass, so the caller tries again.
#[derive(Debug, thiserror::Error)]
pub enum StoredFailure {
    #[error("config source unavailable on a miss")]
    Source(#[source] Arc<StoreError>),
    #[error("publish failed")]
    Publish(#[source] PublishFailure),
}

/// The facts of a message read back from `stream` at `seq` (see
/// [`Pipeline::handle_stored`]), as a delivery of it would have them.
fn stored_input<'a>(stream: &'a str, seq: u64, msg: &'a StoredMessage) -> InputMessage<'a> {
    InputMessage {
        subject: &msg.subject,
        payload: &msg.payload,
        headers: Some(&msg.headers),
        stream,
        stream_seq: seq,
        received_at: Received::At(SystemTime::now()),
    }
}

/// Tells the server every `every` that `msg` is being worked on (a progress ack), from a
/// task of its own, until the guard returned is dropped.
fn keep_alive(msg: &Delivered<'_>, every: Duration) -> DropGuard {
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let client = msg.acks().clone();
    let reply = msg.reply.clone();
    tokio::spawn(async move {
        let Some(reply) = reply else { return };
        // async-nats's encoding of a progress ack (as `Delivered::ack_with` sends it).
        let progress = Bytes::from(AckKind::Progress);
        // The first at once: the delivery may have waited among the prefetched ones.
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stopped.cancelled() => return,
                _ = ticks.tick() => {
                    if let Err(e) = client.publish(reply.clone(), progress.clone()).await {
                        tracing::debug!(error = %Chain(&e), "progress ack failed");
                    }
                }
            }
        }
    });
    stop.drop_guard()
}

/// A routed output JetStream can never store, dead-lettered in a second round.
struct Redirect {
    idx: usize,
    dead: DeadLetterPlan,
}

impl Pipeline {
    /// Handles one message to its end: acked, or nak'ed for a later retry.
    // Not an `async fn`: an async fn moves its argument into a slot of its own when it
    // is first polled, so its future held the message (some hundreds of bytes) twice.
    #[allow(clippy::manual_async_fn)]
    pub fn handle<'a>(&'a self, msg: Delivered<'a>) -> impl Future<Output = ()> + Send + 'a {
        async move {
            let msg = &msg;
            let started = Instant::now();
            let counters = &self.cache.metrics().counters;
            counters.messages_received.fetch_add(1, Relaxed);
            let Delivery {
                stream,
                stream_seq,
                delivered,
            } = msg.delivery();
            // A last delivery must not be given up while it runs (it would be handled
            // again from its stored copy, see `crate::nats::given_up`): rare, so a task
            // of its own tells the server, until this ends.
            let _alive = self
                .delivery
                .is_last(delivered)
                .then(|| keep_alive(msg, self.delivery.progress_every()));
            let input = InputMessage {
                subject: msg.subject.as_str(),
                payload: &msg.payload,
                headers: msg.headers.as_ref(),
                stream,
                stream_seq,
                received_at: Received::Since(started),
            };
            let event_type = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(headers::EVENT_TYPE))
                .map(|v| v.as_str());

            let plans = match self.plan(&msg.payload, event_type).await {
                Ok(plans) => plans,
                Err(e) => {
                    let why = "config source unavailable on a miss";
                    return Box::pin(self.failed(msg, &input, delivered, why, &*e)).await;
                }
            };

            match self.publish_all(Some(msg), &input, plans).await {
                Ok(tally) => {
                    if let Err(e) = msg.ack().await {
                        // Redelivery will republish; de-duplication keeps outputs single.
                        tracing::warn!(error = %Chain(&e), seq = stream_seq, "ack failed");
                        return;
                    }
                    tally.record(counters);
                    self.cache
                        .metrics()
                        .record_latency(started.elapsed().as_secs_f64());
                }
                // The failure paths are boxed: their futures are large and rarely run, and
                // every message's future would otherwise carry (and copy) their size.
                Err(e) => Box::pin(self.failed(msg, &input, delivered, "publish failed", &e)).await,
            }
        }
    }

    /// What to do with each record of a message: route it (to the match) or dead-letter
    /// it (why). Fails only when a miss could not be resolved (the source unavailable).
    /// A function of its own, so that what it holds while it awaits a miss does not take
    /// room in the future of [`Self::handle`] beside that of the publishing; and no
    /// record is held here across that await (the miss path owns its record in a box of
    /// its own), so this future keeps no room for one either.
    async fn plan<'m>(
        &self,
        payload: &'m [u8],
        event_type: Option<&str>,
    ) -> Result<Vec<Plan<'m>>, Arc<StoreError>> {
        if payload.len() > self.max_event_bytes {
            return Ok(vec![Plan::Dead(DeadLetterPlan::message(
                Reason::OversizedEvent,
                format!(
                    "message of {} bytes is over --max-event-bytes {}; not parsed",
                    payload.len(),
                    self.max_event_bytes
                ),
            ))]);
        }
        let mut records = event::parse(payload, event_type).into_iter();
        let mut plans = Vec::with_capacity(records.len());
        loop {
            // The record, and what becomes of it, live in a block that ends before the
            // await: anything in scope there would keep room in this future, moved or not.
            let miss = {
                let Some(record) = records.next() else { break };
                match self.classify(record) {
                    Ok(plan) => {
                        plans.push(plan);
                        continue;
                    }
                    Err(miss) => miss,
                }
            };
            plans.push(miss.await?);
        }
        Ok(plans)
    }

    /// The plan for a record the cache decides (a match, or a record that did not
    /// parse), or, on a miss, the boxed work that decides it after a forced read.
    fn classify<'s, 'm: 's>(&'s self, record: RecordResult<'m>) -> Result<Plan<'m>, Miss<'s, 'm>> {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                return Ok(Plan::Dead(DeadLetterPlan {
                    reason: Reason::from(&e.error),
                    detail: e.error.to_string(),
                    event_id: e.event_id,
                    whole: false,
                }))
            }
        };
        match router::decide(&record.event, &self.cache.load()) {
            Some(m) => {
                let counters = &self.cache.metrics().counters;
                counters.cache_hits.fetch_add(1, Relaxed);
                Ok(Plan::Route { m, record })
            }
            None => Err(Box::pin(self.after_miss(record))),
        }
    }

    /// A record the cache has no match for: one coalesced forced read of its container,
    /// then the cache again; routed, or dead-lettered as `no_matching_config`.
    async fn after_miss<'m>(&self, record: ParsedRecord<'m>) -> Result<Plan<'m>, Arc<StoreError>> {
        let counters = &self.cache.metrics().counters;
        counters.cache_misses.fetch_add(1, Relaxed);
        self.resolver.resolve(&record.event.container).await?;
        Ok(match router::decide(&record.event, &self.cache.load()) {
            Some(m) => Plan::Route { m, record },
            None => Plan::Dead(DeadLetterPlan {
                reason: Reason::NoMatchingConfig,
                detail: format!(
                    "no enabled config for container `{}` matches path `{}`",
                    record.event.container, record.event.path
                ),
                event_id: Some(record.event.id.to_string()),
                whole: false,
            }),
        })
    }

    /// The message failed (`why`, `error`): nak it for a later retry, or, on its last
    /// delivery, dead-letter it whole as `max_deliveries_exceeded` and ack it. If that
    /// dead letter fails too, the message is left unacked: the server delivers it no
    /// more (so this happens, and is logged, once per message), and its stored copy is
    /// tried once the ack wait runs out.
    async fn failed(
        &self,
        msg: &Delivered<'_>,
        input: &InputMessage<'_>,
        delivered: i64,
        why: &'static str,
        error: &(dyn std::error::Error + Send + Sync + 'static),
    ) {
        let metrics = self.cache.metrics();
        if !self.delivery.is_last(delivered) {
            MessageRetried {
                seq: input.stream_seq,
                delivered,
                why,
                error,
            }
            .emit(metrics);
            self.nak(msg, delivered).await;
            return;
        }
        let failure = format!("{why}: {}", Chain(error));
        let dead = DeadLetterPlan::message(
            Reason::MaxDeliveriesExceeded,
            format!("failed on delivery {delivered}, the last: {failure}"),
        );
        match self.dead_letter_again(input, 0, &dead).await {
            Ok(()) => {
                tracing::warn!(
                    seq = input.stream_seq,
                    delivered,
                    failure = %failure,
                    "message failed on its last delivery; dead-lettered as max_deliveries_exceeded"
                );
                if let Err(e) = msg.ack().await {
                    tracing::warn!(error = %Chain(&e), seq = input.stream_seq, "ack failed");
                    return;
                }
                metrics.counters.dead_letters[Reason::MaxDeliveriesExceeded.index()]
                    .fetch_add(1, Relaxed);
            }
            Err(e) => LastDeliveryUnfinished {
                seq: input.stream_seq,
                delivered,
                failure: &failure,
                error: &e,
            }
            .emit(metrics),
        }
    }

    /// Handles, from its copy in the stream, a message the server stopped delivering
    /// with none of its deliveries seen to the end here (see [`crate::nats::given_up`]):
    /// routed or dead-lettered exactly as a delivery of it would have been (the same
    /// outputs, the same `Nats-Msg-Id`s, so anything already stored is not doubled).
    /// Nothing is acked: the server has let it go. Counted when all is stored.
    pub async fn handle_stored(
        &self,
        stream: &str,
        seq: u64,
        msg: &StoredMessage,
    ) -> Result<(), StoredFailure> {
        let input = stored_input(stream, seq, msg);
        let event_type = msg.headers.get(headers::EVENT_TYPE).map(|v| v.as_str());
        let plans = self
            .plan(&msg.payload, event_type)
            .await
            .map_err(StoredFailure::Source)?;
        let tally = self
            .publish_all(None, &input, plans)
            .await
            .map_err(StoredFailure::Publish)?;
        tally.record(&self.cache.metrics().counters);
        Ok(())
    }

    /// Dead-letters whole, as `max_deliveries_exceeded`, a message whose stored copy
    /// could not be handled either (`failure`): what its last delivery would have had.
    /// The `Nats-Msg-Id` is the one [`Self::failed`] gives the same message.
    pub async fn dead_letter_stored(
        &self,
        stream: &str,
        seq: u64,
        msg: &StoredMessage,
        failure: &str,
    ) -> Result<(), PublishFailure> {
        let input = stored_input(stream, seq, msg);
        let dead = DeadLetterPlan::message(
            Reason::MaxDeliveriesExceeded,
            format!("the server stopped delivering it, and its stored copy failed: {failure}"),
        );
        self.dead_letter_again(&input, 0, &dead).await?;
        self.cache.metrics().counters.dead_letters[Reason::MaxDeliveriesExceeded.index()]
            .fetch_add(1, Relaxed);
        Ok(())
    }

    /// Hands the message back for redelivery after a growing delay.
    async fn nak(&self, msg: &Delivered<'_>, delivered: i64) {
        if let Err(e) = msg
            .ack_with(AckKind::Nak(Some(self.delivery.retry_delay(delivered))))
            .await
        {
            tracing::warn!(error = %Chain(&e), "nak failed; the message returns after ack_wait");
        }
    }

    /// Sends the outputs, [`PUBLISH_WINDOW`] awaiting their PubAck at a time. A routed
    /// event whose subject no stream captures (or that JetStream refuses for good) is
    /// dead-lettered in a second round. Any transient failure fails the whole message.
    /// `msg`, when the outputs are of a delivery, is told of the progress of a long one.
    async fn publish_all(
        &self,
        msg: Option<&Delivered<'_>>,
        input: &InputMessage<'_>,
        plans: Vec<Plan<'_>>,
    ) -> Result<Tally, PublishFailure> {
        let mut tally = Tally::default();
        let mut sent: VecDeque<Sent<'_>> = VecDeque::with_capacity(plans.len().min(PUBLISH_WINDOW));
        let mut redirects: Vec<Redirect> = Vec::new();
        for (idx, plan) in plans.iter().enumerate() {
            if sent.len() == PUBLISH_WINDOW {
                if let Some(out) = sent.pop_front() {
                    self.settle(out, &mut tally, &mut redirects).await?;
                }
            }
            if let Some(msg) = msg.filter(|_| idx > 0 && idx % PROGRESS_EVERY == 0) {
                // Boxed: rare, and its future is large.
                if let Err(e) = Box::pin(msg.ack_with(AckKind::Progress)).await {
                    tracing::debug!(error = %Chain(&e), "progress ack failed");
                }
            }
            let (subject, hdrs, payload) = match plan {
                Plan::Route { m, record } => (
                    Cow::Borrowed(m.config.subject.as_str()),
                    output::routed_headers(&record.event, &m.config),
                    Envelope::routed(&m.config, m.fields(), record).to_bytes(),
                ),
                Plan::Dead(dead) => (
                    Cow::Owned(dead.reason.subject(&self.dlq_prefix)),
                    dead.headers(input, idx),
                    input.payload.clone(),
                ),
            };
            match self.publisher.send(&subject, hdrs, payload).await {
                Ok(pending) => sent.push_back(Sent {
                    idx,
                    subject,
                    pending,
                    plan,
                }),
                Err(failure) => redirects.push(redirect(plan, idx, failure)?),
            }
        }
        while let Some(out) = sent.pop_front() {
            self.settle(out, &mut tally, &mut redirects).await?;
        }
        for r in redirects {
            Box::pin(self.dead_letter_again(input, r.idx, &r.dead)).await?;
            tally.dead(r.dead.reason);
        }
        Ok(tally)
    }

    /// Waits for one output's PubAck: counted, or to be dead-lettered in the second round.
    async fn settle<'p>(
        &self,
        out: Sent<'p>,
        tally: &mut Tally,
        redirects: &mut Vec<Redirect>,
    ) -> Result<(), PublishFailure> {
        match self.publisher.confirm(&out.subject, out.pending).await {
            Ok(()) => tally.count(out.plan),
            Err(failure) => redirects.push(redirect(out.plan, out.idx, failure)?),
        }
        Ok(())
    }

    /// Second-round dead letter. If even the original bytes cannot be stored (an input
    /// close to max_payload plus our headers), a truncated copy marked
    /// `Blob-Router-Truncated` is better than retrying forever. A missing dead-letter
    /// stream is worth waiting for.
    async fn dead_letter_again(
        &self,
        input: &InputMessage<'_>,
        idx: usize,
        dead: &DeadLetterPlan,
    ) -> Result<(), PublishFailure> {
        let subject = dead.reason.subject(&self.dlq_prefix);
        let h = || dead.headers(input, idx);
        let err = match self
            .publisher
            .publish(&subject, h(), input.payload.clone())
            .await
        {
            Ok(()) => return Ok(()),
            Err(PublishFailure::Rejected(_)) => {
                let mut h = h();
                output::mark_truncated(&mut h, input.payload.len());
                let keep = input.payload.len().saturating_sub(TRUNCATE_MARGIN);
                match self
                    .publisher
                    .publish(&subject, h, input.payload.slice(..keep))
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        Err(match err {
            t @ PublishFailure::Transient { .. } => t,
            permanent => PublishFailure::transient("dead-letter publish failed", permanent),
        })
    }
}

/// Bytes cut from an input too large to dead-letter whole (room for our headers).
const TRUNCATE_MARGIN: usize = 16 * 1024;

/// Turns a permanent failure of a routed publish into a second-round dead letter;
/// anything else (or any failure of a dead letter) fails the message.
fn redirect(
    plan: &Plan<'_>,
    idx: usize,
    failure: PublishFailure,
) -> Result<Redirect, PublishFailure> {
    let dead = match (plan, failure) {
        (Plan::Route { m, record }, PublishFailure::NoStream(subject)) => DeadLetterPlan {
            reason: Reason::NoStreamForSubject,
            detail: format!(
                "config `{}` routes to `{subject}`, which no stream captures",
                m.config.id
            ),
            event_id: Some(record.event.id.to_string()),
            whole: false,
        },
        (Plan::Route { m, record }, PublishFailure::Rejected(why)) => DeadLetterPlan {
            reason: Reason::PublishRejected,
            detail: format!("routing to `{}` was refused: {why}", m.config.subject),
            event_id: Some(record.event.id.to_string()),
            whole: false,
        },
        // Too large to store with our headers: the second round truncates it.
        (Plan::Dead(dead), PublishFailure::Rejected(_)) => DeadLetterPlan {
            reason: dead.reason,
            detail: dead.detail.clone(),
            event_id: dead.event_id.clone(),
            whole: dead.whole,
        },
        (Plan::Dead(_), no_stream @ PublishFailure::NoStream(_)) => {
            return Err(PublishFailure::transient(
                "dead-letter publish failed",
                no_stream,
            ))
        }
        (_, failure) => return Err(failure),
    };
    Ok(Redirect { idx, dead })
}

#[derive(Default)]
struct Tally {
    routed: u64,
    dead: Vec<(Reason, u64)>,
}

impl Tally {
    fn count(&mut self, plan: &Plan) {
        match plan {
            Plan::Route { .. } => self.routed += 1,
            Plan::Dead(dead) => self.dead(dead.reason),
        }
    }

    /// Counts the outcomes, once the message's outputs are all stored.
    fn record(self, counters: &Counters) {
        counters.events_routed.fetch_add(self.routed, Relaxed);
        for (reason, n) in self.dead {
            counters.dead_letters[reason.index()].fetch_add(n, Relaxed);
        }
    }

    fn dead(&mut self, reason: Reason) {
        match self.dead.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.dead.push((reason, 1)),
        }
    }
}
