//! The poison-message backstop and size limits on a real nats-server: a message whose
//! outputs can never be stored (a full stream, a PubAck that never comes) is retried
//! `--max-deliver` times, then dead-lettered `max_deliveries_exceeded` once; if even that
//! fails it is counted and logged once, never looped; oversized inputs are dead-lettered
//! unparsed; a 100,000-record message is routed record by record in bounded memory; an
//! existing durable consumer is brought to the flags. Every input is accounted for
//! exactly once across the routed and dead-letter streams.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;

use crate::support::*;

/// Few deliveries and short delays, so a poison message ends in seconds.
const FAST_RETRIES: [&str; 6] = [
    "--max-deliver",
    "3",
    "--retry-backoff",
    "50ms",
    "--ack-wait",
    "5s",
];

/// A routable Event Grid event, told apart by `tag` (its id and blob path).
fn routable(tag: &str) -> Vec<u8> {
    String::from_utf8(fixture("events/eventgrid.json"))
        .unwrap()
        .replace("831e1650-001e-001b-66ab-eeb76e069631", tag)
        .replace("batch-0042", tag)
        .into_bytes()
}

/// Creates the routed stream with room for `max_msgs` messages, refusing more.
async fn create_small_routed_stream(js: &jetstream::Context, max_msgs: i64) {
    js.create_stream(stream::Config {
        name: "BLOB_ROUTED".into(),
        subjects: vec!["blob.routed.>".into()],
        max_messages: max_msgs,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Input index of every output: from the routed event's id (`in-<i>`), or from the
/// dead letter's original subject (`blob.events.in.<i>`). Panics on anything else.
fn inputs_seen(routed: &[Out], dead: &[Out]) -> Vec<usize> {
    let from_routed = routed.iter().map(|m| {
        let id = m.json()["event"]["id"].as_str().unwrap().to_owned();
        id.strip_prefix("in-").unwrap().parse::<usize>().unwrap()
    });
    let from_dead = dead.iter().map(|m| {
        let subject = m.header("Blob-Router-Original-Subject").unwrap();
        subject
            .strip_prefix("blob.events.in.")
            .unwrap()
            .parse::<usize>()
            .unwrap()
    });
    let mut all: Vec<usize> = from_routed.chain(from_dead).collect();
    all.sort_unstable();
    all
}

fn by_reason(dead: &[Out]) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for m in dead {
        *n.entry(m.header("Blob-Router-Reason").unwrap().to_owned())
            .or_default() += 1;
    }
    n
}

/// Publishes `routable_n` routable inputs then `malformed_n` malformed ones, on
/// `blob.events.in.<i>`.
async fn publish_inputs(js: &jetstream::Context, routable_n: usize, malformed_n: usize) {
    for i in 0..routable_n + malformed_n {
        let body = if i < routable_n {
            routable(&format!("in-{i}"))
        } else {
            format!("not json #{i}").into_bytes()
        };
        publish(js, &format!("blob.events.in.{i}"), body, &[]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_output_stream_dead_letters_the_overflow_once_after_max_deliveries() {
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    create_small_routed_stream(&js, 20).await;
    let configs = ConfigFile::fixture();
    let worker = Worker::start(&nats.url(), &configs.path, &FAST_RETRIES).await;
    let rss_before = worker.memory_kib("VmRSS");

    // 50 routable, room for 20: 30 can never be stored. 10 malformed go straight to the DLQ.
    publish_inputs(&js, 50, 10).await;
    assert!(
        wait_drained(&js, Duration::from_secs(60)).await,
        "logs:\n{}",
        worker.logs()
    );
    let (r, d) = wait_outputs(&js, 60, Duration::from_secs(10)).await;
    assert_eq!((r, d), (20, 40), "logs:\n{}", worker.logs());
    let (routed, dead) = (
        read_all(&js, "BLOB_ROUTED").await,
        read_all(&js, "BLOB_DLQ").await,
    );
    assert_eq!(
        inputs_seen(&routed, &dead),
        (0..60).collect::<Vec<_>>(),
        "every input exactly once"
    );
    let reasons = by_reason(&dead);
    assert_eq!(reasons["max_deliveries_exceeded"], 30);
    assert_eq!(reasons["malformed_event"], 10);
    for m in dead
        .iter()
        .filter(|m| m.header("Blob-Router-Reason") == Some("max_deliveries_exceeded"))
    {
        let detail = m.header("Blob-Router-Detail").unwrap();
        assert!(
            detail.contains("delivery 3") && detail.contains("maximum messages"),
            "{detail}"
        );
        assert!(m.header("Nats-Msg-Id").unwrap().ends_with(":message"));
        assert!(String::from_utf8_lossy(&m.payload).contains("\"in-"));
    }
    // Three deliveries of each poison message, not more: two naks, then the backstop.
    assert_eq!(
        worker.metric("blob_router_messages_received_total").await,
        20.0 + 10.0 + 30.0 * 3.0
    );
    assert_eq!(
        worker.metric("blob_router_messages_retried_total").await,
        60.0
    );
    assert_eq!(
        worker
            .metric("blob_router_dead_letters_total{reason=\"max_deliveries_exceeded\"}")
            .await,
        30.0
    );
    let (rss_after, peak) = (worker.memory_kib("VmRSS"), worker.memory_kib("VmHWM"));
    eprintln!("RSS before {rss_before} KiB, after {rss_after} KiB, peak {peak} KiB");
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_dead_letter_stream_refuses_too_the_message_is_counted_and_logged_once() {
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    create_small_routed_stream(&js, 2).await;
    let configs = ConfigFile::fixture();
    let flags = [
        "--max-deliver",
        "3",
        "--retry-backoff",
        "50ms",
        "--ack-wait",
        "1s",
        "--stored-copy-patience",
        "1s",
    ];
    let worker = Worker::start(&nats.url(), &configs.path, &flags).await;
    js.delete_stream("BLOB_DLQ").await.unwrap();

    publish_inputs(&js, 5, 0).await;
    worker
        .wait_metric(
            "blob_router_messages_abandoned_total",
            3.0,
            Duration::from_secs(30),
        )
        .await;
    // The server delivers an abandoned message no more: the consumer drains (after
    // ack_wait) and nothing comes back.
    assert!(
        wait_drained(&js, Duration::from_secs(30)).await,
        "logs:\n{}",
        worker.logs()
    );
    let received = worker.metric("blob_router_messages_received_total").await;
    assert_eq!(received, 2.0 + 3.0 * 3.0, "logs:\n{}", worker.logs());
    let more = within(Duration::from_secs(2), || async {
        (worker.metric("blob_router_messages_received_total").await > received).then_some(())
    })
    .await;
    assert!(more.is_none(), "an abandoned message came back");
    assert_eq!(
        worker.metric("blob_router_messages_abandoned_total").await,
        3.0
    );
    // Once when the last delivery failed, once when the stored copy (tried after the
    // ack wait) failed too; counted only then.
    assert_eq!(
        worker
            .logs()
            .matches("its last delivery failed and so did its dead letter")
            .count(),
        3,
        "logs:\n{}",
        worker.logs()
    );
    assert_eq!(
        worker.logs().matches("message abandoned").count(),
        3,
        "logged once each"
    );
    assert_eq!(worker.get("/health/ready").await.unwrap().0, 200);
    // Nothing lost: the two routed, the three still in the input stream.
    assert_eq!(count(&js, "BLOB_ROUTED").await, 2);
    assert_eq!(count(&js, "BLOB_EVENTS").await, 5);
}

/// A worker whose config routes to a subject no stream captures but a plain subscriber
/// takes: a publish there is answered by nobody, so its PubAck times out.
struct Silent {
    worker: Worker,
    js: jetstream::Context,
    /// Sees each publish to the silent subject.
    silent: async_nats::Subscriber,
    _client: async_nats::Client,
    _configs: ConfigFile,
}

/// Starts a [`Silent`] worker with `flags`, publishes one routable input and waits until
/// it is dead-lettered and acked.
async fn one_input_unanswered(nats: &NatsServer, flags: &[&str]) -> Silent {
    let yaml = String::from_utf8(fixture("configs.yaml"))
        .unwrap()
        .replace("subject: blob.routed.qc-analyzer", "subject: silent.qc");
    let configs = ConfigFile::new(&yaml);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let silent = client.subscribe("silent.>").await.unwrap();
    let worker = Worker::start(&nats.url(), &configs.path, flags).await;
    let js = nats.jetstream().await;

    publish_inputs(&js, 1, 0).await;
    assert!(
        wait_drained(&js, Duration::from_secs(30)).await,
        "logs:\n{}",
        worker.logs()
    );
    assert_eq!(wait_outputs(&js, 1, Duration::from_secs(10)).await, (0, 1));
    Silent {
        worker,
        js,
        silent,
        _client: client,
        _configs: configs,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pub_ack_that_never_comes_is_retried_then_dead_lettered() {
    let nats = NatsServer::start();
    let mut flags = FAST_RETRIES.to_vec();
    flags.extend(["--publish-timeout", "300ms"]);
    let mut run = one_input_unanswered(&nats, &flags).await;
    let dead = read_all(&run.js, "BLOB_DLQ").await;
    assert_eq!(
        dead[0].header("Blob-Router-Reason"),
        Some("max_deliveries_exceeded")
    );
    let detail = dead[0].header("Blob-Router-Detail").unwrap();
    assert!(
        detail.contains("silent.qc") && detail.contains("time"),
        "{detail}"
    );
    // Each of the three deliveries tried the publish once.
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), run.silent.next())
            .await
            .expect("one publish per delivery")
            .unwrap();
    }
}

/// A last delivery that takes longer than `ack_wait` (here a PubAck that never comes,
/// waited for 3 s against an ack wait of 1 s) tells the server it is being worked on,
/// so the server does not give the message up meanwhile: it is dead-lettered once, by
/// that delivery, and not handled a second time from its stored copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_last_delivery_is_not_given_up_while_it_runs() {
    let nats = NatsServer::start();
    let flags = [
        "--max-deliver",
        "1",
        "--ack-wait",
        "1s",
        "--publish-timeout",
        "3s",
    ];
    let mut run = one_input_unanswered(&nats, &flags).await;
    assert_eq!(
        run.worker
            .metric("blob_router_dead_letters_total{reason=\"max_deliveries_exceeded\"}")
            .await,
        1.0
    );
    // One publish, by the one delivery; no stored copy was handled.
    tokio::time::timeout(Duration::from_secs(5), run.silent.next())
        .await
        .expect("the delivery's publish")
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(2), run.silent.next())
            .await
            .is_err(),
        "published again: logs:\n{}",
        run.worker.logs()
    );
    assert!(
        !run.worker.logs().contains("stored copy"),
        "logs:\n{}",
        run.worker.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_input_is_dead_lettered_unparsed_with_its_bytes() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let worker = Worker::start(&nats.url(), &configs.path, &["--max-event-bytes", "4000"]).await;
    let js = nats.jetstream().await;

    let small = routable("in-0");
    assert!(small.len() <= 4000);
    // Not JSON at all: had it been parsed, it would be `malformed_event`.
    let big = vec![b'x'; 6000];
    publish(&js, "blob.events.in.0", small, &[]).await;
    publish(&js, "blob.events.in.1", big.clone(), &[]).await;
    assert!(
        wait_drained(&js, Duration::from_secs(30)).await,
        "logs:\n{}",
        worker.logs()
    );
    assert_eq!(wait_outputs(&js, 2, Duration::from_secs(10)).await, (1, 1));
    let dead = read_all(&js, "BLOB_DLQ").await;
    assert_eq!(
        dead[0].header("Blob-Router-Reason"),
        Some("oversized_event")
    );
    assert_eq!(dead[0].payload, big, "the original bytes");
    let detail = dead[0].header("Blob-Router-Detail").unwrap();
    assert!(
        detail.contains("6000") && detail.contains("4000"),
        "{detail}"
    );
    assert_eq!(
        worker
            .metric("blob_router_dead_letters_total{reason=\"oversized_event\"}")
            .await,
        1.0
    );
}

/// An S3 message of `n` records in `qc-analyzer-landing`, each its own object; record
/// `n - 1` names an unknown bucket and `n - 2` is a deletion: two records to dead-letter.
fn s3_message(n: usize) -> Vec<u8> {
    let mut out = String::with_capacity(n * 200);
    out.push_str("{\"Records\":[");
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        let (bucket, event) = match n - i {
            1 => ("nobody-home", "ObjectCreated:Put"),
            2 => ("qc-analyzer-landing", "ObjectRemoved:Delete"),
            _ => ("qc-analyzer-landing", "ObjectCreated:Put"),
        };
        out.push_str(&format!(
            r#"{{"eventSource":"aws:s3","eventName":"{event}","eventTime":"2024-05-14T09:21:37Z","s3":{{"bucket":{{"name":"{bucket}"}},"object":{{"key":"results/p-{i}/tea/b-{i}.json","size":{i}}}}}}}"#
        ));
    }
    out.push_str("]}");
    out.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_record_message_is_routed_record_by_record_in_bounded_memory() {
    const RECORDS: usize = 100_000;
    const MAX: &str = "33554432";
    let nats = NatsServer::with_config(&format!("max_payload: {MAX}\n"));
    let configs = ConfigFile::fixture();
    let flags = ["--max-event-bytes", MAX, "--ack-wait", "60s"];
    let worker = Worker::start(&nats.url(), &configs.path, &flags).await;
    let js = nats.jetstream().await;
    let rss_before = worker.memory_kib("VmRSS");

    let body = s3_message(RECORDS);
    let size = body.len();
    let started = std::time::Instant::now();
    publish(&js, "blob.events.in.0", body, &[]).await;
    assert!(
        wait_drained(&js, Duration::from_secs(600)).await,
        "logs:\n{}",
        worker.logs()
    );
    let took = started.elapsed();
    assert_eq!(
        wait_outputs(&js, RECORDS as u64, Duration::from_secs(10)).await,
        (RECORDS as u64 - 2, 2)
    );
    assert_eq!(
        worker
            .metric("blob_router_events_total{outcome=\"routed\"}")
            .await,
        (RECORDS - 2) as f64
    );
    let dead = read_all(&js, "BLOB_DLQ").await;
    let mut reasons: Vec<_> = dead
        .iter()
        .map(|m| m.header("Blob-Router-Reason").unwrap())
        .collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["no_matching_config", "unsupported_event_type"]);
    let (rss_after, peak) = (worker.memory_kib("VmRSS"), worker.memory_kib("VmHWM"));
    eprintln!(
        "{RECORDS} records, {size} bytes: drained in {took:?}; worker RSS before {rss_before} KiB, after {rss_after} KiB, peak {peak} KiB"
    );
    assert!(peak < 1024 * 1024, "peak RSS {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_consumer_is_updated_to_the_flags() {
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    let stream = js
        .create_stream(stream::Config {
            name: "BLOB_EVENTS".into(),
            subjects: vec!["blob.events.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    stream
        .create_consumer(pull::Config {
            durable_name: Some("blob-router".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_deliver: 5,
            ack_wait: Duration::from_secs(10),
            max_ack_pending: 100,
            backoff: vec![Duration::from_secs(10), Duration::from_secs(20)],
            ..Default::default()
        })
        .await
        .unwrap();
    let configs = ConfigFile::fixture();
    let flags = [
        "--max-deliver",
        "6",
        "--ack-wait",
        "7s",
        "--max-ack-pending",
        "50",
    ];
    let worker = Worker::start(&nats.url(), &configs.path, &flags).await;
    let info = stream.consumer_info("blob-router").await.unwrap();
    assert_eq!(info.config.max_deliver, 6, "logs:\n{}", worker.logs());
    assert_eq!(info.config.ack_wait, Duration::from_secs(7));
    assert_eq!(info.config.max_ack_pending, 50);
    assert!(info.config.backoff.is_empty());
    let logs = worker.logs();
    assert!(
        logs.contains("updated the existing durable consumer")
            && logs.contains("max_deliver: 5 (flags: 6)"),
        "{logs}"
    );
    // And it still routes.
    publish_inputs(&js, 1, 0).await;
    assert_eq!(wait_outputs(&js, 1, Duration::from_secs(20)).await, (1, 0));
    drop(worker);
    // A replica with a lower limit does not lower it: the others rely on it.
    let lower = Worker::start(&nats.url(), &configs.path, &["--max-deliver", "3"]).await;
    let info = stream.consumer_info("blob-router").await.unwrap();
    assert_eq!(info.config.max_deliver, 6, "logs:\n{}", lower.logs());
    assert!(lower.logs().contains("not lowering"), "{}", lower.logs());
}
