//! Config source backed by one JSON or YAML file (a list of config documents), watched
//! for changes; or the embedded default when no source is given.
//!
//! An edit is applied as per-document deltas against the last file that parsed, so the
//! cache re-validates only what changed. A file that does not parse (half-written, bad
//! YAML, duplicate `_id`) keeps the last good configs and is reported through
//! [`Change::Status`] until it is fixed. Editors that save by rename are handled by
//! watching the parent directory rather than the file itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{landing_container, Change, ChangeFeed, ConfigSource, SourceError};
use crate::config::doc_id;

/// The configs the worker runs with when neither `--configs` nor a database is given.
pub const EMBEDDED_CONFIGS: &str = include_str!("../../fixtures/configs.yaml");

/// Documents keyed by `_id` (or by position for documents without one).
type Docs = BTreeMap<String, Value>;

enum Origin {
    Path(PathBuf),
    Embedded(&'static str),
}

pub struct FileSource {
    origin: Origin,
    /// The last content that parsed: the base for deltas and the fallback when broken.
    last_good: Arc<Mutex<Option<Docs>>>,
    /// How long to wait for an editor to finish writing before reading the file.
    debounce: Duration,
}

impl FileSource {
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
            last_good: Arc::new(Mutex::new(None)),
            debounce: Duration::from_millis(100),
        }
    }

    fn read(&self) -> Result<Docs, SourceError> {
        match &self.origin {
            Origin::Path(p) => read_docs(p),
            Origin::Embedded(text) => parse_docs(text, Kind::Yaml),
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Json,
    Yaml,
}

fn read_docs(path: &Path) -> Result<Docs, SourceError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SourceError::Unavailable(format!("reading {}: {e}", path.display())))?;
    let kind = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Kind::Json,
        _ => Kind::Yaml,
    };
    parse_docs(&text, kind)
        .map_err(|e| SourceError::Invalid(format!("{}: {}", path.display(), inner(&e))))
}

fn inner(e: &SourceError) -> &str {
    match e {
        SourceError::Unavailable(m) | SourceError::Invalid(m) => m,
    }
}

/// Parses a list of documents; a document without `_id` is kept (keyed by position) so
/// that the cache refuses it visibly instead of it vanishing here.
fn parse_docs(text: &str, kind: Kind) -> Result<Docs, SourceError> {
    let value: Value = match kind {
        Kind::Json => serde_json::from_str(text).map_err(|e| SourceError::Invalid(e.to_string())),
        Kind::Yaml => {
            serde_yaml_ng::from_str(text).map_err(|e| SourceError::Invalid(e.to_string()))
        }
    }?;
    let list = match value {
        Value::Array(list) => list,
        Value::Null => Vec::new(),
        other => {
            return Err(SourceError::Invalid(format!(
                "expected a list of config documents, found {}",
                json_kind(&other)
            )))
        }
    };
    let mut docs = Docs::new();
    for (i, doc) in list.into_iter().enumerate() {
        let key = doc_id(&doc).unwrap_or_else(|| format!("#{}", i + 1));
        if docs.insert(key.clone(), doc).is_some() {
            return Err(SourceError::Invalid(format!(
                "duplicate _id `{key}` (entry {})",
                i + 1
            )));
        }
    }
    Ok(docs)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The changes that turn `old` into `new`.
fn diff(old: &Docs, new: &Docs) -> Vec<Change> {
    let mut changes = Vec::new();
    for (key, doc) in new {
        if old.get(key) != Some(doc) {
            changes.push(Change::Upsert(doc.clone()));
        }
    }
    for key in old.keys() {
        if !new.contains_key(key) {
            changes.push(Change::Delete(key.clone()));
        }
    }
    changes
}

#[async_trait]
impl ConfigSource for FileSource {
    async fn watch(&self) -> Result<ChangeFeed, SourceError> {
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
        let name = path.file_name().map(|n| n.to_os_string());
        let (fs_tx, mut fs_rx) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |res| {
            let _ = fs_tx.send(res);
        })
        .map_err(|e| SourceError::Unavailable(format!("watching {}: {e}", dir.display())))?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| SourceError::Unavailable(format!("watching {}: {e}", dir.display())))?;

        let last_good = self.last_good.clone();
        let debounce = self.debounce;
        tokio::spawn(async move {
            let _watcher = watcher; // dropping it stops the OS watch
            let mut reported_error: Option<String> = None;
            loop {
                let event: notify::Result<notify::Event> = tokio::select! {
                    _ = tx.closed() => break,
                    ev = fs_rx.recv() => match ev { Some(ev) => ev, None => break },
                };
                match event {
                    Ok(ev) if ev.paths.iter().any(|p| p.file_name() == name.as_deref()) => {}
                    Ok(_) => continue,
                    Err(e) => {
                        let msg = format!("file watch error: {e}");
                        tracing::warn!(error = %msg, "config file watch failed");
                        if tx
                            .send(Change::Status {
                                active: false,
                                error: Some(msg),
                            })
                            .await
                            .is_err()
                        {
                            break;
                        }
                        continue;
                    }
                }
                // Let the writer finish, then take whatever piled up meanwhile as one edit.
                tokio::time::sleep(debounce).await;
                while fs_rx.try_recv().is_ok() {}
                let changes = match read_docs(&path) {
                    Ok(docs) => {
                        let mut guard = last_good.lock().expect("last_good lock");
                        let changes = diff(guard.as_ref().unwrap_or(&Docs::new()), &docs);
                        *guard = Some(docs);
                        drop(guard);
                        let mut changes = changes;
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
                        let msg = e.to_string();
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

    async fn snapshot(&self) -> Result<Vec<Value>, SourceError> {
        let docs = self.read()?;
        let list = docs.values().cloned().collect();
        *self.last_good.lock().expect("last_good lock") = Some(docs);
        Ok(list)
    }

    async fn read_container(&self, container: &str) -> Result<Vec<Value>, SourceError> {
        // The file as it is now; if it is broken, the last good content stands in.
        let docs = match self.read() {
            Ok(docs) => docs,
            Err(e) => match self.last_good.lock().expect("last_good lock").clone() {
                Some(docs) => docs,
                None => return Err(e),
            },
        };
        Ok(docs
            .into_values()
            .filter(|d| landing_container(d) == Some(container))
            .collect())
    }

    fn describe(&self) -> String {
        match &self.origin {
            Origin::Path(p) => format!("file:{}", p.display()),
            Origin::Embedded(_) => "embedded default configs".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_and_json_lists_parse_to_the_same_documents() {
        let yaml = "- _id: a\n  ingestion: {mode: blob_trigger, landing_container: c}\n";
        let json = r#"[{"_id":"a","ingestion":{"mode":"blob_trigger","landing_container":"c"}}]"#;
        assert_eq!(
            parse_docs(yaml, Kind::Yaml).unwrap(),
            parse_docs(json, Kind::Json).unwrap()
        );
    }

    #[test]
    fn duplicate_ids_and_non_lists_are_refused_with_a_reason() {
        let err = parse_docs("- {_id: a}\n- {_id: a}\n", Kind::Yaml).unwrap_err();
        assert!(err.to_string().contains("duplicate _id `a`"), "{err}");
        let err = parse_docs("{_id: a}", Kind::Yaml).unwrap_err();
        assert!(err.to_string().contains("expected a list"), "{err}");
        assert!(parse_docs("[", Kind::Json).is_err());
    }

    #[test]
    fn documents_without_id_are_kept_for_the_cache_to_refuse() {
        let docs = parse_docs("- {enabled: true}\n", Kind::Yaml).unwrap();
        assert_eq!(docs.keys().collect::<Vec<_>>(), vec!["#1"]);
    }

    #[test]
    fn diff_yields_upserts_for_new_and_changed_and_deletes_for_removed() {
        let old: Docs = [
            ("a".into(), json!({"_id":"a","v":1})),
            ("b".into(), json!({"_id":"b"})),
        ]
        .into_iter()
        .collect();
        let new: Docs = [
            ("a".into(), json!({"_id":"a","v":2})),
            ("c".into(), json!({"_id":"c"})),
        ]
        .into_iter()
        .collect();
        let changes = diff(&old, &new);
        assert_eq!(
            changes,
            vec![
                Change::Upsert(json!({"_id":"a","v":2})),
                Change::Upsert(json!({"_id":"c"})),
                Change::Delete("b".into()),
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn embedded_default_parses() {
        let docs = parse_docs(EMBEDDED_CONFIGS, Kind::Yaml).unwrap();
        assert!(!docs.is_empty());
    }
}
