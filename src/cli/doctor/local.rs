//! FUSE on this machine: the device, the setuid helper unprivileged mounts
//! go through, and `user_allow_other` for `--allow-other`.

use super::Finding;
use std::ffi::OsStr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The FUSE device's numbers (Linux: misc device 10, minor 229).
const FUSE_MAJOR: u64 = 10;
const FUSE_MINOR: u64 = 229;

/// fusermount3 (or fuse2's fusermount) on `path` (a PATH value).
pub(in crate::cli) fn find_fusermount(path: Option<&OsStr>) -> Option<PathBuf> {
    let path = path?;
    ["fusermount3", "fusermount"].iter().find_map(|name| {
        std::env::split_paths(path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// `/dev/fuse` is the FUSE device, and this user may open it.
pub(super) fn fuse_device(dev: &Path) -> Finding {
    const CHECK: &str = "fuse device";
    let md = match std::fs::metadata(dev) {
        Ok(md) => md,
        Err(e) => {
            return Finding::fail(
                CHECK,
                format!("{}: {e}", dev.display()),
                "load the module (modprobe fuse); in a container, pass the device in \
                 (docker run --device /dev/fuse --cap-add SYS_ADMIN)",
            )
        }
    };
    let rdev = md.rdev();
    let (major, minor) = (libc::major(rdev) as u64, libc::minor(rdev) as u64);
    if !md.file_type().is_char_device() || (major, minor) != (FUSE_MAJOR, FUSE_MINOR) {
        return Finding::fail(
            CHECK,
            format!(
                "{} is not the FUSE device (character device {FUSE_MAJOR}:{FUSE_MINOR})",
                dev.display()
            ),
            format!(
                "remove it and make the device: mknod -m 0666 {} c {FUSE_MAJOR} {FUSE_MINOR}",
                dev.display()
            ),
        );
    }
    match std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        Ok(_) => Finding::pass(CHECK, format!("{} can be opened", dev.display())),
        Err(e) => Finding::fail(
            CHECK,
            format!("{} cannot be opened: {e}", dev.display()),
            format!("as root: chmod 0666 {}", dev.display()),
        ),
    }
}

/// Unprivileged mounts need the setuid-root fusermount3; root mounts
/// itself.
pub(super) fn fusermount(path: Option<&OsStr>, is_root: bool) -> Finding {
    const CHECK: &str = "fusermount3";
    if is_root {
        return Finding::pass(CHECK, "not needed: as root, sealfs makes the mount itself");
    }
    let Some(found) = find_fusermount(path) else {
        return Finding::fail(
            CHECK,
            "fusermount3 is not on PATH: mounting as this user cannot work",
            "install fuse3 (apt install fuse3, dnf install fuse3)",
        );
    };
    match std::fs::metadata(&found) {
        Ok(md) if md.uid() == 0 && md.permissions().mode() & 0o4000 != 0 => {
            Finding::pass(CHECK, format!("{} (setuid root)", found.display()))
        }
        Ok(_) => Finding::fail(
            CHECK,
            format!("{} is not setuid root", found.display()),
            format!("as root: chown root {0} && chmod u+s {0}", found.display()),
        ),
        Err(e) => Finding::fail(
            CHECK,
            format!("{}: {e}", found.display()),
            "reinstall fuse3",
        ),
    }
}

/// `user_allow_other` is set in fuse.conf (a line of its own; `#` starts a
/// comment).
pub(super) fn allows_other(conf: &str) -> bool {
    conf.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .any(|l| l == "user_allow_other")
}

/// What `--allow-other` needs: nothing as root, `user_allow_other` in
/// `conf` otherwise.
pub(super) fn allow_other(asked: bool, is_root: bool, conf: &Path) -> Finding {
    const CHECK: &str = "allow other";
    if !asked {
        return Finding::skip(CHECK, "not asked (sealfs doctor --allow-other)");
    }
    if is_root {
        return Finding::pass(
            CHECK,
            "root may let other users in without user_allow_other",
        );
    }
    let fix = format!("as root: echo user_allow_other >> {}", conf.display());
    match std::fs::read_to_string(conf) {
        Ok(text) if allows_other(&text) => Finding::pass(
            CHECK,
            format!("user_allow_other is set in {}", conf.display()),
        ),
        Ok(_) => Finding::fail(
            CHECK,
            format!(
                "{} does not set user_allow_other: --allow-other will be refused",
                conf.display()
            ),
            fix,
        ),
        Err(e) => Finding::fail(
            CHECK,
            format!("{}: {e}: --allow-other will be refused", conf.display()),
            fix,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;

    #[test]
    fn user_allow_other_counts_only_on_a_line_of_its_own() {
        assert!(allows_other("# comment\n  user_allow_other  \n"));
        assert!(allows_other("mount_max = 1000\nuser_allow_other # yes\n"));
        assert!(!allows_other("#user_allow_other\n"));
        assert!(!allows_other("mount_max = 1000\n"));
        assert!(!allows_other("user_allow_other_not\n"));
    }

    #[test]
    fn allow_other_is_checked_only_when_asked_and_not_root() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("fuse.conf");
        assert_eq!(allow_other(false, false, &conf).status, Status::Skip);
        assert_eq!(allow_other(true, true, &conf).status, Status::Pass);
        let f = allow_other(true, false, &conf);
        assert_eq!(f.status, Status::Fail);
        assert!(f.fix.unwrap().contains("user_allow_other >>"));
        std::fs::write(&conf, "#user_allow_other\n").unwrap();
        assert_eq!(allow_other(true, false, &conf).status, Status::Fail);
        std::fs::write(&conf, "user_allow_other\n").unwrap();
        assert_eq!(allow_other(true, false, &conf).status, Status::Pass);
    }

    #[test]
    fn the_fuse_device_must_be_the_real_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = fuse_device(&dir.path().join("fuse"));
        assert_eq!(f.status, Status::Fail);
        assert!(f.fix.unwrap().contains("modprobe fuse"));
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"").unwrap();
        let f = fuse_device(&plain);
        assert_eq!(f.status, Status::Fail);
        assert!(f.found.contains("not the FUSE device"), "{}", f.found);
        let f = fuse_device(Path::new("/dev/null"));
        assert_eq!(f.status, Status::Fail, "/dev/null is 1:3");
        if Path::new("/dev/fuse").exists() {
            assert_eq!(fuse_device(Path::new("/dev/fuse")).status, Status::Pass);
        }
    }

    #[test]
    fn an_unprivileged_user_needs_a_setuid_fusermount3_on_path() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(fusermount(None, true).status, Status::Pass);
        let empty = dir.path().as_os_str();
        let f = fusermount(Some(empty), false);
        assert_eq!(f.status, Status::Fail);
        assert!(f.fix.unwrap().contains("apt install fuse3"));
        // A fusermount3 that is not setuid root.
        let fake = dir.path().join("fusermount3");
        std::fs::write(&fake, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = fusermount(Some(empty), false);
        assert_eq!(f.status, Status::Fail);
        assert!(f.found.contains("not setuid root"), "{}", f.found);
        assert_eq!(find_fusermount(Some(empty)), Some(fake));
    }
}
