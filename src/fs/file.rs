//! File I/O: handles, staging, verified reads, and the commit that makes a
//! close, flush or fsync durable.
//!
//! A file opened for writing is staged ([`super::staged`]): its current
//! content is downloaded and verified first unless the open truncates.
//! Writes go to the staged file; flush, fsync and the last close commit it
//! ([`super::upload`]), conditional on the ETag seen at open (or on absence
//! for a new file). On a conflict the local version is kept as a conflict
//! copy beside the file and the caller gets EIO.

use super::attr::{Attr, Kind};
use super::staged::Staged;
use super::upload::Committed;
use super::{Entry, SealFs};
use crate::error::{Error, Result};
use crate::sealed::reader::Reader;
use crate::sealed::SealedObject;
use crate::store::StoreError;
use libc::{EBADF, EIO, EISDIR};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct Handle {
    pub ino: u64,
    pub writable: bool,
    /// The version (ETag) of the object when the file was opened: reads are
    /// of that version only, whose size the kernel was told.
    etag: Option<String>,
    /// That version's size: a read at or past it is end of file, answered
    /// without opening the object (the kernel asks at EOF even when its
    /// page cache holds the whole file).
    size: u64,
    /// The pinned object and its read-ahead, from the first read on.
    read: tokio::sync::Mutex<Option<Reader>>,
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
        let (etag, size) = self.ns.version(ino);
        let h = Arc::new(Handle {
            ino,
            writable,
            etag,
            size,
            read: tokio::sync::Mutex::new(None),
        });
        self.handles.lock().insert(fh, h);
        fh
    }

    pub(super) fn staged(&self, ino: u64) -> Option<Arc<Staged>> {
        self.ns.staged(ino)
    }

    /// A new staging file for `key` (registered as live, so recovery leaves it).
    fn new_staged(
        &self,
        key: String,
        size: u64,
        base_etag: Option<String>,
        key_ref: Option<crate::sealed::KeyRef>,
    ) -> Result<Staged> {
        Staged::create(
            &self.settings.cache_dir,
            &self.local,
            &self.live_staged,
            key,
            size,
            base_etag,
            key_ref,
        )
    }

    /// Makes sure `ino` has staged content: the current object downloaded and
    /// verified (or nothing, when `truncate`), with the ETag seen now as the
    /// condition for the upload.
    pub(super) async fn stage(&self, ino: u64, truncate: bool) -> Result<Arc<Staged>> {
        if let Some(s) = self.staged(ino) {
            if truncate {
                s.lock().await.set_len(0)?;
            }
            return Ok(s);
        }
        let (path, remote, kind) = self.ns.staging_source(ino)?;
        if kind != Kind::File {
            return Err(Error::posix(EISDIR, "not a regular file"));
        }
        let key = self.key_of(&path);
        let staged = if !remote {
            self.new_staged(key.clone(), 0, None, None)?
        } else if truncate {
            let info = self.store.head(&key).await?;
            let seen = self.seen_object(&info);
            self.new_staged(key.clone(), 0, seen.etag, seen.key_ref)?
        } else {
            let obj = self.sealed.open(&key).await?;
            let staged = self.new_staged(
                key.clone(),
                obj.plain_len(),
                Some(obj.info().etag.clone()),
                Some(obj.seal().key.clone()),
            )?;
            {
                let s = staged.lock().await;
                let mut f = s.file().writer().map_err(|e| Error::io("staging", e))?;
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
            staged.lock().await.make_dirty();
        }
        // Another open may have staged it while we downloaded: then theirs is used.
        self.ns.install_staged(ino, Arc::new(staged), truncate)
    }

    /// [`SealFs::open_for_kernel`] without the page cache decision (tests).
    #[cfg(test)]
    pub async fn open(&self, ino: u64, flags: i32) -> Result<u64> {
        self.open_for_kernel(ino, flags).await.map(|(fh, _)| fh)
    }

    /// Opens `ino` for the kernel: the handle, and whether the kernel may
    /// keep the pages it has of the file (they are of the version this handle
    /// reads: FOPEN_KEEP_CACHE), so an unchanged file is read once.
    pub async fn open_for_kernel(&self, ino: u64, flags: i32) -> Result<(u64, bool)> {
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
            self.ns.add_writer(ino);
            if let Err(e) = self.stage(ino, truncate).await {
                self.ns.remove_writer(ino);
                return Err(e);
            }
        }
        let fh = self.new_handle(ino, writable);
        Ok((fh, self.ns.open_pages(ino)))
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
        let staged = self.new_staged(self.key_of(&path), 0, None, None)?;
        staged.lock().await.make_dirty();
        let attr = Attr::new(Kind::File, mode, uid, gid);
        let ino = self.ns.create_staged(parent, name, attr, Arc::new(staged));
        self.ns.touch_dir(parent);
        let fh = self.new_handle(ino, true);
        Ok((self.entry(ino)?, fh))
    }

    /// Reads up to `size` bytes at `offset`. The bytes are often a slice of
    /// a read-ahead chunk (no copy on the way to the kernel).
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<bytes::Bytes> {
        let h = self.handle(fh)?;
        if let Some(staged) = self.staged(h.ino) {
            return Ok(staged.lock().await.read_at(offset, size as u64)?.into());
        }
        let mut st = h.read.lock().await;
        if st.is_none() && offset >= h.size && h.etag.is_some() {
            return Ok(bytes::Bytes::new());
        }
        if st.is_none() {
            let path = self.path_of(h.ino)?;
            let key = self.key_of(&path);
            let opened = match h.etag.as_deref() {
                Some(etag) => {
                    let disk = self.read_shared.disk();
                    self.sealed.open_cached(&key, etag, disk).await
                }
                None => self.sealed.open_version(&key, None).await,
            };
            let obj = match opened {
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
        whole(reader, offset, size, data)
    }

    /// [`SealFs::read`], answered at once on the caller's thread when
    /// nothing has to be waited for: a read of an opened object whose bytes
    /// are in the memory or disk cache. `None`: call `read`.
    pub fn read_at_hand(&self, fh: u64, offset: u64, size: u32) -> Option<Result<bytes::Bytes>> {
        let h = self.handle(fh).ok()?;
        if self.staged(h.ino).is_some() {
            return None;
        }
        let mut st = h.read.try_lock().ok()?;
        let reader = st.as_mut()?;
        let data = reader.read_at_hand(offset, size as u64)?;
        Some(data.and_then(|d| whole(reader, offset, size, d)))
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
            let mut s = staged.lock().await;
            let old_size = s.write_at(data, offset)?;
            let attr = || self.ns.path_and_attr(h.ino).map(|(_, a)| a);
            self.uploader()
                .advance_stream(&mut s, offset, data, old_size, attr)
                .await;
            s.size()
        };
        self.ns.wrote(h.ino, size);
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
            let mut s = self.lock_for_next_version(h.ino, &staged).await;
            s.check_broken()?;
            if self.spools(h.ino, &s) {
                match self.spool_staged(h.ino, &mut s).await {
                    // A full spool: the staged file is whole, so it goes up
                    // directly instead (close still means "in S3").
                    Err(e) if e.errno() == libc::ENOSPC || e.errno() == libc::EDQUOT => {
                        tracing::warn!(key = %s.key(), "the write-back spool is full; uploading directly: {e}");
                    }
                    other => return other,
                }
            }
        }
        self.commit(h.ino, &staged).await
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
            Some(s) => self.commit(h.ino, &s).await,
            None => Ok(()),
        }
    }

    pub async fn release(&self, fh: u64) -> Result<()> {
        let h = self.handles.lock().remove(&fh);
        let Some(h) = h else { return Ok(()) };
        if !h.writable {
            return Ok(());
        }
        let Some(staged) = self.ns.remove_writer(h.ino) else {
            return Ok(());
        };
        let result = self
            .commit_after(h.ino, &staged, Committer::LastRelease)
            .await;
        let dropped = staged.lock().await.is_broken();
        self.ns.staging_ended(h.ino, dropped);
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

    /// Commits staged content of `ino` (see [`super::upload`]) and applies
    /// the outcome to the namespace: the new version, or on a lost
    /// conflict, the copy's directory listed again and EIO.
    pub(super) async fn commit(&self, ino: u64, staged: &Staged) -> Result<()> {
        self.commit_after(ino, staged, Committer::Writer).await
    }

    async fn commit_after(&self, ino: u64, staged: &Staged, by: Committer) -> Result<()> {
        let mut s = self.lock_for_next_version(ino, staged).await;
        // FUSE sends release after close has returned, so the next open of
        // the file may come first: a writer that opened since owns the
        // staged content, and what it did (an O_TRUNC, say) goes up with
        // its own close, never with this release. Checked under the lock
        // its truncation takes, after it counted itself a writer.
        if by == Committer::LastRelease && self.ns.writers(ino) > 0 {
            return Ok(());
        }
        s.check_broken()?;
        if !s.is_dirty() {
            return Ok(());
        }
        let (path, attr) = self.ns.path_and_attr(ino)?;
        let key = self.key_of(&path);
        match self.uploader().commit(&mut s, &key, &path, &attr).await {
            Ok(Committed::Unchanged) => Ok(()),
            Ok(Committed::Uploaded { up, metadata_stale }) => {
                self.ns.uploaded(ino, &up);
                if metadata_stale {
                    // Attributes changed while the object streamed: rewrite
                    // its metadata (a self-copy, no data through the client).
                    if let Some(etag) = self.persist_attr(ino).await? {
                        s.rebased(etag);
                    }
                }
                Ok(())
            }
            Ok(Committed::Conflict(kept)) => {
                if kept.is_ok() {
                    self.activity.conflict();
                }
                let what = match kept {
                    Ok(copy) => {
                        self.ns.invalidate_parent_of(ino);
                        format!("write conflict on {path}: it changed in S3 since it was opened here; this version was kept as {copy}")
                    }
                    Err(e) => format!(
                        "write conflict on {path}, and keeping a conflict copy failed too: {e}"
                    ),
                };
                tracing::error!("{what}");
                Err(Error::Reported { errno: EIO, what })
            }
            Err(e) => {
                tracing::error!(path = %path, error = %e, "upload failed; changes stay staged");
                Err(Error::Reported {
                    errno: e.errno(),
                    what: format!("{path}: upload failed; changes stay staged: {e}"),
                })
            }
        }
    }

    /// Flushes every file with staged changes and waits for the spool
    /// (unmount, SIGTERM). Each failure was logged where it happened; the
    /// first is returned.
    pub async fn flush_all(&self) -> Result<()> {
        let inos: Vec<u64> = self.handles.lock().values().map(|h| h.ino).collect();
        let mut first_err = None;
        for ino in inos {
            let Some(s) = self.staged(ino) else { continue };
            if let Err(e) = self.commit(ino, &s).await {
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = self.drain_spool().await {
            first_err.get_or_insert(e);
        }
        let shared = self.read_shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.flush_disk()).await;
        first_err.map_or(Ok(()), Err)
    }
}

/// `data` if it is all that `reader` has at `offset` for a read of `size`.
/// For FUSE a short reply is end of file: the kernel zero-fills the rest of
/// the page and may shrink its idea of the file's size. So a read returns
/// exactly what is there, or fails.
fn whole(reader: &Reader, offset: u64, size: u32, data: bytes::Bytes) -> Result<bytes::Bytes> {
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

/// Who commits staged content: a writer (close, fsync, a truncate), or the
/// release of what was the last writable handle.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Committer {
    Writer,
    LastRelease,
}
