//! Azure Event Grid schema: one event object, or one element of a top-level array.
//!
//! `{"id", "eventType", "subject", "topic", "eventTime", "data": {...}}`; only
//! `Microsoft.Storage.BlobCreated` is a created event. Everything else that Event Grid delivers
//! (e.g. `Microsoft.Storage.BlobDeleted`, `Microsoft.EventGrid.SubscriptionValidationEvent`) is
//! [`EventError::Unsupported`](super::EventError::Unsupported). The subject, account and data
//! handling is shared with CloudEvents in `azure.rs`.

use serde::Deserialize;

use super::azure::{azure_blob_event, require_azure_created, AzureEvent};
use super::{
    no_id, object, opt_str, record, req_non_empty, req_str, with_id, EventFormat, Raw, RecordResult,
};

/// The fields of an Event Grid event (built by [`super::Fields`] too, which reads
/// them in the same pass as the schema's discriminating keys).
#[derive(Deserialize)]
pub(super) struct Event<'a> {
    #[serde(borrow)]
    pub(super) id: Raw<'a>,
    #[serde(rename = "eventType", borrow)]
    pub(super) event_type: Raw<'a>,
    #[serde(borrow)]
    pub(super) subject: Raw<'a>,
    #[serde(borrow)]
    pub(super) topic: Raw<'a>,
    #[serde(rename = "eventTime", borrow)]
    pub(super) event_time: Raw<'a>,
    #[serde(borrow)]
    pub(super) data: Raw<'a>,
}

/// Parses one Event Grid event; `raw` is the event object.
pub(super) fn parse(raw: &str) -> RecordResult {
    read(raw, object(raw, "event").map_err(no_id)?)
}

/// Reads the fields of the Event Grid event `raw`.
pub(super) fn read(raw: &str, ev: Event<'_>) -> RecordResult {
    let id = req_non_empty(ev.id, "id").map_err(no_id)?;
    let fail = with_id(&id);
    let event_type = req_str(ev.event_type, "eventType").map_err(&fail)?;
    require_azure_created(&event_type).map_err(&fail)?;
    let resource = opt_str(ev.topic, "topic").map_err(&fail)?;
    let event = azure_blob_event(AzureEvent {
        format: EventFormat::EventGrid,
        id: &id,
        event_type: &event_type,
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
