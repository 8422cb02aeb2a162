//! Attribute changes: chmod, chown, utimens and truncate (`setattr`), and
//! persisting attributes to S3 without touching the data (a self-copy with
//! replaced metadata, or a new marker for a directory).

use super::attr::Kind;
use super::{enoent, Entry, SealFs};
use crate::error::{Error, Result};
use crate::store::PutCondition;
use libc::{EINVAL, EISDIR};
use std::time::{Instant, SystemTime};

/// What `setattr` changes; `None` fields stay as they are.
#[derive(Default, Debug, Clone)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
    pub atime: Option<SystemTime>,
}

impl SealFs {
    pub async fn setattr(&self, ino: u64, set: SetAttr) -> Result<Entry> {
        self.check_writable()?;
        self.settle(ino).await?;
        let kind = self.entry(ino)?.attr.kind;
        let mut staged = self.staged(ino);
        let mut upload_now = false;
        if let Some(size) = set.size {
            if kind != Kind::File {
                return Err(Error::posix(
                    if kind == Kind::Dir { EISDIR } else { EINVAL },
                    "truncate of a non-file",
                ));
            }
            let s = match &staged {
                Some(s) => s.clone(),
                None => {
                    upload_now = true;
                    self.stage(ino, size == 0).await?
                }
            };
            s.set_len(size).await?;
            staged = Some(s);
        }
        {
            let mut t = self.table.lock();
            let i = t
                .get_mut(ino)
                .ok_or_else(|| enoent(&format!("inode {ino}")))?;
            let a = &mut i.attr;
            if let Some(m) = set.mode {
                a.mode = m & 0o7777;
            }
            if let Some(u) = set.uid {
                a.uid = u;
            }
            if let Some(g) = set.gid {
                a.gid = g;
            }
            if let Some(size) = set.size {
                a.size = size;
                a.mtime = SystemTime::now();
            }
            if let Some(m) = set.mtime {
                a.mtime = m;
            }
            if let Some(t) = set.atime {
                a.atime = t;
            }
            a.ctime = SystemTime::now();
        }
        match staged {
            Some(s) if set.size.is_some() => {
                s.mark_dirty().await;
                if upload_now {
                    let r = self.upload(ino, &s).await;
                    let mut t = self.table.lock();
                    if let Some(i) = t.get_mut(ino) {
                        if i.writers == 0 {
                            i.staged = None;
                        }
                    }
                    r?;
                }
            }
            _ => self.persist_meta(ino).await?,
        }
        self.entry(ino)
    }

    /// Writes an inode's attributes to S3 without touching its data: a
    /// self-copy with replaced metadata for objects, a new marker for directories.
    pub(super) async fn persist_attr(&self, ino: u64) -> Result<Option<String>> {
        let (path, attr, remote) = {
            let t = self.table.lock();
            let i = t.get(ino).ok_or_else(|| enoent(&format!("inode {ino}")))?;
            // An unlinked file's attributes live with it, in memory: its
            // old path names another object now.
            let remote = i.remote && t.is_linked(ino);
            (t.path(ino).unwrap_or_default(), i.attr.clone(), remote)
        };
        if !remote {
            return Ok(None);
        }
        let etag = if attr.kind == Kind::Dir {
            if path.is_empty() && self.prefix.is_empty() {
                return Ok(None); // the bucket root has no marker; its attributes live in memory
            }
            let marker = format!("{}/", self.key_of(&path));
            self.store
                .put(
                    &marker,
                    bytes::Bytes::new(),
                    &attr.metadata(),
                    &PutCondition::None,
                )
                .await?
        } else {
            let key = self.key_of(&path);
            let info = self.store.head(&key).await?;
            let mut metadata = info.metadata.clone();
            attr.write_into(&mut metadata);
            // The sealing fields are in `metadata` already (from the HEAD).
            super::xattr::check_metadata_size(&metadata, 0)?;
            self.store
                .copy(
                    &key,
                    &key,
                    Some(&info.etag),
                    &metadata,
                    &PutCondition::IfMatch(info.etag.clone()),
                )
                .await?
        };
        if let Some(i) = self.table.lock().get_mut(ino) {
            i.etag = Some(etag.clone());
            i.validated = Instant::now();
        }
        Ok(Some(etag))
    }

    /// Persists attribute changes: with the next upload when the file has
    /// unsaved content, otherwise at once (so a utimens after close is durable
    /// when it returns), keeping an open file's upload condition current.
    pub(super) async fn persist_meta(&self, ino: u64) -> Result<()> {
        match self.staged(ino) {
            Some(s) => {
                let mut g = s.inner.lock().await;
                if g.dirty {
                    // Goes with the next upload; a stream's object has its
                    // metadata fixed already, so note it needs a rewrite.
                    if g.stream.is_some() {
                        g.meta_changed = true;
                    }
                    return Ok(());
                }
                if let Some(etag) = self.persist_attr(ino).await? {
                    g.base_etag = Some(etag);
                }
                Ok(())
            }
            None => self.persist_attr(ino).await.map(|_| ()),
        }
    }
}
