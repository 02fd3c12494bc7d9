//! Helpers the format tests share (those of this module and of each format's module): parsing
//! a message that must yield exactly one record, editing a fixture's top-level fields, and
//! taking a record's error apart.

use super::{parse, EventError, ParsedRecord, RecordError, RecordResult};

/// The only result of parsing `body` (with the message header `eventType` set to
/// `header_event_type`); panics unless the message yields exactly one.
pub(super) fn single<'a>(body: &'a [u8], header_event_type: Option<&str>) -> RecordResult<'a> {
    let mut results = parse(body, header_event_type);
    assert_eq!(results.len(), 1, "expected exactly one result");
    results.pop().unwrap()
}

/// A JSON object as a [`serde_json::Value`], e.g. a fixture.
pub(super) fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The raw JSON a record kept, as a [`serde_json::Value`].
pub(super) fn raw_json(record: &ParsedRecord<'_>) -> serde_json::Value {
    serde_json::from_str(record.raw.get()).unwrap()
}

/// `fixture` (a JSON object) with each top-level `field` replaced by its value, or removed
/// where the value is None.
pub(super) fn with_fields(
    fixture: &[u8],
    changes: &[(&str, Option<serde_json::Value>)],
) -> Vec<u8> {
    let mut event = json(fixture);
    let map = event.as_object_mut().unwrap();
    for (field, value) in changes {
        match value {
            Some(value) => map.insert((*field).to_owned(), value.clone()),
            None => map.remove(*field),
        };
    }
    serde_json::to_vec(&event).unwrap()
}

/// `fixture` (a JSON object) with the top-level `field` replaced by `value`, or removed when
/// `value` is None.
pub(super) fn with_field(fixture: &[u8], field: &str, value: Option<serde_json::Value>) -> Vec<u8> {
    with_fields(fixture, &[(field, value)])
}

/// The detail and event id of a record that failed with an error of `kind` (`Malformed` or
/// `Unsupported`); panics on a record that parsed or failed otherwise.
fn failure(result: RecordResult, kind: &str) -> (String, Option<String>) {
    let RecordError { error, event_id } = match result {
        Ok(record) => panic!("expected {kind}, got {record:?}"),
        Err(err) => err,
    };
    let (got, detail) = match error {
        EventError::Malformed(detail) => ("Malformed", detail),
        EventError::Unsupported(detail) => ("Unsupported", detail),
    };
    assert_eq!(
        got, kind,
        "expected {kind}, got {got}: {detail} (id {event_id:?})"
    );
    (detail, event_id)
}

/// The detail and event id of an [`EventError::Malformed`] record; panics on anything else.
pub(super) fn malformed(result: RecordResult) -> (String, Option<String>) {
    failure(result, "Malformed")
}

/// The detail of an [`EventError::Malformed`] record, whatever its event id.
pub(super) fn malformed_detail(result: RecordResult) -> String {
    malformed(result).0
}

/// The detail and event id of an [`EventError::Unsupported`] record; panics on anything else.
pub(super) fn unsupported(result: RecordResult) -> (String, Option<String>) {
    failure(result, "Unsupported")
}
