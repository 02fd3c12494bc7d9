//! The contract every [`ConfigStore`] must keep, written once. A source's test file
//! provides a [`Harness`] (how to change its backing store) and instantiates the suite
//! with [`contract_suite!`]; the MongoDB source runs the same checks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use blob_router::cache::ConfigCache;
use blob_router::store::{Change, ChangeFeed, ConfigStore};
use blob_router::telemetry::metrics::Metrics;
use serde_json::{json, Value};

use super::eventually;

/// How a contract test changes the store behind a source.
#[async_trait]
pub trait Harness: Send + Sync {
    fn source(&self) -> Arc<dyn ConfigStore>;
    /// Inserts or replaces a document.
    async fn put(&self, doc: Value);
    async fn remove(&self, id: &str);
}

pub fn doc(id: &str, container: &str, version: i64) -> Value {
    json!({"_id": id, "version": version, "enabled": true,
           "ingestion": {"mode": "blob_trigger", "landing_container": container}})
}

/// The next data change on the feed (status items skipped), or None after `limit`.
pub async fn next_change(feed: &mut ChangeFeed, limit: Duration) -> Option<Change> {
    tokio::time::timeout(limit, async {
        loop {
            match feed.recv().await {
                Some(Change::Status { .. }) => continue,
                other => return other,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

const WAIT: Duration = Duration::from_secs(10);

/// The ids of the cache's candidates for `container`, in match order.
pub fn cache_ids(cache: &ConfigCache, container: &str) -> Vec<String> {
    cache
        .load()
        .candidates(container)
        .iter()
        .map(|c| c.id.clone())
        .collect()
}

fn ids(docs: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = docs
        .iter()
        .map(|d| d["_id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

pub async fn snapshot_returns_every_document(h: &dyn Harness) {
    h.put(doc("a", "c1", 1)).await;
    h.put(doc("b", "c2", 1)).await;
    let source = h.source();
    let _feed = source.watch().await.unwrap();
    assert_eq!(ids(&source.snapshot().await.unwrap()), vec!["a", "b"]);
}

pub async fn inserts_updates_and_deletes_arrive_on_the_feed(h: &dyn Harness) {
    h.put(doc("a", "c1", 1)).await;
    let source = h.source();
    let mut feed = source.watch().await.unwrap();
    source.snapshot().await.unwrap();

    h.put(doc("b", "c1", 1)).await;
    match next_change(&mut feed, WAIT).await {
        Some(Change::Upsert(d)) => assert_eq!(d["_id"], "b"),
        other => panic!("expected the insert of b, got {other:?}"),
    }
    h.put(doc("a", "c1", 2)).await;
    match next_change(&mut feed, WAIT).await {
        Some(Change::Upsert(d)) => assert_eq!(
            (d["_id"].clone(), d["version"].clone()),
            (json!("a"), json!(2))
        ),
        other => panic!("expected the update of a, got {other:?}"),
    }
    h.remove("b").await;
    match next_change(&mut feed, WAIT).await {
        Some(Change::Delete(id)) => assert_eq!(id, "b"),
        other => panic!("expected the delete of b, got {other:?}"),
    }
}

/// The ordering guarantee: a change made after the feed opened but before (or while)
/// the snapshot is read ends up in the cache.
pub async fn a_change_between_watch_and_snapshot_is_not_lost(h: &dyn Harness) {
    h.put(doc("a", "c1", 1)).await;
    let source = h.source();
    let mut feed = source.watch().await.unwrap();
    h.put(doc("late", "c9", 1)).await;
    let cache = ConfigCache::new(Metrics::detached(), "blob.routed");
    cache.reset(source.snapshot().await.unwrap());
    // The late insert is in the snapshot, or arrives on the feed: apply the feed's data
    // changes as they come until the cache holds it.
    eventually("the late insert reached the cache", WAIT, || {
        while let Ok(change) = feed.try_recv() {
            if !matches!(change, Change::Status { .. }) {
                cache.apply(change);
            }
        }
        std::future::ready((cache.load().candidates("c9").len() == 1).then_some(()))
    })
    .await;
    assert_eq!(
        cache.load().candidates("c9").len(),
        1,
        "the late insert reached the cache"
    );
    assert_eq!(cache.load().candidates("c1").len(), 1);
}

pub async fn read_container_returns_only_that_container(h: &dyn Harness) {
    h.put(doc("a", "c1", 1)).await;
    h.put(doc("b", "c2", 1)).await;
    h.put(doc("c", "c1", 1)).await;
    let source = h.source();
    assert_eq!(
        ids(&source.read_container("c1").await.unwrap()),
        vec!["a", "c"]
    );
    assert!(source.read_container("none").await.unwrap().is_empty());
}

/// Instantiates the suite for one harness constructor (`async fn() -> impl Harness`),
/// with optional attributes on every test (e.g. an `ignore` condition).
macro_rules! contract_suite {
    ($make:expr $(, #[$attr:meta])*) => {
        $(#[$attr])*
        #[tokio::test]
        async fn snapshot_returns_every_document() {
            $crate::support::contract::snapshot_returns_every_document(&$make().await).await;
        }
        $(#[$attr])*
        #[tokio::test]
        async fn inserts_updates_and_deletes_arrive_on_the_feed() {
            $crate::support::contract::inserts_updates_and_deletes_arrive_on_the_feed(
                &$make().await,
            )
            .await;
        }
        $(#[$attr])*
        #[tokio::test]
        async fn a_change_between_watch_and_snapshot_is_not_lost() {
            $crate::support::contract::a_change_between_watch_and_snapshot_is_not_lost(
                &$make().await,
            )
            .await;
        }
        $(#[$attr])*
        #[tokio::test]
        async fn read_container_returns_only_that_container() {
            $crate::support::contract::read_container_returns_only_that_container(&$make().await)
                .await;
        }
    };
}
pub(crate) use contract_suite;

/// Harness for the file source: the store is a YAML file rewritten on every change.
pub struct FileHarness {
    dir: tempfile::TempDir,
    docs: Mutex<BTreeMap<String, Value>>,
}

impl FileHarness {
    pub async fn new() -> Self {
        let h = Self {
            dir: tempfile::tempdir().unwrap(),
            docs: Mutex::new(BTreeMap::new()),
        };
        h.write();
        h
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("configs.yaml")
    }

    fn write(&self) {
        let docs: Vec<Value> = self.docs.lock().unwrap().values().cloned().collect();
        let tmp = self.dir.path().join(".tmp");
        std::fs::write(&tmp, serde_yaml_ng::to_string(&docs).unwrap()).unwrap();
        std::fs::rename(&tmp, self.path()).unwrap();
    }
}

#[async_trait]
impl Harness for FileHarness {
    fn source(&self) -> Arc<dyn ConfigStore> {
        Arc::new(blob_router::store::file::FileStore::new(self.path()))
    }
    async fn put(&self, doc: Value) {
        let id = doc["_id"].as_str().unwrap().to_string();
        self.docs.lock().unwrap().insert(id, doc);
        self.write();
    }
    async fn remove(&self, id: &str) {
        self.docs.lock().unwrap().remove(id);
        self.write();
    }
}
