//! The FUSE adapter: translates kernel requests into calls on the core
//! ([`crate::fs::SealFs`]) and results into replies. No filesystem logic
//! lives here. Each request runs as a task on the tokio runtime, so the FUSE
//! threads never wait on S3 or KMS. What the core answers from memory (a
//! lookup, getattr or xattr list of an entry it trusts, an xattr outside `user.*`, a
//! read the caches or arrived read-ahead hold) is answered on the FUSE
//! thread: a task would cost more than the answer; errors become errnos through the one
//! table in [`crate::Error::errno`], and every unexpected one is logged once.

mod convert;
pub mod kernel_mount;
mod listing;
pub mod read_ahead;

use crate::fs::SealFs;
use convert::{errno, file_attr, name, open_flags, reply_xattr, time, xattr_name, ErrorReply};
use fuser::{
    AccessFlags, Errno, FileHandle, FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The read-ahead window sealfs offers the kernel, and the largest read
/// request it asks for (FUSE's most pages per request, 1 MiB).
pub const KERNEL_READ_AHEAD_KIB: u32 = 1024;

pub struct FuseAdapter {
    fs: Arc<SealFs>,
    rt: tokio::runtime::Handle,
    ttl: Duration,
    listings: Arc<listing::Listings>,
    /// The user who mounted: sharing acts with their IAM credentials.
    owner_uid: u32,
}

impl FuseAdapter {
    pub fn new(fs: Arc<SealFs>, rt: tokio::runtime::Handle) -> Self {
        let ttl = fs.settings().metadata_ttl;
        FuseAdapter {
            fs,
            rt,
            ttl,
            listings: Arc::default(),
            owner_uid: unsafe { libc::getuid() },
        }
    }

    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, f: F) {
        self.rt.spawn(f);
    }

    /// Runs one core call as a task: `ok` answers its result, an error
    /// becomes the errno from the one table (logged unless ordinary).
    fn serve<T, R, F>(
        &self,
        op: &'static str,
        reply: R,
        call: F,
        ok: impl FnOnce(R, T) + Send + 'static,
    ) where
        T: Send + 'static,
        R: ErrorReply + Send + 'static,
        F: std::future::Future<Output = crate::Result<T>> + Send + 'static,
    {
        let activity = self.fs.activity().clone();
        self.spawn(async move {
            match call.await {
                Ok(v) => ok(reply, v),
                Err(e) => reply.error(errno(op, &e, &activity)),
            }
        });
    }
}

macro_rules! name_or_reply {
    ($n:expr, $reply:expr) => {
        match name($n) {
            Ok(n) => n,
            Err(e) => return $reply.error(e),
        }
    };
}

impl fuser::Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(KERNEL_READ_AHEAD_KIB << 10);
        // O_TRUNC arrives with open (not as a separate truncate), so a
        // truncating open never uploads an intermediate empty version.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        // Every listing carries its entries' attributes (see `listing`),
        // not only the first call of a pass as FUSE_READDIRPLUS_AUTO would:
        // `ls -l` then makes no lookup per entry.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEntry) {
        let n = name_or_reply!(n, reply);
        if let Some(done) = self.fs.lookup_at_hand(parent.0, &n) {
            match done {
                Ok(e) => reply.entry(&self.ttl, &file_attr(&e), Generation(0)),
                Err(e) => reply.error(errno("lookup", &e, self.fs.activity())),
            }
            return;
        }
        let (fs, ttl) = (self.fs.clone(), self.ttl);
        self.serve(
            "lookup",
            reply,
            async move { fs.lookup(parent.0, &n).await },
            move |reply, e| reply.entry(&ttl, &file_attr(&e), Generation(0)),
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if let Some(done) = self.fs.getattr_at_hand(ino.0) {
            match done {
                Ok(e) => reply.attr(&self.ttl, &file_attr(&e)),
                Err(e) => reply.error(errno("getattr", &e, self.fs.activity())),
            }
            return;
        }
        let (fs, ttl) = (self.fs.clone(), self.ttl);
        self.serve(
            "getattr",
            reply,
            async move { fs.getattr(ino.0).await },
            move |reply, e| reply.attr(&ttl, &file_attr(&e)),
        );
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let (fs, ttl) = (self.fs.clone(), self.ttl);
        let set = crate::fs::SetAttr {
            mode,
            uid,
            gid,
            size,
            mtime: mtime.map(time),
            atime: atime.map(time),
        };
        self.serve(
            "setattr",
            reply,
            async move { fs.setattr(ino.0, set).await },
            move |reply, e| reply.attr(&ttl, &file_attr(&e)),
        );
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let fs = self.fs.clone();
        self.serve(
            "readlink",
            reply,
            async move { fs.readlink(ino.0).await },
            move |reply, t| reply.data(&t),
        );
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let n = name_or_reply!(n, reply);
        let (fs, ttl, uid, gid) = (self.fs.clone(), self.ttl, req.uid(), req.gid());
        let mode = (mode & libc::S_IFMT) | (mode & 0o7777 & !umask);
        self.serve(
            "mknod",
            reply,
            async move { fs.mknod(parent.0, &n, mode, rdev, uid, gid).await },
            move |reply, e| reply.entry(&ttl, &file_attr(&e), Generation(0)),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let n = name_or_reply!(n, reply);
        let (fs, ttl, uid, gid) = (self.fs.clone(), self.ttl, req.uid(), req.gid());
        self.serve(
            "mkdir",
            reply,
            async move { fs.mkdir(parent.0, &n, mode & !umask, uid, gid).await },
            move |reply, e| reply.entry(&ttl, &file_attr(&e), Generation(0)),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        let n = name_or_reply!(n, reply);
        let fs = self.fs.clone();
        self.serve(
            "unlink",
            reply,
            async move { fs.unlink(parent.0, &n).await },
            move |reply, ()| reply.ok(),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        let n = name_or_reply!(n, reply);
        let fs = self.fs.clone();
        self.serve(
            "rmdir",
            reply,
            async move { fs.rmdir(parent.0, &n).await },
            move |reply, ()| reply.ok(),
        );
    }

    fn symlink(&self, req: &Request, parent: INodeNo, n: &OsStr, target: &Path, reply: ReplyEntry) {
        let n = name_or_reply!(n, reply);
        let target = target.as_os_str().as_bytes().to_vec();
        let (fs, ttl, uid, gid) = (self.fs.clone(), self.ttl, req.uid(), req.gid());
        self.serve(
            "symlink",
            reply,
            async move { fs.symlink(parent.0, &n, &target, uid, gid).await },
            move |reply, e| reply.entry(&ttl, &file_attr(&e), Generation(0)),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        n: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let n = name_or_reply!(n, reply);
        let new_name = name_or_reply!(new_name, reply);
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            tracing::debug!(
                "rename with RENAME_EXCHANGE/RENAME_WHITEOUT refused: not atomic on S3"
            );
            return reply.error(Errno::EINVAL);
        }
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let fs = self.fs.clone();
        self.serve(
            "rename",
            reply,
            async move {
                fs.rename(parent.0, &n, new_parent.0, &new_name, noreplace)
                    .await
            },
            move |reply, ()| reply.ok(),
        );
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _np: INodeNo, _nn: &OsStr, reply: ReplyEntry) {
        tracing::debug!("link refused: hard links are not supported");
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        self.serve(
            "open",
            reply,
            async move { fs.open_for_kernel(ino.0, flags.0).await },
            move |reply, (fh, keep)| reply.opened(FileHandle(fh), open_flags(keep)),
        );
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // A read the caches can answer is answered here: handing it to a
        // task would cost more than serving it.
        if let Some(done) = self.fs.read_at_hand(fh.0, offset, size) {
            match done {
                Ok(d) => reply.data(&d),
                Err(e) => reply.error(errno("read", &e, self.fs.activity())),
            }
            return;
        }
        let fs = self.fs.clone();
        self.serve(
            "read",
            reply,
            async move { fs.read(fh.0, offset, size).await },
            move |reply, d| reply.data(&d),
        );
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let fs = self.fs.clone();
        let data = data.to_vec();
        self.serve(
            "write",
            reply,
            async move { fs.write(fh.0, offset, &data).await },
            move |reply, n| reply.written(n),
        );
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.serve(
            "flush",
            reply,
            async move { fs.flush(fh.0).await },
            move |reply, ()| reply.ok(),
        );
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.serve(
            "release",
            reply,
            async move { fs.release(fh.0).await },
            move |reply, ()| reply.ok(),
        );
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.serve(
            "fsync",
            reply,
            async move { fs.fsync(fh.0).await },
            move |reply, ()| reply.ok(),
        );
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.listings.open(reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.list(ino, fh, offset, reply);
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.list_plus(ino, fh, offset, reply);
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.listings.release(fh);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory operations are synchronous with S3 already.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bfree, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
        );
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        n: &OsStr,
        value: &[u8],
        flags: i32,
        _pos: u32,
        reply: ReplyEmpty,
    ) {
        let n = match xattr_name(n) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        if let Some(e) = crate::fs::share_refused(&n, req.uid(), self.owner_uid) {
            tracing::warn!("{e}");
            return reply.error(Errno::from_i32(e.errno()));
        }
        let (fs, value) = (self.fs.clone(), value.to_vec());
        self.serve(
            "setxattr",
            reply,
            async move { fs.setxattr(ino.0, &n, &value, flags).await },
            move |reply, ()| reply.ok(),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, n: &OsStr, size: u32, reply: ReplyXattr) {
        let n = match xattr_name(n) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        if let Some(done) = self.fs.getxattr_at_hand(ino.0, &n) {
            match done {
                Ok(v) => reply_xattr(reply, size, &v),
                Err(e) => reply.error(errno("getxattr", &e, self.fs.activity())),
            }
            return;
        }
        let fs = self.fs.clone();
        self.serve(
            "getxattr",
            reply,
            async move { fs.getxattr(ino.0, &n).await },
            move |reply, v| reply_xattr(reply, size, &v),
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if let Some(done) = self.fs.listxattr_at_hand(ino.0) {
            match done {
                Ok(v) => reply_xattr(reply, size, &v),
                Err(e) => reply.error(errno("listxattr", &e, self.fs.activity())),
            }
            return;
        }
        let fs = self.fs.clone();
        self.serve(
            "listxattr",
            reply,
            async move { fs.listxattr(ino.0).await },
            move |reply, v| reply_xattr(reply, size, &v),
        );
    }

    /// No ioctls: ENOTTY, which is what isatty() probes (every Python
    /// open() makes one) expect from a regular file, quietly.
    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        let n = match xattr_name(n) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        if let Some(e) = crate::fs::share_refused(&n, req.uid(), self.owner_uid) {
            tracing::warn!("{e}");
            return reply.error(Errno::from_i32(e.errno()));
        }
        let fs = self.fs.clone();
        self.serve(
            "removexattr",
            reply,
            async move { fs.removexattr(ino.0, &n).await },
            move |reply, ()| reply.ok(),
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Mounted with default_permissions: the kernel checks modes itself.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let n = name_or_reply!(n, reply);
        let (fs, ttl, uid, gid) = (self.fs.clone(), self.ttl, req.uid(), req.gid());
        self.serve(
            "create",
            reply,
            async move { fs.create(parent.0, &n, mode & !umask, uid, gid).await },
            move |reply, (e, fh)| {
                reply.created(
                    &ttl,
                    &file_attr(&e),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                )
            },
        );
    }
}
