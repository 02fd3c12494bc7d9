//! The seam between the cache and wherever source configs live.
//!
//! A [`ConfigStore`] offers three things, and the order the app calls them in is what
//! makes the cache gap-free:
//!
//! 1. [`ConfigStore::watch`] opens the change feed *first*; changes are buffered in the
//!    returned channel from that moment on;
//! 2. [`ConfigStore::snapshot`] then reads every config;
//! 3. the app applies the snapshot, then drains the feed. A change made while the
//!    snapshot was being read is therefore either in the snapshot, in the feed, or both
//!    (applying it twice is harmless: upserts and deletes are idempotent).
//!
//! [`ConfigStore::read_container`] is the forced read used by the miss path.
//!
//! Documents travel as `serde_json::Value` so that every source hands the cache the
//! same thing and validation (which must report bad documents, not drop them) happens
//! in one place, [`crate::config::SourceConfig::from_value`].

pub mod file;
pub mod mongo;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::ExponentialBuilder;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::{doc_id, stored_fingerprint, StoredJson};

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

/// One stored document as a store hands it to the cache: its `_id`, the
/// [`stored_fingerprint`] of its stored form, and the document itself, deserialized only
/// when the cache needs it. A document the cache already holds unchanged (the TTL
/// resync's usual case) is recognised by its fingerprint and never built as a value.
pub struct StoredDoc<'a> {
    id: Option<String>,
    fingerprint: u128,
    body: Body<'a>,
}

enum Body<'a> {
    Value(Cow<'a, Value>),
    /// A JSON document's text (as a file holds it).
    Json(&'a RawValue),
}

impl<'a> StoredDoc<'a> {
    /// A document read as a value.
    pub fn from_value(value: Value) -> Self {
        Self::new(Cow::Owned(value))
    }

    /// A document read as a value, lent.
    pub fn borrowed(value: &'a Value) -> Self {
        Self::new(Cow::Borrowed(value))
    }

    fn new(value: Cow<'a, Value>) -> Self {
        Self {
            id: doc_id(&value),
            fingerprint: stored_fingerprint(&value),
            body: Body::Value(value),
        }
    }

    /// A JSON document's text, whose `_id` and fingerprint
    /// [`crate::config::stored_json`] read.
    pub fn from_json(text: &'a RawValue, stored: StoredJson) -> Self {
        Self {
            id: stored.id,
            fingerprint: stored.fingerprint,
            body: Body::Json(text),
        }
    }

    /// The `_id`, as [`doc_id`] reads it.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub fn fingerprint(&self) -> u128 {
        self.fingerprint
    }

    /// The document as a value, owned (parsed now, if it was text).
    pub fn into_value(self) -> Result<Value, serde_json::Error> {
        match self.body {
            Body::Value(v) => Ok(v.into_owned()),
            Body::Json(text) => serde_json::from_str(text.get()),
        }
    }

    /// The document as a value (parsed now, if it was text).
    pub fn value(&self) -> Result<Cow<'_, Value>, serde_json::Error> {
        match &self.body {
            Body::Value(v) => Ok(Cow::Borrowed(&**v)),
            Body::Json(text) => serde_json::from_str(text.get()).map(Cow::Owned),
        }
    }
}

/// The receiving end of a change feed. The source stops feeding when it is dropped.
pub type ChangeFeed = mpsc::Receiver<Change>;

/// The underlying cause of a [`StoreError`] (driver, I/O or parser error).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors a store reports to its caller, who decides on the kind: at startup
/// `Unavailable` is waited for (MongoDB) and `Invalid` is fatal, on the miss path the
/// message is retried later, in the resync loop they are logged. The cause is kept as
/// the error's source, so a log line shows the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or read now; waiting may help.
    #[error("config source unavailable: {context}")]
    Unavailable {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The store answered, but what it holds or how it is reached cannot work (a file
    /// that does not parse, a bad URI, bad credentials): waiting will not help.
    #[error("config source content is invalid: {context}")]
    Invalid {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
}

impl StoreError {
    pub fn unavailable(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        StoreError::Unavailable {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    pub fn invalid(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        StoreError::Invalid {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// An `Invalid` error whose context says it all (no underlying error).
    pub fn invalid_because(context: impl Into<String>) -> Self {
        StoreError::Invalid {
            context: context.into(),
            source: None,
        }
    }

    /// Whether waiting may help.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

#[async_trait]
pub trait ConfigStore: Send + Sync + 'static {
    /// Opens the change feed. Must be called before [`Self::snapshot`].
    async fn watch(&self) -> Result<ChangeFeed, StoreError>;
    /// Every config document the worker should know about.
    async fn snapshot(&self) -> Result<Vec<Value>, StoreError>;
    /// Every document of [`Self::snapshot`], handed to `each` one at a time as it is
    /// read, so that a large store is never in memory whole as documents (100,000 of
    /// them take about 180 MB as JSON values). On an error, what `each` was already given
    /// is to be discarded. The default reads [`Self::snapshot`].
    async fn snapshot_each(
        &self,
        each: &mut (dyn for<'d> FnMut(StoredDoc<'d>) + Send),
    ) -> Result<(), StoreError> {
        for doc in self.snapshot().await? {
            each(StoredDoc::from_value(doc));
        }
        Ok(())
    }
    /// The documents whose `ingestion.landing_container` is `container`.
    async fn read_container(&self, container: &str) -> Result<Vec<Value>, StoreError>;
    /// A human description safe for logs (never a credential).
    fn describe(&self) -> String;
}

/// Which store the flags select (built by [`crate::cli::SourceArgs::selection`]).
#[derive(Debug, Clone)]
pub enum StoreSelection {
    Mongo(mongo::MongoSettings),
    File(std::path::PathBuf),
    /// The compiled-in default configs: a laptop without `--configs`.
    Embedded,
}

/// An opened store: the seam every command uses, plus the MongoDB-only operations
/// (`check`'s deployment and index checks, `configs import`) when it is MongoDB.
#[derive(Clone)]
pub enum Store {
    Mongo(Arc<mongo::MongoStore>),
    File(Arc<file::FileStore>),
}

impl Store {
    /// The store as the cache sees it.
    pub fn config_store(&self) -> Arc<dyn ConfigStore> {
        match self {
            Store::Mongo(m) => m.clone(),
            Store::File(f) => f.clone(),
        }
    }

    /// Every document, disabled ones included (`configs export|list|validate`).
    pub async fn all(&self) -> Result<Vec<Value>, StoreError> {
        match self {
            Store::Mongo(m) => m.all().await,
            Store::File(f) => f.snapshot().await,
        }
    }

    pub fn describe(&self) -> String {
        self.config_store().describe()
    }
}

/// Opens the store the flags select: the one place `run`, `check` and `configs` get
/// theirs. MongoDB is not contacted yet (the driver connects lazily); a bad URI fails.
pub async fn open(selection: &StoreSelection) -> Result<Store, StoreError> {
    Ok(match selection {
        StoreSelection::Mongo(settings) => {
            Store::Mongo(Arc::new(mongo::MongoStore::connect(settings).await?))
        }
        StoreSelection::File(path) => Store::File(Arc::new(file::FileStore::new(path))),
        StoreSelection::Embedded => Store::File(Arc::new(file::FileStore::embedded())),
    })
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
