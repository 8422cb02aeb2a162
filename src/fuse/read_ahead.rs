//! The kernel's read-ahead window of a mount.
//!
//! Why: the kernel gives a FUSE mount the block layer's default read-ahead
//! window, 128 KiB, whatever the filesystem offers at INIT (the window is the
//! smaller of the two). Every sequential read then reaches sealfs as 128 KiB
//! requests, eight per MiB: eight round trips through `/dev/fuse`, eight
//! hand-offs to a task, eight replies, where one would do. Raising the
//! window of this mount's backing device (`/sys/class/bdi/MAJ:MIN`) to the
//! size sealfs offers makes requests of up to 1 MiB; it only changes
//! sequential reads (the kernel does not read ahead for random ones).
//! Writing it needs root (or a writable sysfs); without it the mount works
//! the same, with smaller requests.

use std::io;
use std::path::{Path, PathBuf};

/// The `MAJ:MIN` device of the mount at `mountpoint`, from
/// `/proc/self/mountinfo` (the last mount there, the one on top).
pub fn device_of(mountinfo: &str, mountpoint: &Path) -> Option<String> {
    let want = escape(&mountpoint.to_string_lossy());
    mountinfo.lines().rev().find_map(|line| {
        let mut f = line.split(' ');
        let (_id, _parent, dev, _root, at) =
            (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
        (at == want).then(|| dev.to_string())
    })
}

/// `/proc/*/mountinfo` writes space, tab, newline and backslash as octal.
fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// Sets the kernel read-ahead window of the mount at `mountpoint` to
/// `kib` KiB. Returns the sysfs file written.
pub fn set(mountpoint: &Path, kib: u32) -> io::Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let dev = device_of(&info, mountpoint).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not in /proc/self/mountinfo", mountpoint.display()),
        )
    })?;
    let file = PathBuf::from(format!("/sys/class/bdi/{dev}/read_ahead_kb"));
    std::fs::write(&file, format!("{kib}\n"))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
90 22 0:53 / /tmp/a\\040b rw,nosuid,nodev shared:50 - fuse.sealfs sealfs:s3://b/p rw,user_id=0
91 22 0:54 / /tmp/m rw shared:51 - fuse.sealfs sealfs:s3://b/q rw,user_id=0
92 91 0:55 / /tmp/m rw shared:52 - fuse.sealfs sealfs:s3://b/r rw,user_id=0
";

    #[test]
    fn the_device_is_the_top_mount_at_the_path() {
        assert_eq!(
            device_of(INFO, Path::new("/tmp/m")).as_deref(),
            Some("0:55")
        );
        assert_eq!(
            device_of(INFO, Path::new("/tmp/a b")).as_deref(),
            Some("0:53")
        );
        assert_eq!(device_of(INFO, Path::new("/")).as_deref(), Some("8:1"));
        assert_eq!(device_of(INFO, Path::new("/tmp")), None);
        assert_eq!(device_of("garbage\n\n1 2\n", Path::new("/tmp/m")), None);
    }
}
