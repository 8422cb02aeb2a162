//! The inode table: stable inode numbers for paths seen through the mount.
//!
//! S3 has no inodes, so an inode is a (parent, name) that lookup or readdir
//! has seen. Each keeps the attributes last read from S3 (or set locally),
//! the ETag and data-key reference of its object, and, while a file is open
//! for writing, its staged state. Paths are derived by walking parents, so a
//! directory rename moves its whole subtree by changing one entry.

use crate::fs::attr::{Attr, Kind};
use crate::fs::staged::Staged;
use crate::sealed::KeyRef;
use crate::store::ListedVersion;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

pub const ROOT: u64 = 1;

pub struct Inode {
    pub parent: u64,
    pub name: String,
    pub attr: Attr,
    /// ETag of the object last seen (files, symlinks, directory markers).
    pub etag: Option<String>,
    /// The file's data key, when known.
    pub key_ref: Option<KeyRef>,
    /// Whether this entry exists in S3 (an object, a marker or a prefix).
    pub remote: bool,
    /// When the attributes were last read from S3 (or confirmed by a LIST).
    pub validated: Instant,
    /// What LIST shows while the attributes read from S3 stand, when LIST
    /// can vouch for them: a LIST showing it again revalidates the entry
    /// without a HEAD. Cleared by every local change.
    pub listed: Option<ListedVersion>,
    /// Staged content while the file is open for writing.
    pub staged: Option<Arc<Staged>>,
    /// Writable handles open on this inode.
    pub writers: usize,
    /// A version of this file waits in the write-back spool: like staged
    /// content, the local attributes are authoritative until it is uploaded.
    pub pending: bool,
    /// A symlink's target, once read.
    pub target: Option<Vec<u8>>,
    /// The version (ETag) whose content the kernel's page cache may hold
    /// for this file: an open of the same version keeps those pages.
    pub kernel_version: Option<String>,
    /// References the kernel holds (entries replied minus forgotten).
    lookups: u64,
    /// A directory whose complete listing is in the table: until when it
    /// is trusted (see [`Table::set_listed`]).
    listed_until: Option<Instant>,
}

impl Inode {
    /// The local state is authoritative (staged content, or a version
    /// waiting in the spool): S3's view of it must not replace it.
    pub fn local(&self) -> bool {
        self.staged.is_some() || self.pending
    }

    fn new(parent: u64, name: &str, seen: Seen) -> Inode {
        Inode {
            parent,
            name: name.to_string(),
            attr: seen.attr,
            etag: seen.etag,
            key_ref: seen.key_ref,
            remote: seen.remote,
            validated: Instant::now(),
            listed: seen.listed,
            staged: None,
            writers: 0,
            pending: false,
            target: None,
            kernel_version: None,
            lookups: 0,
            listed_until: None,
        }
    }

    /// What S3 says now replaces what was known, unless the local state
    /// is authoritative; either way the entry was just validated. (Used by
    /// every revalidation: lookups, listings and getattr.) Returns true
    /// when the kernel may hold pages of a version that is gone.
    pub fn apply_seen(&mut self, seen: Seen) -> bool {
        let mut stale_pages = false;
        if !self.local() {
            if self.etag != seen.etag {
                self.target = None;
                stale_pages = self.kernel_version.take().is_some();
            }
            self.attr = seen.attr;
            self.etag = seen.etag;
            self.key_ref = seen.key_ref;
            self.remote = seen.remote;
            self.listed = seen.listed;
        }
        self.validated = Instant::now();
        stale_pages
    }

    /// Something other than the cache needs this inode: the kernel holds it,
    /// or it has local state or writers.
    fn pinned(&self) -> bool {
        self.lookups > 0 || self.local() || self.writers > 0
    }
}

/// Unreferenced entries kept as a cache of what S3 said, by default: enough
/// for `ls -l` of a directory of tens of thousands of entries, a few tens of
/// MiB at most.
pub const DEFAULT_CACHED_ENTRIES: usize = 50_000;

/// The inode table. Entries the kernel references (`lookups` > 0), entries
/// with local state, and their ancestors stay; every other entry is a cache
/// of S3's answers, evicted least recently used first beyond `cap`, so the
/// table's memory is bounded by what the kernel holds plus `cap`, however
/// large the tree walked.
pub struct Table {
    inodes: HashMap<u64, Inode>,
    /// Children by directory, then by name.
    dirs: HashMap<u64, HashMap<String, u64>>,
    /// How many of each directory's children in `dirs` are directories
    /// (its link count), kept with `dirs` by [`Table::link_child`] and
    /// [`Table::unlink_child`]: a directory's attributes are asked for after
    /// every change in it, and counting 10,000 children each time made
    /// `cp -r` into a large directory quadratic.
    subdir_counts: HashMap<u64, u32>,
    next: u64,
    /// Linked entries the kernel does not reference, least recently used first.
    unref: lru::LruCache<u64, ()>,
    cap: usize,
    /// Inodes whose kernel pages are of a version S3 no longer has, to be
    /// invalidated once the table is unlocked.
    pub stale_pages: Vec<u64>,
}

/// What S3 (or a local create) says an entry is.
pub struct Seen {
    pub attr: Attr,
    pub etag: Option<String>,
    pub key_ref: Option<KeyRef>,
    pub remote: bool,
    /// What LIST shows of this version, if LIST can vouch for it
    /// ([`ListedVersion::settled`]).
    pub listed: Option<ListedVersion>,
}

impl Table {
    pub fn new(root: Attr, cap: usize) -> Table {
        let mut inodes = HashMap::new();
        let mut r = Inode::new(
            ROOT,
            "",
            Seen {
                attr: root,
                etag: None,
                key_ref: None,
                remote: true,
                listed: None,
            },
        );
        r.lookups = 1;
        inodes.insert(ROOT, r);
        Table {
            inodes,
            dirs: HashMap::new(),
            subdir_counts: HashMap::new(),
            next: ROOT + 1,
            unref: lru::LruCache::unbounded(),
            cap,
            stale_pages: Vec::new(),
        }
    }

    pub fn get(&self, ino: u64) -> Option<&Inode> {
        self.inodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Inode> {
        self.inodes.get_mut(&ino)
    }

    pub fn child(&self, parent: u64, name: &str) -> Option<u64> {
        self.dirs.get(&parent)?.get(name).copied()
    }

    /// Whether `ino` still has its name (not unlinked or replaced since).
    pub fn is_linked(&self, ino: u64) -> bool {
        ino == ROOT
            || self
                .inodes
                .get(&ino)
                .is_some_and(|i| self.child(i.parent, &i.name) == Some(ino))
    }

    /// Subdirectories of `dir` in the table.
    pub fn subdirs(&self, dir: u64) -> u32 {
        self.subdir_counts.get(&dir).copied().unwrap_or(0)
    }

    fn is_dir(&self, ino: u64) -> bool {
        self.inodes
            .get(&ino)
            .is_some_and(|i| i.attr.kind == Kind::Dir)
    }

    /// Links `ino` (already in `inodes`) as `parent/name`.
    fn link_child(&mut self, parent: u64, name: &str, ino: u64) {
        self.dirs
            .entry(parent)
            .or_default()
            .insert(name.to_string(), ino);
        if self.is_dir(ino) {
            *self.subdir_counts.entry(parent).or_default() += 1;
        }
    }

    /// Removes the name `parent/name` from `dirs`, and returns what it named.
    fn unlink_child(&mut self, parent: u64, name: &str) -> Option<u64> {
        let children = self.dirs.get_mut(&parent)?;
        let ino = children.remove(name)?;
        if children.is_empty() {
            self.dirs.remove(&parent);
        }
        if self.is_dir(ino) {
            if let Some(n) = self.subdir_counts.get_mut(&parent) {
                *n -= 1;
                if *n == 0 {
                    self.subdir_counts.remove(&parent);
                }
            }
        }
        Some(ino)
    }

    /// Entries in the table (for tests and stats).
    pub fn len(&self) -> usize {
        self.inodes.len()
    }

    /// Path relative to the volume root ("" for the root).
    pub fn path(&self, ino: u64) -> Option<String> {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let i = self.inodes.get(&cur)?;
            parts.push(i.name.as_str());
            cur = i.parent;
        }
        parts.reverse();
        Some(parts.join("/"))
    }

    #[cfg(test)]
    pub fn lookups(&self, ino: u64) -> Option<u64> {
        self.inodes.get(&ino).map(|i| i.lookups)
    }

    /// The kernel was handed `ino` (a lookup, create, mkdir... reply): it
    /// stays until the kernel forgets it. False if it is gone.
    pub fn remember(&mut self, ino: u64) -> bool {
        match self.inodes.get_mut(&ino) {
            Some(i) => {
                i.lookups += 1;
                self.unref.pop(&ino);
                true
            }
            None => false,
        }
    }

    /// The kernel dropped `n` references to `ino`. An unlinked inode nothing
    /// else holds goes; a linked one becomes a cache entry.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let Some(i) = self.inodes.get_mut(&ino) else {
            return;
        };
        i.lookups = i.lookups.saturating_sub(n);
        if i.lookups > 0 {
            return;
        }
        let (parent, name) = (i.parent, i.name.clone());
        if self.child(parent, &name) == Some(ino) {
            self.unref.put(ino, ());
            self.evict();
        } else if self.inodes.get(&ino).is_some_and(|i| !i.pinned()) {
            tracing::trace!(ino, "inode dropped after forget");
            self.drop_unlinked(ino);
        }
    }

    /// Records an entry seen in S3 or created locally, keeping its inode number
    /// when the kind is unchanged. Entries with staged content keep their local
    /// attributes: while open for writing, the local state is authoritative.
    pub fn upsert(&mut self, parent: u64, name: &str, seen: Seen) -> u64 {
        if let Some(ino) = self.child(parent, name) {
            let i = self.inodes.get_mut(&ino).expect("child maps to an inode");
            if i.attr.kind == seen.attr.kind {
                if i.apply_seen(seen) {
                    self.stale_pages.push(ino);
                }
                self.unref.promote(&ino);
                return ino;
            }
            self.unlink(parent, name);
        }
        let ino = self.next;
        self.next += 1;
        self.inodes.insert(ino, Inode::new(parent, name, seen));
        self.link_child(parent, name, ino);
        self.unref.put(ino, ());
        self.evict();
        ino
    }

    /// [`Table::upsert`] and [`Table::remember`] at once, for entries handed
    /// to the kernel by create-like operations.
    pub fn upsert_remembered(&mut self, parent: u64, name: &str, seen: Seen) -> u64 {
        let ino = self.upsert(parent, name, seen);
        self.remember(ino);
        ino
    }

    /// Removes the name; the inode lives on while the kernel or an open
    /// handle holds it.
    pub fn unlink(&mut self, parent: u64, name: &str) -> Option<u64> {
        tracing::trace!(parent, name, "name removed");
        let ino = self.unlink_child(parent, name)?;
        self.unref.pop(&ino);
        if self.inodes.get(&ino).is_some_and(|i| !i.pinned()) {
            self.drop_unlinked(ino);
        }
        Some(ino)
    }

    /// Moves `parent/name` to `new_parent/new_name`, replacing any entry there.
    pub fn rename(&mut self, parent: u64, name: &str, new_parent: u64, new_name: &str) {
        let Some(ino) = self.unlink_child(parent, name) else {
            return;
        };
        if self.child(new_parent, new_name).is_some() {
            self.unlink(new_parent, new_name);
        }
        self.link_child(new_parent, new_name, ino);
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.parent = new_parent;
            i.name = new_name.to_string();
        }
    }

    /// How many children of `parent` are known.
    pub fn children_count(&self, parent: u64) -> usize {
        self.dirs.get(&parent).map_or(0, HashMap::len)
    }

    /// Known children of `parent`: (name, inode).
    pub fn children_of(&self, parent: u64) -> Vec<(String, u64)> {
        self.dirs
            .get(&parent)
            .map(|d| d.iter().map(|(n, i)| (n.clone(), *i)).collect())
            .unwrap_or_default()
    }

    /// Children that exist only locally (created, not yet uploaded).
    pub fn local_children(&self, parent: u64) -> Vec<(String, u64, Kind)> {
        self.dirs
            .get(&parent)
            .into_iter()
            .flatten()
            .filter_map(|(n, ino)| {
                let i = self.inodes.get(ino)?;
                (!i.remote).then_some((n.clone(), *ino, i.attr.kind))
            })
            .collect()
    }

    /// Drops an inode that has no name any more, with the cached entries
    /// below it (a removed or replaced directory's children are gone too;
    /// pinned ones stay for their holders, unreachable by path).
    fn drop_unlinked(&mut self, ino: u64) {
        let mut stack = vec![ino];
        while let Some(cur) = stack.pop() {
            self.subdir_counts.remove(&cur);
            if let Some(children) = self.dirs.remove(&cur) {
                for (_, c) in children {
                    self.unref.pop(&c);
                    if self.inodes.get(&c).is_some_and(|i| !i.pinned()) {
                        stack.push(c);
                    }
                }
            }
            self.inodes.remove(&cur);
        }
    }

    /// Evicts least recently used cache entries beyond `cap`. An entry with
    /// pinned entries below it stays (they need its name for their path) and
    /// is looked at again later.
    fn evict(&mut self) {
        let mut budget = self.unref.len();
        while self.unref.len() > self.cap && budget > 0 {
            budget -= 1;
            let Some((ino, ())) = self.unref.pop_lru() else {
                break;
            };
            if self.subtree_pinned(ino) {
                self.unref.put(ino, ());
                continue;
            }
            let Some(i) = self.inodes.get(&ino) else {
                continue;
            };
            let (parent, name) = (i.parent, i.name.clone());
            tracing::trace!(ino, "cached entry evicted");
            self.unlink(parent, &name);
            // The parent's listing is no longer all in the table: an absent
            // name must not be taken for an absent file.
            self.unlist(parent);
        }
    }

    /// Whether the complete listing of `dir` is in the table and trusted.
    pub fn is_listed(&self, dir: u64) -> bool {
        self.inodes
            .get(&dir)
            .and_then(|i| i.listed_until)
            .is_some_and(|until| Instant::now() < until)
    }

    /// The table holds every entry of `dir`, trusted until `until`.
    pub fn set_listed(&mut self, dir: u64, until: Instant) {
        if let Some(i) = self.inodes.get_mut(&dir) {
            i.listed_until = Some(until);
        }
    }

    /// Something changed in `dir` behind the table's back: list it again.
    pub fn unlist(&mut self, dir: u64) {
        if let Some(i) = self.inodes.get_mut(&dir) {
            i.listed_until = None;
        }
    }

    /// Trust no listing (after recovery changed the volume).
    pub fn unlist_all(&mut self) {
        for i in self.inodes.values_mut() {
            i.listed_until = None;
        }
    }

    /// Whether `ino` or anything below it is pinned.
    fn subtree_pinned(&self, ino: u64) -> bool {
        let mut stack = vec![ino];
        while let Some(cur) = stack.pop() {
            if self.inodes.get(&cur).is_some_and(Inode::pinned) {
                return true;
            }
            if let Some(d) = self.dirs.get(&cur) {
                stack.extend(d.values().copied());
            }
        }
        false
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
