//! Publishing to JetStream and waiting for the PubAck, with failures sorted into what the
//! pipeline decides on: no stream captures the subject (dead-letter the event), the
//! message can never be accepted (dead-letter), or try again later (nak the input).
//!
//! "No responders" alone does not prove a subject is unroutable: JetStream answers that
//! way while it restarts or elects a leader too. So a subject is declared stream-less
//! only when the server, asked which stream captures it, says none; anything less
//! certain is transient, and the message is retried rather than dead-lettered.

use std::error::Error as _;

use async_nats::jetstream::{self, context::PublishErrorKind, ErrorCode};
use async_nats::HeaderMap;
use bytes::Bytes;

/// Why a publish did not get its PubAck.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishFailure {
    #[error("no stream captures subject {0}")]
    NoStream(String),
    #[error("rejected by JetStream: {0}")]
    Rejected(String),
    #[error("transient publish failure: {0}")]
    Transient(String),
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

    /// Sends one message; await its PubAck with [`Self::confirm`].
    pub async fn send(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<PendingAck, PublishFailure> {
        match self
            .js
            .publish_with_headers(subject.to_string(), headers, payload)
            .await
        {
            Ok(pending) => Ok(pending),
            Err(e) => Err(self.sort(subject, &e).await),
        }
    }

    /// Waits for the PubAck of a sent message.
    pub async fn confirm(&self, subject: &str, pending: PendingAck) -> Result<(), PublishFailure> {
        match pending.await {
            Ok(_ack) => Ok(()),
            Err(e) => Err(self.sort(subject, &e).await),
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

    async fn sort(&self, subject: &str, e: &jetstream::context::PublishError) -> PublishFailure {
        let code = e
            .source()
            .and_then(|s| s.downcast_ref::<jetstream::Error>())
            .map(|je| je.error_code());
        match classify(e.kind(), code) {
            Sorted::MaybeNoStream => self.confirm_no_stream(subject).await,
            Sorted::Rejected => PublishFailure::Rejected(e.to_string()),
            Sorted::Transient => PublishFailure::Transient(e.to_string()),
        }
    }

    /// Asks the server which stream captures `subject`; only a definite "none" counts.
    async fn confirm_no_stream(&self, subject: &str) -> PublishFailure {
        use jetstream::context::GetStreamByNameErrorKind as Kind;
        match self.js.stream_by_subject(subject).await {
            Err(e) if e.kind() == Kind::NotFound => PublishFailure::NoStream(subject.to_string()),
            Ok(stream) => PublishFailure::Transient(format!(
                "stream {stream} captures {subject} but did not answer"
            )),
            Err(e) => {
                PublishFailure::Transient(format!("looking up the stream for {subject}: {e}"))
            }
        }
    }
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
