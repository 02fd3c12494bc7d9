//! Fuzz target: reading and validating a config document (a file entry, or a MongoDB
//! document as JSON, extended-JSON wrappers included).
//!
//! Input: JSON bytes (anything else is skipped: the stores hand over parsed JSON).
//!
//! Checked, beyond "never panics":
//! - a refused document has at least one problem, each a non-empty sentence;
//! - an accepted config is routable: non-empty `_id` and container, no `/` in the
//!   container, a valid NATS publish subject, extract fields its pattern captures;
//! - an accepted document reads back the same after export (`configs export` writes
//!   the `SourceConfigDoc` as JSON; `import` reads it through `parse_doc` again);
//! - matching a path (its own pattern text, the landing container) never panics and
//!   returns one value per extract field.

#![no_main]

use blob_router::config::{parse_doc, SourceConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let config = match SourceConfig::from_value(&value, "blob.routed") {
        Ok(config) => config,
        Err(e) => {
            assert!(!e.problems.is_empty(), "a refusal without a problem");
            assert!(e.problems.iter().all(|p| !p.is_empty()));
            return;
        }
    };
    assert!(!config.id.is_empty());
    assert!(!config.container.is_empty() && !config.container.contains('/'));
    let subject = &config.subject;
    assert!(
        !subject.is_empty()
            && !subject.chars().any(|c| c.is_whitespace() || c.is_control())
            && !subject.contains(['*', '>'])
            && subject.split('.').all(|t| !t.is_empty()),
        "invalid subject {subject:?}"
    );
    if let Some(pattern) = &config.pattern {
        for field in config.extract_fields.iter() {
            assert!(
                pattern.captures().contains(field),
                "{field} is not captured"
            );
        }
        for path in [pattern.as_str(), &*config.container] {
            if let Some(fields) = config.match_path(path) {
                assert_eq!(fields.len(), config.extract_fields.len());
                assert!(config.matches(path));
            }
        }
    }

    let doc = parse_doc(&value).expect("an accepted config's document parses");
    assert_eq!(config.fingerprint, doc.fingerprint());
    let exported = serde_json::to_value(&doc).expect("a config doc serializes");
    let reread = parse_doc(&exported).expect("an exported config reads back");
    assert_eq!(reread, doc, "export then import changed the document");
});
