//! A bounded least-recently-used cache of query vectors, keyed by the model's input.
//!
//! The key is the token ids the model reads (after the tokenizer's normalisation and
//! truncation), so texts that differ only in case, accents or spacing share an entry and
//! a hit returns exactly the vector that running the model on that input gives alone.

use std::collections::HashMap;
use std::sync::Mutex;

/// An entry's vector and when it was last used.
struct Entry {
    vector: Vec<f32>,
    used: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Vec<u32>, Entry>,
    clock: u64,
}

/// Recent query vectors, at most `capacity` of them.
pub(crate) struct QueryCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl QueryCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves the map consistent: a panic elsewhere cannot break it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn get(&self, key: &[u32]) -> Option<Vec<f32>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        inner.entries.get_mut(key).map(|e| {
            e.used = now;
            e.vector.clone()
        })
    }

    pub(crate) fn insert(&self, key: Vec<u32>, vector: Vec<f32>) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let used = inner.clock;
        if inner.entries.len() >= self.capacity && !inner.entries.contains_key(&key) {
            // A linear scan for the oldest: a few microseconds at the sizes used here,
            // next to milliseconds for the model call the entry saves.
            let oldest = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                inner.entries.remove(&oldest);
            }
        }
        inner.entries.insert(key, Entry { vector, used });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recently_used_entries() {
        let cache = QueryCache::new(2);
        cache.insert(vec![1], vec![1.0]);
        cache.insert(vec![2], vec![2.0]);
        assert_eq!(cache.get(&[1]), Some(vec![1.0]));
        // [2] is now the least recently used: it goes.
        cache.insert(vec![3], vec![3.0]);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&[2]), None);
        assert_eq!(cache.get(&[1]), Some(vec![1.0]));
        assert_eq!(cache.get(&[3]), Some(vec![3.0]));
        // Replacing an entry does not evict another.
        cache.insert(vec![3], vec![3.5]);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&[3]), Some(vec![3.5]));
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let cache = QueryCache::new(0);
        cache.insert(vec![1], vec![1.0]);
        assert_eq!(cache.get(&[1]), None);
    }
}
