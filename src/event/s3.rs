//! AWS S3 event notifications and MinIO bucket notifications: both are
//! `{"Records": [{"eventSource", "eventName", "eventTime", "s3": {"bucket", "object"}}]}`.
//!
//! MinIO is recognised by its top-level `EventName`/`Key` fields or a record's
//! `eventSource: "minio:s3"`; its event names carry an `s3:` prefix (`s3:ObjectCreated:Put`)
//! and its records have `s3.object.contentType`. Object keys are URL-encoded with `+` for
//! space (MinIO also escapes `/`), so they are decoded here. Records have no id of their own:
//! each gets one derived from its raw JSON ([`derive_id`]).

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    derive_id, first_byte, malformed, no_id, object, opt_str, opt_string, opt_u64, record_decoded,
    req_non_empty, req_raw, req_str, unsupported, BlobEvent, EventError, EventFormat, Raw,
    RecordResult,
};

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(rename = "eventSource", borrow)]
    event_source: Raw<'a>,
    #[serde(rename = "eventName", borrow)]
    event_name: Raw<'a>,
    #[serde(rename = "eventTime", borrow)]
    event_time: Raw<'a>,
    #[serde(borrow)]
    s3: Raw<'a>,
}

#[derive(Deserialize)]
struct Entity<'a> {
    #[serde(borrow)]
    bucket: Raw<'a>,
    #[serde(borrow)]
    object: Raw<'a>,
}

#[derive(Deserialize)]
struct Bucket<'a> {
    #[serde(borrow)]
    name: Raw<'a>,
}

#[derive(Deserialize)]
struct Object<'a> {
    #[serde(borrow)]
    key: Raw<'a>,
    #[serde(borrow)]
    size: Raw<'a>,
    #[serde(rename = "eTag", borrow)]
    etag: Raw<'a>,
    #[serde(rename = "contentType", borrow)]
    content_type: Raw<'a>,
}

/// Parses the `Records` array of an S3/MinIO message: one result per record.
/// `minio_message` is set when the message has MinIO's top-level `EventName`.
pub(super) fn parse(records: &RawValue, minio_message: bool) -> Vec<RecordResult<'_>> {
    if first_byte(records.get()) != b'[' {
        return vec![Err(no_id(malformed("field `Records` must be an array")))];
    }
    let records: Vec<&RawValue> = match serde_json::from_str(records.get()) {
        Ok(records) => records,
        Err(e) => return vec![Err(no_id(malformed(format!("field `Records`: {e}"))))],
    };
    if records.is_empty() {
        return vec![Err(no_id(malformed("empty `Records` array")))];
    }
    records
        .into_iter()
        .map(|raw| parse_record(raw, minio_message).map_err(no_id))
        .map(|result| result.map(|(event, raw)| record_decoded(event, raw.get())))
        .collect()
}

fn parse_record(
    raw: &RawValue,
    minio_message: bool,
) -> Result<(BlobEvent<'_>, &RawValue), EventError> {
    if first_byte(raw.get()) != b'{' {
        return Err(malformed("each of `Records` must be an object"));
    }
    let rec: Record = object(raw.get(), "Records[]")?;
    let source = opt_str(rec.event_source, "eventSource")?;
    let format = if minio_message || source.as_deref() == Some("minio:s3") {
        EventFormat::Minio
    } else {
        EventFormat::S3
    };
    let created_prefix = match format {
        EventFormat::Minio => "s3:ObjectCreated:",
        _ => match source.as_deref() {
            Some("aws:s3") => "ObjectCreated:",
            Some(other) => {
                return Err(unsupported(format!(
                    "event source `{other}` is not `aws:s3`"
                )))
            }
            None => return Err(malformed("missing field `eventSource`")),
        },
    };
    let event_name = req_str(rec.event_name, "eventName")?;
    if !event_name.starts_with(created_prefix) {
        return Err(unsupported(format!(
            "event name `{event_name}` is not an object-created event"
        )));
    }
    let entity: Entity = object(req_raw(rec.s3, "s3")?.get(), "s3")?;
    let bucket: Bucket = object(req_raw(entity.bucket, "s3.bucket")?.get(), "s3.bucket")?;
    let bucket = req_non_empty(bucket.name, "s3.bucket.name")?;
    let obj: Object = object(req_raw(entity.object, "s3.object")?.get(), "s3.object")?;
    let key = decode_key(&req_str(obj.key, "s3.object.key")?)?;
    if key.is_empty() {
        return Err(malformed("field `s3.object.key` must not be empty"));
    }
    let event = BlobEvent {
        id: derive_id(format, raw.get()).into(),
        format,
        event_type: event_name,
        account: None,
        container: bucket,
        path: key.into(),
        size: opt_u64(obj.size, "s3.object.size")?,
        etag: opt_string(obj.etag, "s3.object.eTag")?,
        content_type: opt_string(obj.content_type, "s3.object.contentType")?,
        event_time: opt_string(rec.event_time, "eventTime")?,
    };
    Ok((event, raw))
}

/// Decodes an S3 object key: `+` is a space, then `%XX` escapes (so `%2B` is a literal `+`).
fn decode_key(key: &str) -> Result<String, EventError> {
    let spaced: String;
    let key = if key.contains('+') {
        spaced = key.replace('+', " ");
        &spaced
    } else {
        key
    };
    percent_decode_str(key)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| malformed("field `s3.object.key` is not valid UTF-8 after URL-decoding"))
}

#[cfg(test)]
#[path = "tests/s3.rs"]
mod tests;
