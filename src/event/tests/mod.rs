//! Tests of format detection and the shared parsing helpers; each format's own tests
//! sit beside these in a file named after it.

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
        include_bytes!("../../../fixtures/events/not-json.txt"),
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
    let good = json(include_bytes!("../../../fixtures/events/eventgrid.json"));
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
        std::str::from_utf8(include_bytes!("../../../fixtures/events/s3.json")).unwrap()
    );
    let detail = malformed_detail(single(body.as_bytes(), None));
    assert!(
        detail.starts_with("unrecognised event shape in array"),
        "{detail}"
    );
}

#[test]
fn mixed_array_of_event_grid_and_cloudevents() {
    let eg = json(include_bytes!("../../../fixtures/events/eventgrid.json"));
    let ce = json(include_bytes!("../../../fixtures/events/cloudevents.json"));
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
    let (a, a2, b) = (r#"{"k":"a"}"#, r#"{"k":"a"}"#, r#"{"k":"b"}"#);
    let id = derive_id(EventFormat::S3, a);
    assert_eq!(id, derive_id(EventFormat::S3, a2));
    assert_ne!(id, derive_id(EventFormat::S3, b));
    assert_ne!(id, derive_id(EventFormat::Minio, a));
    assert!(id.starts_with("s3-"));
    assert_eq!(id.len(), "s3-".len() + 32);
    assert!(id[3..].bytes().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn a_repeated_key_the_one_pass_read_refuses_is_read_the_usual_way() {
    // An S3 message repeating a key of the Azure schemas: S3 never reads it, so the
    // message routes as it did before the one-pass read existed.
    let s3 = include_bytes!("../../../fixtures/events/s3.json");
    let text = std::str::from_utf8(s3).unwrap().trim_start();
    let repeated = format!(
        r#"{{"data": 1, "data": 2, "id": 3, "id": 4, {}"#,
        &text[1..]
    );
    let expected = parse(s3, None);
    let got = parse(repeated.as_bytes(), None);
    assert_eq!(got.len(), expected.len());
    for (got, expected) in got.iter().zip(&expected) {
        let (got, expected) = (got.as_ref().unwrap(), expected.as_ref().unwrap());
        assert_eq!(got.event, expected.event);
        assert_eq!(got.raw.get(), expected.raw.get());
    }
    // An Event Grid event repeating its own `id`: refused by the Event Grid read, with
    // the same reason as before.
    let eg = include_bytes!("../../../fixtures/events/eventgrid.json");
    let text = std::str::from_utf8(eg).unwrap().trim_start();
    let repeated = format!(r#"{{"id": "first", {}"#, &text[1..]);
    let detail = malformed_detail(single(repeated.as_bytes(), None));
    assert!(detail.contains("duplicate field `id`"), "{detail}");
}
