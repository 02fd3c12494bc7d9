//! Source configs: which blobs a source owns and where the router publishes them.
//!
//! A config document (stored in MongoDB `source_configs`, or in a YAML/JSON file) is
//! deserialized into [`SourceConfigDoc`], then validated and compiled once per version
//! into a [`SourceConfig`] that the router shares by reference. Validation collects every
//! problem in a document, so an operator fixing a refused config sees them all at once
//! (in logs and `/health/cache`) instead of one per deploy.

mod pattern;

pub use pattern::{PathPattern, PatternError};

use std::cmp::Ordering;
use std::collections::HashSet;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The ingestion mode the router matches blob-created events against.
pub const BLOB_TRIGGER_MODE: &str = "blob_trigger";

/// The document as stored (serde model; Serialize too, for export).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathPatternDoc {
    /// Pattern source text; see [`PathPattern`] for the language.
    #[serde(default)]
    pub pattern: String,
    /// Captures to extract, in output order; empty means every capture.
    #[serde(default, deserialize_with = "null_as_default")]
    pub extract_fields: Vec<String>,
}

/// The `route` section of a [`SourceConfigDoc`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// The landing container.
    pub container: String,
    /// The storage account, if not the default one.
    pub account: Option<String>,
    /// The compiled path pattern; `None` matches every path.
    pub pattern: Option<PathPattern>,
    /// Resolved: the explicit list, or all captures when the list was empty.
    pub extract_fields: Vec<String>,
    /// Resolved route subject.
    pub subject: String,
    /// What it was built from (for /health, export, drift comparison).
    pub doc: SourceConfigDoc,
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

impl SourceConfig {
    /// Validates and compiles one document (e.g. a serde_json::Value read from a file or
    /// converted from BSON). MongoDB extended-JSON wrappers are unwrapped first: an
    /// `_id` of `{"$oid": hex}` becomes the hex string, `{"$numberLong"|"$numberInt": s}`
    /// or an integral float in `priority`/`version` becomes an integer, and an
    /// `updated_at` of `{"$date": ...}` becomes an RFC 3339 string.
    pub fn from_value(value: &Value, routed_prefix: &str) -> Result<SourceConfig, ConfigError> {
        let doc: SourceConfigDoc =
            serde_json::from_value(normalize(value)).map_err(|e| ConfigError {
                id: doc_id(value),
                problems: vec![format!("document does not deserialize: {e}")],
            })?;
        SourceConfig::from_doc(doc, routed_prefix)
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
            None => (None, Vec::new()),
            Some(pp) => compile_pattern(pp, &mut problems),
        };

        let subject = match doc.route.as_ref().and_then(|r| r.subject.as_deref()) {
            Some(subject) => {
                if let Err(why) = check_subject(subject) {
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
                    if let Err(why) = check_subject(&subject) {
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
        Ok(SourceConfig {
            id: doc.id.clone(),
            version: doc.version,
            enabled: doc.enabled,
            priority: doc.priority,
            blob_trigger: ing.mode == BLOB_TRIGGER_MODE,
            container: ing.landing_container.clone(),
            account: ing.account.clone(),
            pattern,
            extract_fields,
            subject,
            doc,
        })
    }

    /// Some(extracted fields, in extract_fields order) when the whole path matches; None otherwise.
    /// No pattern: matches every path, no fields.
    pub fn match_path<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        let Some(pattern) = &self.pattern else {
            return Some(Vec::new());
        };
        let values = pattern.match_path(path)?;
        let captures = pattern.captures();
        Some(
            self.extract_fields
                .iter()
                .filter_map(|field| {
                    let i = captures.iter().position(|c| c == field)?;
                    Some((field.as_str(), values[i]))
                })
                .collect(),
        )
    }

    /// Candidate order within a container: priority descending, then id ascending.
    pub fn order(a: &SourceConfig, b: &SourceConfig) -> Ordering {
        b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id))
    }
}

/// Best-effort `_id` of a raw document (string, or {"$oid": "..."} rendered as its hex) for reporting refusals.
pub fn doc_id(value: &Value) -> Option<String> {
    match value.get("_id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        other => oid_hex(other),
    }
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
    if id.is_empty() {
        problems.push("`_id` is empty".to_owned());
        return false;
    }
    let bad: Vec<String> = id
        .chars()
        .filter(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>'))
        .map(|c| format!("{c:?}"))
        .collect::<Vec<_>>();
    if bad.is_empty() {
        return true;
    }
    let mut unique = Vec::new();
    for c in bad {
        if !unique.contains(&c) {
            unique.push(c);
        }
    }
    problems.push(format!(
        "`_id` {id:?} contains {} (it becomes a NATS subject token, so whitespace, `.`, `*` \
         and `>` are not allowed)",
        unique.join(", ")
    ));
    false
}

/// A NATS publish subject: non-empty `.`-separated tokens, no whitespace, no wildcards.
fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("it is empty".to_owned());
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains whitespace".to_owned());
    }
    if subject.split('.').any(str::is_empty) {
        return Err("it has an empty token (leading, trailing or doubled `.`)".to_owned());
    }
    if subject.contains(['*', '>']) {
        return Err("wildcards `*` and `>` are not allowed when publishing".to_owned());
    }
    Ok(())
}

/// Compiles `ingestion.path_pattern` and resolves its extract fields, recording problems.
fn compile_pattern(
    pp: &PathPatternDoc,
    problems: &mut Vec<String>,
) -> (Option<PathPattern>, Vec<String>) {
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
        return (None, Vec::new());
    }
    let pattern = match PathPattern::parse(&pp.pattern) {
        Ok(pattern) => pattern,
        Err(e) => {
            problems.push(format!(
                "`ingestion.path_pattern.pattern` {:?} is invalid: {e}",
                pp.pattern
            ));
            return (None, Vec::new());
        }
    };
    if pp.extract_fields.is_empty() {
        let all = pattern.captures().to_vec();
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
    let fields = pp.extract_fields.clone();
    (Some(pattern), fields)
}

/// `{"$oid": "<hex>"}` -> the hex string.
fn oid_hex(value: &Value) -> Option<String> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    map.get("$oid")?.as_str().map(str::to_owned)
}

/// Unwraps the MongoDB extended-JSON forms that BSON-to-JSON conversion produces for
/// the fields this model reads, so such documents deserialize like plain JSON ones.
fn normalize(value: &Value) -> Value {
    let mut value = value.clone();
    if let Value::Object(map) = &mut value {
        if let Some(id) = map.get_mut("_id") {
            if let Some(hex) = oid_hex(id) {
                *id = Value::String(hex);
            }
        }
        for key in ["priority", "version"] {
            if let Some(n) = map.get_mut(key) {
                if let Some(i) = ext_int(n) {
                    *n = Value::from(i);
                }
            }
        }
        if let Some(date) = map.get_mut("updated_at") {
            if let Some(s) = ext_date(date) {
                *date = Value::String(s);
            }
        }
    }
    value
}

/// `{"$numberLong": "3"}`, `{"$numberInt": "3"}` or an integral float like `3.0`.
fn ext_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => None,
        Value::Number(n) => {
            let f = n.as_f64()?;
            // Range check: i64::MAX as f64 rounds up to 2^63, which is out of range.
            (f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
        }
        Value::Object(map) if map.len() == 1 => {
            let s = map.get("$numberLong").or_else(|| map.get("$numberInt"))?;
            s.as_str()?.parse().ok()
        }
        _ => None,
    }
}

/// `{"$date": "<rfc3339>"}`, `{"$date": {"$numberLong": "<ms>"}}` or `{"$date": <ms>}`.
fn ext_date(value: &Value) -> Option<String> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    match map.get("$date")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => n.as_i64().map(format_unix_millis),
        other => ext_int(other).map(format_unix_millis),
    }
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC, e.g. `2026-11-20T10:00:00Z`.
fn format_unix_millis(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (h, m, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    // Civil-from-days (Howard Hinnant's algorithm), proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let frac = if milli == 0 {
        String::new()
    } else {
        format!(".{milli:03}")
    };
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}{frac}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PREFIX: &str = "blob.routed";

    fn example() -> Value {
        json!({
            "_id": "qc-analyzer-results",
            "enabled": true,
            "priority": 0,
            "ingestion": {
                "mode": "blob_trigger",
                "landing_container": "qc-analyzer-landing",
                "account": null,
                "path_pattern": {
                    "pattern": "results/{plantation_id}/{crop}/{batch_id}.json",
                    "extract_fields": ["plantation_id", "crop", "batch_id"]
                },
                "file_format": "json"
            },
            "route": { "subject": "ingest.qc-analyzer" },
            "version": 3,
            "updated_at": "2026-11-20T10:00:00Z"
        })
    }

    fn minimal(id: &str) -> Value {
        json!({
            "_id": id,
            "ingestion": { "mode": "blob_trigger", "landing_container": "landing" }
        })
    }

    fn build(value: Value) -> SourceConfig {
        SourceConfig::from_value(&value, PREFIX).unwrap_or_else(|e| panic!("{e}"))
    }

    fn refuse(value: Value) -> ConfigError {
        match SourceConfig::from_value(&value, PREFIX) {
            Ok(c) => panic!("unexpectedly accepted: {c:?}"),
            Err(e) => e,
        }
    }

    /// Asserts exactly one problem, containing every one of `needles`.
    fn assert_one_problem(value: Value, needles: &[&str]) {
        let err = refuse(value);
        assert_eq!(err.problems.len(), 1, "{:?}", err.problems);
        for needle in needles {
            assert!(
                err.problems[0].contains(needle),
                "{:?} lacks {needle:?}",
                err.problems[0]
            );
        }
    }

    #[test]
    fn example_compiles_and_matches() {
        let cfg = build(example());
        assert_eq!(cfg.id, "qc-analyzer-results");
        assert_eq!(cfg.version, 3);
        assert!(cfg.enabled);
        assert!(cfg.blob_trigger);
        assert_eq!(cfg.container, "qc-analyzer-landing");
        assert_eq!(cfg.account, None);
        assert_eq!(cfg.subject, "ingest.qc-analyzer");
        assert_eq!(
            cfg.pattern.as_ref().map(PathPattern::as_str),
            Some("results/{plantation_id}/{crop}/{batch_id}.json")
        );
        assert_eq!(cfg.doc.updated_at.as_deref(), Some("2026-11-20T10:00:00Z"));
        assert_eq!(cfg.doc.ingestion.file_format.as_deref(), Some("json"));
        assert_eq!(
            cfg.match_path("results/plantation-7/tea/batch-0042.json"),
            Some(vec![
                ("plantation_id", "plantation-7"),
                ("crop", "tea"),
                ("batch_id", "batch-0042"),
            ])
        );
    }

    #[test]
    fn example_rejects_non_matching_paths() {
        let cfg = build(example());
        for path in [
            "results/plantation-7/tea/extra/batch-0042.json",
            "results/plantation-7/batch-0042.json",
            "results/plantation-7/tea/batch-0042.csv",
            "results/plantation-7/tea/batch-0042.json.tmp",
            "other/plantation-7/tea/batch-0042.json",
            "",
        ] {
            assert_eq!(cfg.match_path(path), None, "{path}");
        }
    }

    #[test]
    fn extract_fields_order_and_subset() {
        let mut v = example();
        v["ingestion"]["path_pattern"]["extract_fields"] = json!(["batch_id", "plantation_id"]);
        let cfg = build(v);
        assert_eq!(cfg.extract_fields, ["batch_id", "plantation_id"]);
        assert_eq!(
            cfg.match_path("results/p7/tea/b42.json"),
            Some(vec![("batch_id", "b42"), ("plantation_id", "p7")])
        );
    }

    #[test]
    fn defaults_are_resolved() {
        let mut v = example();
        v.as_object_mut().unwrap().remove("route");
        v["ingestion"]["path_pattern"]
            .as_object_mut()
            .unwrap()
            .remove("extract_fields");
        let cfg = build(v);
        assert_eq!(cfg.subject, "blob.routed.qc-analyzer-results");
        assert_eq!(cfg.extract_fields, ["plantation_id", "crop", "batch_id"]);

        let cfg = build(minimal("m"));
        assert!(cfg.enabled);
        assert_eq!(cfg.priority, 0);
        assert_eq!(cfg.version, 0);
        assert_eq!(cfg.account, None);
        assert!(cfg.pattern.is_none());
        assert!(cfg.extract_fields.is_empty());
        assert_eq!(cfg.subject, "blob.routed.m");
        assert_eq!(cfg.doc.route, None);
        assert_eq!(cfg.doc.updated_at, None);
        // No pattern: every path matches, with no fields.
        assert_eq!(cfg.match_path("any/path/at/all.bin"), Some(vec![]));

        let mut v = minimal("m");
        v["route"] = json!({});
        assert_eq!(build(v).subject, "blob.routed.m");
        let mut v = minimal("m");
        v["route"] = json!({ "subject": null });
        v["ingestion"]["path_pattern"] = json!({ "pattern": "{a}.csv", "extract_fields": null });
        let cfg = build(v);
        assert_eq!(cfg.subject, "blob.routed.m");
        assert_eq!(cfg.extract_fields, ["a"]);
    }

    #[test]
    fn other_modes_are_valid_but_not_blob_trigger() {
        let mut v = minimal("pull");
        v["ingestion"]["mode"] = json!("scheduled_pull");
        let cfg = build(v);
        assert!(!cfg.blob_trigger);
        assert!(build(minimal("push")).blob_trigger);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut v = example();
        v["owner"] = json!("team-qc");
        v["ingestion"]["retention_days"] = json!(30);
        v["route"]["headers"] = json!({"x": "y"});
        assert_eq!(build(v).id, "qc-analyzer-results");
    }

    #[test]
    fn disabled_config_compiles() {
        let mut v = minimal("off");
        v["enabled"] = json!(false);
        assert!(!build(v).enabled);
    }

    #[test]
    fn bad_ids() {
        let mut v = minimal("x");
        v["_id"] = json!("");
        let err = refuse(v);
        assert_eq!(err.id, None);
        assert_eq!(err.problems, ["`_id` is empty"]);
        assert!(err.to_string().starts_with("config <no _id> refused: "));

        for (id, shown) in [
            ("a b", "' '"),
            ("a.b", "'.'"),
            ("a*", "'*'"),
            ("a>", "'>'"),
            ("a\tb", "'\\t'"),
        ] {
            let err = refuse(minimal(id));
            assert_eq!(err.id.as_deref(), Some(id));
            assert_eq!(err.problems.len(), 1, "{id:?}: {:?}", err.problems);
            assert!(err.problems[0].starts_with("`_id` "), "{:?}", err.problems);
            assert!(err.problems[0].contains(shown), "{:?}", err.problems);
            assert!(err.problems[0].contains("NATS subject token"));
        }
    }

    #[test]
    fn bad_mode_and_container() {
        let mut v = minimal("x");
        v["ingestion"]["mode"] = json!("");
        assert_one_problem(v, &["`ingestion.mode` is missing or empty"]);

        let mut v = minimal("x");
        v["ingestion"].as_object_mut().unwrap().remove("mode");
        assert_one_problem(v, &["`ingestion.mode` is missing or empty"]);

        let mut v = minimal("x");
        v["ingestion"]["landing_container"] = json!("");
        assert_one_problem(v, &["`ingestion.landing_container` is missing or empty"]);

        let mut v = minimal("x");
        v["ingestion"]["landing_container"] = json!("landing/results");
        assert_one_problem(
            v,
            &["`ingestion.landing_container` \"landing/results\" contains `/`"],
        );
    }

    #[test]
    fn empty_account() {
        let mut v = minimal("x");
        v["ingestion"]["account"] = json!("");
        assert_one_problem(v, &["`ingestion.account` is an empty string"]);

        let mut v = minimal("x");
        v["ingestion"]["account"] = json!("stqcprod");
        assert_eq!(build(v).account.as_deref(), Some("stqcprod"));
    }

    #[test]
    fn bad_subjects() {
        for (subject, why) in [
            ("", "empty"),
            ("a..b", "empty token"),
            (".a", "empty token"),
            ("a.", "empty token"),
            ("a b", "whitespace"),
            ("a.*", "wildcards"),
            ("a.>", "wildcards"),
            ("a*b", "wildcards"),
        ] {
            let mut v = minimal("x");
            v["route"] = json!({ "subject": subject });
            assert_one_problem(
                v,
                &[
                    &format!("`route.subject` {subject:?} is not a valid NATS publish subject"),
                    why,
                ],
            );
        }
        let mut v = minimal("x");
        v["route"] = json!({ "subject": "ingest.qc-analyzer.v2" });
        assert_eq!(build(v).subject, "ingest.qc-analyzer.v2");
    }

    #[test]
    fn bad_routed_prefix_is_reported() {
        let err = SourceConfig::from_value(&minimal("x"), "blob.>").unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(err.problems[0].contains("default subject \"blob.>.x\""));
        // An explicit subject does not depend on the prefix.
        let mut v = minimal("x");
        v["route"] = json!({ "subject": "a.b" });
        assert!(SourceConfig::from_value(&v, "blob.>").is_ok());
    }

    #[test]
    fn pattern_problems() {
        let mut v = minimal("x");
        v["ingestion"]["path_pattern"] = json!({ "pattern": "a//b" });
        assert_one_problem(
            v,
            &["`ingestion.path_pattern.pattern` \"a//b\" is invalid: segment 2 is empty"],
        );

        let mut v = minimal("x");
        v["ingestion"]["path_pattern"] = json!({ "pattern": "" });
        assert_one_problem(v, &["`ingestion.path_pattern.pattern` is missing or empty"]);

        let mut v = minimal("x");
        v["ingestion"]["path_pattern"] = json!({ "extract_fields": ["a"] });
        assert_one_problem(
            v,
            &["`ingestion.path_pattern.extract_fields` (a) is given without a pattern"],
        );
    }

    #[test]
    fn extract_field_not_captured() {
        let mut v = example();
        v["ingestion"]["path_pattern"]["extract_fields"] = json!(["crop", "plant"]);
        assert_one_problem(
            v,
            &[
                "`ingestion.path_pattern.extract_fields` names \"plant\"",
                "does not capture",
                "it captures plantation_id, crop, batch_id",
            ],
        );

        let mut v = minimal("x");
        v["ingestion"]["path_pattern"] = json!({ "pattern": "*.json", "extract_fields": ["a"] });
        assert_one_problem(v, &["names \"a\"", "it captures nothing"]);

        let mut v = example();
        v["ingestion"]["path_pattern"]["extract_fields"] = json!(["crop", "crop"]);
        assert_one_problem(v, &["names \"crop\" more than once"]);
    }

    #[test]
    fn negative_version() {
        let mut v = minimal("x");
        v["version"] = json!(-1);
        assert_one_problem(v, &["`version` is negative (-1)"]);
    }

    #[test]
    fn all_problems_are_reported() {
        let v = json!({
            "_id": "bad id",
            "version": -2,
            "ingestion": {
                "mode": "",
                "landing_container": "a/b",
                "account": "",
                "path_pattern": { "pattern": "{a}{b}" }
            },
            "route": { "subject": "x.*" }
        });
        let err = refuse(v);
        assert_eq!(err.id.as_deref(), Some("bad id"));
        let expected = [
            "`_id`",
            "`version`",
            "`ingestion.mode`",
            "`ingestion.landing_container`",
            "`ingestion.account`",
            "`ingestion.path_pattern.pattern`",
            "`route.subject`",
        ];
        assert_eq!(err.problems.len(), expected.len(), "{:?}", err.problems);
        for (problem, field) in err.problems.iter().zip(expected) {
            assert!(problem.starts_with(field), "{problem:?} vs {field}");
        }
        let shown = err.to_string();
        assert!(
            shown.starts_with("config bad id refused: `_id` "),
            "{shown}"
        );
        assert_eq!(shown.matches("; ").count(), expected.len() - 1, "{shown}");
    }

    #[test]
    fn deserialization_errors_carry_id_and_field() {
        let mut v = example();
        v["priority"] = json!("high");
        let err = refuse(v);
        assert_eq!(err.id.as_deref(), Some("qc-analyzer-results"));
        assert_eq!(err.problems.len(), 1);
        assert!(
            err.problems[0].contains("invalid type"),
            "{:?}",
            err.problems
        );

        let mut v = example();
        v.as_object_mut().unwrap().remove("ingestion");
        let err = refuse(v);
        assert!(
            err.problems[0].contains("missing field `ingestion`"),
            "{:?}",
            err.problems
        );

        let err = refuse(json!({ "ingestion": {} }));
        assert_eq!(err.id, None);
        assert!(err.problems[0].contains("missing field `_id`"));

        let mut v = example();
        v["_id"] = json!({ "$oid": "64b7f0c2a1b2c3d4e5f60718" });
        v["ingestion"]["path_pattern"]["extract_fields"] = json!("crop");
        let err = refuse(v);
        assert_eq!(err.id.as_deref(), Some("64b7f0c2a1b2c3d4e5f60718"));

        let err = refuse(json!([1, 2]));
        assert_eq!(err.id, None);
        assert!(err.to_string().starts_with("config <no _id> refused: "));
    }

    #[test]
    fn oid_ids() {
        let hex = "64b7f0c2a1b2c3d4e5f60718";
        let mut v = minimal("x");
        v["_id"] = json!({ "$oid": hex });
        assert_eq!(doc_id(&v).as_deref(), Some(hex));
        let cfg = build(v);
        assert_eq!(cfg.id, hex);
        assert_eq!(cfg.doc.id, hex);
        assert_eq!(cfg.subject, format!("blob.routed.{hex}"));

        assert_eq!(doc_id(&minimal("plain")).as_deref(), Some("plain"));
        assert_eq!(doc_id(&json!({ "_id": { "x": 1 } })), None);
        assert_eq!(doc_id(&json!({})), None);
        assert_eq!(doc_id(&json!("not an object")), None);
    }

    #[test]
    fn extended_json_numbers_and_dates() {
        let mut v = minimal("x");
        v["priority"] = json!({ "$numberLong": "7" });
        v["version"] = json!(4.0);
        v["updated_at"] = json!({ "$date": { "$numberLong": "1795168800000" } });
        let cfg = build(v);
        assert_eq!(cfg.priority, 7);
        assert_eq!(cfg.version, 4);
        assert_eq!(cfg.doc.updated_at.as_deref(), Some("2026-11-20T10:00:00Z"));

        let mut v = minimal("x");
        v["version"] = json!({ "$numberInt": "2" });
        v["updated_at"] = json!({ "$date": "2026-11-20T10:00:00.123Z" });
        let cfg = build(v);
        assert_eq!(cfg.version, 2);
        assert_eq!(
            cfg.doc.updated_at.as_deref(),
            Some("2026-11-20T10:00:00.123Z")
        );

        let mut v = minimal("x");
        v["version"] = json!(1.5);
        assert!(refuse(v).problems[0].contains("invalid type"));

        assert_eq!(format_unix_millis(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_unix_millis(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn ordering() {
        let mk = |id: &str, priority: i64| {
            let mut v = minimal(id);
            v["priority"] = json!(priority);
            build(v)
        };
        let mut configs = [mk("b", 0), mk("a", 0), mk("z", 5), mk("c", -1), mk("y", 5)];
        configs.sort_by(SourceConfig::order);
        let ids: Vec<&str> = configs.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["y", "z", "a", "b", "c"]);
        assert_eq!(
            SourceConfig::order(&mk("a", 1), &mk("a", 1)),
            Ordering::Equal
        );
    }

    #[test]
    fn doc_round_trips_through_serde() {
        let cfg = build(example());
        let exported = serde_json::to_value(&cfg.doc).unwrap();
        assert_eq!(exported["_id"], "qc-analyzer-results");
        let again: SourceConfigDoc = serde_json::from_value(exported).unwrap();
        assert_eq!(again, cfg.doc);
        let err = refuse(minimal(""));
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            json!({ "id": null, "problems": ["`_id` is empty"] })
        );
    }

    #[test]
    fn from_doc_matches_from_value() {
        let doc: SourceConfigDoc = serde_json::from_value(example()).unwrap();
        let cfg = SourceConfig::from_doc(doc.clone(), PREFIX).unwrap();
        assert_eq!(cfg.doc, doc);
        assert_eq!(cfg.doc, build(example()).doc);
    }
}
