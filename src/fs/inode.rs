//! The inode table: stable inode numbers for paths seen through the mount.
//!
//! S3 has no inodes, so an inode is a (parent, name) that lookup or readdir
//! has seen. Each keeps the attributes last read from S3 (or set locally),
//! the ETag and data-key reference of its object, and, while a file is open
//! for writing, its staged state. Paths are derived by walking parents, so a
//! directory rename moves its whole subtree by changing one entry.

use super::attr::{Attr, Kind};
use super::file::Staged;
use crate::sealed::KeyRef;
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
    /// When the attributes were last read from S3.
    pub validated: Instant,
    /// Staged content while the file is open for writing.
    pub staged: Option<Arc<Staged>>,
    /// Writable handles open on this inode.
    pub writers: usize,
    /// A version of this file waits in the write-back spool: like staged
    /// content, the local attributes are authoritative until it is uploaded.
    pub pending: bool,
    /// A symlink's target, once read.
    pub target: Option<String>,
}

impl Inode {
    /// The local state is authoritative (staged content, or a version
    /// waiting in the spool): S3's view of it must not replace it.
    pub fn local(&self) -> bool {
        self.staged.is_some() || self.pending
    }
}

pub struct Table {
    inodes: HashMap<u64, Inode>,
    children: HashMap<(u64, String), u64>,
    next: u64,
}

/// What S3 (or a local create) says an entry is.
pub struct Seen {
    pub attr: Attr,
    pub etag: Option<String>,
    pub key_ref: Option<KeyRef>,
    pub remote: bool,
}

impl Table {
    pub fn new(root: Attr) -> Table {
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT,
            Inode {
                parent: ROOT,
                name: String::new(),
                attr: root,
                etag: None,
                key_ref: None,
                remote: true,
                validated: Instant::now(),
                staged: None,
                writers: 0,
                pending: false,
                target: None,
            },
        );
        Table {
            inodes,
            children: HashMap::new(),
            next: ROOT + 1,
        }
    }

    pub fn get(&self, ino: u64) -> Option<&Inode> {
        self.inodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Inode> {
        self.inodes.get_mut(&ino)
    }

    pub fn child(&self, parent: u64, name: &str) -> Option<u64> {
        self.children.get(&(parent, name.to_string())).copied()
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

    /// Records an entry seen in S3 or created locally, keeping its inode number
    /// when the kind is unchanged. Entries with staged content keep their local
    /// attributes: while open for writing, the local state is authoritative.
    pub fn upsert(&mut self, parent: u64, name: &str, seen: Seen) -> u64 {
        if let Some(ino) = self.child(parent, name) {
            let i = self.inodes.get_mut(&ino).expect("child maps to an inode");
            if i.attr.kind == seen.attr.kind {
                if !i.local() {
                    if i.etag != seen.etag {
                        i.target = None;
                    }
                    i.attr = seen.attr;
                    i.etag = seen.etag;
                    i.key_ref = seen.key_ref.or(i.key_ref.take());
                    i.remote = seen.remote;
                }
                i.validated = Instant::now();
                return ino;
            }
            self.children.remove(&(parent, name.to_string()));
        }
        let ino = self.next;
        self.next += 1;
        self.inodes.insert(
            ino,
            Inode {
                parent,
                name: name.to_string(),
                attr: seen.attr,
                etag: seen.etag,
                key_ref: seen.key_ref,
                remote: seen.remote,
                validated: Instant::now(),
                staged: None,
                writers: 0,
                pending: false,
                target: None,
            },
        );
        self.children.insert((parent, name.to_string()), ino);
        ino
    }

    /// Removes the name; the inode lives on for open handles.
    pub fn unlink(&mut self, parent: u64, name: &str) -> Option<u64> {
        tracing::trace!(parent, name, "name removed");
        self.children.remove(&(parent, name.to_string()))
    }

    /// Moves `parent/name` to `new_parent/new_name`, replacing any entry there.
    pub fn rename(&mut self, parent: u64, name: &str, new_parent: u64, new_name: &str) {
        if let Some(ino) = self.children.remove(&(parent, name.to_string())) {
            self.children
                .insert((new_parent, new_name.to_string()), ino);
            if let Some(i) = self.inodes.get_mut(&ino) {
                i.parent = new_parent;
                i.name = new_name.to_string();
            }
        }
    }

    /// Known children of `parent`: (name, inode).
    pub fn children_of(&self, parent: u64) -> Vec<(String, u64)> {
        self.children
            .iter()
            .filter(|((p, _), _)| *p == parent)
            .map(|((_, n), i)| (n.clone(), *i))
            .collect()
    }

    /// Children that exist only locally (created, not yet uploaded).
    pub fn local_children(&self, parent: u64) -> Vec<(String, u64, Kind)> {
        self.children_of(parent)
            .into_iter()
            .filter_map(|(n, ino)| {
                let i = self.inodes.get(&ino)?;
                (!i.remote).then_some((n, ino, i.attr.kind))
            })
            .collect()
    }

    /// Drops inodes the kernel has forgotten and that nothing else holds.
    pub fn forget(&mut self, ino: u64) {
        let keep = self.inodes.get(&ino).is_none_or(|i| {
            ino == ROOT || i.local() || self.children.get(&(i.parent, i.name.clone())) == Some(&ino)
        });
        if !keep {
            tracing::trace!(ino, "inode dropped after forget");
            self.inodes.remove(&ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(kind: Kind) -> Seen {
        Seen {
            attr: Attr::new(kind, 0o644, 0, 0),
            etag: Some("e".into()),
            key_ref: None,
            remote: true,
        }
    }

    #[test]
    fn paths_follow_renames() {
        let mut t = Table::new(Attr::new(Kind::Dir, 0o755, 0, 0));
        let a = t.upsert(ROOT, "a", seen(Kind::Dir));
        let b = t.upsert(a, "b", seen(Kind::Dir));
        let f = t.upsert(b, "f.txt", seen(Kind::File));
        assert_eq!(t.path(f).unwrap(), "a/b/f.txt");
        t.rename(ROOT, "a", ROOT, "z");
        assert_eq!(t.path(f).unwrap(), "z/b/f.txt");
        assert_eq!(
            t.upsert(b, "f.txt", seen(Kind::File)),
            f,
            "same kind keeps the inode"
        );
        assert_ne!(
            t.upsert(b, "f.txt", seen(Kind::Dir)),
            f,
            "a new kind is a new inode"
        );
        assert_eq!(t.unlink(ROOT, "z"), Some(a));
        assert_eq!(t.child(ROOT, "z"), None);
    }
}
