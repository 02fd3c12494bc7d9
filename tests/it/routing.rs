//! End to end on a real nats-server: every input format routed with its metadata, every
//! dead-letter reason with its headers and the original bytes, and config file edits
//! taking effect without a restart.

use std::cell::RefCell;
use std::collections::HashSet;
use std::time::Duration;

use crate::support::*;
use serde_json::Value;

const ROUTED: &str = "blob.routed.qc-analyzer";

/// Input headers of one test message.
type Headers<'a> = &'a [(&'a str, &'a str)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_is_routed_with_its_metadata() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let js = nats.jetstream().await;

    let inputs: [(&str, &str, Headers); 6] = [
        ("blob.events.azure", "events/eventgrid.json", &[]),
        ("blob.events.azure", "events/eventgrid-array.json", &[]),
        ("blob.events.azure", "events/cloudevents.json", &[]),
        ("blob.events.aws", "events/s3.json", &[]),
        ("blob.events.minio", "events/minio.json", &[]),
        (
            "blob.events.gcs",
            "events/gcs.json",
            &[("eventType", "OBJECT_FINALIZE")],
        ),
    ];
    for (subject, file, headers) in inputs {
        publish(&js, subject, fixture(file), headers).await;
    }
    // 1 + 2 + 1 + 2 + 1 + 1 records.
    let (routed, dead) = wait_outputs(&js, 8, Duration::from_secs(30)).await;
    assert_eq!((routed, dead), (8, 0), "logs:\n{}", worker.logs());

    let out = read_all(&js, "BLOB_ROUTED").await;
    let mut formats = HashSet::new();
    let mut crops = HashSet::new();
    for m in &out {
        assert_eq!(m.subject, ROUTED);
        let body = m.json();
        assert_eq!(body["source_id"], "qc-analyzer-results");
        assert_eq!(body["config_version"], 3);
        assert_eq!(body["metadata"]["plantation_id"], "plantation-7");
        assert!(body["metadata"]["batch_id"]
            .as_str()
            .unwrap()
            .starts_with("batch-004"));
        crops.insert(body["metadata"]["crop"].as_str().unwrap().to_string());
        assert_eq!(body["event"]["container"], "qc-analyzer-landing");
        assert!(body["raw"].is_object(), "raw carries the original event");
        let id = body["event"]["id"].as_str().unwrap();
        assert_eq!(
            m.header("Nats-Msg-Id"),
            Some(format!("{id}:qc-analyzer-results").as_str())
        );
        assert_eq!(
            m.header("Blob-Router-Source-Id"),
            Some("qc-analyzer-results")
        );
        formats.insert(body["event"]["format"].as_str().unwrap().to_string());
    }
    let expected: HashSet<String> = ["event_grid", "cloud_events", "s3", "minio", "gcs"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(formats, expected);
    assert!(
        crops.contains("green tea"),
        "S3 keys are URL-decoded with + as space: {crops:?}"
    );
    // The Event Grid events carry their storage account.
    assert!(out
        .iter()
        .any(|m| m.json()["event"]["account"] == "qcanalyzerprod"));

    // Outcomes are counted when the input is acked, just after the outputs are stored.
    assert!(wait_drained(&js, Duration::from_secs(10)).await);
    assert_eq!(
        worker
            .metric("blob_router_events_total{outcome=\"routed\"}")
            .await,
        8.0
    );
    assert_eq!(worker.metric("source_config_cache_hits_total").await, 8.0);
    assert_eq!(worker.metric("source_config_cache_size").await, 5.0);
    assert_eq!(
        worker
            .metric("blob_router_routing_latency_seconds_count")
            .await,
        6.0
    );

    // Every series the README documents is exported.
    let (_, text) = worker.get("/metrics").await.unwrap();
    for name in [
        "source_config_cache_hits_total",
        "source_config_cache_misses_total",
        "source_config_cache_invalidations_total",
        "source_config_cache_age_seconds",
        "source_config_cache_size",
        "blob_router_events_total{outcome=\"routed\"}",
        "blob_router_events_total{outcome=\"dead_lettered\"}",
        "blob_router_dead_letters_total{reason=\"no_matching_config\"}",
        "source_config_forced_reads_total",
        "source_config_negative_hits_total",
        "source_config_change_stream_restarts_total",
        "source_config_change_stream_active",
        "source_config_drift_total",
        "source_config_refused_total",
        "blob_router_messages_received_total",
        "blob_router_messages_retried_total",
        "blob_router_messages_abandoned_total",
        "blob_router_routing_latency_seconds_bucket",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing from /metrics:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_dead_letter_reason_keeps_the_original_bytes() {
    let nats = NatsServer::start();
    let mut yaml = String::from_utf8(fixture("configs.yaml")).unwrap();
    yaml.push_str(
        "\n- _id: nowhere\n  ingestion: {mode: blob_trigger, landing_container: nowhere-landing}\n  route: {subject: unstreamed.subject}\n",
    );
    let configs = ConfigFile::new(&yaml);
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let js = nats.jetstream().await;

    let eventgrid = String::from_utf8(fixture("events/eventgrid.json")).unwrap();
    let unknown = eventgrid.replace("containers/qc-analyzer-landing", "containers/nobody-home");
    let unstreamed = eventgrid.replace(
        "containers/qc-analyzer-landing",
        "containers/nowhere-landing",
    );
    let unmatched = eventgrid.replace("blobs/results/plantation-7", "blobs/elsewhere/plantation-7");
    let cases: Vec<(Vec<u8>, Headers, &str)> = vec![
        (fixture("events/not-json.txt"), &[], "malformed_event"),
        (b"".to_vec(), &[], "malformed_event"),
        (br#"{"hello":"world"}"#.to_vec(), &[], "malformed_event"),
        (
            fixture("events/eventgrid-deleted.json"),
            &[],
            "unsupported_event_type",
        ),
        (
            fixture("events/gcs.json"),
            &[("eventType", "OBJECT_DELETE")],
            "unsupported_event_type",
        ),
        (unknown.into_bytes(), &[], "no_matching_config"),
        (unmatched.into_bytes(), &[], "no_matching_config"),
        (unstreamed.into_bytes(), &[], "no_stream_for_subject"),
    ];
    for (i, (body, headers, _)) in cases.iter().enumerate() {
        publish(&js, &format!("blob.events.case{i}"), body.clone(), headers).await;
    }
    let (routed, dead) = wait_outputs(&js, cases.len() as u64, Duration::from_secs(30)).await;
    assert_eq!(
        (routed, dead),
        (0, cases.len() as u64),
        "logs:\n{}",
        worker.logs()
    );

    let out = read_all(&js, "BLOB_DLQ").await;
    for (i, (body, _, reason)) in cases.iter().enumerate() {
        let original = format!("blob.events.case{i}");
        let m = out
            .iter()
            .find(|m| m.header("Blob-Router-Original-Subject") == Some(original.as_str()))
            .unwrap_or_else(|| panic!("no dead letter for case {i}"));
        assert_eq!(&m.payload, body, "case {i}: original bytes unchanged");
        assert_eq!(m.subject, format!("blob.dlq.{reason}"), "case {i}");
        assert_eq!(m.header("Blob-Router-Reason"), Some(*reason), "case {i}");
        assert!(
            !m.header("Blob-Router-Detail").unwrap_or("").is_empty(),
            "case {i}"
        );
        assert!(
            m.header("Blob-Router-Received-At").unwrap().contains('T'),
            "case {i}"
        );
        assert!(
            m.header("Nats-Msg-Id").unwrap().starts_with("dlq:"),
            "case {i}"
        );
        if *reason == "no_matching_config" || *reason == "no_stream_for_subject" {
            assert!(
                m.header("Blob-Router-Event-Id").is_some(),
                "case {i}: event id known"
            );
        }
    }
    let detail = |reason: &str| -> String {
        out.iter()
            .find(|m| m.header("Blob-Router-Reason") == Some(reason))
            .unwrap()
            .header("Blob-Router-Detail")
            .unwrap()
            .to_string()
    };
    assert!(detail("no_stream_for_subject").contains("unstreamed.subject"));
    assert!(wait_drained(&js, Duration::from_secs(10)).await);
    assert_eq!(
        worker
            .metric("blob_router_dead_letters_total{reason=\"malformed_event\"}")
            .await,
        3.0
    );
    assert_eq!(
        worker
            .metric("blob_router_events_total{outcome=\"dead_lettered\"}")
            .await,
        cases.len() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_config_file_changes_routing_without_restart() {
    let nats = NatsServer::start();
    let v1 = "- _id: edit-me\n  version: 1\n  ingestion: {mode: blob_trigger, landing_container: qc-analyzer-landing}\n  route: {subject: blob.routed.first}\n";
    let configs = ConfigFile::new(v1);
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let js = nats.jetstream().await;

    publish(&js, "blob.events.x", fixture("events/eventgrid.json"), &[]).await;
    wait_outputs(&js, 1, Duration::from_secs(20)).await;
    assert_eq!(
        read_all(&js, "BLOB_ROUTED").await[0].subject,
        "blob.routed.first"
    );

    configs.replace(
        &v1.replace("version: 1", "version: 2")
            .replace("blob.routed.first", "blob.routed.second"),
    );
    // Poll /health/cache until the edit is applied, then route again.
    let last = RefCell::new(Value::Null);
    eventually_or(
        "edit applied",
        Duration::from_secs(20),
        || async {
            let v = worker.health_cache().await;
            let applied = v["last_change_at"] != v["last_full_load_at"] && v["cache_size"] == 1;
            *last.borrow_mut() = v;
            applied.then_some(())
        },
        || format!("edit never applied: {}", last.borrow()),
    )
    .await;
    let cloud = fixture("events/cloudevents.json");
    publish(&js, "blob.events.x", cloud, &[]).await;
    wait_outputs(&js, 2, Duration::from_secs(20)).await;
    let subjects: Vec<String> = read_all(&js, "BLOB_ROUTED")
        .await
        .into_iter()
        .map(|m| m.subject)
        .collect();
    assert_eq!(subjects, vec!["blob.routed.first", "blob.routed.second"]);

    // A broken edit keeps the last good configs and is reported.
    configs.replace("- _id: [unclosed\n");
    let v = eventually_or(
        "broken file reported",
        Duration::from_secs(20),
        || async {
            let v = worker.health_cache().await;
            let reported = v["source_error"].is_string();
            *last.borrow_mut() = v.clone();
            reported.then_some(v)
        },
        || format!("broken file never reported: {}", last.borrow()),
    )
    .await;
    assert_eq!(v["cache_size"], 1, "last good configs kept");
    publish(&js, "blob.events.x", fixture("events/minio.json"), &[]).await;
    wait_outputs(&js, 3, Duration::from_secs(20)).await;
    assert_eq!(count(&js, "BLOB_ROUTED").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_stream_refuses_for_good_is_dead_lettered_as_publish_rejected() {
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    // A stream that takes nothing bigger than 300 bytes: the envelope never fits.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "SMALL".into(),
        subjects: vec!["small.>".into()],
        max_message_size: 300,
        ..Default::default()
    })
    .await
    .unwrap();
    let configs = ConfigFile::new(
        "- _id: tiny\n  ingestion: {mode: blob_trigger, landing_container: qc-analyzer-landing}\n  route: {subject: small.tiny}\n",
    );
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let body = fixture("events/eventgrid.json");
    publish(&js, "blob.events.x", body.clone(), &[]).await;
    assert_eq!(
        wait_outputs(&js, 1, Duration::from_secs(20)).await,
        (0, 1),
        "logs:\n{}",
        worker.logs()
    );
    let dead = read_all(&js, "BLOB_DLQ").await;
    assert_eq!(dead[0].subject, "blob.dlq.publish_rejected");
    assert_eq!(dead[0].payload, body);
    assert!(dead[0]
        .header("Blob-Router-Detail")
        .unwrap()
        .contains("small.tiny"));
    assert!(
        wait_drained(&js, Duration::from_secs(10)).await,
        "input acked, not retried forever"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_event_ids_are_routed_without_harm() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let js = nats.jetstream().await;
    let eventgrid = String::from_utf8(fixture("events/eventgrid.json")).unwrap();
    let long_a = format!("{}a", "x".repeat(400));
    let long_b = format!("{}b", "x".repeat(400));
    for id in ["evil\\r\\nid", long_a.as_str(), long_b.as_str()] {
        let body = eventgrid.replace("831e1650-001e-001b-66ab-eeb76e069631", id);
        publish(&js, "blob.events.x", body.into_bytes(), &[]).await;
    }
    // Three distinct events, three routed messages: none lost, none merged by a mangled id.
    assert_eq!(
        wait_outputs(&js, 3, Duration::from_secs(20)).await,
        (3, 0),
        "logs:\n{}",
        worker.logs()
    );
    assert!(wait_drained(&js, Duration::from_secs(10)).await);
    let ids: std::collections::HashSet<String> = read_all(&js, "BLOB_ROUTED")
        .await
        .iter()
        .map(|m| m.header("Nats-Msg-Id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(
        ids.iter().all(|id| !id.contains('\n') && id.len() < 120),
        "{ids:?}"
    );
}

/// A producer can put a line break in a header value (the protocol counts bytes, and
/// nats-server stores what it is given). The worker's client once panicked reading one,
/// which stopped its connection: nothing more was consumed. Now such a header is read
/// with a space for each line break, and the message is handled like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_header_with_a_line_break_is_handled_like_any_other() {
    let nats = NatsServer::start();
    let configs = ConfigFile::fixture();
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let js = nats.jetstream().await;

    let routed = fixture("events/eventgrid.json");
    publish_raw(nats.port, "blob.events.azure", "X-Note: a\rb\r\n", &routed);
    let malformed = fixture("events/not-json.txt");
    publish_raw(nats.port, "blob.events.odd", "X-Note: c\rd\r\n", &malformed);
    // And the worker goes on with the next message.
    let s3 = fixture("events/s3.json");
    publish(&js, "blob.events.aws", s3, &[]).await;

    // 1 + 2 routed records, one dead letter.
    assert_eq!(
        wait_outputs(&js, 4, Duration::from_secs(20)).await,
        (3, 1),
        "logs:\n{}",
        worker.logs()
    );
    assert!(wait_drained(&js, Duration::from_secs(10)).await);
    let dead = read_all(&js, "BLOB_DLQ").await;
    assert_eq!(
        dead[0].header("Blob-Router-Reason"),
        Some("malformed_event")
    );
    assert_eq!(dead[0].payload, malformed, "original bytes unchanged");
    assert_eq!(
        dead[0].header("X-Note"),
        Some("c d"),
        "the header travels with its dead letter, the line break as a space"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_config_is_listed_and_the_rest_keep_routing() {
    let nats = NatsServer::start();
    let mut yaml = String::from_utf8(fixture("configs.yaml")).unwrap();
    yaml.push_str(
        "\n- _id: broken\n  ingestion: {mode: blob_trigger, landing_container: c, path_pattern: {pattern: 'a/{oops'}}\n  route: {subject: 'has space'}\n",
    );
    let configs = ConfigFile::new(&yaml);
    let worker = Worker::start(&nats.url(), &configs.path, &[]).await;
    let (_, body) = worker.get("/health/cache").await.unwrap();
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["cache_size"], 5, "{body}");
    assert_eq!(health["refused"][0]["id"], "broken", "{body}");
    assert!(
        health["refused"][0]["problems"].as_array().unwrap().len() >= 2,
        "{body}"
    );
    assert!(worker.logs().contains("config refused"));
    assert_eq!(worker.metric("source_config_refused_total").await, 1.0);

    let js = nats.jetstream().await;
    publish(&js, "blob.events.x", fixture("events/eventgrid.json"), &[]).await;
    assert_eq!(wait_outputs(&js, 1, Duration::from_secs(20)).await, (1, 0));
}
