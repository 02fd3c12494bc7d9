//! Publishing to JetStream and waiting for the PubAck, with failures sorted into what the
//! pipeline decides on: no stream captures the subject (dead-letter the event), the
//! message can never be accepted (dead-letter), or try again later (nak the input).
//!
//! "No responders" alone does not prove a subject is unroutable: JetStream answers that
//! way while it restarts or elects a leader too. So a subject is declared stream-less
//! only when the server, asked which stream captures it, says none; anything less
//! certain is transient, and the message is retried rather than dead-lettered.

use std::error::Error as _;

use async_nats::jetstream::context::{GetStreamByNameError, PublishError, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;

/// Why a publish did not get its PubAck, sorted by what the pipeline does about it.
/// The client's error is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum PublishFailure {
    /// No stream captures the subject (the server said so when asked): dead-letter.
    #[error("no stream captures subject {0}")]
    NoStream(String),
    /// The message can never be accepted (too large, sealed stream): dead-letter.
    #[error("rejected by JetStream")]
    Rejected(#[source] PublishError),
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

#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
}

/// A publish that has been sent and awaits its PubAck.
pub type PendingAck = jetstream::context::PublishAckFuture;

impl Publisher {
    pub fn new(js: jetstream::Context) -> Self {
        Self { js }
    }

    /// Sends one message; await its PubAck with [`Self::confirm`]. The subject is
    /// copied once, for the client (a clone of a `Subject` made from a string would
    /// allocate the shared form of its bytes, and free it again, for every event).
    pub async fn send(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<PendingAck, PublishFailure> {
        match self
            .js
            .publish_with_headers(Subject::from(subject), headers, payload)
            .await
        {
            Ok(pending) => Ok(pending),
            // Boxed: the rare path's lookup future would otherwise make every
            // publish's future (and so every message's task) larger.
            Err(e) => Err(Box::pin(self.classify_failure(subject, e)).await),
        }
    }

    /// Waits for the PubAck of a sent message.
    pub async fn confirm(&self, subject: &str, pending: PendingAck) -> Result<(), PublishFailure> {
        match pending.await {
            Ok(_ack) => Ok(()),
            Err(e) => Err(Box::pin(self.classify_failure(subject, e)).await),
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

    /// Sorts a failed publish into what the pipeline does about it.
    async fn classify_failure(&self, subject: &str, e: PublishError) -> PublishFailure {
        let code = e
            .source()
            .and_then(|s| s.downcast_ref::<jetstream::Error>())
            .map(|je| je.error_code());
        match classify(e.kind(), code) {
            Sorted::MaybeNoStream => self.confirm_no_stream(subject, e).await,
            Sorted::Rejected => PublishFailure::Rejected(e),
            Sorted::Transient => PublishFailure::transient(format!("publishing to {subject}"), e),
        }
    }

    /// Asks the server which stream captures `subject`; only a definite "none" counts.
    async fn confirm_no_stream(&self, subject: &str, e: PublishError) -> PublishFailure {
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

/// A publish that failed as if no stream captured its subject, and a lookup of the
/// stream that failed too: both are shown.
#[derive(Debug, thiserror::Error)]
#[error("{publish}; the stream lookup failed")]
struct LookupFailed {
    publish: PublishError,
    #[source]
    lookup: GetStreamByNameError,
}

#[derive(Debug, PartialEq, Eq)]
enum Sorted {
    MaybeNoStream,
    Rejected,
    Transient,
}

/// Sorts a publish error by kind and, for API errors, by JetStream error code.
fn classify(kind: PublishErrorKind, code: Option<ErrorCode>) -> Sorted {
    match kind {
        PublishErrorKind::StreamNotFound => Sorted::MaybeNoStream,
        PublishErrorKind::MaxPayloadExceeded => Sorted::Rejected,
        PublishErrorKind::Other => match code {
            // Larger than the stream's max_msg_size, or the stream is sealed: retrying
            // cannot help. (A full stream with discard-new can, once it is drained.)
            Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) | Some(ErrorCode::STREAM_SEALED) => {
                Sorted::Rejected
            }
            _ => Sorted::Transient,
        },
        _ => Sorted::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_permanent_refusals_are_rejections() {
        assert_eq!(
            classify(PublishErrorKind::StreamNotFound, None),
            Sorted::MaybeNoStream
        );
        assert_eq!(
            classify(PublishErrorKind::MaxPayloadExceeded, None),
            Sorted::Rejected
        );
        assert_eq!(
            classify(
                PublishErrorKind::Other,
                Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM)
            ),
            Sorted::Rejected
        );
        assert_eq!(
            classify(PublishErrorKind::Other, Some(ErrorCode::STREAM_SEALED)),
            Sorted::Rejected
        );
        assert_eq!(
            classify(PublishErrorKind::Other, Some(ErrorCode(10077))),
            Sorted::Transient
        );
        assert_eq!(classify(PublishErrorKind::Other, None), Sorted::Transient);
        assert_eq!(
            classify(PublishErrorKind::TimedOut, None),
            Sorted::Transient
        );
        assert_eq!(
            classify(PublishErrorKind::BrokenPipe, None),
            Sorted::Transient
        );
    }
}
