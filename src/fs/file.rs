//! File I/O: handles, staged writes, verified reads, and the upload that
//! makes a close, flush or fsync durable.
//!
//! A file opened for writing is staged in a private file under the cache
//! directory (0600): its current content is downloaded and verified first
//! unless the open truncates. Writes go to the staged file; flush, fsync and
//! the last close seal and upload it, conditional on the ETag seen at open
//! (or on absence for a new file). On a conflict the local version is kept as
//! a conflict copy beside the file and the caller gets EIO.

use super::attr::{Attr, Kind};
use super::inode::Seen;
use super::{enoent, Entry, SealFs};
use crate::error::{Error, Result};
use crate::sealed::reader::Reader;
use crate::sealed::stream::StreamingWrite;
use crate::sealed::{KeyRef, SealedObject};
use crate::store::StoreError;
use libc::{EBADF, EIO, EISDIR};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub struct Handle {
    pub ino: u64,
    pub writable: bool,
    /// The version (ETag) of the object when the file was opened: reads are
    /// of that version only, whose size the kernel was told.
    etag: Option<String>,
    /// The pinned object and its read-ahead, from the first read on.
    read: tokio::sync::Mutex<Option<Reader>>,
}

/// Content of a file open for writing, shared by all its writable handles.
pub struct Staged {
    pub(super) inner: tokio::sync::Mutex<StagedInner>,
}

pub(super) struct StagedInner {
    pub(super) file: std::fs::File,
    path: PathBuf,
    pub(super) size: u64,
    pub(super) dirty: bool,
    /// ETag the upload is conditional on; `None` for a file not yet in S3.
    pub(super) base_etag: Option<String>,
    pub(super) key_ref: Option<KeyRef>,
    pub(super) unlinked: bool,
    /// The object key the content belongs to (follows renames), for the journal.
    pub(super) key: String,
    /// Whether a recovery journal exists for this content (while dirty).
    journal: bool,
    /// Staging files in use by this mount (recovery leaves them alone).
    live: super::recover::Live,
    /// The multipart upload fed while a sequential writer writes.
    pub(super) stream: Option<StreamingWrite>,
    /// Whether the content so far was written from offset 0 onwards, so a
    /// stream may (still) carry it.
    pub(super) streamable: bool,
    /// Attributes changed after the stream fixed the object's metadata.
    pub(super) meta_changed: bool,
    /// The attributes the stream's object carries.
    pub(super) stream_attr: Option<Attr>,
    /// A write to the staging file failed (the local disk is full): the
    /// content has a hole, so it is never uploaded, journaled or recovered;
    /// every later write, flush and close fails with this errno, and the last
    /// close drops it (S3 keeps the file's previous version, if any).
    pub(super) broken: Option<i32>,
}

impl StagedInner {
    /// The ETag of the sealed version this content replaces: the version
    /// whose key it may keep if that version verifies (none for a new file,
    /// or one that was not a sealed object).
    pub(super) fn sealed_base(&self) -> Option<&str> {
        self.key_ref.as_ref().and(self.base_etag.as_deref())
    }

    /// Marks the content changed; the first change writes the recovery
    /// journal, so that a crash from here on leaves data the next mount finds.
    pub(super) fn make_dirty(&mut self) {
        self.dirty = true;
        if !self.journal {
            self.write_journal();
        }
    }

    fn write_journal(&mut self) {
        match super::recover::write_journal(&self.path, &self.key, self.base_etag.as_deref()) {
            Ok(()) => self.journal = true,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "cannot write recovery journal: {e}")
            }
        }
    }

    /// The content is in S3 (or kept as a conflict copy): nothing to recover.
    pub(super) fn mark_clean(&mut self) {
        self.dirty = false;
        if self.journal {
            super::recover::remove_journal(&self.path);
            self.journal = false;
        }
    }

    /// After a rename: the content now belongs to `key`, on top of `base_etag`.
    pub(super) fn moved(&mut self, key: String, base_etag: String) {
        // The stream's object is bound to the old name: it cannot be used.
        self.drop_stream();
        self.key = key;
        self.base_etag = Some(base_etag);
        if self.journal {
            self.write_journal();
        }
    }
}

impl StagedInner {
    /// A local write failed: the staged content is incomplete and must never
    /// reach S3 (see `broken`).
    pub(super) fn break_off(&mut self, errno: i32) {
        self.broken = Some(errno);
        self.drop_stream();
        self.dirty = false;
        if self.journal {
            super::recover::remove_journal(&self.path);
            self.journal = false;
        }
    }

    /// The error every operation on broken staged content gets.
    pub(super) fn check_broken(&self) -> Result<()> {
        match self.broken {
            Some(errno) => Err(Error::Reported {
                errno,
                what: format!(
                    "{}: an earlier write to the local staging area failed (local disk full?); the changes made through this open file are dropped",
                    self.key
                ),
            }),
            None => Ok(()),
        }
    }

    /// Gives up the stream (its upload is aborted); the next upload sends
    /// the whole staged file.
    pub(super) fn drop_stream(&mut self) {
        self.stream = None;
        self.streamable = false;
    }
}

impl Drop for StagedInner {
    fn drop(&mut self) {
        self.live.lock().remove(&self.path);
        if self.dirty && !self.unlinked {
            tracing::error!(path = %self.path.display(), key = %self.key, "staged changes could not be uploaded; the data is kept in this file and uploaded by a later retry or the next mount");
        } else {
            let _ = std::fs::remove_file(&self.path);
            if self.journal {
                super::recover::remove_journal(&self.path);
            }
        }
    }
}

impl Staged {
    fn create(
        fs: &SealFs,
        key: String,
        size: u64,
        base_etag: Option<String>,
        key_ref: Option<KeyRef>,
    ) -> Result<Staged> {
        let dir = &fs.settings.cache_dir;
        let path = dir.join(format!(
            "staged-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("creating staging file {}", path.display()), e))?;
        fs.live_staged.lock().insert(path.clone());
        Ok(Staged {
            inner: tokio::sync::Mutex::new(StagedInner {
                file,
                path,
                size,
                dirty: false,
                base_etag,
                key_ref,
                unlinked: false,
                key,
                journal: false,
                live: fs.live_staged.clone(),
                stream: None,
                streamable: size == 0,
                meta_changed: false,
                stream_attr: None,
                broken: None,
            }),
        })
    }

    pub async fn mark_unlinked(&self) {
        let mut s = self.inner.lock().await;
        s.unlinked = true;
        s.drop_stream();
    }

    pub(super) async fn set_len(&self, size: u64) -> Result<()> {
        let mut s = self.inner.lock().await;
        s.check_broken()?;
        s.file
            .set_len(size)
            .map_err(|e| Error::io("truncating staged file", e))?;
        s.size = size;
        s.stream = None;
        s.streamable = size == 0;
        s.make_dirty();
        Ok(())
    }

    pub(super) async fn mark_dirty(&self) {
        self.inner.lock().await.make_dirty();
    }
}

impl SealFs {
    fn handle(&self, fh: u64) -> Result<Arc<Handle>> {
        self.handles
            .lock()
            .get(&fh)
            .cloned()
            .ok_or_else(|| Error::posix(EBADF, format!("no open file handle {fh}")))
    }

    fn new_handle(&self, ino: u64, writable: bool) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let etag = self.table.lock().get(ino).and_then(|i| i.etag.clone());
        let h = Arc::new(Handle {
            ino,
            writable,
            etag,
            read: tokio::sync::Mutex::new(None),
        });
        self.handles.lock().insert(fh, h);
        fh
    }

    pub(super) fn staged(&self, ino: u64) -> Option<Arc<Staged>> {
        self.table.lock().get(ino).and_then(|i| i.staged.clone())
    }

    /// Makes sure `ino` has staged content: the current object downloaded and
    /// verified (or nothing, when `truncate`), with the ETag seen now as the
    /// condition for the upload.
    pub(super) async fn stage(&self, ino: u64, truncate: bool) -> Result<Arc<Staged>> {
        if let Some(s) = self.staged(ino) {
            if truncate {
                s.set_len(0).await?;
            }
            return Ok(s);
        }
        let (path, remote, kind) = {
            let t = self.table.lock();
            let i = t.get(ino).ok_or_else(|| enoent(&format!("inode {ino}")))?;
            (t.path(ino).unwrap_or_default(), i.remote, i.attr.kind)
        };
        if kind != Kind::File {
            return Err(Error::posix(EISDIR, "not a regular file"));
        }
        let key = self.key_of(&path);
        let staged = if !remote {
            Staged::create(self, key.clone(), 0, None, None)?
        } else if truncate {
            let info = self.store.head(&key).await?;
            let seen = self.seen_object(&info);
            Staged::create(self, key.clone(), 0, seen.etag, seen.key_ref)?
        } else {
            let obj = self.sealed.open(&key).await?;
            let staged = Staged::create(
                self,
                key.clone(),
                obj.plain_len(),
                Some(obj.info().etag.clone()),
                Some(obj.seal().key.clone()),
            )?;
            {
                let s = staged.inner.lock().await;
                let mut f = tokio::fs::File::from_std(
                    s.file.try_clone().map_err(|e| Error::io("staging", e))?,
                );
                let io = self.sealed.settings();
                obj.copy_to(
                    self.store.as_ref(),
                    &mut f,
                    io.read_run,
                    io.read_concurrency,
                    &|_| {},
                )
                .await?;
            }
            staged
        };
        if truncate {
            staged.inner.lock().await.make_dirty();
        }
        let staged = Arc::new(staged);
        let mut t = self.table.lock();
        let i = t.get_mut(ino).ok_or_else(|| enoent(&path))?;
        if let Some(existing) = &i.staged {
            // Another open staged it while we downloaded; use theirs.
            return Ok(existing.clone());
        }
        if truncate {
            i.attr.size = 0;
            i.attr.mtime = SystemTime::now();
            i.attr.ctime = i.attr.mtime;
        }
        i.staged = Some(staged.clone());
        Ok(staged)
    }

    pub async fn open(&self, ino: u64, flags: i32) -> Result<u64> {
        // A file whose upload is pending in the write-back spool is read
        // (and rewritten) from S3 once it is there.
        self.settle(ino).await?;
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let truncate = flags & libc::O_TRUNC != 0;
        // O_TRUNC without write access is ignored (POSIX leaves it unspecified).
        if writable {
            self.check_writable()?;
            // Count the writer before staging: a release of an earlier handle
            // that arrives meanwhile (FUSE sends release after close returns)
            // must not see itself as the last writer and upload, then drop,
            // the staged state this open is about to use.
            if let Some(i) = self.table.lock().get_mut(ino) {
                i.writers += 1;
            }
            if let Err(e) = self.stage(ino, truncate).await {
                if let Some(i) = self.table.lock().get_mut(ino) {
                    i.writers = i.writers.saturating_sub(1);
                }
                return Err(e);
            }
        }
        Ok(self.new_handle(ino, writable))
    }

    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(Entry, u64)> {
        let path = self.new_entry_path(parent, name).await?;
        let staged = Staged::create(self, self.key_of(&path), 0, None, None)?;
        staged.inner.lock().await.make_dirty();
        let ino = {
            let mut t = self.table.lock();
            let ino = t.upsert_remembered(
                parent,
                name,
                Seen {
                    attr: Attr::new(Kind::File, mode, uid, gid),
                    etag: None,
                    key_ref: None,
                    remote: false,
                },
            );
            let i = t.get_mut(ino).expect("just inserted");
            i.staged = Some(Arc::new(staged));
            i.writers += 1;
            ino
        };
        self.touch_dir(parent);
        let fh = self.new_handle(ino, true);
        Ok((self.entry(ino)?, fh))
    }

    /// Reads up to `size` bytes at `offset`. The bytes are often a slice of
    /// a read-ahead chunk (no copy on the way to the kernel).
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<bytes::Bytes> {
        let h = self.handle(fh)?;
        if let Some(staged) = self.staged(h.ino) {
            let s = staged.inner.lock().await;
            let end = (offset + size as u64).min(s.size);
            if offset >= end {
                return Ok(bytes::Bytes::new());
            }
            let mut buf = vec![0u8; (end - offset) as usize];
            s.file
                .read_exact_at(&mut buf, offset)
                .map_err(|e| Error::io("reading staged file", e))?;
            return Ok(buf.into());
        }
        let mut st = h.read.lock().await;
        if st.is_none() {
            let path = self.path_of(h.ino)?;
            let key = self.key_of(&path);
            let obj = match self.sealed.open_version(&key, h.etag.as_deref()).await {
                Err(Error::Store(StoreError::PreconditionFailed { .. })) => {
                    return Err(Error::posix(
                        EIO,
                        format!("{path} was replaced since it was opened; open it again to read the new version"),
                    ))
                }
                other => other?,
            };
            *st = Some(self.reader(obj));
        }
        let reader = st.as_mut().expect("opened above");
        let data = reader.read(offset, size as u64).await?;
        // For FUSE a short reply is end of file: the kernel zero-fills the
        // rest of the page and may shrink its idea of the file's size. So a
        // read returns exactly what is there, or fails.
        let want = reader
            .object()
            .plain_len()
            .saturating_sub(offset)
            .min(size as u64);
        if data.len() as u64 != want {
            return Err(Error::posix(
                EIO,
                format!(
                    "read of {} at {offset}: {} of {want} bytes assembled; refusing a short read",
                    reader.object().key(),
                    data.len()
                ),
            ));
        }
        Ok(data)
    }

    fn reader(&self, obj: SealedObject) -> Reader {
        Reader::new(Arc::new(obj), self.store.clone(), self.read_shared.clone())
    }

    /// Opens (pins) the object for every read handle of `ino` that has not
    /// read yet, so that they keep working after an unlink.
    pub(super) async fn pin_readers(&self, ino: u64, key: &str) {
        let readers: Vec<Arc<Handle>> = self
            .handles
            .lock()
            .values()
            .filter(|h| h.ino == ino)
            .cloned()
            .collect();
        for h in readers {
            let mut st = h.read.lock().await;
            if st.is_none() {
                if let Ok(obj) = self.sealed.open_version(key, h.etag.as_deref()).await {
                    *st = Some(self.reader(obj));
                }
            }
        }
    }

    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let h = self.handle(fh)?;
        if !h.writable {
            return Err(Error::posix(EBADF, "file not open for writing"));
        }
        let staged = self
            .staged(h.ino)
            .ok_or_else(|| Error::posix(EBADF, "file not staged"))?;
        let size = {
            let mut s = staged.inner.lock().await;
            s.check_broken()?;
            if let Err(e) = s.file.write_all_at(data, offset) {
                let err = Error::io(
                    format!(
                        "writing the local staging file of {} failed, so the changes made through this open file will not be uploaded (S3 keeps its previous version)",
                        s.key
                    ),
                    e,
                );
                s.break_off(err.errno());
                return Err(err);
            }
            let old_size = s.size;
            s.size = s.size.max(offset + data.len() as u64);
            s.make_dirty();
            self.feed_stream(h.ino, &mut s, offset, old_size).await;
            s.size
        };
        if let Some(i) = self.table.lock().get_mut(h.ino) {
            i.attr.size = size;
            i.attr.mtime = SystemTime::now();
            i.attr.ctime = i.attr.mtime;
        }
        Ok(data.len() as u32)
    }

    /// flush(2)/close: uploads staged changes; success means the data is in
    /// S3. With `--write-back`, seals them into the spool instead and the
    /// upload runs in the background.
    pub async fn flush(&self, fh: u64) -> Result<()> {
        let h = self.handle(fh)?;
        if !h.writable {
            return Ok(());
        }
        let Some(staged) = self.staged(h.ino) else {
            return Ok(());
        };
        if self.settings.write_back {
            let mut s = staged.inner.lock().await;
            s.check_broken()?;
            if self.spools(h.ino, &s) {
                match self.spool_staged(h.ino, &mut s).await {
                    // A full spool: the staged file is whole, so it goes up
                    // directly instead (close still means "in S3").
                    Err(e) if e.errno() == libc::ENOSPC || e.errno() == libc::EDQUOT => {
                        tracing::warn!(key = %s.key, "the write-back spool is full; uploading directly: {e}");
                    }
                    other => return other,
                }
            }
        }
        self.upload(h.ino, &staged).await
    }

    /// fsync(2): the file's data is in S3 when it returns, whatever the mode
    /// and whichever descriptor it is called on.
    pub async fn fsync(&self, fh: u64) -> Result<()> {
        let h = self.handle(fh)?;
        self.settle(h.ino).await?;
        if !h.writable {
            return Ok(());
        }
        match self.staged(h.ino) {
            Some(s) => self.upload(h.ino, &s).await,
            None => Ok(()),
        }
    }

    pub async fn release(&self, fh: u64) -> Result<()> {
        let h = self.handles.lock().remove(&fh);
        let Some(h) = h else { return Ok(()) };
        if !h.writable {
            return Ok(());
        }
        let last = {
            let mut t = self.table.lock();
            match t.get_mut(h.ino) {
                Some(i) => {
                    i.writers = i.writers.saturating_sub(1);
                    (i.writers == 0).then(|| i.staged.clone()).flatten()
                }
                None => None,
            }
        };
        let Some(staged) = last else { return Ok(()) };
        let result = self.upload(h.ino, &staged).await;
        let broken = staged.inner.lock().await.broken.is_some();
        let mut t = self.table.lock();
        let mut gone = None;
        if let Some(i) = t.get_mut(h.ino) {
            if i.writers == 0 {
                i.staged = None;
                i.validated = Instant::now();
                if broken {
                    // Its changes are dropped: S3's version (if any) is the
                    // file again, read afresh; a file never uploaded is gone.
                    i.validated = Instant::now() - std::time::Duration::from_secs(3600);
                    i.etag = None;
                    if !i.remote {
                        gone = Some((i.parent, i.name.clone()));
                    }
                }
            }
        }
        if let Some((parent, name)) = gone {
            t.unlink(parent, &name);
        }
        result
    }

    /// mknod for regular files: an empty file, uploaded at once.
    pub async fn mknod_file(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Entry> {
        let (entry, fh) = self.create(parent, name, mode, uid, gid).await?;
        self.release(fh).await?;
        self.entry(entry.ino)
    }
}
