//! Tests of the cloudevents format.

use super::super::testing::{json, malformed, raw_json, single, unsupported, with_field};
use super::super::BlobEvent;
use super::*;

const CREATED: &[u8] = include_bytes!("../../../fixtures/events/cloudevents.json");
const ID: &str = "9aeb0fdf-c01e-0131-0922-9eb54906e209";

#[test]
fn created_fixture_parses() {
    let record = single(CREATED, None).unwrap();
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
    assert_eq!(raw_json(&record), json(CREATED));
}

#[test]
fn other_types_are_unsupported_with_id() {
    let deleted = with_field(
        CREATED,
        "type",
        Some("Microsoft.Storage.BlobDeleted".into()),
    );
    assert_eq!(
        unsupported(single(&deleted, None)),
        (
            "event type `Microsoft.Storage.BlobDeleted` is not a blob-created event".into(),
            Some(ID.into())
        )
    );
}

#[test]
fn non_storage_event_without_subject_is_unsupported() {
    let body = br#"{"specversion":"1.0","id":"a1","type":"com.example.ping","source":"/example"}"#;
    let (_, id) = unsupported(single(body, None));
    assert_eq!(id.as_deref(), Some("a1"));
}

#[test]
fn specversion_must_be_1_0() {
    let (detail, id) = malformed(single(
        &with_field(CREATED, "specversion", Some("0.3".into())),
        None,
    ));
    assert_eq!(
        (detail.as_str(), id),
        (
            "unsupported CloudEvents specversion `0.3` (expected `1.0`)",
            None
        )
    );
    let (detail, _) = malformed(single(
        &with_field(CREATED, "specversion", Some(1.0.into())),
        None,
    ));
    assert_eq!(detail, "field `specversion` must be a string");
}

#[test]
fn required_fields() {
    let (detail, id) = malformed(single(&with_field(CREATED, "id", None), None));
    assert_eq!((detail.as_str(), id), ("missing field `id`", None));
    for field in ["type", "source", "subject"] {
        let (detail, id) = malformed(single(&with_field(CREATED, field, None), None));
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
        let (got, id) = malformed(single(&with_field(CREATED, field, Some(value)), None));
        assert_eq!(got, detail);
        assert_eq!(id.as_deref(), Some(ID));
    }
}

#[test]
fn non_storage_source_has_no_account() {
    let body = with_field(CREATED, "source", Some("/some/other/source".into()));
    let record = single(&body, None).unwrap();
    assert_eq!(record.event.account, None);
    assert_eq!(record.event.container, "qc-analyzer-landing");
}
