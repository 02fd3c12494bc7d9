//! Source configs: which blobs a source owns and where the router publishes them.
//!
//! A config document (stored in MongoDB `source_configs`, or in a YAML/JSON file) is
//! deserialized into [`SourceConfigDoc`], then validated and compiled once per version
//! into a [`SourceConfig`] that the router shares by reference. Validation collects every
//! problem in a document, so an operator fixing a refused config sees them all at once
//! (in logs and `/health/cache`) instead of one per deploy.

mod extjson;
mod fingerprint;
mod intern;
mod pattern;

pub use extjson::doc_id;
pub use fingerprint::{stored_fingerprint, stored_json, StoredJson};
pub use pattern::{PathPattern, PatternError};

use std::cmp::Ordering;
use std::collections::HashSet;
use std::hash::Hash;
use std::ops::Range;
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use xxhash_rust::xxh3::Xxh3Default;

use crate::subject;

/// The ingestion mode the router matches blob-created events against.
pub const BLOB_TRIGGER_MODE: &str = "blob_trigger";

/// The document as stored (serde model; Serialize too, for export).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceConfigDoc {
    /// Unique id; also the last token of the default route subject.
    #[serde(rename = "_id")]
    pub id: String,
    /// Disabled configs are kept but not matched. Default `true`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Higher priority wins among configs of one container. Default 0.
    #[serde(default)]
    pub priority: i64,
    /// Where the blobs land and which of them this config owns.
    pub ingestion: Ingestion,
    /// Where matched blobs are published; absent means the default subject.
    #[serde(default)]
    pub route: Option<Route>,
    /// Document version, bumped on every change. Default 0.
    #[serde(default)]
    pub version: i64,
    /// Last change time, as stored (informational).
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// The `ingestion` section of a [`SourceConfigDoc`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ingestion {
    /// How blobs arrive; only `blob_trigger` configs are matched by the router.
    #[serde(default)]
    pub mode: String,
    /// The container blobs land in.
    #[serde(default)]
    pub landing_container: String,
    /// Storage account, when not the default one.
    #[serde(default)]
    pub account: Option<String>,
    /// Which paths of the container this config owns; absent means all of them.
    #[serde(default)]
    pub path_pattern: Option<PathPatternDoc>,
    /// Format of the blobs (informational, e.g. `json`).
    #[serde(default)]
    pub file_format: Option<String>,
}

/// The `ingestion.path_pattern` section of a [`SourceConfigDoc`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PathPatternDoc {
    /// Pattern source text; see [`PathPattern`] for the language.
    #[serde(default)]
    pub pattern: String,
    /// Captures to extract, in output order; empty means every capture.
    #[serde(default, deserialize_with = "null_as_default")]
    pub extract_fields: Vec<String>,
}

/// The `route` section of a [`SourceConfigDoc`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    /// NATS subject to publish to; absent means `<routed_prefix>.<_id>`.
    #[serde(default)]
    pub subject: Option<String>,
}

/// A validated, compiled config: built once per config version, shared by reference.
#[derive(Debug)]
pub struct SourceConfig {
    /// The document's `_id`.
    pub id: String,
    /// The document's `version`.
    pub version: i64,
    /// Whether the config is enabled.
    pub enabled: bool,
    /// Candidate priority within a container (higher first).
    pub priority: i64,
    /// `ingestion.mode == "blob_trigger"`: whether the router matches this config at all.
    pub blob_trigger: bool,
    /// The landing container (one shared string for all configs of a container).
    pub container: Arc<str>,
    /// The storage account, if not the default one.
    pub account: Option<String>,
    /// The compiled path pattern, shared by every config with the same pattern text;
    /// `None` matches every path.
    pub pattern: Option<Arc<PathPattern>>,
    /// Resolved: the explicit list, or all captures when the list was empty (shared by
    /// every config with the same list).
    pub extract_fields: Arc<[String]>,
    /// `extract_fields` are the pattern's captures in their order (the default, and the
    /// usual explicit list): field `i` is capture `i`, with no names to compare for each
    /// routed event. Beside the other flags, it takes no room of its own.
    fields_are_captures: bool,
    /// Resolved route subject.
    pub subject: String,
    /// [`SourceConfigDoc::fingerprint`] of the document it was built from: the cache keeps
    /// a compiled config while its document's fingerprint stays the same. A fingerprint,
    /// not the document, so 100,000 configs do not hold a second copy of every string.
    pub fingerprint: u128,
    /// [`stored_fingerprint`] of the stored form it was built from, when built from one:
    /// the TTL resync recognises an unchanged document by it without deserializing it.
    pub stored_fingerprint: Option<u128>,
}

/// Why a document was refused; shown in logs and /health/cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("config {} refused: {}", .id.as_deref().unwrap_or("<no _id>"), .problems.join("; "))]
pub struct ConfigError {
    /// The document's `_id`, when it could be found.
    pub id: Option<String>,
    /// Every problem found, each a sentence naming the field.
    pub problems: Vec<String>,
}

/// The one way from a stored document (a file entry, or MongoDB's document as JSON) to a
/// [`SourceConfigDoc`]: MongoDB extended-JSON wrappers are unwrapped first (an `_id` of
/// `{"$oid": hex}` becomes the hex string, `{"$numberLong"|"$numberInt": s}` or an
/// integral float in `priority`/`version` an integer, an `updated_at` of
/// `{"$date": ...}` an RFC 3339 string), then the document is deserialized. Validation,
/// the cache's "unchanged" check and the resync's drift count all read documents
/// through here, so one stored document always reads as one `SourceConfigDoc`.
pub fn parse_doc(value: &Value) -> Result<SourceConfigDoc, ConfigError> {
    SourceConfigDoc::deserialize(&*extjson::normalize(value)).map_err(|e| ConfigError {
        id: doc_id(value),
        problems: vec![format!("document does not deserialize: {e}")],
    })
}

impl SourceConfigDoc {
    /// A 128-bit hash of every field: equal documents have equal fingerprints, and two
    /// different ones colliding is as unlikely as a random 128-bit collision.
    pub fn fingerprint(&self) -> u128 {
        let mut hasher = Xxh3Default::new();
        self.hash(&mut hasher);
        hasher.digest128()
    }
}

impl SourceConfig {
    /// Validates and compiles one stored document ([`parse_doc`], then [`Self::from_doc`]).
    pub fn from_value(value: &Value, routed_prefix: &str) -> Result<SourceConfig, ConfigError> {
        let mut config = SourceConfig::from_doc(parse_doc(value)?, routed_prefix)?;
        config.stored_fingerprint = Some(stored_fingerprint(value));
        Ok(config)
    }

    /// Validates and compiles a deserialized document, reporting all problems at once.
    pub fn from_doc(
        doc: SourceConfigDoc,
        routed_prefix: &str,
    ) -> Result<SourceConfig, ConfigError> {
        let mut problems = Vec::new();

        let id_ok = check_id(&doc.id, &mut problems);
        if doc.version < 0 {
            problems.push(format!("`version` is negative ({})", doc.version));
        }

        let ing = &doc.ingestion;
        if ing.mode.trim().is_empty() {
            problems.push("`ingestion.mode` is missing or empty".to_owned());
        }
        if ing.landing_container.trim().is_empty() {
            problems.push("`ingestion.landing_container` is missing or empty".to_owned());
        } else if ing.landing_container.contains('/') {
            problems.push(format!(
                "`ingestion.landing_container` {:?} contains `/` (give the container name only \
                 and put path structure in `ingestion.path_pattern`)",
                ing.landing_container
            ));
        }
        if ing.account.as_deref() == Some("") {
            problems.push(
                "`ingestion.account` is an empty string (omit it, or use null, for the default \
                 account)"
                    .to_owned(),
            );
        }

        let (pattern, extract_fields) = match &ing.path_pattern {
            None => (None, shared_fields(&[])),
            Some(pp) => compile_pattern(pp, &mut problems),
        };

        let subject = match doc.route.as_ref().and_then(|r| r.subject.as_deref()) {
            Some(subject) => {
                if let Err(why) = subject::check_publish(subject) {
                    problems.push(format!(
                        "`route.subject` {subject:?} is not a valid NATS publish subject: {why}"
                    ));
                }
                subject.to_owned()
            }
            None => {
                let subject = format!("{routed_prefix}.{}", doc.id);
                // A bad id is already reported; only blame the prefix when the id is fine.
                if id_ok {
                    if let Err(why) = subject::check_publish(&subject) {
                        problems.push(format!(
                            "default subject {subject:?} (routed prefix {routed_prefix:?} + `_id`) \
                             is not a valid NATS publish subject: {why} (set `route.subject`)"
                        ));
                    }
                }
                subject
            }
        };

        if !problems.is_empty() {
            return Err(ConfigError {
                id: (!doc.id.is_empty()).then(|| doc.id.clone()),
                problems,
            });
        }
        let fingerprint = doc.fingerprint();
        let fields_are_captures = pattern
            .as_ref()
            .is_none_or(|p| p.captures() == &extract_fields[..]);
        Ok(SourceConfig {
            id: doc.id.clone(),
            version: doc.version,
            enabled: doc.enabled,
            priority: doc.priority,
            blob_trigger: ing.mode == BLOB_TRIGGER_MODE,
            container: intern::str(&CONTAINERS, &ing.landing_container),
            account: ing.account.clone(),
            pattern,
            extract_fields,
            fields_are_captures,
            subject,
            fingerprint,
            stored_fingerprint: None,
        })
    }

    /// Whether the whole path matches (no pattern: every path does). Allocates nothing.
    /// ([`Self::match_path`] asks the same first, and extracts fields only on a match.)
    pub fn matches(&self, path: &str) -> bool {
        self.pattern.as_ref().is_none_or(|p| p.is_match(path))
    }

    /// Some(extracted fields, in extract_fields order) when the whole path matches; None otherwise.
    /// No pattern: matches every path, no fields.
    pub fn match_path<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        let fields = self.match_fields(path)?;
        Some(
            fields
                .into_iter()
                .map(|(i, range)| (self.extract_fields[i].as_str(), &path[range]))
                .collect(),
        )
    }

    /// Fields as [`Self::match_fields`] found them in `path`, as (name, value).
    pub fn field_values<'a>(
        &'a self,
        fields: &'a [(usize, Range<usize>)],
        path: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        fields.iter().map(move |(i, range)| {
            (
                self.extract_fields[*i].as_str(),
                path.get(range.clone()).unwrap_or_default(),
            )
        })
    }

    /// [`Self::match_path`] as positions: each extracted field as its index in
    /// `extract_fields` and its value's byte range in `path`. What the router keeps for
    /// the winner, which owns no copy of the values (nor of the names).
    pub fn match_fields(&self, path: &str) -> Option<Vec<(usize, Range<usize>)>> {
        let Some(pattern) = &self.pattern else {
            return Some(Vec::new());
        };
        let captures = pattern.captures();
        debug_assert_eq!(
            self.fields_are_captures,
            captures == &self.extract_fields[..]
        );
        pattern.match_with(path, |values| {
            if self.fields_are_captures {
                return values
                    .iter()
                    .enumerate()
                    .map(|(i, value)| (i, within(path, value)))
                    .collect();
            }
            let mut fields = Vec::with_capacity(self.extract_fields.len());
            for (f, field) in self.extract_fields.iter().enumerate() {
                // Every extract field names a capture (checked when the config was
                // built); mostly the first one looked at.
                if let Some(i) = captures.iter().position(|c| c == field) {
                    fields.push((f, within(path, values[i])));
                }
            }
            fields
        })
    }

    /// Candidate order within a container: priority descending, then id ascending.
    pub fn order(a: &SourceConfig, b: &SourceConfig) -> Ordering {
        b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id))
    }
}

/// Where `value`, a slice of `path` (or empty), lies in it.
fn within(path: &str, value: &str) -> Range<usize> {
    if value.is_empty() {
        return 0..0;
    }
    let start = (value.as_ptr() as usize).wrapping_sub(path.as_ptr() as usize);
    debug_assert!(
        start + value.len() <= path.len(),
        "a capture outside its path"
    );
    start..start + value.len()
}

fn default_true() -> bool {
    true
}

/// Treats an explicit `null` like an absent field.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Checks `_id`, which becomes a NATS subject token; returns whether it is valid.
fn check_id(id: &str, problems: &mut Vec<String>) -> bool {
    match subject::check_name(id) {
        Ok(()) => true,
        Err(why) => {
            problems.push(if id.is_empty() {
                format!("`_id` {why}")
            } else {
                format!("`_id` {id:?} {why}")
            });
            false
        }
    }
}

/// Compiled patterns by pattern text.
static PATTERNS: LazyLock<intern::Interner<Box<str>, PathPattern>> =
    LazyLock::new(intern::Interner::new);
/// Resolved extract-field lists.
static FIELD_LISTS: LazyLock<intern::Interner<Box<[String]>, [String]>> =
    LazyLock::new(intern::Interner::new);
/// Container names.
static CONTAINERS: LazyLock<intern::Interner<Box<str>, str>> = LazyLock::new(intern::Interner::new);

/// The shared copy of an extract-field list.
fn shared_fields(fields: &[String]) -> Arc<[String]> {
    let made: Result<_, std::convert::Infallible> =
        FIELD_LISTS.get_or_try(fields, || Ok((fields.into(), fields.into())));
    match made {
        Ok(shared) => shared,
        Err(never) => match never {},
    }
}

/// Compiles `ingestion.path_pattern` and resolves its extract fields, recording problems.
fn compile_pattern(
    pp: &PathPatternDoc,
    problems: &mut Vec<String>,
) -> (Option<Arc<PathPattern>>, Arc<[String]>) {
    if pp.pattern.is_empty() {
        if pp.extract_fields.is_empty() {
            problems.push(
                "`ingestion.path_pattern.pattern` is missing or empty (omit `path_pattern` to \
                 match every path in the container)"
                    .to_owned(),
            );
        } else {
            problems.push(format!(
                "`ingestion.path_pattern.extract_fields` ({}) is given without a pattern to \
                 capture them (set `ingestion.path_pattern.pattern`)",
                pp.extract_fields.join(", ")
            ));
        }
        return (None, shared_fields(&[]));
    }
    let compiled = PATTERNS.get_or_try(pp.pattern.as_str(), || {
        PathPattern::parse(&pp.pattern).map(|p| (pp.pattern.as_str().into(), Arc::new(p)))
    });
    let pattern = match compiled {
        Ok(pattern) => pattern,
        Err(e) => {
            problems.push(format!(
                "`ingestion.path_pattern.pattern` {:?} is invalid: {e}",
                pp.pattern
            ));
            return (None, shared_fields(&[]));
        }
    };
    if pp.extract_fields.is_empty() {
        let all = shared_fields(pattern.captures());
        return (Some(pattern), all);
    }
    let mut seen = HashSet::new();
    for field in &pp.extract_fields {
        if !pattern.captures().contains(field) {
            let captured = if pattern.captures().is_empty() {
                "it captures nothing".to_owned()
            } else {
                format!("it captures {}", pattern.captures().join(", "))
            };
            problems.push(format!(
                "`ingestion.path_pattern.extract_fields` names {field:?}, which the pattern {:?} \
                 does not capture ({captured})",
                pp.pattern
            ));
        } else if !seen.insert(field.as_str()) {
            problems.push(format!(
                "`ingestion.path_pattern.extract_fields` names {field:?} more than once"
            ));
        }
    }
    let fields = shared_fields(&pp.extract_fields);
    (Some(pattern), fields)
}

#[cfg(test)]
mod tests;
