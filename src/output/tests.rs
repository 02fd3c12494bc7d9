//! The output contract: reasons, ids, header values, and dead letters read back.

use std::time::{Duration, Instant, UNIX_EPOCH};

use super::*;

#[test]
fn reasons_have_distinct_subjects_and_indexes_and_parse_back() {
    let subjects: std::collections::HashSet<_> =
        Reason::ALL.iter().map(|r| r.subject("blob.dlq")).collect();
    assert_eq!(subjects.len(), Reason::ALL.len());
    for (i, r) in Reason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
        assert_eq!(r.as_str().parse::<Reason>(), Ok(*r));
    }
    assert_eq!(
        Reason::NoMatchingConfig.subject("blob.dlq"),
        "blob.dlq.no_matching_config"
    );
    assert_eq!("nope".parse::<Reason>(), Err(UnknownReason("nope".into())));
}

#[test]
fn event_errors_map_to_reasons() {
    assert_eq!(
        Reason::from(&EventError::Malformed("x".into())),
        Reason::MalformedEvent
    );
    assert_eq!(
        Reason::from(&EventError::Unsupported("x".into())),
        Reason::UnsupportedEventType
    );
}

#[test]
fn dedup_ids_are_safe_and_never_collide_by_mangling() {
    assert_eq!(dedup_id("abc-123"), "abc-123");
    let a = dedup_id("evil\r\nid");
    let b = dedup_id("evil  id");
    assert!(!a.contains('\n') && a != b);
    let long1 = "x".repeat(300) + "1";
    let long2 = "x".repeat(300) + "2";
    assert_ne!(dedup_id(&long1), dedup_id(&long2));
    assert!(dedup_id(&long1).len() < 64);
    assert_eq!(routed_msg_id("abc-123", "qc"), "abc-123:qc");
}

#[test]
fn header_values_lose_line_breaks_and_are_bounded() {
    assert_eq!(header_safe("a\r\nb"), "a  b");
    let long = "é".repeat(1000);
    let safe = header_safe(&long);
    assert!(safe.len() <= MAX_DETAIL + '…'.len_utf8());
    assert!(safe.ends_with('…'));
}

fn input(payload: &Bytes) -> InputMessage<'_> {
    InputMessage {
        subject: "blob.events.eventgrid",
        payload,
        headers: None,
        stream: "BLOB_EVENTS",
        stream_seq: 42,
        received_at: Received::At(UNIX_EPOCH + Duration::from_millis(1_795_168_800_123)),
    }
}

#[test]
fn dead_letter_ids_are_stable_and_name_the_record() {
    let body = Bytes::from_static(b"{}");
    let id = dead_letter_msg_id(&input(&body), 1);
    assert!(id.starts_with("dlq:BLOB_EVENTS:42:"), "{id}");
    assert!(id.ends_with(":1"), "{id}");
    assert_eq!(id, dead_letter_msg_id(&input(&body), 1));
    assert_ne!(id, dead_letter_msg_id(&input(&body), 0));
    let other = Bytes::from_static(b"[]");
    assert_ne!(id, dead_letter_msg_id(&input(&other), 1));
}

#[test]
fn a_dead_letter_reads_back_as_written() {
    let body = Bytes::from_static(b"not json");
    let mut h = dead_letter_headers(
        &input(&body),
        0,
        Reason::MalformedEvent,
        "expected value\nat line 1",
        Some("ev-1"),
    );
    h.insert(headers::EVENT_TYPE, "OBJECT_FINALIZE");
    let dl = DeadLetter::read(Some(&h), body.clone()).unwrap();
    assert_eq!(dl.reason, Reason::MalformedEvent);
    assert_eq!(dl.detail, "expected value at line 1");
    assert_eq!(dl.original_subject, "blob.events.eventgrid");
    assert_eq!(
        dl.received_at,
        UNIX_EPOCH + Duration::from_millis(1_795_168_800_123)
    );
    assert_eq!(dl.event_id.as_deref(), Some("ev-1"));
    assert_eq!(dl.truncated, None);
    assert_eq!(dl.payload, body);
    assert_eq!(
        dl.other_headers,
        vec![("eventType".to_string(), "OBJECT_FINALIZE".to_string())]
    );

    mark_truncated(&mut h, 2_000_000);
    assert_eq!(
        DeadLetter::read(Some(&h), body.clone()).unwrap().truncated,
        Some(2_000_000)
    );
}

#[test]
fn a_dead_letter_carries_the_inputs_own_headers_but_not_its_msg_id() {
    let body = Bytes::from_static(b"{}");
    let mut input_headers = HeaderMap::new();
    input_headers.insert(headers::EVENT_TYPE, "OBJECT_FINALIZE");
    input_headers.insert(headers::MSG_ID, "producer-id");
    input_headers.insert("Nats-Expected-Stream", "BLOB_EVENTS");
    input_headers.insert("Blob-Router-Reason", "forged");
    let input = InputMessage {
        headers: Some(&input_headers),
        ..input(&body)
    };
    let h = dead_letter_headers(&input, 0, Reason::MalformedEvent, "x", None);
    let dl = DeadLetter::read(Some(&h), body).unwrap();
    assert_eq!(dl.reason, Reason::MalformedEvent);
    assert_eq!(
        dl.other_headers,
        vec![("eventType".to_string(), "OBJECT_FINALIZE".to_string())]
    );
    assert!(h.get(headers::MSG_ID).unwrap().as_str().starts_with("dlq:"));
}

#[test]
fn what_is_not_a_dead_letter_is_refused_with_the_reason() {
    let body = Bytes::from_static(b"x");
    assert_eq!(
        DeadLetter::read(None, body.clone()).unwrap_err(),
        DeadLetterError::Missing(headers::RECEIVED_AT)
    );
    let mut h = dead_letter_headers(&input(&body), 0, Reason::PublishRejected, "", None);
    h.insert(headers::REASON, "gone_fishing");
    assert_eq!(
        DeadLetter::read(Some(&h), body.clone()).unwrap_err(),
        DeadLetterError::Reason(UnknownReason("gone_fishing".into()))
    );
    h.insert(headers::RECEIVED_AT, "yesterday");
    assert!(matches!(
        DeadLetter::read(Some(&h), body).unwrap_err(),
        DeadLetterError::Invalid { .. }
    ));
}

#[test]
fn only_the_inputs_own_non_jetstream_headers_are_carried() {
    for own in [
        "Nats-Msg-Id",
        "nats-msg-id",
        "Nats-Expected-Stream",
        "Nats-TTL",
        "Blob-Router-Reason",
        "blob-router-x",
    ] {
        assert!(!is_carried_header(own), "{own}");
    }
    for other in ["eventType", "Blob-Routed", "ce-type", "Natsy", ""] {
        assert!(is_carried_header(other), "{other}");
    }
}

#[test]
fn every_dead_letter_of_one_input_replays_under_one_id() {
    let body = Bytes::from_static(b"{}");
    let read = |idx| {
        let h = dead_letter_headers(&input(&body), idx, Reason::NoMatchingConfig, "", None);
        DeadLetter::read(Some(&h), body.clone()).unwrap()
    };
    let (first, second) = (read(0), read(1));
    assert_ne!(first.msg_id, second.msg_id);
    let id = first.replay_msg_id("BLOB_DLQ", 10);
    assert_eq!(id, second.replay_msg_id("BLOB_DLQ", 11));
    assert!(id.starts_with("replay:dlq:BLOB_EVENTS:42:"), "{id}");
    // Not written by the worker: its own position names it.
    let mut foreign = first.clone();
    foreign.msg_id = Some("someone-else".into());
    assert_eq!(foreign.replay_msg_id("BLOB_DLQ", 10), "replay:BLOB_DLQ:10");
}

/// The envelope as serde_json writes it from a derived struct: the reference the
/// hand-written [`Envelope::to_bytes`] is held to.
mod envelope_reference {
    use super::*;
    use crate::event::EventFormat;
    use proptest::prelude::*;

    #[derive(Serialize)]
    struct Reference<'a> {
        source_id: &'a str,
        config_version: i64,
        #[serde(serialize_with = "as_map")]
        metadata: &'a [(String, String)],
        event: &'a BlobEvent<'a>,
        raw: &'a serde_json::value::RawValue,
    }

    fn as_map<S: serde::Serializer>(fields: &&[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(fields.iter().map(|(k, v)| (k, v)))
    }

    /// Text with the characters JSON escapes, and others, now and then.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[a-z0-9/._-]{0,12}",
            1 => any::<String>(),
            1 => "[\"\\\\\u{0}-\u{1f}\u{7f}é€😀a]{0,6}",
            // One such character alone in plain text.
            2 => ("[a-z]{0,3}", "[\"\\\\\u{0}-\u{1f}\u{7f}]", "[a-z]{0,3}")
                .prop_map(|(a, c, b)| format!("{a}{c}{b}")),
            // ... anywhere in a longer one (the check reads eight bytes at a time).
            2 => ("[a-z]{0,20}", "[\"\\\\\u{0}-\u{1f}\u{7f}]", "[a-z]{0,20}")
                .prop_map(|(a, c, b)| format!("{a}{c}{b}")),
        ]
    }

    proptest! {
        /// The word-at-a-time check finds what a byte-by-byte one finds, wherever the
        /// byte is: plain text with one byte of any value put anywhere, and mixed bytes.
        #[test]
        fn needs_escape_agrees_with_a_byte_scan(
            plain in prop::collection::vec(0x23u8..0x5c, 0..40),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            mixed in prop::collection::vec(
                prop_oneof![8 => 0x23u8..0x5c, 1 => any::<u8>(), 1 => 0u8..0x21, 1 => Just(b'"'), 1 => Just(b'\\')],
                0..40,
            ),
        ) {
            let mut one = plain;
            one.insert(at.index(one.len() + 1), byte);
            for s in [one, mixed] {
                let scan = s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
                prop_assert_eq!(needs_escape(&s), scan, "{:?}", s);
            }
        }
    }

    /// An event of four strings (id, event type, container, path) and four optional
    /// ones (account, etag, content type, event time).
    fn event_of(
        strings: &[String],
        options: &[Option<String>],
        format: EventFormat,
        size: Option<u64>,
    ) -> BlobEvent<'static> {
        let string = |i: usize| Cow::Owned(strings[i].clone());
        let option = |i: usize| options[i].clone().map(Cow::Owned);
        BlobEvent {
            id: string(0),
            format,
            event_type: string(1),
            account: option(0),
            container: string(2),
            path: string(3),
            size,
            etag: option(1),
            content_type: option(2),
            event_time: option(3),
        }
    }

    fn format() -> impl Strategy<Value = EventFormat> {
        prop::sample::select(vec![
            EventFormat::EventGrid,
            EventFormat::CloudEvents,
            EventFormat::S3,
            EventFormat::Minio,
            EventFormat::Gcs,
        ])
    }

    proptest! {
        #[test]
        fn the_envelope_is_what_serde_json_writes(
            source_id in text(),
            config_version in any::<i64>(),
            metadata in prop::collection::vec((text(), text()), 0..4),
            strings in prop::collection::vec(text(), 4),
            options in prop::collection::vec(prop::option::of(text()), 4),
            format in format(),
            size in prop::option::of(any::<u64>()),
            raw in prop::sample::select(vec!["{}", "{\"k\": [1, \"é\\n\"]}", "[]", "null"]),
        ) {
            let event = event_of(&strings, &options, format, size);
            let raw_json = RawJson::parse(raw).unwrap();
            let fields: Vec<(&str, &str)> =
                metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut envelope = Envelope {
                source_id: &source_id,
                config_version,
                metadata: Metadata::Pairs(&fields),
                event: &event,
                raw: &raw_json,
                plain: false,
            };
            let raw_value: &serde_json::value::RawValue = serde_json::from_str(raw).unwrap();
            let reference = Reference {
                source_id: &source_id,
                config_version,
                metadata: &metadata,
                event: &event,
                raw: raw_value,
            };
            let expected = String::from_utf8(serde_json::to_vec(&reference).unwrap()).unwrap();
            let written = String::from_utf8(envelope.to_bytes().to_vec()).unwrap();
            prop_assert_eq!(&written, &expected);
            // `plain` is for strings that need no escaping; these may.
            let plain = |s: &str| serde_json::to_string(s).unwrap().len() == s.len() + 2;
            if strings.iter().all(|s| plain(s)) && options.iter().flatten().all(|s| plain(s)) {
                envelope.plain = true;
                let unlooked = String::from_utf8(envelope.to_bytes().to_vec()).unwrap();
                prop_assert_eq!(unlooked, expected);
            }
        }

        /// An event whose strings need no escaping (what the parse marks `plain`) is
        /// written the same whether they are looked at or not.
        #[test]
        fn plain_strings_are_written_the_same_unlooked(
            strings in prop::collection::vec("[a-z0-9/._ é€😀\u{7f}-]{0,20}", 4),
            options in prop::collection::vec(prop::option::of("[a-zA-Z0-9:+ -]{0,30}"), 4),
            format in format(),
        ) {
            let event = event_of(&strings, &options, format, Some(7));
            let raw = RawJson::parse("{}").unwrap();
            let mut envelope = Envelope {
                source_id: "cfg",
                config_version: 1,
                metadata: Metadata::Pairs(&[("crop", "tea")]),
                event: &event,
                raw: &raw,
                plain: false,
            };
            let looked = envelope.to_bytes();
            envelope.plain = true;
            prop_assert_eq!(envelope.to_bytes(), looked);
        }
    }
}

/// A delivery keeps the instant it was received; a dead letter tells it as the wall-clock
/// time it was (not the time the dead letter was written).
#[test]
fn a_received_instant_is_told_as_the_time_it_was() {
    let fixed = UNIX_EPOCH + Duration::from_millis(1_795_168_800_123);
    assert_eq!(Received::At(fixed).time(), fixed);
    let minute = Duration::from_secs(60);
    let Some(minute_ago) = Instant::now().checked_sub(minute) else {
        return; // a machine up for less than a minute has no such instant
    };
    let before = SystemTime::now();
    let told = Received::Since(minute_ago).time();
    let after = SystemTime::now();
    assert!(
        told <= after - minute,
        "{told:?} is not a minute before {after:?}"
    );
    assert!(
        told >= before - minute - Duration::from_secs(1),
        "{told:?} is more than a minute before {before:?}"
    );
}
