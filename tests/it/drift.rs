//! TTL resyncs of configs written as MongoDB stores them (extended JSON: `$oid`,
//! `$numberLong`, `$date`, integral doubles) count no drift in the real binary.
//!
//! Drift is what a resync finds that the change feed never delivered, and operators alert
//! on it. Before the fix, such a document read back never compared equal to the cached
//! one, so every resync counted it as drift (one more per typed config per TTL).

use std::cell::RefCell;
use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// Every form of a typed value a stored config can carry, across three configs.
fn typed_configs() -> Value {
    json!([
        {
            "_id": {"$oid": "6740a1b2c3d4e5f601234567"},
            "enabled": true,
            "ingestion": {"mode": "blob_trigger", "landing_container": "typed"},
            "version": {"$numberLong": "7"},
            "updated_at": {"$date": "2026-11-20T10:00:00Z"}
        },
        {
            "_id": "typed-long-date",
            "priority": {"$numberInt": "2"},
            "ingestion": {"mode": "blob_trigger", "landing_container": "typed-long-date"},
            "version": 3.0,
            "updated_at": {"$date": {"$numberLong": "1795168800000"}}
        },
        {
            "_id": "typed-number-date",
            "priority": 1.0,
            "ingestion": {"mode": "blob_trigger", "landing_container": "typed-number-date"},
            "version": {"$numberInt": "2"},
            "updated_at": {"$date": 1795168800000_i64}
        }
    ])
}

/// The Event Grid fixture for a blob in `container`, with an event id of its own.
fn event_for(container: &str) -> Vec<u8> {
    String::from_utf8(fixture("events/eventgrid.json"))
        .unwrap()
        .replace("qc-analyzer-landing", container)
        .replace(
            "831e1650-001e-001b-66ab-eeb76e069631",
            &format!("{container}-event"),
        )
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_resyncs_of_mongodb_typed_configs_count_no_drift() {
    let nats = NatsServer::start();
    let configs = ConfigFile::named("configs.json", &typed_configs().to_string());
    let worker = Worker::start(&nats.url(), &configs.path, &["--cache-ttl", "1s"]).await;
    let health = worker.health_cache().await;
    assert_eq!(
        health["cache_size"], 3,
        "every typed form accepted: {health}"
    );
    assert_eq!(health["refused"], json!([]), "{health}");
    let loaded_at = health["last_full_load_at"].clone();
    let changed_at = health["last_change_at"].clone();
    let invalidations = worker
        .metric("source_config_cache_invalidations_total")
        .await;

    // Every full reload stamps `last_full_load_at` (ms precision, a TTL apart). The drift
    // of a resync is counted just after its reload, so once five new stamps have been
    // seen, at least four resyncs are counted in full.
    let stamps = RefCell::new(HashSet::new());
    eventually_or(
        "five TTL resyncs",
        Duration::from_secs(60),
        || async {
            let stamp = worker.health_cache().await["last_full_load_at"].clone();
            let mut stamps = stamps.borrow_mut();
            if stamp != loaded_at {
                stamps.insert(stamp.to_string());
            }
            (stamps.len() >= 5).then_some(())
        },
        || {
            format!(
                "resyncs seen: {:?}; logs:\n{}",
                stamps.borrow(),
                worker.logs()
            )
        },
    )
    .await;

    let (_, text) = worker.get("/metrics").await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("source_config_drift_total ")),
        "source_config_drift_total missing from /metrics:\n{text}"
    );
    assert_eq!(
        worker.metric("source_config_drift_total").await,
        0.0,
        "logs:\n{}",
        worker.logs()
    );
    assert!(
        worker
            .metric("source_config_cache_invalidations_total")
            .await
            >= invalidations + 4.0,
        "each resync is a full reload"
    );
    let health = worker.health_cache().await;
    assert_eq!(
        health["last_change_at"], changed_at,
        "no resync changed a config: {health}"
    );
    assert_eq!(health["cache_size"], 3, "{health}");

    // The configs still route, with their ids and versions read through the wrappers.
    let js = nats.jetstream().await;
    let expected = [
        ("typed", "6740a1b2c3d4e5f601234567", 7),
        ("typed-long-date", "typed-long-date", 3),
        ("typed-number-date", "typed-number-date", 2),
    ];
    for (container, _, _) in expected {
        publish(&js, "blob.events.azure", event_for(container), &[]).await;
    }
    assert_eq!(
        wait_outputs(&js, 3, Duration::from_secs(20)).await,
        (3, 0),
        "logs:\n{}",
        worker.logs()
    );
    let routed = read_all(&js, "BLOB_ROUTED").await;
    for (container, source_id, version) in expected {
        let m = routed
            .iter()
            .find(|m| m.json()["event"]["container"] == container)
            .unwrap_or_else(|| panic!("nothing routed for {container}: {routed:?}"));
        let body = m.json();
        assert_eq!(body["source_id"], source_id, "{body}");
        assert_eq!(body["config_version"], version, "{body}");
        assert_eq!(m.subject, format!("blob.routed.{source_id}"));
    }
    assert_eq!(worker.metric("source_config_drift_total").await, 0.0);
}
