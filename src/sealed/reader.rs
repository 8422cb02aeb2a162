//! Reading an opened object the way applications read files: a sequential
//! reader gets an adaptive window of concurrent ranged GETs running ahead of
//! it, a random reader fetches only the segments it touches.
//!
//! Why this shape: one GET per kernel read request (128 KiB–1 MiB) would make
//! throughput a function of round-trip latency, and decrypting on the FUSE
//! task would serialise the CPU work with the network. Here each read-ahead
//! chunk (several MiB) is its own task that fetches and then decrypts on a
//! blocking thread, so fetching chunk N+1 overlaps decrypting chunk N and
//! both cores decrypt at once.
//!
//! Memory is bounded whatever the file size: each reader keeps at most
//! `max_window` chunks ahead, read-ahead chunks beyond the one being read
//! need a permit from a budget shared by every reader of the mount, and
//! random reads go through a byte-bounded LRU of verified plaintext segments
//! ([`PlainCache`]). Only verified plaintext is ever held or returned.

use super::{SealedObject, SegmentCache};
use crate::error::{Error, Result};
use crate::store::ObjectStore;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// Tunables of read-ahead (see [`ReadSettings::default`]).
#[derive(Clone, Debug)]
pub struct ReadSettings {
    /// Plaintext bytes per read-ahead GET (rounded to whole segments).
    pub chunk: u64,
    /// Most chunks one sequential reader keeps in flight ahead of itself.
    pub max_window: usize,
    /// Read-ahead chunks in flight across all readers (the memory budget).
    pub budget_chunks: usize,
    /// Bytes of verified plaintext segments kept for random reads.
    pub cache_bytes: usize,
}

impl Default for ReadSettings {
    fn default() -> Self {
        ReadSettings {
            chunk: 4 << 20,
            max_window: 16,
            budget_chunks: 32,
            cache_bytes: 64 << 20,
        }
    }
}

impl ReadSettings {
    /// The defaults with `cache_bytes` of plaintext cache and read-ahead
    /// memory of `read_ahead_bytes` (whole chunks, at least one).
    pub fn with_memory(cache_bytes: usize, read_ahead_bytes: u64) -> Self {
        let d = ReadSettings::default();
        ReadSettings {
            budget_chunks: (read_ahead_bytes / d.chunk).max(1) as usize,
            cache_bytes,
            ..d
        }
    }
}

/// Shared by all readers of one mount: the read-ahead budget and the cache.
pub struct ReadShared {
    pub settings: ReadSettings,
    budget: Arc<Semaphore>,
    pub cache: PlainCache,
    /// Segments on local disk (the encrypted read cache), if enabled.
    disk: Option<Arc<dyn SegmentCache>>,
}

impl ReadShared {
    #[cfg(test)]
    pub fn new(settings: ReadSettings) -> Arc<Self> {
        Self::with_disk(settings, None)
    }

    /// The disk cache, if enabled (object headers are kept there too).
    pub fn disk(&self) -> Option<&dyn SegmentCache> {
        self.disk.as_deref()
    }

    /// Waits until what readers put in the disk cache is stored (unmount).
    pub fn flush_disk(&self) {
        if let Some(d) = &self.disk {
            d.flush();
        }
    }

    /// Readers that also keep what they read in `disk`, and read from it first.
    pub fn with_disk(settings: ReadSettings, disk: Option<Arc<dyn SegmentCache>>) -> Arc<Self> {
        Arc::new(ReadShared {
            budget: Arc::new(Semaphore::new(settings.budget_chunks.max(1))),
            cache: PlainCache::new(settings.cache_bytes),
            settings,
            disk,
        })
    }
}

type CacheKey = (String, String, u64);

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

    fn get(&self, k: &CacheKey) -> Option<Arc<Vec<u8>>> {
        self.inner.lock().lru.get(k).cloned()
    }

    fn put(&self, k: CacheKey, v: Arc<Vec<u8>>) {
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

enum Body {
    Pending(JoinHandle<Result<Vec<u8>>>),
    Ready(Bytes),
}

struct Chunk {
    segs: Range<u64>,
    body: Body,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Body::Pending(task) = &self.body {
            task.abort();
        }
    }
}

/// One open file's reader (one per file handle).
pub struct Reader {
    obj: Arc<SealedObject>,
    store: Arc<dyn ObjectStore>,
    shared: Arc<ReadShared>,
    /// Read-ahead chunks, in file order, contiguous.
    chunks: VecDeque<Chunk>,
    /// Chunks kept ahead of the one being read (0: random mode).
    window: usize,
    /// Where the previous read ended.
    expected: u64,
    /// Segments per chunk.
    per_chunk: u64,
}

impl Reader {
    pub fn new(
        obj: Arc<SealedObject>,
        store: Arc<dyn ObjectStore>,
        shared: Arc<ReadShared>,
    ) -> Self {
        let seg = obj.layout().segment_size();
        let per_chunk = (shared.settings.chunk / seg).max(1);
        Reader {
            obj,
            store,
            shared,
            chunks: VecDeque::new(),
            window: 0,
            expected: 0,
            per_chunk,
        }
    }

    pub fn object(&self) -> &Arc<SealedObject> {
        &self.obj
    }

    /// Chunks in flight or held by this reader (for tests).
    #[cfg(test)]
    pub fn chunks_held(&self) -> usize {
        self.chunks.len()
    }

    /// Reads up to `len` bytes at `offset` (fewer at end of file). A read
    /// inside one chunk is a slice of it, not a copy.
    pub async fn read(&mut self, offset: u64, len: u64) -> Result<Bytes> {
        let plain_len = self.obj.plain_len();
        let end = offset.saturating_add(len).min(plain_len);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let layout = self.obj.layout();
        let segs = layout.segments_for(offset, end - offset, plain_len);
        // Sequential: continues the previous read, or falls inside what is
        // already being read ahead. The kernel's own read-ahead requests run
        // concurrently and can arrive slightly out of order; a read just
        // behind the pipeline is served without disturbing it.
        let (front, back) = match (self.chunks.front(), self.chunks.back()) {
            (Some(f), Some(b)) => (f.segs.start, b.segs.end),
            _ => (0, 0),
        };
        let in_flight = front <= segs.start && segs.start < back;
        let chunk_bytes = self.per_chunk * layout.segment_size();
        // A forward skip of less than a chunk still counts as sequential
        // (a request overtaken by the next one); backward reads do not.
        let sequential =
            in_flight || (offset >= self.expected && offset - self.expected <= chunk_bytes);
        let near = !self.chunks.is_empty()
            && segs.start + self.per_chunk >= front
            && segs.start < back + self.per_chunk;
        if !sequential {
            if !near {
                self.chunks.clear();
                self.window = 0;
                self.expected = end;
            }
            return self.read_random(offset, end, segs).await.map(Bytes::from);
        }
        self.expected = self.expected.max(end);
        self.window = match self.window {
            0 => 1,
            w => (w * 2).min(self.shared.settings.max_window.max(1)),
        };
        self.advance_to(segs.start);
        self.top_up(segs.clone());
        let seg = layout.segment_size();
        let mut parts: Vec<Bytes> = Vec::with_capacity(2);
        let mut failed = None;
        for c in self.chunks.iter_mut() {
            let from = c.segs.start * seg;
            let to = (c.segs.end * seg).min(plain_len);
            if to <= offset || from >= end {
                continue;
            }
            let body = match &mut c.body {
                Body::Ready(b) => b.clone(),
                Body::Pending(task) => {
                    let got = match task.await {
                        Ok(got) => got,
                        Err(e) => Err(Error::posix(
                            libc::EIO,
                            format!("read-ahead of {} failed: {e}", self.obj.key),
                        )),
                    };
                    match got {
                        Ok(b) => {
                            let b = Bytes::from(b);
                            c.body = Body::Ready(b.clone());
                            b
                        }
                        // The task is done: its handle must not be polled
                        // again, so the pipeline goes (a later read starts
                        // afresh and meets the same error, or not).
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
            };
            let a = (offset.max(from) - from) as usize;
            let b = (end.min(to) - from) as usize;
            if b > body.len() {
                return Err(short(
                    &self.obj.key,
                    offset,
                    body.len() as u64,
                    end - offset,
                ));
            }
            parts.push(body.slice(a..b));
        }
        if let Some(e) = failed {
            self.chunks.clear();
            self.window = 0;
            return Err(e);
        }
        let out = match parts.len() {
            1 => parts.pop().expect("one part"),
            _ => {
                let mut joined = BytesMut::with_capacity((end - offset) as usize);
                for p in &parts {
                    joined.extend_from_slice(p);
                }
                joined.freeze()
            }
        };
        // The chunks of a read are contiguous and cover it (top_up starts
        // every one it overlaps); anything else is a bug, and a short reply
        // would be taken for end of file by the kernel.
        if out.len() as u64 != end - offset {
            return Err(short(&self.obj.key, offset, out.len() as u64, end - offset));
        }
        Ok(out)
    }

    /// Drops chunks wholly before segment `seg` but the last of them (for
    /// late requests from just behind); restarts the pipeline when `seg` is
    /// not inside it.
    fn advance_to(&mut self, seg: u64) {
        while self.chunks.get(1).is_some_and(|c| c.segs.end <= seg) {
            self.chunks.pop_front();
        }
        // Chunks are aligned to `per_chunk`: a pipeline that ends a whole
        // chunk or more before `seg` (or starts after it) holds nothing the
        // read needs.
        let aligned = seg - seg % self.per_chunk;
        if self.chunks.front().is_some_and(|c| c.segs.start > seg)
            || self.chunks.back().is_some_and(|c| c.segs.end < aligned)
        {
            self.chunks.clear();
        }
    }

    /// Starts every chunk that overlaps the segments `need` (a read may
    /// span two chunks; those never wait for the budget, since the read
    /// cannot be answered without them), then up to `window` chunks beyond
    /// them as far as the shared read-ahead budget allows.
    fn top_up(&mut self, need: Range<u64>) {
        let total = self.obj.layout().segment_count(self.obj.plain_len());
        loop {
            let next = match self.chunks.back() {
                Some(c) => c.segs.end,
                None => need.start - need.start % self.per_chunk,
            };
            if next >= total {
                return;
            }
            let needed = next < need.end;
            let permit = if needed {
                None
            } else {
                let ahead = self
                    .chunks
                    .iter()
                    .filter(|c| c.segs.start >= need.end)
                    .count();
                if ahead >= self.window {
                    return;
                }
                // Read-ahead holds a permit for the chunk's lifetime, so
                // the budget bounds the memory of all readers together.
                match self.shared.budget.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => return,
                }
            };
            let segs = next..(next + self.per_chunk).min(total);
            let (obj, store, r) = (self.obj.clone(), self.store.clone(), segs.clone());
            let disk = self.shared.disk.clone();
            let task =
                tokio::spawn(
                    async move { segments(&obj, store.as_ref(), r, disk.as_deref()).await },
                );
            self.chunks.push_back(Chunk {
                segs,
                body: Body::Pending(task),
                _permit: permit,
            });
        }
    }

    /// A read away from the previous one: only the segments it needs, served
    /// from the plaintext cache where possible.
    async fn read_random(&mut self, offset: u64, end: u64, segs: Range<u64>) -> Result<Vec<u8>> {
        let seg = self.obj.layout().segment_size();
        let cache = &self.shared.cache;
        let key = |i: u64| -> CacheKey { (self.obj.key.clone(), self.obj.info.etag.clone(), i) };
        let mut parts: Vec<Arc<Vec<u8>>> = Vec::with_capacity((segs.end - segs.start) as usize);
        let mut missing = None;
        for i in segs.clone() {
            match cache.get(&key(i)) {
                Some(p) => parts.push(p),
                None => {
                    missing = Some(i);
                    break;
                }
            }
        }
        if let Some(first) = missing {
            let run = first..segs.end;
            let disk = self.shared.disk.as_deref();
            let plain = segments(&self.obj, self.store.as_ref(), run.clone(), disk).await?;
            for (n, i) in run.enumerate() {
                let a = n * seg as usize;
                let b = (a + seg as usize).min(plain.len());
                let p = Arc::new(plain[a..b].to_vec());
                cache.put(key(i), p.clone());
                parts.push(p);
            }
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (n, p) in parts.iter().enumerate() {
            let from = (segs.start + n as u64) * seg;
            let a = offset.saturating_sub(from) as usize;
            let b = ((end - from) as usize).min(p.len());
            if a < b {
                out.extend_from_slice(&p[a..b]);
            }
        }
        if out.len() as u64 != end - offset {
            return Err(short(&self.obj.key, offset, out.len() as u64, end - offset));
        }
        Ok(out)
    }
}

/// Segments `range` of `obj`, verified: from `disk` where it has them, the
/// rest from S3 in runs (and into `disk`).
async fn segments(
    obj: &SealedObject,
    store: &dyn ObjectStore,
    range: Range<u64>,
    disk: Option<&dyn SegmentCache>,
) -> Result<Vec<u8>> {
    let Some(disk) = disk else {
        return obj.segments(store, range).await;
    };
    let (key, etag) = (obj.key.as_str(), obj.info.etag.as_str());
    let seg = obj.layout().segment_size() as usize;
    let mut out = Vec::with_capacity((range.end - range.start) as usize * seg);
    let mut i = range.start;
    while i < range.end {
        if let Some(p) = disk.get(key, etag, i) {
            out.extend_from_slice(&p);
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < range.end && !disk.has(key, etag, j) {
            j += 1;
        }
        let plain = obj.segments(store, i..j).await?;
        for (n, chunk) in plain.chunks(seg).enumerate() {
            disk.put(key, etag, i + n as u64, chunk);
        }
        out.extend_from_slice(&plain);
        i = j;
    }
    Ok(out)
}

/// A read that could not be assembled in full: EIO, never a short reply.
fn short(key: &str, offset: u64, got: u64, want: u64) -> Error {
    Error::posix(
        libc::EIO,
        format!("read of {key} at {offset} assembled {got} of {want} bytes"),
    )
}
