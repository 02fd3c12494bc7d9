//! Cache behaviour without I/O: per-document changes, reloads and drift, refusals, and
//! the miss path's single flight and negative answers.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::miss::{MissResolver, Resolution};
use super::*;
use crate::store::{ChangeFeed, ConfigStore, StoreError};
use crate::telemetry::metrics::Metrics;

fn doc(id: &str, container: &str, version: i64) -> Value {
    json!({"_id": id, "version": version,
           "ingestion": {"mode": "blob_trigger", "landing_container": container}})
}

fn cache() -> ConfigCache {
    let c = ConfigCache::new(Metrics::detached(), "blob.routed");
    c.set_feed_status(true, None);
    c
}

fn ids(cache: &ConfigCache, container: &str) -> Vec<String> {
    cache
        .load()
        .candidates(container)
        .iter()
        .map(|c| c.id.clone())
        .collect()
}

#[test]
fn upsert_and_delete_touch_only_their_container() {
    let cache = cache();
    cache.reset(vec![doc("a", "c1", 1), doc("b", "c2", 1)]);
    let before = cache.load();
    let c2_before = before.candidates("c2")[0].clone();
    cache.upsert(&doc("a2", "c1", 1));
    assert_eq!(ids(&cache, "c1"), vec!["a", "a2"]);
    assert!(
        Arc::ptr_eq(&cache.load().candidates("c2")[0], &c2_before),
        "c2 untouched"
    );
    let old: Vec<_> = before
        .candidates("c1")
        .iter()
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(old, vec!["a"], "readers keep their snapshot");
    cache.delete("a");
    assert_eq!(ids(&cache, "c1"), vec!["a2"]);
    assert_eq!(cache.health().cache_size, 2);
}

#[test]
fn moving_a_config_to_another_container_removes_it_from_the_old_one() {
    let cache = cache();
    cache.reset(vec![doc("a", "c1", 1)]);
    cache.upsert(&doc("a", "c2", 2));
    assert!(ids(&cache, "c1").is_empty());
    assert_eq!(ids(&cache, "c2"), vec!["a"]);
}

#[test]
fn an_identical_document_keeps_its_compiled_config() {
    let cache = cache();
    cache.reset(vec![doc("a", "c1", 1)]);
    let first = cache.load().candidates("c1")[0].clone();
    cache.upsert(&doc("a", "c1", 1));
    assert!(Arc::ptr_eq(&first, &cache.load().candidates("c1")[0]));
    cache.upsert(&doc("a", "c1", 2));
    assert_eq!(cache.load().candidates("c1")[0].version, 2);
}

#[test]
fn an_invalid_update_is_refused_and_replaces_the_old_version() {
    let cache = cache();
    cache.reset(vec![doc("a", "c1", 1)]);
    let bad = json!({"_id": "a", "ingestion": {"mode": "blob_trigger", "landing_container": "c1",
                     "path_pattern": {"pattern": "x/{unclosed"}}});
    cache.upsert(&bad);
    assert!(ids(&cache, "c1").is_empty());
    let health = cache.health();
    assert_eq!(health.refused.len(), 1);
    assert_eq!(health.refused[0].id.as_deref(), Some("a"));
    assert_eq!(cache.metrics().counters.configs_refused.load(SeqCst), 1);
    // Fixing it clears the refusal.
    cache.upsert(&doc("a", "c1", 2));
    assert!(cache.health().refused.is_empty());
    assert_eq!(ids(&cache, "c1"), vec!["a"]);
}

#[test]
fn reset_reports_drift_and_keeps_unchanged_configs() {
    let cache = cache();
    assert_eq!(cache.reset(vec![doc("a", "c", 1), doc("b", "c", 1)]), 2);
    let a = cache.load().candidates("c")[0].clone();
    assert_eq!(cache.reset(vec![doc("a", "c", 1), doc("b", "c", 1)]), 0);
    assert!(Arc::ptr_eq(&a, &cache.load().candidates("c")[0]));
    // b changed, a removed, d added.
    assert_eq!(cache.reset(vec![doc("b", "c", 2), doc("d", "c", 1)]), 3);
    assert_eq!(ids(&cache, "c"), vec!["b", "d"]);
}

#[test]
fn an_unchanged_reload_is_told_apart_from_a_repeat_or_a_change_meanwhile() {
    let cache = cache();
    cache.reset(vec![doc("a", "c", 1), doc("b", "c", 1)]);
    // Every document unchanged and as many as the cache holds, but `a` twice: `b` is
    // gone, which the count alone would miss.
    assert_eq!(cache.reset(vec![doc("a", "c", 1), doc("a", "c", 1)]), 1);
    assert_eq!(ids(&cache, "c"), vec!["a"]);
    // A change applied while a reload reads: the reload's content wins, as drift.
    cache.reset(vec![doc("a", "c", 1), doc("b", "c", 1)]);
    let mut reload = cache.reload();
    reload.add(StoredDoc::borrowed(&doc("a", "c", 1)));
    reload.add(StoredDoc::borrowed(&doc("b", "c", 1)));
    cache.upsert(&doc("b", "c", 2));
    assert_eq!(reload.finish(), 1);
    assert_eq!(cache.load().candidates("c")[1].version, 1);
}

/// The same config in each form MongoDB (or `mongoexport`) may store it: ObjectId
/// `_id`, a date in each extended-JSON form, `$numberLong`/`$numberInt`, integral doubles.
fn typed_forms() -> Vec<Value> {
    let dates = [
        json!({"$date": "2026-11-20T10:00:00Z"}),
        json!({"$date": {"$numberLong": "1795168800000"}}),
        json!({"$date": 1_795_168_800_000_i64}),
    ];
    let numbers = [
        (json!({"$numberLong": "7"}), json!({"$numberInt": "2"})),
        (json!(7.0), json!(2.0)),
    ];
    let mut forms = Vec::new();
    for date in &dates {
        for (version, priority) in &numbers {
            forms.push(json!({
                "_id": {"$oid": "6740a1b2c3d4e5f601234567"},
                "ingestion": {"mode": "blob_trigger", "landing_container": "typed"},
                "version": version, "priority": priority, "updated_at": date,
            }));
        }
    }
    forms
}

#[test]
fn mongodb_typed_documents_are_never_drift_nor_recompiled() {
    for form in typed_forms() {
        let cache = cache();
        // Snapshot: new, so one difference.
        assert_eq!(cache.reset(vec![form.clone()]), 1, "{form}");
        let compiled = cache.load().candidates("typed")[0].clone();
        assert_eq!(compiled.id, "6740a1b2c3d4e5f601234567");
        assert_eq!(compiled.version, 7);
        assert_eq!(compiled.priority, 2);
        let parsed = crate::config::parse_doc(&form).unwrap();
        assert_eq!(parsed.updated_at.as_deref(), Some("2026-11-20T10:00:00Z"));
        assert_eq!(compiled.fingerprint, parsed.fingerprint());
        let invalidations = cache.metrics().counters.cache_invalidations.load(SeqCst);
        // Upsert of the unchanged document: nothing happens.
        cache.upsert(&form);
        assert!(Arc::ptr_eq(&compiled, &cache.load().candidates("typed")[0]));
        assert_eq!(
            cache.metrics().counters.cache_invalidations.load(SeqCst),
            invalidations,
            "an unchanged upsert is no change"
        );
        // Every other stored form of the same document is the same config too.
        for other in typed_forms() {
            cache.upsert(&other);
            assert_eq!(cache.reset(vec![other.clone()]), 0, "{form} vs {other}");
            assert!(
                Arc::ptr_eq(&compiled, &cache.load().candidates("typed")[0]),
                "recompiled for {other}"
            );
        }
        assert!(cache.health().refused.is_empty());
    }
}

#[test]
fn disabled_configs_are_cached_but_never_candidates() {
    let cache = cache();
    let mut d = doc("a", "c", 1);
    d["enabled"] = json!(false);
    cache.reset(vec![d]);
    assert!(ids(&cache, "c").is_empty());
    assert_eq!(cache.health().cache_size, 1);
}

#[test]
fn merge_is_skipped_when_a_newer_change_arrived_during_the_read() {
    let cache = cache();
    cache.reset(vec![]);
    let at = cache.generation("c");
    cache.upsert(&doc("new", "c", 1)); // arrives from the feed while the read runs
    assert!(
        !cache.merge_container("c", vec![], at),
        "stale answer must not win"
    );
    assert_eq!(ids(&cache, "c"), vec!["new"]);
    assert!(!cache.is_negative("c"));
}

#[test]
fn merge_applies_the_answer_and_remembers_it_while_the_feed_is_healthy() {
    let cache = cache();
    cache.reset(vec![doc("stale", "c", 1)]);
    let at = cache.generation("c");
    assert!(cache.merge_container("c", vec![doc("fresh", "c", 1)], at));
    assert_eq!(ids(&cache, "c"), vec!["fresh"]);
    assert!(cache.is_negative("c"));
    // Any change to the container forgets the remembered answer.
    cache.upsert(&doc("other", "c", 1));
    assert!(!cache.is_negative("c"));
    // And nothing is remembered while the feed is down.
    cache.set_feed_status(false, Some("down".into()));
    let at = cache.generation("c");
    assert!(cache.merge_container("c", vec![], at));
    assert!(!cache.is_negative("c"));
}

/// A source that counts forced reads and answers slowly, so misses pile up on one read.
struct CountingSource {
    reads: AtomicUsize,
    answer: Vec<Value>,
}

#[async_trait]
impl ConfigStore for CountingSource {
    async fn watch(&self) -> Result<ChangeFeed, StoreError> {
        Ok(tokio::sync::mpsc::channel(1).1)
    }
    async fn snapshot(&self) -> Result<Vec<Value>, StoreError> {
        Ok(self.answer.clone())
    }
    async fn read_container(&self, container: &str) -> Result<Vec<Value>, StoreError> {
        self.reads.fetch_add(1, SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(self
            .answer
            .iter()
            .filter(|d| crate::store::landing_container(d) == Some(container))
            .cloned()
            .collect())
    }
    fn describe(&self) -> String {
        "counting".into()
    }
}

/// A source whose forced read waits for the test to open a gate, so that every miss of
/// a burst is provably waiting while the one read is in progress.
struct GatedSource {
    reads: AtomicUsize,
    gate: tokio::sync::Semaphore,
}

#[async_trait]
impl ConfigStore for GatedSource {
    async fn watch(&self) -> Result<ChangeFeed, StoreError> {
        Ok(tokio::sync::mpsc::channel(1).1)
    }
    async fn snapshot(&self) -> Result<Vec<Value>, StoreError> {
        Ok(vec![])
    }
    async fn read_container(&self, _: &str) -> Result<Vec<Value>, StoreError> {
        self.reads.fetch_add(1, SeqCst);
        let _open = self.gate.acquire().await.unwrap();
        Ok(vec![])
    }
    fn describe(&self) -> String {
        "gated".into()
    }
}

// A paused clock: the sleep below ends only once every task is parked (the runtime
// auto-advances time when nothing else can run), however slow the machine.
#[tokio::test(start_paused = true)]
async fn a_burst_of_10000_misses_on_one_container_shares_one_read() {
    let cache = Arc::new(cache());
    cache.reset(vec![]);
    let source = Arc::new(GatedSource {
        reads: AtomicUsize::new(0),
        gate: tokio::sync::Semaphore::new(0),
    });
    let resolver = Arc::new(MissResolver::new(cache.clone(), source.clone(), 4));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10_000 {
        let r = resolver.clone();
        tasks.spawn(async move { r.resolve("unknown").await.unwrap() });
    }
    // One thread: while the test sleeps, every task runs up to the pending read.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        source.reads.load(SeqCst),
        1,
        "one read started for the burst"
    );
    source.gate.add_permits(1);
    let mut shared = 0;
    while let Some(res) = tasks.join_next().await {
        assert_eq!(
            res.unwrap(),
            Resolution::Read,
            "every miss waited on the read"
        );
        shared += 1;
    }
    assert_eq!(shared, 10_000);
    assert_eq!(
        source.reads.load(SeqCst),
        1,
        "one forced read for the whole burst"
    );
    assert_eq!(cache.metrics().counters.forced_reads.load(SeqCst), 1);
    // Later misses are answered from the remembered result: still one read.
    assert_eq!(
        resolver.resolve("unknown").await.unwrap(),
        Resolution::Remembered
    );
    assert_eq!(source.reads.load(SeqCst), 1);
}

#[tokio::test]
async fn a_forced_read_finds_a_config_the_cache_missed() {
    let cache = Arc::new(cache());
    cache.reset(vec![]);
    let source = Arc::new(CountingSource {
        reads: AtomicUsize::new(0),
        answer: vec![doc("late", "c", 1)],
    });
    let resolver = MissResolver::new(cache.clone(), source.clone(), 4);
    assert_eq!(resolver.resolve("c").await.unwrap(), Resolution::Read);
    assert_eq!(ids(&cache, "c"), vec!["late"]);
    // Different containers are read separately.
    resolver.resolve("d").await.unwrap();
    assert_eq!(source.reads.load(SeqCst), 2);
}
