//! What happens to one input message: parse -> match (with the miss path) -> publish the
//! routed envelopes and dead letters -> ack once every publish has its PubAck.
//!
//! Nothing is lost and nothing is doubled: the input is acked only after all its
//! outputs are durably stored; on a transient failure it is nak'ed with a delay and the
//! whole message is redone, and the stable `Nats-Msg-Id` of every output makes
//! JetStream drop the copies it already has. Outcomes are counted only when the input
//! is acked, so a redelivery is not counted twice either.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_nats::jetstream::{AckKind, Message};
use async_nats::HeaderMap;
use bytes::Bytes;

use crate::cache::miss::MissResolver;
use crate::cache::ConfigCache;
use crate::event::{self, BlobEvent, ParsedRecord};
use crate::nats::consumer::retry_delay;
use crate::nats::publisher::{PendingAck, PublishFailure, Publisher};
use crate::output::{headers, Reason};
use crate::router::{self, Match};
use crate::store::StoreError;

/// Longest `Blob-Router-Detail` header value; details are for humans, not payloads.
const MAX_DETAIL: usize = 512;

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
    Route {
        m: Match,
        record: ParsedRecord,
    },
    Dead {
        reason: Reason,
        detail: String,
        event_id: Option<String>,
    },
}

/// Facts about the input message every output refers to.
struct Input<'a> {
    subject: &'a str,
    payload: &'a Bytes,
    /// Input stream and sequence: together with a hash of the payload they name the
    /// message for de-duplication of its dead letters.
    stream: &'a str,
    stream_seq: u64,
    received_at: SystemTime,
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
        let input = Input {
            subject: msg.subject.as_str(),
            payload: &msg.payload,
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
                Err(e) => Plan::Dead {
                    reason: Reason::from(&e.error),
                    detail: e.error.to_string(),
                    event_id: e.event_id,
                },
                Ok(record) => match self.route(&record.event).await {
                    Ok(Some(m)) => Plan::Route { m, record },
                    Ok(None) => Plan::Dead {
                        reason: Reason::NoMatchingConfig,
                        detail: format!(
                            "no enabled config for container `{}` matches path `{}`",
                            record.event.container, record.event.path
                        ),
                        event_id: Some(record.event.id.clone()),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, seq = stream_seq, "config source unavailable on a miss; retrying the message later");
                        self.retry(&msg, delivered).await;
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
                tracing::warn!(error = %e, seq = stream_seq, delivered, "publish failed; retrying the message later");
                self.retry(&msg, delivered).await;
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

    async fn retry(&self, msg: &Message, delivered: i64) {
        self.cache
            .metrics()
            .counters
            .messages_retried
            .fetch_add(1, Relaxed);
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
        input: &Input<'_>,
        plans: Vec<Plan>,
    ) -> Result<Tally, PublishFailure> {
        let mut tally = Tally::default();
        let mut sent: Vec<(usize, String, PendingAck, Option<&Plan>)> =
            Vec::with_capacity(plans.len());
        let mut rejected: Vec<(usize, Reason, String, Option<String>)> = Vec::new();
        for (idx, plan) in plans.iter().enumerate() {
            let (subject, hdrs, payload) = match plan {
                Plan::Route { m, record } => {
                    let body = serde_json::to_vec(&m.envelope(&record.event, &record.raw))
                        .expect("envelope serializes");
                    (
                        m.config.subject.clone(),
                        routed_headers(&record.event, m),
                        Bytes::from(body),
                    )
                }
                Plan::Dead {
                    reason,
                    detail,
                    event_id,
                } => {
                    let h = dead_letter_headers(input, idx, *reason, detail, event_id.as_deref());
                    (reason.subject(&self.dlq_prefix), h, input.payload.clone())
                }
            };
            match self.publisher.send(&subject, hdrs, payload).await {
                Ok(pending) => sent.push((idx, subject, pending, Some(plan))),
                Err(failure) => route_failure(plan, idx, failure, &mut rejected)?,
            }
        }
        for (idx, subject, pending, plan) in sent {
            let plan = plan.expect("every sent output has its plan");
            match self.publisher.confirm(&subject, pending).await {
                Ok(()) => tally.count(plan),
                Err(failure) => route_failure(plan, idx, failure, &mut rejected)?,
            }
        }
        for (idx, reason, detail, event_id) in rejected {
            self.dead_letter_again(input, idx, reason, &detail, event_id.as_deref())
                .await?;
            tally.dead(reason);
        }
        Ok(tally)
    }

    /// Second-round dead letter. If even the original bytes cannot be stored (an input
    /// close to max_payload plus our headers), a truncated copy marked
    /// `Blob-Router-Truncated` is better than retrying forever. A missing dead-letter
    /// stream is worth waiting for.
    async fn dead_letter_again(
        &self,
        input: &Input<'_>,
        idx: usize,
        reason: Reason,
        detail: &str,
        event_id: Option<&str>,
    ) -> Result<(), PublishFailure> {
        let subject = reason.subject(&self.dlq_prefix);
        let h = dead_letter_headers(input, idx, reason, detail, event_id);
        let err = match self
            .publisher
            .publish(&subject, h, input.payload.clone())
            .await
        {
            Ok(()) => return Ok(()),
            Err(PublishFailure::Rejected(_)) => {
                let mut h = dead_letter_headers(input, idx, reason, detail, event_id);
                h.insert(headers::TRUNCATED, input.payload.len().to_string().as_str());
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
            PublishFailure::NoStream(s) | PublishFailure::Rejected(s) => {
                PublishFailure::Transient(format!("dead-letter publish failed: {s}"))
            }
            t => t,
        })
    }
}

/// Bytes cut from an input too large to dead-letter whole (room for our headers).
const TRUNCATE_MARGIN: usize = 16 * 1024;

/// Turns a permanent failure of a routed publish into a second-round dead letter;
/// anything else (or any failure of a dead letter) fails the message.
fn route_failure(
    plan: &Plan,
    idx: usize,
    failure: PublishFailure,
    rejected: &mut Vec<(usize, Reason, String, Option<String>)>,
) -> Result<(), PublishFailure> {
    match (plan, failure) {
        (Plan::Route { m, record }, PublishFailure::NoStream(subject)) => {
            rejected.push((
                idx,
                Reason::NoStreamForSubject,
                format!(
                    "config `{}` routes to `{subject}`, which no stream captures",
                    m.config.id
                ),
                Some(record.event.id.clone()),
            ));
            Ok(())
        }
        (Plan::Route { m, record }, PublishFailure::Rejected(why)) => {
            rejected.push((
                idx,
                Reason::PublishRejected,
                format!("routing to `{}` was refused: {why}", m.config.subject),
                Some(record.event.id.clone()),
            ));
            Ok(())
        }
        // Too large to store with our headers: the second round truncates it.
        (
            Plan::Dead {
                reason,
                detail,
                event_id,
            },
            PublishFailure::Rejected(_),
        ) => {
            rejected.push((idx, *reason, detail.clone(), event_id.clone()));
            Ok(())
        }
        (Plan::Dead { .. }, PublishFailure::NoStream(s)) => Err(PublishFailure::Transient(
            format!("dead-letter publish failed: {s}"),
        )),
        (_, failure) => Err(failure),
    }
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
            Plan::Dead { reason, .. } => self.dead(*reason),
        }
    }

    fn dead(&mut self, reason: Reason) {
        match self.dead.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.dead.push((reason, 1)),
        }
    }
}

fn routed_headers(event: &BlobEvent, m: &Match) -> HeaderMap {
    let mut h = HeaderMap::new();
    // Event ids come from producers: never put one in a header unchecked.
    h.insert(
        headers::MSG_ID,
        format!("{}:{}", dedup_id(&event.id), m.config.id).as_str(),
    );
    h.insert(headers::SOURCE_ID, m.config.id.as_str());
    h.insert(headers::EVENT_ID, header_safe(&event.id).as_str());
    h
}

/// Headers of a dead letter. Its `Nats-Msg-Id` names the input message (stream
/// sequence) and the record within it: stable across redeliveries, yet a replayed event
/// that fails again is a new input and gets a new dead letter.
fn dead_letter_headers(
    input: &Input<'_>,
    idx: usize,
    reason: Reason,
    detail: &str,
    event_id: Option<&str>,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    // Stable across redeliveries; distinct for a recreated input stream (sequences
    // restart) or another deployment sharing the dead-letter stream.
    let msg_id = format!(
        "dlq:{}:{}:{:016x}:{idx}",
        input.stream,
        input.stream_seq,
        xxhash_rust::xxh3::xxh3_64(input.payload)
    );
    h.insert(headers::MSG_ID, msg_id.as_str());
    h.insert(headers::REASON, reason.as_str());
    h.insert(headers::DETAIL, header_safe(detail).as_str());
    h.insert(headers::ORIGINAL_SUBJECT, input.subject);
    h.insert(
        headers::RECEIVED_AT,
        humantime::format_rfc3339_millis(input.received_at)
            .to_string()
            .as_str(),
    );
    if let Some(id) = event_id {
        h.insert(headers::EVENT_ID, header_safe(id).as_str());
    }
    h
}

/// Longest event id used as is in `Nats-Msg-Id`.
const MAX_ID: usize = 200;

/// The event id as a de-duplication key: itself when it is short and printable, else a
/// hash of it (mangling or truncating could make two events collide).
fn dedup_id(id: &str) -> std::borrow::Cow<'_, str> {
    if id.len() <= MAX_ID && !id.chars().any(char::is_control) {
        std::borrow::Cow::Borrowed(id)
    } else {
        std::borrow::Cow::Owned(format!(
            "h-{:032x}",
            xxhash_rust::xxh3::xxh3_128(id.as_bytes())
        ))
    }
}

/// A header value cannot hold line breaks; keep it short.
fn header_safe(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX_DETAIL {
        let mut cut = MAX_DETAIL;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::header_safe;

    #[test]
    fn dedup_ids_are_safe_and_never_collide_by_mangling() {
        assert_eq!(super::dedup_id("abc-123"), "abc-123");
        let a = super::dedup_id("evil\r\nid");
        let b = super::dedup_id("evil  id");
        assert!(!a.contains('\n') && a != b);
        let long1 = "x".repeat(300) + "1";
        let long2 = "x".repeat(300) + "2";
        assert_ne!(super::dedup_id(&long1), super::dedup_id(&long2));
        assert!(super::dedup_id(&long1).len() < 64);
    }

    #[test]
    fn header_values_lose_line_breaks_and_are_bounded() {
        assert_eq!(header_safe("a\r\nb"), "a  b");
        let long = "é".repeat(1000);
        let safe = header_safe(&long);
        assert!(safe.len() <= super::MAX_DETAIL + '…'.len_utf8());
        assert!(safe.ends_with('…'));
    }
}
