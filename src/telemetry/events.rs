//! Internal events: one small type per observable thing that happens off the per-event
//! path, emitting its log line *and* its metric together (after Vector's
//! `internal_events`), so the two can never disagree and the code that does the work
//! reads as one line: `ConfigRefused { error }.emit(&metrics)`.
//!
//! Metrics here only observe. State that behaviour depends on (is the change feed up?)
//! lives in the cache; an event reports its change. The per-event counters (cache hits,
//! messages received, outcomes) stay plain atomic increments in the pipeline: a log line
//! per event would be the cost we avoid there.

use std::sync::atomic::Ordering::Relaxed;

use super::metrics::Metrics;
use crate::config::ConfigError;

/// Something worth a log line and a metric.
pub trait InternalEvent {
    fn emit(self, metrics: &Metrics);
}

/// A config document failed validation and is not used.
pub struct ConfigRefused<'a> {
    pub error: &'a ConfigError,
}

impl InternalEvent for ConfigRefused<'_> {
    fn emit(self, m: &Metrics) {
        tracing::warn!(error = %self.error, "config refused");
        m.counters.configs_refused.fetch_add(1, Relaxed);
    }
}

/// The change feed became healthy or unhealthy. While it is down, changes may be missed:
/// negative answers are not trusted and the resync runs more often.
pub struct FeedStatusChanged<'a> {
    pub active: bool,
    pub error: Option<&'a str>,
}

impl InternalEvent for FeedStatusChanged<'_> {
    fn emit(self, m: &Metrics) {
        if self.active {
            tracing::info!("config change feed active");
        } else {
            tracing::warn!(
                error = self.error.unwrap_or(""),
                "config change feed inactive"
            );
        }
        m.counters.change_stream_active.store(self.active, Relaxed);
    }
}

/// The change feed was resumed, reopened or restarted with a full reload.
pub struct FeedRestarted {
    pub how: &'static str,
}

impl InternalEvent for FeedRestarted {
    fn emit(self, m: &Metrics) {
        tracing::info!(how = self.how, "config change feed restarted");
        m.counters.change_stream_restarts.fetch_add(1, Relaxed);
    }
}

/// The whole cache was replaced from a snapshot (startup, reload, TTL resync).
pub struct CacheReloaded {
    pub configs: usize,
    /// Configs that differed from what the cache held.
    pub changed: usize,
}

impl InternalEvent for CacheReloaded {
    fn emit(self, m: &Metrics) {
        tracing::debug!(
            configs = self.configs,
            changed = self.changed,
            "config cache reloaded"
        );
        m.counters.mark_full_load();
        m.counters.cache_invalidations.fetch_add(1, Relaxed);
        m.counters.cache_size.store(self.configs as u64, Relaxed);
    }
}

/// Per-document changes were applied to the cache.
pub struct CacheChanged {
    pub configs: usize,
    pub containers: usize,
}

impl InternalEvent for CacheChanged {
    fn emit(self, m: &Metrics) {
        tracing::debug!(
            containers = self.containers,
            configs = self.configs,
            "config cache changed"
        );
        m.counters.cache_invalidations.fetch_add(1, Relaxed);
        m.counters.cache_size.store(self.configs as u64, Relaxed);
    }
}

/// The TTL resync found configs the change feed had not delivered (should never happen
/// while the feed works: operators alert on it).
pub struct DriftFound {
    pub drift: usize,
}

impl InternalEvent for DriftFound {
    fn emit(self, m: &Metrics) {
        if self.drift > 0 {
            tracing::warn!(
                drift = self.drift,
                "TTL resync found configs the change feed had not delivered"
            );
            m.counters.drift.fetch_add(self.drift as u64, Relaxed);
        } else {
            tracing::debug!("TTL resync found no drift");
        }
    }
}

/// A forced read of one container on a miss begins, shared by every event waiting on
/// it (counted whether or not it succeeds: the database sees it either way).
pub struct ForcedRead<'a> {
    pub container: &'a str,
}

impl InternalEvent for ForcedRead<'_> {
    fn emit(self, m: &Metrics) {
        tracing::debug!(container = self.container, "forced read");
        m.counters.forced_reads.fetch_add(1, Relaxed);
    }
}

/// A miss answered by a previous forced read (nothing changed since): no read made.
pub struct NegativeHit;

impl InternalEvent for NegativeHit {
    fn emit(self, m: &Metrics) {
        m.counters.negative_hits.fetch_add(1, Relaxed);
    }
}

/// An input message was handed back for redelivery after a transient failure.
pub struct MessageRetried<'a> {
    pub seq: u64,
    pub delivered: i64,
    pub why: &'a str,
    pub error: &'a (dyn std::error::Error + 'static),
}

impl InternalEvent for MessageRetried<'_> {
    fn emit(self, m: &Metrics) {
        tracing::warn!(
            error = %super::Chain(self.error),
            seq = self.seq,
            delivered = self.delivered,
            "{}; retrying the message later",
            self.why
        );
        m.counters.messages_retried.fetch_add(1, Relaxed);
    }
}

/// A message failed on its last allowed delivery and could not even be dead-lettered:
/// it is left unacked. Once its ack wait runs out the server stops delivering it, and
/// it is tried again from its stored copy ([`GivenUpLost`] if that fails too, so a
/// message is counted abandoned once). Logged once per message (the server does not
/// bring it back, so this cannot loop).
pub struct LastDeliveryUnfinished<'a> {
    pub seq: u64,
    pub delivered: i64,
    /// Why the message failed (its last delivery).
    pub failure: &'a str,
    /// Why its dead letter failed too.
    pub error: &'a (dyn std::error::Error + 'static),
}

impl InternalEvent for LastDeliveryUnfinished<'_> {
    fn emit(self, _: &Metrics) {
        tracing::error!(
            error = %super::Chain(self.error),
            failure = self.failure,
            seq = self.seq,
            delivered = self.delivered,
            "its last delivery failed and so did its dead letter; left unacked, to be tried from its stored copy once the server stops delivering it"
        );
    }
}

/// The server stopped delivering a message (see [`crate::nats::given_up`]) and its stored
/// copy could not be handled either, within `--stored-copy-patience`: the advisory is
/// not sent again, so this is logged once. The one place a message is counted
/// abandoned.
pub struct GivenUpLost<'a> {
    pub seq: u64,
    pub deliveries: u64,
    pub error: &'a (dyn std::error::Error + 'static),
}

impl InternalEvent for GivenUpLost<'_> {
    fn emit(self, m: &Metrics) {
        tracing::error!(
            error = %super::Chain(self.error),
            seq = self.seq,
            deliveries = self.deliveries,
            "message abandoned: the server stopped delivering it and its stored copy could not be handled either; look it up in the input stream by its sequence"
        );
        m.counters.messages_abandoned.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_move_their_metrics() {
        let m = Metrics::detached();
        let c = &m.counters;
        ConfigRefused {
            error: &ConfigError {
                id: Some("x".into()),
                problems: vec!["bad".into()],
            },
        }
        .emit(&m);
        assert_eq!(c.configs_refused.load(Relaxed), 1);
        FeedStatusChanged {
            active: true,
            error: None,
        }
        .emit(&m);
        assert!(c.change_stream_active.load(Relaxed));
        FeedRestarted { how: "resumed" }.emit(&m);
        assert_eq!(c.change_stream_restarts.load(Relaxed), 1);
        DriftFound { drift: 0 }.emit(&m);
        assert_eq!(c.drift.load(Relaxed), 0);
        DriftFound { drift: 2 }.emit(&m);
        assert_eq!(c.drift.load(Relaxed), 2);
        CacheReloaded {
            configs: 3,
            changed: 0,
        }
        .emit(&m);
        assert_eq!(c.cache_size.load(Relaxed), 3);
        assert_eq!(c.cache_invalidations.load(Relaxed), 1);
        assert!(c.cache_age_seconds() < 5.0);
        GivenUpLost {
            seq: 7,
            deliveries: 20,
            error: &std::io::Error::other("down"),
        }
        .emit(&m);
        assert_eq!(c.messages_abandoned.load(Relaxed), 1);
    }
}
