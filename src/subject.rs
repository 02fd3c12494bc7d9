//! What the worker may put in a NATS subject: one set of rules for the subjects configs
//! route to (checked when a config is loaded) and the names and prefixes flags give
//! (checked when the flags are parsed).
//!
//! Why it matters beyond a clear error: a subject with a space or a line break in it
//! would break the protocol line it is written on. The client checks every subject it
//! publishes for that, about a thousand instructions per routed event between the
//! output and the ack; the `run` command's connections skip that check
//! ([`crate::nats::ConnectSettings::with_subjects_checked`]), since everything they
//! publish to is one of these subjects, a reply subject the server gave, or an inbox of
//! the client's own. Names that come in messages are never put in a subject there: a
//! max-deliveries advisory is acted on only when it names the flags' stream and
//! consumer (`run`'s `Watched`).

/// A subject to publish to: non-empty `.`-separated tokens, no whitespace or control
/// characters, no wildcards. `Err` says why not.
pub fn check_publish(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("it is empty".to_owned());
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains whitespace or a control character".to_owned());
    }
    if subject.split('.').any(str::is_empty) {
        return Err("it has an empty token (leading, trailing or doubled `.`)".to_owned());
    }
    if subject.contains(['*', '>']) {
        return Err("wildcards `*` and `>` are not allowed when publishing".to_owned());
    }
    Ok(())
}

/// A token of subjects (a stream or consumer name, which the JetStream API puts in its
/// subjects; a config's `_id`): non-empty, no whitespace or control characters, no
/// `.`, `*` or `>`. `Err` says why not, to follow the name: "is empty", "contains ...".
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".to_owned());
    }
    let bad: Vec<String> = name
        .chars()
        .filter(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>'))
        .map(|c| format!("{c:?}"))
        .fold(Vec::new(), |mut unique, c| {
            if !unique.contains(&c) {
                unique.push(c);
            }
            unique
        });
    if bad.is_empty() {
        return Ok(());
    }
    Err(format!(
        "contains {} (it becomes a NATS subject token, so whitespace, `.`, `*` and `>` \
         are not allowed)",
        bad.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_subjects() {
        for ok in ["a", "blob.routed.cfg-1", "$JS.API.x", "ü.é"] {
            assert_eq!(check_publish(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("a b", "whitespace"),
            ("a\tb", "whitespace"),
            ("a\r\nb", "whitespace"),
            ("a\u{0}b", "whitespace"),
            ("a..b", "empty token"),
            (".a", "empty token"),
            ("a.", "empty token"),
            ("a.*", "wildcards"),
            ("a.>", "wildcards"),
        ] {
            let e = check_publish(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn names() {
        for ok in ["BLOB_EVENTS", "blob-router", "in-1"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_name("").unwrap_err(), "is empty");
        let e = check_name("a b.c d").unwrap_err();
        assert!(e.starts_with("contains ' ', '.' ("), "{e}");
        for bad in ["a*", "a>", "a\nb", "a\tb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Whatever passes is something the client's own check would pass too (no
        /// space, tab, CR or LF): the connections that skip that check lose nothing.
        #[test]
        fn what_passes_cannot_break_a_protocol_line(s in "[a-z. \t\r\n*>\u{0}-\u{1f}é]{0,12}") {
            let framing_safe = !s.is_empty() && !s.contains([' ', '\t', '\r', '\n']);
            if check_publish(&s).is_ok() || check_name(&s).is_ok() {
                proptest::prop_assert!(framing_safe, "{:?}", s);
            }
        }
    }
}
