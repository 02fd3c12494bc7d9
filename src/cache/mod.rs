//! The source config cache: validated, compiled configs indexed by container.
//!
//! Readers call [`ConfigCache::load`] and get an immutable [`Index`] (an `ArcSwap`
//! snapshot): no lock on the per-event path. Writers (the change feed, the TTL resync,
//! forced reads) serialize on one mutex, apply a single document at a time, rebuild only
//! the affected container's entry and swap the new index in.
//!
//! A document that does not validate is refused: counted, logged and listed in
//! [`CacheHealth::refused`], and it replaces nothing half-way (a previously valid version
//! of it is removed, since the stored document is no longer that version).
//!
//! Each container carries a generation that moves on every change touching it. A forced
//! read remembers the generation it started at and merges its answer only if nothing
//! newer arrived meanwhile; its negative answer is remembered only while the change feed
//! is healthy, and forgotten on the next change to that container.

pub mod index;
pub mod miss;
pub mod sync;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::{ArcSwap, Guard};
// A fast hasher: a resync looks up every config by `_id`. Keys are config ids and
// container names (the negative answers hold containers named by events, but only after
// a bounded, coalesced forced read each); foldhash's per-process seed is enough there.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use serde::Serialize;
use serde_json::Value;

pub use index::Index;

use crate::config::{doc_id, parse_doc, ConfigError, SourceConfig};
use crate::store::{landing_container, Change, StoredDoc};
use crate::telemetry::events::{
    CacheChanged, CacheReloaded, ConfigRefused, FeedRestarted, FeedStatusChanged, InternalEvent,
};
use crate::telemetry::metrics::Metrics;

/// Where a container stood when a forced read of it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    epoch: u64,
    container: u64,
}

#[derive(Default)]
struct State {
    configs: HashMap<String, Arc<SourceConfig>>,
    /// The `configs` of each container (any order), so a change rebuilds its container's
    /// entry without scanning every config. Keys share the configs' container strings.
    by_container: HashMap<Arc<str>, Vec<Arc<SourceConfig>>>,
    refused: BTreeMap<String, ConfigError>,
    /// Bumped by every full reload; invalidates every container generation at once.
    epoch: u64,
    generations: HashMap<String, u64>,
    last_change_at: Option<SystemTime>,
    last_full_load: Option<SystemTime>,
    source_error: Option<String>,
    /// Whether the change feed is healthy: while it is not, changes may be missed, so
    /// negative answers are not trusted and the resync runs more often.
    feed_active: bool,
    /// Times the feed was resumed or restarted since the process started.
    feed_restarts: u64,
    /// Moves on every change to `configs`: a reload that saw only unchanged documents
    /// and finds it where it started knows it changes nothing.
    revision: u64,
}

/// What [`State::compile`] made of a stored document.
enum Compiled {
    /// The document the cache already holds: its compiled config, unchanged.
    Unchanged(Arc<SourceConfig>),
    /// A new or changed document, compiled or refused.
    New(Result<SourceConfig, ConfigError>),
}

impl State {
    /// Compiles `doc` unless the cache holds that very document:
    /// the same stored form is recognised by its stored fingerprint without being
    /// deserialized (the TTL resync's common case), another form of the same document
    /// (`$oid` against a hex string, say) by the fingerprint of what it parses to.
    fn compile(&self, doc: &StoredDoc<'_>, routed_prefix: &str) -> Compiled {
        let existing = doc.id().and_then(|id| self.configs.get(id));
        let stored = doc.fingerprint();
        if let Some(existing) = existing.filter(|c| c.stored_fingerprint == Some(stored)) {
            return Compiled::Unchanged(existing.clone());
        }
        let value = match doc.value() {
            Ok(value) => value,
            Err(e) => {
                return Compiled::New(Err(ConfigError {
                    id: doc.id().map(str::to_string),
                    problems: vec![format!("document does not parse: {e}")],
                }))
            }
        };
        let parsed = match parse_doc(&value) {
            Ok(parsed) => parsed,
            Err(err) => return Compiled::New(Err(err)),
        };
        let fingerprint = parsed.fingerprint();
        if let Some(existing) = self
            .configs
            .get(&parsed.id)
            .filter(|c| c.fingerprint == fingerprint)
        {
            return Compiled::Unchanged(existing.clone());
        }
        Compiled::New(
            SourceConfig::from_doc(parsed, routed_prefix).map(|mut config| {
                config.stored_fingerprint = Some(stored);
                config
            }),
        )
    }

    fn generation(&self, container: &str) -> Generation {
        Generation {
            epoch: self.epoch,
            container: self.generations.get(container).copied().unwrap_or(0),
        }
    }

    fn touch(&mut self, container: &str) {
        *self.generations.entry(container.to_string()).or_default() += 1;
    }

    fn container_configs<'a>(
        &'a self,
        container: &'a str,
    ) -> impl Iterator<Item = &'a Arc<SourceConfig>> {
        self.by_container.get(container).into_iter().flatten()
    }

    /// Inserts or replaces a config; returns the one it replaced.
    fn insert(&mut self, config: Arc<SourceConfig>) -> Option<Arc<SourceConfig>> {
        self.revision += 1;
        let old = self.configs.insert(config.id.clone(), config.clone());
        if let Some(old) = &old {
            self.unlist(old);
        }
        self.by_container
            .entry(config.container.clone())
            .or_default()
            .push(config);
        old
    }

    /// Removes a config; returns it.
    fn remove(&mut self, id: &str) -> Option<Arc<SourceConfig>> {
        let old = self.configs.remove(id)?;
        self.revision += 1;
        self.unlist(&old);
        Some(old)
    }

    fn unlist(&mut self, config: &SourceConfig) {
        if let Some(ids) = self.by_container.get_mut(&config.container) {
            ids.retain(|c| c.id != config.id);
            if ids.is_empty() {
                self.by_container.remove(&config.container);
            }
        }
    }

    /// Replaces every config at once.
    fn replace_all(&mut self, configs: HashMap<String, Arc<SourceConfig>>) {
        self.revision += 1;
        let mut by_container: HashMap<Arc<str>, Vec<Arc<SourceConfig>>> = HashMap::new();
        for c in configs.values() {
            by_container
                .entry(c.container.clone())
                .or_default()
                .push(c.clone());
        }
        self.configs = configs;
        self.by_container = by_container;
    }
}

/// What `/health/cache` shows about the cache.
#[derive(Debug, Clone, Serialize)]
pub struct CacheHealth {
    pub cache_size: usize,
    pub containers: usize,
    pub cache_age_seconds: f64,
    pub change_stream_active: bool,
    /// Times the change feed was resumed or restarted since the process started.
    pub change_stream_restarts: u64,
    pub last_change_at: Option<String>,
    pub last_full_load_at: Option<String>,
    pub refused: Vec<ConfigError>,
    pub source_error: Option<String>,
    pub negative_containers: usize,
}

pub struct ConfigCache {
    index: ArcSwap<Index>,
    state: Mutex<State>,
    /// Containers whose forced read already answered; read lock-free on the miss path,
    /// written only under the state lock.
    negative: ArcSwap<HashSet<String>>,
    metrics: Arc<Metrics>,
    routed_prefix: String,
}

impl ConfigCache {
    /// An empty cache; `routed_prefix` gives configs without `route.subject` their
    /// default subject `<routed_prefix>.<_id>`.
    pub fn new(metrics: Arc<Metrics>, routed_prefix: impl Into<String>) -> Self {
        Self {
            index: ArcSwap::from_pointee(Index::default()),
            state: Mutex::new(State::default()),
            negative: ArcSwap::from_pointee(HashSet::new()),
            metrics,
            routed_prefix: routed_prefix.into(),
        }
    }

    /// The current index; cheap, lock-free, consistent for as long as it is held.
    pub fn load(&self) -> Guard<Arc<Index>> {
        self.index.load()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Applies one change-feed item. `Reload` is the caller's to handle (it needs the
    /// source); here it only marks the feed as having restarted.
    pub fn apply(&self, change: Change) {
        match change {
            Change::Upsert(doc) => self.upsert(&doc),
            Change::Delete(id) => self.delete(&id),
            Change::Reload => self.feed_restarted("reloaded"),
            Change::Resumed => {
                self.feed_restarted("resumed");
                self.set_feed_status(true, None);
            }
            Change::Status { active, error } => self.set_feed_status(active, error),
        }
    }

    /// Counts a resume, reopen or reload of the change feed.
    pub fn feed_restarted(&self, how: &'static str) {
        self.state.lock().expect("cache state lock").feed_restarts += 1;
        FeedRestarted { how }.emit(&self.metrics);
    }

    /// Whether the change feed is healthy (changes are being followed).
    pub fn feed_active(&self) -> bool {
        self.state.lock().expect("cache state lock").feed_active
    }

    /// Inserts or replaces one config from its full document.
    pub fn upsert(&self, doc: &Value) {
        let mut state = self.state.lock().expect("cache state lock");
        let touched = self.upsert_locked(&mut state, &StoredDoc::borrowed(doc));
        if !touched.is_empty() {
            self.changed(&mut state, touched);
        }
    }

    /// Applies one document; returns the containers whose entries must be rebuilt.
    fn upsert_locked(&self, state: &mut State, doc: &StoredDoc<'_>) -> Vec<Arc<str>> {
        // Compiled once per version: an identical document keeps its compiled config.
        let compiled = match state.compile(doc, &self.routed_prefix) {
            Compiled::Unchanged(_) => return Vec::new(),
            Compiled::New(result) => result,
        };
        let id = doc.id();
        let refused_key = id.unwrap_or("<no _id>").to_string();
        let mut touched: Vec<Arc<str>> = Vec::new();
        match compiled {
            Ok(config) => {
                state.refused.remove(&config.id);
                let config = Arc::new(config);
                if let Some(old) = state.insert(config.clone()) {
                    touched.push(old.container.clone());
                }
                touched.push(config.container.clone());
                tracing::debug!(id = %config.id, version = config.version, container = %config.container, "config applied");
            }
            Err(err) => {
                ConfigRefused { error: &err }.emit(&self.metrics);
                if let Some(old) = id.and_then(|id| state.remove(id)) {
                    touched.push(old.container.clone());
                }
                if let Some(c) = doc.value().ok().as_deref().and_then(landing_container) {
                    touched.push(c.into());
                }
                state.refused.insert(refused_key, err);
            }
        }
        touched
    }

    /// Removes one config (and any refusal recorded for it).
    pub fn delete(&self, id: &str) {
        let mut state = self.state.lock().expect("cache state lock");
        state.refused.remove(id);
        if let Some(old) = state.remove(id) {
            self.changed(&mut state, vec![old.container.clone()]);
        }
    }

    /// Replaces everything with `docs` (startup load, reload, TTL resync). Returns the
    /// number of configs that differed from what the cache held (the drift).
    pub fn reset(&self, docs: Vec<Value>) -> usize {
        let mut reload = self.reload();
        docs.iter()
            .for_each(|doc| reload.add(StoredDoc::borrowed(doc)));
        reload.finish()
    }

    /// Starts a full reload that takes documents one at a time (see
    /// [`crate::store::ConfigStore::snapshot_each`]); the cache changes only at
    /// [`Reload::finish`], and not at all if the reload is dropped instead.
    pub fn reload(&self) -> Reload<'_> {
        let state = self.state.lock().expect("cache state lock");
        Reload {
            cache: self,
            // Sized for the usual answer: about as many configs as now.
            next: Vec::with_capacity(state.configs.len()),
            all_unchanged: true,
            kept: HashSet::with_capacity(state.configs.len()),
            revision: state.revision,
            refused: BTreeMap::new(),
            documents: 0,
        }
    }

    /// Where `container` stands now; pass it back to [`Self::merge_container`].
    pub fn generation(&self, container: &str) -> Generation {
        self.state
            .lock()
            .expect("cache state lock")
            .generation(container)
    }

    /// Merges the answer of a forced read of `container` (every document the source
    /// has for it) begun at `at`. Skipped if a newer change to the container arrived
    /// meanwhile. Returns whether it was merged.
    pub fn merge_container(&self, container: &str, docs: Vec<Value>, at: Generation) -> bool {
        let mut state = self.state.lock().expect("cache state lock");
        if state.generation(container) != at {
            return false;
        }
        let ids: HashSet<String> = docs.iter().filter_map(doc_id).collect();
        let stale: Vec<String> = state
            .container_configs(container)
            .filter(|c| !ids.contains(&c.id))
            .map(|c| c.id.clone())
            .collect();
        let mut touched = Vec::new();
        for id in stale {
            state.remove(&id);
            touched.push(container.into());
        }
        for doc in &docs {
            touched.extend(self.upsert_locked(&mut state, &StoredDoc::borrowed(doc)));
        }
        if !touched.is_empty() {
            // The source knew something the cache did not.
            self.changed(&mut state, touched);
        }
        // Nothing newer can slip in between: we still hold the state lock.
        if state.feed_active {
            self.update_negative(|n| {
                n.insert(container.to_string());
            });
        }
        true
    }

    /// Whether a forced read of `container` already answered and nothing changed since.
    pub fn is_negative(&self, container: &str) -> bool {
        self.negative.load().contains(container)
    }

    /// Records the feed's health; negative answers are trusted only while it is active.
    pub fn set_feed_status(&self, active: bool, error: Option<String>) {
        let mut state = self.state.lock().expect("cache state lock");
        let was = std::mem::replace(&mut state.feed_active, active);
        if !active {
            self.negative.store(Arc::new(HashSet::new()));
        }
        if was != active {
            FeedStatusChanged {
                active,
                error: error.as_deref(),
            }
            .emit(&self.metrics);
        }
        state.source_error = error;
    }

    pub fn health(&self) -> CacheHealth {
        let state = self.state.lock().expect("cache state lock");
        CacheHealth {
            cache_size: state.configs.len(),
            containers: self.index.load().container_count(),
            cache_age_seconds: state
                .last_full_load
                .and_then(|t| t.elapsed().ok())
                .map_or(0.0, |d| d.as_secs_f64()),
            change_stream_active: state.feed_active,
            change_stream_restarts: state.feed_restarts,
            last_change_at: state
                .last_change_at
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
            last_full_load_at: state
                .last_full_load
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
            refused: state.refused.values().cloned().collect(),
            source_error: state.source_error.clone(),
            negative_containers: self.negative.load().len(),
        }
    }

    /// Bookkeeping after a per-document change to `containers`.
    fn changed(&self, state: &mut State, mut containers: Vec<Arc<str>>) {
        containers.sort_unstable();
        containers.dedup();
        let mut index = (**self.index.load()).clone();
        for c in &containers {
            state.touch(c);
            index.set(c, state.container_configs(c));
        }
        self.index.store(Arc::new(index));
        self.update_negative(|n| {
            for c in &containers {
                n.remove(&**c);
            }
        });
        state.last_change_at = Some(SystemTime::now());
        CacheChanged {
            configs: state.configs.len(),
            containers: containers.len(),
        }
        .emit(&self.metrics);
    }

    /// Copy-on-write update of the remembered answers; callers hold the state lock.
    fn update_negative(&self, f: impl FnOnce(&mut HashSet<String>)) {
        let mut next = (**self.negative.load()).clone();
        f(&mut next);
        self.negative.store(Arc::new(next));
    }
}

/// A full reload in progress: [`ConfigCache::reload`].
pub struct Reload<'c> {
    cache: &'c ConfigCache,
    /// The new content, in the order read (a later document with the same `_id` wins).
    next: Vec<Arc<SourceConfig>>,
    /// Every document so far was one the cache holds, unchanged, and none came twice.
    all_unchanged: bool,
    /// The addresses of the configs kept unchanged so far (while `all_unchanged`), to
    /// spot a repeat.
    kept: HashSet<usize>,
    /// The cache's [`State::revision`] when the reload began.
    revision: u64,
    refused: BTreeMap<String, ConfigError>,
    documents: usize,
}

impl Reload<'_> {
    /// Validates and compiles one document of the new content, unless the cache holds
    /// it unchanged already (then its compiled config is kept).
    pub fn add(&mut self, doc: StoredDoc<'_>) {
        self.documents += 1;
        let cache = self.cache;
        let state = cache.state.lock().expect("cache state lock");
        let compiled = match state.compile(&doc, &cache.routed_prefix) {
            // Unchanged: keep the compiled config (and count no drift).
            Compiled::Unchanged(existing) => {
                if self.all_unchanged && !self.kept.insert(Arc::as_ptr(&existing) as usize) {
                    self.all_unchanged = false;
                }
                self.next.push(existing);
                return;
            }
            Compiled::New(result) => result,
        };
        self.all_unchanged = false;
        match compiled {
            Ok(c) => self.next.push(Arc::new(c)),
            Err(err) => {
                let key = doc.id().unwrap_or("<no _id>");
                if !state.refused.get(key).is_some_and(|e| *e == err) {
                    ConfigRefused { error: &err }.emit(&cache.metrics);
                }
                self.refused.insert(key.to_string(), err);
            }
        }
    }

    /// Documents added so far.
    pub fn documents(&self) -> usize {
        self.documents
    }

    /// Makes the added documents the cache's whole content. Returns the number of
    /// configs that differed from what the cache held (the drift).
    pub fn finish(self) -> usize {
        let Reload {
            cache,
            next,
            all_unchanged,
            revision,
            refused,
            ..
        } = self;
        let mut state = cache.state.lock().expect("cache state lock");
        // The TTL resync's usual answer, told without a lookup by `_id`: every document
        // was one the cache holds, unchanged, none came twice, the cache did not move
        // meanwhile, and the counts agree (so none is gone).
        let drift =
            if all_unchanged && revision == state.revision && next.len() == state.configs.len() {
                0
            } else {
                let next: HashMap<String, Arc<SourceConfig>> =
                    next.into_iter().map(|c| (c.id.clone(), c)).collect();
                let drift = next
                    .iter()
                    .filter(|(id, c)| {
                        !state
                            .configs
                            .get(*id)
                            .is_some_and(|old| Arc::ptr_eq(old, c))
                    })
                    .count()
                    + state
                        .configs
                        .keys()
                        .filter(|id| !next.contains_key(*id))
                        .count();
                if drift > 0 {
                    state.replace_all(next);
                }
                drift
            };
        // Unchanged: the configs, and so the index, stay.
        if drift > 0 {
            cache
                .index
                .store(Arc::new(Index::build(state.configs.values())));
        }
        state.refused = refused;
        state.epoch += 1;
        state.generations.clear();
        let now = SystemTime::now();
        state.last_full_load = Some(now);
        if drift > 0 {
            state.last_change_at = Some(now);
        }
        cache.negative.store(Arc::new(HashSet::new()));
        CacheReloaded {
            configs: state.configs.len(),
            changed: drift,
        }
        .emit(&cache.metrics);
        drift
    }
}

#[cfg(test)]
mod tests;
