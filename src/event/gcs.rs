//! Google Cloud Storage Pub/Sub notifications (JSON_API_V1 payload).
//!
//! The message body is the object resource (`{"kind": "storage#object", "bucket", "name",
//! "size", ...}`) and the event type travels in the Pub/Sub attribute, forwarded as the
//! `eventType` message header: `OBJECT_FINALIZE` is a created object; `OBJECT_DELETE`,
//! `OBJECT_ARCHIVE` and `OBJECT_METADATA_UPDATE` are not. `size` is a decimal string in the
//! JSON API (a number is accepted too). The resource `id` (`bucket/name/generation`) is the
//! event id; without it the id is derived from the raw JSON.

use super::{
    derive_id, first_byte, malformed, no_id, object, opt_str, opt_string, record, req_non_empty,
    unsupported, with_opt_id, BlobEvent, EventError, EventFormat, Raw, RecordResult,
};
use serde::Deserialize;

/// The header value of a created object.
const OBJECT_FINALIZE: &str = "OBJECT_FINALIZE";

#[derive(Deserialize)]
struct Resource<'a> {
    #[serde(borrow)]
    id: Raw<'a>,
    #[serde(borrow)]
    bucket: Raw<'a>,
    #[serde(borrow)]
    name: Raw<'a>,
    #[serde(borrow)]
    size: Raw<'a>,
    #[serde(borrow)]
    etag: Raw<'a>,
    #[serde(rename = "contentType", borrow)]
    content_type: Raw<'a>,
    #[serde(rename = "timeCreated", borrow)]
    time_created: Raw<'a>,
    #[serde(borrow)]
    updated: Raw<'a>,
}

/// Parses a GCS object resource; `raw` is the whole object, `header_event_type` the
/// notification's `eventType`.
pub(super) fn parse<'a>(raw: &'a str, header_event_type: Option<&str>) -> RecordResult<'a> {
    let res: Resource<'a> = object(raw, "event").map_err(no_id)?;
    let own_id = opt_str(res.id, "id")
        .map_err(no_id)?
        .filter(|id| !id.is_empty());
    let fail = with_opt_id(own_id.as_deref());
    let event_type = match header_event_type {
        Some(OBJECT_FINALIZE) => OBJECT_FINALIZE,
        Some(other) => {
            return Err(fail(unsupported(format!(
                "GCS event type `{other}` is not a blob-created event"
            ))))
        }
        None => {
            return Err(fail(unsupported(
                "GCS notification without eventType header",
            )))
        }
    };
    let event = BlobEvent {
        id: match &own_id {
            Some(id) => id.clone(),
            None => derive_id(EventFormat::Gcs, raw).into(),
        },
        format: EventFormat::Gcs,
        event_type: event_type.into(),
        account: None,
        container: req_non_empty(res.bucket, "bucket").map_err(&fail)?,
        path: req_non_empty(res.name, "name").map_err(&fail)?,
        size: size(res.size).map_err(&fail)?,
        etag: opt_string(res.etag, "etag").map_err(&fail)?,
        content_type: opt_string(res.content_type, "contentType").map_err(&fail)?,
        event_time: match opt_string(res.time_created, "timeCreated").map_err(&fail)? {
            Some(time) => Some(time),
            None => opt_string(res.updated, "updated").map_err(&fail)?,
        },
    };
    Ok(record(event, raw))
}

/// `size`: a decimal string (as the JSON API sends it) or a number.
fn size(value: Raw<'_>) -> Result<Option<u64>, EventError> {
    const BAD: &str = "field `size` must be a non-negative integer or a decimal string";
    let Some(raw) = value else { return Ok(None) };
    if first_byte(raw.get()) == b'"' {
        let text = opt_str(Some(raw), "size")?.unwrap_or_default();
        text.parse::<u64>().map(Some).map_err(|_| malformed(BAD))
    } else {
        serde_json::from_str::<u64>(raw.get())
            .map(Some)
            .map_err(|_| malformed(BAD))
    }
}

#[cfg(test)]
#[path = "tests/gcs.rs"]
mod tests;
