//! The worker's metrics. Hot-path counters are plain atomics (no lock, no map lookup per
//! event); OpenTelemetry reads them through observable instruments at collection time,
//! for the Prometheus endpoint and, when configured, OTLP export. The routing latency
//! histogram is the one instrument recorded directly.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::metrics::{Histogram, Meter};
use opentelemetry::KeyValue;

use crate::output::Reason;

/// Counters and gauges, shared by every part of the worker.
#[derive(Default)]
pub struct Counters {
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub cache_invalidations: AtomicU64,
    pub cache_size: AtomicU64,
    /// Unix time (ms) of the last full load of the cache; 0 before the first.
    pub cache_loaded_at_ms: AtomicU64,
    pub forced_reads: AtomicU64,
    pub negative_hits: AtomicU64,
    pub change_stream_restarts: AtomicU64,
    pub change_stream_active: AtomicBool,
    pub drift: AtomicU64,
    pub configs_refused: AtomicU64,
    pub events_routed: AtomicU64,
    pub dead_letters: [AtomicU64; Reason::ALL.len()],
    pub messages_received: AtomicU64,
    pub messages_retried: AtomicU64,
    pub messages_abandoned: AtomicU64,
}

impl Counters {
    pub fn events_dead_lettered(&self) -> u64 {
        self.dead_letters.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub fn dead_letters_for(&self, reason: Reason) -> u64 {
        self.dead_letters[reason.index()].load(Relaxed)
    }

    pub fn mark_full_load(&self) {
        self.cache_loaded_at_ms.store(now_ms(), Relaxed);
    }

    /// Seconds since the last full load, or 0 before the first.
    pub fn cache_age_seconds(&self) -> f64 {
        let at = self.cache_loaded_at_ms.load(Relaxed);
        if at == 0 {
            return 0.0;
        }
        now_ms().saturating_sub(at) as f64 / 1000.0
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The counters plus the recorded instruments.
pub struct Metrics {
    pub counters: Arc<Counters>,
    routing_latency: Histogram<f64>,
}

impl Metrics {
    /// Registers every instrument on `meter`.
    pub fn new(meter: &Meter) -> Arc<Self> {
        let counters = Arc::new(Counters::default());
        register(meter, &counters);
        let routing_latency = meter
            .f64_histogram("blob_router_routing_latency_seconds")
            .with_description("Time from receiving an input message to acking it")
            .with_boundaries(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
            .build();
        Arc::new(Self {
            counters,
            routing_latency,
        })
    }

    /// Metrics that go nowhere, for tests and one-shot commands.
    pub fn detached() -> Arc<Self> {
        Self::new(&opentelemetry::global::meter_provider().meter("blob-router-detached"))
    }

    pub fn record_latency(&self, seconds: f64) {
        self.routing_latency.record(seconds, &[]);
    }
}

/// One plain counter: name (Prometheus adds `_total`), help, and how to read it.
type CounterSpec = (&'static str, &'static str, fn(&Counters) -> u64);
/// One gauge.
type GaugeSpec = (&'static str, &'static str, fn(&Counters) -> f64);

const COUNTERS: &[CounterSpec] = &[
    // The ADR's counters.
    (
        "source_config_cache_hits",
        "Events whose config was found in the cache",
        |c| c.cache_hits.load(Relaxed),
    ),
    (
        "source_config_cache_misses",
        "Events that found no config in the cache",
        |c| c.cache_misses.load(Relaxed),
    ),
    (
        "source_config_cache_invalidations",
        "Changes applied to the cache (per document, reloads)",
        |c| c.cache_invalidations.load(Relaxed),
    ),
    // Beyond the ADR.
    (
        "source_config_forced_reads",
        "Forced reads of one container on a miss (coalesced)",
        |c| c.forced_reads.load(Relaxed),
    ),
    (
        "source_config_negative_hits",
        "Misses answered by a remembered negative read",
        |c| c.negative_hits.load(Relaxed),
    ),
    (
        "source_config_change_stream_restarts",
        "Change feed restarts and full reloads",
        |c| c.change_stream_restarts.load(Relaxed),
    ),
    (
        "source_config_drift",
        "Differences found by the TTL resync (should stay 0)",
        |c| c.drift.load(Relaxed),
    ),
    (
        "source_config_refused",
        "Config documents refused by validation",
        |c| c.configs_refused.load(Relaxed),
    ),
    (
        "blob_router_messages_received",
        "Input messages received",
        |c| c.messages_received.load(Relaxed),
    ),
    (
        "blob_router_messages_retried",
        "Input messages negatively acked for redelivery",
        |c| c.messages_retried.load(Relaxed),
    ),
    (
        "blob_router_messages_abandoned",
        "Input messages the server stopped delivering whose stored copy could not be handled or dead-lettered either",
        |c| c.messages_abandoned.load(Relaxed),
    ),
];

const GAUGES: &[GaugeSpec] = &[
    (
        "source_config_cache_age_seconds",
        "Seconds since the last full load of the cache",
        |c| c.cache_age_seconds(),
    ),
    (
        "source_config_cache_size",
        "Valid configs in the cache",
        |c| c.cache_size.load(Relaxed) as f64,
    ),
    (
        "source_config_change_stream_active",
        "1 while the change feed is healthy",
        |c| {
            if c.change_stream_active.load(Relaxed) {
                1.0
            } else {
                0.0
            }
        },
    ),
];

fn register(meter: &Meter, c: &Arc<Counters>) {
    for &(name, help, read) in COUNTERS {
        let c = c.clone();
        meter
            .u64_observable_counter(name)
            .with_description(help)
            .with_callback(move |o| o.observe(read(&c), &[]))
            .build();
    }
    for &(name, help, read) in GAUGES {
        let c = c.clone();
        meter
            .f64_observable_gauge(name)
            .with_description(help)
            .with_callback(move |o| o.observe(read(&c), &[]))
            .build();
    }
    let cc = c.clone();
    meter
        .u64_observable_counter("blob_router_events")
        .with_description("Events by outcome (routed or dead_lettered)")
        .with_callback(move |o| {
            o.observe(
                cc.events_routed.load(Relaxed),
                &[KeyValue::new("outcome", "routed")],
            );
            o.observe(
                cc.events_dead_lettered(),
                &[KeyValue::new("outcome", "dead_lettered")],
            );
        })
        .build();
    let cc = c.clone();
    meter
        .u64_observable_counter("blob_router_dead_letters")
        .with_description("Dead-lettered events by reason")
        .with_callback(move |o| {
            for r in Reason::ALL {
                o.observe(
                    cc.dead_letters_for(r),
                    &[KeyValue::new("reason", r.as_str())],
                );
            }
        })
        .build();
}
