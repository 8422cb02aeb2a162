//! `user.*` extended attributes, persisted in object metadata (except the
//! virtual sharing attributes, which [`super::share`] answers from IAM).
//!
//! Other namespaces (`security.*`, `system.*`, `trusted.*`) are not
//! supported: reads and writes answer EOPNOTSUPP, as on a filesystem built
//! without them. That answer is also what lets `ls -l` stop asking: it
//! probes `security.selinux` and `system.posix_acl_access` of every entry
//! until one answers "not supported", then skips both for the rest of the
//! device (ENODATA, "this file has none", would cost two requests per entry).
//! Values are encrypted in S3 ([`crate::store::attested`]); a set too large
//! for S3's 2 KB of object metadata is kept, encrypted, in the volume's
//! internal area. A file's whole set is limited to [`super::metadata::XATTR_SET_LIMIT`]
//! bytes of names and values (ext4 holds about 4 KB); a change beyond
//! fails with ENOSPC and stores nothing.

use super::attr::Attr;
use super::metadata::check_metadata_size;
use super::{share, SealFs};
use crate::error::{Error, Result};
use crate::sealed::KeyRef;
use libc::{EEXIST, ENODATA, ENOTSUP};
use std::sync::atomic::Ordering;

const XATTR_CREATE: i32 = 1;
const XATTR_REPLACE: i32 = 2;

/// The stored attributes' names, each NUL-terminated (the virtual sharing
/// attributes are never listed).
fn listed_names(attr: &Attr) -> Vec<u8> {
    let mut out = Vec::new();
    for name in attr.xattrs.keys() {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
    }
    out
}

/// A name outside `user.*`: the namespace is not supported.
fn unsupported(name: &str) -> Error {
    Error::posix(
        ENOTSUP,
        format!("{name}: only user.* attributes are supported"),
    )
}

fn user_name(name: &str) -> Option<&str> {
    name.strip_prefix("user.")
        .filter(|n| !n.is_empty())
        .map(|_| name)
}

impl SealFs {
    /// [`getxattr`](Self::getxattr) of a name outside `user.*`, which sealfs
    /// does not support (the kernel asks for `security.capability` before
    /// writes): EOPNOTSUPP on the caller's thread, with no task. `None`: call `getxattr`; also while the file
    /// has a background upload, which `getxattr` waits for (and answers
    /// EIO if it failed), as it did before this shortcut existed: the
    /// kernel asks for `security.capability` before every write, so a
    /// write to a file whose spooled upload runs keeps waiting for it.
    pub fn getxattr_at_hand(&self, ino: u64, name: &str) -> Option<Result<Vec<u8>>> {
        if name.starts_with("user.") || self.has_background_upload(ino) {
            return None;
        }
        Some(Err(unsupported(name)))
    }

    /// What [`super::STATS`] shows (and the metrics endpoint): requests,
    /// KMS calls, the volume, activity, spool and caches.
    pub fn stats_json(&self) -> serde_json::Value {
        let mut v = match &self.stats {
            Some(stats) => stats(),
            None => serde_json::json!({}),
        };
        // Entries the mount holds: the kernel's plus the bounded cache.
        v["inodes"] = self.cached_inodes().into();
        v["lookups"] = self.kernel_lookups.load(Ordering::Relaxed).into();
        v["volume"] = self.volume_url().into();
        v["activity"] = self.activity.snapshot();
        v["spool"] = self.spool_snapshot();
        if let Some(disk) = self.read_shared.disk() {
            v["read_cache"] = serde_json::json!(disk.stats());
        }
        v
    }

    pub async fn getxattr(&self, ino: u64, name: &str) -> Result<Vec<u8>> {
        if name == super::STATS && ino == super::ROOT && self.stats.is_some() {
            return Ok(self.stats_json().to_string().into_bytes());
        }
        self.settle(ino).await?;
        if name == share::SHARE {
            return self.get_share(ino).await;
        }
        if name == share::UNSHARE {
            return Err(Error::posix(
                ENODATA,
                format!("{name}: write-only attribute"),
            ));
        }
        let entry = self.getattr(ino).await?;
        let Some(name) = user_name(name) else {
            return Err(unsupported(name));
        };
        entry
            .attr
            .xattrs
            .get(name)
            .cloned()
            .ok_or_else(|| Error::posix(ENODATA, format!("{name}: no such attribute")))
    }

    /// The names, each NUL-terminated, as listxattr(2) returns them.
    pub async fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        Ok(listed_names(&self.getattr(ino).await?.attr))
    }

    /// [`listxattr`](Self::listxattr) when the entry needs no revalidation,
    /// on the caller's thread (newer `ls -l` lists every entry's attributes
    /// to look for ACLs). `None`: call `listxattr`.
    pub fn listxattr_at_hand(&self, ino: u64) -> Option<Result<Vec<u8>>> {
        self.getattr_at_hand(ino)
            .map(|got| got.map(|e| listed_names(&e.attr)))
    }

    pub async fn setxattr(&self, ino: u64, name: &str, value: &[u8], flags: i32) -> Result<()> {
        if name == super::STATS {
            return Err(Error::posix(
                libc::EACCES,
                format!("{name}: read-only attribute"),
            ));
        }
        self.settle(ino).await?;
        if share::is_virtual(name) {
            return self.set_share(ino, name, value).await;
        }
        self.check_writable()?;
        let Some(name) = user_name(name) else {
            return Err(unsupported(name));
        };
        self.edit_xattrs(ino, |attr, key_ref| {
            let exists = attr.xattrs.contains_key(name);
            if flags & XATTR_CREATE != 0 && exists {
                return Err(Error::posix(EEXIST, format!("{name}: attribute exists")));
            }
            if flags & XATTR_REPLACE != 0 && !exists {
                return Err(Error::posix(ENODATA, format!("{name}: no such attribute")));
            }
            let mut candidate = attr.clone();
            candidate.xattrs.insert(name.to_string(), value.to_vec());
            // Leave room for the sealing fields, which ride in the same metadata.
            let sealing = key_ref.map_or(0, KeyRef::sealing_fields_size);
            check_metadata_size(&candidate.metadata(), sealing)?;
            *attr = candidate;
            Ok(())
        })
        .await
    }

    pub async fn removexattr(&self, ino: u64, name: &str) -> Result<()> {
        self.settle(ino).await?;
        if name == share::SHARE {
            return self.remove_share(ino).await;
        }
        self.check_writable()?;
        let Some(name) = user_name(name) else {
            return Err(unsupported(name));
        };
        self.edit_xattrs(ino, |attr, _| match attr.xattrs.remove(name) {
            Some(_) => Ok(()),
            None => Err(Error::posix(ENODATA, format!("{name}: no such attribute"))),
        })
        .await
    }

    /// Applies `edit` to the inode's current attributes, bumps ctime and
    /// persists them (with staged files, at the next upload). If `edit`
    /// refuses, nothing changes; if persisting fails, the in-memory
    /// attributes go back to what they were.
    async fn edit_xattrs(
        &self,
        ino: u64,
        edit: impl FnOnce(&mut Attr, Option<&KeyRef>) -> Result<()>,
    ) -> Result<()> {
        self.getattr(ino).await?;
        let old = self.ns.edit_attributes(ino, edit)?;
        let r = self.persist_meta(ino).await;
        if r.is_err() {
            self.ns.restore_attributes(ino, old);
        }
        r
    }
}
