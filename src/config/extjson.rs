//! MongoDB extended JSON, as the config model meets it.
//!
//! A document read from MongoDB (converted from BSON) or written by `mongoexport` carries
//! typed values as wrappers: an ObjectId `_id` is `{"$oid": hex}`, a 64-bit `version` is
//! `{"$numberLong": "7"}`, a BSON date is `{"$date": ...}` in one of three forms. The
//! model reads plain JSON, so [`normalize`] unwraps the fields it reads first.
//!
//! Every path from a stored document to a [`SourceConfigDoc`](super::SourceConfigDoc)
//! (validation, the cache's "unchanged, keep the compiled config" check, the TTL
//! resync's drift count) goes through [`super::parse_doc`], which normalizes here first:
//! two readings of the same stored document always compare equal.

use mongodb::bson;
use serde_json::Value;

/// Best-effort `_id` of a raw document, for keying and reporting: a string as is, a
/// number as its digits, an ObjectId (`{"$oid": ...}`) as its hex.
pub fn doc_id(value: &Value) -> Option<String> {
    id_string(value.get("_id")?)
}

/// An `_id` value read as [`doc_id`] reads it.
pub(super) fn id_string(id: &Value) -> Option<String> {
    match id {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        other => oid_hex(other),
    }
}

/// Unwraps the extended-JSON forms of the fields the model reads (`_id`, `priority`,
/// `version`, `updated_at`), so such documents deserialize like plain JSON ones. Other
/// fields are left as they are.
pub(super) fn normalize(value: &Value) -> std::borrow::Cow<'_, Value> {
    if !needs_normalizing(value) {
        // The common case (plain JSON): read in place, no copy of the document.
        return std::borrow::Cow::Borrowed(value);
    }
    let mut value = value.clone();
    if let Value::Object(map) = &mut value {
        if let Some(id) = map.get_mut("_id") {
            if let Some(hex) = oid_hex(id) {
                *id = Value::String(hex);
            }
        }
        for key in ["priority", "version"] {
            if let Some(n) = map.get_mut(key) {
                if let Some(i) = ext_int(n) {
                    *n = Value::from(i);
                }
            }
        }
        if let Some(date) = map.get_mut("updated_at") {
            if let Some(s) = ext_date(date) {
                *date = Value::String(s);
            }
        }
    }
    std::borrow::Cow::Owned(value)
}

/// Whether any field the model reads is in an extended-JSON form.
fn needs_normalizing(value: &Value) -> bool {
    let Some(map) = value.as_object() else {
        return false;
    };
    map.get("_id").is_some_and(|id| oid_hex(id).is_some())
        || ["priority", "version"]
            .iter()
            .any(|k| map.get(*k).is_some_and(|n| ext_int(n).is_some()))
        || map.get("updated_at").is_some_and(|d| d.is_object())
}

/// `{"$oid": "<hex>"}` -> the hex string.
fn oid_hex(value: &Value) -> Option<String> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    map.get("$oid")?.as_str().map(str::to_owned)
}

/// `{"$numberLong": "3"}`, `{"$numberInt": "3"}` or an integral float like `3.0`. A plain
/// integer needs no unwrapping (`None`).
fn ext_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => None,
        Value::Number(n) => {
            let f = n.as_f64()?;
            // Range check: i64::MAX as f64 rounds up to 2^63, which is out of range.
            (f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
        }
        Value::Object(map) if map.len() == 1 => {
            let s = map.get("$numberLong").or_else(|| map.get("$numberInt"))?;
            s.as_str()?.parse().ok()
        }
        _ => None,
    }
}

/// `{"$date": "<rfc3339>"}` (kept as written), `{"$date": {"$numberLong": "<ms>"}}` or
/// `{"$date": <ms>}` (formatted as RFC 3339 UTC by the `bson` crate).
fn ext_date(value: &Value) -> Option<String> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    let millis = match map.get("$date")? {
        Value::String(s) => return Some(s.clone()),
        Value::Number(n) => n.as_i64()?,
        other => ext_int(other)?,
    };
    format_millis(millis)
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC (`2026-11-20T10:00:00Z`, with
/// `.123` only when there are milliseconds); `None` outside the years RFC 3339 can write.
fn format_millis(millis: i64) -> Option<String> {
    bson::DateTime::from_millis(millis)
        .try_to_rfc3339_string()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_format_as_rfc3339_utc() {
        assert_eq!(format_millis(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            format_millis(-1).as_deref(),
            Some("1969-12-31T23:59:59.999Z")
        );
        assert_eq!(
            format_millis(951_782_400_000).as_deref(),
            Some("2000-02-29T00:00:00Z")
        );
        assert_eq!(
            format_millis(1_795_168_800_123).as_deref(),
            Some("2026-11-20T10:00:00.123Z")
        );
        // Beyond year 9999: left as the wrapper, which then fails to deserialize.
        assert_eq!(format_millis(i64::MAX), None);
    }

    #[test]
    fn every_date_form_gives_the_same_text() {
        for date in [
            json!({"$date": "2026-11-20T10:00:00Z"}),
            json!({"$date": {"$numberLong": "1795168800000"}}),
            json!({"$date": 1_795_168_800_000_i64}),
        ] {
            assert_eq!(
                ext_date(&date).as_deref(),
                Some("2026-11-20T10:00:00Z"),
                "{date}"
            );
        }
        assert_eq!(ext_date(&json!("2026-11-20T10:00:00Z")), None);
        assert_eq!(ext_date(&json!({"$date": 1, "x": 2})), None);
    }

    #[test]
    fn integers_unwrap_from_every_form() {
        assert_eq!(ext_int(&json!({"$numberLong": "7"})), Some(7));
        assert_eq!(ext_int(&json!({"$numberInt": "-3"})), Some(-3));
        assert_eq!(ext_int(&json!(4.0)), Some(4));
        assert_eq!(ext_int(&json!(4)), None, "plain integers need nothing");
        assert_eq!(ext_int(&json!(1.5)), None);
        assert_eq!(ext_int(&json!(9.3e18)), None, "out of i64 range");
        assert_eq!(ext_int(&json!({"$numberLong": "x"})), None);
    }

    #[test]
    fn normalize_touches_only_the_fields_the_model_reads() {
        let doc = json!({
            "_id": {"$oid": "6740a1b2c3d4e5f601234567"},
            "priority": {"$numberInt": "2"},
            "version": {"$numberLong": "7"},
            "updated_at": {"$date": {"$numberLong": "1795168800000"}},
            "owner": {"$oid": "6740a1b2c3d4e5f601234568"},
        });
        assert!(needs_normalizing(&doc));
        assert!(!needs_normalizing(&json!({"_id": "a", "version": 3})));
        assert_eq!(
            *normalize(&doc),
            json!({
                "_id": "6740a1b2c3d4e5f601234567",
                "priority": 2,
                "version": 7,
                "updated_at": "2026-11-20T10:00:00Z",
                "owner": {"$oid": "6740a1b2c3d4e5f601234568"},
            })
        );
    }
}
