//! The MongoDB source against a scripted wire-protocol server (MockupDB, see
//! `support/mockdb.rs`): the real driver, the exact commands it sends, and what the cache
//! does after each answer. No MongoDB server is involved; `contract_mongodb.rs` runs the
//! contract against a real one when `MONGODB_URI` is set.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::support::contract::cache_ids as ids;
use crate::support::eventually;
use crate::support::mockdb::{change_event, first_batch, next_batch, MockDb, Mode, Request};
use blob_router::cache::{sync, ConfigCache};
use blob_router::store::mongo::stream::{self, match_stage};
use blob_router::store::mongo::{MongoSettings, MongoStore};
use blob_router::store::{ChangeFeed, ConfigStore};
use blob_router::telemetry::metrics::Metrics;
use mongodb::bson::{doc, Bson, Document, Timestamp};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const NS: (&str, &str) = ("blob_router", "source_configs");
const NS_STR: &str = "blob_router.source_configs";
const QUIET: Duration = Duration::from_millis(300);

fn config(id: &str, container: &str, version: i64) -> Document {
    doc! {"_id": id, "enabled": true, "version": version,
    "ingestion": {"mode": "blob_trigger", "landing_container": container}}
}

async fn source(db: &MockDb, token_file: Option<PathBuf>) -> Arc<MongoStore> {
    Arc::new(
        MongoStore::connect(&MongoSettings {
            uri: db.uri(),
            database: None,
            collection: "source_configs".into(),
            resume_token_file: token_file,
        })
        .await
        .unwrap(),
    )
}

/// A change event carrying config `id` (in `container`, at `version`) as its document.
fn changed(token: &str, op: &str, id: &str, container: &str, version: i64) -> Document {
    change_event(
        token,
        op,
        NS,
        Some(id),
        Some(config(id, container, version)),
    )
}

/// The `$changeStream` stage of an `aggregate`, after checking the rest of the pipeline.
fn change_stream_stage(req: &Request) -> Document {
    assert_eq!(req.command.get_str("aggregate"), Ok("source_configs"));
    assert_eq!(req.command.get_str("$db"), Ok("blob_router"));
    let pipeline = req.command.get_array("pipeline").unwrap();
    assert_eq!(pipeline.len(), 2, "{pipeline:?}");
    assert_eq!(pipeline[1], Bson::Document(match_stage()));
    let stage = pipeline[0].as_document().unwrap();
    let stage = stage.get_document("$changeStream").unwrap().clone();
    assert_eq!(stage.get_str("fullDocument"), Ok("updateLookup"));
    stage
}

/// Asserts the stream is opened from "now": no resume point of any kind.
fn assert_from_now(req: &Request) {
    let stage = change_stream_stage(req);
    for key in ["resumeAfter", "startAfter", "startAtOperationTime"] {
        assert!(!stage.contains_key(key), "{key} in {stage}");
    }
}

fn resume_after(req: &Request) -> Option<String> {
    let stage = change_stream_stage(req);
    assert!(!stage.contains_key("startAfter"));
    stage
        .get_document("resumeAfter")
        .ok()
        .map(|t| t.get_str("_data").unwrap().to_string())
}

/// A running source + cache, warmed from the mock with config `a` in container `c1`,
/// the change stream on cursor 42 at token `T0`.
struct Rig {
    db: MockDb,
    cache: Arc<ConfigCache>,
    stop: CancellationToken,
}

impl Rig {
    async fn start() -> Self {
        Self::start_with(None, Some("T0")).await
    }

    async fn start_with(token_file: Option<PathBuf>, token: Option<&str>) -> Self {
        let db = MockDb::start(Mode::ReplicaSet).await;
        let source = source(&db, token_file).await;
        let cache = Arc::new(ConfigCache::new(Metrics::detached(), "blob.routed"));
        let warm = spawn_warm(&cache, &source);
        let agg = db.next("aggregate").await;
        assert_from_now(&agg);
        db.reply(&agg, first_batch(NS_STR, 42, vec![], token)).await;
        let find = db.next("find").await;
        db.reply(
            &find,
            first_batch(NS_STR, 0, vec![config("a", "c1", 1)], None),
        )
        .await;
        let feed = warm.await.unwrap().unwrap();
        let stop = CancellationToken::new();
        let src: Arc<dyn ConfigStore> = source.clone();
        tokio::spawn(sync::maintain(
            cache.clone(),
            src,
            feed,
            Duration::from_secs(300),
            stop.clone(),
        ));
        Self { db, cache, stop }
    }

    /// The ids of the configs in `container`.
    fn ids(&self, container: &str) -> Vec<String> {
        ids(&self.cache, container)
    }

    async fn wait(&self, what: &str, cond: impl Fn(&ConfigCache) -> bool) {
        eventually(
            &format!("the cache reaches: {what}"),
            Duration::from_secs(5),
            || std::future::ready(cond(&self.cache).then_some(())),
        )
        .await
    }

    fn restarts(&self) -> u64 {
        self.cache
            .metrics()
            .counters
            .change_stream_restarts
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Answers the pending `getMore` with `events`, and waits for the next one (which the
    /// source sends only after it has forwarded the batch).
    async fn feed(&self, cursor: i64, events: Vec<Document>, token: &str) {
        let more = self.db.next("getMore").await;
        assert_eq!(more.command.get_i64("getMore"), Ok(cursor));
        self.db
            .reply(&more, next_batch(NS_STR, cursor, events, Some(token)))
            .await;
        assert!(
            self.db.sees("getMore", Duration::from_secs(15)).await,
            "the batch was forwarded"
        );
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn spawn_warm(
    cache: &Arc<ConfigCache>,
    source: &Arc<MongoStore>,
) -> tokio::task::JoinHandle<Result<ChangeFeed, blob_router::store::StoreError>> {
    let (cache, source) = (cache.clone(), source.clone());
    tokio::spawn(async move { sync::warm(&cache, &*source).await })
}

#[tokio::test]
async fn warm_opens_the_stream_first_and_keeps_a_change_made_during_the_snapshot() {
    let db = MockDb::start(Mode::ReplicaSet).await;
    let source = source(&db, None).await;
    let cache = Arc::new(ConfigCache::new(Metrics::detached(), "blob.routed"));
    let warm = spawn_warm(&cache, &source);

    // 1. The change stream is opened first, from now, with updateLookup and the $match.
    let agg = db.next("aggregate").await;
    assert_from_now(&agg);
    assert!(
        !db.sees("find", QUIET).await,
        "no snapshot before the stream is open"
    );
    db.reply(&agg, first_batch(NS_STR, 42, vec![], Some("T0")))
        .await;

    // 2. The snapshot read: enabled configs, majority read concern. Held unanswered
    //    while a change is committed "during" it.
    let find = db.next("find").await;
    assert_eq!(find.command.get_str("find"), Ok("source_configs"));
    assert_eq!(
        find.command.get_document("filter").unwrap(),
        &doc! {"enabled": {"$ne": false}}
    );
    assert_eq!(
        find.command
            .get_document("readConcern")
            .unwrap()
            .get_str("level"),
        Ok("majority")
    );
    let more = db.next("getMore").await;
    assert_eq!(more.command.get_i64("getMore"), Ok(42));
    let late = changed("T1", "insert", "late", "c9", 1);
    db.reply(&more, next_batch(NS_STR, 42, vec![late], Some("T1")))
        .await;
    db.next("getMore").await; // the change has been forwarded

    // 3. The snapshot (without the late config) answers; warm applies the change too.
    db.reply(
        &find,
        first_batch(NS_STR, 0, vec![config("a", "c1", 1)], None),
    )
    .await;
    let _feed = warm.await.unwrap().unwrap();
    assert_eq!(ids(&cache, "c1"), vec!["a"]);
    assert_eq!(
        ids(&cache, "c9"),
        vec!["late"],
        "the change made during the snapshot is in"
    );
    assert!(cache.health().change_stream_active);
}

#[tokio::test]
async fn each_change_event_updates_one_config_without_a_reload() {
    let rig = Rig::start().await;
    let db = &rig.db;
    // update: `a` moves to c2 (fullDocument from the update lookup).
    rig.feed(42, vec![changed("T1", "update", "a", "c2", 2)], "T1")
        .await;
    rig.wait("a moved to c2", |c| {
        ids(c, "c2") == ["a"] && ids(c, "c1").is_empty()
    })
    .await;
    assert_eq!(rig.cache.load().candidates("c2")[0].version, 2);
    // insert, then replace of b
    rig.feed(
        42,
        vec![
            changed("T2", "insert", "b", "c3", 1),
            changed("T3", "replace", "b", "c3", 2),
        ],
        "T3",
    )
    .await;
    rig.wait("b v2 in c3", |c| {
        c.load().candidates("c3").first().map(|b| b.version) == Some(2)
    })
    .await;
    // update whose document is gone by lookup time (fullDocument null) = delete;
    // an update that disables a config = delete; delete = delete.
    let mut disabled = config("b", "c3", 3);
    disabled.insert("enabled", false);
    rig.feed(
        42,
        vec![
            change_event("T4", "update", NS, Some("a"), None),
            change_event("T5", "update", NS, Some("b"), Some(disabled)),
        ],
        "T5",
    )
    .await;
    rig.wait("a and b gone", |c| {
        ids(c, "c2").is_empty() && ids(c, "c3").is_empty()
    })
    .await;
    rig.feed(42, vec![changed("T6", "insert", "d", "c4", 1)], "T6")
        .await;
    rig.feed(
        42,
        vec![change_event("T7", "delete", NS, Some("d"), None)],
        "T7",
    )
    .await;
    rig.wait("d inserted then deleted", |c| ids(c, "c4").is_empty())
        .await;
    assert_eq!(rig.cache.health().cache_size, 0);
    assert!(!db.sees("find", QUIET).await, "no reload for plain changes");
    assert_eq!(rig.restarts(), 0);
}

#[tokio::test]
async fn a_resumable_error_is_resumed_by_the_driver_after_the_last_token() {
    let rig = Rig::start().await;
    let db = &rig.db;
    rig.feed(42, vec![changed("T1", "insert", "b", "c2", 1)], "T1")
        .await;
    let more = db.next("getMore").await;
    db.fail(&more, 6, "HostUnreachable", &["ResumableChangeStreamError"])
        .await;
    let agg = db.next("aggregate").await;
    assert_eq!(resume_after(&agg).as_deref(), Some("T1"));
    db.reply(&agg, first_batch(NS_STR, 43, vec![], Some("T1")))
        .await;
    rig.feed(43, vec![changed("T2", "insert", "c", "c3", 1)], "T2")
        .await;
    rig.wait("c arrived on the resumed stream", |c| ids(c, "c3") == ["c"])
        .await;
    assert_eq!(rig.ids("c2"), vec!["b"]);
    assert!(!db.sees("find", QUIET).await, "nothing missed, no reload");
}

#[tokio::test]
async fn a_stream_error_marks_the_feed_down_and_resumes_with_backoff_after_the_last_token() {
    let rig = Rig::start().await;
    let db = &rig.db;
    let more = db.next("getMore").await;
    // Not resumable by the driver (no label): it reaches the source.
    db.fail(&more, 11601, "operation was interrupted", &[])
        .await;
    rig.wait("feed inactive", |c| !c.health().change_stream_active)
        .await;
    // The first resume attempt fails too; the next one (after a backoff) succeeds.
    let agg = db.next("aggregate").await;
    assert_eq!(resume_after(&agg).as_deref(), Some("T0"));
    db.fail(&agg, 11601, "operation was interrupted", &[]).await;
    let started = std::time::Instant::now();
    let agg = db.next("aggregate").await;
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "retried after a backoff"
    );
    assert_eq!(resume_after(&agg).as_deref(), Some("T0"));
    assert!(!rig.cache.health().change_stream_active);
    db.reply(&agg, first_batch(NS_STR, 44, vec![], Some("T0")))
        .await;
    rig.wait("feed active again", |c| c.health().change_stream_active)
        .await;
    assert_eq!(rig.restarts(), 1);
    assert!(!db.sees("find", QUIET).await, "resumed, so no reload");
    assert_eq!(rig.ids("c1"), vec!["a"]);
}

/// Expects a fresh stream and a reload read that now returns only `x` in `c5`, and
/// `restarts` restarts counted in all.
async fn expect_reload_from_now(rig: &Rig, restarts: u64) {
    let db = &rig.db;
    let agg = db.next("aggregate").await;
    assert_from_now(&agg);
    db.reply(&agg, first_batch(NS_STR, 45, vec![], Some("N0")))
        .await;
    let find = db.next("find").await;
    assert_eq!(
        find.command.get_document("filter").unwrap(),
        &doc! {"enabled": {"$ne": false}}
    );
    db.reply(
        &find,
        first_batch(NS_STR, 0, vec![config("x", "c5", 1)], None),
    )
    .await;
    rig.wait("reloaded", |c| {
        ids(c, "c1").is_empty() && ids(c, "c5") == ["x"] && c.health().change_stream_active
    })
    .await;
    assert_eq!(rig.restarts(), restarts);
    // The new stream is followed.
    let more = db.next("getMore").await;
    assert_eq!(more.command.get_i64("getMore"), Ok(45));
}

#[tokio::test]
async fn history_lost_reloads_everything_and_reopens_from_now() {
    let rig = Rig::start().await;
    let more = rig.db.next("getMore").await;
    rig.db
        .fail(
            &more,
            286,
            "ChangeStreamHistoryLost: resume point no longer in the oplog",
            &[],
        )
        .await;
    expect_reload_from_now(&rig, 1).await;
}

#[tokio::test]
async fn invalidate_reloads_everything_and_reopens_from_now() {
    let rig = Rig::start().await;
    let more = rig.db.next("getMore").await;
    let drop = change_event("T1", "drop", NS, None, None);
    let invalidate = change_event("T2", "invalidate", NS, None, None);
    rig.db
        .reply(
            &more,
            next_batch(NS_STR, 0, vec![drop, invalidate], Some("T2")),
        )
        .await;
    expect_reload_from_now(&rig, 1).await;
}

#[tokio::test]
async fn a_resume_token_the_server_no_longer_knows_falls_back_to_a_reload() {
    let rig = Rig::start().await;
    let more = rig.db.next("getMore").await;
    rig.db.fail(&more, 11601, "interrupted", &[]).await;
    let agg = rig.db.next("aggregate").await;
    assert_eq!(resume_after(&agg).as_deref(), Some("T0"));
    rig.db
        .fail(
            &agg,
            280,
            "cannot resume stream; the resume token was not found",
            &[],
        )
        .await;
    expect_reload_from_now(&rig, 1).await;
}

#[tokio::test]
async fn without_a_resume_token_the_stream_resumes_at_the_operation_time() {
    // A server that returns no postBatchResumeToken (before 4.0.7).
    let rig = Rig::start_with(None, None).await;
    let more = rig.db.next("getMore").await;
    rig.db.fail(&more, 11601, "interrupted", &[]).await;
    let agg = rig.db.next("aggregate").await;
    let stage = change_stream_stage(&agg);
    assert!(!stage.contains_key("resumeAfter"));
    // The operation time of the `ping` sent just before the stream was first opened.
    assert_eq!(
        stage.get_timestamp("startAtOperationTime"),
        Ok(Timestamp {
            time: 1_700_000_000,
            increment: 1
        })
    );
}

#[tokio::test]
async fn the_forced_read_asks_for_one_container() {
    let db = MockDb::start(Mode::ReplicaSet).await;
    let source = source(&db, None).await;
    let read = tokio::spawn({
        let source = source.clone();
        async move { source.read_container("c7").await }
    });
    let find = db.next("find").await;
    assert_eq!(
        find.command.get_document("filter").unwrap(),
        &doc! {"enabled": {"$ne": false}, "ingestion.landing_container": "c7"}
    );
    db.reply(
        &find,
        first_batch(NS_STR, 0, vec![config("p", "c7", 4)], None),
    )
    .await;
    let docs = read.await.unwrap().unwrap();
    assert_eq!(
        docs,
        vec![json!({"_id": "p", "enabled": true, "version": 4,
        "ingestion": {"mode": "blob_trigger", "landing_container": "c7"}})]
    );
}

#[tokio::test]
async fn a_saved_token_resumes_a_restarted_worker_and_a_dead_one_falls_back_to_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resume-token.json");

    // First worker: follows the stream to T1, then stops.
    let rig = Rig::start_with(Some(file.clone()), Some("T0")).await;
    rig.feed(42, vec![changed("T1", "insert", "b", "c2", 1)], "T1")
        .await;
    rig.wait("b arrived", |c| ids(c, "c2") == ["b"]).await;
    drop(rig);
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(saved.contains("T1"), "{saved}");

    // Second worker: the stream resumes after T1 and is read up to the present before
    // the snapshot. What changed meanwhile (c inserted at v1, then updated to v2; b
    // deleted) is covered by the snapshot; the old insert image is not applied over it.
    let db = MockDb::start(Mode::ReplicaSet).await;
    let cache = Arc::new(ConfigCache::new(Metrics::detached(), "blob.routed"));
    let source2 = source(&db, Some(file.clone())).await;
    let warm = spawn_warm(&cache, &source2);
    let agg = db.next("aggregate").await;
    assert_eq!(resume_after(&agg).as_deref(), Some("T1"));
    let replayed = vec![
        changed("T2", "insert", "c", "c3", 1),
        change_event("T3", "delete", NS, Some("b"), None),
    ];
    db.reply(&agg, first_batch(NS_STR, 50, replayed, Some("T3")))
        .await;
    assert!(
        !db.sees("find", QUIET).await,
        "no snapshot before the stream is caught up"
    );
    let more = db.next("getMore").await;
    db.reply(&more, next_batch(NS_STR, 50, vec![], Some("T4")))
        .await;
    let find = db.next("find").await;
    let snapshot = vec![config("a", "c1", 1), config("c", "c3", 2)];
    db.reply(&find, first_batch(NS_STR, 0, snapshot, None))
        .await;
    let feed = warm.await.unwrap().unwrap();
    assert_eq!(ids(&cache, "c3"), vec!["c"]);
    assert_eq!(
        cache.load().candidates("c3")[0].version,
        2,
        "the snapshot's version, not the replayed insert image"
    );
    assert!(ids(&cache, "c2").is_empty());
    drop(feed);
    drop(db);

    // Third worker: the server no longer knows T1. Fall back to now, and a full load.
    let db = MockDb::start(Mode::ReplicaSet).await;
    let cache = Arc::new(ConfigCache::new(Metrics::detached(), "blob.routed"));
    let source3 = source(&db, Some(file.clone())).await;
    let warm = spawn_warm(&cache, &source3);
    let agg = db.next("aggregate").await;
    assert_eq!(
        resume_after(&agg).as_deref(),
        Some("T4"),
        "the second worker saved its caught-up position"
    );
    db.fail(&agg, 286, "ChangeStreamHistoryLost", &[]).await;
    let agg = db.next("aggregate").await;
    assert_from_now(&agg);
    db.reply(&agg, first_batch(NS_STR, 51, vec![], Some("N0")))
        .await;
    let find = db.next("find").await;
    db.reply(
        &find,
        first_batch(NS_STR, 0, vec![config("z", "c8", 1)], None),
    )
    .await;
    let _feed = warm.await.unwrap().unwrap();
    assert_eq!(ids(&cache, "c8"), vec!["z"]);
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(
        saved.contains("N0") && !saved.contains("T4"),
        "the dead token is replaced: {saved}"
    );
    let _ = source3.describe();
}

#[tokio::test]
async fn a_failed_reload_keeps_the_feed_inactive_and_is_retried() {
    let rig = Rig::start().await;
    let db = &rig.db;
    let more = db.next("getMore").await;
    db.fail(&more, 286, "ChangeStreamHistoryLost", &[]).await;
    let agg = db.next("aggregate").await;
    assert_from_now(&agg);
    db.reply(&agg, first_batch(NS_STR, 45, vec![], Some("N0")))
        .await;
    // The reload's read fails: the feed must not be reported healthy.
    let find = db.next("find").await;
    db.fail(&find, 189, "PrimarySteppedDown", &[]).await;
    let find = db.next("find").await;
    assert!(!rig.cache.health().change_stream_active);
    assert_eq!(rig.ids("c1"), vec!["a"], "the old cache keeps routing");
    db.reply(
        &find,
        first_batch(NS_STR, 0, vec![config("x", "c5", 1)], None),
    )
    .await;
    rig.wait("reloaded and active", |c| {
        ids(c, "c5") == ["x"] && c.health().change_stream_active
    })
    .await;
}

#[tokio::test]
async fn resumes_that_keep_failing_back_off_then_give_up_the_position_for_a_reload() {
    let rig = Rig::start().await;
    let db = &rig.db;
    let mut cursor = 42;
    let mut gaps = Vec::new();
    for _ in 0..stream::MAX_RESUMES {
        // The stream reopens fine, then its first getMore fails again at once.
        let more = db.next("getMore").await;
        assert_eq!(more.command.get_i64("getMore"), Ok(cursor));
        db.fail(&more, 10334, "BSONObjectTooLarge", &[]).await;
        let failed_at = std::time::Instant::now();
        let agg = db.next("aggregate").await;
        gaps.push(failed_at.elapsed());
        assert_eq!(resume_after(&agg).as_deref(), Some("T0"));
        cursor += 1;
        db.reply(&agg, first_batch(NS_STR, cursor, vec![], Some("T0")))
            .await;
    }
    // Every resume after the first waited (backoff spans the cycles).
    assert!(
        gaps.iter()
            .skip(1)
            .all(|g| *g >= Duration::from_millis(200)),
        "backoff across cycles: {gaps:?}"
    );
    let more = db.next("getMore").await;
    db.fail(&more, 10334, "BSONObjectTooLarge", &[]).await;
    // Five resumes, then the restart from now.
    expect_reload_from_now(&rig, u64::from(stream::MAX_RESUMES) + 1).await;
}
