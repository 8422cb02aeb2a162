//! The namespace: the one owner of the inode table and the directory
//! caches (complete listings, and the names of directories in S3).
//!
//! S3 has no inodes, so an inode is a (parent, name) that lookup or readdir
//! has seen. The table keeps each one's attributes as last read from S3 (or
//! set locally), its object's ETag and data key, and while a file is open
//! for writing, its staged content and writers. The rest of `fs/` never sees
//! the table: it asks and tells the namespace through the named operations
//! below, each one lock of the table, so every rule about what may replace
//! what (local state beats S3's view; a listing is trusted only while
//! complete; the two directory caches are invalidated together) lives here.

mod dir_names;
mod listing;
mod staging;
mod table;
#[cfg(test)]
mod tests;

pub use dir_names::ListedNames;
pub use listing::ListedDir;
pub use table::{Seen, DEFAULT_CACHED_ENTRIES, ROOT};

use super::attr::{Attr, Kind, SetAttr};
use super::staged::Staged;
use crate::error::{Error, Result};
use crate::sealed::KeyRef;
use crate::store::ListedVersion;
use dir_names::DirNames;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use table::Table;

/// An inode and its attributes, as returned to the kernel.
#[derive(Clone, Debug)]
pub struct Entry {
    pub ino: u64,
    pub attr: Attr,
    /// False once the name is gone (unlinked while open): st_nlink 0.
    pub linked: bool,
    /// A directory's subdirectories known to the mount (st_nlink is 2 plus
    /// these): exact for a directory listed or made here, a lower bound
    /// otherwise (readdir's d_type, not st_nlink, is what tools walk by).
    pub subdirs: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub name: String,
    pub kind: Kind,
}

/// What the namespace knows of a name, for a lookup.
#[derive(Debug)]
pub(super) enum Cached {
    /// Known and trusted: the answer, without S3.
    Known(Entry),
    /// The parent's complete listing is trusted and has no such name.
    Absent,
    /// S3 must be asked. `known_file`: the name is a known non-directory,
    /// which one HEAD revalidates.
    Ask { known_file: bool },
}

/// What unlink and rename need to know of an entry before they touch S3.
pub(super) struct Facts {
    pub remote: bool,
    pub staged: Option<Arc<Staged>>,
    /// The file id of its data key, for its grants.
    pub file_id: Option<String>,
}

/// An upload of staged content that landed.
pub(super) struct Uploaded {
    pub etag: String,
    pub key_ref: KeyRef,
    pub size: u64,
    /// The times stored with a streamed object (from the stream's start),
    /// which a remount will show: shown now too.
    pub stored_times: Option<(SystemTime, SystemTime)>,
}

pub(super) fn no_inode(ino: u64) -> Error {
    Error::posix(
        libc::ENOENT,
        format!("inode {ino}: no such file or directory"),
    )
}

/// Tells the kernel to drop its cached pages of an inode.
pub type PageInvalidator = Arc<dyn Fn(u64) + Send + Sync>;

pub struct Namespace {
    table: Mutex<Table>,
    /// Set by the FUSE adapter; absent in core tests.
    invalidator: std::sync::OnceLock<PageInvalidator>,
    names: DirNames,
    /// How long attributes and listings are trusted.
    ttl: Duration,
}

impl Namespace {
    pub(super) fn new(root: Attr, cached_entries: usize, ttl: Duration) -> Namespace {
        Namespace {
            table: Mutex::new(Table::new(root, cached_entries)),
            invalidator: std::sync::OnceLock::new(),
            names: DirNames::default(),
            ttl,
        }
    }

    fn fresh(&self, t: Instant) -> bool {
        t.elapsed() < self.ttl
    }

    /// How the kernel is told to drop pages of a version that changed.
    pub(super) fn set_page_invalidator(&self, f: PageInvalidator) {
        let _ = self.invalidator.set(f);
    }

    /// Unlocks the table, then invalidates the pages of every file a
    /// revalidation found changed (never under the lock: the kernel may call
    /// back into the filesystem).
    fn unlock_and_invalidate(&self, mut t: parking_lot::MutexGuard<'_, Table>) {
        let stale = std::mem::take(&mut t.stale_pages);
        drop(t);
        if let Some(f) = self.invalidator.get() {
            for ino in stale {
                f(ino);
            }
        }
    }

    /// An open for the kernel of `ino`: whether its page cache may be kept
    /// (it holds this very version), and from now on, which version it holds.
    pub(super) fn open_pages(&self, ino: u64) -> bool {
        let mut t = self.table.lock();
        let Some(i) = t.get_mut(ino) else {
            return false;
        };
        if i.local() {
            i.kernel_version = None;
            return false;
        }
        let keep = i.etag.is_some() && i.kernel_version == i.etag;
        i.kernel_version = i.etag.clone();
        keep
    }

    /// Inodes in the table (tests and stats).
    pub fn len(&self) -> usize {
        self.table.lock().len()
    }

    /// Path relative to the volume root ("" for the root).
    pub(super) fn path(&self, ino: u64) -> Result<String> {
        self.table.lock().path(ino).ok_or_else(|| no_inode(ino))
    }

    pub(super) fn entry(&self, ino: u64) -> Result<Entry> {
        entry_in(&self.table.lock(), ino).ok_or_else(|| no_inode(ino))
    }

    /// The path and current attributes of `ino` (what an upload seals).
    pub(super) fn path_and_attr(&self, ino: u64) -> Result<(String, Attr)> {
        let t = self.table.lock();
        let i = t.get(ino).ok_or_else(|| no_inode(ino))?;
        Ok((t.path(ino).unwrap_or_default(), i.attr.clone()))
    }

    /// The version a handle opened now reads: the ETag last seen at `ino`
    /// and that version's size.
    pub(super) fn version(&self, ino: u64) -> (Option<String>, u64) {
        self.table
            .lock()
            .get(ino)
            .map_or((None, 0), |i| (i.etag.clone(), i.attr.size))
    }

    /// The kernel's references to `ino`, if it is in the table.
    #[cfg(test)]
    pub(super) fn lookups(&self, ino: u64) -> Option<u64> {
        self.table.lock().lookups(ino)
    }

    /// The ETag of the object last seen at `ino`.
    #[cfg(test)]
    pub(super) fn etag(&self, ino: u64) -> Option<String> {
        self.table.lock().get(ino).and_then(|i| i.etag.clone())
    }

    pub(super) fn child(&self, parent: u64, name: &str) -> Option<u64> {
        self.table.lock().child(parent, name)
    }

    /// The kernel was handed `ino`: it stays until the kernel forgets it.
    /// False if it is gone (evicted meanwhile).
    pub(super) fn remember(&self, ino: u64) -> bool {
        self.table.lock().remember(ino)
    }

    /// The kernel dropped `n` references to `ino`.
    pub(super) fn forget(&self, ino: u64, n: u64) {
        self.table.lock().forget(ino, n);
    }

    /// What the table can say about `name` in `parent` without S3.
    pub(super) fn cached(&self, parent: u64, name: &str) -> Cached {
        let t = self.table.lock();
        match t.child(parent, name) {
            Some(ino) => match self.trusted(&t, parent, ino) {
                Some(e) => Cached::Known(e),
                None => Cached::Ask {
                    known_file: t.get(ino).is_some_and(|i| i.attr.kind != Kind::Dir),
                },
            },
            None if t.is_listed(parent) => Cached::Absent,
            None => Cached::Ask { known_file: false },
        }
    }

    /// Child `ino` of `parent`, if the table can vouch for it without S3.
    fn trusted(&self, t: &Table, parent: u64, ino: u64) -> Option<Entry> {
        let i = t.get(ino)?;
        // A directory whose own listing is still trusted exists: path walks
        // through it (every `lstat` of `ls -l DIR`) need not ask S3 about it
        // again.
        let dir_listed = i.attr.kind == Kind::Dir && t.is_listed(ino);
        let trusted =
            i.local() || !i.remote || t.is_listed(parent) || dir_listed || self.fresh(i.validated);
        trusted.then(|| Entry {
            ino,
            attr: i.attr.clone(),
            linked: true,
            subdirs: t.subdirs(ino),
        })
    }

    /// Entry `name` (`ino`) of a listing of `parent`, handed to the kernel
    /// with its attributes (`readdirplus`): the kernel links it as if looked
    /// up, so it is counted like a lookup. The flag says whether a lookup
    /// would give the same answer now without S3; if not (the listing's
    /// trust ran out, the name was replaced), the kernel must look it up
    /// again before using it. None: `ino` left the table since the listing
    /// (evicted by a huge one), and is not counted.
    pub(super) fn remember_listed(
        &self,
        parent: u64,
        name: &str,
        ino: u64,
    ) -> Option<(Entry, bool)> {
        let mut t = self.table.lock();
        let trusted = if t.child(parent, name) == Some(ino) {
            self.trusted(&t, parent, ino)
        } else {
            None
        };
        let vouched = trusted.is_some();
        let entry = match trusted {
            Some(e) => e,
            None => entry_in(&t, ino)?,
        };
        t.remember(ino);
        Some((entry, vouched))
    }

    /// Records what S3 (or a local create) says `name` in `parent` is.
    pub(super) fn record(&self, parent: u64, name: &str, seen: Seen) -> Result<Entry> {
        let mut t = self.table.lock();
        let ino = t.upsert(parent, name, seen);
        self.unlock_and_invalidate(t);
        self.entry(ino)
    }

    /// Records a new entry and hands it to the kernel (create-like operations).
    pub(super) fn record_remembered(&self, parent: u64, name: &str, seen: Seen) -> u64 {
        self.table.lock().upsert_remembered(parent, name, seen)
    }

    /// S3 has no `name` in `parent`: a cached entry of it goes, unless it
    /// exists only here or has local state.
    pub(super) fn gone_from_s3(&self, parent: u64, name: &str) {
        let mut t = self.table.lock();
        if let Some(ino) = t.child(parent, name) {
            if t.get(ino).is_some_and(|i| !i.local() && i.remote) {
                t.unlink(parent, name);
            }
        }
    }

    /// Whether getattr must ask S3 about `ino`: a linked file in S3 with no
    /// local state, whose attributes and parent listing are both stale.
    /// An unlinked inode (open, then replaced or removed) keeps its
    /// attributes: its old path names another file now, whose size must
    /// never become this one's (the kernel would cut its cache).
    pub(super) fn needs_revalidation(&self, ino: u64) -> Result<bool> {
        let t = self.table.lock();
        let i = t.get(ino).ok_or_else(|| no_inode(ino))?;
        Ok(t.is_linked(ino)
            && i.remote
            && !i.local()
            && i.attr.kind != Kind::Dir
            && !self.fresh(i.validated)
            && !t.is_listed(i.parent))
    }

    /// What a HEAD of `ino`'s object said (getattr's revalidation).
    pub(super) fn revalidated(&self, ino: u64, seen: Seen) {
        let mut t = self.table.lock();
        if t.get_mut(ino).is_some_and(|i| i.apply_seen(seen)) {
            t.stale_pages.push(ino);
        }
        self.unlock_and_invalidate(t);
    }

    /// What unlink and rename need to know of `ino`.
    pub(super) fn facts(&self, ino: u64) -> Result<Facts> {
        let t = self.table.lock();
        let i = t.get(ino).ok_or_else(|| no_inode(ino))?;
        Ok(Facts {
            remote: i.remote,
            staged: i.staged.clone(),
            file_id: i.key_ref.as_ref().map(|k| k.file_id.to_hex()),
        })
    }

    /// Removes `name` from `parent`; its inode lives on while held.
    pub(super) fn unlink(&self, parent: u64, name: &str) {
        self.table.lock().unlink(parent, name);
    }

    /// Removes the empty directory `name` (inode `ino`) from `parent`.
    pub(super) fn remove_dir(&self, parent: u64, name: &str, ino: u64) {
        self.table.lock().unlink(parent, name);
        self.names.forget(ino);
    }

    /// Moves `parent/name` to `new_parent/new_name`, replacing any entry
    /// there. Both directories' remembered names are forgotten: the names
    /// listed before no longer say what is in either (the destination's
    /// listing, taken by the rename's own look-up, lacks the new name, and
    /// would answer ENOENT for it once its table entry is gone).
    pub(super) fn rename(&self, parent: u64, name: &str, new_parent: u64, new_name: &str) {
        self.table.lock().rename(parent, name, new_parent, new_name);
        self.names.forget(parent);
        self.names.forget(new_parent);
    }

    /// A file's object was copied to its new key as version `etag`.
    pub(super) fn file_moved(&self, ino: u64, etag: String) {
        if let Some(i) = self.table.lock().get_mut(ino) {
            i.etag = Some(etag);
            i.listed = None;
            i.attr.ctime = SystemTime::now();
        }
    }

    /// A directory's mtime/ctime move when its entries change (in memory; a
    /// directory's times are persisted only by an explicit utimens/chmod).
    pub(super) fn touch_dir(&self, dir: u64) {
        if let Some(i) = self.table.lock().get_mut(dir) {
            i.attr.mtime = SystemTime::now();
            i.attr.ctime = i.attr.mtime;
        }
    }

    /// Whether `dir` has entries that exist only here (not yet uploaded).
    pub(super) fn has_local_children(&self, dir: u64) -> bool {
        !self.table.lock().local_children(dir).is_empty()
    }

    /// A symlink's target if it was read before; EINVAL for a non-symlink.
    pub(super) fn symlink_target(&self, ino: u64) -> Result<Option<Vec<u8>>> {
        let t = self.table.lock();
        let i = t.get(ino).ok_or_else(|| no_inode(ino))?;
        if i.attr.kind != Kind::Symlink {
            return Err(Error::posix(libc::EINVAL, "not a symlink"));
        }
        Ok(i.target.clone())
    }

    pub(super) fn set_symlink_target(&self, ino: u64, target: Vec<u8>) {
        if let Some(i) = self.table.lock().get_mut(ino) {
            i.target = Some(target);
        }
    }

    // ----- Attributes -----

    /// Applies a setattr to the attributes in memory (ctime moves).
    pub(super) fn set_attributes(&self, ino: u64, set: &SetAttr) -> Result<()> {
        let mut t = self.table.lock();
        let i = t.get_mut(ino).ok_or_else(|| no_inode(ino))?;
        set.apply(&mut i.attr, SystemTime::now());
        i.listed = None;
        Ok(())
    }

    /// Applies `edit` to `ino`'s attributes (given its data key, whose
    /// sealing fields share the metadata room); ctime moves. Returns the
    /// attributes before, to restore if persisting fails; if `edit`
    /// refuses, nothing changes.
    pub(super) fn edit_attributes(
        &self,
        ino: u64,
        edit: impl FnOnce(&mut Attr, Option<&KeyRef>) -> Result<()>,
    ) -> Result<Attr> {
        let mut t = self.table.lock();
        let i = t.get_mut(ino).ok_or_else(|| no_inode(ino))?;
        let mut attr = i.attr.clone();
        edit(&mut attr, i.key_ref.as_ref())?;
        attr.ctime = SystemTime::now();
        i.listed = None;
        Ok(std::mem::replace(&mut i.attr, attr))
    }

    pub(super) fn restore_attributes(&self, ino: u64, attr: Attr) {
        if let Some(i) = self.table.lock().get_mut(ino) {
            i.attr = attr;
        }
    }

    /// What persisting `ino`'s attributes writes: its path and attributes,
    /// or `None` when they live in memory only (not in S3, or unlinked: its
    /// old path names another object now).
    pub(super) fn attributes_to_persist(&self, ino: u64) -> Result<Option<(String, Attr)>> {
        let t = self.table.lock();
        let i = t.get(ino).ok_or_else(|| no_inode(ino))?;
        Ok((i.remote && t.is_linked(ino))
            .then(|| (t.path(ino).unwrap_or_default(), i.attr.clone())))
    }

    /// The attributes were written to S3 as version `etag`.
    pub(super) fn attributes_persisted(&self, ino: u64, etag: String) {
        if let Some(i) = self.table.lock().get_mut(ino) {
            i.etag = Some(etag);
            i.listed = None;
            i.validated = Instant::now();
        }
    }

    // ----- Directory caches -----

    /// Something changed in the directory holding `ino` behind the table's
    /// back (a conflict copy appeared): list it again next time.
    pub(super) fn invalidate_parent_of(&self, ino: u64) {
        let mut t = self.table.lock();
        if let Some(p) = t.get(ino).map(|i| i.parent) {
            t.unlist(p);
            self.names.forget(p);
        }
    }

    /// Trust no listing and no cached names (recovery changed the volume).
    pub(super) fn invalidate_all(&self) {
        self.table.lock().unlist_all();
        self.names.clear();
    }

    /// The names S3 had in `dir` at a listing no older than the TTL.
    pub(super) fn fresh_names(&self, dir: u64) -> Option<Arc<ListedNames>> {
        self.names.fresh(dir, self.ttl)
    }

    pub(super) fn remember_names(&self, dir: u64, names: ListedNames) {
        self.names.remember(dir, names, self.ttl);
    }

    /// A known file in S3 whose attributes LIST can vouch for, and what it
    /// must show: (inode, version).
    pub(super) fn listed_version(&self, parent: u64, name: &str) -> Option<(u64, ListedVersion)> {
        let t = self.table.lock();
        let ino = t.child(parent, name)?;
        let i = t.get(ino)?;
        let v = i.listed.clone()?;
        (i.remote && !i.local() && i.etag.as_ref() == Some(&v.etag)).then_some((ino, v))
    }

    /// A LIST showed `ino` as `version` again: its attributes stand, as
    /// fresh as a HEAD would have made them. `None` if the entry changed
    /// meanwhile.
    pub(super) fn confirm_listed(&self, ino: u64, version: &ListedVersion) -> Option<Entry> {
        let mut t = self.table.lock();
        let i = t.get_mut(ino)?;
        if i.local() || i.listed.as_ref() != Some(version) {
            return None;
        }
        i.validated = Instant::now();
        drop(t);
        self.entry(ino).ok()
    }

    /// The LIST pages that revalidating an entry of `dir` by listing it
    /// should be limited to (a page per 1,000 known entries, and one for
    /// growth), or `None` when a HEAD of the entry is the better buy for
    /// now (`DirNames::head_rather_than_list`).
    pub(super) fn revalidation_pages(&self, dir: u64) -> Option<usize> {
        let pages = self.table.lock().children_count(dir) / 1000 + 1;
        (!self.names.head_rather_than_list(dir, pages, self.ttl)).then_some(pages + 1)
    }

    /// Whether `dir` may be listed for a lookup, at most `pages` pages.
    pub(super) fn may_list(&self, dir: u64, pages: usize) -> bool {
        self.names.may_list(dir, pages, self.ttl)
    }

    /// A LIST of `dir` limited to `pages` pages did not reach its end: not
    /// tried again within the TTL.
    pub(super) fn list_fell_short(&self, dir: u64, pages: usize) {
        self.names.list_fell_short(dir, pages, self.ttl);
    }

    /// The parent and name of a linked `ino`.
    pub(super) fn parent_and_name(&self, ino: u64) -> Option<(u64, String)> {
        let t = self.table.lock();
        let i = t.get(ino)?;
        t.is_linked(ino).then(|| (i.parent, i.name.clone()))
    }

    /// A complete listing of `dir` that took `took` to make is trusted for
    /// the metadata TTL, or for `took` when that is longer: a listing of
    /// 10,000 entries is seconds old by its end anyway, and the `lstat` of
    /// every entry that `ls -l` makes next must not send each one back to
    /// S3 (the caller passes at least 0.2 ms per entry for those; the
    /// staleness bound becomes twice that). With a TTL of 0 nothing is
    /// trusted.
    pub(super) fn mark_listed(&self, dir: u64, took: Duration) {
        let ttl = self.ttl;
        let until = Instant::now() + if ttl.is_zero() { ttl } else { ttl.max(took) };
        self.table.lock().set_listed(dir, until);
    }
}

/// `ino`'s entry as the table holds it.
fn entry_in(t: &Table, ino: u64) -> Option<Entry> {
    let i = t.get(ino)?;
    Some(Entry {
        ino,
        attr: i.attr.clone(),
        linked: t.is_linked(ino),
        subdirs: t.subdirs(ino),
    })
}
