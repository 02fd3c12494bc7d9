//! Publishing to JetStream and waiting for the PubAck, with failures sorted into what the
//! pipeline decides on: no stream captures the subject (dead-letter the event), the
//! message can never be accepted (dead-letter), or try again later (nak the input).
//!
//! "No responders" alone does not prove a subject is unroutable: JetStream answers that
//! way while it restarts or elects a leader too. So a subject is declared stream-less
//! only when the server, asked which stream captures it, says none; anything less
//! certain is transient, and the message is retried rather than dead-lettered.
//!
//! A publish is a plain publish with a reply subject, whose answer is read here, rather
//! than async-nats's JetStream `publish`: that one reads every PubAck through serde's
//! buffered `Content` into an untagged enum (building, and dropping, an error for the
//! variant that does not fit), about 3,300 of the worker's 47,000 instructions per
//! event, and takes a semaphore permit and a second timeout per publish besides. Here
//! a PubAck is recognised by its first bytes, and only an answer that may be an error
//! goes through serde (see [`read_pub_ack`]).
//!
//! Nor is it the client's own request: that one formats a fresh inbox name per request
//! (a new NUID), which its connection task splits again, formats a second time and
//! keeps in a SipHash map until the answer comes, about 3,400 instructions per event
//! (README, Performance, 2026-12-04's ninth session). Here the answers come to one
//! subscription of this publisher's own, `<inbox>.*`, each publish's reply subject
//! numbered (`<inbox>.<n>`), and a task hands each answer to its publish by that
//! number ([`Replies`]). An answer that comes after its publish gave up is dropped.
//! The subscription holds the client's `subscription_capacity` answers not yet handed
//! out; `run` gives the publishing connection room for every publish that can be in
//! flight (`--concurrency` times [`crate::pipeline::PUBLISH_WINDOW`]). Were answers
//! ever dropped all the same (a slow consumer, logged as a warning), their publishes
//! would time out and their inputs be retried, which the outputs' `Nats-Msg-Id` keeps
//! single.
//!
//! Nor does each publish set a timer of its own for `--publish-timeout`: one task
//! ([`Replies::time_out`]) lets go of every publish past its deadline, a few times per
//! timeout (at most every 100 ms), so a publish gives up up to that much late (and a
//! PubAck that comes in that time is taken); and the queueing of a publish sets a timer
//! only when the client cannot take it at once. While no publish waits, the task sleeps
//! until one does: an idle worker's publisher does not wake.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use async_nats::client::PublishErrorKind;
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{
    Client, HeaderMap, Message, PublishError, RequestError, RequestErrorKind, StatusCode, Subject,
    Subscriber,
};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// Why a publish did not get its PubAck, sorted by what the pipeline does about it.
/// The cause is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum PublishFailure {
    /// No stream captures the subject (the server said so when asked): dead-letter.
    #[error("no stream captures subject {0}")]
    NoStream(String),
    /// The message can never be accepted (too large, sealed stream): dead-letter.
    #[error("rejected by JetStream")]
    Rejected(#[source] AckError),
    /// Anything that may pass: nak the input and try again later.
    #[error("transient publish failure: {context}")]
    Transient {
        context: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl PublishFailure {
    /// A transient failure caused by `source`.
    pub fn transient(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        PublishFailure::Transient {
            context: context.into(),
            source: Some(source.into()),
        }
    }
}

/// What came instead of a PubAck.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    /// JetStream answered with an API error; its code decides what is done.
    #[error(transparent)]
    JetStream(jetstream::Error),
    /// No answer: timed out, no responders, too large to send, the connection gone.
    #[error(transparent)]
    Request(RequestError),
    /// An answer that is neither a PubAck nor an API error (shown as it came).
    #[error("an answer that is not a PubAck: {0}")]
    Unexpected(String),
}

#[derive(Clone)]
pub struct Publisher {
    client: Client,
    /// For the one question a failure may need answered: which stream captures a subject.
    js: jetstream::Context,
    /// Longest wait for a PubAck (`--publish-timeout`).
    timeout: Duration,
    /// Where the answers are handed out.
    replies: Arc<Replies>,
    /// Stops the tasks that hand them out and time them out once the last clone is gone.
    _stop: Arc<AbortOnDrop>,
}

/// The answers to this publisher's publishes: each one's reply subject is `prefix`
/// and a number of its own, and its answer is sent to the receiver kept under that
/// number until it comes or the publish gives up ([`Ticket`]).
struct Replies {
    /// `<inbox>.`
    prefix: String,
    waiting: Mutex<Waiting>,
    /// Wakes [`Replies::time_out`] when a publish comes to an empty map (or the
    /// subscription ends): it sleeps while nothing waits.
    wake: Notify,
}

struct Waiting {
    /// False once the subscription has ended (the client closed): nothing more comes.
    open: bool,
    /// The number the next publish gets.
    next: u64,
    /// Numbers are ours and sequential: a fast hash is enough. Beside each sender, the
    /// publish's deadline: [`Replies::time_out`] drops the sender once it has passed.
    by_number: foldhash::HashMap<u64, (oneshot::Sender<Message>, Instant)>,
}

impl Replies {
    fn new(prefix: String) -> Self {
        Replies {
            prefix,
            waiting: Mutex::new(Waiting {
                open: true,
                next: 0,
                by_number: foldhash::HashMap::default(),
            }),
            wake: Notify::new(),
        }
    }

    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        // Nothing panics while holding it; a poisoned map is still a valid map.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A number for one publish that gives up at `deadline`, with the receiver its
    /// answer will come to; `None` once the subscription has ended.
    fn claim(&self, deadline: Instant) -> Option<(Ticket<'_>, oneshot::Receiver<Message>)> {
        let (tx, answer) = oneshot::channel();
        let mut waiting = self.waiting();
        if !waiting.open {
            return None;
        }
        let number = waiting.next;
        waiting.next += 1;
        let first = waiting.by_number.is_empty();
        waiting.by_number.insert(number, (tx, deadline));
        drop(waiting);
        if first {
            // The time-out task may be asleep (a permit is kept if it is not yet).
            self.wake.notify_one();
        }
        let ticket = Ticket {
            replies: self,
            number,
            waiting: true,
        };
        Some((ticket, answer))
    }

    /// Hands the answers on `subscriber` to their publishes until it ends (the client
    /// closed) or the task is aborted (the publisher gone: the subscription is dropped
    /// with it). Nothing else is polled beside it: a cancellation token's future would
    /// take a lock on every turn.
    async fn hand_out(self: Arc<Self>, mut subscriber: Subscriber) {
        while let Some(answer) = subscriber.next().await {
            let number = answer
                .subject
                .as_str()
                .strip_prefix(self.prefix.as_str())
                .and_then(|n| n.parse::<u64>().ok());
            let Some(number) = number else { continue };
            let waiting = self.waiting().by_number.remove(&number);
            if let Some((waiting, _deadline)) = waiting {
                // Gone if its publish gave up meanwhile.
                let _ = waiting.send(answer);
            }
        }
        self.close();
    }

    /// The client is closed for good: every publish still waiting fails now (its
    /// receiver sees the sender dropped), new ones fail at once, and the time-out task
    /// ends.
    fn close(&self) {
        let mut waiting = self.waiting();
        waiting.open = false;
        waiting.by_number.clear();
        drop(waiting);
        self.wake.notify_one();
    }

    /// Every `every`, drops the sender of each publish whose deadline has passed: its
    /// receiver then sees the sender gone at a time past its deadline, which is how
    /// [`Publisher::confirm`] tells a timeout from a closed client. One task's timer
    /// for all publishes, instead of a timer of each publish's own (registered in
    /// tokio's timer wheel and taken out again, with its locks: about a thousand
    /// instructions per routed event); a publish times out up to `every` late. Sleeps
    /// while no publish waits (woken by the first that comes, see [`Self::claim`]).
    /// Ends with the subscription.
    async fn time_out(self: Arc<Self>, every: Duration) {
        loop {
            loop {
                {
                    let waiting = self.waiting();
                    if !waiting.open {
                        return;
                    }
                    if !waiting.by_number.is_empty() {
                        break;
                    }
                }
                // A publish that came since the look left a permit: no wake is missed.
                self.wake.notified().await;
            }
            tokio::time::sleep(every).await;
            let now = Instant::now();
            self.waiting()
                .by_number
                .retain(|_, (_, deadline)| *deadline > now);
        }
    }
}

/// How often [`Replies::time_out`] looks: a sixteenth of the publish timeout, between
/// 1 ms and 100 ms (the default 10 s timeout fires within 10.1 s).
fn time_out_every(timeout: Duration) -> Duration {
    (timeout / 16).clamp(Duration::from_millis(1), Duration::from_millis(100))
}

/// Aborts the tasks that hand out and time out the answers when the last publisher
/// clone goes.
struct AbortOnDrop([tokio::task::AbortHandle; 2]);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A publish's claim on its answer: given up (its number forgotten) when dropped
/// before the answer came, so that a publish that timed out or was cancelled leaves
/// nothing behind.
struct Ticket<'a> {
    replies: &'a Replies,
    number: u64,
    /// False once the answer came (the task took it out of the map already).
    waiting: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.waiting {
            self.replies.waiting().by_number.remove(&self.number);
        }
    }
}

/// A publish that has been sent and awaits its PubAck.
pub struct PendingAck<'a> {
    /// Its answer; the sender is dropped when the deadline passes or the client closes.
    answer: oneshot::Receiver<Message>,
    /// When the publish gives up: `--publish-timeout` after it was sent.
    deadline: Instant,
    ticket: Ticket<'a>,
}

impl Publisher {
    /// Publishes on `client`, waiting at most `timeout` for each PubAck. Subscribes to
    /// the answers' inbox and spawns the tasks that hand them out and time them out, on
    /// the current runtime (best the one that connected `client`, where its I/O runs).
    pub async fn new(
        client: Client,
        timeout: Duration,
    ) -> Result<Self, async_nats::SubscribeError> {
        let inbox = client.new_inbox();
        let subscriber = client.subscribe(format!("{inbox}.*")).await?;
        let replies = Arc::new(Replies::new(format!("{inbox}.")));
        let hand_out = tokio::spawn(replies.clone().hand_out(subscriber));
        let time_out = tokio::spawn(replies.clone().time_out(time_out_every(timeout)));
        Ok(Self {
            // The stream lookup is bounded like a publish.
            js: jetstream::ContextBuilder::new()
                .timeout(timeout)
                .build(client.clone()),
            client,
            timeout,
            replies,
            _stop: Arc::new(AbortOnDrop([
                hand_out.abort_handle(),
                time_out.abort_handle(),
            ])),
        })
    }

    /// Sends one message; await its PubAck with [`Self::confirm`]. Returns once the
    /// client has it queued for the connection, so that the outputs of a message are in
    /// flight together, their PubAcks awaited afterwards. The subject is copied once,
    /// for the client (a clone of a `Subject` made from a string would allocate the
    /// shared form of its bytes, and free it again, for every event).
    pub async fn send(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<PendingAck<'_>, PublishFailure> {
        // One deadline for queueing and answer alike: a client that cannot queue at
        // once (its channel full while it reconnects) uses up the same time.
        let now = Instant::now();
        // A timeout too long for the clock (the flag takes years) is no deadline.
        let deadline = now
            .checked_add(self.timeout)
            .unwrap_or_else(|| now + FAR_FUTURE);
        let Some((ticket, answer)) = self.replies.claim(deadline) else {
            let closed = RequestError::with_source(
                RequestErrorKind::Other,
                "the publishing connection is closed",
            );
            return Err(self.failure(subject, AckError::Request(closed)).await);
        };
        let reply = reply_subject(&self.replies.prefix, ticket.number);
        let queue = self.client.publish_with_reply_and_headers(
            Subject::from(subject),
            reply,
            headers,
            payload,
        );
        let mut queue = std::pin::pin!(queue);
        // Queued at once, unless the client's channel is full (while it reconnects):
        // only then is there a timer to set.
        let queued = match futures::poll!(queue.as_mut()) {
            Poll::Ready(queued) => Ok(queued),
            Poll::Pending => tokio::time::timeout_at(deadline, queue).await,
        };
        let refused = match queued {
            Ok(Ok(())) => {
                return Ok(PendingAck {
                    answer,
                    deadline,
                    ticket,
                })
            }
            // Refused by the client before it was sent: too large, an invalid subject,
            // or the client closed.
            Ok(Err(e)) => request_error(e),
            Err(_elapsed) => RequestError::new(RequestErrorKind::TimedOut),
        };
        drop(ticket);
        Err(self.failure(subject, AckError::Request(refused)).await)
    }

    /// Publishes sent and still waiting for their answer (diagnostics and tests: none
    /// is left behind by a publish that timed out, was cancelled or was answered).
    pub fn awaiting_answers(&self) -> usize {
        self.replies.waiting().by_number.len()
    }

    /// Waits for the PubAck of a sent message.
    pub async fn confirm(
        &self,
        subject: &str,
        pending: PendingAck<'_>,
    ) -> Result<(), PublishFailure> {
        let PendingAck {
            answer,
            deadline,
            mut ticket,
        } = pending;
        // No timer here: the sender is dropped once the deadline has passed (see
        // `Replies::time_out`), or when the client closes before it.
        let result = match answer.await {
            Ok(answer) => {
                ticket.waiting = false;
                if answer.status == Some(StatusCode::NO_RESPONDERS) {
                    Err(AckError::Request(RequestError::with_source(
                        RequestErrorKind::NoResponders,
                        "no responders",
                    )))
                } else {
                    read_pub_ack(&answer)
                }
            }
            Err(_gone) if Instant::now() >= deadline => Err(AckError::Request(RequestError::new(
                RequestErrorKind::TimedOut,
            ))),
            // The answers' subscription ended: the client is closed.
            Err(_gone) => Err(AckError::Request(RequestError::with_source(
                RequestErrorKind::Other,
                "the publishing connection closed before the answer came",
            ))),
        };
        drop(ticket);
        match result {
            Ok(()) => Ok(()),
            Err(e) => Err(self.failure(subject, e).await),
        }
    }

    /// Sends and confirms.
    pub async fn publish(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), PublishFailure> {
        let pending = self.send(subject, headers, payload).await?;
        self.confirm(subject, pending).await
    }

    /// Sorts a failed publish. Boxed: the rare path's lookup future would otherwise
    /// make every publish's future (and so every message's task) larger.
    fn failure<'a>(
        &'a self,
        subject: &'a str,
        e: AckError,
    ) -> Pin<Box<dyn Future<Output = PublishFailure> + Send + 'a>> {
        Box::pin(async move {
            match classify(&e) {
                Sorted::MaybeNoStream => self.confirm_no_stream(subject, e).await,
                Sorted::Rejected => PublishFailure::Rejected(e),
                Sorted::Transient => {
                    PublishFailure::transient(format!("publishing to {subject}"), e)
                }
            }
        })
    }

    /// Asks the server which stream captures `subject`; only a definite "none" counts.
    async fn confirm_no_stream(&self, subject: &str, e: AckError) -> PublishFailure {
        use jetstream::context::GetStreamByNameErrorKind as Kind;
        match self.js.stream_by_subject(subject).await {
            Err(lookup) if lookup.kind() == Kind::NotFound => {
                PublishFailure::NoStream(subject.to_string())
            }
            Ok(stream) => PublishFailure::transient(
                format!("stream {stream} captures {subject} but did not answer"),
                e,
            ),
            Err(lookup) => PublishFailure::transient(
                format!("looking up the stream for {subject}"),
                LookupFailed { publish: e, lookup },
            ),
        }
    }
}

/// What a deadline past the clock's range becomes (tokio's timers do the same).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `prefix` and `number`, sized exactly (so that the client's `Bytes` takes the string
/// as it is, with no second allocation).
fn reply_subject(prefix: &str, number: u64) -> Subject {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(number);
    let mut reply = String::with_capacity(prefix.len() + digits.len());
    reply.push_str(prefix);
    reply.push_str(digits);
    Subject::from(reply)
}

/// A publish the client refused, as the request error the sorting reads.
fn request_error(e: PublishError) -> RequestError {
    let kind = match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => RequestErrorKind::MaxPayloadExceeded,
        PublishErrorKind::InvalidSubject => RequestErrorKind::InvalidSubject,
        PublishErrorKind::Send => RequestErrorKind::Other,
    };
    RequestError::with_source(kind, e)
}

/// Reads JetStream's answer to a publish: `Ok` for a PubAck (a duplicate too: the
/// stream has the message), the API error otherwise.
///
/// A PubAck is `{"stream":"NAME","seq":N,...}` and an error `{"error":{...}}` (the
/// server writes its fields in that order, with no spaces). An answer that starts as a
/// PubAck, has a `"seq"` and no `"error"` anywhere cannot hold an error (a stream
/// name with quotes in it would be escaped), so it is taken without being parsed;
/// anything else is parsed in full.
pub fn read_pub_ack(answer: &Message) -> Result<(), AckError> {
    let body: &[u8] = &answer.payload;
    let unexpected = || {
        // Status and description as the server sent them; the body cut short.
        let status = match (answer.status, &answer.description) {
            (Some(s), Some(d)) => format!("status {s} {d}: "),
            (Some(s), None) => format!("status {s}: "),
            _ => String::new(),
        };
        let body: String = String::from_utf8_lossy(body).chars().take(200).collect();
        AckError::Unexpected(format!("{status}{body}"))
    };
    if !matches!(answer.status, None | Some(StatusCode::OK)) {
        return Err(unexpected());
    }
    if body.starts_with(br#"{"stream":""#) && body.ends_with(b"}") && seq_and_no_error(body) {
        return Ok(());
    }
    #[derive(Deserialize)]
    struct Reply {
        error: Option<jetstream::Error>,
        stream: Option<String>,
        seq: Option<u64>,
    }
    match serde_json::from_slice::<Reply>(body) {
        Ok(Reply {
            error: Some(error), ..
        }) => Err(AckError::JetStream(error)),
        Ok(Reply {
            stream: Some(_),
            seq: Some(_),
            ..
        }) => Ok(()),
        _ => Err(unexpected()),
    }
}

/// Whether `body` has a `"seq":` and no `"error"`, in one pass: a PubAck is short and
/// has few quotes, so a plain loop costs less than setting up a vector search.
fn seq_and_no_error(body: &[u8]) -> bool {
    let mut seq = false;
    for at in 0..body.len() {
        if body[at] == b'"' {
            let rest = &body[at..];
            if rest.starts_with(br#""error""#) {
                return false;
            }
            seq |= rest.starts_with(br#""seq":"#);
        }
    }
    seq
}

/// A publish that failed as if no stream captured its subject, and a lookup of the
/// stream that failed too: both are shown.
#[derive(Debug, thiserror::Error)]
#[error("{publish}; the stream lookup failed")]
struct LookupFailed {
    publish: AckError,
    #[source]
    lookup: jetstream::context::GetStreamByNameError,
}

#[derive(Debug, PartialEq, Eq)]
enum Sorted {
    MaybeNoStream,
    Rejected,
    Transient,
}

/// Sorts a failed publish by the client's error kind or JetStream's error code.
fn classify(e: &AckError) -> Sorted {
    match e {
        AckError::Request(e) => match e.kind() {
            RequestErrorKind::NoResponders => Sorted::MaybeNoStream,
            RequestErrorKind::MaxPayloadExceeded => Sorted::Rejected,
            _ => Sorted::Transient,
        },
        // Larger than the stream's max_msg_size, or the stream is sealed: retrying
        // cannot help. (A full stream with discard-new can, once it is drained.)
        AckError::JetStream(e) => match e.error_code() {
            ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM | ErrorCode::STREAM_SEALED => {
                Sorted::Rejected
            }
            _ => Sorted::Transient,
        },
        AckError::Unexpected(_) => Sorted::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str) -> Message {
        Message {
            subject: "_INBOX.x".into(),
            reply: None,
            payload: Bytes::copy_from_slice(body.as_bytes()),
            headers: None,
            status: None,
            description: None,
            length: body.len(),
        }
    }

    fn api_error(code: u64) -> AckError {
        let e = serde_json::from_str(&format!(
            r#"{{"code":400,"err_code":{code},"description":"x"}}"#
        ))
        .unwrap();
        AckError::JetStream(e)
    }

    #[test]
    fn pub_acks_are_taken_and_errors_kept() {
        for ok in [
            r#"{"stream":"BLOB_ROUTED","seq":7}"#,
            r#"{"stream":"BLOB_ROUTED","seq":7,"duplicate":true}"#,
            r#"{"stream":"S","domain":"hub","seq":1}"#,
            // Other spacing or order goes through serde, with the same result.
            r#"{ "seq": 3, "stream": "S" }"#,
        ] {
            assert!(read_pub_ack(&answer(ok)).is_ok(), "{ok}");
        }
        let e = read_pub_ack(&answer(
            r#"{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}"#,
        ))
        .unwrap_err();
        let AckError::JetStream(e) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(e.error_code(), ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM);
        assert!(e
            .to_string()
            .contains("message size exceeds maximum allowed"));
        // An error after a stream name is still an error.
        assert!(matches!(
            read_pub_ack(&answer(
                r#"{"stream":"S","seq":0,"error":{"code":503,"err_code":10077,"description":"x"}}"#
            )),
            Err(AckError::JetStream(_))
        ));
        // A stream named like the key is parsed in full, and is a PubAck.
        assert!(read_pub_ack(&answer(r#"{"stream":"error","seq":1}"#)).is_ok());
        for odd in [
            "",
            "{}",
            "not json",
            r#"{"stream":"S"}"#,
            r#"{"stream":"S","seq":1"#,
        ] {
            assert!(
                matches!(read_pub_ack(&answer(odd)), Err(AckError::Unexpected(_))),
                "{odd:?}"
            );
        }
        let mut status = answer(r#"{"stream":"S","seq":1}"#);
        status.status = Some(StatusCode::REQUEST_TERMINATED);
        assert!(matches!(
            read_pub_ack(&status),
            Err(AckError::Unexpected(_))
        ));
    }

    fn replies() -> Replies {
        Replies::new("_INBOX.x.".into())
    }

    /// A publish that gives up (timed out, cancelled) forgets its number; one whose
    /// answer came does not look for it again.
    #[test]
    fn a_ticket_given_up_forgets_its_number() {
        let replies = replies();
        for n in [7, 8] {
            let (tx, _rx) = oneshot::channel();
            replies.waiting().by_number.insert(n, (tx, Instant::now()));
        }
        drop(Ticket {
            replies: &replies,
            number: 7,
            waiting: true,
        });
        let left: Vec<u64> = replies.waiting().by_number.keys().copied().collect();
        assert_eq!(left, [8]);
        drop(Ticket {
            replies: &replies,
            number: 8,
            waiting: false,
        });
        assert_eq!(replies.waiting().by_number.len(), 1);
    }

    /// A publish past its deadline is let go (its receiver sees the sender gone, at a
    /// time past the deadline, which `confirm` reads as a timeout); one within it waits
    /// on; and the task ends with the subscription.
    #[tokio::test]
    async fn publishes_past_their_deadline_are_let_go() {
        let replies = Arc::new(replies());
        let start = Instant::now();
        let soon = start + Duration::from_millis(20);
        let (_late, late) = replies.claim(soon).unwrap();
        let (_waits, mut waits) = replies.claim(start + Duration::from_secs(3600)).unwrap();
        let task = tokio::spawn(replies.clone().time_out(Duration::from_millis(5)));
        assert!(late.await.is_err(), "the late publish's sender is dropped");
        assert!(Instant::now() >= soon, "not before its deadline");
        assert!(matches!(
            waits.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert_eq!(replies.waiting().by_number.len(), 1);
        replies.close();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the task ends once the subscription has")
            .unwrap();
    }

    /// While no publish waits the time-out task sleeps (it is not polled at all), and
    /// the first publish to come wakes it: that one still times out on time, and a
    /// sleeping task ends when the subscription does.
    #[tokio::test(start_paused = true)]
    async fn a_publish_after_a_long_idle_still_times_out() {
        let replies = Arc::new(replies());
        let every = Duration::from_millis(5);
        // The task's polls, counted.
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = polls.clone();
        let mut time_out = Box::pin(replies.clone().time_out(every));
        let task = tokio::spawn(std::future::poll_fn(move |cx| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            time_out.as_mut().poll(cx)
        }));
        // Nothing waits: the task sleeps (the paused clock jumps an hour meanwhile; a
        // task waking every 5 ms would be polled 720,000 times).
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(polls.load(std::sync::atomic::Ordering::Relaxed), 1);
        let deadline = Instant::now() + Duration::from_millis(20);
        let (_late, late) = replies.claim(deadline).unwrap();
        tokio::time::timeout(Duration::from_secs(1), late)
            .await
            .expect("let go within a turn of the task after its deadline")
            .expect_err("the sender is dropped");
        let now = Instant::now();
        assert!(now >= deadline, "not before its deadline");
        assert!(
            now <= deadline + every,
            "at most one turn late: {:?}",
            now - deadline
        );
        // Idle again, and closed while asleep: the task ends.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        replies.close();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("a sleeping task ends when the subscription does")
            .unwrap();
    }

    #[test]
    fn time_outs_are_looked_for_often_enough() {
        assert_eq!(
            time_out_every(Duration::from_secs(10)),
            Duration::from_millis(100)
        );
        assert_eq!(
            time_out_every(Duration::from_millis(320)),
            Duration::from_millis(20)
        );
        assert_eq!(time_out_every(Duration::ZERO), Duration::from_millis(1));
        assert_eq!(time_out_every(Duration::MAX), Duration::from_millis(100));
    }

    #[test]
    fn reply_subjects_are_the_prefix_and_the_number() {
        assert_eq!(reply_subject("_INBOX.x.", 0).as_str(), "_INBOX.x.0");
        assert_eq!(
            reply_subject("_INBOX.x.", u64::MAX).as_str(),
            format!("_INBOX.x.{}", u64::MAX)
        );
    }

    #[test]
    fn only_permanent_refusals_are_rejections() {
        let request = |kind| AckError::Request(RequestError::new(kind));
        assert_eq!(
            classify(&request(RequestErrorKind::NoResponders)),
            Sorted::MaybeNoStream
        );
        assert_eq!(
            classify(&request(RequestErrorKind::MaxPayloadExceeded)),
            Sorted::Rejected
        );
        assert_eq!(classify(&api_error(10054)), Sorted::Rejected);
        assert_eq!(classify(&api_error(10109)), Sorted::Rejected);
        assert_eq!(classify(&api_error(10077)), Sorted::Transient);
        assert_eq!(
            classify(&request(RequestErrorKind::TimedOut)),
            Sorted::Transient
        );
        assert_eq!(
            classify(&request(RequestErrorKind::Other)),
            Sorted::Transient
        );
        assert_eq!(
            classify(&request(RequestErrorKind::InvalidSubject)),
            Sorted::Transient
        );
        assert_eq!(
            classify(&AckError::Unexpected(String::new())),
            Sorted::Transient
        );
    }
}
