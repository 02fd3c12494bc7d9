//! # blob-router
//!
//! A worker that takes blob-created events from NATS JetStream and routes each one to the
//! subject of the *source config* it belongs to. The trip of one message:
//!
//! ```text
//! nats::consumer   BLOB_EVENTS, durable pull consumer, explicit ack, bounded in flight
//!   -> event       parse + normalize (Event Grid, CloudEvents, S3, MinIO, GCS) -> BlobEvent
//!   -> router      match against the cached index (container -> ordered configs -> pattern)
//!   -> cache::miss no match? one coalesced forced read of that container, then match again
//!   -> nats::publisher  routed envelope to the config's subject, or the original bytes to
//!                  blob.dlq.<reason> with the reason in headers (outcome)
//!   -> ack the input only once every publish it caused has its PubAck
//! ```
//!
//! Configs come from a [`source::ConfigStore`] (a watched file today, MongoDB change
//! streams later). The [`cache::ConfigCache`] holds an immutable index swapped atomically:
//! readers never wait, writers apply one changed document at a time. [`app`] owns the
//! startup order (feed opened, snapshot applied, ready, then subscribe) and shutdown.

pub mod cache;
pub mod cli;
pub mod commands;
pub mod config;
pub mod event;
pub mod http;
pub mod nats;
pub mod output;
pub mod pipeline;
pub mod router;
pub mod shutdown;
pub mod store;
pub mod telemetry;
