//! Publishing to JetStream and waiting for the PubAck, with failures sorted into what the
//! pipeline decides on: no stream captures the subject (dead-letter the event), the
//! message can never be accepted (dead-letter), or try again later (nak the input).

use async_nats::jetstream::{self, context::PublishErrorKind};
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

    /// Sends one message; await the returned future for its PubAck with [`Self::confirm`].
    pub async fn send(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<PendingAck, PublishFailure> {
        let subj = subject.clone();
        self.js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| classify(&subj, e.kind(), &e.to_string()))
    }

    /// Waits for the PubAck of a sent message.
    pub async fn confirm(subject: &str, pending: PendingAck) -> Result<(), PublishFailure> {
        pending
            .await
            .map(|_ack| ())
            .map_err(|e| classify(subject, e.kind(), &e.to_string()))
    }

    /// Sends and confirms.
    pub async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), PublishFailure> {
        let subj = subject.clone();
        let pending = self.send(subject, headers, payload).await?;
        Self::confirm(&subj, pending).await
    }
}

fn classify(subject: &str, kind: PublishErrorKind, msg: &str) -> PublishFailure {
    match kind {
        PublishErrorKind::StreamNotFound => PublishFailure::NoStream(subject.to_string()),
        PublishErrorKind::MaxPayloadExceeded => PublishFailure::Rejected(msg.to_string()),
        _ => PublishFailure::Transient(msg.to_string()),
    }
}
