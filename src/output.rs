//! The wire contract of everything the worker publishes, in one place: the routed
//! envelope and its headers, the dead-letter reasons (each one subject suffix, header
//! value and metric label), the dead-letter headers, how every `Nats-Msg-Id` is derived,
//! and reading a dead letter back (what `replay` needs).
//!
//! De-duplication keys are stable across redeliveries of one input, so a message redone
//! after a crash or a failed PubAck is stored once: a routed event is
//! `<event id>:<source id>`, a dead letter `dlq:<input stream>:<input seq>:<body hash>:<record>`
//! (`message` in place of the record for a dead letter of the whole message).

use std::borrow::Cow;
use std::ops::Range;
use std::str::FromStr;
use std::time::{Instant, SystemTime};

use async_nats::header::HeaderName;
use async_nats::HeaderMap;
use bytes::Bytes;
use serde::Serialize;

use crate::config::SourceConfig;
use crate::event::{needs_escape, BlobEvent, EventError, ParsedRecord, RawJson};

/// Header names, on routed messages, dead letters and (`eventType`) inputs.
pub mod headers {
    pub const REASON: &str = "Blob-Router-Reason";
    pub const DETAIL: &str = "Blob-Router-Detail";
    pub const ORIGINAL_SUBJECT: &str = "Blob-Router-Original-Subject";
    pub const RECEIVED_AT: &str = "Blob-Router-Received-At";
    pub const EVENT_ID: &str = "Blob-Router-Event-Id";
    pub const SOURCE_ID: &str = "Blob-Router-Source-Id";
    /// On a dead letter whose body had to be cut to fit: the original length.
    pub const TRUNCATED: &str = "Blob-Router-Truncated";
    /// Every header the worker adds starts with this.
    pub const OWN_PREFIX: &str = "Blob-Router-";
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// Headers JetStream acts on start with this.
    pub const NATS_PREFIX: &str = "Nats-";
    /// Input header carrying the event type of GCS Pub/Sub notifications.
    pub const EVENT_TYPE: &str = "eventType";
}

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
    /// The message failed on every delivery the consumer allows (`--max-deliver`): its
    /// outputs could not be stored (a full stream, a publish timeout, the source away).
    MaxDeliveriesExceeded,
    /// The message is larger than `--max-event-bytes`; it was not parsed.
    OversizedEvent,
}

impl Reason {
    /// Every reason, for metric registration and exhaustive tests.
    pub const ALL: [Reason; 7] = [
        Reason::MalformedEvent,
        Reason::UnsupportedEventType,
        Reason::NoMatchingConfig,
        Reason::NoStreamForSubject,
        Reason::PublishRejected,
        Reason::MaxDeliveriesExceeded,
        Reason::OversizedEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedEvent => "malformed_event",
            Reason::UnsupportedEventType => "unsupported_event_type",
            Reason::NoMatchingConfig => "no_matching_config",
            Reason::NoStreamForSubject => "no_stream_for_subject",
            Reason::PublishRejected => "publish_rejected",
            Reason::MaxDeliveriesExceeded => "max_deliveries_exceeded",
            Reason::OversizedEvent => "oversized_event",
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

/// A reason string that names no [`Reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dead-letter reason `{0}`")]
pub struct UnknownReason(pub String);

impl FromStr for Reason {
    type Err = UnknownReason;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownReason(s.to_owned()))
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

/// The routed message body: its fields in this order, `raw` last.
pub struct Envelope<'a> {
    pub source_id: &'a str,
    pub config_version: i64,
    /// The fields the config's pattern extracted.
    pub metadata: Metadata<'a>,
    pub event: &'a BlobEvent<'a>,
    /// The record's JSON exactly as the input held it.
    pub raw: &'a RawJson<'a>,
    /// No string of `event` needs escaping ([`ParsedRecord::plain`]): they are copied
    /// without a look. `false` is always correct.
    pub plain: bool,
}

/// An envelope's `metadata`, (name, value) in order.
#[derive(Clone, Copy)]
pub enum Metadata<'a> {
    /// Pairs as given.
    Pairs(&'a [(&'a str, &'a str)]),
    /// What `config`'s pattern found in the event's path
    /// ([`SourceConfig::match_fields`]): names from the config, values pieces of the
    /// path, which need no escaping when the event's strings do not
    /// ([`Envelope::plain`]). Nothing is collected for every routed event.
    Extracted {
        config: &'a SourceConfig,
        fields: &'a [(usize, Range<usize>)],
    },
}

impl<'a> Envelope<'a> {
    /// The envelope of `record` routed by `config`, with the fields its pattern
    /// extracted as (name, value) pairs.
    pub fn new(
        config: &'a SourceConfig,
        metadata: &'a [(&'a str, &'a str)],
        record: &'a ParsedRecord<'a>,
    ) -> Self {
        Envelope {
            source_id: &config.id,
            config_version: config.version,
            metadata: Metadata::Pairs(metadata),
            event: &record.event,
            raw: &record.raw,
            plain: record.plain,
        }
    }

    /// The envelope of `record` routed by `config`, with the fields its pattern found
    /// in the event's path ([`SourceConfig::match_fields`]): the same bytes as
    /// [`Self::new`] with them as pairs.
    pub fn routed(
        config: &'a SourceConfig,
        fields: &'a [(usize, Range<usize>)],
        record: &'a ParsedRecord<'a>,
    ) -> Self {
        Envelope {
            source_id: &config.id,
            config_version: config.version,
            metadata: Metadata::Extracted { config, fields },
            event: &record.event,
            raw: &record.raw,
            plain: record.plain,
        }
    }

    /// The body as published: `{"source_id":…,"config_version":…,"metadata":{…},
    /// "event":{…},"raw":<the record's JSON>}`, the bytes serde_json writes for these
    /// fields in this order (`event` as [`BlobEvent`] serializes), written directly:
    /// this runs for every routed event, and the keys need no escaping.
    pub fn to_bytes(&self) -> Bytes {
        let raw = self.raw.get();
        let e = self.event;
        // Sized once (an upper bound: the raw event, the normalized fields, which are
        // mostly its strings again, and room for the rest).
        let mut out = Vec::with_capacity(2 * raw.len() + 512);
        out.extend_from_slice(b"{\"source_id\":");
        json_str(&mut out, self.source_id);
        out.extend_from_slice(b",\"config_version\":");
        json_value(&mut out, &self.config_version);
        out.extend_from_slice(b",\"metadata\":{");
        let mut field = |i: usize, name: &str, value: &str, plain_value: bool| {
            if i > 0 {
                out.push(b',');
            }
            json_str(&mut out, name);
            out.push(b':');
            if plain_value {
                plain_str(&mut out, value);
            } else {
                json_str(&mut out, value);
            }
        };
        match self.metadata {
            Metadata::Pairs(pairs) => {
                for (i, (name, value)) in pairs.iter().enumerate() {
                    field(i, name, value, false);
                }
            }
            Metadata::Extracted { config, fields } => {
                let values = config.field_values(fields, &e.path);
                for (i, (name, value)) in values.enumerate() {
                    field(i, name, value, self.plain);
                }
            }
        }
        // The event's strings: copied as they are when the parse said they can be.
        let string = if self.plain { plain_str } else { json_str };
        let opt_string = |out: &mut Vec<u8>, s: Option<&str>| match s {
            Some(s) => string(out, s),
            None => out.extend_from_slice(b"null"),
        };
        out.extend_from_slice(b"},\"event\":{\"id\":");
        string(&mut out, &e.id);
        // The format's names are ours, and need no escaping.
        out.extend_from_slice(b",\"format\":\"");
        out.extend_from_slice(e.format.as_str().as_bytes());
        out.extend_from_slice(b"\",\"event_type\":");
        string(&mut out, &e.event_type);
        out.extend_from_slice(b",\"account\":");
        opt_string(&mut out, e.account.as_deref());
        out.extend_from_slice(b",\"container\":");
        string(&mut out, &e.container);
        out.extend_from_slice(b",\"path\":");
        string(&mut out, &e.path);
        out.extend_from_slice(b",\"size\":");
        json_value(&mut out, &e.size);
        out.extend_from_slice(b",\"etag\":");
        opt_string(&mut out, e.etag.as_deref());
        out.extend_from_slice(b",\"content_type\":");
        opt_string(&mut out, e.content_type.as_deref());
        out.extend_from_slice(b",\"event_time\":");
        opt_string(&mut out, e.event_time.as_deref());
        // `raw` is valid JSON already (checked by the parse that read it): as it is.
        out.extend_from_slice(b"},\"raw\":");
        out.extend_from_slice(raw.as_bytes());
        out.push(b'}');
        Bytes::from(out)
    }
}

/// A JSON string: copied between quotes when nothing in it needs escaping (the
/// usual case), else escaped by serde_json.
fn json_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        json_value(out, s);
    } else {
        plain_str(out, s);
    }
}

/// A JSON string known to need no escaping: copied between quotes.
fn plain_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Any value as serde_json writes it.
fn json_value<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(out, value).expect("writing to a Vec never fails");
}

/// Headers of a routed message: `Nats-Msg-Id` `<event id>:<source id>` (one event
/// routed by one config is stored once, however often it is redone), the source id and
/// the event id.
pub fn routed_headers(event: &BlobEvent<'_>, config: &SourceConfig) -> HeaderMap {
    // Names as static constants (no check, no allocation) and values moved in: this
    // runs for every routed event.
    const MSG_ID: HeaderName = HeaderName::from_static(headers::MSG_ID);
    const SOURCE_ID: HeaderName = HeaderName::from_static(headers::SOURCE_ID);
    const EVENT_ID: HeaderName = HeaderName::from_static(headers::EVENT_ID);
    let mut h = HeaderMap::new();
    h.insert(MSG_ID, routed_msg_id(&event.id, &config.id));
    h.insert(SOURCE_ID, config.id.as_str());
    h.insert(EVENT_ID, header_safe(&event.id).into_owned());
    h
}

/// `Nats-Msg-Id` of a routed message.
pub fn routed_msg_id(event_id: &str, source_id: &str) -> String {
    // Event ids come from producers: never put one in a header unchecked.
    let event_id = dedup_id(event_id);
    let mut id = String::with_capacity(event_id.len() + 1 + source_id.len());
    id.push_str(&event_id);
    id.push(':');
    id.push_str(source_id);
    id
}

/// Facts about the input message that every dead letter of it refers to.
#[derive(Debug, Clone, Copy)]
pub struct InputMessage<'a> {
    pub subject: &'a str,
    pub payload: &'a Bytes,
    /// The input's own headers (e.g. GCS's `eventType`): a dead letter carries them, so
    /// a replay can put the event back exactly as it came.
    pub headers: Option<&'a HeaderMap>,
    /// Input stream and sequence: together with a hash of the payload they name the
    /// message for de-duplication of its dead letters.
    pub stream: &'a str,
    pub stream_seq: u64,
    pub received_at: Received,
}

/// When an input was received. A delivery keeps the instant its handling began, which
/// the worker reads anyway (for its latency), and it becomes a wall-clock time only
/// when a dead letter says it: a clock read per event fewer (each about 30 ns here,
/// README, Performance) for the routed ones, which never need it.
#[derive(Debug, Clone, Copy)]
pub enum Received {
    /// At this time.
    At(SystemTime),
    /// At this instant of the monotonic clock.
    Since(Instant),
}

impl Received {
    /// The wall-clock time it stands for. For `Since`, worked back from the clock now:
    /// two dead letters of one message get the same time to well under the millisecond
    /// their header shows, unless the wall clock is stepped in between.
    pub fn time(self) -> SystemTime {
        match self {
            Received::At(time) => time,
            Received::Since(instant) => {
                let now = SystemTime::now();
                now.checked_sub(instant.elapsed()).unwrap_or(now)
            }
        }
    }
}

/// What of an input a dead letter stands for: one record, or the whole message (an
/// oversized one, or one given up after its last delivery). It is the last field of the
/// dead letter's `Nats-Msg-Id`, so the whole-message dead letter never collides with a
/// record's, and `replay` (which drops that field) still puts the input back once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Record(usize),
    Message,
}

impl From<usize> for Part {
    fn from(idx: usize) -> Self {
        Part::Record(idx)
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::Record(idx) => write!(f, "{idx}"),
            Part::Message => f.write_str("message"),
        }
    }
}

/// `Nats-Msg-Id` of the dead letter of `part` (a record index, or the whole message) of
/// `input`: stable across redeliveries; distinct for a recreated input stream (sequences
/// restart) or another deployment sharing the dead-letter stream; and a replayed event
/// that fails again is a new input, so it gets a new dead letter.
pub fn dead_letter_msg_id(input: &InputMessage<'_>, part: impl Into<Part>) -> String {
    format!(
        "dlq:{}:{}:{:016x}:{}",
        input.stream,
        input.stream_seq,
        xxhash_rust::xxh3::xxh3_64(input.payload),
        part.into()
    )
}

/// Headers of a dead letter: everything `replay` needs to put it back. The input's own
/// headers come along (GCS's `eventType`, say), except those the worker sets itself and
/// the `Nats-*` ones JetStream acts on ([`is_carried_header`]): a producer's
/// `Nats-Expected-Stream` must not make every dead-letter publish fail.
pub fn dead_letter_headers(
    input: &InputMessage<'_>,
    part: impl Into<Part>,
    reason: Reason,
    detail: &str,
    event_id: Option<&str>,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, values) in input.headers.into_iter().flat_map(|h| h.iter()) {
        let text: &str = name.as_ref();
        if is_carried_header(text) {
            for v in values {
                h.append(name.clone(), v.clone());
            }
        }
    }
    h.insert(headers::MSG_ID, dead_letter_msg_id(input, part).as_str());
    h.insert(headers::REASON, reason.as_str());
    h.insert(headers::DETAIL, &*header_safe(detail));
    h.insert(headers::ORIGINAL_SUBJECT, input.subject);
    h.insert(
        headers::RECEIVED_AT,
        humantime::format_rfc3339_millis(input.received_at.time())
            .to_string()
            .as_str(),
    );
    if let Some(id) = event_id {
        h.insert(headers::EVENT_ID, &*header_safe(id));
    }
    h
}

/// Marks dead-letter headers as belonging to a body cut from `original_len` bytes.
pub fn mark_truncated(h: &mut HeaderMap, original_len: usize) {
    h.insert(headers::TRUNCATED, original_len.to_string().as_str());
}

/// A dead letter read back from the dead-letter stream.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub reason: Reason,
    pub detail: String,
    /// Where the input was published; `replay` puts it back there by default.
    pub original_subject: String,
    pub received_at: SystemTime,
    pub event_id: Option<String>,
    /// `Some(original length)` when the body was cut to fit: it cannot be replayed whole.
    pub truncated: Option<usize>,
    /// The input's bytes, unchanged (unless truncated).
    pub payload: Bytes,
    /// The input's own headers, as carried ([`is_carried_header`]).
    pub other_headers: Vec<(String, String)>,
    /// The dead letter's `Nats-Msg-Id` (it names the input message and the record).
    pub msg_id: Option<String>,
}

/// Why a message of the dead-letter stream is not a dead letter this worker wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeadLetterError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error(transparent)]
    Reason(#[from] UnknownReason),
    #[error("header {header} is not valid: {value:?}")]
    Invalid { header: &'static str, value: String },
}

impl DeadLetter {
    /// Reads a dead letter from its headers and body.
    pub fn read(h: Option<&HeaderMap>, payload: Bytes) -> Result<DeadLetter, DeadLetterError> {
        let get = |name: &'static str| h.and_then(|h| h.get(name)).map(|v| v.as_str());
        let need = |name: &'static str| get(name).ok_or(DeadLetterError::Missing(name));
        let received = need(headers::RECEIVED_AT)?;
        let received_at =
            humantime::parse_rfc3339(received).map_err(|_| DeadLetterError::Invalid {
                header: headers::RECEIVED_AT,
                value: received.to_owned(),
            })?;
        let truncated = match get(headers::TRUNCATED) {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| DeadLetterError::Invalid {
                header: headers::TRUNCATED,
                value: v.to_owned(),
            })?),
        };
        let other_headers = h
            .into_iter()
            .flat_map(|h| h.iter())
            .filter(|(name, _)| {
                let name: &str = name.as_ref();
                is_carried_header(name)
            })
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(move |v| (name.to_string(), v.as_str().to_owned()))
            })
            .collect();
        Ok(DeadLetter {
            reason: need(headers::REASON)?.parse()?,
            detail: get(headers::DETAIL).unwrap_or_default().to_owned(),
            original_subject: need(headers::ORIGINAL_SUBJECT)?.to_owned(),
            received_at,
            event_id: get(headers::EVENT_ID).map(str::to_owned),
            truncated,
            payload,
            other_headers,
            msg_id: get(headers::MSG_ID).map(str::to_owned),
        })
    }

    /// The `Nats-Msg-Id` a replay republishes this dead letter with: the input message it
    /// came from (stream, sequence, body hash), not the record, so a message that
    /// dead-lettered several records goes back once, whichever replay run sends it and
    /// however often. A dead letter without a worker-made id falls back to its own
    /// position in the dead-letter stream.
    pub fn replay_msg_id(&self, dlq_stream: &str, seq: u64) -> String {
        match self
            .msg_id
            .as_deref()
            .filter(|id| id.starts_with("dlq:"))
            .and_then(|id| id.rsplit_once(':'))
        {
            Some((input, _record)) => format!("replay:{input}"),
            None => format!("replay:{dlq_stream}:{seq}"),
        }
    }
}

/// Whether an input header travels with its dead letter (and back with a replay): not
/// the worker's own `Blob-Router-*`, and no `Nats-*` header, which JetStream acts on
/// (`Nats-Msg-Id`, `Nats-Expected-*`, `Nats-TTL`, `Nats-Rollup`).
pub fn is_carried_header(name: &str) -> bool {
    let starts = |prefix: &str| {
        name.get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    !starts(headers::OWN_PREFIX) && !starts(headers::NATS_PREFIX)
}

/// Longest event id used as is in `Nats-Msg-Id`.
const MAX_ID: usize = 200;
/// Longest `Blob-Router-Detail` header value; details are for humans, not payloads.
pub const MAX_DETAIL: usize = 512;

/// The event id as a de-duplication key: itself when it is short and printable, else a
/// hash of it (mangling or truncating could make two events collide).
fn dedup_id(id: &str) -> Cow<'_, str> {
    if id.len() <= MAX_ID && !id.chars().any(char::is_control) {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(format!(
            "h-{:032x}",
            xxhash_rust::xxh3::xxh3_128(id.as_bytes())
        ))
    }
}

/// A header value cannot hold line breaks; keep it short.
fn header_safe(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_DETAIL && !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
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
    Cow::Owned(out)
}

#[cfg(test)]
mod tests;
