//! Messages the server gave up on without the worker seeing their last delivery.
//!
//! The pipeline dead-letters a message that fails on its last delivery, so normally no
//! message runs out of deliveries unseen. Two kinds can: one whose every delivery is
//! lost on the way in (a header block the NATS client cannot read, such as a line with
//! no colon, breaks the connection it arrives on, so the message never reaches the
//! pipeline and comes back after `ack_wait`), and one whose last delivery was taken by a
//! replica that then died. Left alone, the server would stop delivering either, and the
//! event would be gone without a trace.
//!
//! When the server stops delivering a message it publishes a `MAX_DELIVERIES` advisory
//! naming the stream sequence. Every replica subscribes in one queue group, so one of
//! them takes each advisory, reads the message from the stream (`STREAM.MSG.GET`: its
//! headers come base64-encoded in JSON, so a header block the client cannot read on the
//! wire is read here, line by line, the unreadable lines dropped) and has the pipeline
//! handle that copy as it would a delivery: routed, or dead-lettered with its reason,
//! under the same `Nats-Msg-Id`s, so whatever a delivery already stored is not doubled.
//! The messages delivered beside one whose header breaks the connection are lost with
//! it, delivery after delivery; they come back this way too.
//!
//! Advisories are not stored: one published while no replica is connected is missed,
//! and the message stays in the input stream, where its sequence finds it.

use std::str::FromStr;

use async_nats::header::HeaderName;
use async_nats::jetstream::{self, response::Response, ErrorCode};
use async_nats::{Client, HeaderMap, Subscriber};
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;

/// The advisory's subject for `consumer` on `stream`.
pub fn advisory_subject(stream: &str, consumer: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}")
}

/// Subscribes to `consumer`'s advisories in a queue group of its replicas (named after
/// the consumer), so that each advisory is taken by one of them.
pub async fn subscribe(
    client: &Client,
    stream: &str,
    consumer: &str,
) -> Result<Subscriber, async_nats::SubscribeError> {
    client
        .queue_subscribe(advisory_subject(stream, consumer), consumer.to_string())
        .await
}

/// What a `MAX_DELIVERIES` advisory says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Advisory {
    pub stream: String,
    pub consumer: String,
    pub stream_seq: u64,
    pub deliveries: u64,
}

impl Advisory {
    /// The advisory in `payload`, or why it is not one.
    pub fn parse(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

/// A message read back from the input stream, as its producer published it.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub subject: String,
    /// The header lines that could be read; see [`read_header_block`].
    pub headers: HeaderMap,
    /// Header lines that could not be read (and are not carried).
    pub unreadable_headers: usize,
    pub payload: Bytes,
}

/// Why a message could not be read back from the stream.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The stream no longer holds the sequence (removed by its limits, or deleted).
    #[error("the stream no longer holds sequence {0}")]
    Gone(u64),
    /// JetStream did not answer: may work later.
    #[error("reading sequence {seq} from the stream")]
    Request {
        seq: u64,
        #[source]
        source: async_nats::jetstream::context::RequestError,
    },
    /// JetStream answered with an error other than "no message" (a stream gone for
    /// good, or one that may pass: no leader for a moment).
    #[error("reading sequence {seq} from the stream: {error}")]
    Api {
        seq: u64,
        error: async_nats::jetstream::Error,
    },
    /// The answer's payload or headers were not base64.
    #[error("decoding sequence {seq} as JetStream sent it")]
    Decode {
        seq: u64,
        #[source]
        source: base64::DecodeError,
    },
}

impl FetchError {
    /// Whether trying again may help: not when the message or its stream is gone, or
    /// the answer cannot be decoded.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Request { .. } => true,
            FetchError::Api { error, .. } => error.error_code() != ErrorCode::STREAM_NOT_FOUND,
            FetchError::Gone(_) | FetchError::Decode { .. } => false,
        }
    }
}

#[derive(Deserialize)]
struct MsgGet {
    message: RawStored,
}

#[derive(Deserialize)]
struct RawStored {
    subject: String,
    #[serde(default)]
    data: String,
    #[serde(default)]
    hdrs: Option<String>,
}

/// Reads sequence `seq` of `stream` through the JetStream API (not a direct get, which
/// would deliver the headers on the wire again).
pub async fn fetch(
    js: &jetstream::Context,
    stream: &str,
    seq: u64,
) -> Result<StoredMessage, FetchError> {
    let answer: Response<MsgGet> = js
        .request(
            format!("STREAM.MSG.GET.{stream}"),
            &serde_json::json!({ "seq": seq }),
        )
        .await
        .map_err(|source| FetchError::Request { seq, source })?;
    let raw = match answer {
        Response::Ok(got) => got.message,
        Response::Err { error } if error.error_code() == ErrorCode::NO_MESSAGE_FOUND => {
            return Err(FetchError::Gone(seq))
        }
        Response::Err { error } => return Err(FetchError::Api { seq, error }),
    };
    let decode = |text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|source| FetchError::Decode { seq, source })
    };
    let payload = Bytes::from(decode(&raw.data)?);
    let (headers, unreadable_headers) = match raw.hdrs.as_deref() {
        Some(h) if !h.is_empty() => read_header_block(&decode(h)?),
        _ => (HeaderMap::new(), 0),
    };
    Ok(StoredMessage {
        subject: raw.subject,
        headers,
        unreadable_headers,
        payload,
    })
}

/// The headers of a NATS header block (`NATS/1.0` line, then `Name: value` lines), and
/// how many lines could not be read: not UTF-8, no colon, or a name NATS refuses. Read
/// as async-nats reads a delivered message's, so a copy carries what a delivery would
/// have: a line starting with whitespace continues the value before it (appended as it
/// is), values are trimmed, and a carriage return left inside a value becomes a space.
pub fn read_header_block(block: &[u8]) -> (HeaderMap, usize) {
    let mut headers = HeaderMap::new();
    if block.is_empty() {
        return (headers, 0);
    }
    let mut unreadable = 0;
    // `str::lines` on bytes: split at LF, a CR before it dropped.
    let mut lines = block
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .peekable();
    match lines.next() {
        Some(first) if first.starts_with(b"NATS/1.0") => {}
        // Not a header block at all: every line is unreadable.
        _ => return (headers, 1 + lines.filter(|l| !l.is_empty()).count()),
    }
    let continues =
        |l: &&[u8]| std::str::from_utf8(l).is_ok_and(|l| l.starts_with(char::is_whitespace));
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let header = std::str::from_utf8(line).ok().and_then(|line| {
            let (name, value) = line.split_once(':')?;
            Some((
                HeaderName::from_str(name).ok()?,
                value.trim_start().to_owned(),
            ))
        });
        // Its continuation lines belong to it, readable or not.
        let mut more = Vec::new();
        while let Some(next) = lines.next_if(continues) {
            more.push(next);
        }
        match header {
            Some((name, mut value)) => {
                for next in more {
                    value.push_str(std::str::from_utf8(next).expect("checked by `continues`"));
                }
                value.truncate(value.trim_end().len());
                headers.append(name, value);
            }
            None => unreadable += 1,
        }
    }
    (headers, unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advisory_names_the_sequence_and_the_deliveries() {
        let text = br#"{"type":"io.nats.jetstream.advisory.v1.max_deliver","id":"x","timestamp":"2026-12-04T16:00:00Z","stream":"BLOB_EVENTS","consumer":"blob-router","stream_seq":42,"deliveries":20}"#;
        assert_eq!(
            Advisory::parse(text).unwrap(),
            Advisory {
                stream: "BLOB_EVENTS".into(),
                consumer: "blob-router".into(),
                stream_seq: 42,
                deliveries: 20,
            }
        );
        assert!(Advisory::parse(b"{}").is_err());
        assert_eq!(
            advisory_subject("S", "c"),
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.S.c"
        );
    }

    #[test]
    fn readable_lines_are_kept_and_the_others_counted() {
        let block = b"NATS/1.0\r\neventType: OBJECT_FINALIZE\r\nNoColonHere\r\nBad Name: x\r\nX-Bin: \xff\xfe\r\nX-Note: a\rb\r\nX-Long: one\r\n  two\r\n\r\n";
        let (h, unreadable) = read_header_block(block);
        assert_eq!(unreadable, 3, "no colon, a space in the name, not UTF-8");
        assert_eq!(h.get("eventType").unwrap().as_str(), "OBJECT_FINALIZE");
        assert_eq!(h.get("X-Note").unwrap().as_str(), "a b");
        // Appended as it is, as async-nats does.
        assert_eq!(h.get("X-Long").unwrap().as_str(), "one  two");
        assert_eq!(h.iter().count(), 3);
    }

    #[test]
    fn repeated_names_keep_every_value() {
        let (h, unreadable) = read_header_block(b"NATS/1.0\r\nA: 1\r\nA: 2\r\n\r\n");
        assert_eq!(unreadable, 0);
        let values: Vec<&str> = h.get_all("A").map(|v| v.as_str()).collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn a_block_without_the_version_line_is_all_unreadable() {
        let (h, unreadable) = read_header_block(b"A: 1\r\nB: 2\r\n\r\n");
        assert!(h.is_empty());
        assert_eq!(unreadable, 2);
        assert_eq!(read_header_block(b"").1, 0);
        // A continuation of an unreadable line is not taken for a header of its own.
        let (h, unreadable) = read_header_block(b"NATS/1.0\r\nNoColon\r\n  B: 2\r\n\r\n");
        assert!(h.is_empty());
        assert_eq!(unreadable, 1);
    }
}
