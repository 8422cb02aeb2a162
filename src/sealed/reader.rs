//! Reading an opened object the way applications read files: a sequential
//! reader gets an adaptive window of concurrent ranged GETs running ahead of
//! it, a random reader fetches only the segments it touches.
//!
//! Why this shape: one GET per kernel read request (up to 1 MiB) would make
//! throughput a function of round-trip latency. Here each read-ahead chunk
//! (several MiB) is its own task, which decrypts its GET's body segment by
//! segment as it arrives, so chunks are fetched and decrypted concurrently
//! on every core, with no hand-off to another thread. A read whose chunks
//! have arrived is answered on the FUSE thread that received it
//! ([`Reader::read_at_hand`]); only a read that must wait becomes a task.
//!
//! Memory is bounded whatever the file size: each reader keeps at most
//! `max_window` chunks ahead, read-ahead chunks beyond the one being read
//! need a permit from a budget shared by every reader of the mount, and
//! random reads go through a byte-bounded LRU of verified plaintext segments
//! ([`PlainCache`]). Only verified plaintext is ever held or returned.

use super::plain_cache::{CacheKey, PlainCache};
use super::{SealedObject, SegmentCache};
use crate::error::{Error, Result};
use crate::store::ObjectStore;
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
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

/// What [`Reader::pattern`] makes of a read.
struct Pattern {
    sequential: bool,
    /// Inside the read-ahead pipeline.
    in_flight: bool,
    /// Within one kernel request of where the previous read ended.
    local: bool,
    /// Within a chunk of the read-ahead pipeline.
    near: bool,
}

/// The most one kernel read request asks for by default (32 pages): how far
/// out of order the kernel's own concurrent read-ahead requests can arrive.
const MAX_KERNEL_REQUEST: u64 = 128 << 10;

enum Body {
    Pending(JoinHandle<Result<Bytes>>),
    Ready(Bytes),
}

struct Chunk {
    segs: Range<u64>,
    body: Body,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Chunk {
    /// The plaintext bytes it holds (or will), in a file of `plain_len`.
    fn bytes(&self, seg: u64, plain_len: u64) -> Range<u64> {
        self.segs.start * seg..(self.segs.end * seg).min(plain_len)
    }

    /// Whether it holds any of `[offset, end)`.
    fn overlaps(&self, seg: u64, plain_len: u64, offset: u64, end: u64) -> bool {
        let b = self.bytes(seg, plain_len);
        b.start < end && b.end > offset
    }
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
    /// Whether the previous read started within a chunk of where the one
    /// before it ended.
    was_local: bool,
    /// Segments per chunk.
    per_chunk: u64,
    /// Where read-ahead chunks run.
    runtime: tokio::runtime::Handle,
}

impl Reader {
    /// A reader of `obj`; called on the runtime, where its read-ahead runs.
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
            was_local: false,
            per_chunk,
            runtime: tokio::runtime::Handle::current(),
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
        let Some((end, segs)) = self.span(offset, len) else {
            return Ok(Bytes::new());
        };
        let pattern = self.pattern(offset, len, &segs);
        if let Some(out) = self.serve_at_hand(&pattern, offset, end, segs.clone()) {
            return Ok(Bytes::from(out));
        }
        if !pattern.sequential {
            self.note_random(&pattern, end);
            return self.read_random(offset, end, segs).await.map(Bytes::from);
        }
        self.begin_sequential(&pattern, end, segs);
        self.assemble(offset, end).await
    }

    /// A sequential read moves the pipeline on: the window grows, chunks
    /// wholly behind go, every chunk the read overlaps is started and
    /// read-ahead tops up beyond it.
    fn begin_sequential(&mut self, pattern: &Pattern, end: u64, segs: Range<u64>) {
        self.was_local = pattern.local;
        self.expected = self.expected.max(end);
        self.window = match self.window {
            0 => 1,
            w => (w * 2).min(self.shared.settings.max_window.max(1)),
        };
        self.advance_to(segs.start);
        self.top_up(segs);
    }

    /// Whether every chunk `[offset, end)` (in segments `segs`) needs is in
    /// the pipeline and done: then [`assemble`](Self::assemble) does not wait.
    fn ready_for(&self, offset: u64, end: u64, segs: &Range<u64>) -> bool {
        let Some(back) = self.chunks.back() else {
            return false;
        };
        let (seg, plain_len) = (self.obj.layout().segment_size(), self.obj.plain_len());
        back.segs.end >= segs.end
            && self
                .chunks
                .iter()
                .filter(|c| c.overlaps(seg, plain_len, offset, end))
                .all(|c| match &c.body {
                    Body::Ready(_) => true,
                    Body::Pending(task) => task.is_finished(),
                })
    }

    /// The bytes of `[offset, end)` from the pipeline's chunks, waiting for
    /// those still being fetched. A read inside one chunk is a slice of it.
    async fn assemble(&mut self, offset: u64, end: u64) -> Result<Bytes> {
        let (seg, plain_len) = (self.obj.layout().segment_size(), self.obj.plain_len());
        let mut parts: Vec<Bytes> = Vec::with_capacity(2);
        let mut failed = None;
        for c in self.chunks.iter_mut() {
            if !c.overlaps(seg, plain_len, offset, end) {
                continue;
            }
            let Range {
                start: from,
                end: to,
            } = c.bytes(seg, plain_len);
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

    /// How a read at `offset` relates to the ones before it (no change).
    fn pattern(&self, offset: u64, len: u64, segs: &Range<u64>) -> Pattern {
        // Sequential: continues the previous read, or falls inside what is
        // already being read ahead. The kernel's own read-ahead requests run
        // concurrently and can arrive slightly out of order; a read just
        // behind the pipeline is served without disturbing it.
        let (front, back) = match (self.chunks.front(), self.chunks.back()) {
            (Some(f), Some(b)) => (f.segs.start, b.segs.end),
            _ => (0, 0),
        };
        let in_flight = front <= segs.start && segs.start < back;
        let chunk_bytes = self.per_chunk * self.obj.layout().segment_size();
        // A read that starts where the last one ended is sequential. So is
        // a forward skip of less than a chunk once the reader streams (a
        // request overtaken by the next one). Before it streams, a short
        // skip (one kernel request, or this read's length) counts only when
        // the read before was just as near its predecessor: the kernel's
        // first read-ahead requests, out of order. Backward reads never
        // are. Random reads that land a little ahead of the last must not
        // start a chunk-sized read-ahead: with "near" meaning a chunk, one
        // 4 KiB read in 60 of a 256 MiB file did, each costing milliseconds.
        let slack = len.max(MAX_KERNEL_REQUEST);
        let local = offset.abs_diff(self.expected) <= slack;
        let sequential = in_flight
            || offset == self.expected
            || (offset > self.expected
                && offset - self.expected <= chunk_bytes
                && (self.window > 0 || (local && self.was_local)));
        let near = !self.chunks.is_empty()
            && segs.start + self.per_chunk >= front
            && segs.start < back + self.per_chunk;
        Pattern {
            sequential,
            in_flight,
            local,
            near,
        }
    }

    /// A random read ending at `end` happened: one near the pipeline leaves
    /// it be, one elsewhere ends it.
    fn note_random(&mut self, pattern: &Pattern, end: u64) {
        self.was_local = pattern.local;
        if !pattern.near {
            self.chunks.clear();
            self.window = 0;
            self.expected = end;
        }
    }

    /// Where a read of `len` bytes at `offset` ends (clamped to the file)
    /// and the segments it touches; `None` when it is at or past the end.
    fn span(&self, offset: u64, len: u64) -> Option<(u64, Range<u64>)> {
        let plain_len = self.obj.plain_len();
        let end = offset.saturating_add(len).min(plain_len);
        (offset < end).then(|| {
            let segs = self
                .obj
                .layout()
                .segments_for(offset, end - offset, plain_len);
            (end, segs)
        })
    }

    /// Serves a read without waiting, when all its bytes are in the memory
    /// cache or the disk cache (local disk I/O and decryption of a few KiB,
    /// done on the caller's thread). `None`, with the reader unchanged,
    /// when it would wait: bytes the read-ahead pipeline holds or fetches,
    /// or bytes only S3 has. This spares a small read the hand-offs between
    /// threads that cost more than serving it.
    ///
    /// So is a sequential read whose read-ahead chunks have all arrived
    /// (the common case once read-ahead runs ahead of the reader): the
    /// pipeline moves on (new chunks are started on the runtime) and the
    /// bytes are sliced from the chunks on the caller's thread.
    pub fn read_at_hand(&mut self, offset: u64, len: u64) -> Option<Result<Bytes>> {
        let Some((end, segs)) = self.span(offset, len) else {
            return Some(Ok(Bytes::new()));
        };
        let pattern = self.pattern(offset, len, &segs);
        if pattern.in_flight {
            // (A read inside the pipeline is sequential.)
            if !self.ready_for(offset, end, &segs) {
                return None;
            }
            self.begin_sequential(&pattern, end, segs);
            // Every chunk it needs is done, so this does not wait; were it
            // to, the caller's `read` would finish the job.
            return self.assemble(offset, end).now_or_never();
        }
        let out = self.serve_at_hand(&pattern, offset, end, segs)?;
        Some(Ok(Bytes::from(out)))
    }

    /// The read's bytes from the caches, with the reader's idea of the
    /// access pattern moved on, unless the read-ahead pipeline holds them
    /// (or is fetching them). A sequential run through cached segments is
    /// served this way too, at the kernel's request size, and read-ahead
    /// from S3 starts where the cache ends.
    fn serve_at_hand(
        &mut self,
        pattern: &Pattern,
        offset: u64,
        end: u64,
        segs: Range<u64>,
    ) -> Option<Vec<u8>> {
        if pattern.in_flight {
            return None;
        }
        let out = self.at_hand(offset, end, segs)?;
        if pattern.sequential {
            self.was_local = pattern.local;
            self.expected = self.expected.max(end);
        } else {
            self.note_random(pattern, end);
        }
        Some(out)
    }

    /// The bytes of `[offset, end)` (in segments `segs`) if the memory
    /// cache and the disk cache hold all of them. Only the pieces of a disk
    /// entry that the read touches are opened (a 4 KiB read opens 4 KiB,
    /// not the segment), and nothing goes to the memory cache: the kernel's
    /// page cache keeps what was read.
    fn at_hand(&self, offset: u64, end: u64, segs: Range<u64>) -> Option<Vec<u8>> {
        let seg = self.obj.layout().segment_size();
        let (key, etag) = (&self.obj.key, &self.obj.info.etag);
        let mut out = Vec::with_capacity((end - offset) as usize);
        for i in segs {
            let base = i * seg;
            let want = offset.max(base) - base..end.min(base + seg) - base;
            if let Some(p) = self.shared.cache.get(&(key.clone(), etag.clone(), i)) {
                out.extend_from_slice(p.get(want.start as usize..want.end as usize)?);
                continue;
            }
            let expect = want.end - want.start;
            let b = self
                .shared
                .disk
                .as_deref()?
                .get_range(&self.obj.slot(i), want)?;
            if b.len() as u64 != expect {
                return None;
            }
            if out.is_empty() && b.len() as u64 == end - offset {
                // The whole read from one entry: no copy.
                out = b;
                continue;
            }
            out.extend_from_slice(&b);
        }
        Some(out)
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
            // On the runtime, also when the read came from a FUSE thread.
            let task = self
                .runtime
                .spawn(async move { segments(&obj, store.as_ref(), r, disk.as_deref()).await });
            self.chunks.push_back(Chunk {
                segs,
                body: Body::Pending(task),
                _permit: permit,
            });
        }
    }

    /// A read away from the previous one: only the segments it needs, served
    /// from the caches where possible.
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
            let total = self.obj.layout().segment_count(self.obj.plain_len());
            let fetch = disk.map_or(run.clone(), |d| {
                d.fill_run(&self.obj.slot(first), run.clone(), total)
            });
            debug_assert!(fetch.start <= run.start && run.end <= fetch.end);
            let plain = segments(&self.obj, self.store.as_ref(), fetch.clone(), disk).await?;
            let skip = ((run.start - fetch.start) * seg) as usize;
            let plain = plain.slice(skip.min(plain.len())..);
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
) -> Result<Bytes> {
    let Some(disk) = disk else {
        return obj.segments(store, range).await.map(Bytes::from);
    };
    let mut out = Vec::new();
    let mut i = range.start;
    while i < range.end {
        if let Some(p) = disk.get(&obj.slot(i)) {
            out.extend_from_slice(&p);
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < range.end && !disk.has(&obj.slot(j)) {
            j += 1;
        }
        let plain = Bytes::from(obj.segments(store, i..j).await?);
        disk.put_run(&obj.slot(i), plain.clone());
        if i == range.start && j == range.end {
            // All of it in one run: no copy.
            return Ok(plain);
        }
        out.extend_from_slice(&plain);
        i = j;
    }
    Ok(Bytes::from(out))
}

/// A read that could not be assembled in full: EIO, never a short reply.
fn short(key: &str, offset: u64, got: u64, want: u64) -> Error {
    Error::posix(
        libc::EIO,
        format!("read of {key} at {offset} assembled {got} of {want} bytes"),
    )
}
