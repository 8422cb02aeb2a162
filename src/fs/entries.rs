//! Creating and removing directory entries: mkdir, mknod (regular and
//! special files), symlink and readlink, unlink and rmdir. Lookups and
//! listings are in [`super::lookup`] and [`super::listing`]; renames in
//! [`super::rename`].

use super::attr::{Attr, Kind};
use super::namespace::Seen;
use super::{Entry, SealFs};
use crate::error::{Error, Result};
use crate::store::{PutCondition, StoreError};
use bytes::Bytes;
use libc::{EEXIST, EINVAL, EISDIR, ENOTDIR, ENOTEMPTY};
use std::time::Duration;

impl SealFs {
    pub async fn mkdir(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Entry> {
        let path = self.new_entry_path(parent, name).await?;
        let attr = Attr::new(Kind::Dir, mode, uid, gid);
        let marker = format!("{}/", self.key_of(&path));
        let ino = self.put_empty(parent, name, &marker, attr).await?;
        self.ns.mark_listed(ino, Duration::ZERO);
        self.entry(ino)
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> Result<()> {
        self.check_writable()?;
        let e = self.resolve(parent, name).await?;
        if let Err(err) = self.settle(e.ino).await {
            // Its upload failed and waits in the spool: it must not come
            // back after the unlink.
            tracing::warn!(name, error = %err, "unlinking a file whose background upload failed; the spooled version is dropped");
            self.drop_spooled(e.ino);
        }
        if e.attr.kind == Kind::Dir {
            return Err(Error::posix(EISDIR, format!("{name}: is a directory")));
        }
        let path = self.child_path(parent, name)?;
        let facts = self.ns.facts(e.ino)?;
        if facts.remote {
            let key = self.key_of(&path);
            self.pin_readers(e.ino, &key).await;
            self.store.delete(&key).await?;
            self.grants_removed(&[(key, facts.file_id)]).await;
        }
        if let Some(s) = facts.staged {
            s.lock().await.unlinked();
        }
        self.ns.unlink(parent, name);
        self.ns.touch_dir(parent);
        Ok(())
    }

    /// True when the directory at `path` (inode `ino`) has no entries, remote or local.
    pub(super) async fn dir_is_empty(&self, ino: u64, path: &str) -> Result<bool> {
        if self.ns.has_local_children(ino) {
            return Ok(false);
        }
        let prefix = self.dir_prefix(path);
        let page = self.store.list(&prefix, Some("/"), None).await?;
        Ok(page.prefixes.is_empty() && page.objects.iter().all(|o| o.key == prefix))
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> Result<()> {
        self.check_writable()?;
        if name == "." {
            return Err(Error::posix(EINVAL, "cannot remove ."));
        }
        let e = self.resolve(parent, name).await?;
        if e.attr.kind != Kind::Dir {
            return Err(Error::posix(ENOTDIR, format!("{name}: not a directory")));
        }
        let path = self.child_path(parent, name)?;
        if !self.dir_is_empty(e.ino, &path).await? {
            return Err(Error::posix(
                ENOTEMPTY,
                format!("{name}: directory not empty"),
            ));
        }
        match self.store.delete(&format!("{}/", self.key_of(&path))).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.ns.remove_dir(parent, name, e.ino);
        self.ns.touch_dir(parent);
        Ok(())
    }

    pub async fn symlink(
        &self,
        parent: u64,
        name: &str,
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<Entry> {
        let path = self.new_entry_path(parent, name).await?;
        let mut attr = Attr::new(Kind::Symlink, 0o777, uid, gid);
        attr.size = target.len() as u64;
        let key = self.key_of(&path);
        let wk = self.sealed.new_key().await?;
        let etag = self
            .sealed
            .write(
                &key,
                &mut &target[..],
                target.len() as u64,
                &attr.metadata(),
                &wk,
                &|_| {},
            )
            .await?;
        let ino = self.remember_new(parent, name, attr, etag, Some(wk.key_ref));
        self.ns.set_symlink_target(ino, target.to_vec());
        self.ns.touch_dir(parent);
        self.entry(ino)
    }

    /// mknod: a regular file (empty, uploaded at once), or a special file
    /// (FIFO, socket, device node) stored as a content-less object whose
    /// type and device number are attributes. The kernel implements what a
    /// special file does; the mount is `nodev` unless asked otherwise.
    #[allow(clippy::too_many_arguments)]
    pub async fn mknod(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Entry> {
        let kind = Kind::from_mode(mode).ok_or_else(|| {
            Error::posix(
                EINVAL,
                format!("mknod of file type {:o}", mode & libc::S_IFMT),
            )
        })?;
        if kind == Kind::File {
            return self.mknod_file(parent, name, mode & 0o7777, uid, gid).await;
        }
        let path = self.new_entry_path(parent, name).await?;
        let mut attr = Attr::new(kind, mode, uid, gid);
        if matches!(kind, Kind::CharDevice | Kind::BlockDevice) {
            attr.rdev = rdev;
        }
        let ino = self
            .put_empty(parent, name, &self.key_of(&path), attr)
            .await?;
        self.entry(ino)
    }

    /// Creates a content-less object (a directory marker, a special file)
    /// at `key` if nothing is there, and its entry, handed to the kernel.
    async fn put_empty(&self, parent: u64, name: &str, key: &str, attr: Attr) -> Result<u64> {
        let etag = match self
            .store
            .put(
                key,
                Bytes::new(),
                &attr.metadata(),
                &PutCondition::IfNoneMatch,
            )
            .await
        {
            Err(StoreError::PreconditionFailed { .. }) => {
                return Err(Error::posix(EEXIST, format!("{name}: file exists")))
            }
            other => other?,
        };
        let ino = self.remember_new(parent, name, attr, etag, None);
        self.ns.touch_dir(parent);
        Ok(ino)
    }

    /// Records an entry just written to S3 and hands it to the kernel.
    fn remember_new(
        &self,
        parent: u64,
        name: &str,
        attr: Attr,
        etag: String,
        key_ref: Option<crate::sealed::KeyRef>,
    ) -> u64 {
        self.ns.record_remembered(
            parent,
            name,
            Seen {
                attr,
                etag: Some(etag),
                key_ref,
                remote: true,
                listed: None,
            },
        )
    }

    pub async fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        if let Some(target) = self.ns.symlink_target(ino)? {
            return Ok(target);
        }
        let key = self.key_of(&self.path_of(ino)?);
        let obj = self.sealed.open(&key).await?;
        let bytes = obj.read(self.store.as_ref(), 0, obj.plain_len()).await?;
        self.ns.set_symlink_target(ino, bytes.clone());
        Ok(bytes)
    }
}
