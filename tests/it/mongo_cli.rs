//! The real binary against the scripted MongoDB (MockupDB) and a private nats-server:
//! `check` on each kind of deployment, `configs import`, and `run` following the
//! change stream, taking the forced read on a miss and resuming after an error.

use std::process::Stdio;
use std::time::Duration;

use crate::support::mockdb::{change_event, first_batch, next_batch, MockDb, Mode};
use crate::support::*;
use blob_router::store::mongo::from_json;
use mongodb::bson::{doc, Document};
use serde_json::Value;
use tokio::process::Command;

const NS: (&str, &str) = ("blob_router", "source_configs");
const NS_STR: &str = "blob_router.source_configs";
const QUIET: Duration = Duration::from_millis(300);

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_blob-router"));
    c.env_remove("BLOB_ROUTER_MONGODB_URI")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// The fixture configs as BSON documents.
fn fixture_docs() -> Vec<Document> {
    let text = std::fs::read_to_string(fixture_path("configs.yaml")).unwrap();
    let docs: Vec<Value> = serde_yaml_ng::from_str(&text).unwrap();
    docs.iter().map(|d| from_json(d).unwrap()).collect()
}

/// The Event Grid fixture with its event id prefixed (a new event for the same blob).
fn event_with_id(prefix: &str) -> Vec<u8> {
    String::from_utf8(fixture("events/eventgrid.json"))
        .unwrap()
        .replace("\"id\": \"", &format!("\"id\": \"{prefix}"))
        .into_bytes()
}

async fn answer_check_reads(db: &MockDb) {
    let list = db.next("listIndexes").await;
    db.reply(
        &list,
        first_batch(
            NS_STR,
            0,
            vec![doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"}],
            None,
        ),
    )
    .await;
    let find = db.next("find").await;
    db.reply(&find, first_batch(NS_STR, 0, fixture_docs(), None))
        .await;
}

/// Runs `check` against the mock (answering its reads) and `nats`: exit code and stdout.
async fn check(db: &MockDb, nats: &NatsServer) -> (Option<i32>, String) {
    let run = bin()
        .args([
            "check",
            "--nats-url",
            &nats.url(),
            "--mongodb-uri",
            &db.uri(),
        ])
        .output();
    let (out, ()) = tokio::join!(run, answer_check_reads(db));
    let out = out.unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn check_refuses_a_standalone_server_with_a_clear_message() {
    let db = MockDb::start(Mode::Standalone).await;
    let nats = NatsServer::start();
    let (code, stdout) = check(&db, &nats).await;
    assert_eq!(code, Some(5), "{stdout}");
    assert!(stdout.contains("standalone"), "{stdout}");
    assert!(stdout.contains("replica set"), "{stdout}");
    assert!(
        stdout.contains("warn  no index on ingestion.landing_container"),
        "{stdout}"
    );
}

#[tokio::test]
async fn check_accepts_a_replica_set_and_a_sharded_cluster() {
    let nats = NatsServer::start();
    for (mode, says) in [
        (Mode::ReplicaSet, "replica set `rs0`"),
        (Mode::Sharded, "sharded cluster"),
    ] {
        let db = MockDb::start(mode).await;
        let (code, stdout) = check(&db, &nats).await;
        assert_eq!(code, Some(0), "{stdout}");
        assert!(stdout.contains(says), "{stdout}");
        assert!(stdout.contains("5 configs valid"), "{stdout}");
    }
}

#[tokio::test]
async fn import_upserts_every_config_by_id_and_creates_the_index() {
    let db = MockDb::start(Mode::ReplicaSet).await;
    let run = bin()
        .args(["configs", "import", "--mongodb-uri", &db.uri()])
        .arg(fixture_path("configs.yaml"))
        .output();
    let script = async {
        let find = db.next("find").await;
        assert_eq!(find.command.get_document("filter").unwrap(), &doc! {});
        db.reply(&find, first_batch(NS_STR, 0, vec![], None)).await;
        let mut written = Vec::new();
        for _ in 0..5 {
            let update = db.next("update").await;
            let updates = update.command.get_array("updates").unwrap();
            assert_eq!(updates.len(), 1);
            let u = updates[0].as_document().unwrap();
            assert_eq!(u.get_bool("upsert"), Ok(true));
            let id = u.get_document("q").unwrap().get_str("_id").unwrap();
            let doc = u.get_document("u").unwrap();
            assert_eq!(doc.get_str("_id"), Ok(id));
            written.push(doc.clone());
            db.reply(
                &update,
                doc! {"ok": 1, "n": 1, "nModified": 0, "upserted": [{"index": 0, "_id": id}]},
            )
            .await;
        }
        let mut expected = fixture_docs();
        let key = |d: &Document| d.get_str("_id").unwrap().to_string();
        expected.sort_by_key(key);
        written.sort_by_key(key);
        assert_eq!(written, expected, "the file's documents, unchanged");
        let index = db.next("createIndexes").await;
        let spec = index.command.get_array("indexes").unwrap()[0]
            .as_document()
            .unwrap()
            .clone();
        assert_eq!(
            spec.get_document("key").unwrap(),
            &doc! {"ingestion.landing_container": 1}
        );
        db.reply(&index, doc! {"ok": 1}).await;
    };
    let (out, ()) = tokio::join!(run, script);
    let out = out.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("5 inserted, 0 updated, 0 unchanged"),
        "{stdout}"
    );
}

#[tokio::test]
async fn import_refuses_a_bad_file_and_writes_nothing() {
    let db = MockDb::start(Mode::ReplicaSet).await;
    let file = ConfigFile::new(
        "- {_id: good, ingestion: {mode: blob_trigger, landing_container: c}}\n\
         - {_id: bad, ingestion: {mode: blob_trigger, landing_container: c, path_pattern: {pattern: 'a/{x'}}}\n\
         - {_id: worse, ingestion: {mode: blob_trigger}}\n",
    );
    let out = bin()
        .args(["configs", "import", "--mongodb-uri", &db.uri()])
        .arg(&file.path)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("2 of 3 configs refused"), "{stderr}");
    assert!(
        stderr.contains("bad") && stderr.contains("worse"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    for command in ["find", "update", "insert"] {
        assert!(!db.sees(command, QUIET).await, "{command} sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_routes_from_mongodb_follows_changes_and_resumes_after_an_error() {
    let db = MockDb::start(Mode::ReplicaSet).await;
    let nats = NatsServer::start();
    let uri = db.uri();
    let worker = Worker::spawn_with(&nats.url(), &["--mongodb-uri", &uri]).await;

    // Startup: a database that refuses at first is retried, not fatal.
    let agg = db.next("aggregate").await;
    db.fail(&agg, 13, "not authorized on blob_router", &[])
        .await;
    // Then the stream first, then the snapshot; not ready before both.
    let agg = db.next("aggregate").await;
    assert!(!db.sees("find", QUIET).await);
    assert_eq!(worker.get("/health/ready").await.map(|r| r.0), Some(503));
    db.reply(&agg, first_batch(NS_STR, 42, vec![], Some("T0")))
        .await;
    let find = db.next("find").await;
    db.reply(&find, first_batch(NS_STR, 0, fixture_docs(), None))
        .await;
    worker.wait_ready().await;
    let (_, health) = worker.get("/health/cache").await.unwrap();
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["cache_size"], 5, "{health}");
    assert_eq!(health["change_stream_active"], true);

    // An event routed by a config from MongoDB.
    let js = nats.jetstream().await;
    publish(
        &js,
        "blob.events.azure",
        fixture("events/eventgrid.json"),
        &[],
    )
    .await;
    assert_eq!(wait_outputs(&js, 1, Duration::from_secs(20)).await, (1, 0));

    // The config is deleted: the next event for that container misses, the forced read
    // for its container finds nothing, and the event is dead-lettered.
    let more = db.next("getMore").await;
    let delete = change_event("T1", "delete", NS, Some("qc-analyzer-results"), None);
    let raw = change_event("T2", "delete", NS, Some("qc-analyzer-raw"), None);
    db.reply(&more, next_batch(NS_STR, 42, vec![delete, raw], Some("T2")))
        .await;
    let more = db.next("getMore").await;
    publish(&js, "blob.events.azure", event_with_id("again-"), &[]).await;
    let read = db.next("find").await;
    assert_eq!(
        read.command.get_document("filter").unwrap(),
        &doc! {"enabled": {"$ne": false}, "ingestion.landing_container": "qc-analyzer-landing"}
    );
    db.reply(&read, first_batch(NS_STR, 0, vec![], None)).await;
    assert_eq!(wait_outputs(&js, 2, Duration::from_secs(20)).await, (1, 1));
    let dead = read_all(&js, "BLOB_DLQ").await;
    assert_eq!(
        dead[0].header("Blob-Router-Reason"),
        Some("no_matching_config")
    );

    // While the stream is healthy the empty answer is remembered: no second read.
    publish(&js, "blob.events.azure", event_with_id("third-"), &[]).await;
    assert_eq!(wait_outputs(&js, 3, Duration::from_secs(20)).await, (1, 2));
    assert!(!db.sees("find", QUIET).await, "negative answer remembered");

    // A stream error: inactive while down, resumed after T2, counted.
    db.fail(&more, 11601, "interrupted", &[]).await;
    let agg = db.next("aggregate").await;
    eventually(
        "the feed is reported inactive while the stream is down",
        Duration::from_secs(5),
        || async {
            let (_, health) = worker.get("/health/cache").await.unwrap();
            health
                .contains("\"change_stream_active\":false")
                .then_some(())
        },
    )
    .await;
    // While it is down every miss is a forced read again.
    for (n, prefix) in [(4, "fourth-"), (5, "fifth-")] {
        publish(&js, "blob.events.azure", event_with_id(prefix), &[]).await;
        let read = db.next("find").await;
        db.reply(&read, first_batch(NS_STR, 0, vec![], None)).await;
        assert_eq!(
            wait_outputs(&js, n, Duration::from_secs(20)).await,
            (1, n - 1)
        );
    }
    let stage = agg.command.get_array("pipeline").unwrap()[0]
        .as_document()
        .unwrap()
        .get_document("$changeStream")
        .unwrap()
        .clone();
    assert_eq!(
        stage.get_document("resumeAfter").unwrap(),
        &doc! {"_data": "T2"}
    );
    db.reply(&agg, first_batch(NS_STR, 43, vec![], Some("T2")))
        .await;
    worker
        .wait_metric(
            "source_config_change_stream_restarts_total",
            1.0,
            Duration::from_secs(10),
        )
        .await;
    let (_, health) = worker.get("/health/cache").await.unwrap();
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["change_stream_active"], true, "{health}");
    assert_eq!(health["change_stream_restarts"], 1, "{health}");
    assert!(health["last_change_at"].is_string(), "{health}");
    let logs = worker.logs();
    assert!(
        logs.contains("127.0.0.1"),
        "the source is described in the logs"
    );
}

/// Answers `n` upserts as "unchanged" (matched, not modified).
async fn answer_upserts(db: &MockDb, n: usize) {
    for _ in 0..n {
        let update = db.next("update").await;
        db.reply(&update, doc! {"ok": 1, "n": 1, "nModified": 0})
            .await;
    }
}

#[tokio::test]
async fn import_prune_deletes_only_the_configs_it_read_and_not_in_the_file() {
    let db = MockDb::start(Mode::ReplicaSet).await;
    let run = bin()
        .args(["configs", "import", "--prune", "--mongodb-uri", &db.uri()])
        .arg(fixture_path("configs.yaml"))
        .output();
    let script = async {
        let find = db.next("find").await;
        assert_eq!(
            find.command.get_document("projection").unwrap(),
            &doc! {"_id": 1}
        );
        let existing = vec![doc! {"_id": "retired"}, doc! {"_id": "qc-analyzer-results"}];
        db.reply(&find, first_batch(NS_STR, 0, existing, None))
            .await;
        answer_upserts(&db, 5).await;
        let delete = db.next("delete").await;
        let deletes = delete.command.get_array("deletes").unwrap();
        assert_eq!(
            deletes[0].as_document().unwrap().get_document("q").unwrap(),
            &doc! {"_id": {"$in": ["retired"]}}
        );
        db.reply(&delete, doc! {"ok": 1, "n": 1}).await;
        let index = db.next("createIndexes").await;
        db.reply(&index, doc! {"ok": 1}).await;
    };
    let (out, ()) = tokio::join!(run, script);
    let out = out.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 deleted"), "{stdout}");
}

#[tokio::test]
async fn import_refuses_an_id_whose_type_differs_from_the_collection() {
    let db = MockDb::start(Mode::ReplicaSet).await;
    let file = ConfigFile::new(
        "- {_id: 65f0c0ffee0000000000abcd, ingestion: {mode: blob_trigger, landing_container: c}}\n",
    );
    let run = bin()
        .args(["configs", "import", "--mongodb-uri", &db.uri()])
        .arg(&file.path)
        .output();
    let script = async {
        let find = db.next("find").await;
        let oid = mongodb::bson::oid::ObjectId::parse_str("65f0c0ffee0000000000abcd").unwrap();
        db.reply(&find, first_batch(NS_STR, 0, vec![doc! {"_id": oid}], None))
            .await;
    };
    let (out, ()) = tokio::join!(run, script);
    let out = out.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("a string in the file but an ObjectId in the collection"),
        "{stderr}"
    );
    assert!(!db.sees("update", QUIET).await, "nothing written");
}

#[tokio::test]
async fn import_prune_with_an_empty_file_is_refused() {
    let db = MockDb::start(Mode::ReplicaSet).await;
    let file = ConfigFile::new("[]\n");
    let out = bin()
        .args(["configs", "import", "--prune", "--mongodb-uri", &db.uri()])
        .arg(&file.path)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing to --prune"), "{stderr}");
    assert!(!db.sees("find", QUIET).await, "MongoDB not even read");
}

#[tokio::test]
async fn credentials_in_the_uri_never_reach_logs_or_output() {
    let nats = NatsServer::start();
    let closed = ClosedPort::new();
    let port = closed.port;
    let uri = format!("mongodb://app:s3cret-pw@127.0.0.1:{port}/?serverSelectionTimeoutMS=200");
    // The worker waits for the unreachable database, logging each failed attempt.
    let worker = Worker::spawn_with(&nats.url(), &["--mongodb-uri", &uri]).await;
    eventually_or(
        "two failed attempts logged",
        Duration::from_secs(15),
        || async {
            let attempts = worker.logs().matches("config source not available").count();
            (attempts >= 2).then_some(())
        },
        || worker.logs(),
    )
    .await;
    let logs = worker.logs();
    assert!(logs.contains(&format!("127.0.0.1:{port}")), "{logs}");
    assert!(!logs.contains("s3cret"), "{logs}");
    assert_eq!(worker.get("/health/ready").await.map(|r| r.0), Some(503));

    let out = bin()
        .args(["check", "--nats-url", &nats.url(), "--mongodb-uri", &uri])
        .output()
        .await
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(5), "{all}");
    assert!(!all.contains("s3cret"), "{all}");
}
