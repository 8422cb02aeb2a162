//! The persistent read cache: verified plaintext segments of sealed
//! objects, kept on local disk encrypted under the local key, so a file read
//! once is read again (after its pages left the kernel's cache, or after a
//! remount) without S3.
//!
//! An entry is one segment of one version: its name is a hash of (object
//! key, ETag, segment index), so a changed object is never served from an old
//! entry, and its content is a record sealed for that name, so an entry that
//! was altered, truncated or renamed fails to open and is discarded. The
//! cache is bounded in bytes on disk, least recently used first out; entries
//! left by earlier mounts of the same cache directory are used (oldest
//! written first out). Mounts of different volumes use different cache
//! directories; two mounts of one directory share its entries (each keeps
//! the bound for what it writes).

use super::LocalKey;
use crate::crypto::local::{EntryCipher, ENTRY_PIECE};
use crate::sealed::SegmentCache;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The read cache's directory, under a cache directory.
pub const DIR: &str = "read-cache";

pub struct ReadCache {
    dir: PathBuf,
    /// The directory, open: entries are opened relative to it.
    dir_fd: std::fs::File,
    entries: EntryCipher,
    limit: u64,
    state: Mutex<Index>,
    /// Entries to write, handed to a background thread at idle priority so
    /// that a read never waits for the cache (when the queue is full, the
    /// entry is not kept). `None`: written inline (tests).
    writer: Option<std::sync::mpsc::SyncSender<Job>>,
}

enum Job {
    Write(String, bytes::Bytes),
    /// Answered once every entry queued before it is written.
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// Entries waiting for the background writer (64 KiB segments: 16 MiB).
const QUEUE: usize = 256;

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
const NAME_LABEL: &[u8] = b"sealfs read cache entry v2";

fn entry_name(key: &str, etag: &str, seg: u64) -> String {
    let mut h = Sha256::new();
    h.update(NAME_LABEL);
    for part in [key.as_bytes(), etag.as_bytes(), &seg.to_be_bytes()] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    hex::encode(&h.finalize()[..20])
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
                let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
                let me = me.clone();
                // Ends when the cache is dropped (its sender with it).
                std::thread::spawn(move || {
                    // The cache is written with CPU time nothing else
                    // wants, so filling it never slows the reads that
                    // offer the entries (on two cores, a cold sequential
                    // read lost a quarter of its speed to it).
                    idle_priority();
                    for job in rx {
                        match (job, me.upgrade()) {
                            (Job::Write(name, plain), Some(c)) => c.write_entry(name, &plain),
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
}

impl SegmentCache for ReadCache {
    fn has(&self, key: &str, etag: &str, seg: u64) -> bool {
        self.state.lock().lru.contains(&entry_name(key, etag, seg))
    }

    fn get_range(
        &self,
        key: &str,
        etag: &str,
        seg: u64,
        len: u64,
        range: Range<u64>,
    ) -> Option<Vec<u8>> {
        let name = entry_name(key, etag, seg);
        // Known to the index (which also marks it recently used)?
        self.state.lock().lru.get(&name)?;
        // An entry that cannot be read (removed by another mount of this
        // directory, cut short) is forgotten quietly; one that does not
        // authenticate was altered, and says so.
        let at = EntryCipher::locate(len, range.clone());
        let mut sealed = vec![0u8; (at.sealed.end - at.sealed.start) as usize];
        let read = self
            .open_entry(&name)
            .and_then(|f| f.read_exact_at(&mut sealed, at.sealed.start));
        if read.is_err() {
            self.forget(&name);
            return None;
        }
        let Some(mut plain) = self.entries.open(&name, len, at.first, &sealed) else {
            tracing::warn!(entry = %name, "a read cache entry does not authenticate; discarded");
            self.forget(&name);
            return None;
        };
        let from = at.first * ENTRY_PIECE;
        let a = (range.start.min(len) - from) as usize;
        let b = (range.end.min(len) - from) as usize;
        plain.truncate(b.max(a));
        plain.drain(..a);
        Some(plain)
    }

    fn put(&self, key: &str, etag: &str, seg: u64, plain: bytes::Bytes) {
        if self.limit == 0 {
            return;
        }
        let name = entry_name(key, etag, seg);
        let Some(tx) = &self.writer else {
            return self.write_entry(name, &plain);
        };
        // A read never waits for the cache: when the writer is behind (a
        // cold read faster than the disk and the idle CPU can store), the
        // entry is not kept, and a later read of it offers it again.
        if tx.try_send(Job::Write(name, plain)).is_err() {
            tracing::trace!(seg, "read cache writer behind; segment not kept");
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
}

impl ReadCache {
    fn write_entry(&self, name: String, plain: &[u8]) {
        let sealed = self.entries.seal(&name, plain);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.{}.tmp", std::process::id()));
        if let Err(e) = super::write_private(&path, &tmp, &sealed, false) {
            // A full disk costs the cache, never the read.
            tracing::debug!(error = %e, "read cache entry not written");
            return;
        }
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
mod tests {
    use super::*;
    use bytes::Bytes;

    fn cache(dir: &Path, key: &Arc<LocalKey>, limit: u64) -> Arc<ReadCache> {
        ReadCache::open_with(dir, key.clone(), limit, false).unwrap()
    }

    #[test]
    fn entries_survive_a_remount_and_a_new_version_misses() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(LocalKey::ephemeral());
        let c = cache(dir.path(), &key, 1 << 20);
        c.put("vol/f", "e1", 3, Bytes::from_static(b"segment three"));
        assert_eq!(
            c.get("vol/f", "e1", 3, 13).as_deref(),
            Some(&b"segment three"[..])
        );
        assert_eq!(c.get("vol/f", "e2", 3, 13), None, "another version");
        assert_eq!(c.get("vol/f", "e1", 4, 13), None, "another segment");
        let again = cache(dir.path(), &key, 1 << 20);
        assert_eq!(
            again.get("vol/f", "e1", 3, 13).as_deref(),
            Some(&b"segment three"[..])
        );
        // Under another local key (another cache directory's), nothing opens.
        let other = cache(dir.path(), &Arc::new(LocalKey::ephemeral()), 1 << 20);
        assert_eq!(other.get("vol/f", "e1", 3, 13), None);
        assert_eq!(other.bytes(), 0, "the unreadable entry was discarded");
    }

    #[test]
    fn a_changed_entry_is_discarded_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(LocalKey::ephemeral());
        let c = cache(dir.path(), &key, 1 << 20);
        // An entry of another length than the object says is not served.
        c.put("vol/f", "e", 5, Bytes::from(vec![5u8; 1000]));
        assert_eq!(c.get("vol/f", "e", 5, 999), None);
        assert_eq!(c.get("vol/f", "e", 5, 1000), None, "and it is gone");
        c.put("vol/f", "e", 0, Bytes::from(vec![7u8; 1000]));
        let path = dir.path().join(DIR).join(entry_name("vol/f", "e", 0));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[50] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(c.get("vol/f", "e", 0, 1000), None);
        assert!(!path.exists());
        assert_eq!(c.bytes(), 0);
        // Another entry's bytes under this entry's name do not open either.
        c.put("vol/f", "e", 1, Bytes::from(vec![1u8; 10]));
        c.put("vol/f", "e", 2, Bytes::from(vec![2u8; 10]));
        let one = dir.path().join(DIR).join(entry_name("vol/f", "e", 1));
        let two = dir.path().join(DIR).join(entry_name("vol/f", "e", 2));
        std::fs::copy(&two, &one).unwrap();
        assert_eq!(c.get("vol/f", "e", 1, 10), None);
        assert!(!std::fs::read(&two)
            .unwrap()
            .windows(10)
            .any(|w| w == [2u8; 10]));
    }

    #[test]
    fn the_cache_never_exceeds_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(LocalKey::ephemeral());
        let c = cache(dir.path(), &key, 10_000);
        for seg in 0..100 {
            c.put("vol/f", "e", seg, Bytes::from(vec![seg as u8; 1000]));
            assert!(c.bytes() <= 10_000);
        }
        let on_disk: u64 = std::fs::read_dir(dir.path().join(DIR))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert_eq!(on_disk, c.bytes());
        assert!(c.get("vol/f", "e", 99, 1000).is_some(), "the newest stay");
        assert!(c.get("vol/f", "e", 0, 1000).is_none(), "the oldest go");
        // A smaller bound at the next mount evicts down to it.
        let small = cache(dir.path(), &key, 3_000);
        assert!(small.bytes() <= 3_000);
        let off = cache(dir.path(), &key, 0);
        off.put("vol/g", "e", 0, Bytes::from_static(b"x"));
        assert_eq!(off.bytes(), 0, "size 0 turns it off");
    }

    #[test]
    fn the_background_writer_writes_what_reads_put() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(LocalKey::ephemeral());
        let c = ReadCache::open(dir.path(), key, 1 << 20).unwrap();
        c.put("vol/f", "e", 0, Bytes::from_static(b"later"));
        for _ in 0..500 {
            if c.has("vol/f", "e", 0) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(c.get("vol/f", "e", 0, 5).as_deref(), Some(&b"later"[..]));
    }
}
