//! The read side of the cache: an immutable index from container to its ordered,
//! compiled candidate configs. A new index is made on every change and swapped in
//! atomically, so a reader holds one consistent view for as long as it needs it and
//! never waits for a writer.
//!
//! The map is split into [`SHARDS`] shards behind their own `Arc`s: a change to one
//! container copies the shard list (pointers) and that one shard, not every container,
//! so applying one document stays cheap however many configs the cache holds.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};

use crate::config::SourceConfig;

/// Shards of the container map; a change copies one (about containers / SHARDS entries).
const SHARDS: usize = 256;

type Shard = HashMap<Arc<str>, Arc<[Arc<SourceConfig>]>>;

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
    /// The configs to try, in order, for events of `container`.
    pub fn candidates(&self, container: &str) -> &[Arc<SourceConfig>] {
        self.shards[shard_of(container)]
            .get(container)
            .map(|c| &c[..])
            .unwrap_or(&[])
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
        shard.insert(container.clone(), list.into());
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
}
