//! Fuzz target: reading and validating a config document (a file entry, or a MongoDB
//! document as JSON, extended-JSON wrappers included).
//!
//! Input: JSON bytes (anything else is skipped: the stores hand over parsed JSON).
//!
//! Checked, beyond "never panics":
//! - a refused document has at least one problem, each a non-empty sentence;
//! - an accepted config is routable: non-empty `_id` and container, no `/` in the
//!   container, a valid NATS publish subject, extract fields its pattern captures;
//! - an accepted document reads back the same after export (`configs export` writes
//!   the `SourceConfigDoc` as JSON; `import` reads it through `parse_doc` again);
//! - matching a path (its own pattern text, the landing container) never panics and
//!   returns one value per extract field;
//! - the text's fingerprint and `_id`, read without building the value, are the
//!   value's: for the input itself unless it repeats a key (which the value keeps
//!   once), and always for the value's own text read back.

#![no_main]

use blob_router::config::{doc_id, parse_doc, stored_fingerprint, stored_json, SourceConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(text) = std::str::from_utf8(data) {
        let stored = stored_json(text).expect("JSON that parses to a value reads");
        assert_eq!(stored.id, doc_id(&value));
        if repeats_a_key(text) == Some(false) {
            assert_eq!(stored.fingerprint, stored_fingerprint(&value), "{text}");
        }
    }
    // The value's own text repeats no key. (Compared with what it reads back to: a
    // float need not read back bit for bit, `4.555E77` does not.)
    let own_text = serde_json::to_string(&value).expect("a value serializes");
    let own_value: serde_json::Value = serde_json::from_str(&own_text).expect("reads back");
    let stored = stored_json(&own_text).expect("a value's own text reads");
    assert_eq!(stored.fingerprint, stored_fingerprint(&own_value));
    assert_eq!(stored.id, doc_id(&own_value));
    let config = match SourceConfig::from_value(&value, "blob.routed") {
        Ok(config) => config,
        Err(e) => {
            assert!(!e.problems.is_empty(), "a refusal without a problem");
            assert!(e.problems.iter().all(|p| !p.is_empty()));
            return;
        }
    };
    assert!(!config.id.is_empty());
    assert!(!config.container.is_empty() && !config.container.contains('/'));
    let subject = &config.subject;
    assert!(
        !subject.is_empty()
            && !subject.chars().any(|c| c.is_whitespace() || c.is_control())
            && !subject.contains(['*', '>'])
            && subject.split('.').all(|t| !t.is_empty()),
        "invalid subject {subject:?}"
    );
    if let Some(pattern) = &config.pattern {
        for field in config.extract_fields.iter() {
            assert!(
                pattern.captures().contains(field),
                "{field} is not captured"
            );
        }
        for path in [pattern.as_str(), &*config.container] {
            if let Some(fields) = config.match_path(path) {
                assert_eq!(fields.len(), config.extract_fields.len());
                assert!(config.matches(path));
            }
        }
    }

    let doc = parse_doc(&value).expect("an accepted config's document parses");
    assert_eq!(config.fingerprint, doc.fingerprint());
    let exported = serde_json::to_value(&doc).expect("a config doc serializes");
    let reread = parse_doc(&exported).expect("an exported config reads back");
    assert_eq!(reread, doc, "export then import changed the document");
});

/// Whether an object anywhere in `text` repeats a key (None if it does not read).
fn repeats_a_key(text: &str) -> Option<bool> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    struct Check<'a>(&'a mut bool);

    impl<'de> DeserializeSeed<'de> for Check<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
            de.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Check<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Check(self.0))?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut keys = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !keys.insert(key) {
                    *self.0 = true;
                }
                map.next_value_seed(Check(self.0))?;
            }
            Ok(())
        }
    }

    let mut repeats = false;
    let mut de = serde_json::Deserializer::from_str(text);
    Check(&mut repeats).deserialize(&mut de).ok()?;
    Some(repeats)
}
