//! The namespace's operations on files open for writing: their staged
//! content, their writers, and the versions their uploads (direct or
//! through the write-back spool) make.

use super::{no_inode, Namespace, Seen, Uploaded};
use crate::error::Result;
use crate::fs::attr::{Attr, Kind};
use crate::fs::staged::Staged;
use crate::sealed::KeyRef;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

impl Namespace {
    pub(in crate::fs) fn staged(&self, ino: u64) -> Option<Arc<Staged>> {
        self.table.lock().get(ino).and_then(|i| i.staged.clone())
    }

    /// What staging `ino` needs: its path, whether it is in S3, its kind.
    pub(in crate::fs) fn staging_source(&self, ino: u64) -> Result<(String, bool, Kind)> {
        let t = self.table.lock();
        let i = t.get(ino).ok_or_else(|| no_inode(ino))?;
        Ok((t.path(ino).unwrap_or_default(), i.remote, i.attr.kind))
    }

    /// Makes `staged` the content of `ino`, unless another open staged it
    /// meanwhile (theirs is returned and used). A truncating open empties it.
    pub(in crate::fs) fn install_staged(
        &self,
        ino: u64,
        staged: Arc<Staged>,
        truncated: bool,
    ) -> Result<Arc<Staged>> {
        let mut t = self.table.lock();
        let i = t.get_mut(ino).ok_or_else(|| no_inode(ino))?;
        if let Some(existing) = &i.staged {
            return Ok(existing.clone());
        }
        if truncated {
            i.attr.size = 0;
            i.attr.mtime = SystemTime::now();
            i.attr.ctime = i.attr.mtime;
        }
        i.staged = Some(staged.clone());
        Ok(staged)
    }

    /// A new file, created here with `staged` content and one writer, handed
    /// to the kernel.
    pub(in crate::fs) fn create_staged(
        &self,
        parent: u64,
        name: &str,
        attr: Attr,
        staged: Arc<Staged>,
    ) -> u64 {
        let mut t = self.table.lock();
        let seen = Seen {
            attr,
            etag: None,
            key_ref: None,
            remote: false,
            listed: None,
        };
        let ino = t.upsert_remembered(parent, name, seen);
        let i = t.get_mut(ino).expect("just inserted");
        i.staged = Some(staged);
        i.writers += 1;
        ino
    }

    /// A writable open of `ino` begins. Counted before staging: a release
    /// of an earlier handle arriving meanwhile (FUSE sends release after
    /// close returns) must not see itself as the last writer and drop the
    /// staged content this open is about to use.
    pub(in crate::fs) fn add_writer(&self, ino: u64) {
        if let Some(i) = self.table.lock().get_mut(ino) {
            i.writers += 1;
        }
    }

    /// A writable handle of `ino` went (or its open failed). Returns the
    /// staged content when it was the last writer.
    pub(in crate::fs) fn remove_writer(&self, ino: u64) -> Option<Arc<Staged>> {
        let mut t = self.table.lock();
        let i = t.get_mut(ino)?;
        i.writers = i.writers.saturating_sub(1);
        (i.writers == 0).then(|| i.staged.clone()).flatten()
    }

    pub(in crate::fs) fn writers(&self, ino: u64) -> usize {
        self.table.lock().get(ino).map_or(0, |i| i.writers)
    }

    /// The last writer's upload is done: the staged content goes (unless
    /// a new writer came meanwhile). When its changes were dropped (a
    /// failed local write), S3's version is the file again, read afresh;
    /// a file never uploaded is gone.
    pub(in crate::fs) fn staging_ended(&self, ino: u64, changes_dropped: bool) {
        let mut t = self.table.lock();
        let mut gone = None;
        if let Some(i) = t.get_mut(ino) {
            if i.writers == 0 {
                i.staged = None;
                i.validated = Instant::now();
                if changes_dropped {
                    i.validated = Instant::now() - Duration::from_secs(3600);
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
    }

    /// A write made the staged content `size` bytes long.
    pub(in crate::fs) fn wrote(&self, ino: u64, size: u64) {
        if let Some(i) = self.table.lock().get_mut(ino) {
            i.attr.size = size;
            i.attr.mtime = SystemTime::now();
            i.attr.ctime = i.attr.mtime;
        }
    }

    /// Staged content of `ino` landed in S3.
    pub(in crate::fs) fn uploaded(&self, ino: u64, up: &Uploaded) {
        if let Some(i) = self.table.lock().get_mut(ino) {
            i.remote = true;
            i.etag = Some(up.etag.clone());
            i.listed = None;
            i.key_ref = Some(up.key_ref.clone());
            i.attr.size = up.size;
            i.validated = Instant::now();
            // Pages the kernel holds from writes are not trusted as this
            // version's content (a partly written page, an mmap'd write):
            // the next open reads afresh, the one after keeps its pages.
            i.kernel_version = None;
            if let Some((mtime, ctime)) = up.stored_times {
                i.attr.mtime = mtime;
                i.attr.ctime = ctime;
            }
        }
    }

    /// A version of `ino` waits in the write-back spool: like staged
    /// content, its local attributes are authoritative until it is uploaded.
    pub(in crate::fs) fn mark_pending(&self, ino: u64, key_ref: KeyRef, size: u64) {
        if let Some(i) = self.table.lock().get_mut(ino) {
            i.key_ref = Some(key_ref);
            i.attr.size = size;
            i.pending = true;
        }
    }

    /// The spooled version of `ino` landed as `etag`; returns the staged
    /// content of a writer that reopened the file meanwhile (it builds on
    /// that version now).
    pub(in crate::fs) fn spool_uploaded(&self, ino: u64, etag: &str) -> Option<Arc<Staged>> {
        let mut t = self.table.lock();
        let i = t.get_mut(ino)?;
        i.pending = false;
        i.remote = true;
        i.etag = Some(etag.to_string());
        i.validated = Instant::now();
        i.staged.clone()
    }

    /// The spooled version of `ino` lost a conflict (kept as a copy beside
    /// it): S3 holds someone else's version, so look again.
    pub(in crate::fs) fn spool_conflict(&self, ino: u64) {
        let mut t = self.table.lock();
        let parent = t.get_mut(ino).map(|i| {
            i.pending = false;
            i.remote = true;
            i.etag = None;
            i.validated = Instant::now() - Duration::from_secs(3600);
            i.parent
        });
        if let Some(p) = parent {
            t.unlist(p);
            self.names.forget(p);
        }
    }

    /// Spooled versions of `inos` were uploaded by recovery, or dropped:
    /// nothing is pending for them; what S3 has is read afresh.
    pub(in crate::fs) fn pending_settled(&self, inos: &[u64]) {
        let mut t = self.table.lock();
        for ino in inos {
            if let Some(i) = t.get_mut(*ino) {
                i.pending = false;
                i.remote = true;
                i.validated = Instant::now() - Duration::from_secs(3600);
            }
        }
    }

    /// The failed spooled version of `ino` is dropped (its file was unlinked).
    pub(in crate::fs) fn pending_dropped(&self, ino: u64) {
        if let Some(i) = self.table.lock().get_mut(ino) {
            i.pending = false;
        }
    }
}
