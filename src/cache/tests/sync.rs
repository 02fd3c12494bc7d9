//! The maintainer against a scripted store: warm order, TTL resync and drift, reloads,
//! reopened feeds.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::*;
use crate::config::SourceConfig;
use crate::telemetry::metrics::Metrics;

/// A source whose store and feed the test drives by hand.
#[derive(Default)]
struct Scripted {
    docs: Mutex<Vec<Value>>,
    feeds: Mutex<Vec<mpsc::Sender<Change>>>,
    watches: AtomicUsize,
    /// The order of watch/snapshot calls.
    calls: Mutex<Vec<&'static str>>,
    /// A change "made while the snapshot is read": sent on the feed by `snapshot`.
    during_snapshot: Mutex<Option<Change>>,
}

impl Scripted {
    fn set(&self, docs: Vec<Value>) {
        *self.docs.lock().unwrap() = docs;
    }
    fn feed(&self) -> mpsc::Sender<Change> {
        self.feeds.lock().unwrap().last().unwrap().clone()
    }
}

#[async_trait]
impl ConfigStore for Scripted {
    async fn watch(&self) -> Result<ChangeFeed, StoreError> {
        self.watches.fetch_add(1, Relaxed);
        self.calls.lock().unwrap().push("watch");
        let (tx, rx) = mpsc::channel(16);
        self.feeds.lock().unwrap().push(tx);
        Ok(rx)
    }
    async fn snapshot(&self) -> Result<Vec<Value>, StoreError> {
        self.calls.lock().unwrap().push("snapshot");
        let docs = self.docs.lock().unwrap().clone();
        if let Some(change) = self.during_snapshot.lock().unwrap().take() {
            if let Some(feed) = self.feeds.lock().unwrap().last() {
                feed.try_send(change).unwrap();
            }
        }
        Ok(docs)
    }
    async fn read_container(&self, _: &str) -> Result<Vec<Value>, StoreError> {
        unreachable!("not used by the maintainer")
    }
    fn describe(&self) -> String {
        "scripted".into()
    }
}

fn doc(id: &str) -> Value {
    json!({"_id": id, "ingestion": {"mode": "blob_trigger", "landing_container": "c"}})
}

fn ids(cache: &ConfigCache) -> Vec<String> {
    cache
        .load()
        .candidates("c")
        .iter()
        .map(|c| c.id.clone())
        .collect()
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

async fn setup() -> (Arc<ConfigCache>, Arc<Scripted>, CancellationToken) {
    let cache = Arc::new(ConfigCache::new(Metrics::detached(), "blob.routed"));
    let source = Arc::new(Scripted::default());
    source.set(vec![doc("a")]);
    let feed = warm(&cache, &*source).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(maintain(
        cache.clone(),
        source.clone(),
        feed,
        Duration::from_secs(300),
        stop.clone(),
    ));
    (cache, source, stop)
}

#[tokio::test]
async fn warm_opens_the_feed_first_and_applies_changes_seen_during_the_snapshot() {
    let cache = ConfigCache::new(Metrics::detached(), "blob.routed");
    let source = Scripted::default();
    source.set(vec![doc("a")]);
    *source.during_snapshot.lock().unwrap() = Some(Change::Upsert(doc("late")));
    let _feed = warm(&cache, &source).await.unwrap();
    assert_eq!(*source.calls.lock().unwrap(), vec!["watch", "snapshot"]);
    // Ready means the change made during the snapshot read is already in.
    assert_eq!(ids(&cache), vec!["a", "late"]);
    assert!(cache.health().change_stream_active);
}

#[tokio::test(start_paused = true)]
async fn ttl_resync_repairs_and_counts_drift_despite_a_steady_trickle_of_changes() {
    let (cache, source, stop) = setup().await;
    assert_eq!(ids(&cache), vec!["a"]);
    // The store gains `missed` without the feed saying so.
    source.set(vec![doc("a"), doc("missed")]);
    // Changes keep arriving more often than the TTL; the resync must still run.
    for i in 0..11 {
        source.feed().send(Change::Upsert(json!({"_id": format!("t{i}"), "ingestion": {"mode": "blob_trigger", "landing_container": "other"}}))).await.unwrap();
        tokio::time::sleep(Duration::from_secs(29)).await;
        settle().await;
    }
    assert!(
        ids(&cache).contains(&"missed".to_string()),
        "resync found it"
    );
    assert!(cache.metrics().counters.drift.load(Relaxed) >= 1);
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn ttl_resyncs_of_mongodb_typed_documents_find_no_drift_and_recompile_nothing() {
    let cache = Arc::new(ConfigCache::new(Metrics::detached(), "blob.routed"));
    let source = Arc::new(Scripted::default());
    source.set(vec![
        json!({"_id": {"$oid": "6740a1b2c3d4e5f601234567"},
               "ingestion": {"mode": "blob_trigger", "landing_container": "c"},
               "version": {"$numberLong": "7"}, "priority": 3.0,
               "updated_at": {"$date": "2026-11-20T10:00:00Z"}}),
        json!({"_id": "b", "ingestion": {"mode": "blob_trigger", "landing_container": "c"},
               "version": {"$numberInt": "1"},
               "updated_at": {"$date": {"$numberLong": "1795168800000"}}}),
    ]);
    let feed = warm(&cache, &*source).await.unwrap();
    let before: Vec<Arc<SourceConfig>> = cache.load().candidates("c").to_vec();
    assert_eq!(before.len(), 2);
    let stop = CancellationToken::new();
    let ttl = Duration::from_secs(1);
    tokio::spawn(maintain(
        cache.clone(),
        source.clone(),
        feed,
        ttl,
        stop.clone(),
    ));
    let snapshots = || {
        source
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| **c == "snapshot")
            .count()
    };
    let first = snapshots();
    for _ in 0..6 {
        tokio::time::sleep(ttl).await;
        settle().await;
    }
    assert!(snapshots() >= first + 5, "the TTL resync ran");
    assert_eq!(cache.metrics().counters.drift.load(Relaxed), 0);
    let after = cache.load().candidates("c").to_vec();
    for (b, a) in before.iter().zip(&after) {
        assert!(Arc::ptr_eq(b, a), "{} recompiled", b.id);
    }
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn reload_request_reads_a_new_snapshot_without_counting_drift() {
    let (cache, source, stop) = setup().await;
    source.set(vec![doc("b")]);
    source.feed().send(Change::Reload).await.unwrap();
    settle().await;
    assert_eq!(ids(&cache), vec!["b"]);
    assert_eq!(cache.metrics().counters.drift.load(Relaxed), 0);
    assert_eq!(
        cache
            .metrics()
            .counters
            .change_stream_restarts
            .load(Relaxed),
        1
    );
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn an_ended_feed_is_reopened_and_followed_by_a_reload() {
    let (cache, source, stop) = setup().await;
    source.set(vec![doc("a"), doc("while-down")]);
    source.feeds.lock().unwrap().clear(); // drop every sender: the feed ends
    settle().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(source.watches.load(Relaxed), 2, "reopened");
    assert_eq!(ids(&cache), vec!["a", "while-down"]);
    assert!(cache.health().change_stream_active);
    // The new feed works.
    source
        .feed()
        .send(Change::Delete("a".into()))
        .await
        .unwrap();
    settle().await;
    assert_eq!(ids(&cache), vec!["while-down"]);
    stop.cancel();
}

#[tokio::test]
async fn resyncs_of_an_unchanged_file_find_no_drift_and_recompile_nothing() {
    use crate::store::file::FileStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.json");
    // Keys in no particular order, escapes, numbers in several spellings, a document
    // that repeats a key (its text and its value fingerprint differently), and one that
    // is not an object (refused).
    std::fs::write(
        &path,
        r#"[
          {"version": 1.0, "ingestion": {"landing_container": "c", "mode": "blob_trigger",
           "path_pattern": {"pattern": "in/{x}.json"}}, "priority": 1e1, "_id": "a"},
          {"_id": "b\u00e9", "priority": 2, "priority": -3,
           "ingestion": {"mode": "blob_trigger", "landing_container": "c"}},
          "not a document"
        ]"#,
    )
    .unwrap();
    let store = FileStore::new(&path);
    let cache = ConfigCache::new(
        crate::telemetry::metrics::Metrics::detached(),
        "blob.routed",
    );
    assert_eq!(load(&cache, &store).await.unwrap(), (3, 2));
    assert_eq!(cache.health().refused.len(), 1);
    let before: Vec<_> = cache.load().candidates("c").to_vec();
    assert_eq!(before.len(), 2);
    // The resync: nothing differs, nothing is rebuilt.
    assert_eq!(load(&cache, &store).await.unwrap(), (3, 0));
    // The watcher's form of each document (a value), then the resync again.
    for doc in store.snapshot().await.unwrap() {
        cache.upsert(&doc);
    }
    assert_eq!(load(&cache, &store).await.unwrap(), (3, 0));
    let after = cache.load().candidates("c").to_vec();
    assert_eq!(after.len(), 2);
    for (a, b) in before.iter().zip(&after) {
        assert!(std::sync::Arc::ptr_eq(a, b), "{} was rebuilt", a.id);
    }
    assert_eq!(cache.health().refused.len(), 1);
}
