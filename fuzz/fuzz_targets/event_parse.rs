//! Fuzz target: event parsing, the first thing a hostile message reaches.
//!
//! Input: `<eventType header>\0<body>`, or just `<body>` when there is no NUL (no header).
//! A raw NUL can never be part of a readable JSON body, so this costs no coverage and
//! keeps the corpus files readable.
//!
//! Checked on every input, beyond "never panics":
//! - a message yields at least one result, one per record of a readable `[..]` or
//!   `{"Records": [..]}` (or one error for the whole message);
//! - a parsed record is routable: non-empty id, container and path; a created event type
//!   of its own format; an Azure container without `/`; an account only for Azure, never
//!   empty; its raw JSON an object, a piece of the body; a derived id that is
//!   `derive_id` of that raw JSON (so a dead letter's replay gets the same id);
//! - the output built from each result is well-formed: routed headers and dead-letter
//!   headers hold no control characters (no header injection), the routed envelope
//!   serializes, and a dead letter reads back with its reason and event id;
//! - parsing is deterministic (a redelivery is routed the same way).

#![no_main]

use std::time::SystemTime;

use async_nats::HeaderMap;
use blob_router::config::SourceConfig;
use blob_router::event::{self, derive_id, EventFormat, ParsedRecord, RecordError};
use blob_router::output::{self, DeadLetter, Envelope, InputMessage, Reason, Received};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|&b| b == 0) {
        Some(i) => match std::str::from_utf8(&data[..i]) {
            Ok(header) => (Some(header), &data[i + 1..]),
            Err(_) => return,
        },
        None => (None, data),
    };

    let results = event::parse(body, header);
    check_count(body, results.len(), results[0].is_err());
    let input = Bytes::copy_from_slice(body);
    for (idx, result) in results.iter().enumerate() {
        match result {
            Ok(record) => check_record(record, body, header),
            Err(error) => check_error(error, &input, idx),
        }
    }

    let again = event::parse(body, header);
    assert!(
        results
            .iter()
            .map(comparable)
            .eq(again.iter().map(comparable)),
        "parsing the same message twice gave different results"
    );
});

/// What a result means to the router, for the determinism check.
fn comparable<'r>(
    result: &'r event::RecordResult<'_>,
) -> Result<(&'r event::BlobEvent<'r>, &'r str), &'r RecordError> {
    result.as_ref().map(|r| (&r.event, r.raw.get()))
}

/// Only the `Records` key, to count the records of an S3/MinIO message.
#[derive(Deserialize)]
struct Records<'a> {
    #[serde(rename = "Records", borrow)]
    records: Option<&'a RawValue>,
}

/// One result per record: a readable message with N records gives N, anything else one
/// error (a message that fails as a whole may also give a single error).
fn check_count(body: &[u8], count: usize, first_is_err: bool) {
    assert!(count > 0, "parse returned no result");
    let Ok(text) = std::str::from_utf8(body) else {
        return assert_eq!(count, 1);
    };
    let array_len = |raw: &str| {
        serde_json::from_str::<Vec<&RawValue>>(raw)
            .ok()
            .map(|v| v.len())
            .filter(|&n| n > 0)
    };
    if text.trim_start().starts_with('[') {
        if let Some(n) = array_len(text) {
            return assert_eq!(count, n, "one result per array element");
        }
    } else if let Ok(Records { records: Some(r) }) = serde_json::from_str::<Records>(text) {
        if let Some(n) = array_len(r.get()) {
            if count == 1 && first_is_err {
                return;
            }
            return assert_eq!(count, n, "one result per S3 record");
        }
    }
    assert_eq!(count, 1, "one result for a message without records");
}

fn check_record(record: &ParsedRecord<'_>, body: &[u8], header: Option<&str>) {
    let e = &record.event;
    assert!(!e.id.is_empty(), "empty id: {e:?}");
    assert!(!e.container.is_empty(), "empty container: {e:?}");
    assert!(!e.path.is_empty(), "empty path: {e:?}");
    let created = match e.format {
        EventFormat::EventGrid | EventFormat::CloudEvents => {
            e.event_type == "Microsoft.Storage.BlobCreated"
        }
        EventFormat::S3 => e.event_type.starts_with("ObjectCreated:"),
        EventFormat::Minio => e.event_type.starts_with("s3:ObjectCreated:"),
        EventFormat::Gcs => e.event_type == "OBJECT_FINALIZE" && header == Some("OBJECT_FINALIZE"),
    };
    assert!(created, "not a created event: {e:?} (header {header:?})");
    if record.plain {
        // The envelope copies a plain record's strings without looking at them.
        for s in e.strings() {
            let written = serde_json::to_string(s).expect("a string serializes");
            assert_eq!(
                written.len(),
                s.len() + 2,
                "{s:?} is marked plain but needs escaping"
            );
        }
    }
    match e.format {
        EventFormat::EventGrid | EventFormat::CloudEvents => {
            assert!(
                !e.container.contains('/'),
                "Azure container with `/`: {e:?}"
            );
            if let Some(account) = &e.account {
                assert!(!account.is_empty() && !account.contains('/'), "{e:?}");
            }
        }
        EventFormat::S3 | EventFormat::Minio => {
            assert_eq!(e.account, None);
            assert_eq!(
                e.id,
                derive_id(e.format, record.raw.get()),
                "S3 ids are derived"
            );
        }
        EventFormat::Gcs => assert_eq!(e.account, None),
    }
    let raw = record.raw.get();
    assert!(
        raw.starts_with('{'),
        "a record's raw JSON is an object: {raw}"
    );
    let body_range = body.as_ptr_range();
    assert!(
        body_range.start <= raw.as_ptr() && raw.as_bytes().as_ptr_range().end <= body_range.end,
        "a record's raw JSON is a piece of the body"
    );

    // The routed message: its headers and envelope.
    let config = config();
    let headers = output::routed_headers(e, config);
    check_headers(&headers);
    let envelope = Envelope::new(config, &[], record).to_bytes();
    let back: serde_json::Value = serde_json::from_slice(&envelope).expect("envelope is JSON");
    assert_eq!(back["event"]["path"].as_str(), Some(&*e.path));
}

fn check_error(error: &RecordError, input: &Bytes, idx: usize) {
    if let Some(id) = &error.event_id {
        assert!(!id.is_empty(), "an error names an empty event id");
    }
    let detail = error.error.to_string();
    assert!(!detail.is_empty(), "an error without a message");
    let reason = Reason::from(&error.error);
    let message = InputMessage {
        subject: "blob.events",
        payload: input,
        headers: None,
        stream: "BLOB_EVENTS",
        stream_seq: 1,
        received_at: Received::At(SystemTime::UNIX_EPOCH),
    };
    let headers =
        output::dead_letter_headers(&message, idx, reason, &detail, error.event_id.as_deref());
    check_headers(&headers);
    let read = DeadLetter::read(Some(&headers), input.clone()).expect("a dead letter reads back");
    assert_eq!(read.reason, reason);
    assert_eq!(read.event_id.is_some(), error.event_id.is_some());
}

/// A header value with a control character would break the NATS wire format.
fn check_headers(headers: &HeaderMap) {
    for (name, values) in headers.iter() {
        for value in values {
            assert!(
                !value.as_str().chars().any(char::is_control),
                "header {name} has a control character: {:?}",
                value.as_str()
            );
        }
    }
}

/// One valid config to build routed output with.
fn config() -> &'static SourceConfig {
    static CONFIG: std::sync::OnceLock<SourceConfig> = std::sync::OnceLock::new();
    CONFIG.get_or_init(|| {
        let doc = serde_json::json!({
            "_id": "fuzz",
            "ingestion": {"mode": "blob_trigger", "landing_container": "c"}
        });
        SourceConfig::from_value(&doc, "blob.routed").expect("a valid config")
    })
}
