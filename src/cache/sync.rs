//! Keeps the cache following its source: applies the change feed, reloads when the feed
//! asks for it, resyncs on the TTL, and reopens a feed that ended.
//!
//! Everything that writes whole snapshots into the cache runs in this one task, in
//! order with the feed. A snapshot read takes time; changes that arrive meanwhile wait in
//! the feed's channel and are applied after the snapshot, so a resync can never undo a
//! newer change.

use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;
use tokio_util::sync::CancellationToken;

use super::ConfigCache;
use crate::store::{retry_policy, Change, ChangeFeed, ConfigStore, StoreError};
use crate::telemetry::events::{DriftFound, InternalEvent};
use crate::telemetry::Chain;

/// Opens the feed, then loads the snapshot into the cache: the startup order that leaves
/// no window for a missed change. Returns the feed for [`maintain`].
pub async fn warm(cache: &ConfigCache, source: &dyn ConfigStore) -> Result<ChangeFeed, StoreError> {
    let mut feed = source.watch().await?;
    let (n, _) = load(cache, source).await?;
    cache.set_feed_status(true, None);
    // Changes seen while the snapshot was read are applied before the worker is ready.
    while let Ok(change) = feed.try_recv() {
        match change {
            Change::Reload => {
                cache.apply(Change::Reload);
                load(cache, source).await?;
            }
            change => cache.apply(change),
        }
    }
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
    source: Arc<dyn ConfigStore>,
    mut feed: ChangeFeed,
    ttl: Duration,
    stop: CancellationToken,
) {
    // The resync runs on its own clock: a steady trickle of changes must not postpone it.
    let mut last_resync = tokio::time::Instant::now();
    loop {
        let active = cache.feed_active();
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
                    if !reload_until_ok(&cache, &*source, &stop).await {
                        return;
                    }
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
            _ = tokio::time::sleep_until(last_resync + period) => {
                reload(&cache, &*source, true).await;
                last_resync = tokio::time::Instant::now();
            }
        }
    }
}

/// Reads the whole store into the cache, one document at a time (see
/// [`ConfigStore::snapshot_each`]); nothing changes if the read fails. Returns the
/// documents read and the drift.
pub async fn load(
    cache: &ConfigCache,
    source: &dyn ConfigStore,
) -> Result<(usize, usize), StoreError> {
    let mut reload = cache.reload();
    source.snapshot_each(&mut |doc| reload.add(doc)).await?;
    let documents = reload.documents();
    Ok((documents, reload.finish()))
}

/// Full snapshot into the cache; on a TTL resync any difference is counted as drift.
async fn reload(cache: &ConfigCache, source: &dyn ConfigStore, resync: bool) {
    match load(cache, source).await {
        Ok((_, drift)) => {
            if resync {
                DriftFound { drift }.emit(cache.metrics());
            }
        }
        Err(e) => {
            tracing::warn!(error = %Chain(&e), "config reload failed; keeping the cache as it is")
        }
    }
}

/// Reopens the feed with backoff and jitter, then reloads (changes may have been missed).
async fn reopen(
    cache: &ConfigCache,
    source: &dyn ConfigStore,
    stop: &CancellationToken,
) -> Option<ChangeFeed> {
    let open = (|| source.watch())
        .retry(retry_policy())
        .sleep(tokio::time::sleep)
        .notify(|e, wait| tracing::warn!(error = %Chain(e), retry_in = ?wait, "reopening the change feed failed"));
    let feed = tokio::select! {
        _ = stop.cancelled() => return None,
        feed = open => feed.ok()?,
    };
    cache.feed_restarted("reopened");
    if !reload_until_ok(cache, source, stop).await {
        return None;
    }
    cache.set_feed_status(true, None);
    Some(feed)
}

/// A reload the feed depends on (it lost track of changes): retried with backoff until it
/// succeeds, the feed kept inactive meanwhile, so negative answers are not trusted and
/// every miss is a forced read. False when stopped first.
async fn reload_until_ok(
    cache: &ConfigCache,
    source: &dyn ConfigStore,
    stop: &CancellationToken,
) -> bool {
    let attempt = (|| load(cache, source))
        .retry(retry_policy())
        .sleep(tokio::time::sleep)
        .notify(|e, wait| {
            tracing::warn!(error = %Chain(e), retry_in = ?wait, "config reload failed; retrying");
            cache.set_feed_status(false, Some(format!("reload failed: {}", Chain(e))));
        });
    tokio::select! {
        _ = stop.cancelled() => false,
        loaded = attempt => match loaded {
            Ok((_, drift)) => {
                tracing::debug!(drift, "config cache reloaded");
                true
            }
            Err(_) => unreachable!("retried without limit"),
        },
    }
}

#[cfg(test)]
#[path = "tests/sync.rs"]
mod tests;
