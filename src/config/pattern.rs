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
mod tests;
