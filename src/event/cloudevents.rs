//! CloudEvents 1.0 JSON (structured mode), as Azure Event Grid delivers storage events with the
//! CloudEvents schema.
//!
//! `{"specversion": "1.0", "id", "type", "source", "subject", "time", "data": {...}}`; only
//! `Microsoft.Storage.BlobCreated` is a created event. `source` is the storage account's
//! resource id and `subject` the blob, exactly as in the Event Grid schema, so both use the
//! helpers in the parent module.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    azure_blob_event, malformed, no_id, object, record, req_non_empty, req_str, unsupported,
    with_id, AzureEvent, EventFormat, Raw, RecordResult, AZURE_BLOB_CREATED,
};

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    specversion: Raw<'a>,
    #[serde(borrow)]
    id: Raw<'a>,
    #[serde(rename = "type", borrow)]
    event_type: Raw<'a>,
    #[serde(borrow)]
    source: Raw<'a>,
    #[serde(borrow)]
    subject: Raw<'a>,
    #[serde(borrow)]
    time: Raw<'a>,
    #[serde(borrow)]
    data: Raw<'a>,
}

/// Parses one CloudEvents event; `raw` is the event object.
pub(super) fn parse(raw: &RawValue) -> RecordResult {
    let ev: Event = object(raw, "event").map_err(no_id)?;
    let version = req_str(ev.specversion, "specversion").map_err(no_id)?;
    if version != "1.0" {
        return Err(no_id(malformed(format!(
            "unsupported CloudEvents specversion `{version}` (expected `1.0`)"
        ))));
    }
    let id = req_non_empty(ev.id, "id").map_err(no_id)?;
    let fail = with_id(&id);
    let event_type = req_str(ev.event_type, "type").map_err(&fail)?;
    let source = req_non_empty(ev.source, "source").map_err(&fail)?;
    if event_type != AZURE_BLOB_CREATED {
        return Err(fail(unsupported(format!(
            "event type `{event_type}` is not a blob-created event"
        ))));
    }
    let event = azure_blob_event(AzureEvent {
        format: EventFormat::CloudEvents,
        id: &id,
        event_type: &event_type,
        resource: Some(source),
        subject: ev.subject,
        time: ev.time,
        time_field: "time",
        data: ev.data,
    })
    .map_err(&fail)?;
    Ok(record(event, raw))
}

#[cfg(test)]
mod tests {
    use super::super::{parse, BlobEvent, EventError, RecordError, RecordResult};
    use super::*;

    const CREATED: &[u8] = include_bytes!("../../fixtures/events/cloudevents.json");
    const ID: &str = "9aeb0fdf-c01e-0131-0922-9eb54906e209";

    fn single(body: &[u8]) -> RecordResult {
        let mut results = parse(body, None);
        assert_eq!(results.len(), 1);
        results.pop().unwrap()
    }

    fn with_field(field: &str, value: Option<serde_json::Value>) -> Vec<u8> {
        let mut event: serde_json::Value = serde_json::from_slice(CREATED).unwrap();
        let map = event.as_object_mut().unwrap();
        match value {
            Some(value) => map.insert(field.to_owned(), value),
            None => map.remove(field),
        };
        serde_json::to_vec(&event).unwrap()
    }

    fn malformed(result: RecordResult) -> (String, Option<String>) {
        match result {
            Err(RecordError {
                error: EventError::Malformed(detail),
                event_id,
            }) => (detail, event_id),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn created_fixture_parses() {
        let record = single(CREATED).unwrap();
        assert_eq!(
            record.event,
            BlobEvent {
                id: ID.into(),
                format: EventFormat::CloudEvents,
                event_type: "Microsoft.Storage.BlobCreated".into(),
                account: Some("qcanalyzerprod".into()),
                container: "qc-analyzer-landing".into(),
                path: "results/plantation-7/tea/batch-0044.json".into(),
                size: Some(17902),
                etag: Some("0x8DC73F1D5A0B6F2".into()),
                content_type: Some("application/json".into()),
                event_time: Some("2024-05-14T09:22:05.1234567Z".into()),
            }
        );
        let original: serde_json::Value = serde_json::from_slice(CREATED).unwrap();
        let raw: serde_json::Value = serde_json::from_str(record.raw.get()).unwrap();
        assert_eq!(raw, original);
    }

    #[test]
    fn other_types_are_unsupported_with_id() {
        let result = single(&with_field(
            "type",
            Some("Microsoft.Storage.BlobDeleted".into()),
        ));
        assert_eq!(
            result.unwrap_err(),
            RecordError {
                error: EventError::Unsupported(
                    "event type `Microsoft.Storage.BlobDeleted` is not a blob-created event".into()
                ),
                event_id: Some(ID.into()),
            }
        );
    }

    #[test]
    fn non_storage_event_without_subject_is_unsupported() {
        let body =
            br#"{"specversion":"1.0","id":"a1","type":"com.example.ping","source":"/example"}"#;
        let err = single(body).unwrap_err();
        assert!(matches!(err.error, EventError::Unsupported(_)), "{err:?}");
        assert_eq!(err.event_id.as_deref(), Some("a1"));
    }

    #[test]
    fn specversion_must_be_1_0() {
        let (detail, id) = malformed(single(&with_field("specversion", Some("0.3".into()))));
        assert_eq!(
            (detail.as_str(), id),
            (
                "unsupported CloudEvents specversion `0.3` (expected `1.0`)",
                None
            )
        );
        let (detail, _) = malformed(single(&with_field("specversion", Some(1.0.into()))));
        assert_eq!(detail, "field `specversion` must be a string");
    }

    #[test]
    fn required_fields() {
        let (detail, id) = malformed(single(&with_field("id", None)));
        assert_eq!((detail.as_str(), id), ("missing field `id`", None));
        for field in ["type", "source", "subject"] {
            let (detail, id) = malformed(single(&with_field(field, None)));
            assert_eq!(detail, format!("missing field `{field}`"));
            assert_eq!(id.as_deref(), Some(ID));
        }
    }

    #[test]
    fn wrong_types_are_malformed_naming_the_field() {
        for (field, value, detail) in [
            (
                "type",
                serde_json::json!(1),
                "field `type` must be a string",
            ),
            (
                "source",
                serde_json::json!([]),
                "field `source` must be a string",
            ),
            (
                "subject",
                serde_json::json!(false),
                "field `subject` must be a string",
            ),
            (
                "time",
                serde_json::json!({}),
                "field `time` must be a string",
            ),
            (
                "data",
                serde_json::json!([1]),
                "field `data` must be an object",
            ),
            (
                "data",
                serde_json::json!({"contentLength": 1.5}),
                "field `data.contentLength` must be a non-negative integer",
            ),
            (
                "data",
                serde_json::json!({"contentType": 0}),
                "field `data.contentType` must be a string",
            ),
        ] {
            let (got, id) = malformed(single(&with_field(field, Some(value))));
            assert_eq!(got, detail);
            assert_eq!(id.as_deref(), Some(ID));
        }
    }

    #[test]
    fn non_storage_source_has_no_account() {
        let record = single(&with_field("source", Some("/some/other/source".into()))).unwrap();
        assert_eq!(record.event.account, None);
        assert_eq!(record.event.container, "qc-analyzer-landing");
    }
}
