//! Publishing to JetStream and waiting for the PubAck, with failures sorted into what the
//! pipeline decides on: no stream captures the subject (dead-letter the event), the
//! message can never be accepted (dead-letter), or try again later (nak the input).
//!
//! "No responders" alone does not prove a subject is unroutable: JetStream answers that
//! way while it restarts or elects a leader too. So a subject is declared stream-less
//! only when the server, asked which stream captures it, says none; anything less
//! certain is transient, and the message is retried rather than dead-lettered.
//!
//! A publish is a request on the core connection whose answer is read here, rather
//! than async-nats's JetStream `publish`: that one reads every PubAck through serde's
//! buffered `Content` into an untagged enum (building, and dropping, an error for the
//! variant that does not fit), about 3,300 of the worker's 47,000 instructions per
//! event, and takes a semaphore permit and a second timeout per publish besides. Here
//! a PubAck is recognised by its first bytes, and only an answer that may be an error
//! goes through serde (see [`read_pub_ack`]).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use async_nats::jetstream::{self, ErrorCode};
use async_nats::{
    Client, HeaderMap, Message, Request, RequestError, RequestErrorKind, StatusCode, Subject,
};
use bytes::Bytes;
use serde::Deserialize;
use tokio::time::error::Elapsed;

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
}

/// The answer to a publish, awaited with [`Publisher::confirm`]: the client's request
/// under one timeout, boxed as it is (an `async` block around it would hold the request
/// twice over, and be copied whole into its box).
type Answer<'a> =
    Pin<Box<dyn Future<Output = Result<Result<Message, RequestError>, Elapsed>> + Send + 'a>>;

/// A publish that has been sent and awaits its PubAck.
pub struct PendingAck<'a>(Answer<'a>);

impl Publisher {
    /// Publishes on `client`, waiting at most `timeout` for each PubAck.
    pub fn new(client: Client, timeout: Duration) -> Self {
        Self {
            // The stream lookup is bounded like a publish.
            js: jetstream::ContextBuilder::new()
                .timeout(timeout)
                .build(client.clone()),
            client,
            timeout,
        }
    }

    /// Sends one message; await its PubAck with [`Self::confirm`]. The subject is
    /// copied once, for the client (a clone of a `Subject` made from a string would
    /// allocate the shared form of its bytes, and free it again, for every event).
    pub async fn send(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<PendingAck<'_>, PublishFailure> {
        // One timer for queueing and answer alike (the request's own would start only
        // once it is queued, and be a second timer to register).
        let request = Request::new()
            .headers(headers)
            .payload(payload)
            .timeout(None);
        let request = self.client.send_request(Subject::from(subject), request);
        let mut answer: Answer<'_> = Box::pin(tokio::time::timeout(self.timeout, request));
        // Polled once now, so that the request is checked and queued for the
        // connection before the caller sends the next: the outputs of a message are
        // in flight together, their PubAcks awaited afterwards. Unconstrained, since
        // with the task's cooperative budget spent (a message of many records) a plain
        // poll would return without queueing. A request the client cannot queue at
        // once (its channel full while it reconnects) goes on when it is awaited, and
        // its time counts from here.
        match futures::poll!(tokio::task::unconstrained(answer.as_mut())) {
            Poll::Pending => Ok(PendingAck(answer)),
            // Refused by the client before it was sent: too large, an invalid subject.
            Poll::Ready(Ok(Err(e))) => Err(self.failure(subject, AckError::Request(e)).await),
            // Answered already (hardly ever), or out of time at once (a zero timeout):
            // read like any other answer.
            Poll::Ready(done) => Ok(PendingAck(Box::pin(std::future::ready(done)))),
        }
    }

    /// Waits for the PubAck of a sent message.
    pub async fn confirm(
        &self,
        subject: &str,
        pending: PendingAck<'_>,
    ) -> Result<(), PublishFailure> {
        let result = match pending.0.await {
            Ok(Ok(answer)) => read_pub_ack(&answer),
            Ok(Err(e)) => Err(AckError::Request(e)),
            Err(_elapsed) => Err(AckError::Request(RequestError::new(
                RequestErrorKind::TimedOut,
            ))),
        };
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
