//! Path patterns: the small glob-with-captures language a source config uses to say
//! which blob paths in its landing container it owns and which path parts to extract.
//!
//! Syntax, segment by segment (`/`-separated, matched against the whole path):
//! - `{name}`: a non-empty run of characters within one segment, captured as `name`;
//! - `*` as a whole segment: exactly one non-empty segment;
//! - `*` inside a segment (`*.json`): any run of non-`/` characters, possibly empty;
//! - `**` as a whole segment: zero or more whole (non-empty) segments;
//! - anything else: literal text.
//!
//! A pattern is parsed once per config version into a few small tokens, and matched by
//! a matcher built for this language instead of a compiled regex:
//! - [`PathPattern::is_match`] answers "does it match" without allocating, in time
//!   linear in the path times the pattern (the classic wildcard algorithm, which only
//!   ever returns to the last star: once a later star is passed, it can absorb whatever
//!   an earlier one would have). Every candidate config of an event is asked.
//! - [`PathPattern::match_path`] asks that first, then extracts the captures (so only
//!   for the winner: the router tries each candidate with it); a pattern without `**`
//!   has no split to search for, and is matched and captured in the same pass. Where a
//!   path can be split several ways (`{a}-{b}` on `x-y-z`), it picks the split a
//!   backtracking regex would, `([^/]+)-([^/]+)`: every variable part as long as the
//!   rest allows, in pattern order, so `a = x-y`. Failed states are remembered, so
//!   hostile paths cannot make it exponential.
//!
//! The property tests hold this matcher to the regex semantics it replaced, on
//! generated patterns and paths.

use std::collections::HashSet;

/// A parsed path pattern, ready to match.
#[derive(Debug, Clone)]
pub struct PathPattern {
    source: String,
    segments: Box<[Segment]>,
    captures: Vec<String>,
    /// No `**`: the pattern's segments meet the path's one for one, so one pass decides
    /// a match and finds its captures ([`capture_straight`]).
    straight: bool,
}

/// Captured values of one match are kept on the stack up to this many captures.
const STACK_CAPTURES: usize = 8;

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
}

/// One parsed segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `**`: zero or more whole segments.
    Globstar,
    /// `*`: exactly one non-empty segment.
    AnyOne,
    /// A segment that is literal text only (the common case: a plain comparison).
    Literal(Box<str>),
    /// Literals, captures and in-segment `*`s.
    Parts(Box<[Part]>),
}

/// A piece of a non-glob segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<str>),
    /// The capture's index in [`PathPattern::captures`]; at least one character.
    Capture(usize),
    /// Any run of characters, possibly empty.
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
        Ok(PathPattern {
            source: pattern.to_owned(),
            straight: !segments.contains(&Segment::Globstar),
            segments: segments.into(),
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

    /// The text every path this pattern matches starts with: its leading literal
    /// segments (with the `/` after each that another segment must follow) and the
    /// literal that begins the first segment that is not one. Lets a router turn most
    /// paths away without matching.
    pub fn fixed_start(&self) -> String {
        let mut start = String::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(text) => {
                    start.push_str(text);
                    // `**` may take no segment at all, and then nothing follows.
                    match self.segments.get(i + 1) {
                        None | Some(Segment::Globstar) => break,
                        Some(_) => start.push('/'),
                    }
                }
                Segment::Parts(parts) => {
                    if let Some(Part::Literal(text)) = parts.first() {
                        start.push_str(text);
                    }
                    break;
                }
                Segment::Globstar | Segment::AnyOne => break,
            }
        }
        start
    }

    /// Whether the whole `path` matches. Allocates nothing.
    pub fn is_match(&self, path: &str) -> bool {
        let segs = &self.segments[..];
        let (mut si, mut pos) = (0, start(path));
        // The last `**` seen: the segment after it, and where it resumes in the path.
        let mut star: Option<(usize, Option<usize>)> = None;
        loop {
            if let Some(Segment::Globstar) = segs.get(si) {
                si += 1;
                star = Some((si, pos));
                continue;
            }
            match (segs.get(si), pos) {
                (None, None) => return true,
                (Some(seg), Some(p)) => {
                    let (text, next) = segment_at(path, p);
                    if seg.matches(text) {
                        si += 1;
                        pos = next;
                        continue;
                    }
                }
                _ => {}
            }
            // Mismatch: let the last `**` absorb one more (non-empty) segment.
            match star {
                Some((after, Some(p))) => {
                    let (text, next) = segment_at(path, p);
                    if text.is_empty() {
                        return false;
                    }
                    star = Some((after, next));
                    si = after;
                    pos = next;
                }
                _ => return false,
            }
        }
    }

    /// Matches the whole `path`; returns the captured values in
    /// [`captures`](Self::captures) order.
    pub fn match_path<'p>(&self, path: &'p str) -> Option<Vec<&'p str>> {
        self.match_with(path, <[&str]>::to_vec)
    }

    /// [`Self::match_path`] without its `Vec`: on a match, `f` gets the captured values
    /// (in [`captures`](Self::captures) order) and its result is returned. The values
    /// live on the stack for the usual handful of captures; a pattern without `**`
    /// is matched and captured in one pass, any other one asks [`Self::is_match`]
    /// first, so a path that does not match costs one linear pass either way.
    pub fn match_with<'p, R>(&self, path: &'p str, f: impl FnOnce(&[&'p str]) -> R) -> Option<R> {
        let n = self.captures.len();
        if n == 0 {
            return self.is_match(path).then(|| f(&[]));
        }
        // A path that does not match allocates nothing and costs no search: it is turned
        // away first where the values would not fit on the stack, and where `**` makes
        // the captures a search.
        if (!self.straight || n > STACK_CAPTURES) && !self.is_match(path) {
            return None;
        }
        let mut stack = [""; STACK_CAPTURES];
        let mut heap = Vec::new();
        let values = if n <= STACK_CAPTURES {
            &mut stack[..n]
        } else {
            heap.resize(n, "");
            &mut heap[..]
        };
        if self.straight {
            return capture_straight(&self.segments, path, values).then(|| f(values));
        }
        let mut failed = Failed::default();
        let found = capture_segments(&self.segments, 0, start(path), path, values, &mut failed);
        debug_assert!(
            found,
            "is_match and capture extraction disagree on {path:?}"
        );
        if !found {
            // A bug, never a silent miss: the caller tries its next config.
            tracing::error!(pattern = %self.source, path, "pattern matched but yielded no captures");
            return None;
        }
        Some(f(values))
    }
}

/// Where the first segment of `path` starts; an empty path has no segments.
fn start(path: &str) -> Option<usize> {
    (!path.is_empty()).then_some(0)
}

/// The segment of `path` starting at byte `p`, and where the next one starts.
fn segment_at(path: &str, p: usize) -> (&str, Option<usize>) {
    // memchr: a vector search without the searcher `str::find` sets up per call.
    match memchr::memchr(b'/', &path.as_bytes()[p..]) {
        Some(i) => (&path[p..p + i], Some(p + i + 1)),
        None => (&path[p..], None),
    }
}

impl Segment {
    /// Whether this (non-`**`) segment matches one path segment.
    fn matches(&self, text: &str) -> bool {
        match self {
            Segment::Globstar => unreachable!("handled by the caller"),
            Segment::AnyOne => !text.is_empty(),
            Segment::Literal(l) => **l == *text,
            Segment::Parts(parts) => parts_match(parts, text.as_bytes()),
        }
    }
}

/// The wildcard algorithm over one segment: literals compare, a star takes any run of
/// characters, a capture at least one. On a mismatch only the last variable part grows,
/// one character at a time (positions stay on character boundaries: literals begin and
/// end on them).
///
/// A literal that ends the segment is compared once with its end, and a variable part
/// that ends it takes all that is left: what the search would find, without searching
/// (`{name}.json` is the common segment).
fn parts_match(parts: &[Part], s: &[u8]) -> bool {
    let Some((parts, s)) = strip_literal_end(parts, s) else {
        return false;
    };
    let (mut pi, mut si) = (0, 0);
    // The last variable part: the part after it, and where it would end if one longer.
    let mut back: Option<(usize, usize)> = None;
    loop {
        match parts.get(pi) {
            None if si == s.len() => return true,
            // The last part, variable: it takes the rest (a capture at least one character).
            Some(Part::Star) if pi + 1 == parts.len() => return true,
            Some(Part::Capture(_)) if pi + 1 == parts.len() => return si < s.len(),
            Some(Part::Star) => {
                pi += 1;
                back = Some((pi, si));
                continue;
            }
            Some(Part::Capture(_)) if si < s.len() => {
                si += char_len(s[si]);
                pi += 1;
                back = Some((pi, si));
                continue;
            }
            Some(Part::Literal(l)) if s[si..].starts_with(l.as_bytes()) => {
                si += l.len();
                pi += 1;
                continue;
            }
            _ => {}
        }
        match back {
            Some((after, end)) if end < s.len() => {
                let end = end + char_len(s[end]);
                back = Some((after, end));
                pi = after;
                si = end;
            }
            _ => return false,
        }
    }
}

/// A segment's parts and text without the literal that ends both, `None` if the text
/// does not end with the parts' last literal. Any match puts that literal at the very
/// end, so the rest of the parts must match exactly the rest of the text; what is cut
/// starts with a character's first byte, so the rest ends on a character boundary.
fn strip_literal_end<'a, 's>(parts: &'a [Part], s: &'s [u8]) -> Option<(&'a [Part], &'s [u8])> {
    match parts.split_last() {
        Some((Part::Literal(l), rest)) => {
            let l = l.as_bytes();
            s.ends_with(l).then(|| (rest, &s[..s.len() - l.len()]))
        }
        _ => Some((parts, s)),
    }
}

/// The length of the UTF-8 character that starts with byte `b`.
fn char_len(b: u8) -> usize {
    match b {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    }
}

/// Failed (segment or part, position) states of one capture extraction. Real patterns
/// settle in a few steps; only after [`Failed::BUDGET`] steps (a hostile path) are
/// failures remembered, which bounds the search by states instead of paths through them.
#[derive(Default)]
struct Failed {
    steps: u32,
    states: std::collections::HashSet<(usize, usize)>,
}

impl Failed {
    const BUDGET: u32 = 256;

    /// Counts a step; whether `state` already failed.
    fn known(&mut self, state: (usize, usize)) -> bool {
        self.steps = self.steps.saturating_add(1);
        self.steps > Self::BUDGET && self.states.contains(&state)
    }

    fn remember(&mut self, state: (usize, usize)) {
        if self.steps > Self::BUDGET {
            self.states.insert(state);
        }
    }
}

/// Captures over segments, `**` taking as many segments as the rest allows (a greedy
/// regex's choice). `si` indexes the pattern, `pos` the path.
fn capture_segments<'p>(
    segs: &[Segment],
    si: usize,
    pos: Option<usize>,
    path: &'p str,
    out: &mut [&'p str],
    failed: &mut Failed,
) -> bool {
    let Some(seg) = segs.get(si) else {
        return pos.is_none();
    };
    let key = (si, pos.unwrap_or(path.len() + 1));
    if failed.known(key) {
        return false;
    }
    let found = match seg {
        Segment::Globstar => {
            // Every place the absorbed segments could end, tried longest first.
            let mut ends = vec![pos];
            let mut at = pos;
            while let Some(p) = at {
                let (text, next) = segment_at(path, p);
                if text.is_empty() {
                    break;
                }
                ends.push(next);
                at = next;
            }
            ends.iter()
                .rev()
                .any(|&end| capture_segments(segs, si + 1, end, path, out, failed))
        }
        seg => match pos {
            None => false,
            Some(p) => {
                let (text, next) = segment_at(path, p);
                capture_segment(seg, text, out)
                    && capture_segments(segs, si + 1, next, path, out, failed)
            }
        },
    };
    if !found {
        failed.remember(key);
    }
    found
}

/// Captures of a pattern without `**` ([`PathPattern::match_with`]): segment by segment,
/// each pattern segment against the path's next one, both ending together. Whether it
/// matches and what it captures are those of [`capture_segments`], which has no choice
/// to make on such a pattern. A segment with variable parts other than a lone
/// `{name}` or `{name}<literal>` ([`captured_whole`], captured without a search) is
/// tested with the linear [`Segment::matches`] before its captures are searched for, so
/// that a segment that does not match never costs a search.
fn capture_straight<'p>(segs: &[Segment], path: &'p str, out: &mut [&'p str]) -> bool {
    let mut pos = start(path);
    for seg in segs {
        let Some(p) = pos else {
            return false;
        };
        let (text, next) = segment_at(path, p);
        let searched = matches!(seg, Segment::Parts(parts) if !captured_whole(parts));
        if searched && !seg.matches(text) {
            return false;
        }
        let captured = capture_segment(seg, text, out);
        debug_assert!(
            captured || !searched,
            "a segment matched but yielded no captures: {text:?}"
        );
        if !captured {
            return false;
        }
        pos = next;
    }
    pos.is_none()
}

/// Whether a segment of these parts is `{name}` or `{name}<literal>` (`{batch}.json`,
/// the common ones): its one capture is then the segment less the literal, found
/// without a search.
fn captured_whole(parts: &[Part]) -> bool {
    matches!(
        parts,
        [Part::Capture(_)] | [Part::Capture(_), Part::Literal(_)]
    )
}

/// Whether the (non-`**`) pattern segment `seg` matches the path segment `text`, with
/// its captures put in `out`.
fn capture_segment<'p>(seg: &Segment, text: &'p str, out: &mut [&'p str]) -> bool {
    match seg {
        // The common `{name}` segment: all of it.
        Segment::Parts(parts) if matches!(**parts, [Part::Capture(_)]) => {
            if let [Part::Capture(i)] = **parts {
                out[i] = text;
            }
            !text.is_empty()
        }
        Segment::Parts(parts) => match strip_literal_end(parts, text.as_bytes()) {
            // `{name}<literal>`: the capture is all the rest, at least one character.
            Some((&[Part::Capture(i)], rest)) => {
                out[i] = &text[..rest.len()];
                !rest.is_empty()
            }
            // `rest` ends on a character boundary (see strip_literal_end).
            Some((parts, rest)) => {
                let mut part_failed = Failed::default();
                capture_parts(parts, 0, &text[..rest.len()], 0, out, &mut part_failed)
            }
            None => false,
        },
        other => other.matches(text),
    }
}

/// Captures within one segment: each variable part as long as the rest allows, in
/// pattern order, on character boundaries.
fn capture_parts<'p>(
    parts: &[Part],
    pi: usize,
    text: &'p str,
    at: usize,
    out: &mut [&'p str],
    failed: &mut Failed,
) -> bool {
    let Some(part) = parts.get(pi) else {
        return at == text.len();
    };
    if failed.known((pi, at)) {
        return false;
    }
    let found = match part {
        Part::Literal(l) => {
            text[at..].starts_with(&**l)
                && capture_parts(parts, pi + 1, text, at + l.len(), out, failed)
        }
        Part::Star | Part::Capture(_) => {
            let min = usize::from(matches!(part, Part::Capture(_)));
            // Ends on character boundaries, longest first.
            let mut found = false;
            let ends = text[at..]
                .char_indices()
                .rev()
                .map(|(i, c)| i + c.len_utf8())
                .chain(std::iter::once(0));
            for len in ends {
                if len < min {
                    continue;
                }
                if capture_parts(parts, pi + 1, text, at + len, out, failed) {
                    if let Part::Capture(i) = part {
                        out[*i] = &text[at..at + len];
                    }
                    found = true;
                    break;
                }
            }
            found
        }
    };
    if !found {
        failed.remember((pi, at));
    }
    found
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
                            first: captures[*first].clone(),
                            second: name.to_owned(),
                        });
                    }
                } else {
                    parts.push(Part::Literal(std::mem::take(&mut literal).into()));
                }
                parts.push(Part::Capture(captures.len()));
                captures.push(name.to_owned());
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
                    parts.push(Part::Literal(std::mem::take(&mut literal).into()));
                }
                parts.push(Part::Star);
            }
            other => literal.push(other),
        }
    }
    if parts.is_empty() {
        return Ok(Segment::Literal(literal.into()));
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal.into()));
    }
    Ok(Segment::Parts(parts.into()))
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests;
