//! Azure Event Grid schema: one event object, or one element of a top-level array.
//!
//! `{"id", "eventType", "subject", "topic", "eventTime", "data": {...}}`; only
//! `Microsoft.Storage.BlobCreated` is a created event. Everything else that Event Grid delivers
//! (e.g. `Microsoft.Storage.BlobDeleted`, `Microsoft.EventGrid.SubscriptionValidationEvent`) is
//! [`EventError::Unsupported`](super::EventError::Unsupported). The subject, account and data
//! handling is shared with CloudEvents in `azure.rs`.

use serde::Deserialize;

use super::azure::{azure_blob_event, require_azure_created, AzureEvent, DataField};
use super::{
    no_id, object, record, req_non_empty, req_str, with_id, EventFormat, Field, Raw, RecordResult,
};

/// The fields of an Event Grid event: string fields as `S` and `data` as `D`, raw
/// values when read by this schema's own parse, values when read by [`super::Fields`]
/// in the same pass as the schema's discriminating keys.
#[derive(Deserialize)]
pub(super) struct Event<S, D> {
    pub(super) id: S,
    #[serde(rename = "eventType")]
    pub(super) event_type: S,
    pub(super) subject: S,
    pub(super) topic: S,
    #[serde(rename = "eventTime")]
    pub(super) event_time: S,
    pub(super) data: D,
}

/// Parses one Event Grid event; `raw` is the event object.
pub(super) fn parse(raw: &str) -> RecordResult<'_> {
    let ev: Event<Raw<'_>, Raw<'_>> = object(raw, "event").map_err(no_id)?;
    read(raw, ev)
}

/// Reads the fields of the Event Grid event `raw`.
pub(super) fn read<'a, S: Field<'a>, D: DataField<'a>>(
    raw: &'a str,
    ev: Event<S, D>,
) -> RecordResult<'a> {
    let id = req_non_empty(ev.id, "id").map_err(no_id)?;
    let fail = with_id(&id);
    let event_type = req_str(ev.event_type, "eventType").map_err(&fail)?;
    require_azure_created(&event_type).map_err(&fail)?;
    let resource = ev.topic.text("topic").map_err(&fail)?;
    let event = azure_blob_event(AzureEvent {
        format: EventFormat::EventGrid,
        // A copy of a reference (of the string, if it had escapes): `fail` needs the id.
        id: id.clone(),
        event_type,
        resource,
        subject: ev.subject,
        time: ev.event_time,
        time_field: "eventTime",
        data: ev.data,
    })
    .map_err(&fail)?;
    Ok(record(event, raw))
}

#[cfg(test)]
#[path = "tests/eventgrid.rs"]
mod tests;
