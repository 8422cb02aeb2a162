//! Directory listings for the kernel: `readdir` and `readdirplus` of open
//! directory handles.
//!
//! A pass over a directory lists it once, when it starts (offset 0), and
//! the later calls of the pass are served from that snapshot on the FUSE
//! thread, so offsets stay stable and no call after the first waits for S3.
//!
//! `readdirplus` (which the kernel uses for every listing once sealfs asks
//! for it at INIT) hands each entry with its attributes. The kernel links
//! those entries as if each had been looked up, so `ls -l`, `find -ls` or
//! `tar c` of a directory make no lookup per entry: after the listing, a
//! `stat` of each entry is answered by the kernel itself. Each linked entry
//! is counted by the core like a lookup ([`SealFs::lookup_listed`]); an
//! entry that no longer fits in the reply is taken back at once.

use super::convert::{errno, file_attr, file_type, ErrorReply};
use super::FuseAdapter;
use crate::fs::{byte_names, DirEntry, Kind, SealFs};
use fuser::{
    FileAttr, FileHandle, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus, ReplyOpen,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The snapshots of open directory handles, by handle.
#[derive(Default)]
pub(super) struct Listings {
    open: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    next: AtomicU64,
}

impl Listings {
    /// A new directory handle (its snapshot is taken by its first listing call).
    pub(super) fn open(&self, reply: ReplyOpen) {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        reply.opened(FileHandle(fh), fuser::FopenFlags::empty());
    }

    pub(super) fn release(&self, fh: FileHandle) {
        self.open.lock().remove(&fh.0);
    }

    /// The snapshot a call past the start of a pass continues from.
    fn continued(&self, fh: FileHandle, offset: u64) -> Option<Arc<Vec<DirEntry>>> {
        (offset > 0)
            .then(|| self.open.lock().get(&fh.0).cloned())
            .flatten()
    }

    fn keep(&self, fh: FileHandle, entries: Vec<DirEntry>) -> Arc<Vec<DirEntry>> {
        let entries = Arc::new(entries);
        self.open.lock().insert(fh.0, entries.clone());
        entries
    }
}

impl FuseAdapter {
    pub(super) fn list(&self, dir: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectory) {
        self.serve_listing("readdir", dir, fh, offset, reply, move |entries, reply| {
            fill(entries, offset, reply)
        });
    }

    pub(super) fn list_plus(
        &self,
        dir: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let (fs, ttl) = (self.fs.clone(), self.ttl);
        self.serve_listing(
            "readdirplus",
            dir,
            fh,
            offset,
            reply,
            move |entries, reply| fill_plus(&fs, ttl, dir.0, entries, offset, reply),
        );
    }

    /// Answers one call of a pass with `fill`: from the pass's snapshot on
    /// this thread, or, when the pass starts, from a new listing (a task).
    fn serve_listing<R: ErrorReply + Send + 'static>(
        &self,
        op: &'static str,
        dir: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: R,
        fill: impl FnOnce(&[DirEntry], R) + Send + 'static,
    ) {
        if let Some(entries) = self.listings.continued(fh, offset) {
            return fill(&entries, reply);
        }
        let (fs, listings) = (self.fs.clone(), self.listings.clone());
        self.spawn(async move {
            match fs.readdir(dir.0).await {
                Ok(e) => fill(&listings.keep(fh, e), reply),
                Err(e) => reply.error(errno(op, &e, fs.activity())),
            }
        });
    }
}

/// The name as the kernel knows it (any bytes; see [`byte_names`]).
fn os_name(e: &DirEntry) -> Vec<u8> {
    byte_names::decode(&e.name).unwrap_or_else(|| e.name.clone().into_bytes())
}

/// Entries from `offset` on, as many as the kernel's buffer holds. Offset
/// `i + 1` names the entry after entry `i`.
fn fill(entries: &[DirEntry], offset: u64, mut reply: ReplyDirectory) {
    for (i, e) in entries.iter().enumerate().skip(offset as usize) {
        let name = os_name(e);
        if reply.add(
            INodeNo(e.ino),
            (i + 1) as u64,
            file_type(e.kind),
            OsStr::from_bytes(&name),
        ) {
            break;
        }
    }
    reply.ok();
}

/// [`fill`] with each entry's attributes: what a lookup would answer,
/// kept by the kernel for `ttl`, or, for an entry the core cannot vouch
/// for now, only its inode number and type, to be looked up again first.
fn fill_plus(
    fs: &SealFs,
    ttl: Duration,
    dir: u64,
    entries: &[DirEntry],
    offset: u64,
    mut reply: ReplyDirectoryPlus,
) {
    for (i, e) in entries.iter().enumerate().skip(offset as usize) {
        let name = os_name(e);
        let name = OsStr::from_bytes(&name);
        let next = (i + 1) as u64;
        let ino = INodeNo(e.ino);
        // The kernel links neither "." nor "..": not counted, and only
        // their inode number and type are used.
        let counted = if e.name == "." || e.name == ".." {
            None
        } else {
            fs.lookup_listed(dir, &e.name, e.ino)
        };
        let full = match &counted {
            Some((entry, vouched)) => {
                let ttl = if *vouched { ttl } else { Duration::ZERO };
                reply.add(ino, next, name, &ttl, &file_attr(entry), Generation(0))
            }
            None => reply.add(
                ino,
                next,
                name,
                &Duration::ZERO,
                &bare_attr(e),
                Generation(0),
            ),
        };
        if full {
            // Not in the reply: the kernel never saw this entry.
            if counted.is_some() {
                fs.forget(e.ino, 1);
            }
            break;
        }
    }
    reply.ok();
}

/// Attributes of an entry known only by inode number and type (the kernel
/// treats them as expired, and looks the name up before any use).
fn bare_attr(e: &DirEntry) -> FileAttr {
    FileAttr {
        ino: INodeNo(e.ino),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: file_type(e.kind),
        perm: 0,
        nlink: if e.kind == Kind::Dir { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 64 * 1024,
        flags: 0,
    }
}
