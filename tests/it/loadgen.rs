//! `blob-router loadgen` against a real nats-server and worker: the counts it reports
//! are what the output streams hold, and it reports (and exits non-zero on) a duplicate
//! the test plants in the routed stream, and events a killed worker never put out.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::HeaderMap;
use serde_json::Value;

use super::support::*;

/// How long one loadgen process may take (publishing, then settling).
const LOADGEN_LIMIT: Duration = Duration::from_secs(90);

/// `loadgen --configs-out` for `containers` containers: the file, in `dir`.
async fn generated_configs(nats: &NatsServer, dir: &Path, containers: u32) -> PathBuf {
    let path = dir.join("loadgen-configs.yaml");
    let child = operator_command("loadgen", &nats.url())
        .args(["--containers", &containers.to_string(), "--configs-out"])
        .arg(&path)
        .spawn()
        .unwrap();
    let out = finish("loadgen --configs-out", child, Duration::from_secs(30)).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(path.exists());
    path
}

/// `loadgen <flags> --report <report>`, started.
fn spawn_loadgen(nats: &NatsServer, report: &Path, flags: &[&str]) -> tokio::process::Child {
    operator_command("loadgen", &nats.url())
        .args(flags)
        .arg("--report")
        .arg(report)
        .spawn()
        .unwrap()
}

/// A loadgen run's exit code, its printed table and the JSON report it wrote.
struct LoadRun {
    code: Option<i32>,
    text: String,
    report: Value,
}

impl LoadRun {
    fn n(&self, field: &str) -> u64 {
        self.report[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} in {}", self.report))
    }

    fn outcome(&self, name: &str) -> u64 {
        self.report["outcomes"][name].as_u64().unwrap_or(0)
    }

    fn ids(&self, field: &str) -> Vec<String> {
        self.report[field]
            .as_array()
            .unwrap_or_else(|| panic!("{field} in {}", self.report))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }
}

async fn finish_loadgen(child: tokio::process::Child, report: &Path) -> LoadRun {
    let out = finish("loadgen", child, LOADGEN_LIMIT).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read_to_string(report)
        .unwrap_or_else(|e| panic!("no report ({e}), exit {:?}:\n{text}", out.status.code()));
    LoadRun {
        code: out.status.code(),
        report: serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}")),
        text,
    }
}

/// `Blob-Router-Event-Id` of each message, counted.
fn event_ids(msgs: &[Out]) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for m in msgs {
        let id = m
            .header("Blob-Router-Event-Id")
            .unwrap_or_else(|| panic!("no event id on {m:?}"));
        *ids.entry(id.to_string()).or_default() += 1;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reported_counts_are_what_the_output_streams_hold() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let configs = generated_configs(&nats, dir.path(), 4).await;
    let worker = Worker::start(&nats.url(), &configs, &[]).await;
    assert_eq!(
        worker.health_cache().await["cache_size"],
        12,
        "three per container"
    );
    let js = nats.jetstream().await;

    let report = dir.path().join("report.json");
    let child = spawn_loadgen(
        &nats,
        &report,
        &[
            "--count",
            "2000",
            "--rate",
            "2000",
            "--containers",
            "4",
            "--unmatched-ratio",
            "0.2",
            "--seed",
            "7",
            "--settle",
            "60s",
        ],
    );
    let run = finish_loadgen(child, &report).await;
    let r = &run.report;
    assert_eq!(
        run.code,
        Some(0),
        "{}\nworker logs:\n{}",
        run.text,
        worker.logs()
    );
    assert_eq!(r["exactly_once"], true, "{r}");
    assert_eq!(r["seed"], 7);
    assert_eq!(r["containers"], 4);
    assert_eq!(run.n("published"), 2000, "{r}");
    assert_eq!(run.n("publish_failures"), 0);
    assert_eq!(run.n("outputs"), run.n("published"), "{r}");
    assert_eq!(run.n("missing"), 0, "{r}");
    assert_eq!(run.n("duplicated"), 0, "{r}");
    assert!(run.ids("missing_ids").is_empty());
    assert!(run.ids("duplicated_ids").is_empty());
    assert_eq!(run.n("foreign_outputs"), 0);
    let formats: u64 = r["formats"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(formats, 2000, "{r}");
    let l = &r["latency_ms"];
    let ms = |k: &str| l[k].as_f64().unwrap();
    assert!(
        0.0 < ms("p50") && ms("p50") <= ms("p99") && ms("p99") <= ms("max"),
        "{l}"
    );

    // The outcomes are exactly what the streams hold: routed, and dead-lettered for
    // the unmatched containers (about a fifth).
    let (routed, dead) = (
        run.outcome("routed"),
        run.outcome("dead_lettered:no_matching_config"),
    );
    assert_eq!(routed + dead, 2000, "no other outcome: {}", r["outcomes"]);
    assert!((300..=500).contains(&dead), "{dead} of 2000 at ratio 0.2");
    assert_eq!(count(&js, "BLOB_ROUTED").await, routed);
    assert_eq!(count(&js, "BLOB_DLQ").await, dead);
    assert_eq!(count(&js, "BLOB_EVENTS").await, run.n("published"));
    let routed_msgs = read_all(&js, "BLOB_ROUTED").await;
    let dead_msgs = read_all(&js, "BLOB_DLQ").await;
    for m in &routed_msgs {
        let source = m.header("Blob-Router-Source-Id").unwrap();
        assert!(source.starts_with("lg-000"), "{source}");
    }
    for m in &dead_msgs {
        assert_eq!(m.subject, "blob.dlq.no_matching_config");
        let detail = m.header("Blob-Router-Detail").unwrap();
        assert!(detail.contains("lg-unmatched-"), "{detail}");
    }
    let mut all = event_ids(&routed_msgs);
    for (id, k) in event_ids(&dead_msgs) {
        *all.entry(id).or_default() += k;
    }
    assert_eq!(all.len(), 2000, "2000 distinct events came out");
    assert!(all.values().all(|&k| k == 1), "each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_planted_in_the_routed_stream_is_reported_and_fails_the_run() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let configs = generated_configs(&nats, dir.path(), 2).await;
    let worker = Worker::start(&nats.url(), &configs, &[]).await;
    let js = nats.jetstream().await;

    let report = dir.path().join("report.json");
    let mut child = spawn_loadgen(
        &nats,
        &report,
        &[
            "--count",
            "300",
            "--rate",
            "100",
            "--containers",
            "2",
            "--seed",
            "11",
            "--settle",
            "30s",
        ],
    );
    // The first routed event of the run, stored again under another Nats-Msg-Id (the
    // routed stream's de-duplication would drop the same one).
    eventually_or(
        "loadgen's first event routed",
        Duration::from_secs(30),
        || async { (count(&js, "BLOB_ROUTED").await >= 1).then_some(()) },
        || format!("logs:\n{}", worker.logs()),
    )
    .await;
    let original = read_all(&js, "BLOB_ROUTED").await.remove(0);
    let id = original.header("Blob-Router-Event-Id").unwrap().to_string();
    let mut h = HeaderMap::new();
    for (k, v) in &original.headers {
        if !k.eq_ignore_ascii_case("Nats-Msg-Id") {
            h.insert(k.as_str(), v.as_str());
        }
    }
    h.insert("Nats-Msg-Id", "planted-duplicate");
    let ack = js
        .publish_with_headers(original.subject.clone(), h, original.payload.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(!ack.duplicate, "the copy is stored");
    assert!(
        child.try_wait().unwrap().is_none(),
        "loadgen still running when the duplicate was planted"
    );

    let run = finish_loadgen(child, &report).await;
    let r = &run.report;
    assert_eq!(
        run.code,
        Some(1),
        "a duplicate fails the run:\n{}",
        run.text
    );
    assert_eq!(r["exactly_once"], false);
    assert_eq!(run.n("duplicated"), 1, "{r}");
    assert_eq!(run.ids("duplicated_ids"), vec![id.clone()]);
    assert_eq!(run.n("missing"), 0, "{r}");
    assert_eq!(run.n("published"), 300);
    assert_eq!(run.n("outputs"), 301, "the copy counted as an output: {r}");
    assert_eq!(run.outcome("routed"), count(&js, "BLOB_ROUTED").await);
    assert!(
        run.text.contains(&format!("duplicated {id}")),
        "{}",
        run.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_killed_worker_never_put_out_are_reported_missing_and_fail_the_run() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let configs = generated_configs(&nats, dir.path(), 2).await;
    let mut worker = Worker::start(&nats.url(), &configs, &[]).await;
    let js = nats.jetstream().await;

    let report = dir.path().join("report.json");
    let mut child = spawn_loadgen(
        &nats,
        &report,
        &[
            "--count",
            "200",
            "--rate",
            "100",
            "--containers",
            "2",
            "--seed",
            "3",
            "--settle",
            "2s",
        ],
    );
    // Some events through, then the worker is gone for the rest of the run.
    eventually_or(
        "loadgen's first events routed",
        Duration::from_secs(30),
        || async { (count(&js, "BLOB_ROUTED").await >= 10).then_some(()) },
        || format!("logs:\n{}", worker.logs()),
    )
    .await;
    worker.sigkill();
    assert!(
        child.try_wait().unwrap().is_none(),
        "loadgen still publishing when the worker was killed"
    );

    let run = finish_loadgen(child, &report).await;
    let r = &run.report;
    assert_eq!(
        run.code,
        Some(1),
        "missing events fail the run:\n{}",
        run.text
    );
    assert_eq!(r["exactly_once"], false);
    assert_eq!(run.n("published"), 200, "{r}");
    assert_eq!(run.n("duplicated"), 0, "{r}");
    let missing = run.n("missing");
    assert!(missing > 0, "{r}");
    assert_eq!(run.n("outputs") + missing, 200, "{r}");
    let (routed, dead) = outputs(&js).await;
    assert_eq!(run.n("outputs"), routed + dead, "{r}");
    assert_eq!(count(&js, "BLOB_EVENTS").await, 200, "all accepted");

    // The listed ones (at most 20) really are nowhere in the outputs.
    let listed = run.ids("missing_ids");
    assert_eq!(listed.len() as u64, missing.min(20), "{r}");
    let mut out = read_all(&js, "BLOB_ROUTED").await;
    out.extend(read_all(&js, "BLOB_DLQ").await);
    let seen: HashSet<String> = event_ids(&out).into_keys().collect();
    for id in &listed {
        assert!(!seen.contains(id), "{id} is listed missing but came out");
        assert!(
            run.text.contains(&format!("missing    {id}")),
            "{}",
            run.text
        );
    }
}
