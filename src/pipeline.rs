//! What happens to one input message: parse -> match (with the miss path) -> publish the
//! routed envelopes and dead letters -> ack once every publish has its PubAck.
//!
//! Nothing is lost and nothing is doubled: the input is acked only after all its
//! outputs are durably stored; on a transient failure it is nak'ed with a delay and the
//! whole message is redone, and the stable `Nats-Msg-Id` of every output (see
//! [`crate::output`]) makes JetStream drop the copies it already has. Outcomes are
//! counted only when the input is acked, so a redelivery is not counted twice either.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_nats::jetstream::{AckKind, Message};

use crate::cache::miss::MissResolver;
use crate::cache::ConfigCache;
use crate::event::{self, BlobEvent, ParsedRecord};
use crate::nats::consumer::retry_delay;
use crate::nats::publisher::{PendingAck, PublishFailure, Publisher};
use crate::output::{self, headers, Envelope, InputMessage, Reason};
use crate::router::{self, Match};
use crate::store::StoreError;
use crate::telemetry::events::{InternalEvent, MessageRetried};

pub struct Pipeline {
    pub cache: Arc<ConfigCache>,
    pub resolver: MissResolver,
    pub publisher: Publisher,
    pub dlq_prefix: String,
}

/// Where one record of a message is going. Plans live briefly in a per-message Vec;
/// boxing the large variant would cost an allocation per routed event instead.
#[allow(clippy::large_enum_variant)]
enum Plan {
    Route { m: Match, record: ParsedRecord },
    Dead(DeadLetterPlan),
}

/// A record to dead-letter: why, the detail for humans, and the event id when known.
struct DeadLetterPlan {
    reason: Reason,
    detail: String,
    event_id: Option<String>,
}

impl DeadLetterPlan {
    /// The dead letter's headers, for record `idx` of `input`.
    fn headers(&self, input: &InputMessage<'_>, idx: usize) -> async_nats::HeaderMap {
        output::dead_letter_headers(
            input,
            idx,
            self.reason,
            &self.detail,
            self.event_id.as_deref(),
        )
    }
}

/// An output sent and awaiting its PubAck.
struct Sent<'p> {
    /// The record's position in the message (names its dead letter).
    idx: usize,
    subject: String,
    pending: PendingAck,
    plan: &'p Plan,
}

/// A routed output JetStream can never store, dead-lettered in a second round.
struct Redirect {
    idx: usize,
    dead: DeadLetterPlan,
}

impl Pipeline {
    /// Handles one message to its end: acked, or nak'ed for a later retry.
    pub async fn handle(&self, msg: Message) {
        let started = Instant::now();
        let counters = &self.cache.metrics().counters;
        counters.messages_received.fetch_add(1, Relaxed);
        let (stream, stream_seq, delivered) = msg
            .info()
            .map(|i| (i.stream, i.stream_sequence, i.delivered))
            .unwrap_or(("", 0, 1));
        let input = InputMessage {
            subject: msg.subject.as_str(),
            payload: &msg.payload,
            headers: msg.headers.as_ref(),
            stream,
            stream_seq,
            received_at: SystemTime::now(),
        };
        let event_type = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(headers::EVENT_TYPE))
            .map(|v| v.as_str());

        let mut plans = Vec::new();
        for record in event::parse(&msg.payload, event_type) {
            let plan = match record {
                Err(e) => Plan::Dead(DeadLetterPlan {
                    reason: Reason::from(&e.error),
                    detail: e.error.to_string(),
                    event_id: e.event_id,
                }),
                Ok(record) => match self.route(&record.event).await {
                    Ok(Some(m)) => Plan::Route { m, record },
                    Ok(None) => Plan::Dead(DeadLetterPlan {
                        reason: Reason::NoMatchingConfig,
                        detail: format!(
                            "no enabled config for container `{}` matches path `{}`",
                            record.event.container, record.event.path
                        ),
                        event_id: Some(record.event.id.clone()),
                    }),
                    Err(e) => {
                        MessageRetried {
                            seq: stream_seq,
                            delivered,
                            why: "config source unavailable on a miss",
                            error: &*e,
                        }
                        .emit(self.cache.metrics());
                        self.nak(&msg, delivered).await;
                        return;
                    }
                },
            };
            plans.push(plan);
        }

        match self.publish_all(&input, plans).await {
            Ok(tally) => {
                if let Err(e) = msg.ack().await {
                    // Redelivery will republish; de-duplication keeps outputs single.
                    tracing::warn!(error = %e, seq = stream_seq, "ack failed");
                    return;
                }
                counters.events_routed.fetch_add(tally.routed, Relaxed);
                for (reason, n) in tally.dead {
                    counters.dead_letters[reason.index()].fetch_add(n, Relaxed);
                }
                self.cache
                    .metrics()
                    .record_latency(started.elapsed().as_secs_f64());
            }
            Err(e) => {
                MessageRetried {
                    seq: stream_seq,
                    delivered,
                    why: "publish failed",
                    error: &e,
                }
                .emit(self.cache.metrics());
                self.nak(&msg, delivered).await;
            }
        }
    }

    /// Cache first; on a miss, one coalesced forced read of the container, then again.
    async fn route(&self, event: &BlobEvent) -> Result<Option<Match>, Arc<StoreError>> {
        let counters = &self.cache.metrics().counters;
        if let Some(m) = router::decide(event, &self.cache.load()) {
            counters.cache_hits.fetch_add(1, Relaxed);
            return Ok(Some(m));
        }
        counters.cache_misses.fetch_add(1, Relaxed);
        self.resolver.resolve(&event.container).await?;
        Ok(router::decide(event, &self.cache.load()))
    }

    /// Hands the message back for redelivery after a growing delay.
    async fn nak(&self, msg: &Message, delivered: i64) {
        if let Err(e) = msg
            .ack_with(AckKind::Nak(Some(retry_delay(delivered))))
            .await
        {
            tracing::warn!(error = %e, "nak failed; the message returns after ack_wait");
        }
    }

    /// Sends every output at once, then waits for all PubAcks. A routed event whose
    /// subject no stream captures (or that JetStream refuses for good) is dead-lettered
    /// in a second round. Any transient failure fails the whole message.
    async fn publish_all(
        &self,
        input: &InputMessage<'_>,
        plans: Vec<Plan>,
    ) -> Result<Tally, PublishFailure> {
        let mut tally = Tally::default();
        let mut sent: Vec<Sent<'_>> = Vec::with_capacity(plans.len());
        let mut redirects: Vec<Redirect> = Vec::new();
        for (idx, plan) in plans.iter().enumerate() {
            let (subject, hdrs, payload) = match plan {
                Plan::Route { m, record } => (
                    m.config.subject.clone(),
                    output::routed_headers(&record.event, &m.config),
                    Envelope::new(&m.config, &m.metadata, &record.event, &record.raw).to_bytes(),
                ),
                Plan::Dead(dead) => (
                    dead.reason.subject(&self.dlq_prefix),
                    dead.headers(input, idx),
                    input.payload.clone(),
                ),
            };
            match self.publisher.send(&subject, hdrs, payload).await {
                Ok(pending) => sent.push(Sent {
                    idx,
                    subject,
                    pending,
                    plan,
                }),
                Err(failure) => redirects.push(redirect(plan, idx, failure)?),
            }
        }
        for out in sent {
            match self.publisher.confirm(&out.subject, out.pending).await {
                Ok(()) => tally.count(out.plan),
                Err(failure) => redirects.push(redirect(out.plan, out.idx, failure)?),
            }
        }
        for r in redirects {
            self.dead_letter_again(input, r.idx, &r.dead).await?;
            tally.dead(r.dead.reason);
        }
        Ok(tally)
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
fn redirect(plan: &Plan, idx: usize, failure: PublishFailure) -> Result<Redirect, PublishFailure> {
    let dead = match (plan, failure) {
        (Plan::Route { m, record }, PublishFailure::NoStream(subject)) => DeadLetterPlan {
            reason: Reason::NoStreamForSubject,
            detail: format!(
                "config `{}` routes to `{subject}`, which no stream captures",
                m.config.id
            ),
            event_id: Some(record.event.id.clone()),
        },
        (Plan::Route { m, record }, PublishFailure::Rejected(why)) => DeadLetterPlan {
            reason: Reason::PublishRejected,
            detail: format!("routing to `{}` was refused: {why}", m.config.subject),
            event_id: Some(record.event.id.clone()),
        },
        // Too large to store with our headers: the second round truncates it.
        (Plan::Dead(dead), PublishFailure::Rejected(_)) => DeadLetterPlan {
            reason: dead.reason,
            detail: dead.detail.clone(),
            event_id: dead.event_id.clone(),
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

    fn dead(&mut self, reason: Reason) {
        match self.dead.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.dead.push((reason, 1)),
        }
    }
}
