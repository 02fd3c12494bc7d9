//! The routing decision: a pure function of (event, index snapshot). No I/O here, so the
//! matching rules are tested directly; the miss path and publishing live in `pipeline`.
//!
//! Rules: the candidates are the container's enabled `blob_trigger` configs, already in
//! match order (priority descending, then `_id`); a config naming an account only takes
//! events from that account; the first whose pattern matches the whole path wins.

use std::ops::Range;
use std::sync::Arc;

use crate::cache::Index;
use crate::config::SourceConfig;
use crate::event::BlobEvent;

/// The config an event matched, with the fields its pattern extracted.
#[derive(Debug, Clone)]
pub struct Match {
    pub config: Arc<SourceConfig>,
    /// Each extracted field as its index in the config's `extract_fields` and its
    /// value's place in the event's path: no copies of either, for every routed event.
    fields: Vec<(usize, Range<usize>)>,
}

impl Match {
    /// The extracted fields, (name, value), in `extract_fields` order; `path` is that of
    /// the event that matched.
    pub fn metadata<'a>(&'a self, path: &'a str) -> Vec<(&'a str, &'a str)> {
        self.config.field_values(&self.fields, path).collect()
    }

    /// The extracted fields as positions: (index in `extract_fields`, byte range of the
    /// path), what [`SourceConfig::field_values`] reads.
    pub fn fields(&self) -> &[(usize, Range<usize>)] {
        &self.fields
    }
}

/// First matching config for `event`, or `None` (a miss).
pub fn decide(event: &BlobEvent, index: &Index) -> Option<Match> {
    index
        .screened(&event.container, &event.path)
        .filter(|c| c.account.is_none() || c.account.as_deref() == event.account.as_deref())
        .find_map(|c| {
            // One pass over the path for a candidate that does not match; captures are
            // extracted for the winner only.
            let fields = c.match_fields(&event.path)?;
            Some(Match {
                config: c.clone(),
                fields,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventFormat;
    use serde_json::json;

    fn config(doc: serde_json::Value) -> Arc<SourceConfig> {
        Arc::new(SourceConfig::from_value(&doc, "blob.routed").expect("valid config"))
    }

    fn cfg(id: &str, container: &str, pattern: Option<&str>, priority: i64) -> Arc<SourceConfig> {
        let mut doc = json!({
            "_id": id, "priority": priority,
            "ingestion": {"mode": "blob_trigger", "landing_container": container}
        });
        if let Some(p) = pattern {
            doc["ingestion"]["path_pattern"] = json!({"pattern": p});
        }
        config(doc)
    }

    fn event<'a>(container: &'a str, path: &'a str, account: Option<&'a str>) -> BlobEvent<'a> {
        BlobEvent {
            id: "e1".into(),
            format: EventFormat::EventGrid,
            event_type: "Microsoft.Storage.BlobCreated".into(),
            account: account.map(Into::into),
            container: container.into(),
            path: path.into(),
            size: Some(1),
            etag: None,
            content_type: None,
            event_time: None,
        }
    }

    #[test]
    fn first_match_in_priority_then_id_order_wins() {
        let configs = [
            cfg("b-low", "c", Some("**"), 0),
            cfg("a-low", "c", Some("**"), 0),
            cfg("high", "c", Some("special/**"), 10),
        ];
        let index = Index::build(configs.iter());
        let m = decide(&event("c", "special/x.json", None), &index).unwrap();
        assert_eq!(m.config.id, "high");
        let m = decide(&event("c", "other/x.json", None), &index).unwrap();
        assert_eq!(
            m.config.id, "a-low",
            "equal priority falls back to _id order"
        );
    }

    #[test]
    fn extracted_fields_are_returned_in_order() {
        let c = cfg(
            "qc",
            "landing",
            Some("results/{plantation_id}/{crop}/{batch_id}.json"),
            0,
        );
        let index = Index::build([&c]);
        let ev = event("landing", "results/p7/tea/b42.json", None);
        let m = decide(&ev, &index).unwrap();
        assert_eq!(
            m.metadata(&ev.path),
            vec![
                ("plantation_id", "p7"),
                ("crop", "tea"),
                ("batch_id", "b42")
            ]
        );
        assert!(decide(&event("landing", "results/p7/tea.json", None), &index).is_none());
        assert!(decide(&event("other", "results/p7/tea/b42.json", None), &index).is_none());
    }

    #[test]
    fn disabled_and_other_modes_are_never_candidates() {
        let disabled = config(json!({"_id": "d", "enabled": false,
            "ingestion": {"mode": "blob_trigger", "landing_container": "c"}}));
        let pull = config(json!({"_id": "p",
            "ingestion": {"mode": "scheduled_pull", "landing_container": "c"}}));
        let index = Index::build([&disabled, &pull]);
        assert!(decide(&event("c", "x", None), &index).is_none());
    }

    #[test]
    fn account_restricts_when_the_config_names_one() {
        let acct = config(json!({"_id": "a",
            "ingestion": {"mode": "blob_trigger", "landing_container": "c", "account": "prod"}}));
        let index = Index::build([&acct]);
        assert!(decide(&event("c", "x", Some("prod")), &index).is_some());
        assert!(decide(&event("c", "x", Some("dev")), &index).is_none());
        assert!(decide(&event("c", "x", None), &index).is_none());
    }

    #[test]
    fn no_pattern_matches_every_path_and_extracts_nothing() {
        let c = cfg("all", "c", None, 0);
        let index = Index::build([&c]);
        let ev = event("c", "deep/er/path.bin", None);
        let m = decide(&ev, &index).unwrap();
        assert_eq!(m.config.id, "all");
        assert!(m.metadata(&ev.path).is_empty());
    }

    /// The routed envelope as the pipeline writes it ([`Envelope::routed`]).
    mod routed_envelope {
        use std::sync::Arc;

        use proptest::prelude::*;
        use serde_json::json;

        use super::super::*;
        use crate::event::{self, ParsedRecord};
        use crate::output::{Envelope, Metadata};

        fn index(pattern: Option<&str>) -> Index {
            let mut ingestion = json!({"mode": "blob_trigger", "landing_container": "c"});
            if let Some(p) = pattern {
                ingestion["path_pattern"] = json!({"pattern": p});
            }
            let doc = json!({"_id": "cfg", "version": 3, "ingestion": ingestion});
            let config = Arc::new(SourceConfig::from_value(&doc, "blob.routed").unwrap());
            Index::build([&config])
        }

        /// An Event Grid event for `path` in container `c`, as a message holds it.
        fn body(path: &str) -> Vec<u8> {
            json!({
                "id": "e-1", "eventType": "Microsoft.Storage.BlobCreated",
                "subject": format!("/blobServices/default/containers/c/blobs/{path}"),
                "topic": "/subscriptions/s/providers/Microsoft.Storage/storageAccounts/acct",
                "eventTime": "2024-05-14T09:21:37Z", "data": {"contentLength": 5}
            })
            .to_string()
            .into_bytes()
        }

        /// The one record of `body`, as parsed.
        fn record(body: &[u8]) -> ParsedRecord<'_> {
            let mut records = event::parse(body, None);
            records.pop().unwrap().unwrap()
        }

        #[test]
        fn the_envelope_has_the_contract_shape() {
            let index = index(None);
            let body = body("deep/er/path.bin");
            let record = record(&body);
            let m = decide(&record.event, &index).unwrap();
            let envelope = Envelope::routed(&m.config, m.fields(), &record).to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&envelope).unwrap();
            assert_eq!(body["source_id"], "cfg");
            assert_eq!(body["config_version"], 3);
            assert_eq!(body["metadata"], json!({}));
            assert_eq!(body["event"]["path"], "deep/er/path.bin");
            assert_eq!(body["event"]["account"], "acct");
            assert_eq!(body["event"]["format"], "event_grid");
            assert_eq!(body["raw"]["data"], json!({"contentLength": 5}));
        }

        /// A path segment: plain text, or text with characters JSON escapes.
        fn segment() -> impl Strategy<Value = String> {
            prop_oneof!["[a-z0-9é._ -]{1,8}", "[a-z\"\\\\\u{1}-\u{1f}\u{7f}é]{1,4}",]
        }

        proptest! {
            /// Routed, the metadata is written straight from the match (its values unlooked
            /// at when the record is plain): the same bytes as the collected metadata, every
            /// string looked at.
            #[test]
            fn routed_writes_what_the_collected_metadata_writes(
                a in segment(), b in segment(), c in segment(),
            ) {
                let index = index(Some("{a}/{b}/x-{c}.json"));
                let body = body(&format!("{a}/{b}/x-{c}.json"));
                let record = record(&body);
                let m = decide(&record.event, &index).unwrap();
                let pairs = m.metadata(&record.event.path);
                prop_assert_eq!(&pairs, &vec![("a", a.as_str()), ("b", b.as_str()), ("c", c.as_str())]);
                let looked = Envelope {
                    source_id: &m.config.id,
                    config_version: m.config.version,
                    metadata: Metadata::Pairs(&pairs),
                    event: &record.event,
                    raw: &record.raw,
                    plain: false,
                };
                prop_assert_eq!(Envelope::routed(&m.config, m.fields(), &record).to_bytes(), looked.to_bytes());
            }
        }
    }
}
