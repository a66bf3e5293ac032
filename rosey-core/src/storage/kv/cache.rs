//! The [`KvService`](super::KvService)'s read cache: what each (plugin, key) holds — a value, or
//! known absent — so that a `get` of a key already seen never reaches the database.
//!
//! It is correct only while the service is the only writer of the keys it caches; every write goes
//! through a [`WriteTicket`], which updates the cache with the outcome (or forgets the key when the
//! outcome is unknown). A `get` that missed fills the cache only if no write started or ended while
//! it read the database ([`KvCache::fill`]), so a slow read cannot put back a value a write just
//! replaced. The cache is bounded by bytes and forgets the oldest-inserted entries first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::storage::KvEntry;

/// Bytes counted per entry on top of its plugin name, key and value: the map and queue slots and the
/// shared key's header, roughly, so that many tiny entries cannot exceed the bound unnoticed.
const ENTRY_OVERHEAD: usize = 96;

/// What the cache knows of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cached {
    /// The key holds this entry.
    Present(KvEntry),
    /// The key does not exist.
    Absent,
}

/// The write generation when a `get` began; see [`KvCache::fill`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Generation(u64);

/// A byte-bounded map (plugin, key) → [`Cached`], evicting the oldest-inserted entries first.
#[derive(Debug)]
pub(super) struct KvCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Arc<str>, Slot>,
    /// Keys in insertion order, each with the `seq` it was inserted with; a record whose entry was
    /// since replaced or removed no longer matches its slot's `seq` and is skipped.
    order: VecDeque<(Arc<str>, u64)>,
    bytes: usize,
    next_seq: u64,
    /// Bumped when a write starts and when it ends.
    generation: u64,
}

#[derive(Debug)]
struct Slot {
    state: Cached,
    seq: u64,
    cost: usize,
}

/// One map key for (plugin, key); the length prefix keeps every pair distinct whatever they contain.
fn cache_key(plugin: &str, key: &str) -> String {
    format!("{}:{plugin}{key}", plugin.len())
}

impl KvCache {
    /// An empty cache holding at most about `max_bytes` of plugin names, keys and values.
    pub(super) fn new(max_bytes: usize) -> Self {
        Self { max_bytes, inner: Mutex::default() }
    }

    /// What the cache knows of `plugin`'s `key`, if anything.
    pub(super) fn get(&self, plugin: &str, key: &str) -> Option<Cached> {
        let inner = self.inner.lock();
        inner.entries.get(cache_key(plugin, key).as_str()).map(|slot| slot.state.clone())
    }

    /// The generation to pass to [`fill`](Self::fill), taken before reading the database.
    pub(super) fn generation(&self) -> Generation {
        Generation(self.inner.lock().generation)
    }

    /// Records what a read of the database found, unless a write started or ended since `seen` was
    /// taken (the read may then be older than what the write left); whether it was recorded.
    pub(super) fn fill(&self, seen: Generation, plugin: &str, key: &str, state: Cached) -> bool {
        let mut inner = self.inner.lock();
        if inner.generation != seen.0 {
            return false;
        }
        inner.insert(cache_key(plugin, key).into(), state, self.max_bytes);
        true
    }

    /// Announces a write of `plugin`'s `key`; the ticket records its outcome.
    pub(super) fn begin_write(self: &Arc<Self>, plugin: &str, key: &str) -> WriteTicket {
        self.inner.lock().generation += 1;
        WriteTicket { cache: self.clone(), key: Some(cache_key(plugin, key).into()) }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

impl Inner {
    fn insert(&mut self, key: Arc<str>, state: Cached, max_bytes: usize) {
        self.remove(&key);
        let value_len = match &state {
            Cached::Present(entry) => entry.value.len(),
            Cached::Absent => 0,
        };
        let cost = key.len() + value_len + ENTRY_OVERHEAD;
        if cost > max_bytes {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((key.clone(), seq));
        self.entries.insert(key, Slot { state, seq, cost });
        self.bytes += cost;
        while self.bytes > max_bytes {
            let Some((oldest, seq)) = self.order.pop_front() else { break };
            if self.entries.get(&oldest).is_some_and(|slot| slot.seq == seq) {
                self.remove(&oldest);
            }
        }
        // Replaced and removed entries leave records behind; drop them before they outnumber the
        // live ones, so a key set over and over cannot grow the queue without bound.
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order.retain(|(key, seq)| entries.get(key).is_some_and(|slot| slot.seq == *seq));
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(slot) = self.entries.remove(key) {
            self.bytes -= slot.cost;
        }
    }
}

/// A write in progress, from [`KvCache::begin_write`]: [`succeeded`](Self::succeeded) records what
/// the key now holds; dropped otherwise (failure, timeout, panic, cancellation — the outcome is
/// unknown), it makes the cache forget the key.
#[derive(Debug)]
pub(super) struct WriteTicket {
    cache: Arc<KvCache>,
    key: Option<Arc<str>>,
}

impl WriteTicket {
    /// The write is in the database: the key now holds `state`.
    pub(super) fn succeeded(mut self, state: Cached) {
        if let Some(key) = self.key.take() {
            let mut inner = self.cache.inner.lock();
            inner.generation += 1;
            inner.insert(key, state, self.cache.max_bytes);
        }
    }
}

impl Drop for WriteTicket {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut inner = self.cache.inner.lock();
            inner.generation += 1;
            inner.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(value: &str, at: i64) -> Cached {
        Cached::Present(KvEntry { value: value.to_owned(), updated_at_us: at })
    }

    fn fill(cache: &KvCache, key: &str, state: Cached) {
        assert!(cache.fill(cache.generation(), "p", key, state));
    }

    #[test]
    fn remembers_values_and_absent_keys_per_plugin() {
        let cache = KvCache::new(1 << 20);
        assert_eq!(cache.get("p", "a"), None);
        fill(&cache, "a", present("1", 5));
        fill(&cache, "gone", Cached::Absent);
        assert_eq!(cache.get("p", "a"), Some(present("1", 5)));
        assert_eq!(cache.get("p", "gone"), Some(Cached::Absent));
        assert_eq!(cache.get("q", "a"), None, "another plugin's key");
        // (plugin, key) pairs that concatenate alike stay apart.
        assert!(cache.fill(cache.generation(), "ab", "c", present("x", 1)));
        assert_eq!(cache.get("a", "bc"), None);
    }

    #[test]
    fn stays_within_its_bytes_evicting_the_oldest_first() {
        let value = "v".repeat(100);
        let cost = "1:pk0".len() + value.len() + ENTRY_OVERHEAD;
        let cache = KvCache::new(3 * cost);
        for key in ["k0", "k1", "k2"] {
            fill(&cache, key, present(&value, 1));
        }
        assert_eq!(cache.bytes(), 3 * cost);
        fill(&cache, "k3", present(&value, 1));
        assert_eq!(cache.bytes(), 3 * cost);
        assert_eq!(cache.get("p", "k0"), None, "the oldest went");
        for key in ["k1", "k2", "k3"] {
            assert!(cache.get("p", key).is_some(), "{key} stayed");
        }
        // Re-inserting k1 makes it the newest: k2 goes next.
        fill(&cache, "k1", present(&value, 2));
        fill(&cache, "k4", present(&value, 1));
        assert_eq!(cache.get("p", "k2"), None);
        assert_eq!(cache.get("p", "k1"), Some(present(&value, 2)));
        assert!(cache.bytes() <= 3 * cost);
    }

    #[test]
    fn an_entry_larger_than_the_bound_is_not_kept() {
        let cache = KvCache::new(200);
        fill(&cache, "k", present("1", 1));
        fill(&cache, "k", present(&"x".repeat(200), 2));
        assert_eq!(cache.get("p", "k"), None, "neither the new value nor the old one");
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn a_key_rewritten_many_times_keeps_the_queue_small() {
        let cache = Arc::new(KvCache::new(1 << 20));
        for n in 0..10_000 {
            cache.begin_write("p", "counter").succeeded(present(&n.to_string(), n));
        }
        assert_eq!(cache.get("p", "counter"), Some(present("9999", 9999)));
        assert!(cache.inner.lock().order.len() <= 66);
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_recorded() {
        let cache = Arc::new(KvCache::new(1 << 20));
        // A get begins, reads the old value; meanwhile a set starts and commits.
        let seen = cache.generation();
        let write = cache.begin_write("p", "k");
        write.succeeded(present("new", 2));
        assert!(!cache.fill(seen, "p", "k", present("old", 1)), "refused");
        assert_eq!(cache.get("p", "k"), Some(present("new", 2)));

        // A write merely started since the read began also refuses it.
        let seen = cache.generation();
        let write = cache.begin_write("p", "k");
        assert!(!cache.fill(seen, "p", "k", present("old", 1)));
        drop(write);
        // A read begun after the write ended is recorded.
        fill(&cache, "k", present("new", 2));
    }

    #[test]
    fn a_write_whose_outcome_is_unknown_forgets_the_key() {
        let cache = Arc::new(KvCache::new(1 << 20));
        fill(&cache, "k", present("old", 1));
        fill(&cache, "other", present("x", 1));
        drop(cache.begin_write("p", "k"));
        assert_eq!(cache.get("p", "k"), None);
        assert_eq!(cache.get("p", "other"), Some(present("x", 1)), "other keys stay");
        cache.begin_write("p", "k").succeeded(Cached::Absent);
        assert_eq!(cache.get("p", "k"), Some(Cached::Absent));
    }
}
