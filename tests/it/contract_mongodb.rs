//! The config-source contract against a real MongoDB (a replica set or sharded cluster),
//! plus what only a real server can show: a drop invalidating the stream, a restarted
//! worker resuming from its saved token, and a token the server cannot use.
//!
//! Runs whenever `MONGODB_URI` is set when the tests are built, e.g.
//! `MONGODB_URI='mongodb://127.0.0.1:27017/?directConnection=true' cargo test --test it contract_mongodb`;
//! without it every test here is listed as ignored. Each test works in a database of
//! its own (`blob_router_test_*`), dropped afterwards.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::contract::{cache_ids as ids, contract_suite, doc, next_change, Harness};
use crate::support::eventually;
use async_trait::async_trait;
use blob_router::cache::{sync, ConfigCache};
use blob_router::store::mongo::{from_json, MongoSettings, MongoStore};
use blob_router::store::{Change, ConfigStore};
use blob_router::telemetry::metrics::Metrics;
use mongodb::bson::{doc, Document};
use mongodb::{Client, Collection};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

static NEXT: AtomicUsize = AtomicUsize::new(0);
const WAIT: Duration = Duration::from_secs(20);

struct MongoHarness {
    uri: String,
    db: String,
    client: Client,
    source: Arc<MongoStore>,
    dir: tempfile::TempDir,
}

impl MongoHarness {
    async fn new() -> Self {
        let uri = std::env::var("MONGODB_URI")
            .expect("these tests were built with MONGODB_URI set: set it when running them too");
        let db = format!(
            "blob_router_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let client = Client::with_uri_str(&uri).await.unwrap();
        client
            .database(&db)
            .create_collection("source_configs")
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let source = MongoStore::connect(&settings(&uri, &db, None))
            .await
            .unwrap();
        Self {
            source: Arc::new(source),
            uri,
            db,
            client,
            dir,
        }
    }

    async fn connect(&self, token_file: Option<PathBuf>) -> MongoStore {
        MongoStore::connect(&settings(&self.uri, &self.db, token_file))
            .await
            .unwrap()
    }

    fn coll(&self) -> Collection<Document> {
        self.client.database(&self.db).collection("source_configs")
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("resume-token.json")
    }
}

fn settings(uri: &str, db: &str, token_file: Option<PathBuf>) -> MongoSettings {
    MongoSettings {
        uri: uri.into(),
        database: Some(db.into()),
        collection: "source_configs".into(),
        resume_token_file: token_file,
    }
}

impl Drop for MongoHarness {
    fn drop(&mut self) {
        let (uri, db) = (self.uri.clone(), self.db.clone());
        // Async cleanup from a plain thread: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                if let Ok(c) = Client::with_uri_str(&uri).await {
                    let _ = c.database(&db).drop().await;
                }
            });
        })
        .join();
    }
}

#[async_trait]
impl Harness for MongoHarness {
    fn source(&self) -> Arc<dyn ConfigStore> {
        self.source.clone()
    }
    async fn put(&self, doc: Value) {
        let d = from_json(&doc).unwrap();
        self.coll()
            .replace_one(doc! {"_id": d.get("_id").unwrap().clone()}, d)
            .upsert(true)
            .await
            .unwrap();
    }
    async fn remove(&self, id: &str) {
        self.coll().delete_one(doc! {"_id": id}).await.unwrap();
    }
}

contract_suite!(
    MongoHarness::new,
    #[cfg_attr(not(mongodb_uri), ignore = "set MONGODB_URI to run against a real MongoDB")]
);

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    eventually(what, WAIT, || std::future::ready(cond().then_some(()))).await
}

#[cfg_attr(
    not(mongodb_uri),
    ignore = "set MONGODB_URI to run against a real MongoDB"
)]
#[tokio::test]
async fn dropping_the_collection_invalidates_the_stream_and_the_cache_reloads() {
    let h = MongoHarness::new().await;
    h.put(doc("a", "c1", 1)).await;
    let source = h.source();
    let cache = Arc::new(ConfigCache::new(Metrics::detached(), "blob.routed"));
    let feed = sync::warm(&cache, &*source).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(sync::maintain(
        cache.clone(),
        source.clone(),
        feed,
        Duration::from_secs(300),
        stop.clone(),
    ));
    assert_eq!(ids(&cache, "c1"), vec!["a"]);
    h.coll().drop().await.unwrap();
    h.put(doc("b", "c2", 1)).await;
    wait_for("a gone and b in after the drop", || {
        ids(&cache, "c1").is_empty() && ids(&cache, "c2") == ["b"]
    })
    .await;
    wait_for("the stream restarted", || {
        cache.health().change_stream_restarts >= 1 && cache.health().change_stream_active
    })
    .await;
    // The reopened stream delivers changes again.
    h.put(doc("c", "c3", 1)).await;
    wait_for("c in", || ids(&cache, "c3") == ["c"]).await;
    stop.cancel();
}

#[cfg_attr(
    not(mongodb_uri),
    ignore = "set MONGODB_URI to run against a real MongoDB"
)]
#[tokio::test]
async fn a_restarted_worker_resumes_the_stream_from_its_saved_token() {
    let h = MongoHarness::new().await;
    let first = h.connect(Some(h.token_file())).await;
    let mut feed = first.watch().await.unwrap();
    first.snapshot().await.unwrap();
    let opened_at = std::fs::read_to_string(h.token_file()).unwrap();
    h.put(doc("b", "c1", 1)).await;
    assert!(
        matches!(next_change(&mut feed, WAIT).await, Some(Change::Upsert(d)) if d["_id"] == "b")
    );
    // The position after b is saved (after every change).
    wait_for("the token after b saved", || {
        std::fs::read_to_string(h.token_file()).unwrap_or_default() != opened_at
    })
    .await;
    // The worker stops. The token file as it left it is what a restart resumes from; its
    // stream task winds down on its own time and could still save a position past the
    // next insert, so the restart resumes from a copy taken before that insert (a stopped
    // process writes nothing more).
    drop(feed);
    let left = h.dir.path().join("resume-token-at-stop.json");
    std::fs::copy(h.token_file(), &left).unwrap();

    h.put(doc("while-down", "c2", 1)).await;

    let second = h.connect(Some(left)).await;
    let mut feed = second.watch().await.unwrap();
    match next_change(&mut feed, WAIT).await {
        Some(Change::Upsert(d)) => assert_eq!(d["_id"], "while-down"),
        other => panic!("expected the change made while stopped, got {other:?}"),
    }
}

#[cfg_attr(
    not(mongodb_uri),
    ignore = "set MONGODB_URI to run against a real MongoDB"
)]
#[tokio::test]
async fn a_saved_token_the_server_cannot_use_falls_back_to_now_and_a_full_load() {
    let h = MongoHarness::new().await;
    h.put(doc("a", "c1", 1)).await;
    // A token from long before the oplog's start: history lost (or refused outright).
    let dead = serde_json::json!({
        "namespace": format!("{}.source_configs", h.db),
        "token": {"_data": "8200000001000000012B0229296E04"},
    });
    std::fs::write(h.token_file(), dead.to_string()).unwrap();
    let source = h.connect(Some(h.token_file())).await;
    let cache = ConfigCache::new(Metrics::detached(), "blob.routed");
    let mut feed = sync::warm(&cache, &source).await.unwrap();
    assert_eq!(ids(&cache, "c1"), vec!["a"], "the full load happened");
    h.put(doc("b", "c2", 1)).await;
    match next_change(&mut feed, WAIT).await {
        Some(Change::Upsert(d)) => assert_eq!(d["_id"], "b"),
        other => panic!("the stream from now works, got {other:?}"),
    }
    let saved = std::fs::read_to_string(h.token_file()).unwrap_or_default();
    assert!(
        !saved.contains("8200000001000000012B0229296E04"),
        "the dead token is gone: {saved}"
    );
}
