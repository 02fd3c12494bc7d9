//! The MongoDB source against a scripted wire-protocol server (MockupDB): the real
//! driver, the exact commands it sends, and what the cache does after each answer.

mod support;

use std::sync::Arc;
use std::time::Duration;

use blob_router::cache::{sync, ConfigCache};
use blob_router::source::mongo::{MongoSettings, MongoSource};
use blob_router::source::ConfigSource;
use blob_router::telemetry::metrics::Metrics;
use mongodb::bson::{doc, Bson, Document};
use support::mockdb::{change_event, first_batch, next_batch, MockDb, Mode};

const NS: (&str, &str) = ("blob_router", "source_configs");
const NS_STR: &str = "blob_router.source_configs";

fn config(id: &str, container: &str, version: i64) -> Document {
    doc! {"_id": id, "enabled": true, "version": version,
          "ingestion": {"mode": "blob_trigger", "landing_container": container}}
}

async fn source(db: &MockDb) -> Arc<MongoSource> {
    Arc::new(
        MongoSource::connect(&MongoSettings {
            uri: db.uri(),
            database: None,
            collection: "source_configs".into(),
            resume_token_file: None,
        })
        .await
        .unwrap(),
    )
}

#[tokio::test]
async fn smoke() {
    let db = MockDb::start(Mode::ReplicaSet).await;
    let source = source(&db).await;
    let cache = Arc::new(ConfigCache::new(Metrics::detached(), "blob.routed"));
    let warm = {
        let (cache, source) = (cache.clone(), source.clone());
        tokio::spawn(async move { sync::warm(&cache, &*source).await })
    };
    let agg = db.next("aggregate").await;
    println!("{}", agg.command);
    db.reply(&agg, first_batch(NS_STR, 42, vec![], Some("T0"))).await;
    let find = db.next("find").await;
    println!("{}", find.command);
    db.reply(&find, first_batch(NS_STR, 0, vec![config("a", "c1", 1)], None)).await;
    let _feed = warm.await.unwrap().unwrap();
    assert_eq!(cache.load().candidates("c1").len(), 1);
    let gm = db.next("getMore").await;
    println!("{}", gm.command);
    let _ = (Bson::Null, Duration::ZERO, change_event, next_batch, NS);
}
