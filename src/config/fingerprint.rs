//! Fingerprints of stored documents, exactly as stored (types, keys, key order, values):
//! the TTL resync recognises a document the cache already holds by its fingerprint,
//! without building or deserializing it.
//!
//! The fingerprint is a 128-bit xxh3 of a prefix-free token stream (one tag byte per
//! value, lengths before strings, closing tags after lists and maps). Streaming, so that
//! a document's JSON text gives the same fingerprint as its parsed [`Value`] without
//! the value being built ([`stored_json`]): for 100,000 unchanged documents in a file,
//! that is what keeps a resync cheap. A map's keys are hashed in the order given, which
//! for a `Value` is the text's order only with serde_json's `preserve_order` (on in
//! Cargo.toml); without it the two would differ and every resync would parse. Two forms of one document (an `$oid` `_id` and its
//! hex string) differ here; [`super::SourceConfigDoc::fingerprint`] decides those.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use xxhash_rust::xxh3::Xxh3Default;

use super::extjson::id_string;

/// The fingerprint of a stored document given as a value.
pub fn stored_fingerprint(value: &Value) -> u128 {
    let mut h = Xxh3Default::new();
    feed_value(value, &mut h);
    h.digest128()
}

/// A JSON document's fingerprint and `_id`, read from its text in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredJson {
    /// Equal to [`stored_fingerprint`] of the value the text parses to (unless an
    /// object repeats a key: the value keeps one of them, the text both, so the two
    /// differ and the document is simply read in full).
    pub fingerprint: u128,
    /// As [`super::doc_id`] reads it (the last `_id` if given twice).
    pub id: Option<String>,
}

/// [`StoredJson`] of one JSON document's text, allocating nothing but its `_id`.
pub fn stored_json(text: &str) -> Result<StoredJson, serde_json::Error> {
    let mut h = Xxh3Default::new();
    let mut de = serde_json::Deserializer::from_str(text);
    let id = de.deserialize_any(TopLevel(&mut h))?;
    de.end()?;
    Ok(StoredJson {
        fingerprint: h.digest128(),
        id,
    })
}

// The tokens. Every value starts with a tag byte, so a stream has one reading only.
const NULL: &[u8] = b"n";
const TRUE: &[u8] = b"t";
const FALSE: &[u8] = b"f";
/// An integer in i64 range, then its 8 bytes.
const INT: &[u8] = b"i";
/// An integer above i64::MAX, then its 8 bytes.
const UINT: &[u8] = b"u";
/// A float, then its bits.
const FLOAT: &[u8] = b"d";
/// A string, then its length and bytes.
const STRING: &[u8] = b"s";
const LIST: &[u8] = b"[";
const LIST_END: &[u8] = b"]";
const MAP: &[u8] = b"{";
/// A map's key, then its length and bytes, then the value.
const KEY: &[u8] = b"k";
const MAP_END: &[u8] = b"}";

fn feed_str(tag: &[u8], s: &str, h: &mut Xxh3Default) {
    h.update(tag);
    h.update(&(s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

fn feed_i64(i: i64, h: &mut Xxh3Default) {
    h.update(INT);
    h.update(&i.to_le_bytes());
}

fn feed_u64(u: u64, h: &mut Xxh3Default) {
    match i64::try_from(u) {
        Ok(i) => feed_i64(i, h),
        Err(_) => {
            h.update(UINT);
            h.update(&u.to_le_bytes());
        }
    }
}

fn feed_f64(f: f64, h: &mut Xxh3Default) {
    h.update(FLOAT);
    h.update(&f.to_bits().to_le_bytes());
}

fn feed_value(value: &Value, h: &mut Xxh3Default) {
    match value {
        Value::Null => h.update(NULL),
        Value::Bool(b) => h.update(if *b { TRUE } else { FALSE }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => feed_i64(i, h),
            (None, Some(u), _) => feed_u64(u, h),
            (None, None, f) => feed_f64(f.unwrap_or(f64::NAN), h),
        },
        Value::String(s) => feed_str(STRING, s, h),
        Value::Array(items) => {
            h.update(LIST);
            items.iter().for_each(|v| feed_value(v, h));
            h.update(LIST_END);
        }
        Value::Object(map) => {
            h.update(MAP);
            for (k, v) in map {
                feed_str(KEY, k, h);
                feed_value(v, h);
            }
            h.update(MAP_END);
        }
    }
}

/// Feeds one value of a document's text to the hasher, as [`feed_value`] would feed
/// the [`Value`] that text parses to (serde_json hands `Value` the same visits).
struct Feed<'h>(&'h mut Xxh3Default);

impl<'de> DeserializeSeed<'de> for Feed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Feed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.0.update(NULL);
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<(), E> {
        self.0.update(if b { TRUE } else { FALSE });
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, i: i64) -> Result<(), E> {
        feed_i64(i, self.0);
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<(), E> {
        feed_u64(u, self.0);
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<(), E> {
        // `Value` keeps a non-finite float as null (JSON text cannot hold one anyway).
        if f.is_finite() {
            feed_f64(f, self.0);
        } else {
            self.0.update(NULL);
        }
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        feed_str(STRING, s, self.0);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.update(LIST);
        while seq.next_element_seed(Feed(self.0))?.is_some() {}
        self.0.update(LIST_END);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.update(MAP);
        while map.next_key_seed(Key(self.0))?.is_some() {
            map.next_value_seed(Feed(self.0))?;
        }
        self.0.update(MAP_END);
        Ok(())
    }
}

/// Feeds a map key; answers whether it is `_id`.
struct Key<'h>(&'h mut Xxh3Default);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<bool, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map key")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<bool, E> {
        feed_str(KEY, s, self.0);
        Ok(s == "_id")
    }
}

/// The document itself: fed like any value, except that the `_id` of a map is also
/// kept (as a small value, fed from there).
struct TopLevel<'h>(&'h mut Xxh3Default);

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a config document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        self.0.update(MAP);
        let mut id = None;
        while let Some(is_id) = map.next_key_seed(Key(self.0))? {
            if is_id {
                let value: Value = map.next_value()?;
                feed_value(&value, self.0);
                id = id_string(&value);
            } else {
                map.next_value_seed(Feed(self.0))?;
            }
        }
        self.0.update(MAP_END);
        Ok(id)
    }

    // Anything else is no config (the cache refuses it), but is fingerprinted alike.
    fn visit_unit<E: serde::de::Error>(self) -> Result<Option<String>, E> {
        Feed(self.0).visit_unit().map(|()| None)
    }
    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Option<String>, E> {
        Feed(self.0).visit_bool(b).map(|()| None)
    }
    fn visit_i64<E: serde::de::Error>(self, i: i64) -> Result<Option<String>, E> {
        Feed(self.0).visit_i64(i).map(|()| None)
    }
    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<Option<String>, E> {
        Feed(self.0).visit_u64(u).map(|()| None)
    }
    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<Option<String>, E> {
        Feed(self.0).visit_f64(f).map(|()| None)
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Option<String>, E> {
        Feed(self.0).visit_str(s).map(|()| None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<String>, A::Error> {
        Feed(self.0).visit_seq(seq).map(|()| None)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::vec(("(_id|[a-z\"\\\\é]{0,6})", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The text and the value it parses to give one fingerprint, and one `_id`,
        /// however the text is laid out.
        #[test]
        fn text_and_value_agree(value in json_value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                serde_json::to_string(&value).unwrap()
            };
            let parsed: Value = serde_json::from_str(&text).unwrap();
            let stored = stored_json(&text).unwrap();
            prop_assert_eq!(stored.fingerprint, stored_fingerprint(&parsed));
            prop_assert_eq!(stored.id, crate::config::doc_id(&parsed));
        }
    }

    #[test]
    fn escapes_and_numbers_read_as_their_values() {
        let text = r#"{"_id": {"$oid": "6740a1b2c3d4e5f601234567"}, "k\u00e9y": "a\"b\n",
                       "n": [1, -1, 18446744073709551615, 1.5, 1e3, -0, 0.0], "e": {}, "l": []}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        let stored = stored_json(text).unwrap();
        assert_eq!(stored.fingerprint, stored_fingerprint(&value));
        assert_eq!(stored.id.as_deref(), Some("6740a1b2c3d4e5f601234567"));
    }

    #[test]
    fn a_repeated_key_is_no_false_match() {
        // The value keeps the last `_id`; the text's fingerprint covers both, so the
        // document is read in full rather than taken for the one-key value.
        let text = r#"{"_id": "a", "_id": "b"}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        let stored = stored_json(text).unwrap();
        assert_eq!(stored.id.as_deref(), Some("b"));
        assert_eq!(crate::config::doc_id(&value).as_deref(), Some("b"));
        assert_ne!(stored.fingerprint, stored_fingerprint(&value));
    }

    #[test]
    fn not_json_is_an_error() {
        assert!(stored_json("{\"_id\": ").is_err());
        assert!(stored_json("{} {}").is_err());
    }

    #[test]
    fn tokens_do_not_run_together() {
        let distinct = [
            json!(["a", "b"]),
            json!(["ab"]),
            json!([[], []]),
            json!([[[]]]),
            json!({"a": {}, "b": {}}),
            json!({"a": {"b": {}}}),
            json!([false, 1]),
            json!([1.0]),
            json!(1),
            json!(1.0),
            json!(null),
            json!([null]),
            json!({}),
            json!([]),
            json!(""),
        ];
        let prints: std::collections::HashSet<u128> =
            distinct.iter().map(stored_fingerprint).collect();
        assert_eq!(prints.len(), distinct.len());
    }
}
