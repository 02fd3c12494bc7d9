//! Keeps the cache following its source: applies the change feed, reloads when the feed
//! asks for it, resyncs on the TTL, and reopens a feed that ended.
//!
//! Everything that writes whole snapshots into the cache runs in this one task, in
//! order with the feed. A snapshot read takes time; changes that arrive meanwhile wait in
//! the feed's channel and are applied after the snapshot, so a resync can never undo a
//! newer change.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;

use super::ConfigCache;
use crate::source::{Change, ChangeFeed, ConfigSource, SourceError};

/// Opens the feed, then loads the snapshot into the cache: the startup order that leaves
/// no window for a missed change. Returns the feed for [`maintain`].
pub async fn warm(
    cache: &ConfigCache,
    source: &dyn ConfigSource,
) -> Result<ChangeFeed, SourceError> {
    let feed = source.watch().await?;
    let docs = source.snapshot().await?;
    let n = docs.len();
    cache.reset(docs);
    cache.set_feed_status(true, None);
    let health = cache.health();
    tracing::info!(
        source = %source.describe(),
        documents = n,
        configs = health.cache_size,
        refused = health.refused.len(),
        "config cache warmed"
    );
    Ok(feed)
}

/// Runs until `stop`: applies changes, reloads, and resyncs every `ttl` (more often
/// while the feed is down, since changes may then be missed).
pub async fn maintain(
    cache: Arc<ConfigCache>,
    source: Arc<dyn ConfigSource>,
    mut feed: ChangeFeed,
    ttl: Duration,
    stop: CancellationToken,
) {
    let counters = cache.metrics().counters.clone();
    loop {
        let active = counters.change_stream_active.load(Relaxed);
        let period = if active {
            ttl
        } else {
            (ttl / 5).clamp(Duration::from_secs(1), ttl)
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            change = feed.recv() => match change {
                Some(Change::Reload) => {
                    cache.apply(Change::Reload);
                    reload(&cache, &*source, false).await;
                }
                Some(change) => cache.apply(change),
                None => {
                    tracing::warn!(source = %source.describe(), "config change feed ended; reopening");
                    cache.set_feed_status(false, Some("change feed ended".into()));
                    match reopen(&cache, &*source, &stop).await {
                        Some(f) => feed = f,
                        None => return,
                    }
                }
            },
            _ = tokio::time::sleep(period) => reload(&cache, &*source, true).await,
        }
    }
}

/// Full snapshot into the cache; on a TTL resync any difference is counted as drift.
async fn reload(cache: &ConfigCache, source: &dyn ConfigSource, resync: bool) {
    match source.snapshot().await {
        Ok(docs) => {
            let drift = cache.reset(docs);
            if resync && drift > 0 {
                cache
                    .metrics()
                    .counters
                    .drift
                    .fetch_add(drift as u64, Relaxed);
                tracing::warn!(
                    drift,
                    "TTL resync found configs the change feed had not delivered"
                );
            } else {
                tracing::debug!(drift, resync, "config cache reloaded");
            }
        }
        Err(e) => tracing::warn!(error = %e, "config reload failed; keeping the cache as it is"),
    }
}

/// Reopens the feed with backoff and jitter, then reloads (changes may have been missed).
async fn reopen(
    cache: &ConfigCache,
    source: &dyn ConfigSource,
    stop: &CancellationToken,
) -> Option<ChangeFeed> {
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times();
    let open = (|| source.watch())
        .retry(policy)
        .sleep(tokio::time::sleep)
        .notify(|e, wait| tracing::warn!(error = %e, retry_in = ?wait, "reopening the change feed failed"));
    let feed = tokio::select! {
        _ = stop.cancelled() => return None,
        feed = open => feed.ok()?,
    };
    cache
        .metrics()
        .counters
        .change_stream_restarts
        .fetch_add(1, Relaxed);
    reload(cache, source, false).await;
    cache.set_feed_status(true, None);
    Some(feed)
}
