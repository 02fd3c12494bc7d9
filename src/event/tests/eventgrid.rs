//! Tests of the eventgrid format.

use super::super::testing::{
    json, malformed, raw_json, single, unsupported, with_field, with_fields,
};
use super::super::{parse, BlobEvent};
use super::*;

const CREATED: &[u8] = include_bytes!("../../../fixtures/events/eventgrid.json");
const ARRAY: &[u8] = include_bytes!("../../../fixtures/events/eventgrid-array.json");
const DELETED: &[u8] = include_bytes!("../../../fixtures/events/eventgrid-deleted.json");

fn expected_0042() -> BlobEvent<'static> {
    BlobEvent {
        id: "831e1650-001e-001b-66ab-eeb76e069631".into(),
        format: EventFormat::EventGrid,
        event_type: "Microsoft.Storage.BlobCreated".into(),
        account: Some("qcanalyzerprod".into()),
        container: "qc-analyzer-landing".into(),
        path: "results/plantation-7/tea/batch-0042.json".into(),
        size: Some(18234),
        etag: Some("0x8DC73F1B2E4A9C1".into()),
        content_type: Some("application/json".into()),
        event_time: Some("2024-05-14T09:21:37.4519823Z".into()),
    }
}

#[test]
fn created_fixture_parses() {
    let record = single(CREATED, None).unwrap();
    assert_eq!(record.event, expected_0042());
    // The raw JSON is the whole event object.
    assert_eq!(raw_json(&record), json(CREATED));
}

/// A routed event's strings are pieces of the message, not copies; only a string with
/// escapes (read unescaped) is one, and the pieces cut from it are too. Read in one pass
/// (the scan) and by the schema's own structs (an escape anywhere), in both Azure schemas.
#[test]
fn strings_borrow_from_the_message_unless_escaped() {
    use super::super::parse_probed;
    /// Whether `s` lies in `message` (a copy never does).
    fn piece_of(s: &str, message: &[u8]) -> bool {
        let range = message.as_ptr_range();
        range.start <= s.as_ptr() && s.as_bytes().as_ptr_range().end <= range.end
    }
    let cloud_events = include_bytes!("../../../fixtures/events/cloudevents.json");
    for message in [CREATED, &cloud_events[..]] {
        for record in [parse(message, None), parse_probed(message, None)] {
            let record = record.into_iter().next().unwrap().unwrap();
            for s in record.event.strings() {
                assert!(piece_of(s, message), "{s:?} is a copy");
            }
            assert!(piece_of(record.raw.get(), message));
        }
    }

    let text = std::str::from_utf8(CREATED).unwrap().replace(
        "/containers/qc-analyzer-landing/blobs/",
        r"/containers/qc-analyzer-\u006canding/blobs/a\/",
    );
    let record = single(text.as_bytes(), None).unwrap();
    let e = &record.event;
    assert_eq!(e.container, "qc-analyzer-landing");
    assert_eq!(e.path, "a/results/plantation-7/tea/batch-0042.json");
    let message = text.as_bytes();
    assert!(!piece_of(&e.container, message) && !piece_of(&e.path, message));
    assert!(piece_of(&e.id, message));
}

#[test]
fn array_fixture_parses_each_element() {
    let results = parse(ARRAY, None);
    assert_eq!(results.len(), 2);
    let first = results[0].as_ref().unwrap();
    let second = results[1].as_ref().unwrap();
    // The array's first element is the same blob as the single fixture, another event.
    let mut expected = expected_0042();
    expected.id = "5b1e77a0-001e-001b-66ab-eeb76e0690aa".into();
    assert_eq!(first.event, expected);
    assert_eq!(
        second.event,
        BlobEvent {
            id: "4c2a7f3e-201e-0052-21ab-eeb7c2000e11".into(),
            path: "results/plantation-7/tea/batch-0043.json".into(),
            size: Some(20517),
            etag: Some("0x8DC73F1C07D5E88".into()),
            event_time: Some("2024-05-14T09:21:59.0871245Z".into()),
            ..expected_0042()
        }
    );
    // Each record's raw JSON is its own array element.
    let elements = json(ARRAY);
    for (result, element) in results.iter().zip(elements.as_array().unwrap()) {
        assert_eq!(&raw_json(result.as_ref().unwrap()), element);
    }
}

#[test]
fn deleted_event_is_unsupported_with_id() {
    assert_eq!(
        unsupported(single(DELETED, None)),
        (
            "event type `Microsoft.Storage.BlobDeleted` is not a blob-created event".into(),
            Some("7d9e2b41-601e-0070-5cab-eeb70b06e2a8".into())
        )
    );
}

#[test]
fn subscription_validation_is_unsupported() {
    let body = br#"[{
        "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
        "topic": "/subscriptions/xx/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/qcanalyzerprod",
        "subject": "",
        "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2024-05-14T09:00:00.0000000Z",
        "metadataVersion": "1",
        "dataVersion": "1"
    }]"#;
    let (_, id) = unsupported(single(body, None));
    assert_eq!(id.as_deref(), Some("2d1781af-3a4c-4d7c-bd0c-e34b19da4e66"));
}

#[test]
fn wrong_types_are_malformed_naming_the_field() {
    let cases = [
        (
            "id",
            serde_json::json!(17),
            "field `id` must be a string",
            None,
        ),
        (
            "eventType",
            serde_json::json!(["x"]),
            "field `eventType` must be a string",
            Some("831e1650-001e-001b-66ab-eeb76e069631"),
        ),
        (
            "subject",
            serde_json::json!({"a": 1}),
            "field `subject` must be a string",
            Some("831e1650-001e-001b-66ab-eeb76e069631"),
        ),
        (
            "topic",
            serde_json::json!(true),
            "field `topic` must be a string",
            Some("831e1650-001e-001b-66ab-eeb76e069631"),
        ),
        (
            "eventTime",
            serde_json::json!(1715678497),
            "field `eventTime` must be a string",
            Some("831e1650-001e-001b-66ab-eeb76e069631"),
        ),
        (
            "data",
            serde_json::json!("data"),
            "field `data` must be an object",
            Some("831e1650-001e-001b-66ab-eeb76e069631"),
        ),
        (
            // An array would fill a struct by position: still not an object.
            "data",
            serde_json::json!([18234, "0x1", "application/json"]),
            "field `data` must be an object",
            Some("831e1650-001e-001b-66ab-eeb76e069631"),
        ),
        (
            "data",
            serde_json::json!({"contentLength": "18234"}),
            "field `data.contentLength` must be a non-negative integer",
            Some("831e1650-001e-001b-66ab-eeb76e069631"),
        ),
        (
            "data",
            serde_json::json!({"contentLength": -1}),
            "field `data.contentLength` must be a non-negative integer",
            Some("831e1650-001e-001b-66ab-eeb76e069631"),
        ),
        (
            "data",
            serde_json::json!({"eTag": 5}),
            "field `data.eTag` must be a string",
            Some("831e1650-001e-001b-66ab-eeb76e069631"),
        ),
        (
            "id",
            serde_json::json!(""),
            "field `id` must not be empty",
            None,
        ),
    ];
    for (field, value, detail, id) in cases {
        let body = with_field(CREATED, field, Some(value));
        let result = single(&body, None);
        assert_eq!(
            malformed(result),
            (detail.to_owned(), id.map(str::to_owned))
        );
    }
}

#[test]
fn missing_required_fields_are_malformed() {
    let (detail, id) = malformed(single(&with_field(CREATED, "id", None), None));
    assert_eq!((detail.as_str(), id), ("missing field `id`", None));
    // Without `eventType` or `subject` the object is no longer recognisable.
    for field in ["eventType", "subject"] {
        let (detail, _) = malformed(single(&with_field(CREATED, field, None), None));
        assert_eq!(detail, "unrecognised event shape");
    }
}

#[test]
fn bad_subject_is_malformed_with_id() {
    for subject in [
        "/blobServices/default/containers/qc-analyzer-landing/blobs/",
        "/blobServices/default/containers//blobs/a.json",
        "/blobServices/default/containers/qc-analyzer-landing",
        "qc-analyzer-landing/a.json",
    ] {
        let (detail, id) = malformed(single(
            &with_field(CREATED, "subject", Some(subject.into())),
            None,
        ));
        assert!(detail.starts_with("field `subject`"), "{detail}");
        assert_eq!(id.as_deref(), Some("831e1650-001e-001b-66ab-eeb76e069631"));
    }
}

#[test]
fn optional_fields_may_be_missing_or_null() {
    let body = with_fields(
        CREATED,
        &[
            ("topic", None),
            ("eventTime", None),
            ("data", Some(serde_json::Value::Null)),
        ],
    );
    let record = single(&body, None).unwrap();
    assert_eq!(
        record.event,
        BlobEvent {
            account: None,
            size: None,
            etag: None,
            content_type: None,
            event_time: None,
            ..expected_0042()
        }
    );
}

#[test]
fn escaped_strings_are_decoded() {
    let body = with_field(
        CREATED,
        "subject",
        Some("/blobServices/default/containers/c/blobs/r\u{e9}sultats/\"q\"\\x".into()),
    );
    let body = String::from_utf8(body)
        .unwrap()
        .replace('\u{e9}', "\\u00e9");
    let record = single(body.as_bytes(), None).unwrap();
    assert_eq!(record.event.container, "c");
    assert_eq!(record.event.path, "r\u{e9}sultats/\"q\"\\x");
}
