//! Property tests: no input makes the parser panic, and generated events round-trip.

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
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(
                (
                    prop::sample::select(TOKENS).prop_filter("key", |t| t.starts_with('"')),
                    inner
                ),
                0..6
            )
            .prop_map(|kv| {
                let fields: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
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
