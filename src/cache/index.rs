//! The read side of the cache: an immutable index from container to its ordered,
//! compiled candidate configs. A new index is made on every change and swapped in
//! atomically, so a reader holds one consistent view for as long as it needs it and
//! never waits for a writer.
//!
//! The map is split into [`SHARDS`] shards behind their own `Arc`s: a change to one
//! container copies the shard list (pointers) and that one shard, not every container,
//! so applying one document stays cheap however many configs the cache holds.
//!
//! Beside each of a container's configs lies its [`Screen`]: the first bytes every path
//! its pattern matches starts with. A router reads these and only opens the configs
//! whose screen a path passes: each config is its own allocation, and on a busy machine
//! reading ten of them per event costs more than matching the one that fits. The
//! screens and the pointers to their configs are one allocation per container, found
//! from the map's slot: with 100,000 configs, most of it is not in the CPU's caches, and
//! each separate allocation on the way to the config was another wait for memory.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};

use crate::config::SourceConfig;

/// Shards of the container map; a change copies one (about containers / SHARDS entries).
const SHARDS: usize = 256;

type Shard = HashMap<Arc<str>, Arc<[Candidate]>>;

/// One of a container's candidates (kept in match order): its screen, then its config.
#[derive(Debug)]
struct Candidate {
    screen: Screen,
    config: Arc<SourceConfig>,
}

/// Bytes of a pattern's fixed start kept in a [`Screen`]: eight compared as one word,
/// the rest byte by byte (the screen is 32 bytes).
const SCREEN_BYTES: usize = 23;

/// What a path must start with for one config to match it: the first
/// [`SCREEN_BYTES`] bytes of [`PathPattern::fixed_start`](crate::config::PathPattern::fixed_start)
/// (nothing for a config without a pattern). The first eight are one word and a mask,
/// so that turning a config away (most of a container's, for most paths) is one
/// compare with the path's first word ([`PathHead`]), not a call to `memcmp`.
#[derive(Debug, Clone, Copy)]
struct Screen {
    /// The first (up to) eight bytes, as [`PathHead`] reads a path's, zero beyond `len`.
    head: u64,
    /// Ones over the bytes of `head` that count.
    mask: u64,
    len: u8,
    /// Bytes 8.. of the start, the first `len - 8` of them used.
    rest: [u8; SCREEN_BYTES - 8],
}

/// A path's first eight bytes as one little-endian word (zero beyond its end), read
/// once per decision and compared with each candidate's [`Screen`].
#[derive(Clone, Copy)]
struct PathHead(u64);

impl PathHead {
    fn of(path: &str) -> PathHead {
        PathHead(first_word(path.as_bytes()))
    }
}

/// The first (up to) eight bytes of `bytes` as a little-endian word, zero beyond its
/// end: what a [`Screen`] keeps of a start and a [`PathHead`] of a path. Most paths
/// are longer than eight bytes and take one load.
fn first_word(bytes: &[u8]) -> u64 {
    match bytes.first_chunk::<8>() {
        Some(word) => u64::from_le_bytes(*word),
        None => {
            let mut word = [0u8; 8];
            word[..bytes.len()].copy_from_slice(bytes);
            u64::from_le_bytes(word)
        }
    }
}

impl Screen {
    fn of(config: &SourceConfig) -> Screen {
        let fixed = config
            .pattern
            .as_ref()
            .map(|p| p.fixed_start())
            .unwrap_or_default();
        Screen::starting(fixed.as_bytes())
    }

    /// The screen of paths starting with `fixed` (its first [`SCREEN_BYTES`]).
    fn starting(fixed: &[u8]) -> Screen {
        // A cut inside a character still leaves bytes every matching path starts with.
        let start = &fixed[..fixed.len().min(SCREEN_BYTES)];
        let (first, later) = start.split_at(start.len().min(8));
        let mut rest = [0; SCREEN_BYTES - 8];
        rest[..later.len()].copy_from_slice(later);
        Screen {
            head: first_word(first),
            mask: u64::MAX
                .checked_shl(8 * first.len() as u32)
                .map_or(u64::MAX, |m| !m),
            len: start.len() as u8,
            rest,
        }
    }

    /// False when no path like `path` (whose first word is `head`) can match; true says
    /// only "maybe".
    fn admits(&self, path: &str, head: PathHead) -> bool {
        let len = usize::from(self.len);
        path.len() >= len
            && head.0 & self.mask == self.head
            && (len <= 8 || path.as_bytes()[8..len] == self.rest[..len - 8])
    }
}

/// Enabled `blob_trigger` configs per landing container, in match order.
#[derive(Debug, Clone)]
pub struct Index {
    shards: Vec<Arc<Shard>>,
}

impl Default for Index {
    fn default() -> Self {
        // One empty shard shared by all: a writer's `make_mut` copies before changing one.
        let empty = Arc::new(Shard::new());
        Index {
            shards: std::iter::repeat_n(empty, SHARDS).collect(),
        }
    }
}

/// The shard of a container (a fast hash: it runs once per event).
fn shard_of(container: &str) -> usize {
    (xxhash_rust::xxh3::xxh3_64(container.as_bytes()) % SHARDS as u64) as usize
}

impl Index {
    /// The configs to try, in order, for events of `container` (for tests and
    /// diagnostics: the router asks for [`screened`](Self::screened) ones).
    pub fn candidates(&self, container: &str) -> Vec<Arc<SourceConfig>> {
        self.entry(container)
            .iter()
            .map(|c| c.config.clone())
            .collect()
    }

    /// The candidates for a path in `container` whose patterns may match it, in order:
    /// [`candidates`](Self::candidates) less those its screen turns away.
    pub fn screened<'a>(
        &'a self,
        container: &str,
        path: &'a str,
    ) -> impl Iterator<Item = &'a Arc<SourceConfig>> + 'a {
        let head = PathHead::of(path);
        self.entry(container)
            .iter()
            .filter(move |c| c.screen.admits(path, head))
            .map(|c| &c.config)
    }

    /// `container`'s candidates, none if it has no entry.
    fn entry(&self, container: &str) -> &[Candidate] {
        self.shards[shard_of(container)]
            .get(container)
            .map_or(&[], |e| &e[..])
    }

    /// Number of containers with at least one candidate.
    pub fn container_count(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// Builds an index from scratch.
    pub fn build<'a>(configs: impl IntoIterator<Item = &'a Arc<SourceConfig>>) -> Index {
        let mut by: HashMap<&Arc<str>, Vec<&'a Arc<SourceConfig>>> = HashMap::new();
        for c in configs {
            by.entry(&c.container).or_default().push(c);
        }
        let mut index = Index::default();
        for (container, list) in by {
            index.set(container, list);
        }
        index
    }

    /// Rebuilds `container`'s entry in place (for a writer holding a private copy: only
    /// the shard it lands in is copied).
    pub(crate) fn set<'a>(
        &mut self,
        container: &Arc<str>,
        configs: impl IntoIterator<Item = &'a Arc<SourceConfig>>,
    ) {
        let mut list: Vec<Arc<SourceConfig>> = configs
            .into_iter()
            .filter(|c| c.enabled && c.blob_trigger)
            .cloned()
            .collect();
        let slot = &mut self.shards[shard_of(container)];
        if list.is_empty() {
            // Copy the shard only when there is something to remove from it.
            if slot.contains_key(&**container) {
                Arc::make_mut(slot).remove(&**container);
            }
            return;
        }
        let shard = Arc::make_mut(slot);
        list.sort_by(|a, b| SourceConfig::order(a, b));
        let candidates: Arc<[Candidate]> = list
            .into_iter()
            .map(|config| Candidate {
                screen: Screen::of(&config),
                config,
            })
            .collect();
        shard.insert(container.clone(), candidates);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: &str, container: &str) -> Arc<SourceConfig> {
        let doc = serde_json::json!({"_id": id,
            "ingestion": {"mode": "blob_trigger", "landing_container": container}});
        Arc::new(SourceConfig::from_value(&doc, "blob.routed").unwrap())
    }

    #[test]
    fn a_change_copies_one_shard_and_shares_the_rest() {
        let configs: Vec<_> = (0..1000)
            .map(|i| config(&format!("c{i}"), &format!("container-{i}")))
            .collect();
        let before = Index::build(configs.iter());
        assert_eq!(before.container_count(), 1000);
        let mut after = before.clone();
        let extra = config("new", "container-7");
        after.set(&"container-7".into(), [&configs[7], &extra]);
        let changed = shard_of("container-7");
        for (i, (a, b)) in before.shards.iter().zip(&after.shards).enumerate() {
            assert_eq!(Arc::ptr_eq(a, b), i != changed, "shard {i}");
        }
        assert_eq!(
            before.candidates("container-7").len(),
            1,
            "readers keep theirs"
        );
        assert_eq!(after.candidates("container-7").len(), 2);
        after.set(&"container-7".into(), []);
        assert!(after.candidates("container-7").is_empty());
        assert_eq!(after.container_count(), 999);
    }

    fn with_pattern(id: &str, priority: i64, pattern: Option<&str>) -> Arc<SourceConfig> {
        let mut doc = serde_json::json!({"_id": id, "priority": priority,
            "ingestion": {"mode": "blob_trigger", "landing_container": "c"}});
        if let Some(p) = pattern {
            doc["ingestion"]["path_pattern"] = serde_json::json!({ "pattern": p });
        }
        Arc::new(SourceConfig::from_value(&doc, "blob.routed").unwrap())
    }

    proptest::proptest! {
        /// A screen admits exactly the paths that start with its bytes: the word
        /// compare, its mask and the bytes after it agree with a plain `starts_with`
        /// (starts and paths of every length around 8 and 23, cut anywhere, with
        /// multi-byte characters and zero bytes, which the word pads with).
        #[test]
        fn a_screen_admits_what_starts_with_its_bytes(
            start in "[ab/é\\x00]{0,30}",
            cut in 0usize..40,
            path in "[ab/é\\x00]{0,30}",
            prefixed in proptest::bool::ANY,
        ) {
            // Half the paths start with the whole string, so with the screen's bytes
            // however they are cut (inside a character too).
            let path = if prefixed { format!("{start}{path}") } else { path };
            let start = &start.as_bytes()[..cut.min(start.len())];
            let screen = Screen::starting(start);
            let kept = &start[..start.len().min(SCREEN_BYTES)];
            proptest::prop_assert_eq!(
                screen.admits(&path, PathHead::of(&path)),
                path.as_bytes().starts_with(kept),
                "start {:?} path {:?}", start, path
            );
        }
    }

    #[test]
    fn screens_turn_away_only_configs_that_cannot_match() {
        // 23 bytes of screen: a long fixed start is cut, here inside `é` (bytes 22-23).
        let long = "abcdefghijklmnopqrstuvé/{x}.json";
        let configs = [
            with_pattern("any", 0, None),
            with_pattern("a", 5, Some("a/**")),
            with_pattern("b", 4, Some("b/{x}")),
            with_pattern("csv", 3, Some("**/*.csv")),
            with_pattern("long", 2, Some(long)),
        ];
        let index = Index::build(configs.iter());
        let ids = |path: &str| -> Vec<String> {
            index.screened("c", path).map(|c| c.id.clone()).collect()
        };
        assert_eq!(ids("a"), ["a", "csv", "any"]);
        assert_eq!(ids("b/1"), ["b", "csv", "any"]);
        assert_eq!(ids("x/y.csv"), ["csv", "any"]);
        assert_eq!(
            ids("abcdefghijklmnopqrstuvé/1.json"),
            ["a", "csv", "long", "any"]
        );
        assert_eq!(ids("abcdefghijklmnopqrstuvx/1.json"), ["a", "csv", "any"]);
        // `ê` shares its first byte with `é`: past the screen, but no match.
        assert_eq!(
            ids("abcdefghijklmnopqrstuvê/1.json"),
            ["a", "csv", "long", "any"]
        );
        assert!(configs[4]
            .match_path("abcdefghijklmnopqrstuvê/1.json")
            .is_none());
        assert!(index.screened("elsewhere", "a").next().is_none());
        // Every config a path matches is among the screened ones.
        for path in [
            "a",
            "a/b",
            "b/1",
            "x/y.csv",
            "abcdefghijklmnopqrstuvé/1.json",
        ] {
            for c in index.candidates("c") {
                if c.match_path(path).is_some() {
                    assert!(ids(path).contains(&c.id), "{} on {path}", c.id);
                }
            }
        }
    }
}
