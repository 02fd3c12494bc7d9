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

/// Event Grid and CloudEvents objects near the real thing: each schema's fields, most
/// with good values, some odd or missing, plus a few other keys (a repeat among them),
/// in any order.
fn azure_event() -> impl Strategy<Value = String> {
    const SUBJECT: &str = "\"/blobServices/default/containers/c/blobs/a/b.json\"";
    const ACCOUNT: &str = "\"/subscriptions/s/providers/Microsoft.Storage/storageAccounts/acct\"";
    const CREATED: &str = "\"Microsoft.Storage.BlobCreated\"";
    const DATA: &str = "{\"contentLength\": 5, \"eTag\": \"0x1\", \"contentType\": \"a/b\"}";
    const EVENT_GRID: &[(&str, &str)] = &[
        ("id", "\"e-1\""),
        ("eventType", CREATED),
        ("subject", SUBJECT),
        ("topic", ACCOUNT),
        ("eventTime", "\"2024-05-14T09:21:37Z\""),
        ("data", DATA),
    ];
    const CLOUD_EVENTS: &[(&str, &str)] = &[
        ("specversion", "\"1.0\""),
        ("id", "\"e-1\""),
        ("type", CREATED),
        ("source", ACCOUNT),
        ("subject", SUBJECT),
        ("time", "\"2024-05-14T09:21:37Z\""),
        ("data", DATA),
    ];
    const ODD: &[&str] = &[
        "null",
        "7",
        "\"\"",
        "{}",
        "[1, {\"deep\": null}]",
        "\"\\u0041\\n\"",
        // Odd `data`: an array a struct would read by position, fields of other
        // types, a repeated key, escapes.
        "[5, \"0x1\", \"a/b\"]",
        "{\"contentLength\": -1}",
        "{\"contentLength\": 1.5}",
        "{\"contentLength\": \"5\", \"eTag\": 7}",
        "{\"contentLength\": 18446744073709551616}",
        "{\"eTag\": \"a\", \"eTag\": \"b\"}",
        "{\"contentLength\": null, \"eTag\": \"\\u00e9\\\"\", \"x\": [1]}",
        "\"/blobServices/default/containers/c/blobs/a\\u002fb\\u0000.json\"",
    ];
    const OTHER_KEYS: &[&str] = &[
        "id",
        "data",
        "dataVersion",
        "metadataVersion",
        "Records",
        "bucket",
        "name",
        "specversion",
    ];
    let schema = prop_oneof![Just(EVENT_GRID), Just(CLOUD_EVENTS)];
    let field = (0..8u8, prop::sample::select(ODD));
    (
        schema,
        prop::collection::vec(field, 7),
        prop::collection::vec(
            (prop::sample::select(OTHER_KEYS), prop::sample::select(ODD)),
            0..3,
        ),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(schema, choices, extra, at)| {
            let mut fields: Vec<String> = schema
                .iter()
                .zip(choices)
                .filter_map(|(&(key, good), (dice, odd))| match dice {
                    0 => None,
                    1 => Some(format!("\"{key}\": {odd}")),
                    _ => Some(format!("\"{key}\": {good}")),
                })
                .collect();
            for (key, value) in extra {
                let i = at.index(fields.len() + 1);
                fields.insert(i, format!("\"{key}\": {value}"));
            }
            format!("{{{}}}", fields.join(", "))
        })
}

/// A record marked `plain` has no string that JSON would escape.
fn check_plain(record: &ParsedRecord) -> Result<(), TestCaseError> {
    if record.plain {
        for s in record.event.strings() {
            let written = serde_json::to_string(s).unwrap();
            prop_assert_eq!(written.len(), s.len() + 2, "{:?} would be escaped", s);
        }
    }
    Ok(())
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
            check_plain(result)?;
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
        let record = results[0].as_ref().unwrap();
        prop_assert_eq!(&record.event.container, &container);
        prop_assert_eq!(&record.event.path, &path);
        check_plain(record)?;
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
        let record = results[0].as_ref().unwrap();
        prop_assert_eq!(&record.event.path, &key);
        // A decoded key may hold anything: an S3 record is never plain.
        prop_assert!(!record.plain);
    }
}

proptest! {
    // Many cases: each odd value of a field shows up in few of them.
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// The one-pass read of an event object (its Azure fields read as strings and
    /// `data` as an object) gives what checking the root value first and then probing
    /// each object and reading it with its schema's own struct gives: the same events,
    /// raw JSON and errors.
    #[test]
    fn the_one_pass_read_agrees_with_probing(
        body in prop_oneof![1 => json_value(), 1 => token_soup(), 3 => azure_event()],
        before in prop::sample::select(&[" ", "", "\n\t", "\r\n ", "\u{feff}", "\x0c", "\u{a0}"][..]),
        after in prop::sample::select(&[" ", "", "\n\t", "\r\n ", "\x0c", "\u{a0}", "x"][..]),
        header in header(),
    ) {
        let body = format!("{before}{body}{after}");
        let fast = parse(body.as_bytes(), header.as_deref());
        let checked = parse_probed(body.as_bytes(), header.as_deref());
        prop_assert_eq!(fast.len(), checked.len());
        for (fast, checked) in fast.iter().zip(&checked) {
            match (fast, checked) {
                (Ok(f), Ok(c)) => {
                    prop_assert_eq!(&f.event, &c.event);
                    prop_assert_eq!(f.raw.get(), c.raw.get());
                    prop_assert_eq!(f.plain, c.plain);
                    check_plain(f)?;
                }
                (Err(f), Err(c)) => prop_assert_eq!(f, c),
                _ => prop_assert!(false, "{:?} against {:?}", fast, checked),
            }
        }
    }
}

/// Fragments that break JSON, or change what an object holds, when put in anywhere.
const DAMAGE: &[&str] = &[
    "",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "-",
    ".",
    "e",
    "0",
    "1",
    " ",
    "\n",
    "\u{1}",
    "n",
    "é",
    "\"id\": 1,",
    "\"data\": {},",
    "\"id\": \"x\",",
];

/// `text` with one to three edits: a character dropped (`""`) or a fragment put in.
fn damaged(text: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    let edit = (any::<prop::sample::Index>(), prop::sample::select(DAMAGE));
    (text, prop::collection::vec(edit, 1..4)).prop_map(|(text, edits)| {
        let mut chars: Vec<char> = text.chars().collect();
        for (at, fragment) in edits {
            let i = at.index(chars.len() + 1);
            if fragment.is_empty() {
                if i < chars.len() {
                    chars.remove(i);
                }
            } else {
                chars.splice(i..i, fragment.chars());
            }
        }
        chars.into_iter().collect()
    })
}

/// Objects with one value the scan passes over: number-like and literal-like text,
/// next to (and inside) an Azure field and `data`.
fn odd_scalars() -> impl Strategy<Value = String> {
    const NUMBER: &[&str] = &["-", "+", "0", "1", "9", ".", "e", "E"];
    const WORD: &[&str] = &[
        "t", "f", "n", "ru", "e", "ll", "als", "true", "tru", "nul", "fals",
    ];
    let pieces = |from: &'static [&'static str]| {
        prop::collection::vec(prop::sample::select(from), 1..5).prop_map(|p| p.concat())
    };
    let scalar = prop_oneof![3 => pieces(NUMBER), 1 => pieces(WORD)];
    (scalar, 0..3u8).prop_map(|(s, at)| match at {
        0 => format!("{{\"x\": {s}, \"id\": \"e\"}}"),
        1 => format!("{{\"data\": {{\"contentLength\": {s}}}}}"),
        _ => format!("{{\"data\": {{\"y\": [{s}]}}, \"x\": {{\"z\": {s}}}}}"),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Where the hand-written scan reads an object, serde's one-pass read reads it to the
    /// same fields: the scan never accepts what serde would refuse, whole or damaged.
    #[test]
    fn the_scan_reads_what_serde_reads(
        body in prop_oneof![
            1 => json_value(),
            3 => azure_event(),
            4 => damaged(azure_event()),
            1 => damaged(json_value()),
            2 => odd_scalars(),
        ]
    ) {
        if let Err(e) = scan::agrees_with_serde(&body) {
            prop_assert!(false, "{}: {}", body, e);
        }
    }
}

/// The scan is not vacuous: it reads most generated Azure events itself.
#[test]
fn the_scan_reads_most_generated_azure_events() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = azure_event();
    let scanned = (0..1000)
        .filter(|_| {
            let body = strategy.new_tree(&mut runner).unwrap().current();
            scan::agrees_with_serde(&body) == Ok(true)
        })
        .count();
    assert!(scanned > 200, "only {scanned} of 1000 scanned");
}
