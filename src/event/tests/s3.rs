//! Tests of the s3 format.

use super::super::parse as parse_message;
use super::super::testing::{json, malformed, single, unsupported};
use super::*;

const S3: &[u8] = include_bytes!("../../../fixtures/events/s3.json");
const MINIO: &[u8] = include_bytes!("../../../fixtures/events/minio.json");

fn s3_message(records: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "Records": records })).unwrap()
}

fn s3_record(name: &str, key: &str) -> serde_json::Value {
    serde_json::json!({
        "eventSource": "aws:s3",
        "eventName": name,
        "s3": {"bucket": {"name": "qc-analyzer-landing"}, "object": {"key": key}},
    })
}

/// The detail of the message's only record, which must be Malformed and have no id.
fn malformed_detail(body: &[u8]) -> String {
    let (detail, id) = malformed(single(body, None));
    assert_eq!(id, None, "expected Malformed without id");
    detail
}

#[test]
fn s3_fixture_yields_two_records() {
    let results = parse_message(S3, None);
    assert_eq!(results.len(), 2);
    let first = results[0].as_ref().unwrap();
    let second = results[1].as_ref().unwrap();
    assert_eq!(
        first.event,
        BlobEvent {
            id: first.event.id.clone(),
            format: EventFormat::S3,
            event_type: "ObjectCreated:Put".into(),
            account: None,
            container: "qc-analyzer-landing".into(),
            path: "results/plantation-7/tea/batch-0042.json".into(),
            size: Some(18234),
            etag: Some("0c1b2a3f4e5d6c7b8a99887766554433".into()),
            content_type: None,
            event_time: Some("2024-05-14T09:21:37.512Z".into()),
        }
    );
    assert_eq!(
        second.event,
        BlobEvent {
            id: second.event.id.clone(),
            format: EventFormat::S3,
            event_type: "ObjectCreated:CompleteMultipartUpload".into(),
            account: None,
            container: "qc-analyzer-landing".into(),
            path: "results/plantation-7/green tea/batch-0043 (retry):2.json".into(),
            size: Some(20517),
            etag: Some("9f8e7d6c5b4a39281706f5e4d3c2b1a0-3".into()),
            content_type: None,
            event_time: Some("2024-05-14T09:21:38.044Z".into()),
        }
    );
    assert_ne!(first.event.id, second.event.id);
    // Each id is derived from that record's own raw JSON, which is kept as `raw`.
    for record in [first, second] {
        assert_eq!(
            record.event.id,
            derive_id(EventFormat::S3, record.raw.get())
        );
        assert!(record.raw.get().starts_with('{'));
        assert!(record.raw.get().contains("\"eventSource\": \"aws:s3\""));
    }
}

#[test]
fn derived_ids_are_stable_across_redeliveries() {
    let ids = |body: &[u8]| -> Vec<String> {
        parse_message(body, None)
            .into_iter()
            .map(|r| r.unwrap().event.id.into_owned())
            .collect()
    };
    let first = ids(S3);
    let redelivered = S3.to_vec();
    assert_eq!(first, ids(&redelivered));
    assert!(first
        .iter()
        .all(|id| id.starts_with("s3-") && id.len() == 35));
    // Other bytes, other id.
    let reformatted = serde_json::to_vec(&json(S3)).unwrap();
    assert_ne!(first, ids(&reformatted));
}

#[test]
fn minio_fixture_parses() {
    let results = parse_message(MINIO, None);
    assert_eq!(results.len(), 1);
    let record = results[0].as_ref().unwrap();
    assert_eq!(
        record.event,
        BlobEvent {
            id: derive_id(EventFormat::Minio, record.raw.get()).into(),
            format: EventFormat::Minio,
            event_type: "s3:ObjectCreated:Put".into(),
            account: None,
            container: "qc-analyzer-landing".into(),
            path: "results/plantation-7/tea/batch-0042.json".into(),
            size: Some(18234),
            etag: Some("0c1b2a3f4e5d6c7b8a99887766554433".into()),
            content_type: Some("application/json".into()),
            event_time: Some("2024-05-14T09:21:37.512Z".into()),
        }
    );
    assert!(record.event.id.starts_with("minio-"));
}

#[test]
fn minio_is_detected_by_event_source_alone() {
    let mut record = s3_record("s3:ObjectCreated:Put", "a%2Fb.json");
    record["eventSource"] = "minio:s3".into();
    let body = s3_message(serde_json::json!([record]));
    let results = parse_message(&body, None);
    let event = &results[0].as_ref().unwrap().event;
    assert_eq!(event.format, EventFormat::Minio);
    assert_eq!(event.path, "a/b.json");
}

#[test]
fn key_is_url_decoded_plus_first() {
    assert_eq!(decode_key("a+b%2Fc").unwrap(), "a b/c");
    assert_eq!(decode_key("a%2Bb").unwrap(), "a+b");
    assert_eq!(decode_key("plain/key.json").unwrap(), "plain/key.json");
    assert_eq!(decode_key("caf%C3%A9").unwrap(), "caf\u{e9}");
    // A stray `%` that is not an escape stays as it is.
    assert_eq!(decode_key("100%").unwrap(), "100%");
    let body = s3_message(serde_json::json!([s3_record(
        "ObjectCreated:Put",
        "a+b%2Fc"
    )]));
    let results = parse_message(&body, None);
    assert_eq!(results[0].as_ref().unwrap().event.path, "a b/c");
}

#[test]
fn key_that_decodes_to_invalid_utf8_is_malformed() {
    let body = s3_message(serde_json::json!([s3_record(
        "ObjectCreated:Put",
        "bad%FF.json"
    )]));
    assert_eq!(
        malformed_detail(&body),
        "field `s3.object.key` is not valid UTF-8 after URL-decoding"
    );
}

#[test]
fn non_created_events_are_unsupported() {
    for (name, detail) in [
        (
            "ObjectRemoved:Delete",
            "event name `ObjectRemoved:Delete` is not an object-created event",
        ),
        (
            "s3:ObjectCreated:Put",
            "event name `s3:ObjectCreated:Put` is not an object-created event",
        ),
    ] {
        let body = s3_message(serde_json::json!([s3_record(name, "k")]));
        let result = single(&body, None);
        assert_eq!(unsupported(result), (detail.into(), None));
    }
    let mut minio = json(MINIO);
    minio["Records"][0]["eventName"] = "s3:ObjectRemoved:Delete".into();
    unsupported(single(&serde_json::to_vec(&minio).unwrap(), None));
    let mut record = s3_record("ObjectCreated:Put", "k");
    record["eventSource"] = "aws:sqs".into();
    let (detail, _) = unsupported(single(&s3_message(serde_json::json!([record])), None));
    assert_eq!(detail, "event source `aws:sqs` is not `aws:s3`");
}

#[test]
fn one_bad_record_does_not_spoil_the_others() {
    let body = s3_message(serde_json::json!([
        s3_record("ObjectRemoved:Delete", "gone.json"),
        s3_record("ObjectCreated:Copy", "kept.json"),
        42,
    ]));
    let results = parse_message(&body, None);
    assert_eq!(results.len(), 3);
    assert!(matches!(
        results[0].as_ref().unwrap_err().error,
        EventError::Unsupported(_)
    ));
    assert_eq!(results[1].as_ref().unwrap().event.path, "kept.json");
    assert_eq!(
        results[2].as_ref().unwrap_err().error,
        EventError::Malformed("each of `Records` must be an object".into())
    );
}

#[test]
fn empty_or_non_array_records_are_malformed() {
    assert_eq!(
        malformed_detail(br#"{"Records":[]}"#),
        "empty `Records` array"
    );
    assert_eq!(
        malformed_detail(br#"{"Records":{"eventSource":"aws:s3"}}"#),
        "field `Records` must be an array"
    );
}

#[test]
fn wrong_types_are_malformed_naming_the_field() {
    type Mutation = fn(&mut serde_json::Value);
    let cases: [(Mutation, &str); 9] = [
        (
            |r| r["eventSource"] = 1.into(),
            "field `eventSource` must be a string",
        ),
        (
            |r| r["eventName"] = serde_json::json!(null),
            "missing field `eventName`",
        ),
        (
            |r| r["eventName"] = serde_json::json!([]),
            "field `eventName` must be a string",
        ),
        (|r| r["s3"] = "x".into(), "field `s3` must be an object"),
        (
            |r| r["s3"]["bucket"]["name"] = 7.into(),
            "field `s3.bucket.name` must be a string",
        ),
        (
            |r| r["s3"]["object"]["key"] = true.into(),
            "field `s3.object.key` must be a string",
        ),
        (
            |r| r["s3"]["object"]["size"] = "12".into(),
            "field `s3.object.size` must be a non-negative integer",
        ),
        (
            |r| r["s3"]["object"]["eTag"] = 12.into(),
            "field `s3.object.eTag` must be a string",
        ),
        (
            |r| r["eventTime"] = 12.into(),
            "field `eventTime` must be a string",
        ),
    ];
    for (mutate, detail) in cases {
        let mut record = s3_record("ObjectCreated:Put", "k");
        mutate(&mut record);
        assert_eq!(
            malformed_detail(&s3_message(serde_json::json!([record]))),
            detail
        );
    }
    let mut record = s3_record("ObjectCreated:Put", "k");
    record["s3"].as_object_mut().unwrap().remove("object");
    assert_eq!(
        malformed_detail(&s3_message(serde_json::json!([record]))),
        "missing field `s3.object`"
    );
}
