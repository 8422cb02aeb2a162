//! The persistent read cache: verified plaintext segments of sealed
//! objects, kept on local disk encrypted under the local key, so a file read
//! once is read again (after its pages left the kernel's cache, or after a
//! remount) without S3.
//!
//! An entry holds one segment of one version, or (written from a
//! sequential read's run) a group of consecutive segments, 1 MiB together:
//! a file per 64 KiB segment cost a cold sequential read eight times the
//! CPU of a file per MiB, in file creations alone. An entry's name is a
//! hash of (object key, ETag, segment size, kind, index), so a changed
//! object is never served from an old entry, and its content is a record
//! sealed for that name and length, so an entry that was altered, truncated
//! or renamed fails to open and is discarded. The cache is bounded in bytes
//! on disk, least recently used first out; entries left by earlier mounts
//! of the same cache directory are used (oldest written first out). Mounts
//! of different volumes use different cache directories; two mounts of one
//! directory share its entries (each keeps the bound for what it writes).

use super::LocalKey;
use crate::crypto::local::{EntryCipher, ENTRY_PIECE};
use crate::sealed::{CacheStats, SegmentCache, Slot, HEADER_SLOT};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The read cache's directory, under a cache directory.
pub const DIR: &str = "read-cache";

/// Plaintext bytes of a group entry (whole segments: fewer when a segment
/// is larger).
const GROUP_BYTES: u64 = 1 << 20;

/// Plaintext bytes waiting for the background writer at most; beyond it
/// offered entries are not kept. As much as a full read-ahead window (16
/// chunks of 4 MiB): at S3 latencies chunks arrive in bursts of that size,
/// and a 16 MiB queue dropped a fifth of a file read once, each dropped MiB
/// a 20 ms GET for the random reads after it. The entries are slices of
/// chunks the reader holds anyway; peak RSS stayed at 217 MiB.
const QUEUE_BYTES: u64 = 64 << 20;

pub struct ReadCache {
    dir: PathBuf,
    /// The directory, open: entries are opened relative to it.
    dir_fd: std::fs::File,
    entries: EntryCipher,
    limit: u64,
    state: Mutex<Index>,
    /// Entries to write, handed to a background thread at idle priority so
    /// that a read never waits for the cache (when [`QUEUE_BYTES`] wait,
    /// the entry is not kept). `None`: written inline (tests).
    writer: Option<std::sync::mpsc::Sender<Job>>,
    /// Plaintext bytes handed to the writer and not yet written.
    queued: AtomicU64,
    /// Entries written, and entries offered but not kept (writer behind).
    stored: AtomicU64,
    dropped: AtomicU64,
}

enum Job {
    Write(String, bytes::Bytes),
    /// Answered once every entry queued before it is written.
    Flush(std::sync::mpsc::SyncSender<()>),
}

struct Index {
    /// Entry name → bytes on disk, least recently used first.
    lru: lru::LruCache<String, u64>,
    bytes: u64,
}

/// Lowers the calling thread to SCHED_IDLE (best effort: a refusal leaves
/// it as it was).
fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "read cache writer keeps its priority");
    }
}

/// Names entries of this format: entries of another never match, and age out.
const NAME_LABEL: &[u8] = b"sealfs read cache entry v3";

/// What an entry holds: one segment (or the header), or a group.
#[derive(Clone, Copy)]
enum Kind {
    Segment = 1,
    Group = 2,
}

fn entry_name(kind: Kind, at: &Slot, index: u64) -> String {
    let mut h = Sha256::new();
    h.update(NAME_LABEL);
    h.update([kind as u8]);
    for part in [
        at.key.as_bytes(),
        at.etag.as_bytes(),
        &at.segment_size.to_be_bytes(),
        &index.to_be_bytes(),
    ] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    hex::encode(&h.finalize()[..20])
}

/// Segments per group entry for segments of `size` bytes (1: no groups).
fn group_span(size: u64) -> u64 {
    GROUP_BYTES.checked_div(size).map_or(1, |n| n.max(1))
}

/// The group `at` falls in and the segments per group; `None` where
/// groups do not apply (the header, or segments of a group's size or more).
fn group_place(at: &Slot) -> Option<(u64, u64)> {
    let span = group_span(at.segment_size);
    (span > 1 && at.index != HEADER_SLOT).then(|| (at.index / span, span))
}

/// The group entry that would hold `at`, and where `at` lies in it.
fn group_of(at: &Slot) -> Option<(String, u64)> {
    let (g, span) = group_place(at)?;
    let name = entry_name(Kind::Group, at, g);
    Some((name, (at.index % span) * at.segment_size))
}

impl ReadCache {
    /// The cache in `base`/read-cache, holding at most `limit` bytes; the
    /// entries already there are indexed (oldest first).
    pub fn open(base: &Path, key: Arc<LocalKey>, limit: u64) -> std::io::Result<Arc<ReadCache>> {
        Self::open_with(base, key, limit, true)
    }

    /// [`ReadCache::open`], with entries written by a background thread
    /// (`background`) or inline.
    pub fn open_with(
        base: &Path,
        key: Arc<LocalKey>,
        limit: u64,
        background: bool,
    ) -> std::io::Result<Arc<ReadCache>> {
        let dir = base.join(DIR);
        std::fs::create_dir_all(&dir)?;
        let dir_fd = std::fs::File::open(&dir)?;
        let mut found: Vec<(std::time::SystemTime, String, u64)> = Vec::new();
        for e in std::fs::read_dir(&dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(md) = e.metadata() else { continue };
            if name.len() != 40 || !md.is_file() {
                // A temporary file of a write cut short.
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            found.push((
                md.modified().unwrap_or(std::time::UNIX_EPOCH),
                name,
                md.len(),
            ));
        }
        found.sort();
        let mut index = Index {
            lru: lru::LruCache::unbounded(),
            bytes: 0,
        };
        for (_, name, len) in found {
            index.bytes += len;
            index.lru.put(name, len);
        }
        let cache = Arc::new_cyclic(|me: &std::sync::Weak<ReadCache>| {
            let writer = background.then(|| {
                let (tx, rx) = std::sync::mpsc::channel::<Job>();
                let me = me.clone();
                // Ends when the cache is dropped (its sender with it).
                std::thread::spawn(move || {
                    // The cache is written with CPU time nothing else
                    // wants first (on two cores shared with the backend, a
                    // cold sequential read still pays about a tenth of its
                    // speed to the filling; see docs/PERFORMANCE.md).
                    idle_priority();
                    // One buffer for every entry: allocating each one
                    // mapped, faulted in and unmapped a MiB at a time, and
                    // the process-wide memory-map lock that takes, held by
                    // an idle-priority thread, stalled the reads.
                    let mut buf = Vec::new();
                    for job in rx {
                        match (job, me.upgrade()) {
                            (Job::Write(name, plain), Some(c)) => {
                                c.write_entry(name, &plain, &mut buf);
                                c.queued.fetch_sub(plain.len() as u64, Relaxed);
                            }
                            (Job::Flush(done), _) => {
                                let _ = done.send(());
                            }
                            (_, None) => break,
                        }
                    }
                });
                tx
            });
            ReadCache {
                dir_fd,
                dir,
                entries: key.secret().entry_cipher(),
                limit,
                state: Mutex::new(index),
                writer,
                queued: AtomicU64::new(0),
                stored: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }
        });
        cache.evict();
        Ok(cache)
    }

    /// Bytes on disk now.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.state.lock().bytes
    }

    fn evict(&self) {
        let mut s = self.state.lock();
        while s.bytes > self.limit {
            let Some((name, len)) = s.lru.pop_lru() else {
                break;
            };
            s.bytes -= len;
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }

    /// Opens entry `name` relative to the cache directory (no path walk
    /// from the root for each read).
    fn open_entry(&self, name: &str) -> std::io::Result<std::fs::File> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let c = std::ffi::CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: a valid directory fd and a NUL-terminated name; the new fd
        // is owned by the File.
        let fd = unsafe {
            libc::openat(
                self.dir_fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(unsafe { std::fs::File::from_raw_fd(fd) })
    }

    fn forget(&self, name: &str) {
        let mut s = self.state.lock();
        if let Some(len) = s.lru.pop(name) {
            s.bytes -= len;
        }
        let _ = std::fs::remove_file(self.dir.join(name));
    }

    /// Bytes `range` (within `len`) of entry `name`, whose plaintext is
    /// `len` bytes. Only the pieces holding the range are read and opened.
    /// An entry that cannot be read (removed by another mount of this
    /// directory, cut short) is forgotten quietly; one that does not
    /// authenticate was altered, and says so.
    fn read_entry(&self, name: &str, len: u64, range: Range<u64>) -> Option<Vec<u8>> {
        let at = EntryCipher::locate(len, range.clone());
        let mut sealed = vec![0u8; (at.sealed.end - at.sealed.start) as usize];
        let read = self
            .open_entry(name)
            .and_then(|f| f.read_exact_at(&mut sealed, at.sealed.start));
        if read.is_err() {
            self.forget(name);
            return None;
        }
        let Some(mut plain) = self.entries.open(name, len, at.first, &sealed) else {
            tracing::warn!(entry = %name, "a read cache entry does not authenticate; discarded");
            self.forget(name);
            return None;
        };
        let from = at.first * ENTRY_PIECE;
        let a = (range.start.min(len) - from) as usize;
        let b = (range.end.min(len) - from) as usize;
        plain.truncate(b.max(a));
        plain.drain(..a);
        Some(plain)
    }

    /// `range` of `at` from the group entry holding it, if there is one
    /// that holds all of `at` (a group ends early only at the object's end).
    fn get_from_group(&self, at: &Slot, range: &Range<u64>) -> Option<Vec<u8>> {
        let (name, offset) = group_of(at)?;
        let sealed_len = *self.state.lock().lru.get(&name)?;
        let len = EntryCipher::plain_len(sealed_len)?;
        let end = offset.checked_add(at.len)?;
        let whole = at.len == at.segment_size || end == len;
        if end > len || !whole {
            return None;
        }
        let r = offset + range.start.min(at.len)..offset + range.end.min(at.len);
        self.read_entry(&name, len, r)
    }

    /// Hands an entry to the writer, or writes it (no background writer).
    fn offer(&self, name: String, plain: bytes::Bytes) {
        let Some(tx) = &self.writer else {
            return self.write_entry(name, &plain, &mut Vec::new());
        };
        // A read never waits for the cache: when the writer is behind (a
        // cold read faster than the disk and the idle CPU can store), the
        // entry is not kept, and a later read of it offers it again.
        let n = plain.len() as u64;
        if self.queued.fetch_add(n, Relaxed) + n > QUEUE_BYTES {
            self.queued.fetch_sub(n, Relaxed);
            self.dropped.fetch_add(1, Relaxed);
            tracing::trace!(entry = %name, "read cache writer behind; entry not kept");
            return;
        }
        if tx.send(Job::Write(name, plain)).is_err() {
            self.queued.fetch_sub(n, Relaxed);
        }
    }
}

impl SegmentCache for ReadCache {
    fn has(&self, at: &Slot) -> bool {
        let group = group_of(at);
        let segment = entry_name(Kind::Segment, at, at.index);
        let s = self.state.lock();
        group.is_some_and(|(g, _)| s.lru.contains(&g)) || s.lru.contains(&segment)
    }

    fn get_range(&self, at: &Slot, range: Range<u64>) -> Option<Vec<u8>> {
        if let Some(p) = self.get_from_group(at, &range) {
            return Some(p);
        }
        let name = entry_name(Kind::Segment, at, at.index);
        // Known to the index (which also marks it recently used)?
        self.state.lock().lru.get(&name)?;
        self.read_entry(&name, at.len, range)
    }

    fn put(&self, at: &Slot, plain: bytes::Bytes) {
        if self.limit > 0 {
            self.offer(entry_name(Kind::Segment, at, at.index), plain);
        }
    }

    fn put_run(&self, first: &Slot, plain: bytes::Bytes) {
        if self.limit == 0 {
            return;
        }
        let size = first.segment_size.max(1);
        let span = group_span(size);
        let len = plain.len() as u64;
        // A short last segment is the object's end: a group ending there is
        // whole.
        let ends_object = len % size != 0;
        let mut at = 0u64;
        while at < len {
            let index = first.index + at / size;
            let group_end = at + span * size;
            let (end, name) = if span > 1 && index % span == 0 && (group_end <= len || ends_object)
            {
                let g = entry_name(Kind::Group, first, index / span);
                (group_end.min(len), g)
            } else {
                let s = entry_name(Kind::Segment, first, index);
                ((at + size).min(len), s)
            };
            self.offer(name, plain.slice(at as usize..end as usize));
            at = end;
        }
    }

    /// A miss inside a group entry that is not there, beside a group entry
    /// that is (a file read through before, whose group the writer had to
    /// drop), fetches the whole group: the reads after it are local. A miss
    /// with no such neighbour (a file read at random) fetches what it needs.
    fn fill_run(&self, at: &Slot, run: Range<u64>, segments: u64) -> Range<u64> {
        let Some((g, span)) = group_place(at) else {
            return run;
        };
        let group = g * span..((g + 1) * span).min(segments);
        if run.start < group.start || run.end > group.end {
            return run;
        }
        let held = |g: u64| {
            let name = entry_name(Kind::Group, at, g);
            self.state.lock().lru.contains(&name)
        };
        let beside = (g > 0 && held(g - 1)) || (group.end < segments && held(g + 1));
        if beside && !held(g) {
            group
        } else {
            run
        }
    }

    fn flush(&self) {
        if let Some(tx) = &self.writer {
            let (done, wait) = std::sync::mpsc::sync_channel(1);
            if tx.send(Job::Flush(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }

    fn stats(&self) -> CacheStats {
        let s = self.state.lock();
        CacheStats {
            entries: s.lru.len() as u64,
            bytes: s.bytes,
            limit: self.limit,
            stored: self.stored.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
        }
    }
}

impl ReadCache {
    fn write_entry(&self, name: String, plain: &[u8], sealed: &mut Vec<u8>) {
        self.entries.seal_into(&name, plain, sealed);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.{}.tmp", std::process::id()));
        if let Err(e) = super::write_private(&path, &tmp, sealed, false) {
            // A full disk costs the cache, never the read.
            tracing::debug!(error = %e, "read cache entry not written");
            return;
        }
        self.stored.fetch_add(1, Relaxed);
        {
            let mut s = self.state.lock();
            let len = sealed.len() as u64;
            if let Some(old) = s.lru.put(name, len) {
                s.bytes -= old;
            }
            s.bytes += len;
        }
        self.evict();
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
