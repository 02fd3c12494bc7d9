//! Config source backed by one JSON or YAML file (a list of config documents), watched
//! for changes; or the embedded default when no source is given.
//!
//! An edit is applied as per-document deltas against the last file that parsed, so the
//! cache re-validates only what changed. A file that does not parse (half-written, bad
//! YAML, duplicate `_id`) keeps the last good configs and is reported through
//! [`Change::Status`] until it is fixed. Editors that save by rename are handled by
//! watching the parent directory rather than the file itself.
//!
//! The store keeps little of the file: a fingerprint per document (enough to diff) and
//! the last good text (for forced reads while the file is broken), never the parsed
//! documents, which for 100,000 configs would take about 180 MB.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use foldhash::{HashSet, HashSetExt};
use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode, Watcher};
use serde::de::{Deserializer as _, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{landing_container, Change, ChangeFeed, ConfigStore, StoreError, StoredDoc};
use crate::config::stored_json;
use crate::telemetry::Chain;

/// The configs the worker runs with when neither `--configs` nor a database is given.
pub const EMBEDDED_CONFIGS: &str = include_str!("../../fixtures/configs.yaml");

/// Documents keyed by `_id` (or by position for documents without one).
type Docs = BTreeMap<String, Value>;

/// Each document's [`stored_fingerprint`], keyed like [`Docs`].
type Fingerprints = BTreeMap<String, u128>;

/// The file as the watcher last read it: the base of its next diff. Only the watcher
/// moves it (under the lock), so every edit is diffed against the content before it.
#[derive(Default)]
struct State {
    /// The documents of the last content that parsed: the base for deltas.
    base: Option<Fingerprints>,
    /// The last content that parsed: what a forced read answers from while the file is
    /// broken.
    last_good: Option<Arc<str>>,
    /// Hash of the last bytes read (good or not): unchanged bytes are not parsed again.
    hash: Option<u128>,
}

#[derive(Clone)]
enum Origin {
    Path(PathBuf),
    Embedded(&'static str),
}

pub struct FileStore {
    origin: Origin,
    /// What the watcher diffs against; shared with `snapshot`, which also moves it.
    state: Arc<Mutex<State>>,
    /// How long to wait for a writer to finish before reading the file: see [`DEBOUNCE`].
    debounce: Duration,
}

/// The wait between a change event and the read when the file was replaced (created,
/// renamed into place: editors, `kubectl`-mounted ConfigMaps, careful tools). Such a file
/// is complete at its first event; the short wait only gathers the events of one
/// replacement into one read, and keeps a change visible in about 20 ms
/// (`scripts/bench-change-visibility.sh`).
const DEBOUNCE: Duration = Duration::from_millis(15);
/// The wait when the file's data changed in place: a writer may still be writing, and a
/// half-written list can parse (a config cut before its `path_pattern` would match more
/// than it should), so give it time to finish.
const IN_PLACE_DEBOUNCE: Duration = Duration::from_millis(100);

impl FileStore {
    pub fn new(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Self::with_origin(Origin::Path(path))
    }

    /// The compiled-in default configs (`fixtures/configs.yaml`); never changes.
    pub fn embedded() -> Self {
        Self::with_origin(Origin::Embedded(EMBEDDED_CONFIGS))
    }

    fn with_origin(origin: Origin) -> Self {
        Self {
            origin,
            state: Arc::new(Mutex::new(State::default())),
            debounce: DEBOUNCE,
        }
    }
}

impl Origin {
    /// The documents as they are now.
    fn read(&self) -> Result<Docs, StoreError> {
        match self {
            Origin::Path(p) => read_docs(p),
            Origin::Embedded(text) => parse_docs(text, Kind::Yaml)
                .map_err(|e| StoreError::invalid("the embedded default configs", e)),
        }
    }
}

/// Why a config file's text is not a list of documents.
#[derive(Debug, thiserror::Error)]
enum ParseError {
    #[error("not valid JSON")]
    Json(#[from] serde_json::Error),
    #[error("not valid YAML")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("expected a list of config documents, found {0}")]
    NotAList(&'static str),
    #[error("duplicate _id `{id}` (entry {entry})")]
    DuplicateId { id: String, entry: usize },
}

#[derive(Clone, Copy)]
enum Kind {
    Json,
    Yaml,
}

fn kind_of(path: &Path) -> Kind {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Kind::Json,
        _ => Kind::Yaml,
    }
}

fn read_docs(path: &Path) -> Result<Docs, StoreError> {
    parse_path_text(path, &read_text(path)?)
}

fn parse_path_text(path: &Path, text: &str) -> Result<Docs, StoreError> {
    parse_docs(text, kind_of(path)).map_err(|e| StoreError::invalid(path.display().to_string(), e))
}

/// Re-reads the file for the watcher: `None` when its bytes did not change, else the
/// changes since the last good content (which it then becomes). Only the changed
/// documents are kept while reading.
fn refresh(path: &Path, state: &Mutex<State>) -> Result<Option<Vec<Change>>, StoreError> {
    let mut state = state.lock().expect("file state lock");
    let text = read_text(path)?;
    let hash = xxhash_rust::xxh3::xxh3_128(text.as_bytes());
    if state.hash == Some(hash) {
        return Ok(None);
    }
    state.hash = Some(hash);
    let empty = Fingerprints::new();
    let old = state.base.as_ref().unwrap_or(&empty);
    let mut changes = Vec::new();
    let mut base = Fingerprints::new();
    each_entry(&text, kind_of(path), |key, entry| {
        let fingerprint = entry.fingerprint();
        if old.get(&key) != Some(&fingerprint) {
            changes.push(Change::Upsert(entry.into_value()?));
        }
        base.insert(key, fingerprint);
        Ok(())
    })
    .map_err(|e| StoreError::invalid(path.display().to_string(), e))?;
    changes.extend(
        old.keys()
            .filter(|key| !base.contains_key(*key))
            .map(|key| Change::Delete(key.clone())),
    );
    state.base = Some(base);
    state.last_good = Some(text.into());
    Ok(Some(changes))
}

/// Reads the file as the watch opens: it becomes the base of the next diff.
fn prime(path: &Path, state: &Mutex<State>) -> Result<(), StoreError> {
    let mut state = state.lock().expect("file state lock");
    let text = read_text(path)?;
    state.hash = Some(xxhash_rust::xxh3::xxh3_128(text.as_bytes()));
    let mut base = Fingerprints::new();
    each_entry(&text, kind_of(path), |key, entry| {
        base.insert(key, entry.fingerprint());
        Ok(())
    })
    .map_err(|e| StoreError::invalid(path.display().to_string(), e))?;
    state.base = Some(base);
    state.last_good = Some(text.into());
    Ok(())
}

fn read_text(path: &Path) -> Result<String, StoreError> {
    std::fs::read_to_string(path)
        .map_err(|e| StoreError::unavailable(format!("reading {}", path.display()), e))
}

/// Parses a list of documents; a document without `_id` is kept (keyed by position) so
/// that the cache refuses it visibly instead of it vanishing here.
fn parse_docs(text: &str, kind: Kind) -> Result<Docs, ParseError> {
    let mut docs = Docs::new();
    each_doc(text, kind, |key, doc| {
        docs.insert(key, doc);
    })?;
    Ok(docs)
}

/// Hands each document of the list in `text` to `f` with its key (`_id`, or `#<n>` by
/// position) as it is parsed, without building the whole list: a file of 100,000
/// configs is never in memory as documents all at once. A duplicate key stops it.
fn each_doc(text: &str, kind: Kind, mut f: impl FnMut(String, Value)) -> Result<(), ParseError> {
    // Through the text, as the snapshot and the watcher read: one reading (and one
    // nesting limit) for every path.
    each_entry(text, kind, |key, entry| {
        f(key, entry.into_value()?);
        Ok(())
    })
}

/// [`each_doc`] with each document as a [`StoredDoc`]: in a JSON file it stays the
/// document's text, its `_id` and fingerprint read in one pass ([`stored_json`]), so the
/// watcher diffs and the snapshot hands over without deserializing any document that
/// did not change; a YAML document is a value. An error of `f` stops it.
fn each_entry<'a>(
    text: &'a str,
    kind: Kind,
    f: impl FnMut(String, StoredDoc<'a>) -> Result<(), ParseError>,
) -> Result<(), ParseError> {
    let mut visitor = EachDoc {
        f,
        text: matches!(kind, Kind::Json),
        seen: HashSet::new(),
        refusal: None,
    };
    let parsed = match kind {
        Kind::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            de.deserialize_any(&mut visitor)
                .and_then(|()| de.end())
                .map_err(ParseError::from)
        }
        Kind::Yaml => serde_yaml_ng::Deserializer::from_str(text)
            .deserialize_any(&mut visitor)
            .map_err(ParseError::from),
    };
    match visitor.refusal.take() {
        Some(refusal) => Err(refusal),
        None => parsed,
    }
}

/// The visitor behind [`each_entry`]; a refusal of its own (not a list, a duplicate, an
/// error of `f`) is kept here, since the deserializer's error could only carry it as text.
struct EachDoc<F> {
    f: F,
    /// Read documents as JSON text rather than values.
    text: bool,
    seen: HashSet<String>,
    refusal: Option<ParseError>,
}

impl<F> EachDoc<F> {
    fn refuse<E: serde::de::Error>(&mut self, refusal: ParseError) -> Result<(), E> {
        let message = refusal.to_string();
        self.refusal = Some(refusal);
        Err(E::custom(message))
    }
}

impl<'de, F: FnMut(String, StoredDoc<'de>) -> Result<(), ParseError>> Visitor<'de>
    for &mut EachDoc<F>
{
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of config documents")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut entry = 0;
        loop {
            let next = if self.text {
                match seq.next_element::<&'de RawValue>()? {
                    Some(raw) => Some(match stored_json(raw.get()) {
                        Ok(stored) => StoredDoc::from_json(raw, stored),
                        // Valid JSON that still fails to read (nested too deep, say):
                        // reading it as a value reports why.
                        Err(_) => StoredDoc::from_value(
                            serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?,
                        ),
                    }),
                    None => None,
                }
            } else {
                seq.next_element::<Value>()?.map(StoredDoc::from_value)
            };
            let Some(doc) = next else { break };
            entry += 1;
            let key = doc.id().map_or_else(|| format!("#{entry}"), str::to_string);
            if !self.seen.insert(key.clone()) {
                return self.refuse(ParseError::DuplicateId { id: key, entry });
            }
            if let Err(e) = (self.f)(key, doc) {
                return self.refuse(e);
            }
        }
        Ok(())
    }

    // An empty file (YAML) or `null`: no documents.
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.refuse(ParseError::NotAList("a mapping"))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.refuse(ParseError::NotAList("a string"))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.refuse(ParseError::NotAList("a boolean"))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.refuse(ParseError::NotAList("a number"))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.refuse(ParseError::NotAList("a number"))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.refuse(ParseError::NotAList("a number"))
    }
}

#[async_trait]
impl ConfigStore for FileStore {
    async fn watch(&self) -> Result<ChangeFeed, StoreError> {
        let (tx, rx) = mpsc::channel(1024);
        let path = match &self.origin {
            Origin::Embedded(_) => {
                // Nothing will ever change; keep the feed open (and healthy) until the
                // receiver goes away so the cache treats it as live.
                tokio::spawn(async move {
                    let _ = tx
                        .send(Change::Status {
                            active: true,
                            error: None,
                        })
                        .await;
                    tx.closed().await;
                });
                return Ok(rx);
            }
            Origin::Path(p) => p.clone(),
        };
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let (fs_tx, mut fs_rx) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |res| {
            let _ = fs_tx.send(res);
        })
        .map_err(|e| StoreError::unavailable(format!("watching {}", dir.display()), e))?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| StoreError::unavailable(format!("watching {}", dir.display()), e))?;

        // The watcher's base is the file as it is now that the OS watch is in place: any
        // later edit produces an event and is diffed against it.
        if let Err(e) = prime(&path, &self.state) {
            tracing::debug!(error = %Chain(&e), "config file unreadable when the watch opened");
        }
        let state = self.state.clone();
        let debounce = self.debounce;
        tokio::spawn(async move {
            let _watcher = watcher; // dropping it stops the OS watch
            let mut reported_error: Option<String> = None;
            loop {
                let event: notify::Result<notify::Event> = tokio::select! {
                    _ = tx.closed() => break,
                    ev = fs_rx.recv() => match ev { Some(ev) => ev, None => break },
                };
                let mut wait = debounce;
                match event {
                    // Our own reads open the file; reacting to that would loop forever.
                    Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => continue,
                    // Our file written in place: the writer may not be done.
                    Ok(ev)
                        if matches!(ev.kind, EventKind::Modify(ModifyKind::Data(_)))
                            && ev.paths.contains(&path) =>
                    {
                        wait = wait.max(IN_PLACE_DEBOUNCE);
                    }
                    // Anything else in the directory may be our file changing, directly,
                    // by rename, or by a symlink swap (Kubernetes ConfigMap volumes):
                    // re-read, and let the content hash tell whether it changed.
                    Ok(_) => {}
                    // Events may have been lost: re-read to catch up.
                    Err(e) => tracing::warn!(error = %e, "config file watch error; re-reading"),
                }
                // Let the writer finish, then take whatever piled up meanwhile as one edit.
                tokio::time::sleep(wait).await;
                while fs_rx.try_recv().is_ok() {}
                let changes = match refresh(&path, &state) {
                    Ok(None) => continue,
                    Ok(Some(mut changes)) => {
                        if reported_error.take().is_some() {
                            tracing::info!(path = %path.display(), "config file parses again");
                            changes.push(Change::Status {
                                active: true,
                                error: None,
                            });
                        }
                        changes
                    }
                    Err(e) => {
                        let msg = Chain(&e).to_string();
                        tracing::error!(error = %msg, "config file is broken; keeping the last good configs");
                        reported_error = Some(msg.clone());
                        vec![Change::Status {
                            active: true,
                            error: Some(msg),
                        }]
                    }
                };
                for change in changes {
                    if tx.send(change).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn snapshot(&self) -> Result<Vec<Value>, StoreError> {
        match &self.origin {
            Origin::Embedded(_) => Ok(self.origin.read()?.into_values().collect()),
            // Only reads: the watcher's base moves with the watcher alone, so a resync
            // can never make it skip an edit it has not sent yet.
            Origin::Path(path) => Ok(read_docs(path)?.into_values().collect()),
        }
    }

    async fn snapshot_each(
        &self,
        each: &mut (dyn for<'d> FnMut(StoredDoc<'d>) + Send),
    ) -> Result<(), StoreError> {
        let (text, kind, what) = match &self.origin {
            Origin::Embedded(text) => (
                std::borrow::Cow::Borrowed(*text),
                Kind::Yaml,
                "the embedded default configs".to_string(),
            ),
            Origin::Path(path) => (
                read_text(path)?.into(),
                kind_of(path),
                path.display().to_string(),
            ),
        };
        each_entry(&text, kind, |_, entry| {
            each(entry);
            Ok(())
        })
        .map_err(|e| StoreError::invalid(what, e))
    }

    async fn read_container(&self, container: &str) -> Result<Vec<Value>, StoreError> {
        // Read and parsed on the blocking pool: a large file takes a while, and the
        // worker's messages in flight are all polled by one task, which must not wait.
        let origin = self.origin.clone();
        let state = self.state.clone();
        let container = container.to_owned();
        tokio::task::spawn_blocking(move || {
            // The file as it is now; if it is broken, the last good content stands in.
            let docs = match origin.read() {
                Ok(docs) => docs,
                Err(e) => {
                    let last_good = state.lock().expect("file state lock").last_good.clone();
                    match (last_good, &origin) {
                        (Some(text), Origin::Path(path)) => parse_path_text(path, &text)?,
                        _ => return Err(e),
                    }
                }
            };
            Ok(docs
                .into_values()
                .filter(|d| landing_container(d) == Some(container.as_str()))
                .collect())
        })
        .await
        .map_err(|e| StoreError::unavailable("reading the config file", e))?
    }

    fn describe(&self) -> String {
        match &self.origin {
            Origin::Path(p) => format!("file:{}", p.display()),
            Origin::Embedded(_) => "embedded default configs".to_string(),
        }
    }
}

#[cfg(test)]
#[path = "tests/file.rs"]
mod tests;
