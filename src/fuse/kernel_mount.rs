//! Mounting with the file system type `fuse.sealfs`, as `/proc/mounts`,
//! `df -T`, `findmnt -t` and fstab show it.
//!
//! fuser, run as root, calls mount(2) itself with the bare type `fuse`
//! (its subtype option reaches only fusermount3). So a process allowed to
//! mount does the mount(2) here, with the type `fuse.sealfs`, and hands the
//! /dev/fuse descriptor to `fuser::Session::from_fd`; anyone else gets
//! `None` and mounts through fuser and fusermount3, which name the subtype
//! the same way.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The file system type of a sealfs mount.
pub const FS_TYPE: &str = "fuse.sealfs";

/// What the kernel is told about a mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelMount {
    /// The source column: `sealfs:s3://BUCKET/PREFIX`.
    pub source: String,
    pub read_only: bool,
    /// Other users may enter (the session filters further when only root is).
    pub allow_other: bool,
    pub dev: bool,
    pub suid: bool,
    pub noexec: bool,
}

impl KernelMount {
    /// The mount(2) flags: always noatime; nodev and nosuid unless asked.
    pub fn flags(&self) -> libc::c_ulong {
        let mut f = libc::MS_NOATIME;
        if self.read_only {
            f |= libc::MS_RDONLY;
        }
        if !self.dev {
            f |= libc::MS_NODEV;
        }
        if !self.suid {
            f |= libc::MS_NOSUID;
        }
        if self.noexec {
            f |= libc::MS_NOEXEC;
        }
        f
    }

    /// The options the fuse module reads.
    pub fn data(&self, fd: i32, root_mode: u32, uid: u32, gid: u32) -> String {
        let mut d = format!(
            "fd={fd},rootmode={root_mode:o},user_id={uid},group_id={gid},default_permissions"
        );
        if self.allow_other {
            d.push_str(",allow_other");
        }
        d
    }

    /// Mounts `mountpoint` and returns the /dev/fuse descriptor for the
    /// session; `Ok(None)` when this process may not mount (EPERM: not
    /// root), for the caller to fall back to fusermount3.
    pub fn mount(&self, mountpoint: &Path) -> std::io::Result<Option<OwnedFd>> {
        use std::os::unix::fs::MetadataExt;
        let root_mode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
        let dev: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")?
            .into();
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let data = self.data(dev.as_raw_fd(), root_mode, uid, gid);
        let cstr = |s: &[u8]| {
            CString::new(s).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
        };
        let (source, target, fstype, data) = (
            cstr(self.source.as_bytes())?,
            cstr(mountpoint.as_os_str().as_bytes())?,
            cstr(FS_TYPE.as_bytes())?,
            cstr(data.as_bytes())?,
        );
        let r = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                self.flags(),
                data.as_ptr().cast(),
            )
        };
        if r == 0 {
            return Ok(Some(dev));
        }
        match std::io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::EPERM) => Ok(None),
            e => Err(e),
        }
    }
}

/// Unmounts a mount made by [`KernelMount::mount`] (a busy one stays).
pub fn unmount(mountpoint: &Path) -> std::io::Result<()> {
    let target = CString::new(mountpoint.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    if unsafe { libc::umount2(target.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_flags_say_what_was_asked() {
        let m = KernelMount {
            source: "sealfs:s3://b/p".into(),
            read_only: false,
            allow_other: false,
            dev: false,
            suid: false,
            noexec: false,
        };
        assert_eq!(
            m.data(5, 0o040000, 0, 0),
            "fd=5,rootmode=40000,user_id=0,group_id=0,default_permissions"
        );
        assert_eq!(
            m.flags(),
            libc::MS_NOATIME | libc::MS_NODEV | libc::MS_NOSUID
        );
        let m = KernelMount {
            read_only: true,
            allow_other: true,
            dev: true,
            suid: true,
            noexec: true,
            ..m
        };
        assert!(m.data(5, 0o040000, 1, 2).ends_with(",allow_other"));
        assert_eq!(
            m.flags(),
            libc::MS_NOATIME | libc::MS_RDONLY | libc::MS_NOEXEC
        );
    }
}
