//! Merging a directory's listing from S3 into the table: which entries
//! need a HEAD, what the listing answers, and when it is trusted complete.

use super::{DirEntry, ListedNames, Namespace, Seen};
use crate::error::{Error, Result};
use crate::fs::attr::Kind;
use crate::store::{ListEntry, ListedVersion};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// What one LIST (all its pages) of a directory returned.
#[derive(Default)]
pub struct ListedDir {
    /// Objects by name.
    pub files: BTreeMap<String, ListEntry>,
    /// Common prefixes not shadowed by an object of the same name: name → prefix.
    pub dirs: BTreeMap<String, String>,
}

impl ListedDir {
    fn has(&self, name: &str) -> bool {
        self.files.contains_key(name) || self.dirs.contains_key(name)
    }

    fn names(&self) -> impl Iterator<Item = &String> {
        self.files.keys().chain(self.dirs.keys())
    }

    /// Every name, with what LIST showed of it if it is an object.
    pub fn versions(&self) -> ListedNames {
        let files = self
            .files
            .iter()
            .map(|(n, e)| (n.clone(), ListedVersion::of_entry(e)));
        let dirs = self.dirs.keys().map(|n| (n.clone(), None));
        files.chain(dirs).collect()
    }
}

/// How long a listing is trusted per entry, at least: the time `ls -l`
/// takes to stat one entry through FUSE, with room to spare.
const STAT_ALLOWANCE: std::time::Duration = std::time::Duration::from_micros(200);

/// An entry of a listing that the table has fresh: its inode and kind.
pub(in crate::fs) type Found = HashMap<String, (u64, Kind)>;

/// The entries of a listing to HEAD: object names, and (name, prefix) of
/// directories.
#[derive(Default)]
pub(in crate::fs) struct ToHead {
    pub files: Vec<String>,
    pub dirs: Vec<(String, String)>,
}

impl Namespace {
    /// The path and parent of directory `ino`, to list it.
    pub(in crate::fs) fn dir_to_list(&self, ino: u64) -> Result<(String, u64)> {
        let t = self.table.lock();
        let i = t.get(ino).ok_or_else(|| super::no_inode(ino))?;
        if i.attr.kind != Kind::Dir {
            return Err(Error::posix(libc::ENOTDIR, "not a directory"));
        }
        Ok((t.path(ino).unwrap_or_default(), i.parent))
    }

    /// Which entries of `listed` need a HEAD: unknown, changed, or stale
    /// and not vouched for by this LIST (an entry whose attributes LIST can
    /// vouch for, showing the very version they were read from, is
    /// revalidated by it). The inode of every other entry is noted as it is
    /// seen: a directory larger than the table's cache evicts its own first
    /// entries while it is listed, and the listing must still name them all.
    pub(in crate::fs) fn plan_listing(&self, dir: u64, listed: &ListedDir) -> (Found, ToHead) {
        let mut t = self.table.lock();
        let mut found = Found::new();
        let mut to_head = ToHead::default();
        for (name, entry) in &listed.files {
            let Some(c) = t.child(dir, name) else {
                to_head.files.push(name.clone());
                continue;
            };
            let i = t.get_mut(c).expect("child inode");
            let same = i.etag.as_ref() == Some(&entry.etag);
            if i.local() || (same && self.fresh(i.validated)) {
                found.insert(name.clone(), (c, i.attr.kind));
            } else if same && i.listed.is_some() && i.listed == ListedVersion::of_entry(entry) {
                i.validated = Instant::now();
                found.insert(name.clone(), (c, i.attr.kind));
            } else {
                to_head.files.push(name.clone());
            }
        }
        for (name, p) in &listed.dirs {
            let known = t.child(dir, name).and_then(|c| Some((c, t.get(c)?)));
            match known {
                Some((c, i)) if i.attr.kind == Kind::Dir => {
                    found.insert(name.clone(), (c, Kind::Dir));
                }
                _ => to_head.dirs.push((name.clone(), p.clone())),
            }
        }
        (found, to_head)
    }

    /// Merges a listing of `dir` (begun at `started`) into the table: the
    /// entries HEADed (`seen`), those found fresh, and local entries S3 does
    /// not have yet. Entries S3 no longer has are dropped (not those created
    /// or confirmed since the LIST began: it cannot know them). The listing
    /// is trusted as complete when every name is in the table still and no
    /// entry was `refused`. Returns the entries, "." and ".." first.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::fs) fn merge_listing(
        &self,
        dir: u64,
        parent: u64,
        listed: &ListedDir,
        mut found: Found,
        seen: Vec<(String, Seen)>,
        refused: bool,
        started: Instant,
    ) -> Vec<DirEntry> {
        let mut t = self.table.lock();
        for (name, seen) in seen {
            let kind = seen.attr.kind;
            let c = t.upsert(dir, &name, seen);
            found.insert(name, (c, kind));
        }
        let mut out = vec![
            DirEntry {
                ino: dir,
                name: ".".into(),
                kind: Kind::Dir,
            },
            DirEntry {
                ino: parent,
                name: "..".into(),
                kind: Kind::Dir,
            },
        ];
        for name in listed.names() {
            if let Some(&(ino, kind)) = found.get(name) {
                out.push(DirEntry {
                    ino,
                    name: name.clone(),
                    kind,
                });
            }
        }
        for (name, ino, kind) in t.local_children(dir) {
            if !listed.has(&name) {
                out.push(DirEntry { ino, name, kind });
            }
        }
        for (name, c) in t.children_of(dir) {
            let remote_gone = t
                .get(c)
                .is_some_and(|i| i.remote && !i.local() && i.validated < started);
            if remote_gone && !listed.has(&name) {
                t.unlink(dir, &name);
            }
        }
        let complete = !refused && found.keys().all(|n| t.child(dir, n).is_some());
        self.unlock_and_invalidate(t);
        if complete {
            // `ls -l` stats every entry right after the listing (a statx
            // and two getxattrs each, tens of microseconds through FUSE):
            // a listing is trusted at least long enough for that.
            let stats = STAT_ALLOWANCE * u32::try_from(found.len()).unwrap_or(u32::MAX);
            self.mark_listed(dir, started.elapsed().max(stats));
        }
        self.remember_names(dir, listed.versions());
        out
    }
}
