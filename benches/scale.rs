//! How the cache and the decision scale (criterion; `cargo bench --bench scale`):
//! - `decide` with 10, 1,000, 10,000 and 100,000 configs at 10 per container: it must be
//!   flat in the total (one map lookup, then the container's candidates);
//! - `decide` with 1, 10 and 100 configs in one container, the match the last tried;
//! - parsing each input format;
//! - applying one changed document to a 100,000-config cache, and a TTL resync of
//!   100,000 unchanged documents (which must recompile nothing).

/// The worker's allocator (see `src/main.rs`), so the figures are the worker's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::{json, Value};

use blob_router::cache::{ConfigCache, Index};
use blob_router::config::SourceConfig;
use blob_router::event;
use blob_router::router;
use blob_router::telemetry::metrics::Metrics;

/// `per` configs in each of `containers` containers; in each, only the last tried matches
/// the bench event's path.
fn docs(containers: usize, per: usize, container_of_event: &str) -> Vec<Value> {
    let mut docs = Vec::with_capacity(containers * per);
    for c in 0..containers {
        let container = if c == 0 {
            container_of_event.to_string()
        } else {
            format!("container-{c}")
        };
        for k in 0..per {
            let pattern = if k + 1 == per {
                "results/{plantation_id}/{crop}/{batch_id}.json".to_string()
            } else {
                format!("other-{k}/{{a}}/**/*.csv")
            };
            docs.push(json!({
                "_id": format!("cfg-{c}-{k}"), "priority": per - k, "version": 1,
                "ingestion": {"mode": "blob_trigger", "landing_container": container,
                              "path_pattern": {"pattern": pattern}}
            }));
        }
    }
    docs
}

fn index(docs: &[Value]) -> Index {
    let configs: Vec<Arc<SourceConfig>> = docs
        .iter()
        .map(|d| Arc::new(SourceConfig::from_value(d, "blob.routed").unwrap()))
        .collect();
    Index::build(configs.iter())
}

fn bench(c: &mut Criterion) {
    let eventgrid = include_bytes!("../fixtures/events/eventgrid.json");
    let parsed = event::parse(eventgrid, None).pop().unwrap().unwrap();
    let container = parsed.event.container.clone();

    let mut g = c.benchmark_group("decide_total");
    g.throughput(Throughput::Elements(1));
    for total in [10, 1_000, 10_000, 100_000] {
        let index = index(&docs(total / 10, 10, &container));
        g.bench_function(format!("{total}_configs_10_per_container"), |b| {
            b.iter(|| router::decide(black_box(&parsed.event), &index).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("decide_candidates");
    g.throughput(Throughput::Elements(1));
    for per in [1, 10, 100] {
        let index = index(&docs(1, per, &container));
        g.bench_function(format!("{per}_in_the_container"), |b| {
            b.iter(|| router::decide(black_box(&parsed.event), &index).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    let formats: [(&str, &[u8], Option<&str>); 5] = [
        ("eventgrid", eventgrid, None),
        (
            "cloudevents",
            include_bytes!("../fixtures/events/cloudevents.json"),
            None,
        ),
        (
            "s3_two_records",
            include_bytes!("../fixtures/events/s3.json"),
            None,
        ),
        (
            "minio",
            include_bytes!("../fixtures/events/minio.json"),
            None,
        ),
        (
            "gcs",
            include_bytes!("../fixtures/events/gcs.json"),
            Some("OBJECT_FINALIZE"),
        ),
    ];
    for (name, body, event_type) in formats {
        g.bench_function(name, |b| {
            b.iter(|| event::parse(black_box(body), event_type))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("cache_100k");
    g.sample_size(10);
    let all = docs(10_000, 10, &container);
    let cache = ConfigCache::new(Metrics::detached(), "blob.routed");
    cache.reset(all.clone());
    let mut version = 1;
    g.bench_function("apply_one_change", |b| {
        b.iter(|| {
            version += 1;
            let mut doc = all[12_345].clone();
            doc["version"] = json!(version);
            cache.upsert(black_box(&doc));
        })
    });
    // Back in step with `all` after the changes above.
    cache.reset(all.clone());
    g.bench_function("ttl_resync_unchanged", |b| {
        b.iter_batched(
            || all.clone(),
            |docs| {
                assert_eq!(
                    cache.reset(docs),
                    0,
                    "unchanged: no drift, nothing recompiled"
                )
            },
            BatchSize::LargeInput,
        )
    });
    // The whole TTL resync of a 100,000-config file, as the worker runs it: read and
    // parse the file one document at a time, recognise each as unchanged.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("configs.json");
    std::fs::write(&path, serde_json::to_vec(&all).unwrap()).unwrap();
    let store = blob_router::store::file::FileStore::new(&path);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(blob_router::cache::sync::load(&cache, &store))
        .unwrap();
    g.bench_function("ttl_resync_unchanged_file", |b| {
        b.iter(|| {
            let (documents, drift) = rt
                .block_on(blob_router::cache::sync::load(&cache, &store))
                .unwrap();
            assert_eq!((documents, drift), (100_000, 0));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
