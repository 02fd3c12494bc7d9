//! `blob-router replay` against a real nats-server and worker: every filter alone and
//! combined; a dry run changes nothing and predicts what a config change would do;
//! fix-then-replay routes what was dead-lettered; a replay killed with SIGKILL and run
//! again, and two replays racing over one selection, put each dead letter back once; a
//! slow replay whose selection a fast one empties still comes to an end.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Output;
use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use serde_json::{json, Value};

use super::support::*;

/// How long one replay process may take.
const REPLAY_LIMIT: Duration = Duration::from_secs(60);

/// How long the worker may take over a burst of inputs.
const BURST_LIMIT: Duration = Duration::from_secs(90);

/// An Event Grid blob-created event with this id, for blob `path` of `container`.
fn created(container: &str, path: &str, id: &str) -> Vec<u8> {
    let mut ev: Value = serde_json::from_slice(&fixture("events/eventgrid.json")).unwrap();
    ev["id"] = json!(id);
    ev["subject"] = json!(format!(
        "/blobServices/default/containers/{container}/blobs/{path}"
    ));
    ev["data"]["url"] = json!(format!(
        "https://qcanalyzerprod.blob.core.windows.net/{container}/{path}"
    ));
    serde_json::to_vec(&ev).unwrap()
}

/// The fixture configs plus one routing everything of `container` to `blob.routed.<id>`.
fn fixture_with(id: &str, container: &str) -> String {
    let mut yaml = String::from_utf8(fixture("configs.yaml")).unwrap();
    yaml.push_str(&format!(
        "\n- _id: {id}\n  ingestion: {{mode: blob_trigger, landing_container: {container}}}\n  version: 1\n"
    ));
    yaml
}

/// Configs the fixture file holds (as `/health/cache` counts them).
const FIXTURE_CONFIGS: u64 = 5;

/// Waits until the worker's cache holds `n` configs (an edit of its file was applied).
async fn wait_configs(worker: &Worker, n: u64) {
    eventually_or(
        &format!("the worker holds {n} configs"),
        Duration::from_secs(20),
        || async { (worker.health_cache().await["cache_size"] == n).then_some(()) },
        || format!("logs:\n{}", worker.logs()),
    )
    .await
}

/// Publishes every `(subject, body)`; PubAcks settled in chunks (the client caps those
/// in flight).
async fn publish_all(js: &jetstream::Context, items: Vec<(String, Vec<u8>)>) {
    let mut acks = Vec::new();
    for (subject, body) in items {
        acks.push(js.publish(subject, body.into()).await.unwrap());
        if acks.len() == 500 {
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
}

/// `n` events for `container`, ids `<prefix>-<i>`: returns the ids.
async fn publish_for(
    js: &jetstream::Context,
    container: &str,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let items = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                format!("blob.events.{prefix}"),
                created(container, &format!("in/{i}.json"), id),
            )
        })
        .collect();
    publish_all(js, items).await;
    ids
}

/// Waits until the worker has stored exactly `(routed, dead)` outputs and acked every
/// input.
async fn wait_settled(js: &jetstream::Context, worker: &Worker, routed: u64, dead: u64) {
    let got = wait_outputs(js, routed + dead, BURST_LIMIT).await;
    assert_eq!(got, (routed, dead), "logs:\n{}", worker.logs());
    assert!(
        wait_drained(js, Duration::from_secs(30)).await,
        "inputs acked; logs:\n{}",
        worker.logs()
    );
    assert_eq!(outputs(js).await, (routed, dead), "nothing more came out");
}

/// A replay run's exit code and stderr, and its JSON summary.
struct Run {
    code: Option<i32>,
    stderr: String,
    summary: Value,
}

impl Run {
    fn n(&self, field: &str) -> u64 {
        self.summary[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} in {}", self.summary))
    }
}

fn run_of(flags: &[&str], out: Output) -> Run {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let summary = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "replay {flags:?} printed no JSON summary ({e}), exit {:?}\nstdout:\n{}\nstderr:\n{stderr}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout)
        )
    });
    Run {
        code: out.status.code(),
        stderr,
        summary,
    }
}

fn spawn_replay(nats: &NatsServer, flags: &[&str]) -> tokio::process::Child {
    operator_command("replay", &nats.url())
        .args(flags)
        .args(["--output", "json"])
        .spawn()
        .unwrap()
}

/// `replay <flags> --output json`, to its end.
async fn replay(nats: &NatsServer, flags: &[&str]) -> Run {
    let child = spawn_replay(nats, flags);
    let out = finish(&format!("replay {flags:?}"), child, REPLAY_LIMIT).await;
    run_of(flags, out)
}

/// `replay --dry-run <flags>`: succeeds and says it is a dry run.
async fn dry_run(nats: &NatsServer, flags: &[&str]) -> Run {
    let mut all = vec!["--dry-run"];
    all.extend_from_slice(flags);
    let run = replay(nats, &all).await;
    assert_eq!(
        run.code,
        Some(0),
        "{all:?}: {}\n{}",
        run.summary,
        run.stderr
    );
    assert_eq!(run.summary["dry_run"], true, "{all:?}");
    assert_eq!(run.n("replayed"), 0, "{all:?}: {}", run.summary);
    assert_eq!(run.n("failed"), 0, "{all:?}: {}", run.summary);
    run
}

/// A JSON object of counts.
fn counts(pairs: &[(&str, u64)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, n)| (k.to_string(), json!(n)))
            .collect(),
    )
}

/// Every message's `Blob-Router-Event-Id`, counted.
fn event_id_counts(msgs: &[Out]) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for m in msgs {
        let id = m
            .header("Blob-Router-Event-Id")
            .unwrap_or_else(|| panic!("no event id on {m:?}"));
        *ids.entry(id.to_string()).or_default() += 1;
    }
    ids
}

/// What identifies the dead letters now stored: their `Nats-Msg-Id`s.
async fn dlq_msg_ids(js: &jetstream::Context) -> HashSet<String> {
    read_all(js, "BLOB_DLQ")
        .await
        .iter()
        .map(|m| m.header("Nats-Msg-Id").unwrap().to_string())
        .collect()
}

/// The inputs replays stored (a `Nats-Msg-Id` starting `replay:`; the test's own inputs
/// carry none), counted by the id of the event each one holds.
async fn replayed_inputs(js: &jetstream::Context) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for m in read_all(js, "BLOB_EVENTS").await {
        if m.header("Nats-Msg-Id")
            .is_some_and(|id| id.starts_with("replay:"))
        {
            let id = m.json()["id"].as_str().unwrap().to_string();
            *ids.entry(id).or_default() += 1;
        }
    }
    ids
}

/// After replays of the dead letters of `ids` under a config routing them to `source`:
/// each event routed exactly once, by `source`; each dead letter republished exactly
/// once (the input stream holds one replayed copy of each); none of them left in the
/// dead-letter stream.
async fn assert_replayed_once(
    js: &jetstream::Context,
    worker: &Worker,
    ids: &[String],
    source: &str,
) {
    let n = ids.len() as u64;
    eventually_or(
        &format!("{n} replayed events routed"),
        BURST_LIMIT,
        || async { (count(js, "BLOB_ROUTED").await >= n).then_some(()) },
        || format!("logs:\n{}", worker.logs()),
    )
    .await;
    assert!(
        wait_drained(js, Duration::from_secs(30)).await,
        "replayed inputs acked; logs:\n{}",
        worker.logs()
    );
    let routed = read_all(js, "BLOB_ROUTED").await;
    assert_eq!(routed.len() as u64, n, "each replayed event routed once");
    for m in &routed {
        assert_eq!(m.subject, format!("blob.routed.{source}"));
        assert_eq!(m.json()["source_id"], source);
    }
    let seen = event_id_counts(&routed);
    let expected: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        seen.keys().collect::<HashSet<_>>(),
        expected,
        "nothing lost"
    );
    assert!(seen.values().all(|&k| k == 1), "nothing doubled");

    let dead = read_all(js, "BLOB_DLQ").await;
    let left: Vec<&str> = dead
        .iter()
        .filter_map(|m| m.header("Blob-Router-Event-Id"))
        .filter(|id| expected.contains(&id.to_string()))
        .collect();
    assert!(left.is_empty(), "dead letters left behind: {left:?}");

    let inputs = replayed_inputs(js).await;
    assert_eq!(
        inputs.keys().collect::<HashSet<_>>(),
        expected,
        "every dead letter republished"
    );
    let twice: Vec<_> = inputs.iter().filter(|(_, &k)| k > 1).collect();
    assert!(twice.is_empty(), "republished more than once: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_selects_what_it_names_and_a_dry_run_changes_nothing() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let js = nats.jetstream().await;

    // First batch: two malformed, one unsupported, four nobody routes (three for orphan-a,
    // two of them under in/; one for orphan-b, under in/).
    let first: Vec<Vec<u8>> = vec![
        fixture("events/not-json.txt"),
        br#"{"hello":"world"}"#.to_vec(),
        fixture("events/eventgrid-deleted.json"),
        created("orphan-a", "in/1.json", "nm-1"),
        created("orphan-a", "in/2.json", "nm-2"),
        created("orphan-a", "out/3.json", "nm-3"),
        created("orphan-b", "in/4.json", "nm-4"),
    ];
    let items = first
        .into_iter()
        .enumerate()
        .map(|(i, body)| (format!("blob.events.first.{i}"), body))
        .collect();
    publish_all(&js, items).await;
    wait_settled(&js, &worker, 0, 7).await;
    let received =
        |m: &Out| humantime::parse_rfc3339(m.header("Blob-Router-Received-At").unwrap()).unwrap();
    let first_last = read_all(&js, "BLOB_DLQ")
        .await
        .iter()
        .map(received)
        .max()
        .unwrap();
    // Received-at has millisecond precision: the second batch must come a millisecond
    // later at least for a time between the two to exist.
    eventually(
        "the clock passes the first batch",
        Duration::from_secs(5),
        || async { (SystemTime::now() > first_last + Duration::from_millis(2)).then_some(()) },
    )
    .await;

    // Second batch: one malformed, one more for orphan-b under in/.
    let items = vec![
        ("blob.events.second.0".to_string(), b"[1, 2".to_vec()),
        (
            "blob.events.second.1".to_string(),
            created("orphan-b", "in/5.json", "nm-5"),
        ),
    ];
    publish_all(&js, items).await;
    wait_settled(&js, &worker, 0, 9).await;
    let dead = read_all(&js, "BLOB_DLQ").await;
    let second: Vec<&Out> = dead
        .iter()
        .filter(|m| {
            m.header("Blob-Router-Original-Subject")
                .unwrap()
                .contains("second")
        })
        .collect();
    let boundary = second
        .iter()
        .min_by_key(|m| received(m))
        .unwrap()
        .header("Blob-Router-Received-At")
        .unwrap()
        .to_string();
    assert!(humantime::parse_rfc3339(&boundary).unwrap() > first_last);
    let before = dlq_msg_ids(&js).await;
    let inputs_before = count(&js, "BLOB_EVENTS").await;

    // Nothing asked: everything, counted by reason and container; no configs, no "would".
    let all = dry_run(&nats, &[]).await;
    assert_eq!(all.n("scanned"), 9);
    assert_eq!(all.n("selected"), 9);
    assert_eq!(all.n("unreadable"), 0);
    assert_eq!(
        all.summary["by_reason"],
        counts(&[
            ("malformed_event", 3),
            ("no_matching_config", 5),
            ("unsupported_event_type", 1)
        ])
    );
    assert_eq!(
        all.summary["by_container"],
        counts(&[("(unknown)", 4), ("orphan-a", 3), ("orphan-b", 2)])
    );
    assert!(all.summary["would"].is_null(), "{}", all.summary);
    assert_eq!(
        all.summary["samples"].as_array().unwrap().len(),
        5,
        "--samples 5 by default"
    );

    let cases: Vec<(Vec<&str>, u64)> = vec![
        (vec!["--reason", "no_matching_config"], 5),
        (vec!["--reason", "malformed_event"], 3),
        (vec!["--reason", "unsupported_event_type"], 1),
        (vec!["--reason", "no_stream_for_subject"], 0),
        (
            vec![
                "--reason",
                "malformed_event",
                "--reason",
                "unsupported_event_type",
            ],
            4,
        ),
        (
            vec!["--reason", "malformed_event,unsupported_event_type"],
            4,
        ),
        (vec!["--container", "orphan-a"], 3),
        (vec!["--container", "orphan-b"], 2),
        (vec!["--container", "qc-analyzer-landing"], 0),
        (vec!["--path-prefix", "in/"], 4),
        (vec!["--path-prefix", "out/"], 1),
        (vec!["--container", "orphan-a", "--path-prefix", "in/"], 2),
        (vec!["--event-id", "nm-3"], 1),
        (
            vec!["--event-id", "7d9e2b41-601e-0070-5cab-eeb70b06e2a8"],
            1,
        ),
        (vec!["--event-id", "nobody"], 0),
        (vec!["--limit", "2"], 2),
        (vec!["--limit", "100"], 9),
        (vec!["--limit", "2", "--reason", "no_matching_config"], 2),
        (vec!["--since", "1h"], 9),
        (vec!["--until", "1h"], 0),
        (vec!["--since", "2999-01-01T00:00:00Z"], 0),
        (vec!["--since", &boundary], 2),
        (vec!["--until", &boundary], 7),
        (vec!["--since", "1h", "--until", &boundary], 7),
        (
            vec!["--since", &boundary, "--reason", "no_matching_config"],
            1,
        ),
        (vec!["--until", &boundary, "--container", "orphan-b"], 1),
        (
            vec![
                "--reason",
                "no_matching_config",
                "--container",
                "orphan-b",
                "--path-prefix",
                "in/",
                "--since",
                "1h",
            ],
            2,
        ),
    ];
    for (flags, expected) in &cases {
        let run = dry_run(&nats, flags).await;
        assert_eq!(
            run.n("selected"),
            *expected,
            "{flags:?} selects {expected}: {}",
            run.summary
        );
    }

    // One reason is filtered by the server; --since starts the read at that time.
    let one = dry_run(&nats, &["--reason", "no_matching_config"]).await;
    assert_eq!(one.n("scanned"), 5, "{}", one.summary);
    let late = dry_run(&nats, &["--since", &boundary]).await;
    assert_eq!(late.n("scanned"), 2, "{}", late.summary);
    assert_eq!(
        late.summary["by_reason"],
        counts(&[("malformed_event", 1), ("no_matching_config", 1)])
    );

    // A sample shows the dead letter in full.
    let three = dry_run(&nats, &["--event-id", "nm-3"]).await;
    let s = &three.summary["samples"][0];
    assert_eq!(s["reason"], "no_matching_config", "{s}");
    assert_eq!(s["event_id"], "nm-3");
    assert_eq!(s["container"], "orphan-a");
    assert_eq!(s["path"], "out/3.json");
    assert_eq!(s["subject"], "blob.events.first.5");
    assert!(s["detail"].as_str().unwrap().contains("orphan-a"), "{s}");
    let gone = dry_run(
        &nats,
        &["--event-id", "7d9e2b41-601e-0070-5cab-eeb70b06e2a8"],
    )
    .await;
    assert_eq!(
        gone.summary["by_reason"],
        counts(&[("unsupported_event_type", 1)])
    );
    assert_eq!(gone.summary["by_container"], counts(&[("(unknown)", 1)]));

    // All those dry runs changed nothing: the same dead letters, nothing republished.
    assert_eq!(dlq_msg_ids(&js).await, before);
    assert_eq!(count(&js, "BLOB_DLQ").await, 9);
    assert_eq!(count(&js, "BLOB_EVENTS").await, inputs_before);
    assert_eq!(count(&js, "BLOB_ROUTED").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_predicts_what_an_added_config_would_do_and_changes_nothing() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let js = nats.jetstream().await;

    let mut ids = publish_for(&js, "late-landing", "late", 3).await;
    publish_all(&js, vec![("blob.events.bad".into(), b"not json".to_vec())]).await;
    wait_settled(&js, &worker, 0, 4).await;
    ids.sort();
    let before = dlq_msg_ids(&js).await;
    let inputs_before = count(&js, "BLOB_EVENTS").await;
    let path = |c: &ConfigFile| c.path.to_str().unwrap().to_string();

    // Against the worker's own configs: dead-lettered again, each for its reason.
    let now = dry_run(&nats, &["--configs", &path(&configs)]).await;
    assert_eq!(now.n("selected"), 4);
    assert_eq!(
        now.summary["would"],
        counts(&[
            ("would dead-letter again: malformed_event", 1),
            ("would dead-letter again: no_matching_config", 3)
        ]),
        "{}",
        now.summary
    );
    let samples = now.summary["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 4);
    for s in samples {
        let expected = if s["reason"] == "no_matching_config" {
            "would dead-letter again: no_matching_config"
        } else {
            "would dead-letter again: malformed_event"
        };
        assert_eq!(s["would"], json!([expected]), "{s}");
    }

    // Against configs that name the container: routed by the new config.
    let fixed = ConfigFile::new(&fixture_with("late-source", "late-landing"));
    let then = dry_run(
        &nats,
        &["--configs", &path(&fixed), "--reason", "no_matching_config"],
    )
    .await;
    assert_eq!(
        then.summary["would"],
        counts(&[("would route to late-source", 3)]),
        "{}",
        then.summary
    );
    let mut sampled: Vec<String> = then.summary["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["would"], json!(["would route to late-source"]), "{s}");
            s["event_id"].as_str().unwrap().to_string()
        })
        .collect();
    sampled.sort();
    assert_eq!(sampled, ids);
    let whole = dry_run(&nats, &["--configs", &path(&fixed)]).await;
    assert_eq!(
        whole.summary["would"],
        counts(&[
            ("would dead-letter again: malformed_event", 1),
            ("would route to late-source", 3)
        ])
    );

    // The worker's file, once edited, says the same.
    configs.replace(&fixture_with("late-source", "late-landing"));
    let edited = dry_run(
        &nats,
        &["--configs", &path(&configs), "--container", "late-landing"],
    )
    .await;
    assert_eq!(
        edited.summary["would"],
        counts(&[("would route to late-source", 3)])
    );

    // Nothing changed: no dead letter removed, nothing republished or routed.
    assert_eq!(dlq_msg_ids(&js).await, before);
    assert_eq!(count(&js, "BLOB_EVENTS").await, inputs_before);
    assert_eq!(count(&js, "BLOB_ROUTED").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixing_the_config_then_replaying_routes_what_was_dead_lettered() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let js = nats.jetstream().await;

    let ids = publish_for(&js, "fixme-landing", "fixme", 5).await;
    let others = publish_for(&js, "still-orphan", "other", 2).await;
    wait_settled(&js, &worker, 0, 7).await;
    let selection = ["--container", "fixme-landing"];

    configs.replace(&fixture_with("fixme-source", "fixme-landing"));
    wait_configs(&worker, FIXTURE_CONFIGS + 1).await;
    let run = replay(&nats, &selection).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.summary, run.stderr);
    assert_eq!(run.summary["dry_run"], false);
    assert_eq!(run.n("selected"), 5, "{}", run.summary);
    assert_eq!(run.n("replayed"), 5, "{}", run.summary);
    assert_eq!(run.n("skipped"), 0);
    assert_eq!(run.n("failed"), 0);
    assert_eq!(run.summary["by_container"], counts(&[("fixme-landing", 5)]));

    assert_replayed_once(&js, &worker, &ids, "fixme-source").await;
    // The other container's dead letters stay, and nothing was dead-lettered again.
    let dead = read_all(&js, "BLOB_DLQ").await;
    let mut left: Vec<String> = event_id_counts(&dead).into_keys().collect();
    left.sort();
    assert_eq!(left, others);

    // Done is done: a rerun finds nothing to replay.
    let again = replay(&nats, &selection).await;
    assert_eq!(again.code, Some(0), "{}", again.summary);
    assert_eq!(again.n("selected"), 0, "{}", again.summary);
    assert_eq!(again.n("replayed"), 0);
    assert_eq!(count(&js, "BLOB_ROUTED").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_midway_and_run_again_replays_each_dead_letter_once() {
    const N: usize = 2000;
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let js = nats.jetstream().await;

    let ids = publish_for(&js, "crash-landing", "crash", N).await;
    wait_settled(&js, &worker, 0, N as u64).await;
    configs.replace(&fixture_with("crash-source", "crash-landing"));
    wait_configs(&worker, FIXTURE_CONFIGS + 1).await;

    // One at a time, so that it is still at work when it is killed: after a tenth, with
    // most of the run still ahead (a kill that came too late fails the test).
    let mut child = spawn_replay(&nats, &["--concurrency", "1"]);
    eventually(
        "the replay has deleted a tenth of the dead letters",
        REPLAY_LIMIT,
        || {
            let ended = child.try_wait().unwrap();
            let js = &js;
            async move {
                if let Some(status) = ended {
                    panic!(
                        "replay ended ({status}) before it could be killed: use more dead letters"
                    );
                }
                (count(js, "BLOB_DLQ").await <= (N - N / 10) as u64).then_some(())
            }
        },
    )
    .await;
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed, not finished: {status}"
    );
    let left = count(&js, "BLOB_DLQ").await;
    assert!(0 < left && left < N as u64, "{left} of {N} left");
    // One at a time: every dead letter deleted was republished first, and at most one
    // more was republished (or on its way) without being deleted when the kill landed.
    let republished: usize = replayed_inputs(&js).await.values().sum();
    let republished = republished as u64;
    let deleted = N as u64 - left;
    assert!(
        republished == deleted || republished == deleted + 1,
        "{deleted} deleted, {republished} republished"
    );

    let run = replay(&nats, &[]).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.summary, run.stderr);
    assert_eq!(run.n("selected"), left, "{}", run.summary);
    assert_eq!(run.n("replayed"), left, "{}", run.summary);
    assert_eq!(run.n("failed"), 0);
    assert_replayed_once(&js, &worker, &ids, "crash-source").await;
    assert_eq!(count(&js, "BLOB_DLQ").await, 0);
}

/// How long a replay racing another may take; one that has not ended by then never will.
const RACE_LIMIT: Duration = Duration::from_secs(30);

/// Waits for a racing replay at most `limit`, killing it past that: whether it ended,
/// and its output (a killed one's stderr shows how far it got).
async fn wait_or_kill(mut child: tokio::process::Child, limit: Duration) -> (bool, Output) {
    use tokio::io::AsyncReadExt;
    let ended = tokio::time::timeout(limit, child.wait()).await.is_ok();
    if !ended {
        child.start_kill().unwrap();
    }
    let status = child.wait().await.unwrap();
    // The summary and progress lines are small: the pipes held them while it ran.
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut pipe = child.stdout.take().unwrap();
    pipe.read_to_end(&mut stdout).await.unwrap();
    let mut pipe = child.stderr.take().unwrap();
    pipe.read_to_end(&mut stderr).await.unwrap();
    (
        ended,
        Output {
            status,
            stdout,
            stderr,
        },
    )
}

/// `n` dead letters of one container; the config fixed; two replays with these flags
/// started at once over them. Afterwards each event is routed once and each dead letter
/// was republished once and is gone; both replays ended, without failures; one of them
/// replayed (deleted) each dead letter, and what the other found gone it counts as
/// skipped, replayed by another run.
async fn race(n: usize, flags: [&[&str]; 2]) {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let js = nats.jetstream().await;

    let ids = publish_for(&js, "race-landing", "race", n).await;
    wait_settled(&js, &worker, 0, n as u64).await;
    configs.replace(&fixture_with("race-source", "race-landing"));
    wait_configs(&worker, FIXTURE_CONFIGS + 1).await;

    let (a, b) = (spawn_replay(&nats, flags[0]), spawn_replay(&nats, flags[1]));
    let (a, b) = tokio::join!(wait_or_kill(a, RACE_LIMIT), wait_or_kill(b, RACE_LIMIT));

    // What the streams hold first: each event routed once, each dead letter republished
    // once and gone.
    assert_replayed_once(&js, &worker, &ids, "race-source").await;
    assert_eq!(count(&js, "BLOB_DLQ").await, 0);

    // Then the runs: both ended, and what they say adds up.
    for (f, (ended, out)) in flags.iter().zip([&a, &b]) {
        assert!(
            ended,
            "replay {f:?} had not ended after {RACE_LIMIT:?} though nothing was left to replay \
             ({n} of {n} dead letters gone); killed. Its stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let runs = [run_of(flags[0], a.1), run_of(flags[1], b.1)];
    let mut skipped_why = BTreeMap::new();
    for run in &runs {
        assert_eq!(
            run.n("failed"),
            0,
            "a dead letter another run deleted first is a skip, not a failure: {}",
            run.summary
        );
        assert_eq!(run.code, Some(0), "{}\n{}", run.summary, run.stderr);
        assert!(run.n("selected") <= n as u64, "{}", run.summary);
        assert_eq!(
            run.n("replayed") + run.n("skipped"),
            run.n("selected"),
            "{}",
            run.summary
        );
        for (why, k) in run.summary["skipped_why"].as_object().unwrap() {
            *skipped_why.entry(why.clone()).or_insert(0) += k.as_u64().unwrap();
        }
    }
    assert_eq!(
        runs[0].n("replayed") + runs[1].n("replayed"),
        n as u64,
        "each dead letter deleted by one run: {} / {}",
        runs[0].summary,
        runs[1].summary
    );
    assert!(
        skipped_why
            .keys()
            .all(|why| why == "already replayed by another run"),
        "{skipped_why:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replays_racing_over_one_selection_replay_each_dead_letter_once() {
    let flags: &[&str] = &["--reason", "no_matching_config"];
    race(1000, [flags, flags]).await;
}

/// The slow one is still working through what it read when the fast one has deleted
/// everything, the rest of its selection included: it must still come to an end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_replay_racing_a_fast_one_still_ends_and_nothing_is_replayed_twice() {
    race(2000, [&["--concurrency", "64"], &["--concurrency", "1"]]).await;
}
