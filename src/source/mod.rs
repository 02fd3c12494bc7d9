//! The seam between the cache and wherever source configs live.
//!
//! A [`ConfigSource`] offers three things, and the order the app calls them in is what
//! makes the cache gap-free:
//!
//! 1. [`ConfigSource::watch`] opens the change feed *first*; changes are buffered in the
//!    returned channel from that moment on;
//! 2. [`ConfigSource::snapshot`] then reads every config;
//! 3. the app applies the snapshot, then drains the feed. A change made while the
//!    snapshot was being read is therefore either in the snapshot, in the feed, or both
//!    (applying it twice is harmless: upserts and deletes are idempotent).
//!
//! [`ConfigSource::read_container`] is the forced read used by the miss path.
//!
//! Documents travel as `serde_json::Value` so that every source hands the cache the
//! same thing and validation (which must report bad documents, not drop them) happens
//! in one place, [`crate::config::SourceConfig::from_value`].

pub mod file;
pub mod mongo;

use std::time::Duration;

use async_trait::async_trait;
use backon::ExponentialBuilder;
use serde_json::Value;
use tokio::sync::mpsc;

/// One item of a change feed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Insert, update or replace of one document (the full document after the change).
    Upsert(Value),
    /// The document with this `_id` is gone (or no longer visible to the worker).
    Delete(String),
    /// The feed lost track (invalidate, history lost, ...): read a full snapshot again.
    Reload,
    /// The feed was interrupted and has resumed where it stopped (nothing was missed):
    /// counted as a restart, and the feed is active again.
    Resumed,
    /// The feed's health changed. `active == false` means changes may currently be
    /// missed (the cache stops remembering negative answers); `error` is shown in
    /// `/health/cache` (e.g. a config file that no longer parses).
    Status { active: bool, error: Option<String> },
}

/// The receiving end of a change feed. The source stops feeding when it is dropped.
pub type ChangeFeed = mpsc::Receiver<Change>;

/// Errors a source reports to its caller, who decides: at startup they are fatal, on
/// the miss path the message is retried later, in the resync loop they are logged.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("config source unavailable: {0}")]
    Unavailable(String),
    #[error("config source content is invalid: {0}")]
    Invalid(String),
}

#[async_trait]
pub trait ConfigSource: Send + Sync + 'static {
    /// Opens the change feed. Must be called before [`Self::snapshot`].
    async fn watch(&self) -> Result<ChangeFeed, SourceError>;
    /// Every config document the worker should know about.
    async fn snapshot(&self) -> Result<Vec<Value>, SourceError>;
    /// The documents whose `ingestion.landing_container` is `container`.
    async fn read_container(&self, container: &str) -> Result<Vec<Value>, SourceError>;
    /// A human description safe for logs (never a credential).
    fn describe(&self) -> String;
}

/// The one retry policy for talking to a config source (startup, reopening a feed,
/// resuming a stream, a reload the feed depends on): exponential from 250 ms to 30 s,
/// with jitter, without limit (callers stop on cancellation or by their own count).
pub fn retry_policy() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
}

/// The `ingestion.landing_container` of a raw document, if it has one.
pub fn landing_container(doc: &Value) -> Option<&str> {
    doc.get("ingestion")?.get("landing_container")?.as_str()
}
