//! Keeps the cache following its source: applies the change feed, reloads when the feed
//! asks for it, resyncs on the TTL, and reopens a feed that ended.
//!
//! Everything that writes whole snapshots into the cache runs in this one task, in
//! order with the feed. A snapshot read takes time; changes that arrive meanwhile wait in
//! the feed's channel and are applied after the snapshot, so a resync can never undo a
//! newer change.

use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;
use tokio_util::sync::CancellationToken;

use super::ConfigCache;
use crate::store::{retry_policy, Change, ChangeFeed, ConfigStore, StoreError};
use crate::telemetry::events::{DriftFound, InternalEvent};
use crate::telemetry::Chain;

/// Opens the feed, then loads the snapshot into the cache: the startup order that leaves
/// no window for a missed change. Returns the feed for [`maintain`].
pub async fn warm(cache: &ConfigCache, source: &dyn ConfigStore) -> Result<ChangeFeed, StoreError> {
    let mut feed = source.watch().await?;
    let docs = source.snapshot().await?;
    let n = docs.len();
    cache.reset(docs);
    cache.set_feed_status(true, None);
    // Changes seen while the snapshot was read are applied before the worker is ready.
    while let Ok(change) = feed.try_recv() {
        match change {
            Change::Reload => {
                cache.apply(Change::Reload);
                cache.reset(source.snapshot().await?);
            }
            change => cache.apply(change),
        }
    }
    let health = cache.health();
    tracing::info!(
        source = %source.describe(),
        documents = n,
        configs = health.cache_size,
        refused = health.refused.len(),
        "config cache warmed"
    );
    Ok(feed)
}

/// Runs until `stop`: applies changes, reloads, and resyncs every `ttl` (more often
/// while the feed is down, since changes may then be missed).
pub async fn maintain(
    cache: Arc<ConfigCache>,
    source: Arc<dyn ConfigStore>,
    mut feed: ChangeFeed,
    ttl: Duration,
    stop: CancellationToken,
) {
    // The resync runs on its own clock: a steady trickle of changes must not postpone it.
    let mut last_resync = tokio::time::Instant::now();
    loop {
        let active = cache.feed_active();
        let period = if active {
            ttl
        } else {
            (ttl / 5).clamp(Duration::from_secs(1), ttl)
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            change = feed.recv() => match change {
                Some(Change::Reload) => {
                    cache.apply(Change::Reload);
                    if !reload_until_ok(&cache, &*source, &stop).await {
                        return;
                    }
                }
                Some(change) => cache.apply(change),
                None => {
                    tracing::warn!(source = %source.describe(), "config change feed ended; reopening");
                    cache.set_feed_status(false, Some("change feed ended".into()));
                    match reopen(&cache, &*source, &stop).await {
                        Some(f) => feed = f,
                        None => return,
                    }
                }
            },
            _ = tokio::time::sleep_until(last_resync + period) => {
                reload(&cache, &*source, true).await;
                last_resync = tokio::time::Instant::now();
            }
        }
    }
}

/// Full snapshot into the cache; on a TTL resync any difference is counted as drift.
async fn reload(cache: &ConfigCache, source: &dyn ConfigStore, resync: bool) {
    match source.snapshot().await {
        Ok(docs) => {
            let drift = cache.reset(docs);
            if resync {
                DriftFound { drift }.emit(cache.metrics());
            }
        }
        Err(e) => {
            tracing::warn!(error = %Chain(&e), "config reload failed; keeping the cache as it is")
        }
    }
}

/// Reopens the feed with backoff and jitter, then reloads (changes may have been missed).
async fn reopen(
    cache: &ConfigCache,
    source: &dyn ConfigStore,
    stop: &CancellationToken,
) -> Option<ChangeFeed> {
    let open = (|| source.watch())
        .retry(retry_policy())
        .sleep(tokio::time::sleep)
        .notify(|e, wait| tracing::warn!(error = %Chain(e), retry_in = ?wait, "reopening the change feed failed"));
    let feed = tokio::select! {
        _ = stop.cancelled() => return None,
        feed = open => feed.ok()?,
    };
    cache.feed_restarted("reopened");
    if !reload_until_ok(cache, source, stop).await {
        return None;
    }
    cache.set_feed_status(true, None);
    Some(feed)
}

/// A reload the feed depends on (it lost track of changes): retried with backoff until it
/// succeeds, the feed kept inactive meanwhile, so negative answers are not trusted and
/// every miss is a forced read. False when stopped first.
async fn reload_until_ok(
    cache: &ConfigCache,
    source: &dyn ConfigStore,
    stop: &CancellationToken,
) -> bool {
    let attempt = (|| source.snapshot())
        .retry(retry_policy())
        .sleep(tokio::time::sleep)
        .notify(|e, wait| {
            tracing::warn!(error = %Chain(e), retry_in = ?wait, "config reload failed; retrying");
            cache.set_feed_status(false, Some(format!("reload failed: {}", Chain(e))));
        });
    tokio::select! {
        _ = stop.cancelled() => false,
        docs = attempt => match docs {
            Ok(docs) => {
                let drift = cache.reset(docs);
                tracing::debug!(drift, "config cache reloaded");
                true
            }
            Err(_) => unreachable!("retried without limit"),
        },
    }
}

#[cfg(test)]
mod tests {
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
}
