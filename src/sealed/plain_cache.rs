//! The memory cache of random reads: a byte-bounded LRU of verified
//! plaintext segments, shared by every reader of a mount.

use parking_lot::Mutex;
use std::sync::Arc;

pub(super) type CacheKey = (String, String, u64);

/// A byte-bounded LRU of verified plaintext segments, keyed by object key,
/// ETag (so a new version never sees an old one's bytes) and segment index.
pub struct PlainCache {
    inner: Mutex<CacheInner>,
    capacity: usize,
}

struct CacheInner {
    lru: lru::LruCache<CacheKey, Arc<Vec<u8>>>,
    bytes: usize,
}

impl PlainCache {
    pub fn new(capacity: usize) -> Self {
        PlainCache {
            inner: Mutex::new(CacheInner {
                lru: lru::LruCache::unbounded(),
                bytes: 0,
            }),
            capacity,
        }
    }

    pub(super) fn get(&self, k: &CacheKey) -> Option<Arc<Vec<u8>>> {
        self.inner.lock().lru.get(k).cloned()
    }

    pub(super) fn put(&self, k: CacheKey, v: Arc<Vec<u8>>) {
        if v.len() > self.capacity {
            return;
        }
        let mut c = self.inner.lock();
        c.bytes += v.len();
        if let Some(old) = c.lru.put(k, v) {
            c.bytes -= old.len();
        }
        while c.bytes > self.capacity {
            match c.lru.pop_lru() {
                Some((_, old)) => c.bytes -= old.len(),
                None => break,
            }
        }
    }

    /// Plaintext bytes held now.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}
