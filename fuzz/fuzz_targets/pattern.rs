//! Fuzz target: path pattern compilation and matching (config patterns are operator
//! input; paths come from producers).
//!
//! Input: `<pattern>\0<path>` (invalid UTF-8 replaced), or just `<pattern>`, matched
//! against itself.
//!
//! Checked, beyond "never panics" (and, under libFuzzer's timeout, never slow):
//! - a compiled pattern keeps its source, and its captures are valid, distinct names;
//! - `is_match` agrees with `match_path`;
//! - captured values are non-empty pieces of one path segment, taken from the path;
//! - both agree with the regex semantics the matcher replaced: the pattern translated to
//!   one anchored regex (as `src/config/pattern/tests.rs`'s reference does, but here from
//!   the source text, independently of the parser), same match, same captures.

#![no_main]

use blob_router::config::PathPattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (pattern, path) = match data.iter().position(|&b| b == 0) {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]),
            String::from_utf8_lossy(&data[i + 1..]),
        ),
        None => {
            let text = String::from_utf8_lossy(data);
            (text.clone(), text)
        }
    };
    let compiled = match PathPattern::parse(&pattern) {
        Ok(compiled) => compiled,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert_eq!(compiled.as_str(), pattern);
    check_capture_names(&compiled);

    let found = compiled.match_path(&path);
    assert_eq!(
        compiled.is_match(&path),
        found.is_some(),
        "is_match and match_path disagree: {pattern:?} on {path:?}"
    );
    if let Some(values) = &found {
        assert_eq!(values.len(), compiled.captures().len());
        let range = path.as_ptr() as usize..=path.as_ptr() as usize + path.len();
        for v in values {
            assert!(!v.is_empty() && !v.contains('/'), "bad capture {v:?}");
            let at = v.as_ptr() as usize;
            assert!(
                range.contains(&at) && range.contains(&(at + v.len())),
                "capture {v:?} is not a piece of the path"
            );
        }
    }

    if let Some(re) = reference(&pattern) {
        let expected: Option<Vec<&str>> = re.captures(&path).map(|caps| {
            (1..caps.len())
                .map(|i| caps.get(i).expect("every group takes part").as_str())
                .collect()
        });
        assert_eq!(
            found, expected,
            "matcher and regex semantics disagree: {pattern:?} on {path:?} (regex {re})"
        );
    }
});

/// `[A-Za-z_][A-Za-z0-9_]*`, each once, one per `{`.
fn check_capture_names(compiled: &PathPattern) {
    let names = compiled.captures();
    for (i, name) in names.iter().enumerate() {
        let mut chars = name.chars();
        assert!(matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_'));
        assert!(chars.all(|c| c.is_ascii_alphanumeric() || c == '_'));
        assert!(!names[..i].contains(name), "duplicate capture {name}");
    }
    assert_eq!(names.len(), compiled.as_str().matches('{').count());
}

/// The anchored regex a valid pattern stands for: `{name}` is `([^/]+)`, an in-segment
/// `*` is `[^/]*`, a `*` segment `[^/]+`, a `**` segment zero or more whole segments
/// (consecutive ones count as one), anything else literal. `None` if the regex is too
/// big for the regex crate's limits.
fn reference(pattern: &str) -> Option<regex::Regex> {
    const SEGMENT: &str = "[^/]+";
    let mut segments: Vec<&str> = Vec::new();
    for s in pattern.split('/') {
        if !(s == "**" && segments.last() == Some(&"**")) {
            segments.push(s);
        }
    }
    let mut re = String::from(r"\A");
    let mut need_sep = false;
    for (index, segment) in segments.iter().enumerate() {
        let last = index + 1 == segments.len();
        if *segment == "**" {
            re.push_str(&match (need_sep, last) {
                (false, true) => format!("(?:{SEGMENT}(?:/{SEGMENT})*)?"),
                (false, false) => format!("(?:{SEGMENT}/)*"),
                (true, _) => format!("(?:/{SEGMENT})*"),
            });
            continue;
        }
        if need_sep {
            re.push('/');
        }
        need_sep = true;
        if *segment == "*" {
            re.push_str(SEGMENT);
            continue;
        }
        let mut rest = *segment;
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            match c {
                '{' => {
                    let close = rest.find('}').expect("a valid pattern closes its braces");
                    rest = &rest[close + 1..];
                    re.push_str(&format!("({SEGMENT})"));
                }
                '*' => re.push_str("[^/]*"),
                c => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
            }
        }
    }
    re.push_str(r"\z");
    regex::RegexBuilder::new(&re)
        .size_limit(1 << 24)
        .build()
        .ok()
}
