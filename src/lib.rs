//! # blob-router
//!
//! A worker that takes blob-created events from NATS JetStream and routes each one to the
//! subject of the *source config* it belongs to. The trip of one message, and the module
//! that owns each step:
//!
//! ```text
//! nats::consumer    BLOB_EVENTS, durable pull consumer, explicit ack, bounded in flight
//!   -> pipeline     one message, start to end:
//!      event        parse + normalize (Event Grid, CloudEvents, S3, MinIO, GCS) -> BlobEvent
//!      router       pure decision against the cached index (container -> ordered configs
//!                   -> path pattern)
//!      cache::miss  no match? one coalesced forced read of that container, then decide again
//!      output       the routed envelope and its headers, or the dead letter (original
//!                   bytes, reason headers); every Nats-Msg-Id
//!      nats::publisher  publish, wait for every PubAck, sort failures
//!   -> ack the input only once every publish it caused has its PubAck (nak on failure)
//! ```
//!
//! Configs come from a [`store::ConfigStore`] (MongoDB with a change stream, or a watched
//! file; [`store::open`] picks the one the flags name) as documents that [`config`]
//! parses and compiles once per version. The [`cache::ConfigCache`] holds an immutable
//! index swapped atomically: readers never wait, writers apply one changed document at a
//! time, and [`cache::sync`] keeps it following the store (feed, reloads, TTL resync).
//!
//! Around that: [`cli`] (every flag, also an env var), [`commands`] (`run` owns the
//! startup order and shutdown; `check`; `configs`; `replay` puts dead letters back, read
//! through [`output::DeadLetter`]; `loadgen` measures the pipeline from outside),
//! [`http`] (health and metrics), [`subject`] (what may go in a NATS subject, for
//! configs and flags alike), [`telemetry`] (logs, metrics, and one type per internal
//! event), [`progress`] (the tools' progress display) and [`shutdown`].

pub mod cache;
pub mod cli;
pub mod commands;
pub mod config;
pub mod event;
pub mod http;
pub mod nats;
pub mod output;
pub mod pipeline;
pub mod progress;
pub mod router;
pub mod shutdown;
pub mod store;
pub mod subject;
pub mod telemetry;
