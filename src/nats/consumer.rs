//! The input side: the durable pull consumer all replicas share, and its delivery policy.
//! Explicit acks plus a bounded `max_ack_pending` are the backpressure: the server stops
//! handing out messages while that many are unacknowledged, however many replicas pull.
//!
//! Retries: a message that fails is nak'ed with a delay from `--retry-backoff` (the
//! pipeline picks it by the delivery count); one whose worker died comes back after
//! `ack_wait`. Either way the server counts the delivery, and `max_deliver` bounds them:
//! on the last one the pipeline dead-letters a failing message instead of naking it. The
//! consumer's own `backoff` list is left empty on purpose: JetStream applies it only to
//! ack-wait expiries and sets `ack_wait` to its first entry, which would redeliver a
//! message still being worked on after half a second.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, AckKind};
use async_nats::Client;
use bytes::Bytes;

/// Settings of the durable consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub stream: String,
    pub durable: String,
    pub max_ack_pending: i64,
    pub ack_wait: Duration,
    /// Deliveries of one message at most (the first one included).
    pub max_deliver: i64,
    /// Nak delays: entry `n - 1` after delivery `n`, the last one repeated.
    pub retry_backoff: Vec<Duration>,
}

/// How a failing message is retried, as the running consumer has it.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    /// Deliveries at most; the server's value, which wins over the flag if the two differ
    /// (an existing consumer JetStream would not update). `None`: unlimited.
    pub max_deliver: Option<i64>,
    retry_backoff: Vec<Duration>,
    /// The server's `ack_wait`: a delivery not acked within it is given up.
    ack_wait: Duration,
}

impl DeliveryPolicy {
    pub fn new(max_deliver: i64, retry_backoff: Vec<Duration>) -> Self {
        Self {
            max_deliver: (max_deliver > 0).then_some(max_deliver),
            retry_backoff,
            ack_wait: DEFAULT_ACK_WAIT,
        }
    }

    /// With the server's `ack_wait`.
    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        if !ack_wait.is_zero() {
            self.ack_wait = ack_wait;
        }
        self
    }

    /// How often a message being worked on tells the server so (a progress ack), when
    /// it must not be given up meanwhile: three times per `ack_wait`, and at least every
    /// [`MAX_PROGRESS_EVERY`], since another replica (or an operator) may lower the
    /// consumer's `ack_wait` after this one read it.
    pub fn progress_every(&self) -> Duration {
        (self.ack_wait / 3).clamp(Duration::from_millis(1), MAX_PROGRESS_EVERY)
    }

    /// Delay before a message nak'ed after its `delivered`-th delivery comes back.
    pub fn retry_delay(&self, delivered: i64) -> Duration {
        let idx = usize::try_from(delivered.max(1) - 1).unwrap_or(usize::MAX);
        self.retry_backoff
            .get(idx)
            .or(self.retry_backoff.last())
            .copied()
            .unwrap_or(DEFAULT_RETRY)
    }

    /// Whether `delivered` is the last delivery the server makes: a failure now is final.
    pub fn is_last(&self, delivered: i64) -> bool {
        self.max_deliver.is_some_and(|max| delivered >= max)
    }
}

/// Longest time between two progress acks (see [`DeliveryPolicy::progress_every`]).
const MAX_PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// JetStream's `ack_wait` when a consumer has none set.
const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

/// Nak delay when no schedule is given.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);

/// One setting where the existing consumer and the flags disagree.
#[derive(Debug, PartialEq, Eq)]
struct Difference {
    field: &'static str,
    existing: String,
    requested: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (flags: {})",
            self.field, self.existing, self.requested
        )
    }
}

/// The settings the flags own that `existing` does not have.
fn differences(
    existing: &jetstream::consumer::Config,
    settings: &ConsumerSettings,
) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut cmp = |field, existing: String, requested: String| {
        if existing != requested {
            out.push(Difference {
                field,
                existing,
                requested,
            });
        }
    };
    cmp(
        "max_deliver",
        existing.max_deliver.to_string(),
        settings.max_deliver.to_string(),
    );
    cmp(
        "ack_wait",
        format!("{:?}", existing.ack_wait),
        format!("{:?}", settings.ack_wait),
    );
    cmp(
        "max_ack_pending",
        existing.max_ack_pending.to_string(),
        settings.max_ack_pending.to_string(),
    );
    cmp(
        "backoff",
        format!("{:?}", existing.backoff),
        "[]".to_string(),
    );
    out
}

/// Gets the durable consumer, creating it on first use. An existing consumer whose
/// `max_deliver`, `ack_wait`, `max_ack_pending` or `backoff` differ from the flags is
/// updated (JetStream allows editing these); if the server refuses, each difference is
/// logged and the existing settings stay, and the returned policy follows the server.
pub async fn durable(
    js: &jetstream::Context,
    settings: &ConsumerSettings,
) -> anyhow::Result<(jetstream::consumer::Consumer<pull::Config>, DeliveryPolicy)> {
    let stream = js
        .get_stream(&settings.stream)
        .await
        .with_context(|| format!("input stream {}", settings.stream))?;
    let name = || format!("consumer {} on {}", settings.durable, settings.stream);
    let consumer = stream
        .get_or_create_consumer(
            &settings.durable,
            pull::Config {
                durable_name: Some(settings.durable.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: settings.max_ack_pending,
                ack_wait: settings.ack_wait,
                max_deliver: settings.max_deliver,
                ..Default::default()
            },
        )
        .await
        .with_context(name)?;
    let existing = consumer.cached_info().config.clone();
    let diffs = differences(&existing, settings);
    let consumer = if diffs.is_empty() {
        consumer
    } else {
        let shown = diffs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let update = jetstream::consumer::Config {
            max_deliver: raised_max_deliver(existing.max_deliver, settings.max_deliver),
            ack_wait: settings.ack_wait,
            max_ack_pending: settings.max_ack_pending,
            backoff: Vec::new(),
            ..existing
        };
        match stream.create_consumer(update).await {
            Ok(_) => {
                tracing::info!(differences = %shown, "updated the existing durable consumer to the flags");
                stream
                    .get_consumer(&settings.durable)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))
                    .with_context(name)?
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    differences = %shown,
                    "the existing durable consumer differs from the flags and JetStream refused to update it; keeping its settings"
                );
                consumer
            }
        }
    };
    let config = &consumer.cached_info().config;
    let policy = DeliveryPolicy::new(config.max_deliver, settings.retry_backoff.clone())
        .with_ack_wait(config.ack_wait);
    Ok((consumer, policy))
}

/// The `max_deliver` to set on an existing consumer: the flag's, unless that would lower
/// a finite limit. Replicas decide a message's last delivery from the value they read at
/// startup; had a later replica lowered it, they would nak a message the server then
/// never delivers again. Raised, they only dead-letter earlier than they need to. (An
/// unlimited consumer, from a version without the backstop, does get the limit: replicas
/// of that version must be gone before a message fails that often.)
fn raised_max_deliver(existing: i64, flag: i64) -> i64 {
    if existing > 0 && flag > 0 && flag < existing {
        tracing::warn!(
            existing,
            flag,
            "not lowering the durable consumer's max_deliver (running replicas rely on it); lower it by hand once all run with the new flag"
        );
        existing
    } else {
        flag
    }
}

/// Where a JetStream message came from and how often it was delivered: what the worker
/// needs of its `$JS.ACK.` reply subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery<'a> {
    pub stream: &'a str,
    pub stream_seq: u64,
    /// 1 on the first delivery.
    pub delivered: i64,
}

impl<'a> Delivery<'a> {
    /// Reads a reply subject as async-nats's `Message::info` does (ADR-15: `$JS.ACK.
    /// <stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`, or with
    /// `<domain>.<account hash>.` before the stream and maybe a token after), for the
    /// three fields the worker uses; `None` where `info` fails for a reason in them.
    /// `info` costs 1,600 instructions per message (it splits with a `char` searcher and
    /// converts the timestamp); this is a byte loop over the dots.
    pub fn of(reply: &'a str) -> Option<Self> {
        let rest = reply.strip_prefix("$JS.ACK.")?;
        // Where each of the first 10 tokens ends; the count goes on to tell the format.
        let mut ends = [0usize; 10];
        let mut tokens = 0;
        for (i, b) in rest.bytes().enumerate() {
            if b == b'.' {
                if tokens < ends.len() {
                    ends[tokens] = i;
                }
                tokens += 1;
            }
        }
        if tokens < ends.len() {
            ends[tokens] = rest.len();
        }
        tokens += 1;
        let first = match tokens {
            7 => 0,
            n if n >= 9 => 2,
            _ => return None,
        };
        // Dots are ASCII: every end is a char boundary.
        let token = |i: usize| {
            let start = if i == 0 { 0 } else { ends[i - 1] + 1 };
            &rest[start..ends[i]]
        };
        Some(Delivery {
            stream: token(first),
            delivered: token(first + 2).parse().ok()?,
            stream_seq: token(first + 3).parse().ok()?,
        })
    }

    /// That of a message with `reply` subject; a message without a readable one (not
    /// from JetStream) counts as a first delivery of sequence 0 from no stream.
    pub fn of_reply(reply: Option<&'a str>) -> Self {
        reply.and_then(Delivery::of).unwrap_or(Delivery {
            stream: "",
            stream_seq: 0,
            delivered: 1,
        })
    }
}

/// Why an ack (or a nak, or a progress report) of a [`Delivered`] message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum AckSendError {
    #[error("the message has no reply subject: not a JetStream delivery")]
    NoReply,
    #[error("publishing to the reply subject")]
    Send(#[source] async_nats::PublishError),
}

/// A message the consumer delivered, and the connection its acks go back on: async-nats's
/// `jetstream::Message` without the copy of the JetStream context that it carries in
/// every message. Copying and dropping that context took about thirty atomic operations
/// and an allocation per message (README, Performance); the worker's acks all go on the
/// connection it consumes on, held once.
pub struct Delivered<'c> {
    message: async_nats::Message,
    acks: &'c Client,
}

impl std::ops::Deref for Delivered<'_> {
    type Target = async_nats::Message;

    fn deref(&self) -> &async_nats::Message {
        &self.message
    }
}

impl<'c> Delivered<'c> {
    /// `message`, acked on `acks` (the connection it came on).
    pub fn new(message: async_nats::Message, acks: &'c Client) -> Self {
        Delivered { message, acks }
    }

    /// Where it came from and how often it was delivered (see [`Delivery::of_reply`]).
    pub fn delivery(&self) -> Delivery<'_> {
        Delivery::of_reply(self.message.reply.as_deref())
    }

    /// Tells the server it is done with: an empty payload to the reply subject, as
    /// async-nats's `jetstream::Message::ack` sends (the server takes it for `+ACK`).
    pub async fn ack(&self) -> Result<(), AckSendError> {
        self.reply_with(Bytes::new()).await
    }

    /// Tells the server `kind` (a nak with its delay, a progress report...), as
    /// async-nats's `jetstream::Message::ack_with` does: one publish to the reply subject.
    pub async fn ack_with(&self, kind: AckKind) -> Result<(), AckSendError> {
        self.reply_with(kind.into()).await
    }

    async fn reply_with(&self, payload: Bytes) -> Result<(), AckSendError> {
        let reply = self.message.reply.clone().ok_or(AckSendError::NoReply)?;
        self.acks
            .publish(reply, payload)
            .await
            .map_err(AckSendError::Send)
    }

    /// The connection its acks go on.
    pub fn acks(&self) -> &'c Client {
        self.acks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that never connects (port 1, retried in the background): enough for a
    /// message to be read, and for an ack without a reply subject to be refused.
    async fn unconnected() -> Client {
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("127.0.0.1:1")
            .await
            .unwrap()
    }

    /// A message on the input subject with `reply` as its reply subject.
    fn message(reply: Option<&str>) -> async_nats::Message {
        async_nats::Message {
            subject: "blob.events.x".into(),
            reply: reply.map(Into::into),
            payload: Default::default(),
            headers: None,
            status: None,
            description: None,
            length: 0,
        }
    }

    /// Reply subjects as JetStream writes them, and near misses: `Delivery::of` reads
    /// what async-nats's `Message::info` reads.
    #[tokio::test]
    async fn delivery_reads_what_the_client_reads() {
        // `info` only needs a `jetstream::Message` around the reply subject.
        let context = jetstream::new(unconnected().await);
        let info = |reply: &str| {
            let msg = jetstream::Message {
                message: message(Some(reply)),
                context: context.clone(),
            };
            msg.info()
                .ok()
                .map(|i| (i.stream.to_string(), i.stream_sequence, i.delivered))
        };
        const TS: &str = "1790230470084404000";
        let mut replies = vec![
            format!("$JS.ACK.BLOB_EVENTS.blob-router.1.42.40.{TS}.7"),
            format!("$JS.ACK.hub.szMpdrwD.BLOB_EVENTS.blob-router.3.42.40.{TS}.7"),
            format!("$JS.ACK._.szMpdrwD.S.c.2.9.9.{TS}.0.tok"),
            format!("$JS.ACK._.h.S.c.2.9.9.{TS}.0.tok.more.and.more"),
            format!("$JS.ACK..c.1.1.1.{TS}.0"),
            format!("$JS.ACK.S.c.x.1.1.{TS}.0"),
            format!("$JS.ACK.S.c.1.-1.1.{TS}.0"),
            format!("$JS.ACK.S.c.1.1.1.{TS}"),
            format!("$JS.ACK.h.S.c.1.1.1.{TS}.0"),
            format!("$JS.NAK.S.c.1.1.1.{TS}.0"),
            "$JS.ACK.".to_string(),
            "$JS.ACK.S".to_string(),
            "inbox".to_string(),
            String::new(),
        ];
        // Each token of a valid v1 and v2 subject changed in turn.
        for base in [
            vec!["S", "c", "1", "42", "40", TS, "7"],
            vec!["d", "h", "S", "c", "5", "42", "40", TS, "7", "t"],
        ] {
            for i in 0..base.len() {
                for bad in [
                    "",
                    "x",
                    "-3",
                    "18446744073709551616",
                    "9223372036854775808",
                    "0",
                ] {
                    let mut t = base.clone();
                    t[i] = bad;
                    replies.push(format!("$JS.ACK.{}", t.join(".")));
                }
            }
        }
        let mut read = 0;
        for reply in &replies {
            let ours = Delivery::of(reply);
            let theirs = info(reply);
            match (&ours, &theirs) {
                (Some(d), Some((stream, seq, delivered))) => {
                    assert_eq!(
                        (d.stream, d.stream_seq, d.delivered),
                        (stream.as_str(), *seq, *delivered),
                        "{reply}"
                    );
                    read += 1;
                }
                // The client also refuses a bad token the worker does not read.
                (Some(_), None) => {}
                (None, Some(_)) => panic!("{reply}: the client reads it, Delivery does not"),
                (None, None) => {}
            }
        }
        assert!(read > 20, "only {read} subjects read");
        assert_eq!(
            Delivery::of(&replies[1]),
            Some(Delivery {
                stream: "BLOB_EVENTS",
                stream_seq: 42,
                delivered: 3
            })
        );
    }

    /// A `Delivered` message reads its delivery from its reply subject (a message
    /// without one is a first delivery from no stream), and refuses to ack what has no
    /// reply subject rather than publishing nowhere. Its acks reaching the server, and
    /// naks coming back after their delay, are tested against a real one in
    /// `tests/it/pull.rs`.
    #[tokio::test]
    async fn a_delivered_message_reads_its_reply_subject() {
        let client = unconnected().await;
        let from_js = Delivered::new(
            message(Some(
                "$JS.ACK.BLOB_EVENTS.worker.3.42.40.1790230470084404000.0",
            )),
            &client,
        );
        assert_eq!(
            from_js.delivery(),
            Delivery {
                stream: "BLOB_EVENTS",
                stream_seq: 42,
                delivered: 3
            }
        );
        assert_eq!(
            from_js.subject.as_str(),
            "blob.events.x",
            "the message, by Deref"
        );
        let plain = Delivered::new(message(None), &client);
        assert_eq!(
            plain.delivery(),
            Delivery {
                stream: "",
                stream_seq: 0,
                delivered: 1
            }
        );
        assert!(matches!(plain.ack().await, Err(AckSendError::NoReply)));
    }

    #[test]
    fn max_deliver_is_raised_or_set_but_never_lowered() {
        assert_eq!(raised_max_deliver(-1, 20), 20, "unlimited gets the limit");
        assert_eq!(raised_max_deliver(10, 20), 20);
        assert_eq!(raised_max_deliver(30, 20), 30, "never lowered");
        assert_eq!(raised_max_deliver(20, 20), 20);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_schedule_is_followed_then_its_last_delay_repeats() {
        let p = DeliveryPolicy::new(5, vec![ms(500), ms(1000), ms(30_000)]);
        assert_eq!(p.retry_delay(0), ms(500));
        assert_eq!(p.retry_delay(1), ms(500));
        assert_eq!(p.retry_delay(2), ms(1000));
        assert_eq!(p.retry_delay(3), ms(30_000));
        assert_eq!(p.retry_delay(100), ms(30_000));
        assert_eq!(DeliveryPolicy::new(5, vec![]).retry_delay(3), DEFAULT_RETRY);
    }

    #[test]
    fn only_the_last_delivery_is_final() {
        let p = DeliveryPolicy::new(3, vec![]);
        assert!(!p.is_last(1) && !p.is_last(2));
        assert!(p.is_last(3) && p.is_last(4));
        let unlimited = DeliveryPolicy::new(-1, vec![]);
        assert_eq!(p.progress_every(), MAX_PROGRESS_EVERY, "30 s / 3, capped");
        let p = p.with_ack_wait(Duration::from_secs(3));
        assert_eq!(p.progress_every(), Duration::from_secs(1));
        assert_eq!(
            p.with_ack_wait(Duration::ZERO).progress_every(),
            Duration::from_secs(1),
            "zero is no setting"
        );
        assert!(!unlimited.is_last(i64::MAX));
    }

    #[test]
    fn differences_name_each_setting() {
        let settings = ConsumerSettings {
            stream: "S".into(),
            durable: "d".into(),
            max_ack_pending: 10,
            ack_wait: Duration::from_secs(30),
            max_deliver: 20,
            retry_backoff: vec![],
        };
        let same = jetstream::consumer::Config {
            max_ack_pending: 10,
            ack_wait: Duration::from_secs(30),
            max_deliver: 20,
            ..Default::default()
        };
        assert!(differences(&same, &settings).is_empty());
        let other = jetstream::consumer::Config {
            max_deliver: -1,
            backoff: vec![ms(100)],
            ..same
        };
        let fields: Vec<_> = differences(&other, &settings)
            .iter()
            .map(|d| d.field)
            .collect();
        assert_eq!(fields, ["max_deliver", "backoff"]);
        assert_eq!(
            differences(&other, &settings)[0].to_string(),
            "max_deliver: -1 (flags: 20)"
        );
    }
}
