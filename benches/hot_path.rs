//! The per-event hot path without I/O: parse a message, decide its route against a
//! realistic index, build the routed envelope and its headers, read the PubAck. Run with
//! `cargo bench --bench hot_path`.

/// The worker's allocator (see `src/main.rs`), so the figures are the worker's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;

use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::response::Response;
use blob_router::cache::Index;
use blob_router::config::SourceConfig;
use blob_router::event;
use blob_router::nats::publisher;
use blob_router::output::{self, Envelope};
use blob_router::router;

/// 100 containers x 10 configs, patterns like production ones; the fixture's container
/// is one of them, and its matching config is tried after 9 that do not match.
fn index() -> Index {
    let mut configs = Vec::new();
    for c in 0..100 {
        let container = if c == 42 {
            "qc-analyzer-landing".to_string()
        } else {
            format!("container-{c}")
        };
        for k in 0..10 {
            let pattern = if k == 9 {
                "results/{plantation_id}/{crop}/{batch_id}.json".to_string()
            } else {
                format!("other-{k}/{{a}}/**/*.csv")
            };
            let doc = json!({
                "_id": format!("cfg-{c}-{k}"), "priority": 10 - k,
                "ingestion": {"mode": "blob_trigger", "landing_container": container,
                              "path_pattern": {"pattern": pattern}}
            });
            configs.push(Arc::new(
                SourceConfig::from_value(&doc, "blob.routed").unwrap(),
            ));
        }
    }
    Index::build(configs.iter())
}

fn bench(c: &mut Criterion) {
    let eventgrid = include_bytes!("../fixtures/events/eventgrid.json");
    let s3 = include_bytes!("../fixtures/events/s3.json");
    let index = index();

    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_eventgrid", |b| {
        b.iter(|| event::parse(black_box(eventgrid), None))
    });
    g.bench_function("parse_s3_two_records", |b| {
        b.iter(|| event::parse(black_box(s3), None))
    });

    let parsed = event::parse(eventgrid, None).pop().unwrap().unwrap();
    g.bench_function("decide_1000_configs", |b| {
        b.iter(|| router::decide(black_box(&parsed.event), &index).unwrap())
    });
    g.bench_function("parse_decide_envelope", |b| {
        b.iter(|| {
            let record = event::parse(black_box(eventgrid), None)
                .pop()
                .unwrap()
                .unwrap();
            let m = router::decide(&record.event, &index).unwrap();
            Envelope::routed(&m.config, m.fields(), &record).to_bytes()
        })
    });
    let m = router::decide(&parsed.event, &index).unwrap();
    g.bench_function("routed_headers", |b| {
        b.iter(|| output::routed_headers(black_box(&parsed.event), &m.config))
    });

    // The PubAck of every output: read by the worker (src/nats/publisher.rs), and as
    // async-nats's JetStream publish reads it (its untagged `Response` through serde).
    let body = r#"{"stream":"BLOB_ROUTED","seq":1234567,"duplicate":true}"#;
    let pub_ack = async_nats::Message {
        subject: "_INBOX.x.y".into(),
        reply: None,
        payload: bytes::Bytes::from_static(body.as_bytes()),
        headers: None,
        status: None,
        description: None,
        length: body.len(),
    };
    g.bench_function("read_pub_ack", |b| {
        b.iter(|| publisher::read_pub_ack(black_box(&pub_ack)).unwrap())
    });
    g.bench_function("pub_ack_as_the_client_reads_it", |b| {
        b.iter(|| {
            match serde_json::from_slice::<Response<PublishAck>>(black_box(&pub_ack.payload))
                .unwrap()
            {
                Response::Ok(ack) => ack,
                Response::Err { error } => panic!("{error}"),
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
