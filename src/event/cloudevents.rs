//! CloudEvents 1.0 JSON (structured mode), as Azure Event Grid delivers storage events with the
//! CloudEvents schema.
//!
//! `{"specversion": "1.0", "id", "type", "source", "subject", "time", "data": {...}}`; only
//! `Microsoft.Storage.BlobCreated` is a created event. `source` is the storage account's
//! resource id and `subject` the blob, exactly as in the Event Grid schema, so both use the
//! helpers in `azure.rs`.

use serde::Deserialize;

use super::azure::{azure_blob_event, require_azure_created, AzureEvent, DataField};
use super::{
    malformed, no_id, object, record, req_non_empty, req_str, with_id, EventFormat, Field, Raw,
    RecordResult,
};

/// The fields of a CloudEvents event: string fields as `S` and `data` as `D`, raw
/// values when read by this schema's own parse, values when read by [`super::Fields`]
/// in the same pass as the schema's discriminating keys.
#[derive(Deserialize)]
pub(super) struct Event<S, D> {
    pub(super) specversion: S,
    pub(super) id: S,
    #[serde(rename = "type")]
    pub(super) event_type: S,
    pub(super) source: S,
    pub(super) subject: S,
    pub(super) time: S,
    pub(super) data: D,
}

/// Parses one CloudEvents event; `raw` is the event object.
pub(super) fn parse(raw: &str) -> RecordResult<'_> {
    let ev: Event<Raw<'_>, Raw<'_>> = object(raw, "event").map_err(no_id)?;
    read(raw, ev)
}

/// Reads the fields of the CloudEvents event `raw`.
pub(super) fn read<'a, S: Field<'a>, D: DataField<'a>>(
    raw: &'a str,
    ev: Event<S, D>,
) -> RecordResult<'a> {
    let version = req_str(ev.specversion, "specversion").map_err(no_id)?;
    if version != "1.0" {
        return Err(no_id(malformed(format!(
            "unsupported CloudEvents specversion `{version}` (expected `1.0`)"
        ))));
    }
    let id = req_non_empty(ev.id, "id").map_err(no_id)?;
    let fail = with_id(&id);
    let event_type = req_str(ev.event_type, "type").map_err(&fail)?;
    let source = req_non_empty(ev.source, "source").map_err(&fail)?;
    require_azure_created(&event_type).map_err(&fail)?;
    let event = azure_blob_event(AzureEvent {
        format: EventFormat::CloudEvents,
        // A copy of a reference (of the string, if it had escapes): `fail` needs the id.
        id: id.clone(),
        event_type,
        resource: Some(source),
        subject: ev.subject,
        time: ev.time,
        time_field: "time",
        data: ev.data,
    })
    .map_err(&fail)?;
    Ok(record(event, raw))
}

#[cfg(test)]
#[path = "tests/cloudevents.rs"]
mod tests;
