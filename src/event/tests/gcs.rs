//! Tests of the gcs format.

use super::super::testing::{
    json, malformed, raw_json, single, unsupported, with_field, with_fields,
};
use super::*;

const CREATED: &[u8] = include_bytes!("../../../fixtures/events/gcs.json");
const ID: &str = "qc-analyzer-landing/results/plantation-7/tea/batch-0042.json/1715678497512345";
const FINALIZE: Option<&str> = Some("OBJECT_FINALIZE");

fn expected() -> BlobEvent<'static> {
    BlobEvent {
        id: ID.into(),
        format: EventFormat::Gcs,
        event_type: "OBJECT_FINALIZE".into(),
        account: None,
        container: "qc-analyzer-landing".into(),
        path: "results/plantation-7/tea/batch-0042.json".into(),
        size: Some(18234),
        etag: Some("CJnP3Kz7nIYDEAE=".into()),
        content_type: Some("application/json".into()),
        event_time: Some("2024-05-14T09:21:37.518Z".into()),
    }
}

#[test]
fn finalize_fixture_parses() {
    let record = single(CREATED, FINALIZE).unwrap();
    assert_eq!(record.event, expected());
    assert_eq!(raw_json(&record), json(CREATED));
}

#[test]
fn other_event_types_are_unsupported_with_id() {
    assert_eq!(
        unsupported(single(CREATED, Some("OBJECT_DELETE"))),
        (
            "GCS event type `OBJECT_DELETE` is not a blob-created event".into(),
            Some(ID.into())
        )
    );
}

#[test]
fn missing_header_is_unsupported() {
    assert_eq!(
        unsupported(single(CREATED, None)),
        (
            "GCS notification without eventType header".into(),
            Some(ID.into())
        )
    );
}

#[test]
fn size_may_be_a_number() {
    let body = with_field(CREATED, "size", Some(18234.into()));
    let record = single(&body, FINALIZE).unwrap();
    assert_eq!(record.event.size, Some(18234));
}

#[test]
fn bad_sizes_are_malformed() {
    for value in [
        serde_json::json!("12kB"),
        serde_json::json!("-1"),
        serde_json::json!("99999999999999999999999"),
        serde_json::json!(-1),
        serde_json::json!(1.5),
        serde_json::json!([]),
    ] {
        assert_eq!(
            malformed(single(&with_field(CREATED, "size", Some(value)), FINALIZE)),
            (
                "field `size` must be a non-negative integer or a decimal string".into(),
                Some(ID.into())
            )
        );
    }
}

#[test]
fn wrong_types_are_malformed_naming_the_field() {
    for (field, value, detail, id) in [
        (
            "bucket",
            serde_json::json!(1),
            "field `bucket` must be a string",
            Some(ID),
        ),
        (
            "name",
            serde_json::json!({}),
            "field `name` must be a string",
            Some(ID),
        ),
        (
            "name",
            serde_json::json!(""),
            "field `name` must not be empty",
            Some(ID),
        ),
        (
            "etag",
            serde_json::json!(false),
            "field `etag` must be a string",
            Some(ID),
        ),
        (
            "timeCreated",
            serde_json::json!(0),
            "field `timeCreated` must be a string",
            Some(ID),
        ),
        (
            "id",
            serde_json::json!(5),
            "field `id` must be a string",
            None,
        ),
    ] {
        let (got, got_id) = malformed(single(&with_field(CREATED, field, Some(value)), FINALIZE));
        assert_eq!(got, detail, "{field}");
        assert_eq!(got_id.as_deref(), id, "{field}");
    }
}

#[test]
fn without_id_the_id_is_derived_and_stable() {
    let body = with_field(CREATED, "id", None);
    let first = single(&body, FINALIZE).unwrap();
    let again = single(&body, FINALIZE).unwrap();
    assert_eq!(first.event.id, again.event.id);
    assert_eq!(first.event.id, derive_id(EventFormat::Gcs, first.raw.get()));
    assert!(first.event.id.starts_with("gcs-"));
    assert_eq!(
        first.event,
        BlobEvent {
            id: first.event.id.clone(),
            ..expected()
        }
    );
}

#[test]
fn updated_is_the_fallback_event_time() {
    let body = with_fields(
        CREATED,
        &[
            ("timeCreated", None),
            ("updated", Some("2024-05-14T09:30:00.000Z".into())),
        ],
    );
    let record = single(&body, FINALIZE).unwrap();
    assert_eq!(
        record.event.event_time.as_deref(),
        Some("2024-05-14T09:30:00.000Z")
    );
}
