//! Sharing identical immutable values between configs: 100,000 configs typically use a
//! handful of path patterns, field lists and one container per ten configs, so each
//! distinct value is compiled and stored once and handed out as an `Arc`.
//!
//! The table holds weak references: a value lives as long as some config uses it, and
//! dead entries are swept whenever the table has doubled since the last sweep. It is
//! touched only when a config is compiled, never on the per-event path.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

/// A table of shared values keyed by what they are made from.
pub(crate) struct Interner<K, V: ?Sized> {
    table: Mutex<Table<K, V>>,
}

struct Table<K, V: ?Sized> {
    map: HashMap<K, Weak<V>>,
    /// Entries after the last sweep: the next sweep runs at twice as many.
    swept_at: usize,
}

impl<K: Hash + Eq, V: ?Sized> Interner<K, V> {
    pub(crate) fn new() -> Self {
        Interner {
            table: Mutex::new(Table {
                map: HashMap::new(),
                swept_at: 0,
            }),
        }
    }

    /// The shared value for `key`, made by `make` if no live one exists; `make`'s
    /// error is returned as is (and nothing is stored).
    pub(crate) fn get_or_try<Q, E>(
        &self,
        key: &Q,
        make: impl FnOnce() -> Result<(K, Arc<V>), E>,
    ) -> Result<Arc<V>, E>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut table = self.table.lock().expect("interner lock");
        if let Some(live) = table.map.get(key).and_then(Weak::upgrade) {
            return Ok(live);
        }
        let (key, value) = make()?;
        table.map.insert(key, Arc::downgrade(&value));
        if table.map.len() >= 2 * table.swept_at.max(64) {
            table.map.retain(|_, v| v.strong_count() > 0);
            table.swept_at = table.map.len();
        }
        Ok(value)
    }
}

/// Interns strings (container names).
pub(crate) fn str(table: &Interner<Box<str>, str>, s: &str) -> Arc<str> {
    let made: Result<_, std::convert::Infallible> =
        table.get_or_try(s, || Ok((s.into(), s.into())));
    match made {
        Ok(shared) => shared,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_are_shared_while_used_and_dead_ones_are_swept() {
        let table: Interner<Box<str>, str> = Interner::new();
        let a = str(&table, "container-1");
        let b = str(&table, "container-1");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &str(&table, "container-2")));
        drop((a, b));
        let c = str(&table, "container-1");
        assert_eq!(&*c, "container-1");
        // Many short-lived values: the table does not keep growing with them.
        for i in 0..10_000 {
            str(&table, &format!("gone-{i}"));
        }
        assert!(table.table.lock().unwrap().map.len() < 200);
        assert!(Arc::ptr_eq(&c, &str(&table, "container-1")));
    }

    #[test]
    fn a_failed_make_stores_nothing() {
        let table: Interner<Box<str>, str> = Interner::new();
        let err: Result<Arc<str>, &str> = table.get_or_try("x", || Err("no"));
        assert_eq!(err.unwrap_err(), "no");
        assert!(table.table.lock().unwrap().map.is_empty());
    }
}
