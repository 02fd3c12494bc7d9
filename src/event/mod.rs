//! Blob-created event parsing and normalization.
//!
//! Storage providers announce new blobs in different notification schemas: Azure Event Grid
//! (its own schema or CloudEvents 1.0), AWS S3 and MinIO (the same `Records` shape), and Google
//! Cloud Storage (the object resource, with the event type in the Pub/Sub `eventType`
//! attribute). The router only needs "which blob was created where", so [`parse`] detects the
//! schema of each message (and of each element of a top-level array), validates it, and maps
//! every record to one [`BlobEvent`].
//!
//! Every failure is per record and classified as [`EventError::Malformed`] (the bytes are not an
//! event we can read) or [`EventError::Unsupported`] (a valid event, but not a blob-created one),
//! so the caller can dead-letter each record with a precise reason while the other records of
//! the same message still go through.
//!
//! This runs once per event on the hot path: nothing is deserialized into
//! `serde_json::Value`. An event object is read in one pass that takes the keys telling
//! the schemas apart as borrowed [`RawValue`] slices and the Azure schemas' fields as the
//! strings and `data` object they should be (by hand in `scan` for the common
//! event, by serde otherwise); where that fails, it is probed with
//! [`RawValue`] slices and read by its schema's own structs. Fields borrow from the
//! message bytes, and so do the [`BlobEvent`] and the record's raw JSON: only a string
//! with escapes, an S3 or MinIO object key (URL-decoded) and an id we derive are copies.
//! Nothing here recurses on its own: nesting is bounded by serde_json (its recursion
//! limit, and its non-recursive skipping of ignored values).

mod azure;
mod cloudevents;
mod eventgrid;
mod gcs;
mod s3;
mod scan;

pub(crate) use scan::needs_escape;
#[cfg(test)]
mod testing;

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The notification schema a [`BlobEvent`] was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventFormat {
    EventGrid,
    CloudEvents,
    S3,
    Minio,
    Gcs,
}

impl EventFormat {
    /// Stable lowercase name, the same as the serialized form.
    pub fn as_str(self) -> &'static str {
        match self {
            EventFormat::EventGrid => "event_grid",
            EventFormat::CloudEvents => "cloud_events",
            EventFormat::S3 => "s3",
            EventFormat::Minio => "minio",
            EventFormat::Gcs => "gcs",
        }
    }
}

/// The normalized blob-created event. Its strings borrow from the message they were
/// read from wherever they are its text as it is (no escapes in them, not URL-decoded,
/// not made by us): every routed event would otherwise copy each of them once more.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlobEvent<'a> {
    /// The event's own id, or one derived from the record's raw JSON (see [`derive_id`]).
    pub id: Cow<'a, str>,
    pub format: EventFormat,
    /// e.g. "Microsoft.Storage.BlobCreated", "ObjectCreated:Put", "OBJECT_FINALIZE".
    pub event_type: Cow<'a, str>,
    /// Azure storage account name; None for S3/MinIO/GCS.
    pub account: Option<Cow<'a, str>>,
    /// Container / bucket.
    pub container: Cow<'a, str>,
    /// Blob path / object key (URL-decoded for S3/MinIO).
    pub path: Cow<'a, str>,
    pub size: Option<u64>,
    pub etag: Option<Cow<'a, str>>,
    pub content_type: Option<Cow<'a, str>>,
    /// As given by the producer (RFC 3339 string).
    pub event_time: Option<Cow<'a, str>>,
}

impl BlobEvent<'_> {
    /// Every string the event holds (those of the absent optional fields left out): what
    /// [`ParsedRecord::plain`] speaks for, and what is borrowed from the message.
    pub fn strings(&self) -> impl Iterator<Item = &str> {
        [&self.id, &self.event_type, &self.container, &self.path]
            .into_iter()
            .chain(
                [
                    &self.account,
                    &self.etag,
                    &self.content_type,
                    &self.event_time,
                ]
                .into_iter()
                .flatten(),
            )
            .map(|s| &**s)
    }
}

/// One record of a message that parsed to a created event, with the record's own raw JSON
/// (the array element / S3 record / the whole object for single-event messages).
#[derive(Debug)]
pub struct ParsedRecord<'a> {
    pub event: BlobEvent<'a>,
    pub raw: RawJson<'a>,
    /// No string of `event` holds a character that JSON escapes (`"`, `\`, a control
    /// character), so the routed envelope copies them as they are instead of looking.
    /// Set when each of them is text of `raw`'s strings (or an id we made) and `raw`
    /// holds no `\`: JSON strings without escapes cannot hold those characters. Not
    /// set for S3 and MinIO, whose object keys are URL-decoded.
    pub plain: bool,
}

/// A record's JSON text exactly as the message held it (whitespace around it aside),
/// checked by the parse that read it: the routed envelope embeds it as it is. A piece
/// of the message, not a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawJson<'a>(&'a str);

impl<'a> RawJson<'a> {
    /// `text` if it is one JSON value (whitespace around it dropped).
    pub fn parse(text: &'a str) -> serde_json::Result<Self> {
        let raw: &'a RawValue = serde_json::from_str(text)?;
        Ok(RawJson(raw.get()))
    }

    pub fn get(&self) -> &'a str {
        self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Not a readable event (dead-letter reason `malformed_event`).
    #[error("{0}")]
    Malformed(String),
    /// A valid event, but not a blob-created one (dead-letter reason `unsupported_event_type`).
    #[error("{0}")]
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub error: EventError,
    /// The record's own id, when it had one.
    pub event_id: Option<String>,
}

pub type RecordResult<'a> = Result<ParsedRecord<'a>, RecordError>;

/// Parses one message body. Never panics, never returns an empty Vec: a message with N
/// records yields N results; a message that is not parseable at all yields exactly one Err.
/// `header_event_type` is the value of the message header `eventType` (how GCS Pub/Sub
/// notifications carry their event type); other formats ignore it.
pub fn parse<'a>(body: &'a [u8], header_event_type: Option<&str>) -> Vec<RecordResult<'a>> {
    let text = match message_text(body) {
        Ok(text) => text,
        Err(e) => return vec![Err(e)],
    };
    // The common case, one event object, is read in one pass: when its fields read,
    // the text is one JSON object, the very text (whitespace around it aside) a root
    // `RawValue` would hold, so the separate validating pass of `parse_root` is not
    // needed. Anything else takes that path, which finds the same answer or says why.
    let object = text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
    let is_object = object.starts_with('{');
    if is_object {
        if let Some(fields) = Fields::read(object) {
            return parse_object(object, Read::Fields(fields), header_event_type);
        }
    }
    // An object the one-pass read refused is not read that way again.
    parse_root(text, header_event_type, !is_object)
}

/// The message's text: valid UTF-8 that holds more than whitespace.
fn message_text(body: &[u8]) -> Result<&str, RecordError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(no_id(malformed("empty message body")));
    }
    // Checked many bytes at a time; only text that fails is checked again, by the
    // standard library, for where it fails.
    simdutf8::basic::from_utf8(body).or_else(|_| {
        std::str::from_utf8(body).map_err(|e| no_id(malformed(format!("not valid UTF-8: {e}"))))
    })
}

/// [`parse`] of a message's text ([`message_text`]): its root value checked first, then
/// read by shape. `one_pass`: event objects are tried with the one-pass read
/// ([`Fields`]) before they are probed.
fn parse_root<'a>(
    text: &'a str,
    header_event_type: Option<&str>,
    one_pass: bool,
) -> Vec<RecordResult<'a>> {
    let root: &'a RawValue = match serde_json::from_str(text) {
        Ok(root) => root,
        Err(e) => return vec![Err(no_id(malformed(format!("not valid JSON: {e}"))))],
    };
    match first_byte(root.get()) {
        b'[' => parse_array(root, one_pass),
        b'{' => match Read::of(root.get(), one_pass) {
            Ok(read) => parse_object(root.get(), read, header_event_type),
            Err(e) => vec![Err(no_id(e))],
        },
        _ => vec![Err(no_id(malformed(
            "message must be a JSON object or array",
        )))],
    }
}

/// [`parse`] without the one-pass read: the root checked, every object probed and read
/// by its schema's own structs. Tests hold [`parse`] to it.
#[cfg(test)]
fn parse_probed<'a>(body: &'a [u8], header_event_type: Option<&str>) -> Vec<RecordResult<'a>> {
    match message_text(body) {
        Ok(text) => parse_root(text, header_event_type, false),
        Err(e) => vec![Err(e)],
    }
}

/// The keys that tell the schemas apart. Unknown keys are skipped without being parsed.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(rename = "Records", borrow)]
    records: Option<&'a RawValue>,
    #[serde(rename = "EventName", borrow)]
    minio_event_name: Option<&'a RawValue>,
    #[serde(borrow)]
    specversion: Option<&'a RawValue>,
    #[serde(rename = "eventType", borrow)]
    event_type: Option<&'a RawValue>,
    #[serde(borrow)]
    subject: Option<&'a RawValue>,
    #[serde(borrow)]
    bucket: Option<&'a RawValue>,
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(rename = "Event", borrow)]
    s3_service_event: Option<&'a RawValue>,
}

fn probe(text: &str) -> Result<Probe<'_>, EventError> {
    serde_json::from_str(text).map_err(|e| malformed(format!("not a valid event object: {e}")))
}

/// [`Probe`]'s keys and every field of the two Azure schemas, read in one pass, the
/// Azure fields as the values their schemas want (strings, and `data` as an object with
/// a non-negative integer and two strings): an Event Grid or CloudEvents event (the
/// common case) is then neither read a second time nor its strings read again.
///
/// Where this fails (a key repeated, or a field of another type than the Azure schemas
/// want, which may be fine for another schema or be the event's error) the object is
/// probed and read by its schema's own structs, which find the same answer or report
/// why. When this succeeds, those would have read the same keys to the same values: a
/// [`Raw`] field here is a raw value there too, and a typed one is what their
/// [`opt_str`], or their read of `data` (`azure::AzureBlobData` and its fields), makes
/// of its raw value.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "Records", borrow)]
    records: Raw<'a>,
    #[serde(rename = "EventName", borrow)]
    minio_event_name: Raw<'a>,
    #[serde(borrow)]
    specversion: Text<'a>,
    #[serde(rename = "eventType", borrow)]
    event_type: Text<'a>,
    #[serde(borrow)]
    subject: Text<'a>,
    #[serde(borrow)]
    bucket: Raw<'a>,
    #[serde(borrow)]
    name: Raw<'a>,
    #[serde(rename = "Event", borrow)]
    s3_service_event: Raw<'a>,
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    topic: Text<'a>,
    #[serde(rename = "eventTime", borrow)]
    event_time: Text<'a>,
    #[serde(borrow)]
    data: Option<azure::AzureData<'a>>,
    #[serde(rename = "type", borrow)]
    ce_type: Text<'a>,
    #[serde(borrow)]
    source: Text<'a>,
    #[serde(borrow)]
    time: Text<'a>,
}

impl<'a> Fields<'a> {
    /// The one-pass read of the event object `text` (no whitespace around it): by hand
    /// where [`scan`] is sure of it (most events), else by serde.
    fn read(text: &'a str) -> Option<Self> {
        scan::fields(text).or_else(|| serde_json::from_str(text).ok())
    }
}

/// How an event object was read: in one pass ([`Fields`]), or probed only. It lives
/// on the stack for one parse: boxing the large variant would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
enum Read<'a> {
    Fields(Fields<'a>),
    Probed(Probe<'a>),
}

impl<'a> Read<'a> {
    /// Reads the event object `text` in one pass if `one_pass` and it can, else probes it.
    fn of(text: &'a str, one_pass: bool) -> Result<Self, EventError> {
        if one_pass {
            if let Some(fields) = Fields::read(text) {
                return Ok(Read::Fields(fields));
            }
        }
        probe(text).map(Read::Probed)
    }

    /// What tells the schemas apart.
    fn shape(&self) -> Shape<'a> {
        // The same keys in both structs (raw in one, some read as strings in the other).
        macro_rules! shape {
            ($r:expr) => {
                Shape {
                    records: $r.records,
                    minio: $r.minio_event_name.is_some(),
                    cloud_events: $r.specversion.is_some(),
                    event_grid: $r.event_type.is_some() && $r.subject.is_some(),
                    gcs: $r.bucket.is_some() && $r.name.is_some(),
                    s3_service_event: $r.s3_service_event,
                }
            };
        }
        match self {
            Read::Probed(p) => shape!(p),
            Read::Fields(f) => shape!(f),
        }
    }

    /// The Event Grid event `raw` (this object's text).
    fn event_grid(self, raw: &'a str) -> RecordResult<'a> {
        match self {
            Read::Probed(_) => eventgrid::parse(raw),
            Read::Fields(f) => eventgrid::read(
                raw,
                eventgrid::Event {
                    id: f.id,
                    event_type: f.event_type,
                    subject: f.subject,
                    topic: f.topic,
                    event_time: f.event_time,
                    data: f.data,
                },
            ),
        }
    }

    /// The CloudEvents event `raw` (this object's text).
    fn cloud_events(self, raw: &'a str) -> RecordResult<'a> {
        match self {
            Read::Probed(_) => cloudevents::parse(raw),
            Read::Fields(f) => cloudevents::read(
                raw,
                cloudevents::Event {
                    specversion: f.specversion,
                    id: f.id,
                    event_type: f.ce_type,
                    source: f.source,
                    subject: f.subject,
                    time: f.time,
                    data: f.data,
                },
            ),
        }
    }
}

/// What tells the schemas apart: keys that are there (and not `null`), and the raw
/// values of the two that are read further.
struct Shape<'a> {
    records: Raw<'a>,
    minio: bool,
    cloud_events: bool,
    event_grid: bool,
    gcs: bool,
    s3_service_event: Raw<'a>,
}

fn parse_array(root: &RawValue, one_pass: bool) -> Vec<RecordResult<'_>> {
    let elements: Vec<&RawValue> = match serde_json::from_str(root.get()) {
        Ok(elements) => elements,
        Err(e) => return vec![Err(no_id(malformed(format!("not valid JSON: {e}"))))],
    };
    if elements.is_empty() {
        return vec![Err(no_id(malformed("empty event array")))];
    }
    elements
        .into_iter()
        .map(|e| parse_array_element(e, one_pass))
        .collect()
}

/// An element of a top-level array: an Event Grid or CloudEvents event.
fn parse_array_element(raw: &RawValue, one_pass: bool) -> RecordResult<'_> {
    let raw = raw.get();
    if first_byte(raw) != b'{' {
        return Err(no_id(malformed("array element must be a JSON object")));
    }
    let read = Read::of(raw, one_pass).map_err(no_id)?;
    let shape = read.shape();
    if shape.cloud_events {
        read.cloud_events(raw)
    } else if shape.event_grid {
        read.event_grid(raw)
    } else {
        Err(no_id(malformed(
            "unrecognised event shape in array (expected Event Grid or CloudEvents)",
        )))
    }
}

/// A message that is one event object: `raw` is its text, `read` how it was read.
fn parse_object<'a>(
    raw: &'a str,
    read: Read<'a>,
    header_event_type: Option<&str>,
) -> Vec<RecordResult<'a>> {
    let shape = read.shape();
    if let Some(records) = shape.records {
        return s3::parse(records, shape.minio);
    }
    let result = if shape.cloud_events {
        read.cloud_events(raw)
    } else if shape.event_grid {
        read.event_grid(raw)
    } else if shape.gcs {
        gcs::parse(raw, header_event_type)
    } else if let Some(event) = shape.s3_service_event {
        // e.g. {"Service":"Amazon S3","Event":"s3:TestEvent",...}, sent when a bucket
        // notification is configured.
        match opt_str(Some(event), "Event") {
            Ok(Some(name)) => Err(no_id(unsupported(format!(
                "S3 service event `{name}` is not a blob-created event"
            )))),
            Ok(None) => Err(no_id(malformed("unrecognised event shape"))),
            Err(e) => Err(no_id(e)),
        }
    } else {
        Err(no_id(malformed("unrecognised event shape")))
    };
    vec![result]
}

/// The id of a record that has none of its own: stable for the same raw bytes (so a
/// redelivery gets the same id), different for different records of one message.
pub fn derive_id(format: EventFormat, raw: &str) -> String {
    format!(
        "{}-{:032x}",
        format.as_str(),
        xxhash_rust::xxh3::xxh3_128(raw.as_bytes())
    )
}

// ---------------------------------------------------------------------------------------------
// Shared helpers for the format modules.

/// A field kept as its raw JSON slice until it is looked at; JSON `null` reads as `None`.
type Raw<'a> = Option<&'a RawValue>;

/// A string field read as a string where the message is read (borrowed unless it has
/// escapes); JSON `null` reads as `None`.
type Text<'a> = Option<BorrowedStr<'a>>;

/// A string field of an event as a schema's struct holds it: a raw value, read (and
/// checked) when it is looked at, or a string read with the message.
trait Field<'a> {
    /// The string, `None` when absent or `null`; `field` names it in errors.
    fn text(self, field: &str) -> Result<Option<Cow<'a, str>>, EventError>;
}

impl<'a> Field<'a> for Raw<'a> {
    fn text(self, field: &str) -> Result<Option<Cow<'a, str>>, EventError> {
        opt_str(self, field)
    }
}

impl<'a> Field<'a> for Text<'a> {
    fn text(self, _field: &str) -> Result<Option<Cow<'a, str>>, EventError> {
        Ok(self.map(|s| s.0))
    }
}

fn malformed(detail: impl Into<String>) -> EventError {
    EventError::Malformed(detail.into())
}

fn unsupported(detail: impl Into<String>) -> EventError {
    EventError::Unsupported(detail.into())
}

fn no_id(error: EventError) -> RecordError {
    RecordError {
        error,
        event_id: None,
    }
}

fn with_id(id: &str) -> impl Fn(EventError) -> RecordError + '_ {
    with_opt_id(Some(id))
}

/// Like [`with_id`] for a record that may have no id of its own.
fn with_opt_id(id: Option<&str>) -> impl Fn(EventError) -> RecordError + '_ {
    move |error| RecordError {
        error,
        event_id: id.map(str::to_owned),
    }
}

/// `raw` is the record's JSON text, as read by the parse, and each string of `event` a
/// piece of one of its strings or an id we made (see [`ParsedRecord::plain`]).
fn record<'a>(event: BlobEvent<'a>, raw: &'a str) -> ParsedRecord<'a> {
    ParsedRecord {
        event,
        plain: memchr::memchr(b'\\', raw.as_bytes()).is_none(),
        raw: RawJson(raw),
    }
}

/// A record whose strings are not all pieces of its raw JSON's (S3's decoded keys).
fn record_decoded<'a>(event: BlobEvent<'a>, raw: &'a str) -> ParsedRecord<'a> {
    ParsedRecord {
        event,
        plain: false,
        raw: RawJson(raw),
    }
}

/// `part`, a slice of `whole`, kept as long as `whole`'s text: borrowed from the message
/// when `whole` is, a copy when `whole` is one (a string with escapes, read unescaped).
fn piece<'a>(whole: &Cow<'a, str>, part: &str) -> Cow<'a, str> {
    match whole {
        Cow::Borrowed(text) => {
            let start = (part.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
            // In range only where `part` lies in `text`: then it is those very bytes.
            match text.get(start..start.wrapping_add(part.len())) {
                Some(borrowed) => Cow::Borrowed(borrowed),
                None => {
                    debug_assert!(false, "{part:?} is not a piece of {text:?}");
                    Cow::Owned(part.to_owned())
                }
            }
        }
        Cow::Owned(_) => Cow::Owned(part.to_owned()),
    }
}

/// First byte of a JSON value's text (serde_json strips leading whitespace from raw values).
fn first_byte(text: &str) -> u8 {
    text.as_bytes().first().copied().unwrap_or(b' ')
}

/// A string that borrows from the message unless it contains escapes.
#[derive(Deserialize)]
struct BorrowedStr<'a>(#[serde(borrow)] Cow<'a, str>);

fn opt_str<'a>(value: Raw<'a>, field: &str) -> Result<Option<Cow<'a, str>>, EventError> {
    let Some(raw) = value else { return Ok(None) };
    match serde_json::from_str::<BorrowedStr<'a>>(raw.get()) {
        Ok(BorrowedStr(s)) => Ok(Some(s)),
        Err(e) if first_byte(raw.get()) == b'"' => Err(malformed(format!(
            "field `{field}` is not a valid string: {e}"
        ))),
        Err(_) => Err(malformed(format!("field `{field}` must be a string"))),
    }
}

fn req_str<'a>(value: impl Field<'a>, field: &str) -> Result<Cow<'a, str>, EventError> {
    value
        .text(field)?
        .ok_or_else(|| malformed(format!("missing field `{field}`")))
}

/// A required string that must not be empty.
fn req_non_empty<'a>(value: impl Field<'a>, field: &str) -> Result<Cow<'a, str>, EventError> {
    let s = req_str(value, field)?;
    if s.is_empty() {
        return Err(malformed(format!("field `{field}` must not be empty")));
    }
    Ok(s)
}

fn req_raw<'a>(value: Raw<'a>, field: &str) -> Result<&'a RawValue, EventError> {
    value.ok_or_else(|| malformed(format!("missing field `{field}`")))
}

fn opt_string<'a>(value: impl Field<'a>, field: &str) -> Result<Option<Cow<'a, str>>, EventError> {
    value.text(field)
}

fn opt_u64(value: Raw<'_>, field: &str) -> Result<Option<u64>, EventError> {
    let Some(raw) = value else { return Ok(None) };
    serde_json::from_str::<u64>(raw.get())
        .map(Some)
        .map_err(|_| malformed(format!("field `{field}` must be a non-negative integer")))
}

/// An object (the JSON text `raw`) read into its typed struct. `field` names it in errors.
fn object<'a, T: Deserialize<'a>>(raw: &'a str, field: &str) -> Result<T, EventError> {
    if first_byte(raw) != b'{' {
        return Err(malformed(format!("field `{field}` must be an object")));
    }
    serde_json::from_str(raw).map_err(|e| malformed(format!("field `{field}`: {e}")))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
#[path = "tests/props.rs"]
mod proptests;
