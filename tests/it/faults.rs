//! Faults and lifecycle on a real nats-server: a mixed burst accounted for exactly once,
//! a worker killed with SIGKILL mid-burst and restarted, graceful SIGTERM, and readiness
//! following the NATS connection.

use std::time::Duration;

use futures::StreamExt;

use crate::support::burst::{assert_unique_ids, publish_mixed};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_burst_is_accounted_for_exactly_once() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let js = nats.jetstream().await;

    let (routed, dead) = publish_mixed(&js, 3000).await;
    assert!(
        wait_drained(&js, Duration::from_secs(120)).await,
        "logs:\n{}",
        worker.logs()
    );
    let (r, d) = wait_outputs(&js, routed + dead, Duration::from_secs(10)).await;
    assert_eq!((r, d), (routed, dead));
    let (out_r, out_d) = (
        read_all(&js, "BLOB_ROUTED").await,
        read_all(&js, "BLOB_DLQ").await,
    );
    assert_unique_ids(&out_r, &out_d);
    assert_eq!(
        worker
            .metric("blob_router_events_total{outcome=\"routed\"}")
            .await,
        routed as f64
    );
    assert_eq!(
        worker
            .metric("blob_router_events_total{outcome=\"dead_lettered\"}")
            .await,
        dead as f64
    );
    // 600 events for one unknown container cost one forced read, not 600.
    assert_eq!(worker.metric("source_config_forced_reads_total").await, 1.0);
    assert_eq!(
        worker.metric("source_config_cache_misses_total").await,
        600.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_then_restart_loses_and_duplicates_nothing() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let js = nats.jetstream().await;
    // Streams first, so the burst is stored before any worker runs.
    // A short ack wait (set when the durable consumer is created) brings the dead
    // worker's unacked messages back quickly.
    let flags = ["--concurrency", "16", "--ack-wait", "3s"];
    let first = Worker::start(&nats.url(), &configs.path, &flags).await;
    drop(first); // SIGKILL while idle: no harm, and the streams and consumer exist.

    let (routed, dead) = publish_mixed(&js, 6000).await;
    let mut worker = Worker::start(&nats.url(), &configs.path, &flags).await;
    // Kill it once it is well into the burst.
    eventually_or(
        "a tenth of the burst done",
        Duration::from_secs(60),
        || async {
            let (r, d) = outputs(&js).await;
            (r + d >= (routed + dead) / 10).then_some(())
        },
        || format!("no progress; logs:\n{}", worker.logs()),
    )
    .await;
    worker.sigkill();
    let at_kill = count(&js, "BLOB_ROUTED").await + count(&js, "BLOB_DLQ").await;
    assert!(at_kill < routed + dead, "killed mid-burst, not after it");

    let restarted = Worker::start(&nats.url(), &configs.path, &flags).await;
    assert!(
        wait_drained(&js, Duration::from_secs(180)).await,
        "logs:\n{}",
        restarted.logs()
    );
    let (r, d) = wait_outputs(&js, routed + dead, Duration::from_secs(10)).await;
    assert_eq!((r, d), (routed, dead), "every event exactly once");
    assert_unique_ids(
        &read_all(&js, "BLOB_ROUTED").await,
        &read_all(&js, "BLOB_DLQ").await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_and_exits_zero() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    // Messages already on their way to the stopped worker come back after ack_wait.
    let flags = ["--ack-wait", "3s", "--shutdown-timeout", "10s"];
    let mut worker = Worker::start(&nats.url(), &configs.path, &flags).await;
    let js = nats.jetstream().await;
    let (routed, dead) = publish_mixed(&js, 3000).await;
    // Stop it while it is busy.
    eventually("the first outputs", Duration::from_secs(60), || async {
        let (r, d) = outputs(&js).await;
        (r + d > 0).then_some(())
    })
    .await;
    worker.signal("TERM");
    let status = worker
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exits within the shutdown bound");
    assert_eq!(status.code(), Some(0));
    let logs = worker.logs();
    assert!(
        logs.contains("stopped fetching; finishing in-flight messages"),
        "{logs}"
    );
    assert!(
        !logs.contains("shutdown timeout"),
        "in-flight work finished: {logs}"
    );
    // Whatever it finished is acked; the rest is still pending for the next worker.
    let _restarted = Worker::start(&nats.url(), &configs.path, &flags).await;
    assert!(wait_drained(&js, Duration::from_secs(60)).await);
    let (r, d) = wait_outputs(&js, routed + dead, Duration::from_secs(10)).await;
    assert_eq!((r, d), (routed, dead));
}

/// An operator who sends a second signal is not kept waiting: the worker exits at once
/// (130), and what it had not acked is redelivered, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let mut nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let mut worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    // With NATS away, the graceful path ends in a flush bounded by seconds: the window
    // in which a second signal must cut it short.
    nats.kill();
    eventually_or(
        "the worker to see NATS go",
        Duration::from_secs(30),
        || async { worker.logs().contains("NATS disconnected").then_some(()) },
        || worker.logs(),
    )
    .await;
    worker.signal("TERM");
    eventually_or(
        "the first signal to start a graceful shutdown",
        Duration::from_secs(10),
        || async { worker.logs().contains("shutting down").then_some(()) },
        || worker.logs(),
    )
    .await;
    worker.signal("INT");
    let status = worker
        .wait_exit(Duration::from_secs(2))
        .await
        .expect("exits at once on the second signal");
    assert_eq!(status.code(), Some(130), "{}", worker.logs());
    assert!(worker.logs().contains("second signal"), "{}", worker.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_nats_connection_and_routing_resumes_after_an_outage() {
    let mut nats = NatsServer::start();
    nats.kill();
    let configs = ConfigFile::fixture();
    let worker = Worker::spawn(&nats.url(), &configs.path, &[]).await;
    // Up but not ready while NATS is unreachable.
    eventually("HTTP up", Duration::from_secs(20), || async {
        worker.get("/health/live").await.map(|_| ())
    })
    .await;
    assert_eq!(worker.get("/health/live").await.unwrap().0, 200);
    assert_eq!(worker.get("/health/ready").await.unwrap().0, 503);

    nats.restart();
    worker.wait_ready().await;
    let js = nats.jetstream().await;
    publish(&js, "blob.events.x", fixture("events/eventgrid.json"), &[]).await;
    assert_eq!(wait_outputs(&js, 1, Duration::from_secs(20)).await, (1, 0));

    // NATS goes away: not ready; it comes back: ready again, and routing resumes.
    nats.kill();
    eventually(
        "not ready without NATS",
        Duration::from_secs(20),
        || async { (worker.get("/health/ready").await.map(|r| r.0) == Some(503)).then_some(()) },
    )
    .await;
    nats.restart();
    worker.wait_ready().await;
    let js = nats.jetstream().await;
    publish(
        &js,
        "blob.events.x",
        fixture("events/cloudevents.json"),
        &[],
    )
    .await;
    assert_eq!(
        wait_outputs(&js, 2, Duration::from_secs(30)).await,
        (2, 0),
        "logs:\n{}",
        worker.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dead_letter_stream_delays_but_never_loses_a_dead_letter() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let js = nats.jetstream().await;
    js.delete_stream("BLOB_DLQ").await.unwrap();

    publish(&js, "blob.events.x", b"not json at all".to_vec(), &[]).await;
    // Nowhere to put it: the message is retried, not acked and not dropped.
    worker
        .wait_metric(
            "blob_router_messages_retried_total",
            1.0,
            Duration::from_secs(20),
        )
        .await;
    assert!(
        !wait_drained(&js, Duration::from_millis(300)).await,
        "still pending"
    );

    create_dlq_stream(&js).await;
    assert!(
        wait_drained(&js, Duration::from_secs(60)).await,
        "logs:\n{}",
        worker.logs()
    );
    assert_eq!(wait_outputs(&js, 1, Duration::from_secs(10)).await, (0, 1));
    assert_eq!(
        read_all(&js, "BLOB_DLQ").await[0].payload,
        b"not json at all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redone_message_does_not_duplicate_what_it_already_published() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let js = nats.jetstream().await;
    js.delete_stream("BLOB_DLQ").await.unwrap();

    // One S3 message, two records: the first routes, the second (unknown bucket) can
    // only be dead-lettered, and the dead-letter stream is gone. The message is redone
    // again and again, republishing the routed record each time.
    let s3: serde_json::Value = serde_json::from_slice(&fixture("events/s3.json")).unwrap();
    let mut s3 = s3;
    s3["Records"][1]["s3"]["bucket"]["name"] = "nobody-home".into();
    publish(&js, "blob.events.s3", serde_json::to_vec(&s3).unwrap(), &[]).await;
    worker
        .wait_metric(
            "blob_router_messages_retried_total",
            2.0,
            Duration::from_secs(30),
        )
        .await;
    create_dlq_stream(&js).await;
    assert!(
        wait_drained(&js, Duration::from_secs(60)).await,
        "logs:\n{}",
        worker.logs()
    );
    // Published at least three times, stored once.
    assert_eq!(count(&js, "BLOB_ROUTED").await, 1);
    assert_eq!(count(&js, "BLOB_DLQ").await, 1);
    assert_eq!(
        worker
            .metric("blob_router_events_total{outcome=\"routed\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_too_large_to_dead_letter_whole_is_kept_truncated_not_retried_forever() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let js = nats.jetstream().await;
    // Just under the server's 1 MiB max_payload: our headers push the dead letter over.
    let body = vec![b'x'; 1_048_400];
    publish(&js, "blob.events.big", body.clone(), &[]).await;
    assert!(
        wait_drained(&js, Duration::from_secs(30)).await,
        "logs:\n{}",
        worker.logs()
    );
    let dead = read_all(&js, "BLOB_DLQ").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].header("Blob-Router-Reason"),
        Some("malformed_event")
    );
    assert_eq!(dead[0].header("Blob-Router-Truncated"), Some("1048400"));
    assert!(!dead[0].payload.is_empty() && body.starts_with(&dead[0].payload));
}

/// Messages none of whose deliveries reaches the pipeline: a header line with no colon
/// makes the client drop the connection it arrives on (and the messages read with it),
/// so they come back after `ack_wait`, until the server stops delivering them. Then
/// each is handled from its copy in the stream, as a delivery would have been: routed,
/// or dead-lettered with its reason and the headers that can be read. None is dropped
/// unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_whose_deliveries_never_arrive_are_handled_when_the_server_gives_up() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let worker = Worker::start(
        &nats.url(),
        &configs.path,
        &["--max-deliver", "2", "--ack-wait", "1s"],
    )
    .await;
    let js = nats.jetstream().await;
    let unreadable = "X-Trace: t-1\r\nNoColonHere\r\n";
    let event = fixture("events/eventgrid.json");
    publish_raw(nats.port, "blob.events.azure", unreadable, &event);
    let malformed = fixture("events/not-json.txt");
    publish_raw(nats.port, "blob.events.odd", unreadable, &malformed);
    publish(&js, "blob.events.aws", fixture("events/s3.json"), &[]).await;

    // One Event Grid record and two S3 records routed, one dead letter.
    assert_eq!(
        wait_outputs(&js, 4, Duration::from_secs(30)).await,
        (3, 1),
        "logs:\n{}",
        worker.logs()
    );
    let routed = read_all(&js, "BLOB_ROUTED").await;
    assert!(
        routed.iter().any(|m| m.header("Nats-Msg-Id")
            == Some("831e1650-001e-001b-66ab-eeb76e069631:qc-analyzer-results")),
        "the Event Grid event routed as a delivery of it would have been"
    );
    let dead = read_all(&js, "BLOB_DLQ").await;
    let d = &dead[0];
    assert_eq!(d.subject, "blob.dlq.malformed_event");
    assert_eq!(d.payload, malformed, "original bytes unchanged");
    assert_eq!(
        d.header("Blob-Router-Original-Subject"),
        Some("blob.events.odd")
    );
    assert_eq!(d.header("X-Trace"), Some("t-1"), "readable headers carried");
    worker
        .wait_metric(
            "blob_router_events_total{outcome=\"routed\"}",
            3.0,
            Duration::from_secs(10),
        )
        .await;
    // Counted once each, as deliveries would have been.
    for (series, n) in [
        ("blob_router_events_total{outcome=\"routed\"}", 3.0),
        ("blob_router_events_total{outcome=\"dead_lettered\"}", 1.0),
        ("blob_router_messages_abandoned_total", 0.0),
    ] {
        assert_eq!(worker.metric(series).await, n, "{series}");
    }
    // The two unreadable ones, at least (the S3 message is lost with them only when it
    // is read with one of them).
    for seq in [1, 2] {
        assert!(
            worker
                .logs()
                .lines()
                .any(|l| l.contains("handled from its stored copy")
                    && l.contains(&format!("seq={seq} "))),
            "seq {seq}; logs:\n{}",
            worker.logs()
        );
    }
    assert!(
        worker.logs().contains("handled from its stored copy"),
        "logs:\n{}",
        worker.logs()
    );
}

/// A replica that takes a message's last delivery and dies leaves it to the server,
/// which then stops delivering it: another replica handles it from its stored copy.
/// Here the test takes that last (and only: `--max-deliver 1`) delivery itself and
/// never acks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_delivery_taken_by_a_replica_that_died_is_handled_by_another() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let flags = ["--max-deliver", "1", "--ack-wait", "2s"];
    // A first run makes the streams and the consumer.
    let mut first = Worker::start(&nats.url(), &configs.path, &flags).await;
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(30)).await.is_some());
    let js = nats.jetstream().await;
    publish(
        &js,
        "blob.events.azure",
        fixture("events/eventgrid.json"),
        &[],
    )
    .await;
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream("blob-router", "BLOB_EVENTS")
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    let taken = batch.next().await.unwrap().unwrap();
    assert_eq!(taken.info().unwrap().delivered, 1, "its last delivery");
    drop(batch);

    let worker = Worker::start(&nats.url(), &configs.path, &flags).await;
    assert_eq!(
        wait_outputs(&js, 1, Duration::from_secs(30)).await,
        (1, 0),
        "logs:\n{}",
        worker.logs()
    );
    let routed = read_all(&js, "BLOB_ROUTED").await;
    assert_eq!(
        routed[0].header("Nats-Msg-Id"),
        Some("831e1650-001e-001b-66ab-eeb76e069631:qc-analyzer-results")
    );
    worker
        .wait_metric(
            "blob_router_events_total{outcome=\"routed\"}",
            1.0,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        worker
            .metric("blob_router_events_total{outcome=\"routed\"}")
            .await,
        1.0
    );
    assert!(
        worker.logs().contains("handled from its stored copy"),
        "logs:\n{}",
        worker.logs()
    );
}

/// Recreates the dead-letter stream a test deleted.
async fn create_dlq_stream(js: &async_nats::jetstream::Context) {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "BLOB_DLQ".into(),
        subjects: vec!["blob.dlq.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
}

/// A max-deliveries advisory is only trusted for the worker's own stream and consumer:
/// anyone who may publish on the advisory subject can send one, and its stream name
/// would otherwise be put in a subject on a connection that does not check its
/// subjects (here, a name that writes a publish of its own), or read another stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_advisory_is_ignored() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut evil = client.subscribe("evil").await.unwrap();
    client.flush().await.unwrap();
    let subject = blob_router::nats::given_up::advisory_subject("BLOB_EVENTS", "blob-router");
    for (stream, consumer) in [
        ("X 2\r\nhi\r\nPUB evil 6\r\nforged\r\nPUB y", "blob-router"),
        ("BLOB_ROUTED", "blob-router"),
        ("BLOB_EVENTS", "someone-else"),
    ] {
        let advisory = serde_json::json!({
            "stream": stream, "consumer": consumer, "stream_seq": 1, "deliveries": 20
        });
        client
            .publish(subject.clone(), advisory.to_string().into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let forged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = forged.clone();
    tokio::spawn(async move {
        while let Some(m) = evil.next().await {
            seen.lock().unwrap().push(m.payload);
        }
    });
    // Ignored (logged), or a forged publish seen: whichever comes first. Anything the
    // worker wrote has reached our subscriber by a round trip of ours.
    eventually(
        "the three advisories ignored, or a forged publish",
        Duration::from_secs(10),
        || async {
            client.flush().await.unwrap();
            let ignored = worker
                .logs()
                .matches("advisory for another stream or consumer; ignored")
                .count();
            (ignored == 3 || !forged.lock().unwrap().is_empty()).then_some(())
        },
    )
    .await;
    client.flush().await.unwrap();
    assert!(
        forged.lock().unwrap().is_empty(),
        "a forged advisory published on the worker's connection: {:?}",
        forged.lock().unwrap()
    );
    assert!(!worker
        .logs()
        .contains("reading a message the server gave up on"));
    assert_eq!(
        worker.metric("blob_router_messages_abandoned_total").await,
        0.0
    );
}
