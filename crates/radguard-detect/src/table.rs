//! A map with a fixed bound: inserting into a full table evicts the least recently used entry,
//! so an attacker spraying source addresses or AE titles cannot grow the detectors' memory.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// A bounded least-recently-used map (`O(log n)` per operation).
#[derive(Debug)]
pub struct Lru<K, V> {
    map: HashMap<K, (V, u64)>,
    order: BTreeMap<u64, K>,
    next: u64,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    /// A table holding at most `cap` entries (at least one).
    pub fn new(cap: usize) -> Self {
        Lru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            cap: cap.max(1),
        }
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    fn stamp(&mut self) -> u64 {
        self.next = self.next.wrapping_add(1);
        self.next
    }

    /// The entry for `key`, marked as just used.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let stamp = self.stamp();
        let (_, old) = self.map.get(key)?;
        let old = *old;
        self.order.remove(&old);
        self.order.insert(stamp, key.clone());
        let slot = self.map.get_mut(key)?;
        slot.1 = stamp;
        Some(&mut slot.0)
    }

    /// The entry for `key` without marking it used.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(v, _)| v)
    }

    /// The entry for `key`, created by `make` when absent (evicting the least recently used
    /// entry when the table is full); marked as just used.
    pub fn entry_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let stamp = self.stamp();
        if !self.map.contains_key(&key) {
            while self.map.len() >= self.cap {
                let Some((_, oldest)) = self.order.pop_first() else {
                    break;
                };
                self.map.remove(&oldest);
            }
        }
        let slot = self
            .map
            .entry(key.clone())
            .or_insert_with(|| (make(), stamp));
        let old = std::mem::replace(&mut slot.1, stamp);
        if old != stamp {
            self.order.remove(&old);
        }
        self.order.insert(stamp, key);
        &mut slot.0
    }

    /// Every entry, in no particular order (not marked used).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter().map(|(k, (v, _))| (k, v))
    }

    /// Removes and returns the entry for `key`.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (v, stamp) = self.map.remove(key)?;
        self.order.remove(&stamp);
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut t = Lru::new(2);
        *t.entry_or_insert_with("a", || 0) += 1;
        *t.entry_or_insert_with("b", || 0) += 1;
        // "a" used again: "b" is now the oldest.
        *t.entry_or_insert_with("a", || 0) += 1;
        *t.entry_or_insert_with("c", || 0) += 1;
        assert_eq!(t.len(), 2);
        assert_eq!(t.peek(&"a"), Some(&2));
        assert_eq!(t.peek(&"b"), None);
        assert_eq!(t.peek(&"c"), Some(&1));
        assert_eq!(t.remove(&"a"), Some(2));
        assert_eq!(t.len(), 1);
        assert!(t.get_mut(&"c").is_some());
    }

    #[test]
    fn stays_at_its_bound() {
        let mut t = Lru::new(100);
        for i in 0..10_000u32 {
            t.entry_or_insert_with(i, || i);
            assert!(t.len() <= 100);
        }
        assert_eq!(t.order.len(), t.map.len());
    }
}
