//! Creating and removing directory entries: mkdir, mknod (regular and
//! special files), symlink and readlink, unlink and rmdir. Lookups and
//! listings are in the parent module; renames in [`super::rename`].

use super::attr::{Attr, Kind};
use super::inode::Seen;
use super::{enoent, Entry, SealFs};
use crate::error::{Error, Result};
use crate::store::{PutCondition, StoreError};
use bytes::Bytes;
use libc::{EEXIST, EINVAL, EISDIR, ENOENT, ENOTDIR, ENOTEMPTY};
use std::time::{Duration, SystemTime};

impl SealFs {
    /// The checks every create-like operation makes: writable mount, valid
    /// name, nothing there yet. Returns the new entry's path.
    pub(super) async fn new_entry_path(&self, parent: u64, name: &str) -> Result<String> {
        self.check_writable()?;
        let path = self.check_new_name(parent, name)?;
        self.ensure_absent(parent, name).await?;
        Ok(path)
    }

    async fn ensure_absent(&self, parent: u64, name: &str) -> Result<()> {
        match self.resolve(parent, name).await {
            Ok(_) => Err(Error::posix(EEXIST, format!("{name}: file exists"))),
            Err(e) if e.errno() == ENOENT => Ok(()),
            Err(e) => Err(e),
        }
    }

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
        self.mark_listed(ino, Duration::ZERO);
        self.entry(ino)
    }

    /// A directory's mtime/ctime move when its entries change (in memory; a
    /// directory's times are persisted only by an explicit utimens/chmod).
    pub(super) fn touch_dir(&self, dir: u64) {
        if let Some(i) = self.table.lock().get_mut(dir) {
            i.attr.mtime = SystemTime::now();
            i.attr.ctime = i.attr.mtime;
        }
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
        let (remote, staged, file_id) = {
            let t = self.table.lock();
            let i = t.get(e.ino).ok_or_else(|| enoent(name))?;
            let fid = i.key_ref.as_ref().map(|k| k.file_id.to_hex());
            (i.remote, i.staged.clone(), fid)
        };
        if remote {
            let key = self.key_of(&path);
            self.pin_readers(e.ino, &key).await;
            self.store.delete(&key).await?;
            self.grants_removed(&[(key, file_id)]).await;
        }
        if let Some(s) = staged {
            s.mark_unlinked().await;
        }
        self.table.lock().unlink(parent, name);
        self.touch_dir(parent);
        Ok(())
    }

    /// True when the directory at `path` (inode `ino`) has no entries, remote or local.
    pub(super) async fn dir_is_empty(&self, ino: u64, path: &str) -> Result<bool> {
        if !self.table.lock().local_children(ino).is_empty() {
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
        self.table.lock().unlink(parent, name);
        self.names.forget(e.ino);
        self.touch_dir(parent);
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
        let wk = self.sealed.new_key(&self.pool).await?;
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
        if let Some(i) = self.table.lock().get_mut(ino) {
            i.target = Some(target.to_vec());
        }
        self.touch_dir(parent);
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
        self.touch_dir(parent);
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
        self.table.lock().upsert_remembered(
            parent,
            name,
            Seen {
                attr,
                etag: Some(etag),
                key_ref,
                remote: true,
            },
        )
    }

    pub async fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        {
            let t = self.table.lock();
            let i = t.get(ino).ok_or_else(|| enoent(&format!("inode {ino}")))?;
            if i.attr.kind != Kind::Symlink {
                return Err(Error::posix(EINVAL, "not a symlink"));
            }
            if let Some(target) = &i.target {
                return Ok(target.clone());
            }
        }
        let key = self.key_of(&self.path_of(ino)?);
        let obj = self.sealed.open(&key).await?;
        let bytes = obj.read(self.store.as_ref(), 0, obj.plain_len()).await?;
        if let Some(i) = self.table.lock().get_mut(ino) {
            i.target = Some(bytes.clone());
        }
        Ok(bytes)
    }
}
