//! Path patterns: the small glob-with-captures language a source config uses to say
//! which blob paths in its landing container it owns and which path parts to extract.
//!
//! A pattern is parsed and compiled once, into a single anchored [`regex::Regex`], so
//! that matching an event's path is linear-time (no backtracking blow-ups on hostile
//! paths) and never compiles anything on the hot path.
//!
//! Syntax, segment by segment (`/`-separated, matched against the whole path):
//! - `{name}`: a non-empty run of characters within one segment, captured as `name`;
//! - `*` as a whole segment: exactly one non-empty segment;
//! - `*` inside a segment (`*.json`): any run of non-`/` characters, possibly empty;
//! - `**` as a whole segment: zero or more whole segments;
//! - anything else: literal text.

use std::collections::HashSet;

use regex::Regex;

/// Regex for one non-empty path segment.
const SEGMENT: &str = "[^/]+";

/// A parsed and compiled path pattern.
#[derive(Debug, Clone)]
pub struct PathPattern {
    source: String,
    regex: Regex,
    captures: Vec<String>,
}

/// Why a path pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is the empty string.
    #[error("pattern is empty")]
    Empty,
    /// The pattern starts with `/`.
    #[error("pattern starts with `/`, but patterns are relative to the container")]
    LeadingSlash,
    /// A segment is empty (`a//b`, or a trailing `/`); `position` is 1-based.
    #[error("segment {position} is empty (`//` or a trailing `/`)")]
    EmptySegment {
        /// 1-based position of the empty segment.
        position: usize,
    },
    /// A `{` without a closing `}` in the same segment.
    #[error("segment `{segment}` has a `{{` that is never closed")]
    UnclosedBrace {
        /// The offending segment.
        segment: String,
    },
    /// A `}` without an opening `{`.
    #[error("segment `{segment}` has a `}}` without a matching `{{`")]
    StrayBrace {
        /// The offending segment.
        segment: String,
    },
    /// A capture with no name: `{}`.
    #[error("segment `{segment}` has a capture with an empty name `{{}}`")]
    EmptyCaptureName {
        /// The offending segment.
        segment: String,
    },
    /// A capture name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error(
        "capture name `{name}` is invalid (use ASCII letters, digits and `_`, not starting with a digit)"
    )]
    InvalidCaptureName {
        /// The offending name.
        name: String,
    },
    /// The same capture name used twice.
    #[error("capture `{{{name}}}` appears more than once")]
    DuplicateCapture {
        /// The repeated name.
        name: String,
    },
    /// `**` used inside a segment rather than as a whole segment.
    #[error("segment `{segment}` uses `**`, which is only allowed as a whole segment")]
    MisplacedGlobstar {
        /// The offending segment.
        segment: String,
    },
    /// Two captures with nothing between them, which makes the split ambiguous.
    #[error(
        "captures `{{{first}}}` and `{{{second}}}` are adjacent (put literal text between them)"
    )]
    AdjacentCaptures {
        /// The first capture's name.
        first: String,
        /// The second capture's name.
        second: String,
    },
    /// The compiled regex exceeded the regex engine's size limits.
    #[error("pattern is too complex to compile: {0}")]
    TooComplex(String),
}

/// One parsed segment of a pattern.
enum Segment {
    /// `**`: zero or more whole segments.
    Globstar,
    /// `*`: exactly one non-empty segment.
    AnyOne,
    /// Literals, captures and in-segment `*`s.
    Parts(Vec<Part>),
}

/// A piece of a non-glob segment.
enum Part {
    Literal(String),
    Capture(String),
    Star,
}

impl PathPattern {
    /// Parses and compiles `pattern`.
    pub fn parse(pattern: &str) -> Result<PathPattern, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        if pattern.starts_with('/') {
            return Err(PatternError::LeadingSlash);
        }
        let mut captures: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut segments: Vec<Segment> = Vec::new();
        for (index, text) in pattern.split('/').enumerate() {
            if text.is_empty() {
                return Err(PatternError::EmptySegment {
                    position: index + 1,
                });
            }
            let segment = parse_segment(text, &mut captures, &mut seen)?;
            // `**/**` means the same as `**`; collapsing keeps the regex free of
            // combinations that would accept stray slashes.
            if matches!(segment, Segment::Globstar)
                && matches!(segments.last(), Some(Segment::Globstar))
            {
                continue;
            }
            segments.push(segment);
        }
        let regex =
            Regex::new(&compile(&segments)).map_err(|e| PatternError::TooComplex(e.to_string()))?;
        Ok(PathPattern {
            source: pattern.to_owned(),
            regex,
            captures,
        })
    }

    /// The pattern's source text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Capture names, in the order they appear in the pattern.
    pub fn captures(&self) -> &[String] {
        &self.captures
    }

    /// Matches the whole `path`; returns the captured values in [`captures`](Self::captures) order.
    pub fn match_path<'p>(&self, path: &'p str) -> Option<Vec<&'p str>> {
        if self.captures.is_empty() {
            return self.regex.is_match(path).then(Vec::new);
        }
        let caps = self.regex.captures(path)?;
        // Every capture group is mandatory (none sits inside a `**` group), so all are set.
        (1..=self.captures.len())
            .map(|i| caps.get(i).map(|m| m.as_str()))
            .collect()
    }
}

impl std::fmt::Display for PathPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

/// Parses one non-empty segment, registering its captures.
fn parse_segment(
    text: &str,
    captures: &mut Vec<String>,
    seen: &mut HashSet<String>,
) -> Result<Segment, PatternError> {
    match text {
        "**" => return Ok(Segment::Globstar),
        "*" => return Ok(Segment::AnyOne),
        _ => {}
    }
    let segment_err = || text.to_owned();
    let mut parts: Vec<Part> = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '{' => {
                let close = rest.find('}').ok_or_else(|| PatternError::UnclosedBrace {
                    segment: segment_err(),
                })?;
                let name = &rest[..close];
                rest = &rest[close + 1..];
                if name.is_empty() {
                    return Err(PatternError::EmptyCaptureName {
                        segment: segment_err(),
                    });
                }
                if !valid_name(name) {
                    return Err(PatternError::InvalidCaptureName {
                        name: name.to_owned(),
                    });
                }
                if !seen.insert(name.to_owned()) {
                    return Err(PatternError::DuplicateCapture {
                        name: name.to_owned(),
                    });
                }
                if literal.is_empty() {
                    if let Some(Part::Capture(first)) = parts.last() {
                        return Err(PatternError::AdjacentCaptures {
                            first: first.clone(),
                            second: name.to_owned(),
                        });
                    }
                } else {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                captures.push(name.to_owned());
                parts.push(Part::Capture(name.to_owned()));
            }
            '}' => {
                return Err(PatternError::StrayBrace {
                    segment: segment_err(),
                })
            }
            '*' => {
                if rest.starts_with('*') {
                    return Err(PatternError::MisplacedGlobstar {
                        segment: segment_err(),
                    });
                }
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Star);
            }
            other => literal.push(other),
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(Segment::Parts(parts))
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Builds the anchored regex source. Captures become the numbered groups, in order;
/// everything else is non-capturing.
fn compile(segments: &[Segment]) -> String {
    let mut re = String::from(r"\A");
    // Whether a `/` must precede the next segment (false at the start, and right
    // after a leading `**`, whose regex already ends in `/`).
    let mut need_sep = false;
    for (index, segment) in segments.iter().enumerate() {
        let last = index + 1 == segments.len();
        match segment {
            Segment::Globstar if !need_sep && last => {
                // The whole pattern is `**`: any sequence of segments, even none.
                re.push_str(&format!("(?:{SEGMENT}(?:/{SEGMENT})*)?"));
            }
            Segment::Globstar if !need_sep => {
                re.push_str(&format!("(?:{SEGMENT}/)*"));
            }
            Segment::Globstar => {
                re.push_str(&format!("(?:/{SEGMENT})*"));
            }
            Segment::AnyOne => {
                if need_sep {
                    re.push('/');
                }
                re.push_str(SEGMENT);
                need_sep = true;
            }
            Segment::Parts(parts) => {
                if need_sep {
                    re.push('/');
                }
                for part in parts {
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
    re
}

#[cfg(test)]
mod tests {
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
}
