//! The read side of the cache: an immutable index from container to its ordered,
//! compiled candidate configs. A new index is built on every change and swapped in
//! atomically, so a reader holds one consistent view for as long as it needs it and
//! never waits for a writer.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::SourceConfig;

/// Enabled `blob_trigger` configs per landing container, in match order.
#[derive(Debug, Default, Clone)]
pub struct Index {
    containers: HashMap<String, Arc<[Arc<SourceConfig>]>>,
}

impl Index {
    /// The configs to try, in order, for events of `container`.
    pub fn candidates(&self, container: &str) -> &[Arc<SourceConfig>] {
        self.containers
            .get(container)
            .map(|c| &c[..])
            .unwrap_or(&[])
    }

    /// Number of containers with at least one candidate.
    pub fn container_count(&self) -> usize {
        self.containers.len()
    }

    /// Builds an index from scratch.
    pub fn build<'a>(configs: impl IntoIterator<Item = &'a Arc<SourceConfig>>) -> Index {
        let mut by: HashMap<&str, Vec<&'a Arc<SourceConfig>>> = HashMap::new();
        for c in configs {
            by.entry(c.container.as_str()).or_default().push(c);
        }
        let mut index = Index::default();
        for (container, list) in by {
            index.set(container, list);
        }
        index
    }

    /// Rebuilds `container`'s entry in place (for a writer holding a private copy).
    pub(crate) fn set<'a>(
        &mut self,
        container: &str,
        configs: impl IntoIterator<Item = &'a Arc<SourceConfig>>,
    ) {
        let mut list: Vec<Arc<SourceConfig>> = configs
            .into_iter()
            .filter(|c| c.enabled && c.blob_trigger)
            .cloned()
            .collect();
        if list.is_empty() {
            self.containers.remove(container);
            return;
        }
        list.sort_by(|a, b| SourceConfig::order(a, b));
        self.containers.insert(container.to_string(), list.into());
    }
}
