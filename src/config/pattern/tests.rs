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
fn more_captures_than_fit_on_the_stack() {
    // Ten captures: past the matcher's stack buffer, with and without `**`.
    let names: Vec<String> = (0..10).map(|i| format!("{{c{i}}}")).collect();
    let path: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    let straight = p(&names.join("/"));
    assert!(!straight.captures().is_empty() && straight.straight);
    assert_eq!(
        straight.match_path(&path.join("/")),
        Some(path.iter().map(String::as_str).collect())
    );
    assert_eq!(straight.match_path(&path[..9].join("/")), None);
    let globbed = p(&format!("**/{}", names.join("/")));
    assert!(!globbed.straight);
    assert_eq!(
        globbed.match_path(&format!("x/y/{}", path.join("/"))),
        Some(path.iter().map(String::as_str).collect())
    );
    assert_eq!(globbed.match_path(&path[..9].join("/")), None);
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

/// The regex semantics the matcher replaced, kept as the reference it is held to: each
/// pattern compiled into one anchored regex, captures as numbered groups.
mod reference {
    use super::super::{Part, PathPattern, Segment};

    const SEGMENT: &str = "[^/]+";

    pub fn regex(pattern: &PathPattern) -> regex::Regex {
        let segments = &pattern.segments;
        let mut re = String::from(r"\A");
        let mut need_sep = false;
        for (index, segment) in segments.iter().enumerate() {
            let last = index + 1 == segments.len();
            match segment {
                Segment::Globstar if !need_sep && last => {
                    re.push_str(&format!("(?:{SEGMENT}(?:/{SEGMENT})*)?"))
                }
                Segment::Globstar if !need_sep => re.push_str(&format!("(?:{SEGMENT}/)*")),
                Segment::Globstar => re.push_str(&format!("(?:/{SEGMENT})*")),
                Segment::AnyOne => {
                    if need_sep {
                        re.push('/');
                    }
                    re.push_str(SEGMENT);
                    need_sep = true;
                }
                Segment::Literal(text) => {
                    if need_sep {
                        re.push('/');
                    }
                    re.push_str(&regex::escape(text));
                    need_sep = true;
                }
                Segment::Parts(parts) => {
                    if need_sep {
                        re.push('/');
                    }
                    for part in parts.iter() {
                        match part {
                            Part::Literal(text) => re.push_str(&regex::escape(text)),
                            Part::Capture(_) => re.push_str(&format!("({SEGMENT})")),
                            Part::Star => re.push_str("[^/]*"),
                        }
                    }
                    need_sep = true;
                }
            }
        }
        re.push_str(r"\z");
        regex::Regex::new(&re).unwrap()
    }

    /// What the regex version returned.
    pub fn match_path<'p>(pattern: &PathPattern, path: &'p str) -> Option<Vec<&'p str>> {
        let caps = regex(pattern).captures(path)?;
        Some(
            (1..=pattern.captures().len())
                .map(|i| caps.get(i).unwrap().as_str())
                .collect(),
        )
    }
}

/// Pattern segments built from a small alphabet, so generated paths often match.
fn pattern_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just("**".to_string()),
        2 => Just("*".to_string()),
        4 => "[ab.é-]{1,3}",
        6 => proptest::collection::vec(
            prop_oneof![Just("{}".to_string()), Just("*".to_string()), "[ab.é-]{1,2}"],
            1..4
        )
        .prop_map(|parts| parts.concat()),
    ]
}

/// Names the `{}` placeholders `c0`, `c1`, ... so the pattern parses.
fn name_captures(segments: Vec<String>) -> String {
    let mut n = 0;
    let joined = segments.join("/");
    let mut out = String::new();
    let mut rest = joined.as_str();
    while let Some(i) = rest.find("{}") {
        out.push_str(&rest[..i]);
        out.push_str(&format!("{{c{n}}}"));
        n += 1;
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// On generated patterns and paths over one alphabet, the matcher agrees with the
    /// regex it replaced: whether it matches, and what each capture holds.
    #[test]
    fn the_matcher_agrees_with_the_regex_semantics(
        segments in proptest::collection::vec(pattern_segment(), 1..5),
        path in "[ab.é/-]{0,14}",
    ) {
        let source = name_captures(segments);
        // Adjacent captures and the like are refused by both versions alike.
        if let Ok(pattern) = PathPattern::parse(&source) {
            let expected = reference::match_path(&pattern, &path);
            prop_assert_eq!(pattern.is_match(&path), expected.is_some(), "{} on {:?}", source, path);
            prop_assert_eq!(pattern.match_path(&path), expected, "{} on {:?}", source, path);
            if pattern.is_match(&path) {
                prop_assert!(path.starts_with(&pattern.fixed_start()), "{} on {:?}", source, path);
            }
        }
    }

    /// Paths built to match (segments of the pattern filled in) agree too: the case the
    /// random paths above hit least.
    #[test]
    fn filled_in_paths_agree_with_the_regex_semantics(
        segments in proptest::collection::vec(pattern_segment(), 1..5),
        fill in proptest::collection::vec("[ab.é-]{1,3}", 12),
        extra in 0usize..3,
    ) {
        let source = name_captures(segments.clone());
        if let Ok(pattern) = PathPattern::parse(&source) {
            let mut k = 0;
            let mut take = || { k += 1; fill[k % fill.len()].clone() };
            let mut path_segments = Vec::new();
            for seg in &segments {
                match seg.as_str() {
                    "**" => for _ in 0..extra { path_segments.push(take()) },
                    "*" => path_segments.push(take()),
                    other => path_segments.push(other.replace("{}", &take()).replace('*', &take())),
                }
            }
            let path = path_segments.join("/");
            let expected = reference::match_path(&pattern, &path);
            prop_assert_eq!(pattern.match_path(&path), expected.clone(), "{} on {:?}", source, path);
            if expected.is_some() {
                prop_assert!(path.starts_with(&pattern.fixed_start()), "{} on {:?}", source, path);
            }
        }
    }
}

#[test]
fn fixed_starts() {
    for (pattern, start) in [
        ("results/{plantation_id}/{crop}/{batch_id}.json", "results/"),
        ("a/b/c.json", "a/b/c.json"),
        ("a/b/**", "a/b"),
        ("a/**/b", "a"),
        ("a/*/b", "a/"),
        ("a/x{n}.csv", "a/x"),
        ("a/{n}.csv", "a/"),
        ("**/b", ""),
        ("*.csv", ""),
        ("{a}/b", ""),
    ] {
        assert_eq!(p(pattern).fixed_start(), start, "{pattern}");
    }
    // `a/b/**` matches `a/b` itself: the `/` after `b` is not part of the start.
    assert!(p("a/b/**").is_match("a/b"));
}

#[test]
fn the_greedy_split_of_the_regex_is_kept() {
    // `([^/]+)-([^/]+)`: the first capture takes as much as the rest allows.
    assert_eq!(p("{a}-{b}").match_path("x-y-z"), Some(vec!["x-y", "z"]));
    assert_eq!(p("*-{b}").match_path("x-y-z"), Some(vec!["z"]));
    assert_eq!(p("{a}*").match_path("é"), Some(vec!["é"]));
    assert_eq!(p("*{a}").match_path("éé"), Some(vec!["é"]));
    // Captures take whole characters: two of them need two.
    assert_eq!(p("{a}*{b}").match_path("é"), None);
    assert!(!p("{a}*{b}").is_match("é"));
    assert_eq!(p("{a}*{b}").match_path("éa"), Some(vec!["é", "a"]));
    // `**` absorbs as many segments as it can.
    assert_eq!(p("**/{x}/**").match_path("a/b/c"), Some(vec!["c"]));
}

#[test]
fn hostile_paths_stay_cheap() {
    let pattern = p("*a*a*a*a*a*a*a*a*b");
    let path = "a".repeat(5000);
    assert!(!pattern.is_match(&path));
    assert_eq!(pattern.match_path(&path), None);
    let deep = p("**/{x}/**/{y}/**/z");
    let path = vec!["s"; 3000].join("/");
    assert_eq!(deep.match_path(&path), None);
    let path = format!("{path}/z");
    assert_eq!(deep.match_path(&path).map(|v| v.len()), Some(2));
}
