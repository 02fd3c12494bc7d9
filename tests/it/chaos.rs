//! The fault suite behind the README's reliability table: each test publishes a known
//! mixed burst, breaks something while the worker is busy with it, and checks that every
//! input came out exactly once across the routed and dead-letter streams.
//!
//! - the worker SIGKILLed every 1-3 s and restarted, with 1 and with 3 replicas sharing
//!   the durable consumer;
//! - nats-server killed and restarted on the same store mid-burst;
//! - the config file turned to garbage, replaced by a directory, deleted (and unreadable,
//!   when not running as root) mid-burst;
//! - MongoDB (the scripted wire server) refusing connections, then hanging, mid-burst;
//! - the input stream's durable consumer deleted under a running worker.
//!
//! Each prints one `RELIABILITY| fault | load | lost | duplicated | recovery` line
//! (visible with `--nocapture`); `scripts/reliability-table.sh` turns them into the
//! README's table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use serde_json::Value;

use crate::support::burst::{
    assert_accounted_once, mixed_template, publish_mixed_range, publish_paced, reliability_line,
    secs,
};
use crate::support::mockdb::{first_batch, MockDb, Mode};
use crate::support::*;

/// Inputs of each kill loop: the floor the reliability issue sets.
const KILL_LOOP_EVENTS: usize = 20_000;

/// A short ack wait (fixed when the durable consumer is created) brings a killed
/// worker's unacked messages back quickly.
const WORKER_FLAGS: [&str; 4] = ["--ack-wait", "2s", "--concurrency", "32"];

/// Events a worker finished (routed or dead-lettered), from its metrics.
async fn finished(worker: &Worker) -> f64 {
    worker
        .metric("blob_router_events_total{outcome=\"routed\"}")
        .await
        + worker
            .metric("blob_router_events_total{outcome=\"dead_lettered\"}")
            .await
}

/// Publishes 20,000 mixed inputs at 1,000/s to `replicas` workers on the one durable
/// consumer, SIGKILLs a random replica every 1-3 s and starts a new one in its place,
/// until every input is accounted for.
async fn kill_loop(replicas: usize) {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let js = nats.jetstream().await;
    let url = nats.url();
    let start = || Worker::start(&url, &configs.path, &WORKER_FLAGS);
    let mut workers = Vec::new();
    for _ in 0..replicas {
        workers.push(start().await);
    }
    // What each replica slot finished, summed over the processes that held it.
    let mut per_slot = vec![0.0; replicas];
    let publisher = publish_paced(js.clone(), "kill", KILL_LOOP_EVENTS, 100);
    let total = KILL_LOOP_EVENTS as u64;

    let deadline = Instant::now() + Duration::from_secs(150);
    let (mut kills, mut slowest_restart) = (0, Duration::ZERO);
    loop {
        // The fault's pace, not a wait for a state.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(1000..=3000))).await;
        let (r, d) = outputs(&js).await;
        if r + d >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {total} accounted for after {kills} kills",
            r + d
        );
        let slot = fastrand::usize(..replicas);
        per_slot[slot] += finished(&workers[slot]).await;
        workers[slot].sigkill();
        kills += 1;
        let restarted = Instant::now();
        workers[slot] = start().await;
        slowest_restart = slowest_restart.max(restarted.elapsed());
    }
    let expected = publisher.await.unwrap();
    assert_eq!(expected.total(), total);
    assert!(
        wait_drained(&js, Duration::from_secs(60)).await,
        "logs:\n{}",
        workers[0].logs()
    );
    assert_eq!(
        wait_outputs(&js, total, Duration::from_secs(10)).await,
        (expected.routed, expected.dead)
    );
    let audit = assert_accounted_once(&js, &expected).await;
    for (slot, worker) in workers.iter().enumerate() {
        per_slot[slot] += finished(worker).await;
    }
    eprintln!("kills: {kills}; events finished per replica slot: {per_slot:?}");
    assert!(kills >= 3, "the loop killed workers mid-burst ({kills})");
    assert!(
        per_slot.iter().all(|n| *n > 0.0),
        "every replica took a share of the work: {per_slot:?}"
    );
    reliability_line(
        &format!("worker SIGKILL every 1-3 s and restarted, {replicas} replica(s) on one consumer"),
        &format!("20,000 events at 1,000/s, {kills} kills"),
        &audit,
        &format!(
            "replacement ready in ≤ {}; a killed worker's unacked messages redelivered after the 2 s ack wait",
            secs(slowest_restart)
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_every_few_seconds_one_replica_loses_and_duplicates_nothing() {
    kill_loop(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_every_few_seconds_three_replicas_spread_the_work_and_lose_nothing() {
    kill_loop(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restarted_mid_burst_readiness_returns_by_itself_and_nothing_is_lost() {
    let mut nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let flags = ["--ack-wait", "3s"];
    let worker = Worker::start(&nats.url(), &configs.path, &flags).await;
    let js = nats.jetstream().await;
    let mut expected = publish_mixed_range(&js, "before", 0..6000).await;
    eventually_or(
        "a tenth of the burst done",
        Duration::from_secs(60),
        || async {
            let (r, d) = outputs(&js).await;
            (r + d >= expected.total() / 10).then_some(())
        },
        || worker.logs(),
    )
    .await;

    nats.kill();
    eventually_or(
        "not ready without NATS",
        Duration::from_secs(20),
        || async { (worker.get("/health/ready").await.map(|r| r.0) == Some(503)).then_some(()) },
        || worker.logs(),
    )
    .await;
    assert_eq!(worker.get("/health/live").await.map(|r| r.0), Some(200));
    nats.restart();
    let back = Instant::now();
    worker.wait_ready().await;
    let recovery = back.elapsed();

    // The rest of the backlog drains, and new input routes as before.
    let js = nats.jetstream().await;
    let (r, d) = outputs(&js).await;
    assert!(r + d < expected.total(), "the outage came mid-burst");
    let after = publish_mixed_range(&js, "after", 0..2000).await;
    expected.add(after);
    assert!(
        wait_drained(&js, Duration::from_secs(120)).await,
        "logs:\n{}",
        worker.logs()
    );
    wait_outputs(&js, expected.total(), Duration::from_secs(10)).await;
    let audit = assert_accounted_once(&js, &expected).await;
    reliability_line(
        "nats-server killed and restarted (same store) mid-burst",
        "6,000 events queued + 2,000 after",
        &audit,
        &format!(
            "ready (503 → 200) {} after the server was back",
            secs(recovery)
        ),
    );
}

/// A config file for a container no fixture config serves: it proves a change made
/// after an outage is applied.
const LATE_CONFIG: &str = r#"
- _id: late-arrival
  ingestion:
    mode: blob_trigger
    landing_container: late-landing
    path_pattern:
      pattern: "**"
  route:
    subject: blob.routed.late
  version: 1
"#;

/// The Event Grid fixture for the container of [`LATE_CONFIG`], with event id `id`.
fn late_event(id: &str) -> Vec<u8> {
    mixed_template()
        .replace("831e1650-001e-001b-66ab-eeb76e069631", id)
        .replace("containers/qc-analyzer-landing", "containers/late-landing")
        .into_bytes()
}

/// Waits until `/health/cache` reports a source error containing `what`; returns it.
async fn source_error(worker: &Worker, what: &str) -> String {
    eventually_or(
        &format!("/health/cache shows the source error ({what})"),
        Duration::from_secs(20),
        || async {
            let health = worker.health_cache().await;
            health["source_error"]
                .as_str()
                .filter(|e| e.contains(what))
                .map(str::to_string)
        },
        || worker.logs(),
    )
    .await
}

/// Waits until `n` more events were routed (from the cache) than `since`.
async fn routing_continues(js: &async_nats::jetstream::Context, since: u64, n: u64) -> u64 {
    // The last count seen, for the message if routing does not continue.
    let last = std::sync::atomic::AtomicU64::new(0);
    let seen = || last.load(std::sync::atomic::Ordering::Relaxed);
    eventually_or(
        "routing continues from the cache",
        Duration::from_secs(30),
        || async {
            let r = count(js, "BLOB_ROUTED").await;
            last.store(r, std::sync::atomic::Ordering::Relaxed);
            (r >= since + n).then_some(r)
        },
        || format!("wanted {} routed, last saw {}", since + n, seen()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_broken_mid_burst_routing_continues_from_the_cache_and_recovers() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let good = String::from_utf8(fixture("configs.yaml")).unwrap();
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let js = nats.jetstream().await;
    let publisher = publish_paced(js.clone(), "file", 5000, 50);
    let mut routed = routing_continues(&js, 0, 1).await;

    // Garbage: the last good configs stay, the problem is shown.
    configs.replace("- {_id: [this is not, a config\n");
    let error = source_error(&worker, "YAML").await;
    assert!(error.contains("configs.yaml"), "{error}");
    assert_eq!(worker.health_cache().await["cache_size"], 5);
    routed = routing_continues(&js, routed, 50).await;

    // Unreadable: only meaningful when permissions are enforced (not as root).
    std::fs::write(&configs.path, &good).unwrap();
    set_mode(&configs.path, 0o000);
    if std::fs::read(&configs.path).is_err() {
        source_error(&worker, "ermission denied").await;
        routed = routing_continues(&js, routed, 50).await;
    } else {
        eprintln!("running as root: chmod 000 does not deny reads; step skipped");
    }
    set_mode(&configs.path, 0o644);

    // Replaced by a directory, then gone altogether.
    std::fs::remove_file(&configs.path).unwrap();
    std::fs::create_dir(&configs.path).unwrap();
    source_error(&worker, "directory").await;
    routed = routing_continues(&js, routed, 50).await;
    std::fs::remove_dir(&configs.path).unwrap();
    source_error(&worker, "No such file").await;
    routing_continues(&js, routed, 50).await;
    assert_eq!(worker.get("/health/ready").await.map(|r| r.0), Some(200));

    // Fixed, with one more config: applied without a restart, the error cleared.
    configs.replace(&format!("{good}{LATE_CONFIG}"));
    let fixed = Instant::now();
    eventually_or(
        "the fixed file applied",
        Duration::from_secs(20),
        || async {
            let h = worker.health_cache().await;
            (h["cache_size"] == 6 && h["source_error"].is_null()).then_some(())
        },
        || worker.logs(),
    )
    .await;
    let recovery = fixed.elapsed();
    let mut expected = publisher.await.unwrap();
    publish(&js, "blob.events.late", late_event("late-1"), &[]).await;
    expected.routed += 1;
    expected.keys.insert("late-1".into());

    assert!(
        wait_drained(&js, Duration::from_secs(60)).await,
        "logs:\n{}",
        worker.logs()
    );
    wait_outputs(&js, expected.total(), Duration::from_secs(10)).await;
    let audit = assert_accounted_once(&js, &expected).await;
    let late = read_all(&js, "BLOB_ROUTED")
        .await
        .into_iter()
        .find(|o| o.header("Blob-Router-Event-Id") == Some("late-1"))
        .unwrap();
    assert_eq!(late.subject, "blob.routed.late");
    reliability_line(
        "config file garbage, a directory, deleted (chmod 000 when not root) mid-burst",
        "5,000 events at 500/s",
        &audit,
        &format!("fixed file applied in {}", secs(recovery)),
    );
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

// MongoDB outages, on the scripted wire server.

const NS_STR: &str = "blob_router.source_configs";

/// The fixture configs as BSON documents.
fn fixture_docs() -> Vec<Document> {
    let text = String::from_utf8(fixture("configs.yaml")).unwrap();
    let docs: Vec<Value> = serde_yaml_ng::from_str(&text).unwrap();
    docs.iter()
        .map(|d| blob_router::store::mongo::from_json(d).unwrap())
        .collect()
}

/// Plays a healthy MongoDB holding the fixture configs: opens change streams (whose
/// `getMore` then waits, as a quiet stream's does), answers the snapshot and forced
/// reads. Runs until aborted.
fn serve_mongo(db: Arc<MockDb>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let docs = fixture_docs();
        let mut cursor = 100;
        let mut parked = Vec::new();
        loop {
            let Some(req) = db.next_any(Duration::from_secs(3600)).await else {
                continue;
            };
            match req.name() {
                "aggregate" => {
                    cursor += 1;
                    let token = format!("T{cursor}");
                    db.reply(&req, first_batch(NS_STR, cursor, vec![], Some(&token)))
                        .await;
                }
                "find" => {
                    let filter = req.command.get_document("filter").ok();
                    let container = filter
                        .and_then(|f| f.get_str("ingestion.landing_container").ok())
                        .map(str::to_string);
                    let answer: Vec<Document> = docs
                        .iter()
                        .filter(|d| {
                            container.as_deref().is_none_or(|c| {
                                d.get_document("ingestion")
                                    .and_then(|i| i.get_str("landing_container"))
                                    == Ok(c)
                            })
                        })
                        .cloned()
                        .collect();
                    db.reply(&req, first_batch(NS_STR, 0, answer, None)).await;
                }
                // A change stream with nothing new: the request waits for a change.
                "getMore" => parked.push(req),
                _ => db.reply(&req, doc! {"ok": 1}).await,
            }
        }
    })
}

/// A worker reading its configs from `db`, ready.
async fn mongo_worker(nats: &NatsServer, db: &MockDb) -> Worker {
    let uri = db.uri();
    let worker =
        Worker::spawn_with(&nats.url(), &["--mongodb-uri", &uri, "--ack-wait", "3s"]).await;
    worker.wait_ready().await;
    worker
}

/// Waits until `/health/cache` says the change stream is (in)active; returns the
/// health then.
async fn feed_active(worker: &Worker, active: bool, limit: Duration) -> Value {
    eventually_or(
        &format!("change_stream_active: {active} in /health/cache"),
        limit,
        || async {
            let h = worker.health_cache().await;
            (h["change_stream_active"] == active).then_some(h)
        },
        || worker.logs(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_refusing_then_hanging_mid_burst_routing_continues_from_the_cache() {
    let nats = NatsServer::start();
    let db = Arc::new(MockDb::start(Mode::ReplicaSet).await);
    let port = db.port();
    let server = serve_mongo(db.clone());
    let worker = mongo_worker(&nats, &db).await;
    assert_eq!(worker.health_cache().await["cache_size"], 5);
    let js = nats.jetstream().await;
    let publisher = publish_paced(js.clone(), "mongo", 6000, 50);
    let routed = routing_continues(&js, 0, 1).await;

    // Refusing: the server is gone, its port closed.
    server.abort();
    let _ = server.await; // the task's handle on the server is gone
    Arc::into_inner(db)
        .expect("only the test holds it")
        .stop()
        .await;
    let health = feed_active(&worker, false, Duration::from_secs(30)).await;
    assert!(health["source_error"].is_string(), "{health}");
    let routed = routing_continues(&js, routed, 100).await;
    assert_eq!(worker.get("/health/ready").await.map(|r| r.0), Some(200));

    let db = Arc::new(MockDb::start_on(Mode::ReplicaSet, Some(port)).await);
    let back = Instant::now();
    let server = serve_mongo(db.clone());
    feed_active(&worker, true, Duration::from_secs(60)).await;
    let refused_recovery = back.elapsed();

    // Hanging: connections accepted, nothing answered.
    let routed = routing_continues(&js, routed, 50).await;
    db.freeze();
    let frozen = Instant::now();
    let routed = routing_continues(&js, routed, 100).await;
    let hung = feed_active(&worker, false, Duration::from_secs(60)).await;
    let hang_detected = frozen.elapsed();
    assert!(hung["source_error"].is_string(), "{hung}");
    routing_continues(&js, routed, 100).await;
    db.resume();
    let thawed = Instant::now();
    feed_active(&worker, true, Duration::from_secs(60)).await;
    let hang_recovery = thawed.elapsed();

    let expected = publisher.await.unwrap();
    assert!(
        wait_drained(&js, Duration::from_secs(120)).await,
        "logs:\n{}",
        worker.logs()
    );
    wait_outputs(&js, expected.total(), Duration::from_secs(10)).await;
    let audit = assert_accounted_once(&js, &expected).await;
    server.abort();
    reliability_line(
        "MongoDB refusing connections, then hanging (accepts, never answers) mid-burst",
        "6,000 events at 500/s",
        &audit,
        &format!(
            "change stream active again {} after it came back; a hang is seen in {} (driver timeouts), active {} after it ends",
            secs(refused_recovery),
            secs(hang_detected),
            secs(hang_recovery)
        ),
    );
}

/// Deleting the durable consumer (an operator's mistake, or a cleanup script) ends the
/// worker's message stream: it exits non-zero with a clear error rather than sit
/// "ready" doing nothing, and its supervisor's restart recreates the consumer. The new
/// consumer replays the input stream's history: outputs within the duplicate window
/// (2 min) are not stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durable_consumer_deleted_under_a_running_worker_ends_it_and_a_restart_recreates_it() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let mut worker = Worker::start(&nats.url(), &configs.path, &WORKER_FLAGS).await;
    let js = nats.jetstream().await;
    let mut expected = publish_mixed_range(&js, "first", 0..1000).await;
    assert!(wait_drained(&js, Duration::from_secs(60)).await);

    let stream = js.get_stream("BLOB_EVENTS").await.unwrap();
    stream.delete_consumer("blob-router").await.unwrap();
    let deleted = Instant::now();
    let second = publish_mixed_range(&js, "second", 0..1000).await;
    expected.add(second);
    let status = worker
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the worker ends when its consumer is gone");
    assert_ne!(status.code(), Some(0), "{}", worker.logs());
    assert!(
        worker.logs().contains("message stream ended"),
        "{}",
        worker.logs()
    );

    let restarted = Worker::start(&nats.url(), &configs.path, &WORKER_FLAGS).await;
    assert!(
        wait_drained(&js, Duration::from_secs(60)).await,
        "logs:\n{}",
        restarted.logs()
    );
    assert_eq!(
        wait_outputs(&js, expected.total(), Duration::from_secs(10)).await,
        (expected.routed, expected.dead)
    );
    let recovery = deleted.elapsed();
    let audit = assert_accounted_once(&js, &expected).await;
    reliability_line(
        "the durable consumer deleted under a running worker",
        "1,000 events before + 1,000 after",
        &audit,
        &format!(
            "the worker exits with an error; restarted, all routed {} after the delete (history replayed, deduplicated within the 2 min window)",
            secs(recovery)
        ),
    );
}
