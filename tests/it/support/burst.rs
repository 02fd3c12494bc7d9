//! Bursts of known inputs and the exactly-once audit of what came out: the fault tests
//! publish a mixed burst (routable, malformed, unknown container), break something, and
//! then check that every input shows up exactly once across the routed and dead-letter
//! streams.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream;

use super::{fixture, read_all, Out};

/// What a burst should produce: how many routed and dead-lettered outputs, and the key
/// of every input (see [`key_of`]).
#[derive(Debug, Default, Clone)]
pub struct Burst {
    pub routed: u64,
    pub dead: u64,
    pub keys: HashSet<String>,
}

impl Burst {
    pub fn total(&self) -> u64 {
        self.routed + self.dead
    }

    /// Adds the inputs of `other` (another burst the test expects as well).
    pub fn add(&mut self, other: Burst) {
        self.routed += other.routed;
        self.dead += other.dead;
        self.keys.extend(other.keys);
    }
}

/// Input `i` of the burst tagged `tag`: 3 of 5 routable, 1 of 5 malformed, 1 of 5 for an
/// unknown container. Returns the body, its key and whether it routes.
pub fn mixed_input(template: &str, tag: &str, i: usize) -> (Vec<u8>, String, bool) {
    let id = format!("{tag}-{i}");
    let event = || {
        template
            .replace("831e1650-001e-001b-66ab-eeb76e069631", &id)
            .replace("batch-0042", &format!("batch-{tag}-{i}"))
    };
    match i % 5 {
        0..=2 => (event().into_bytes(), id, true),
        3 => {
            let body = format!("not json {tag} #{i}");
            (body.clone().into_bytes(), body, false)
        }
        _ => (
            event()
                .replace(
                    "containers/qc-analyzer-landing",
                    "containers/unknown-landing",
                )
                .into_bytes(),
            id,
            false,
        ),
    }
}

/// The Event Grid fixture every mixed input is made from.
pub fn mixed_template() -> String {
    String::from_utf8(fixture("events/eventgrid.json")).unwrap()
}

/// Publishes inputs `range` of the burst tagged `tag` and waits for their PubAcks.
pub async fn publish_mixed_range(
    js: &jetstream::Context,
    tag: &str,
    range: std::ops::Range<usize>,
) -> Burst {
    let template = mixed_template();
    let mut burst = Burst::default();
    let mut acks = Vec::with_capacity(1000);
    for i in range {
        let (body, key, routes) = mixed_input(&template, tag, i);
        if routes {
            burst.routed += 1;
        } else {
            burst.dead += 1;
        }
        burst.keys.insert(key);
        acks.push(
            js.publish(format!("blob.events.{tag}.{i}"), body.into())
                .await
                .unwrap(),
        );
        // The client caps PubAcks in flight; settle them in chunks, never all at the end.
        if acks.len() == 1000 {
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
    burst
}

/// `n` distinct inputs at once. Returns (routed, dead-lettered) expected.
pub async fn publish_mixed(js: &jetstream::Context, n: usize) -> (u64, u64) {
    let b = publish_mixed_range(js, "burst", 0..n).await;
    (b.routed, b.dead)
}

/// Publishes `n` inputs tagged `tag` in the background, `per_tick` every 100 ms: input
/// that keeps arriving while a test breaks things. The task returns what it published.
pub fn publish_paced(
    js: jetstream::Context,
    tag: &'static str,
    n: usize,
    per_tick: usize,
) -> tokio::task::JoinHandle<Burst> {
    tokio::spawn(async move {
        let mut burst = Burst::default();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut start = 0;
        while start < n {
            tick.tick().await;
            let end = (start + per_tick).min(n);
            burst.add(publish_mixed_range(&js, tag, start..end).await);
            start = end;
        }
        burst
    })
}

/// Which input an output stands for: the event id the worker copied into its headers,
/// else (an input without one: malformed) the dead letter's payload, the input's bytes.
pub fn key_of(out: &Out) -> String {
    match out.header("Blob-Router-Event-Id") {
        Some(id) => id.to_string(),
        None => String::from_utf8_lossy(&out.payload).into_owned(),
    }
}

/// Lost and duplicated inputs of a burst, from the outputs.
#[derive(Debug, PartialEq, Eq)]
pub struct Audit {
    pub lost: usize,
    pub duplicated: usize,
    /// Outputs for no input of the burst (should be none).
    pub strangers: usize,
}

/// Counts every expected input in `routed` and `dead`.
pub fn audit(expected: &Burst, routed: &[Out], dead: &[Out]) -> Audit {
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(expected.keys.len());
    for out in routed.iter().chain(dead) {
        *seen.entry(key_of(out)).or_default() += 1;
    }
    Audit {
        lost: expected
            .keys
            .iter()
            .filter(|k| !seen.contains_key(*k))
            .count(),
        duplicated: seen.values().map(|n| n.saturating_sub(1)).sum(),
        strangers: seen.keys().filter(|k| !expected.keys.contains(*k)).count(),
    }
}

/// Reads both output streams and asserts that every input of `expected` came out exactly
/// once: the counts per stream, no `Nats-Msg-Id` twice, every input's key once. Returns
/// the audit (all zeros) for the test's reliability line.
pub async fn assert_accounted_once(js: &jetstream::Context, expected: &Burst) -> Audit {
    let routed = read_all(js, "BLOB_ROUTED").await;
    let dead = read_all(js, "BLOB_DLQ").await;
    let audit = audit(expected, &routed, &dead);
    assert_eq!(
        audit,
        Audit {
            lost: 0,
            duplicated: 0,
            strangers: 0
        },
        "every input exactly once"
    );
    assert_eq!(
        (routed.len() as u64, dead.len() as u64),
        (expected.routed, expected.dead),
        "routed and dead-lettered as expected"
    );
    assert_unique_ids(&routed, &dead);
    audit
}

pub fn assert_unique_ids(routed: &[Out], dead: &[Out]) {
    let ids: HashSet<&str> = routed
        .iter()
        .chain(dead)
        .map(|m| m.header("Nats-Msg-Id").unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        routed.len() + dead.len(),
        "no output appears twice"
    );
}

/// One row of the README's reliability table, printed for `scripts/reliability-table.sh`.
pub fn reliability_line(fault: &str, load: &str, audit: &Audit, recovery: &str) {
    eprintln!(
        "RELIABILITY| {fault} | {load} | {} | {} | {recovery}",
        audit.lost, audit.duplicated
    );
}

/// A duration as the table shows it.
pub fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
