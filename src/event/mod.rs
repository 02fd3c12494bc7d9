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
//! `serde_json::Value`. Messages are first probed with borrowed [`RawValue`] slices, then read
//! into small typed structs whose fields borrow from the message bytes; only the final
//! [`BlobEvent`] and a copy of the record's raw JSON are allocated. Nothing here recurses on
//! its own: nesting is bounded by serde_json (its recursion limit, and its non-recursive
//! skipping of ignored values).

mod cloudevents;
mod eventgrid;
mod gcs;
mod s3;
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

/// The normalized blob-created event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlobEvent {
    /// The event's own id, or one derived from the record's raw JSON (see [`derive_id`]).
    pub id: String,
    pub format: EventFormat,
    /// e.g. "Microsoft.Storage.BlobCreated", "ObjectCreated:Put", "OBJECT_FINALIZE".
    pub event_type: String,
    /// Azure storage account name; None for S3/MinIO/GCS.
    pub account: Option<String>,
    /// Container / bucket.
    pub container: String,
    /// Blob path / object key (URL-decoded for S3/MinIO).
    pub path: String,
    pub size: Option<u64>,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    /// As given by the producer (RFC 3339 string).
    pub event_time: Option<String>,
}

/// One record of a message that parsed to a created event, with the record's own raw JSON
/// (the array element / S3 record / the whole object for single-event messages).
#[derive(Debug)]
pub struct ParsedRecord {
    pub event: BlobEvent,
    pub raw: Box<RawValue>,
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

pub type RecordResult = Result<ParsedRecord, RecordError>;

/// Parses one message body. Never panics, never returns an empty Vec: a message with N
/// records yields N results; a message that is not parseable at all yields exactly one Err.
/// `header_event_type` is the value of the message header `eventType` (how GCS Pub/Sub
/// notifications carry their event type); other formats ignore it.
pub fn parse(body: &[u8], header_event_type: Option<&str>) -> Vec<RecordResult> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return vec![Err(no_id(malformed("empty message body")))];
    }
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => return vec![Err(no_id(malformed(format!("not valid UTF-8: {e}"))))],
    };
    let root: &RawValue = match serde_json::from_str(text) {
        Ok(root) => root,
        Err(e) => return vec![Err(no_id(malformed(format!("not valid JSON: {e}"))))],
    };
    match first_byte(root) {
        b'[' => parse_array(root),
        b'{' => parse_object(root, header_event_type),
        _ => vec![Err(no_id(malformed(
            "message must be a JSON object or array",
        )))],
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

fn probe(raw: &RawValue) -> Result<Probe<'_>, EventError> {
    serde_json::from_str(raw.get()).map_err(|e| malformed(format!("not a valid event object: {e}")))
}

fn parse_array(root: &RawValue) -> Vec<RecordResult> {
    let elements: Vec<&RawValue> = match serde_json::from_str(root.get()) {
        Ok(elements) => elements,
        Err(e) => return vec![Err(no_id(malformed(format!("not valid JSON: {e}"))))],
    };
    if elements.is_empty() {
        return vec![Err(no_id(malformed("empty event array")))];
    }
    elements.into_iter().map(parse_array_element).collect()
}

/// An element of a top-level array: an Event Grid or CloudEvents event.
fn parse_array_element(raw: &RawValue) -> RecordResult {
    if first_byte(raw) != b'{' {
        return Err(no_id(malformed("array element must be a JSON object")));
    }
    let probe = probe(raw).map_err(no_id)?;
    if probe.specversion.is_some() {
        cloudevents::parse(raw)
    } else if probe.event_type.is_some() && probe.subject.is_some() {
        eventgrid::parse(raw)
    } else {
        Err(no_id(malformed(
            "unrecognised event shape in array (expected Event Grid or CloudEvents)",
        )))
    }
}

fn parse_object(raw: &RawValue, header_event_type: Option<&str>) -> Vec<RecordResult> {
    let probe = match probe(raw) {
        Ok(probe) => probe,
        Err(e) => return vec![Err(no_id(e))],
    };
    if let Some(records) = probe.records {
        return s3::parse(records, probe.minio_event_name.is_some());
    }
    let result = if probe.specversion.is_some() {
        cloudevents::parse(raw)
    } else if probe.event_type.is_some() && probe.subject.is_some() {
        eventgrid::parse(raw)
    } else if probe.bucket.is_some() && probe.name.is_some() {
        gcs::parse(raw, header_event_type)
    } else if let Some(event) = probe.s3_service_event {
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
pub fn derive_id(format: EventFormat, raw: &RawValue) -> String {
    format!(
        "{}-{:032x}",
        format.as_str(),
        xxhash_rust::xxh3::xxh3_128(raw.get().as_bytes())
    )
}

// ---------------------------------------------------------------------------------------------
// Shared helpers for the format modules.

/// A field kept as its raw JSON slice until it is looked at; JSON `null` reads as `None`.
type Raw<'a> = Option<&'a RawValue>;

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

fn record(event: BlobEvent, raw: &RawValue) -> ParsedRecord {
    ParsedRecord {
        event,
        raw: raw.to_owned(),
    }
}

/// First byte of a raw JSON value (serde_json strips leading whitespace from raw values).
fn first_byte(raw: &RawValue) -> u8 {
    raw.get().as_bytes().first().copied().unwrap_or(b' ')
}

/// A string that borrows from the message unless it contains escapes.
#[derive(Deserialize)]
struct BorrowedStr<'a>(#[serde(borrow)] Cow<'a, str>);

fn opt_str<'a>(value: Raw<'a>, field: &str) -> Result<Option<Cow<'a, str>>, EventError> {
    let Some(raw) = value else { return Ok(None) };
    match serde_json::from_str::<BorrowedStr<'a>>(raw.get()) {
        Ok(BorrowedStr(s)) => Ok(Some(s)),
        Err(e) if first_byte(raw) == b'"' => Err(malformed(format!(
            "field `{field}` is not a valid string: {e}"
        ))),
        Err(_) => Err(malformed(format!("field `{field}` must be a string"))),
    }
}

fn req_str<'a>(value: Raw<'a>, field: &str) -> Result<Cow<'a, str>, EventError> {
    opt_str(value, field)?.ok_or_else(|| malformed(format!("missing field `{field}`")))
}

/// A required string that must not be empty.
fn req_non_empty<'a>(value: Raw<'a>, field: &str) -> Result<Cow<'a, str>, EventError> {
    let s = req_str(value, field)?;
    if s.is_empty() {
        return Err(malformed(format!("field `{field}` must not be empty")));
    }
    Ok(s)
}

fn req_raw<'a>(value: Raw<'a>, field: &str) -> Result<&'a RawValue, EventError> {
    value.ok_or_else(|| malformed(format!("missing field `{field}`")))
}

fn opt_string(value: Raw<'_>, field: &str) -> Result<Option<String>, EventError> {
    Ok(opt_str(value, field)?.map(Cow::into_owned))
}

fn opt_u64(value: Raw<'_>, field: &str) -> Result<Option<u64>, EventError> {
    let Some(raw) = value else { return Ok(None) };
    serde_json::from_str::<u64>(raw.get())
        .map(Some)
        .map_err(|_| malformed(format!("field `{field}` must be a non-negative integer")))
}

/// A nested object read into its typed struct. `field` names it in errors.
fn object<'a, T: Deserialize<'a>>(raw: &'a RawValue, field: &str) -> Result<T, EventError> {
    if first_byte(raw) != b'{' {
        return Err(malformed(format!("field `{field}` must be an object")));
    }
    serde_json::from_str(raw.get()).map_err(|e| malformed(format!("field `{field}`: {e}")))
}

/// The `data` of an Azure Storage blob event (Event Grid and CloudEvents schemas alike).
#[derive(Deserialize)]
struct AzureBlobData<'a> {
    #[serde(rename = "contentLength", borrow)]
    content_length: Raw<'a>,
    #[serde(rename = "eTag", borrow)]
    etag: Raw<'a>,
    #[serde(rename = "contentType", borrow)]
    content_type: Raw<'a>,
}

/// The event type of an Azure blob-created event.
const AZURE_BLOB_CREATED: &str = "Microsoft.Storage.BlobCreated";

/// Only [`AZURE_BLOB_CREATED`] is a created event, in either Azure schema.
fn require_azure_created(event_type: &str) -> Result<(), EventError> {
    if event_type != AZURE_BLOB_CREATED {
        return Err(unsupported(format!(
            "event type `{event_type}` is not a blob-created event"
        )));
    }
    Ok(())
}

/// The fields an Azure Storage event carries, in either schema.
struct AzureEvent<'a> {
    format: EventFormat,
    id: &'a str,
    event_type: &'a str,
    /// `topic` (Event Grid) or `source` (CloudEvents): the storage account's resource id.
    resource: Option<Cow<'a, str>>,
    subject: Raw<'a>,
    time: Raw<'a>,
    time_field: &'static str,
    data: Raw<'a>,
}

/// Builds the [`BlobEvent`] of an Azure blob-created event whose id and type were checked.
fn azure_blob_event(ev: AzureEvent<'_>) -> Result<BlobEvent, EventError> {
    let subject = req_str(ev.subject, "subject")?;
    let (container, path) = parse_azure_subject(&subject)?;
    let event_time = opt_string(ev.time, ev.time_field)?;
    let (size, etag, content_type) = match ev.data {
        None => (None, None, None),
        Some(raw) => {
            let data: AzureBlobData = object(raw, "data")?;
            (
                opt_u64(data.content_length, "data.contentLength")?,
                opt_string(data.etag, "data.eTag")?,
                opt_string(data.content_type, "data.contentType")?,
            )
        }
    };
    Ok(BlobEvent {
        id: ev.id.to_owned(),
        format: ev.format,
        event_type: ev.event_type.to_owned(),
        account: ev
            .resource
            .as_deref()
            .and_then(azure_account)
            .map(str::to_owned),
        container: container.to_owned(),
        path: path.to_owned(),
        size,
        etag,
        content_type,
        event_time,
    })
}

/// Splits `/blobServices/default/containers/<container>/blobs/<path>`; the path may contain
/// `/`. Both parts must be non-empty.
fn parse_azure_subject(subject: &str) -> Result<(&str, &str), EventError> {
    const PREFIX: &str = "/blobServices/default/containers/";
    let bad = || {
        malformed(format!(
            "field `subject` is not `{PREFIX}<container>/blobs/<path>`: `{subject}`"
        ))
    };
    let rest = subject.strip_prefix(PREFIX).ok_or_else(bad)?;
    let (container, rest) = rest.split_once('/').ok_or_else(bad)?;
    let path = rest.strip_prefix("blobs/").ok_or_else(bad)?;
    if container.is_empty() {
        return Err(malformed("field `subject` has an empty container name"));
    }
    if path.is_empty() {
        return Err(malformed("field `subject` has an empty blob path"));
    }
    Ok((container, path))
}

/// The account name in `/subscriptions/…/providers/Microsoft.Storage/storageAccounts/<account>`
/// (resource ids are case-insensitive). None when the resource id is not a storage account.
fn azure_account(resource: &str) -> Option<&str> {
    const MARKER: &[u8] = b"/providers/microsoft.storage/storageaccounts/";
    let start = resource
        .as_bytes()
        .windows(MARKER.len())
        .position(|w| w.eq_ignore_ascii_case(MARKER))?
        + MARKER.len();
    // MARKER is ASCII, so `start` is a char boundary.
    let account = resource[start..].split('/').next()?;
    (!account.is_empty()).then_some(account)
}

#[cfg(test)]
mod tests {
    use super::testing::{json, malformed_detail, single, unsupported};
    use super::*;

    #[test]
    fn format_names_match_serialized_form() {
        for format in [
            EventFormat::EventGrid,
            EventFormat::CloudEvents,
            EventFormat::S3,
            EventFormat::Minio,
            EventFormat::Gcs,
        ] {
            let json = serde_json::to_string(&format).unwrap();
            assert_eq!(json, format!("\"{}\"", format.as_str()));
        }
        assert_eq!(EventFormat::EventGrid.as_str(), "event_grid");
        assert_eq!(EventFormat::CloudEvents.as_str(), "cloud_events");
    }

    #[test]
    fn empty_body_is_malformed() {
        assert_eq!(malformed_detail(single(b"", None)), "empty message body");
        assert_eq!(
            malformed_detail(single(b" \n\t", None)),
            "empty message body"
        );
    }

    #[test]
    fn not_json_fixture_is_malformed() {
        let detail = malformed_detail(single(
            include_bytes!("../../fixtures/events/not-json.txt"),
            None,
        ));
        assert!(detail.starts_with("not valid JSON: "), "{detail}");
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        let detail = malformed_detail(single(b"{\"id\":\"\xff\xfe\"}", None));
        assert!(detail.starts_with("not valid UTF-8"), "{detail}");
    }

    #[test]
    fn scalars_and_unknown_objects_are_malformed() {
        for body in [&b"42"[..], b"\"text\"", b"null", b"true"] {
            assert_eq!(
                malformed_detail(single(body, None)),
                "message must be a JSON object or array"
            );
        }
        assert_eq!(
            malformed_detail(single(br#"{"hello":"world"}"#, None)),
            "unrecognised event shape"
        );
        assert_eq!(
            malformed_detail(single(br#"{"eventType":"x"}"#, None)),
            "unrecognised event shape"
        );
    }

    #[test]
    fn trailing_garbage_is_malformed() {
        let detail = malformed_detail(single(br#"{"a":1} x"#, None));
        assert!(detail.starts_with("not valid JSON: "), "{detail}");
    }

    #[test]
    fn empty_array_is_malformed() {
        assert_eq!(malformed_detail(single(b"[]", None)), "empty event array");
        assert_eq!(
            malformed_detail(single(b" [ ] ", None)),
            "empty event array"
        );
    }

    #[test]
    fn array_with_one_bad_element_yields_one_error_and_one_event() {
        let good = json(include_bytes!("../../fixtures/events/eventgrid.json"));
        let body = serde_json::to_vec(&serde_json::json!([good, {"nope": 1}])).unwrap();
        let results = parse(&body, None);
        assert_eq!(results.len(), 2);
        assert_eq!(
            results[0].as_ref().unwrap().event.path,
            "results/plantation-7/tea/batch-0042.json"
        );
        let err = results[1].as_ref().unwrap_err();
        assert!(matches!(err.error, EventError::Malformed(_)), "{err:?}");
        assert_eq!(err.event_id, None);
    }

    #[test]
    fn array_elements_must_be_objects() {
        let results = parse(b"[1, null, [], \"x\"]", None);
        assert_eq!(results.len(), 4);
        for result in results {
            assert_eq!(
                malformed_detail(result),
                "array element must be a JSON object"
            );
        }
    }

    #[test]
    fn array_of_s3_messages_is_not_accepted() {
        let body = format!(
            "[{}]",
            std::str::from_utf8(include_bytes!("../../fixtures/events/s3.json")).unwrap()
        );
        let detail = malformed_detail(single(body.as_bytes(), None));
        assert!(
            detail.starts_with("unrecognised event shape in array"),
            "{detail}"
        );
    }

    #[test]
    fn mixed_array_of_event_grid_and_cloudevents() {
        let eg = json(include_bytes!("../../fixtures/events/eventgrid.json"));
        let ce = json(include_bytes!("../../fixtures/events/cloudevents.json"));
        let body = serde_json::to_vec(&serde_json::json!([ce, eg])).unwrap();
        let formats: Vec<EventFormat> = parse(&body, None)
            .into_iter()
            .map(|r| r.unwrap().event.format)
            .collect();
        assert_eq!(formats, [EventFormat::CloudEvents, EventFormat::EventGrid]);
    }

    #[test]
    fn deeply_nested_arrays_do_not_panic() {
        let depth = 100_000;
        let balanced = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let results = parse(balanced.as_bytes(), None);
        assert_eq!(results.len(), 1);
        assert!(matches!(
            results[0].as_ref().unwrap_err().error,
            EventError::Malformed(_)
        ));
        let unbalanced = "[".repeat(depth);
        assert!(malformed_detail(single(unbalanced.as_bytes(), None)).starts_with("not valid JSON"));
    }

    #[test]
    fn deeply_nested_objects_do_not_panic() {
        let depth = 100_000;
        let balanced = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        assert!(matches!(
            single(balanced.as_bytes(), None).unwrap_err().error,
            EventError::Malformed(_)
        ));
        let unbalanced = "{\"a\":".repeat(depth);
        assert!(malformed_detail(single(unbalanced.as_bytes(), None)).starts_with("not valid JSON"));
        // Deep nesting inside fields the formats look at, and in ones they skip.
        let deep = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        for template in [
            r#"{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":DEEP}]}"#,
            r#"{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":DEEP}}]}"#,
            r#"{"id":"1","eventType":"Microsoft.Storage.BlobCreated","subject":"/blobServices/default/containers/c/blobs/p","data":DEEP}"#,
            r#"{"specversion":"1.0","id":"1","type":"Microsoft.Storage.BlobCreated","source":"s","subject":DEEP}"#,
            r#"{"bucket":"b","name":"n","metadata":DEEP}"#,
        ] {
            let body = template.replace("DEEP", &deep);
            let results = parse(body.as_bytes(), Some("OBJECT_FINALIZE"));
            assert_eq!(results.len(), 1);
            // Skipped deep values are fine; looked-at ones must be errors, never panics.
            if let Err(err) = &results[0] {
                assert!(matches!(err.error, EventError::Malformed(_)), "{err:?}");
            }
        }
    }

    #[test]
    fn huge_numbers_and_nulls_are_handled() {
        let body = br#"{"id":"e1","eventType":"Microsoft.Storage.BlobCreated",
            "subject":"/blobServices/default/containers/c/blobs/p",
            "data":{"contentLength":1e999999}}"#;
        assert_eq!(
            malformed_detail(single(body, None)),
            "field `data.contentLength` must be a non-negative integer"
        );
        let body = br#"{"id":"e1","eventType":"Microsoft.Storage.BlobCreated",
            "subject":"/blobServices/default/containers/c/blobs/p",
            "data":{"contentLength":184467440737095516160000}}"#;
        assert!(matches!(
            single(body, None).unwrap_err().error,
            EventError::Malformed(_)
        ));
        let body = br#"{"id":null,"eventType":null,"subject":null,"topic":null,"data":null,
            "Records":null,"specversion":null,"bucket":null,"name":null}"#;
        assert_eq!(
            malformed_detail(single(body, None)),
            "unrecognised event shape"
        );
    }

    #[test]
    fn duplicate_discriminating_keys_are_malformed() {
        let detail = malformed_detail(single(br#"{"subject":"a","subject":"b"}"#, None));
        assert!(detail.contains("duplicate field `subject`"), "{detail}");
    }

    #[test]
    fn s3_test_event_is_unsupported() {
        let body = br#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-05-14T09:00:00.000Z","Bucket":"qc-analyzer-landing","RequestId":"5582815E1AEA5ADF","HostId":"8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"}"#;
        let (detail, id) = unsupported(single(body, None));
        assert_eq!(id, None);
        assert!(detail.contains("s3:TestEvent"), "{detail}");
    }

    #[test]
    fn derived_ids_are_stable_and_content_addressed() {
        let a: &RawValue = serde_json::from_str(r#"{"k":"a"}"#).unwrap();
        let a2: &RawValue = serde_json::from_str(r#"{"k":"a"}"#).unwrap();
        let b: &RawValue = serde_json::from_str(r#"{"k":"b"}"#).unwrap();
        let id = derive_id(EventFormat::S3, a);
        assert_eq!(id, derive_id(EventFormat::S3, a2));
        assert_ne!(id, derive_id(EventFormat::S3, b));
        assert_ne!(id, derive_id(EventFormat::Minio, a));
        assert!(id.starts_with("s3-"));
        assert_eq!(id.len(), "s3-".len() + 32);
        assert!(id[3..].bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn azure_subject_parsing() {
        assert_eq!(
            parse_azure_subject("/blobServices/default/containers/c/blobs/a/b/c.json").unwrap(),
            ("c", "a/b/c.json")
        );
        // A path may itself contain `/blobs/`.
        assert_eq!(
            parse_azure_subject("/blobServices/default/containers/c/blobs/x/blobs/y").unwrap(),
            ("c", "x/blobs/y")
        );
        for bad in [
            "",
            "/blobServices/default/containers/",
            "/blobServices/default/containers/c",
            "/blobServices/default/containers/c/blobs/",
            "/blobServices/default/containers//blobs/p",
            "/blobServices/default/containers/c/files/p",
            "/fileServices/default/shares/c/files/p",
        ] {
            assert!(parse_azure_subject(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn azure_account_parsing() {
        assert_eq!(
            azure_account("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct"),
            Some("acct")
        );
        assert_eq!(
            azure_account("/subscriptions/s/resourcegroups/rg/providers/microsoft.storage/storageaccounts/acct/blobServices/default"),
            Some("acct")
        );
        assert_eq!(azure_account("/subscriptions/s/resourceGroups/rg"), None);
        assert_eq!(
            azure_account("/providers/Microsoft.Storage/storageAccounts/"),
            None
        );
        assert_eq!(
            azure_account("ünïcödé/providers/Microsoft.Storage/storageAccounts/ä"),
            Some("ä")
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// JSON-ish fragments, including the keys and values the detector and formats look at.
    const TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        " ",
        "null",
        "true",
        "0",
        "-1",
        "1e999",
        "18446744073709551616",
        "\"\"",
        "\"x\"",
        "\"\\ud800\"",
        "\"Records\"",
        "\"EventName\"",
        "\"specversion\"",
        "\"1.0\"",
        "\"eventType\"",
        "\"type\"",
        "\"subject\"",
        "\"id\"",
        "\"source\"",
        "\"topic\"",
        "\"data\"",
        "\"contentLength\"",
        "\"bucket\"",
        "\"name\"",
        "\"size\"",
        "\"s3\"",
        "\"object\"",
        "\"key\"",
        "\"eventSource\"",
        "\"aws:s3\"",
        "\"minio:s3\"",
        "\"eventName\"",
        "\"ObjectCreated:Put\"",
        "\"s3:ObjectCreated:Put\"",
        "\"Microsoft.Storage.BlobCreated\"",
        "\"/blobServices/default/containers/c/blobs/p\"",
        "\"a+b%2Fc%FF\"",
        "\"Event\"",
    ];

    fn token_soup() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(TOKENS), 0..40).prop_map(|t| t.concat())
    }

    /// Well-formed JSON whose keys come from [`TOKENS`], so the detectors see real shapes.
    fn json_value() -> impl Strategy<Value = String> {
        let leaf = prop::sample::select(TOKENS).prop_filter_map("leaf", |t| {
            serde_json::from_str::<&RawValue>(t)
                .ok()
                .map(|_| t.to_owned())
        });
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(
                    (
                        prop::sample::select(TOKENS).prop_filter("key", |t| t.starts_with('"')),
                        inner
                    ),
                    0..6
                )
                .prop_map(|kv| {
                    let fields: Vec<String> =
                        kv.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    fn header() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some("OBJECT_FINALIZE".to_owned())),
            ".{0,12}".prop_map(Some)
        ]
    }

    fn segment() -> impl Strategy<Value = String> {
        "[^/]{1,12}"
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), header in header()) {
            let results = parse(&body, header.as_deref());
            prop_assert!(!results.is_empty());
        }

        #[test]
        fn token_soup_never_panics(body in token_soup(), header in header()) {
            let results = parse(body.as_bytes(), header.as_deref());
            prop_assert!(!results.is_empty());
        }

        #[test]
        fn generated_json_never_panics(body in json_value(), header in header()) {
            let results = parse(body.as_bytes(), header.as_deref());
            prop_assert!(!results.is_empty());
            for result in results.iter().flatten() {
                // Every accepted record carries its own valid raw JSON.
                prop_assert!(serde_json::from_str::<&RawValue>(result.raw.get()).is_ok());
                prop_assert!(!result.event.container.is_empty());
                prop_assert!(!result.event.id.is_empty());
            }
        }

        #[test]
        fn event_grid_subject_round_trips(
            container in segment(),
            segments in prop::collection::vec(segment(), 1..5),
        ) {
            let path = segments.join("/");
            let body = serde_json::to_vec(&serde_json::json!({
                "id": "e-1",
                "eventType": "Microsoft.Storage.BlobCreated",
                "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct",
                "subject": format!("/blobServices/default/containers/{container}/blobs/{path}"),
                "eventTime": "2024-05-14T09:21:37Z",
                "data": {"contentLength": 1},
            })).unwrap();
            let results = parse(&body, None);
            prop_assert_eq!(results.len(), 1);
            let event = &results[0].as_ref().unwrap().event;
            prop_assert_eq!(&event.container, &container);
            prop_assert_eq!(&event.path, &path);
        }

        #[test]
        fn s3_keys_round_trip_through_url_encoding(key in "\\PC{1,40}") {
            // S3 encodes space as `+` and escapes everything else that is not unreserved.
            const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
                .remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/').remove(b' ');
            let encoded = percent_encoding::utf8_percent_encode(&key, SET)
                .to_string()
                .replace(' ', "+");
            let body = serde_json::to_vec(&serde_json::json!({"Records": [{
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "b"}, "object": {"key": encoded, "size": 3}},
            }]})).unwrap();
            let results = parse(&body, None);
            prop_assert_eq!(results.len(), 1);
            let event = &results[0].as_ref().unwrap().event;
            prop_assert_eq!(&event.path, &key);
        }
    }
}
