//! What became of one event: the dead-letter reasons, and how each turns into a subject,
//! a header value and a metric label (one place for each, so they never disagree).

use crate::event::EventError;

/// Why an event was dead-lettered. The string form is the subject suffix, the
/// `Blob-Router-Reason` header and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not JSON, or JSON of no known event shape, or a known shape with bad fields.
    MalformedEvent,
    /// A valid event that is not a blob-created one (deleted, test event, ...).
    UnsupportedEventType,
    /// No enabled config matched, even after a forced read of the container.
    NoMatchingConfig,
    /// The matched config's subject is captured by no JetStream stream.
    NoStreamForSubject,
    /// JetStream refused the routed message for good (e.g. larger than max payload).
    PublishRejected,
}

impl Reason {
    /// Every reason, for metric registration and exhaustive tests.
    pub const ALL: [Reason; 5] = [
        Reason::MalformedEvent,
        Reason::UnsupportedEventType,
        Reason::NoMatchingConfig,
        Reason::NoStreamForSubject,
        Reason::PublishRejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedEvent => "malformed_event",
            Reason::UnsupportedEventType => "unsupported_event_type",
            Reason::NoMatchingConfig => "no_matching_config",
            Reason::NoStreamForSubject => "no_stream_for_subject",
            Reason::PublishRejected => "publish_rejected",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The dead-letter subject for this reason under `prefix` (default `blob.dlq`).
    pub fn subject(self, prefix: &str) -> String {
        format!("{prefix}.{}", self.as_str())
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&EventError> for Reason {
    fn from(e: &EventError) -> Self {
        match e {
            EventError::Malformed(_) => Reason::MalformedEvent,
            EventError::Unsupported(_) => Reason::UnsupportedEventType,
        }
    }
}

/// Header names on dead letters; `replay` needs nothing else.
pub mod headers {
    pub const REASON: &str = "Blob-Router-Reason";
    pub const DETAIL: &str = "Blob-Router-Detail";
    pub const ORIGINAL_SUBJECT: &str = "Blob-Router-Original-Subject";
    pub const RECEIVED_AT: &str = "Blob-Router-Received-At";
    pub const EVENT_ID: &str = "Blob-Router-Event-Id";
    pub const SOURCE_ID: &str = "Blob-Router-Source-Id";
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// On a dead letter whose body had to be cut to fit: the original length.
    pub const TRUNCATED: &str = "Blob-Router-Truncated";
    /// Input header carrying the event type of GCS Pub/Sub notifications.
    pub const EVENT_TYPE: &str = "eventType";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_distinct_subjects_and_indexes() {
        let subjects: std::collections::HashSet<_> =
            Reason::ALL.iter().map(|r| r.subject("blob.dlq")).collect();
        assert_eq!(subjects.len(), Reason::ALL.len());
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        assert_eq!(
            Reason::NoMatchingConfig.subject("blob.dlq"),
            "blob.dlq.no_matching_config"
        );
    }

    #[test]
    fn event_errors_map_to_reasons() {
        assert_eq!(
            Reason::from(&EventError::Malformed("x".into())),
            Reason::MalformedEvent
        );
        assert_eq!(
            Reason::from(&EventError::Unsupported("x".into())),
            Reason::UnsupportedEventType
        );
    }
}
