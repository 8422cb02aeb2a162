//! Persisting attributes to S3 without touching the data (a self-copy
//! with replaced metadata, or a new marker for a directory), and how much
//! room S3's metadata limit leaves them.

use super::attr::Kind;
use super::SealFs;
use crate::error::{Error, Result};
use crate::store::attested::{MAC_ENTRY_SIZE, METADATA_LIMIT, XATTR_PREFIX};
use crate::store::{Metadata, PutCondition};
use libc::ENOSPC;

/// Most bytes of names and values in one file's `user.*` xattrs.
pub const XATTR_SET_LIMIT: usize = 64 << 10;

/// Checks that metadata `m` (plaintext form) can be stored beside sealing
/// fields of `sealing` bytes not in `m`: its attributes and the sealing
/// fields within S3's limit (with room for the MAC), its xattrs within
/// [`XATTR_SET_LIMIT`].
pub(super) fn check_metadata_size(m: &Metadata, sealing: usize) -> Result<()> {
    // Decoded sizes for xattrs: names are hex, values base64.
    let (mut size, mut set) = (sealing + MAC_ENTRY_SIZE, 0);
    for (k, v) in m {
        match k.strip_prefix(XATTR_PREFIX) {
            Some(name) => set += name.len() / 2 + v.len() * 3 / 4,
            None => size += k.len() + v.len(),
        }
    }
    if size > METADATA_LIMIT {
        return Err(Error::posix(
            ENOSPC,
            format!("object metadata would be {size} bytes, over S3's {METADATA_LIMIT}-byte limit for user metadata"),
        ));
    }
    if set > XATTR_SET_LIMIT {
        return Err(Error::posix(
            ENOSPC,
            format!("extended attributes would take {set} bytes, over the {XATTR_SET_LIMIT}-byte limit per file"),
        ));
    }
    Ok(())
}

impl SealFs {
    /// Writes an inode's attributes to S3 without touching its data: a
    /// self-copy with replaced metadata for objects, a new marker for directories.
    pub(super) async fn persist_attr(&self, ino: u64) -> Result<Option<String>> {
        // An unlinked file's attributes live with it, in memory: its old
        // path names another object now.
        let Some((path, attr)) = self.ns.attributes_to_persist(ino)? else {
            return Ok(None);
        };
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
            check_metadata_size(&metadata, 0)?;
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
        self.ns.attributes_persisted(ino, etag.clone());
        Ok(Some(etag))
    }

    /// Persists attribute changes: with the next upload when the file has
    /// unsaved content, otherwise at once (so a utimens after close is durable
    /// when it returns), keeping an open file's upload condition current.
    pub(super) async fn persist_meta(&self, ino: u64) -> Result<()> {
        match self.ns.staged(ino) {
            Some(s) => {
                let mut g = s.lock().await;
                // Dirty content takes them with its next upload.
                if g.attributes_changed() {
                    return Ok(());
                }
                if let Some(etag) = self.persist_attr(ino).await? {
                    g.rebased(etag);
                }
                Ok(())
            }
            None => self.persist_attr(ino).await.map(|_| ()),
        }
    }
}
