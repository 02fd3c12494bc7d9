//! The miss path: when no cached config matches an event, read that container's configs
//! from the source once — however many events are waiting on it — merge the answer and
//! let every waiter match again.
//!
//! Storms of unmatched events must not become storms of database reads, so three things
//! bound the reads: concurrent misses on one container share one read (single flight);
//! an answer is remembered while the change feed is healthy, so later misses on the same
//! container cost nothing until a change to that container arrives; and a semaphore caps
//! how many containers are read at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::Semaphore;

use super::ConfigCache;
use crate::store::{ConfigStore, StoreError};
use crate::telemetry::events::{ForcedRead, InternalEvent, NegativeHit};
use crate::telemetry::Chain;

type SharedRead = Shared<BoxFuture<'static, Result<(), Arc<StoreError>>>>;

/// How a miss was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// A forced read (this caller's or a shared one) was merged; match again.
    Read,
    /// A previous read already answered and nothing changed since: no read was made.
    Remembered,
}

pub struct MissResolver {
    cache: Arc<ConfigCache>,
    source: Arc<dyn ConfigStore>,
    inflight: Arc<Mutex<HashMap<String, SharedRead>>>,
    permits: Arc<Semaphore>,
}

impl MissResolver {
    /// `max_concurrent_reads` bounds forced reads across all containers.
    pub fn new(
        cache: Arc<ConfigCache>,
        source: Arc<dyn ConfigStore>,
        max_concurrent_reads: usize,
    ) -> Self {
        Self {
            cache,
            source,
            inflight: Arc::new(Mutex::new(HashMap::new())),
            permits: Arc::new(Semaphore::new(max_concurrent_reads.max(1))),
        }
    }

    /// Settles a miss on `container`. After `Ok`, the cache holds the source's answer.
    pub async fn resolve(&self, container: &str) -> Result<Resolution, Arc<StoreError>> {
        if self.cache.is_negative(container) {
            NegativeHit.emit(self.cache.metrics());
            return Ok(Resolution::Remembered);
        }
        let read = {
            let mut inflight = self.inflight.lock().expect("inflight lock");
            match inflight.get(container) {
                Some(read) => read.clone(),
                None => {
                    let read = self.forced_read(container.to_string());
                    inflight.insert(container.to_string(), read.clone());
                    read
                }
            }
        };
        read.await.map(|()| Resolution::Read)
    }

    fn forced_read(&self, container: String) -> SharedRead {
        let cache = self.cache.clone();
        let source = self.source.clone();
        let inflight = self.inflight.clone();
        let permits = self.permits.clone();
        async move {
            let result: Result<(), Arc<StoreError>> = async {
                let _permit = permits.acquire().await.expect("semaphore never closed");
                let at = cache.generation(&container);
                ForcedRead {
                    container: &container,
                }
                .emit(cache.metrics());
                let docs = source.read_container(&container).await.map_err(Arc::new)?;
                let found = docs.len();
                let merged = cache.merge_container(&container, docs, at);
                tracing::debug!(%container, found, merged, "forced read answered");
                Ok(())
            }
            .await;
            if let Err(e) = &result {
                tracing::warn!(%container, error = %Chain(&**e), "forced read failed");
            }
            inflight.lock().expect("inflight lock").remove(&container);
            result
        }
        .boxed()
        .shared()
    }
}
