//! Conversions between the core's types and the kernel's: attributes,
//! file types, names, times, errnos (with the one log line an error gets),
//! and the xattr size protocol.

use crate::error::{Error, LogLevel};
use crate::fs::activity::Activity;
use crate::fs::{byte_names, Entry, Kind};
use fuser::{Errno, FileAttr, FileType, FopenFlags, INodeNo, ReplyXattr, TimeOrNow};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::SystemTime;

/// The open reply's flags: keep the kernel's pages when the core says they
/// are of the version being opened.
pub(super) fn open_flags(keep_cache: bool) -> FopenFlags {
    if keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}

pub(super) fn file_attr(e: &Entry) -> FileAttr {
    let a = &e.attr;
    FileAttr {
        ino: INodeNo(e.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: file_type(a.kind),
        perm: a.mode as u16,
        nlink: match (e.linked, a.kind) {
            (false, _) => 0,
            (true, Kind::Dir) => 2 + e.subdirs,
            (true, _) => 1,
        },
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 64 * 1024,
        flags: 0,
    }
}

pub(super) fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
    }
}

/// The errno for `e`, logging and counting it (in `activity`, for `sealfs
/// status`) unless it is an ordinary answer (ENOENT from a lookup, EEXIST,
/// ENODATA...) that tools provoke all the time.
pub(super) fn errno(op: &str, e: &Error, activity: &Activity) -> Errno {
    let code = e.errno();
    if e.is_failure() {
        activity.error(code);
    }
    match e.log_level() {
        LogLevel::Debug => tracing::debug!(op, errno = code, "{e}"),
        LogLevel::Warn => tracing::warn!(op, "{e}"),
        LogLevel::Error => tracing::error!(op, "{e}"),
    }
    Errno::from_i32(code)
}

/// A file name in the core's form (see [`byte_names`]): any bytes Linux allows.
pub(super) fn name(n: &OsStr) -> Result<String, Errno> {
    Ok(byte_names::encode(n.as_bytes()))
}

/// An xattr name: UTF-8 only (S3 metadata names it).
pub(super) fn xattr_name(n: &OsStr) -> Result<String, Errno> {
    n.to_str().map(str::to_string).ok_or(Errno::EINVAL)
}

pub(super) fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// Answers an xattr read per the size protocol: size 0 asks for the length,
/// a buffer too small gets ERANGE.
pub(super) fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if (size as usize) < data.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

/// The replies that can carry an errno (fuser gives them no common trait).
pub(super) trait ErrorReply {
    fn error(self, e: Errno);
}

macro_rules! error_reply {
    ($($t:ty),*) => {
        $(impl ErrorReply for $t {
            fn error(self, e: Errno) {
                <$t>::error(self, e)
            }
        })*
    };
}

error_reply!(
    fuser::ReplyAttr,
    fuser::ReplyCreate,
    fuser::ReplyData,
    fuser::ReplyDirectory,
    fuser::ReplyDirectoryPlus,
    fuser::ReplyEmpty,
    fuser::ReplyEntry,
    fuser::ReplyOpen,
    fuser::ReplyWrite,
    fuser::ReplyXattr
);
