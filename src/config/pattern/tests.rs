//! Unit and property tests of the path pattern language.

use super::*;
use proptest::prelude::*;

fn p(pattern: &str) -> PathPattern {
    PathPattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern:?}: {e}"))
}

fn err(pattern: &str) -> PatternError {
    match PathPattern::parse(pattern) {
        Ok(_) => panic!("{pattern:?} unexpectedly parsed"),
        Err(e) => e,
    }
}

#[test]
fn captures_whole_segments() {
    let pat = p("results/{plantation_id}/{crop}/{batch_id}.json");
    assert_eq!(pat.captures(), ["plantation_id", "crop", "batch_id"]);
    assert_eq!(
        pat.as_str(),
        "results/{plantation_id}/{crop}/{batch_id}.json"
    );
    assert_eq!(
        pat.match_path("results/plantation-7/tea/batch-0042.json"),
        Some(vec!["plantation-7", "tea", "batch-0042"])
    );
    assert_eq!(pat.match_path("results/p/tea/b.json.bak"), None);
    assert_eq!(pat.match_path("results/p/tea/x/b.json"), None);
    assert_eq!(pat.match_path("results/p/b.json"), None);
    assert_eq!(pat.match_path("results/p/tea/.json"), None);
    assert_eq!(pat.match_path("prefix/results/p/tea/b.json"), None);
}

#[test]
fn mixed_segments() {
    let pat = p("{a}-{b}.csv");
    assert_eq!(pat.match_path("x-y.csv"), Some(vec!["x", "y"]));
    assert_eq!(pat.match_path("-y.csv"), None);
    assert_eq!(pat.match_path("x/y-z.csv"), None);
    let pat = p("day-{day}/*.json");
    assert_eq!(pat.match_path("day-3/anything.json"), Some(vec!["3"]));
    assert_eq!(pat.match_path("day-3/.json"), Some(vec!["3"]));
    assert_eq!(pat.match_path("day-3/a/b.json"), None);
    assert_eq!(pat.match_path("day-3/a.jsonl"), None);
}

#[test]
fn single_star_segment_is_exactly_one_segment() {
    let pat = p("a/*/b");
    assert_eq!(pat.match_path("a/x/b"), Some(vec![]));
    assert_eq!(pat.match_path("a/b"), None);
    assert_eq!(pat.match_path("a//b"), None);
    assert_eq!(pat.match_path("a/x/y/b"), None);
}

#[test]
fn globstar() {
    let mid = p("a/**/b");
    for ok in ["a/b", "a/x/b", "a/x/y/b"] {
        assert!(mid.match_path(ok).is_some(), "{ok}");
    }
    for no in ["a", "b", "ab", "a/xb", "ax/b", "a/b/c", "x/a/b"] {
        assert!(mid.match_path(no).is_none(), "{no}");
    }
    let tail = p("a/**");
    for ok in ["a", "a/x", "a/x/y"] {
        assert!(tail.match_path(ok).is_some(), "{ok}");
    }
    for no in ["ab", "a/", "b/a"] {
        assert!(tail.match_path(no).is_none(), "{no}");
    }
    let head = p("**/x.json");
    for ok in ["x.json", "p/x.json", "p/q/x.json"] {
        assert!(head.match_path(ok).is_some(), "{ok}");
    }
    for no in ["/x.json", "px.json", "x.json/p"] {
        assert!(head.match_path(no).is_none(), "{no}");
    }
    let all = p("**");
    for ok in ["x", "x/y", "x/y/z.json"] {
        assert!(all.match_path(ok).is_some(), "{ok}");
    }
    let double = p("**/**");
    assert!(double.match_path("x/y").is_some());
    assert!(double.match_path("x/").is_none());
    let caps = p("{tenant}/**/{file}.csv");
    assert_eq!(caps.match_path("t1/a/b/f.csv"), Some(vec!["t1", "f"]));
    assert_eq!(caps.match_path("t1/f.csv"), Some(vec!["t1", "f"]));
}

#[test]
fn metacharacters_are_literal() {
    let pat = p("a.b/(x)+[y]^$|?\\");
    assert!(pat.match_path("a.b/(x)+[y]^$|?\\").is_some());
    assert!(pat.match_path("aXb/(x)+[y]^$|?\\").is_none());
    assert!(pat.match_path("a.b/xx[y]^$|?\\").is_none());
}

#[test]
fn error_cases() {
    assert_eq!(err(""), PatternError::Empty);
    assert_eq!(err("/a/b"), PatternError::LeadingSlash);
    assert_eq!(err("a//b"), PatternError::EmptySegment { position: 2 });
    assert_eq!(err("a/b/"), PatternError::EmptySegment { position: 3 });
    assert_eq!(
        err("a/{b"),
        PatternError::UnclosedBrace {
            segment: "{b".into()
        }
    );
    assert_eq!(
        err("a/{b/c}"),
        PatternError::UnclosedBrace {
            segment: "{b".into()
        }
    );
    assert_eq!(
        err("a}b"),
        PatternError::StrayBrace {
            segment: "a}b".into()
        }
    );
    assert_eq!(
        err("{}.json"),
        PatternError::EmptyCaptureName {
            segment: "{}.json".into()
        }
    );
    for bad in ["1a", "a-b", "a b", "é", "a{b"] {
        assert_eq!(
            err(&format!("x/{{{bad}}}")),
            PatternError::InvalidCaptureName { name: bad.into() },
            "{bad}"
        );
    }
    assert_eq!(
        err("{a}/{a}.json"),
        PatternError::DuplicateCapture { name: "a".into() }
    );
    for bad in ["a**b", "**.json", "x/***", "a**"] {
        assert!(
            matches!(err(bad), PatternError::MisplacedGlobstar { .. }),
            "{bad}"
        );
    }
    assert_eq!(
        err("{a}{b}.csv"),
        PatternError::AdjacentCaptures {
            first: "a".into(),
            second: "b".into()
        }
    );
}

#[test]
fn error_messages_are_readable() {
    assert_eq!(
        err("{a}{b}").to_string(),
        "captures `{a}` and `{b}` are adjacent (put literal text between them)"
    );
    assert_eq!(
        err("{a}/{a}").to_string(),
        "capture `{a}` appears more than once"
    );
    assert_eq!(
        err("a//b").to_string(),
        "segment 2 is empty (`//` or a trailing `/`)"
    );
    assert_eq!(
        err("x/{b").to_string(),
        "segment `{b` has a `{` that is never closed"
    );
}

#[test]
fn valid_names() {
    let pat = p("{_a}/{B9}/{snake_case_1}");
    assert_eq!(pat.captures(), ["_a", "B9", "snake_case_1"]);
}

/// A literal path segment: no `/`, and none of the pattern syntax `{`, `}`, `*`.
fn literal_segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._~ -]{1,8}"
}

proptest! {
    #[test]
    fn replaced_segments_are_captured(
        segs in prop::collection::vec((literal_segment(), 0u8..3), 1..8)
    ) {
        let path = segs.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join("/");
        let mut expected = Vec::new();
        let pattern = segs
            .iter()
            .enumerate()
            .map(|(i, (s, kind))| match kind {
                0 => s.clone(),
                1 => {
                    expected.push(s.as_str());
                    format!("{{cap{i}}}")
                }
                _ => "*".to_owned(),
            })
            .collect::<Vec<_>>()
            .join("/");
        let pat = PathPattern::parse(&pattern).unwrap();
        prop_assert_eq!(pat.captures().len(), expected.len());
        prop_assert_eq!(pat.match_path(&path), Some(expected));
    }

    #[test]
    fn globstar_absorbs_extra_segments(
        segs in prop::collection::vec((literal_segment(), any::<bool>()), 1..6),
        at in any::<prop::sample::Index>(),
        extra in prop::collection::vec("[a-z0-9]{1,5}", 0..4),
    ) {
        let at = at.index(segs.len() + 1);
        let mut expected = Vec::new();
        let mut pattern_segs: Vec<String> = segs
            .iter()
            .enumerate()
            .map(|(i, (s, cap))| {
                if *cap {
                    expected.push(s.as_str());
                    format!("{{cap{i}}}")
                } else {
                    s.clone()
                }
            })
            .collect();
        pattern_segs.insert(at, "**".to_owned());
        let pat = PathPattern::parse(&pattern_segs.join("/")).unwrap();

        let original: Vec<&str> = segs.iter().map(|(s, _)| s.as_str()).collect();
        let original_path = original.join("/");
        prop_assert_eq!(pat.match_path(&original_path), Some(expected.clone()));

        let mut longer = original.clone();
        for (k, e) in extra.iter().enumerate() {
            longer.insert(at + k, e);
        }
        // Every other segment consumes exactly one path segment, so the match is unique.
        let longer_path = longer.join("/");
        prop_assert_eq!(pat.match_path(&longer_path), Some(expected));
    }

    #[test]
    fn literal_pattern_matches_only_itself(
        segs in prop::collection::vec(literal_segment(), 1..6),
        pos in any::<prop::sample::Index>(),
        replacement in prop::char::any(),
        extra in literal_segment(),
        extra_at in any::<prop::sample::Index>(),
    ) {
        let text = segs.join("/");
        let pat = PathPattern::parse(&text).unwrap();
        prop_assert_eq!(pat.match_path(&text), Some(vec![]));

        let chars: Vec<char> = text.chars().collect();
        let i = pos.index(chars.len());
        if chars[i] != replacement {
            let mut changed = chars.clone();
            changed[i] = replacement;
            let changed: String = changed.into_iter().collect();
            prop_assert_eq!(pat.match_path(&changed), None);
        }

        let mut added = segs.clone();
        added.insert(extra_at.index(segs.len() + 1), extra);
        let added_path = added.join("/");
        prop_assert_eq!(pat.match_path(&added_path), None);
    }

    #[test]
    fn arbitrary_input_never_panics(pattern in any::<String>(), path in any::<String>()) {
        if let Ok(pat) = PathPattern::parse(&pattern) {
            let _ = pat.match_path(&path);
            let _ = pat.match_path(&pattern);
        }
    }

    #[test]
    fn syntax_heavy_input_never_panics(
        pattern in "[a-c{}*/._]{0,16}",
        path in "[a-c{}*/._]{0,16}",
    ) {
        if let Ok(pat) = PathPattern::parse(&pattern) {
            if let Some(values) = pat.match_path(&path) {
                prop_assert_eq!(values.len(), pat.captures().len());
                prop_assert!(values.iter().all(|v| !v.is_empty() && !v.contains('/')));
            }
        }
    }

    #[test]
    fn regex_metacharacters_match_only_themselves(
        segs in prop::collection::vec(r"[a-b.+()\[\]^$|?\\]{1,6}", 1..4),
        other in prop::collection::vec(r"[a-b.+()\[\]^$|?\\]{1,6}", 1..4),
    ) {
        let text = segs.join("/");
        let pat = PathPattern::parse(&text).unwrap();
        prop_assert_eq!(pat.match_path(&text), Some(vec![]));
        let other = other.join("/");
        prop_assert_eq!(pat.match_path(&other).is_some(), other == text);
        // What `.`, `+`, `?` etc. would match as regex syntax must not match here.
        let defanged: String = text
            .chars()
            .map(|c| if c == '/' || c.is_ascii_alphanumeric() { c } else { 'a' })
            .collect();
        prop_assert_eq!(pat.match_path(&defanged).is_some(), defanged == text);
    }
}
