//! Content of a file open for writing, and the states it goes through.
//!
//! A file opened for writing is staged in a private file under the cache
//! directory (0600), encrypted under the local key ([`crate::local`]): its
//! current content is downloaded and verified first unless the open
//! truncates. Writes go to the staged file; flush, fsync and
//! the last close seal and upload it (see [`super::upload`]).
//!
//! ```text
//!            write, truncate                upload, spool, conflict copy
//!   Clean ───────────────────▶ Dirty ────────────────────────────────▶ Clean
//!     │                          │ (Sequential ─▶ Streaming ─▶ Scattered)
//!     └──── unlink ─▶ Unlinked ◀─┘── a failed local write ─▶ Broken
//! ```
//!
//! Every transition is a method here; nothing else changes the state. Dirty
//! content has a recovery journal beside it (written on the first change), so
//! a crash from then on leaves data the next mount uploads; leaving Dirty
//! removes it. Unlinked and Broken content is never uploaded or recovered.

use super::attr::Attr;
use super::journal::{self, Live};
use crate::error::{Error, Result};
use crate::local::{EncryptedFile, LocalKey};
use crate::sealed::stream::StreamingWrite;
use crate::sealed::KeyRef;
use crate::store::PutCondition;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Staged content, shared by all writable handles of one file.
pub struct Staged {
    inner: tokio::sync::Mutex<StagedInner>,
}

pub(super) struct StagedInner {
    /// The content, encrypted under the local key.
    file: EncryptedFile,
    local: Arc<LocalKey>,
    path: PathBuf,
    size: u64,
    /// The object key the content belongs to (follows renames), for the journal.
    key: String,
    /// ETag the upload is conditional on; `None` for a file not yet in S3.
    base_etag: Option<String>,
    /// The data key of the version `base_etag` names, when it was sealed.
    key_ref: Option<KeyRef>,
    state: State,
    /// Staging files in use by this mount (recovery leaves them alone).
    live: Live,
}

/// What the staged content is, relative to the version in S3 it builds on.
#[derive(Debug)]
pub(super) enum State {
    /// The same as that version. `sequential`: written from offset 0
    /// onwards only, so a streamed upload may still carry it.
    Clean { sequential: bool },
    /// Changed since; `journaled` once its recovery journal is written.
    Dirty { journaled: bool, order: Order },
    /// Its name is gone: nothing is uploaded, journaled or recovered.
    Unlinked,
    /// A write to the staging file failed (the local disk is full): the
    /// content has a hole, so it is never uploaded or recovered; every later
    /// write, flush and close fails with this errno, and the last close drops
    /// it (S3 keeps the file's previous version, if any).
    Broken(i32),
}

/// How dirty content has been written, which decides how it is uploaded.
#[derive(Debug)]
pub(super) enum Order {
    /// From offset 0 onwards, no stream yet: one may start.
    Sequential,
    /// A multipart upload carries the content written so far.
    Streaming(Box<Stream>),
    /// Out of order: uploaded whole at flush or close.
    Scattered,
}

/// A streamed upload in progress, with the attributes its object carries.
pub(super) struct Stream {
    pub upload: StreamingWrite,
    pub attr: Attr,
    /// Attributes changed after the stream fixed the object's metadata:
    /// the object's metadata is rewritten once it is complete.
    pub meta_changed: bool,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("sent", &self.upload.sent())
            .field("meta_changed", &self.meta_changed)
            .finish()
    }
}

impl Staged {
    /// A new staging file of `size` bytes for `key` in `dir`, building on
    /// `base_etag` (sealed with `key_ref`), registered in `live`.
    pub(super) fn create(
        dir: &Path,
        local: &Arc<LocalKey>,
        live: &Live,
        key: String,
        size: u64,
        base_etag: Option<String>,
        key_ref: Option<KeyRef>,
    ) -> Result<Staged> {
        let path = dir.join(format!(
            "staged-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let file = EncryptedFile::create(&path, local)
            .map_err(|e| Error::io(format!("creating staging file {}", path.display()), e))?;
        live.lock().insert(path.clone());
        Ok(Staged {
            inner: tokio::sync::Mutex::new(StagedInner {
                file,
                local: local.clone(),
                path,
                size,
                key,
                base_etag,
                key_ref,
                state: State::Clean {
                    sequential: size == 0,
                },
                live: live.clone(),
            }),
        })
    }

    pub(super) async fn lock(&self) -> tokio::sync::MutexGuard<'_, StagedInner> {
        self.inner.lock().await
    }
}

impl StagedInner {
    pub(super) fn file(&self) -> &EncryptedFile {
        &self.file
    }

    pub(super) fn size(&self) -> u64 {
        self.size
    }

    pub(super) fn key(&self) -> &str {
        &self.key
    }

    pub(super) fn base_etag(&self) -> Option<&str> {
        self.base_etag.as_deref()
    }

    #[cfg(test)]
    pub(super) fn state(&self) -> &State {
        &self.state
    }

    /// Whether the content has changes to upload.
    pub(super) fn is_dirty(&self) -> bool {
        matches!(self.state, State::Dirty { .. })
    }

    pub(super) fn is_broken(&self) -> bool {
        matches!(self.state, State::Broken(_))
    }

    /// The ETag of the sealed version this content replaces: the version
    /// whose key it may keep if that version verifies (none for a new file,
    /// or one that was not a sealed object).
    pub(super) fn sealed_base(&self) -> Option<&str> {
        self.key_ref.as_ref().and(self.base_etag.as_deref())
    }

    /// The condition an upload of this content is made on: the version it
    /// builds on is still there (or, for a new file, nothing is).
    pub(super) fn condition(&self) -> PutCondition {
        match &self.base_etag {
            Some(etag) => PutCondition::IfMatch(etag.clone()),
            None => PutCondition::IfNoneMatch,
        }
    }

    /// The streamed upload in progress, if any.
    pub(super) fn stream(&self) -> Option<&Stream> {
        match &self.state {
            State::Dirty {
                order: Order::Streaming(st),
                ..
            } => Some(st),
            _ => None,
        }
    }

    pub(super) fn stream_mut(&mut self) -> Option<&mut Stream> {
        match &mut self.state {
            State::Dirty {
                order: Order::Streaming(st),
                ..
            } => Some(st),
            _ => None,
        }
    }

    /// Whether a stream may start now: dirty, written in order, none yet.
    pub(super) fn may_start_stream(&self) -> bool {
        matches!(
            self.state,
            State::Dirty {
                order: Order::Sequential,
                ..
            }
        )
    }

    /// The error every operation on broken content gets.
    pub(super) fn check_broken(&self) -> Result<()> {
        match self.state {
            State::Broken(errno) => Err(Error::Reported {
                errno,
                what: format!(
                    "{}: an earlier write to the local staging area failed (local disk full?); the changes made through this open file are dropped",
                    self.key
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Writes `data` at `offset`; returns the size before. A failed local
    /// write breaks the content off (see [`State::Broken`]).
    pub(super) fn write_at(&mut self, data: &[u8], offset: u64) -> Result<u64> {
        self.check_broken()?;
        if let Err(e) = self.file.write_at(data, offset, self.size) {
            let err = Error::io(
                format!(
                    "writing the local staging file of {} failed, so the changes made through this open file will not be uploaded (S3 keeps its previous version)",
                    self.key
                ),
                e,
            );
            self.break_off(err.errno());
            return Err(err);
        }
        let old = self.size;
        self.size = self.size.max(offset + data.len() as u64);
        self.make_dirty();
        Ok(old)
    }

    /// Reads up to `len` bytes at `offset` of the staged content (broken
    /// content has none: its errno).
    pub(super) fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.check_broken()?;
        let end = (offset + len).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| Error::io("reading staged file", e))?;
        Ok(buf)
    }

    /// truncate(2): the content becomes `size` bytes long; only an empty
    /// file can still be written in order.
    pub(super) fn set_len(&mut self, size: u64) -> Result<()> {
        self.check_broken()?;
        self.file
            .set_len(size, self.size)
            .map_err(|e| Error::io("truncating staged file", e))?;
        self.size = size;
        self.make_dirty();
        if let State::Dirty { order, .. } = &mut self.state {
            *order = if size == 0 {
                Order::Sequential
            } else {
                Order::Scattered
            };
        }
        Ok(())
    }

    /// Clean → Dirty. The first change writes the recovery journal, so that
    /// a crash from here on leaves data the next mount finds.
    pub(super) fn make_dirty(&mut self) {
        if let State::Clean { sequential } = self.state {
            let journaled = self.write_journal();
            let order = if sequential {
                Order::Sequential
            } else {
                Order::Scattered
            };
            self.state = State::Dirty { journaled, order };
        }
    }

    fn write_journal(&self) -> bool {
        let base = self.base_etag.as_deref();
        match journal::write_journal(&self.local, &self.path, &self.key, base) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "cannot write recovery journal: {e}");
                false
            }
        }
    }

    /// Leaves Dirty (or any state) for `next`, removing the journal.
    fn leave(&mut self, next: State) {
        if let State::Dirty {
            journaled: true, ..
        } = std::mem::replace(&mut self.state, next)
        {
            journal::remove_journal(&self.path);
        }
    }

    /// Dirty → Clean: the content is now the version `etag` in S3, sealed
    /// with `key_ref` (written in order so far, a later append may stream).
    pub(super) fn uploaded(&mut self, etag: String, key_ref: KeyRef) {
        let sequential = self.written_in_order();
        self.base_etag = Some(etag);
        self.key_ref = Some(key_ref);
        self.leave(State::Clean { sequential });
    }

    /// Dirty → Clean: sealed into the write-back spool, which uploads it
    /// (and recovers it after a crash) from there.
    pub(super) fn spooled(&mut self, key_ref: KeyRef) {
        self.key_ref = Some(key_ref);
        let sequential = self.written_in_order();
        self.leave(State::Clean { sequential });
    }

    /// Dirty → Clean: the upload lost a conflict and the content was kept
    /// as a conflict copy beside the file.
    pub(super) fn conflict_kept(&mut self) {
        let sequential = self.written_in_order();
        self.leave(State::Clean { sequential });
    }

    fn written_in_order(&self) -> bool {
        match &self.state {
            State::Clean { sequential } => *sequential,
            State::Dirty { order, .. } => !matches!(order, Order::Scattered),
            _ => false,
        }
    }

    /// The version this content builds on changed (its metadata was
    /// rewritten, or the spooled upload of it landed).
    pub(super) fn rebased(&mut self, etag: String) {
        self.base_etag = Some(etag);
    }

    /// Dirty(Sequential) → Dirty(Streaming).
    pub(super) fn start_stream(&mut self, upload: StreamingWrite, attr: Attr) {
        if let State::Dirty { order, .. } = &mut self.state {
            *order = Order::Streaming(Box::new(Stream {
                upload,
                attr,
                meta_changed: false,
            }));
        }
    }

    /// Takes the stream out to complete it; the content stays Dirty (and
    /// in order) until the upload's outcome is known.
    pub(super) fn take_stream(&mut self) -> Option<Box<Stream>> {
        match &mut self.state {
            State::Dirty { order, .. } if matches!(order, Order::Streaming(_)) => {
                match std::mem::replace(order, Order::Sequential) {
                    Order::Streaming(st) => Some(st),
                    _ => unreachable!("matched above"),
                }
            }
            _ => None,
        }
    }

    /// Gives up streaming (an upload in progress is aborted): the content
    /// is uploaded whole.
    pub(super) fn scatter(&mut self) {
        match &mut self.state {
            State::Dirty { order, .. } => *order = Order::Scattered,
            State::Clean { sequential } => *sequential = false,
            _ => {}
        }
    }

    /// Attributes changed: they go with the next upload of dirty content
    /// (a stream's object has its metadata fixed already, so it is noted
    /// for a rewrite). Returns whether the content is dirty.
    pub(super) fn attributes_changed(&mut self) -> bool {
        if let Some(st) = self.stream_mut() {
            st.meta_changed = true;
        }
        self.is_dirty()
    }

    /// After a rename: the content now belongs to `key`, on top of `base_etag`.
    pub(super) fn moved(&mut self, key: String, base_etag: String) {
        // The stream's object is bound to the old name: it cannot be used.
        self.scatter();
        self.key = key;
        self.base_etag = Some(base_etag);
        if let State::Dirty {
            journaled: true, ..
        } = self.state
        {
            self.write_journal();
        }
    }

    /// → Unlinked: the file's name is gone, so its content is never uploaded
    /// and a crash must not bring it back.
    pub(super) fn unlinked(&mut self) {
        if !self.is_broken() {
            self.leave(State::Unlinked);
        }
    }

    /// → Broken: a local write failed (see [`State::Broken`]). Its blocks
    /// go at once, so the space it took is free for every other file even
    /// before the last handle is released.
    pub(super) fn break_off(&mut self, errno: i32) {
        self.leave(State::Broken(errno));
        if let Err(e) = self.file.discard() {
            tracing::debug!(path = %self.path.display(), "cannot free the staging file: {e}");
        }
    }
}

impl Drop for StagedInner {
    fn drop(&mut self) {
        self.live.lock().remove(&self.path);
        if self.is_dirty() {
            tracing::error!(path = %self.path.display(), key = %self.key, "staged changes could not be uploaded; the data is kept in this file and uploaded by a later retry or the next mount");
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
#[path = "staged_tests.rs"]
mod tests;
