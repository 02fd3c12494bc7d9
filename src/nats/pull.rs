//! Pulling messages from the durable consumer: pull requests sent on an inbox of our
//! own, with an exact count of the messages they still owe.
//!
//! Not async-nats's message stream: its count is raised by a separate task once a pull
//! request has been sent, so a message of that request can arrive first, finds the
//! count at zero and is not subtracted. The stream then believes a message is owed
//! that never comes and waits, with no request outstanding, until its own timer at
//! the request's expiry + 5 s. At concurrency 1 that happened on many requests, and
//! more often the busier the runtime's workers were. Here the count is raised as soon
//! as the request is sent, in the task that lowers it, with no await in between: no
//! message can be taken before its request is counted.
//!
//! What the server says on the inbox: a message (one less owed); an idle heartbeat (the
//! request still waits); a request that ended (expired, or refused) with
//! `Nats-Pending-Messages`, what it will no longer deliver. A deleted consumer, or a
//! request the consumer refuses by its settings, is final: the same request would only
//! be refused again. Silence for two heartbeats while connected means the requests are
//! gone (a restarted server, a lost connection): they are sent afresh. While pulling,
//! nothing is lost either way, since the subscription stays: a message of a forgotten
//! request still arrives, and one that never arrives is redelivered after `ack_wait`.
//! [`Puller::stop`] unsubscribes first and then collects what is still on its way, so
//! the caller can hand it back.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_nats::client::PublishErrorKind;
use async_nats::connection::State;
use async_nats::jetstream::{self, consumer::pull};
use async_nats::{Client, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio::time::Sleep;

/// Why no message could be pulled.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The consumer no longer exists.
    #[error("the consumer was deleted")]
    ConsumerDeleted,
    /// The consumer refuses our pull requests by its settings (push based, a smaller
    /// `max_batch` or `max_expires`): every later request would be refused too.
    #[error("the consumer refused the pull request: {0}")]
    Refused(String),
    /// JetStream did not answer (restarting, electing a leader): try again.
    #[error("JetStream did not answer the pull request (no responders)")]
    NoResponders,
    /// The consumer already has as many waiting requests as it takes (`max_waiting`,
    /// shared by all replicas): try again a little later.
    #[error("the consumer has as many waiting pull requests as it takes (max_waiting)")]
    TooManyWaiting,
    /// A request could not be handed to the client (a subject or size it refuses).
    #[error("sending a pull request")]
    Request(#[source] async_nats::PublishError),
    /// The inbox could not be subscribed to.
    #[error("subscribing to the pull inbox")]
    Subscribe(#[source] async_nats::SubscribeError),
    /// The client is closed for good: its subscription ended, or it takes no more
    /// requests.
    #[error("the NATS client is closed")]
    Closed(#[source] Option<async_nats::PublishError>),
}

impl PullError {
    /// Whether pulling can never work again (the caller stops rather than retrying).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            PullError::ConsumerDeleted | PullError::Refused(_) | PullError::Closed(_)
        )
    }
}

/// How to pull.
#[derive(Debug, Clone, Copy)]
pub struct PullSettings {
    /// Messages one request asks for at most; the puller keeps no more than this many
    /// owed at once.
    pub batch: usize,
    /// How long a request waits on the server for messages; zero is taken as 30 s (a
    /// request that never expires could not be told from a lost one).
    pub expires: Duration,
}

/// The send of a pull request to the client: pending while the client's command
/// channel is full, or the task's cooperative budget is spent.
type RequestSend = Pin<Box<dyn Future<Output = Result<(), async_nats::PublishError>> + Send>>;

/// A pull request on its way to the client: how many messages it asks for, and its send.
type Request = (usize, RequestSend);

/// Messages of a pull consumer, pulled as they are taken.
///
/// Polled rather than awaited ([`Self::poll_next_message`]): every wait lives in the
/// puller, so a caller that polls it from a loop (the worker's consume loop, beside its
/// messages in flight) keeps no future of its own for it, and a message already on
/// the inbox is taken with no timer and no clock read (the timer is armed only when
/// the inbox looks empty: nothing there, or the task's cooperative budget spent).
pub struct Puller {
    client: Client,
    js: jetstream::Context,
    inbox: async_nats::Subject,
    subscriber: Subscriber,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    next_subject: async_nats::Subject,
    batch: usize,
    expires: Duration,
    heartbeat: Duration,
    /// Messages that the requests sent may still deliver (some may be in the inbox).
    owed: usize,
    /// The size of the last request sent: what a refusal of it takes off `owed`.
    last_request: usize,
    /// A request being handed to the client: nothing is received until it is.
    requesting: Option<Request>,
    /// How long the inbox may be silent before the requests are taken to be gone.
    silence: Duration,
    /// Ends a wait on an empty inbox after `silence`. Armed when such a wait begins
    /// and disarmed by whatever arrives (a flag: the timer keeps its deadline, and may
    /// wake the task once for nothing), so a flowing inbox seldom touches it.
    silent: Pin<Box<Sleep>>,
    silent_armed: bool,
}

impl Puller {
    /// Subscribes to an inbox for `consumer`'s messages. `settings` are clamped to what
    /// the consumer allows (`max_batch`, `max_expires`), so no request is refused for
    /// them. `js` is the context the acks of [`Self::next`]'s messages go through.
    pub async fn new(
        js: jetstream::Context,
        consumer: &jetstream::consumer::Consumer<pull::Config>,
        settings: PullSettings,
    ) -> Result<Self, PullError> {
        let client = js.client();
        let info = consumer.cached_info();
        let mut batch = settings.batch.max(1);
        if let Ok(max) = usize::try_from(info.config.max_batch) {
            if max > 0 {
                batch = batch.min(max);
            }
        }
        let max_expires = info.config.max_expires;
        let mut expires = if settings.expires.is_zero() {
            DEFAULT_EXPIRES
        } else {
            settings.expires
        };
        if !max_expires.is_zero() {
            expires = expires.min(max_expires);
        }
        let inbox = async_nats::Subject::from(client.new_inbox());
        let subscriber = client
            .subscribe(inbox.clone())
            .await
            .map_err(PullError::Subscribe)?;
        let heartbeat = heartbeat_for(expires);
        let silence = (2 * heartbeat).max(MIN_SILENCE);
        Ok(Puller {
            next_subject: format!(
                "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
                info.stream_name, info.name
            )
            .into(),
            client,
            js,
            inbox,
            subscriber,
            batch,
            expires,
            heartbeat,
            owed: 0,
            last_request: 0,
            requesting: None,
            silence,
            silent: Box::pin(tokio::time::sleep(silence)),
            silent_armed: false,
        })
    }

    /// The next message, pulling more when at most half a batch is owed, in
    /// async-nats's `jetstream::Message` (which acks through a copy of the context).
    /// Cancel-safe: dropping the future loses no message and miscounts nothing.
    pub async fn next(&mut self) -> Result<jetstream::Message, PullError> {
        let message = self.next_message().await?;
        Ok(jetstream::Message {
            message,
            context: self.js.clone(),
        })
    }

    /// [`Self::next`] without the context around it: the worker acks its messages on
    /// one connection it holds ([`Delivered`](super::consumer::Delivered)), and a copy
    /// of the context per message cost it about thirty atomic operations and an
    /// allocation (README, Performance). Cancel-safe too.
    pub async fn next_message(&mut self) -> Result<async_nats::Message, PullError> {
        std::future::poll_fn(|cx| self.poll_next_message(cx)).await
    }

    /// Polls for [`Self::next_message`]: pulls more when at most half a batch is owed
    /// (nothing is received until that request is with the client), then takes what
    /// the inbox holds. A caller may stop polling at any point: the request and the
    /// wait stay here for the next poll.
    pub fn poll_next_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<async_nats::Message, PullError>> {
        loop {
            if self.requesting.is_none() && self.owed <= self.batch / 2 {
                let n = self.batch - self.owed;
                self.requesting = Some((n, self.request(n)));
            }
            if let Some((n, send)) = &mut self.requesting {
                let n = *n;
                let sent = ready!(send.as_mut().poll(cx));
                self.requesting = None;
                self.sent(n, sent)?;
            }
            if let Some(msg) = ready!(self.poll_receive(cx))? {
                return Poll::Ready(Ok(msg));
            }
        }
    }

    /// How long a request waits on the server (the settings' expiry, clamped).
    pub fn expires(&self) -> Duration {
        self.expires
    }

    /// Ends pulling and returns the messages pulled but not taken: unsubscribes, then
    /// collects what the server sent before it heard of that, waiting at most `wait`
    /// for each. The requests still waiting on the server outlive the subscription until
    /// they expire, and nats-server 2.9 may still hand them a message meanwhile (to no
    /// one: it comes back after `ack_wait`). A caller handing messages back should nak
    /// them with a delay of [`Self::expires`], after which those requests are gone.
    pub async fn stop(mut self, wait: Duration) -> Vec<async_nats::Message> {
        let mut pulled = Vec::new();
        if self.subscriber.drain().await.is_err() {
            return pulled;
        }
        while let Ok(Some(msg)) = tokio::time::timeout(wait, self.subscriber.next()).await {
            if msg.status.is_none_or(|s| s.as_u16() == 200) {
                pulled.push(msg);
            }
        }
        pulled
    }

    /// The send of a request for `n` more messages, kept by the caller until it is
    /// done: boxed (an allocation per request, once per half batch), so that its room
    /// is not part of the puller.
    fn request(&self, n: usize) -> RequestSend {
        let body = format!(
            r#"{{"batch":{n},"expires":{},"idle_heartbeat":{}}}"#,
            self.expires.as_nanos(),
            self.heartbeat.as_nanos()
        );
        let client = self.client.clone();
        let subject = self.next_subject.clone();
        let inbox = self.inbox.clone();
        Box::pin(async move {
            client
                .publish_with_reply(subject, inbox, Bytes::from(body))
                .await
        })
    }

    /// Counts a request for `n` once the client has it: no message can be taken in
    /// between (this puller takes them, after the send is done), and a request that
    /// was never handed over (one dropped with the puller) is not counted.
    fn sent(
        &mut self,
        n: usize,
        sent: Result<(), async_nats::PublishError>,
    ) -> Result<(), PullError> {
        match sent {
            Ok(()) => {
                self.owed += n;
                self.last_request = n;
                Ok(())
            }
            Err(e) if e.kind() == PublishErrorKind::Send => Err(PullError::Closed(Some(e))),
            Err(e) => Err(PullError::Request(e)),
        }
    }

    /// What comes next on the inbox: Some(message), or None after a status was
    /// accounted for (or silence taken as the requests being gone).
    fn poll_receive(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<async_nats::Message>, PullError>> {
        let msg = match self.subscriber.poll_next_unpin(cx) {
            Poll::Ready(Some(msg)) => {
                self.silent_armed = false;
                msg
            }
            Poll::Ready(None) => return Poll::Ready(Err(PullError::Closed(None))),
            Poll::Pending => {
                if !self.silent_armed {
                    let deadline = tokio::time::Instant::now() + self.silence;
                    self.silent.as_mut().reset(deadline);
                    self.silent_armed = true;
                }
                ready!(self.silent.as_mut().poll(cx));
                self.silent_armed = false;
                // While disconnected the requests may yet be served after the
                // reconnection; only a connected silence means they are gone.
                if self.client.connection_state() == State::Connected && self.owed > 0 {
                    tracing::debug!(
                        owed = self.owed,
                        "no message or heartbeat from the pull requests; sending afresh"
                    );
                    self.owed = 0;
                }
                return Poll::Ready(Ok(None));
            }
        };
        Poll::Ready(self.account(msg))
    }

    /// What a message on the inbox means: Some(message) (one less owed), or None for
    /// a status accounted for, or the error a status tells.
    fn account(
        &mut self,
        msg: async_nats::Message,
    ) -> Result<Option<async_nats::Message>, PullError> {
        // By number: async-nats names no constant for 400 Bad Request.
        let status = msg.status.map_or(200, |s| s.as_u16());
        match status {
            200 => {
                self.owed = self.owed.saturating_sub(1);
                Ok(Some(msg))
            }
            100 => Ok(None),
            503 => {
                // The request reached no one: nothing of it is owed.
                self.owed = 0;
                Err(PullError::NoResponders)
            }
            // 408 expired, 409 ended by the server, 404 nothing to deliver, 400 refused.
            400 | 404 | 408 | 409 => {
                let description = msg.description.as_deref().unwrap_or_default();
                if description.eq_ignore_ascii_case("consumer deleted") {
                    return Err(PullError::ConsumerDeleted);
                }
                if description.eq_ignore_ascii_case("consumer is push based")
                    || description.starts_with("Exceeded MaxRequest")
                    || status == 400
                {
                    return Err(PullError::Refused(description.to_owned()));
                }
                if description.starts_with("Exceeded MaxWaiting") {
                    // The refused request owes nothing. Taken to be the last one sent:
                    // one goes out only when half a batch or less is owed, so there is
                    // rarely another; if there was, the count is off until requests
                    // expire (too low: a little more prefetched; too high: a wait).
                    self.owed = self.owed.saturating_sub(self.last_request);
                    return Err(PullError::TooManyWaiting);
                }
                // A request that ended: what it will no longer deliver (all of it when
                // the server does not say).
                let undelivered = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Pending-Messages"))
                    .and_then(|v| v.as_str().parse().ok())
                    .unwrap_or(self.batch);
                self.owed = self.owed.saturating_sub(undelivered);
                Ok(None)
            }
            _ => {
                tracing::debug!(%status, description = ?msg.description, "unexpected status on the pull inbox");
                Ok(None)
            }
        }
    }
}

/// The expiry of a request when none is given.
const DEFAULT_EXPIRES: Duration = Duration::from_secs(30);

/// Silence shorter than this is never taken for lost requests (a consumer whose
/// `max_expires` is tiny asks for tiny heartbeats).
const MIN_SILENCE: Duration = Duration::from_secs(1);

/// The idle heartbeat asked for: a quarter of the expiry (lost requests are noticed after
/// two), at least 100 ms and at most 5 s, and never more than half the expiry, which the
/// server would refuse.
fn heartbeat_for(expires: Duration) -> Duration {
    (expires / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(5))
        .min(expires / 2)
}
