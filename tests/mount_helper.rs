//! Mounting like any filesystem: an /etc/fstab line (here a private fstab
//! file, `mount -T`) and `mount -t fuse.sealfs` run sealfs as fuse3's mount
//! helper would, and the mount shows as type `fuse.sealfs`.
//!
//! mount(8) runs helpers with no PATH, so fuse3's mount.fuse finds `sealfs`
//! on the shell's default one (/usr/local/bin among it). The test puts the
//! built binary there inside a private mount namespace (`unshare -m`, a bind
//! mount over /usr/local/bin), so nothing of the machine changes, and the
//! script unmounts before it leaves the namespace.

mod common;

use common::mounted::Mounted;
use common::*;
use std::process::Command;

/// Runs `script` as root in a private mount namespace where `sealfs` is
/// the binary under test, with the volume owner's environment; its output.
fn in_namespace(m: &Mounted, script: &str) -> String {
    let bin = m.local("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("sealfs");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sealfs"), &link).unwrap();
    }
    let envs: Vec<(String, String)> = {
        let cmd = m.sealfs();
        cmd.get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().into_owned(),
                    v?.to_string_lossy().into_owned(),
                ))
            })
            .collect()
    };
    let full = format!(
        "set -eu\nmount --bind {bin} /usr/local/bin\n\
         trap 'mountpoint -q {mnt} && umount -l {mnt}' EXIT\n{script}",
        bin = bin.display(),
        mnt = m.mnt().display()
    );
    let out = ok(Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &full])
        .envs(envs));
    text(&out.stdout)
}

#[tokio::test]
async fn an_fstab_line_mounts_a_volume_as_fuse_sealfs() {
    let m = Mounted::new("fstab");
    let fstab = m.local("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# a sealfs volume\n{url} {mnt} fuse.sealfs \
             _netdev,nofail,allow_other,cache_dir={cache},log_file={log},metadata_ttl=1s 0 0\n",
            url = m.url(),
            mnt = m.mnt().display(),
            cache = m.cache().display(),
            log = m.local("mount.log").display()
        ),
    )
    .unwrap();
    let out = in_namespace(
        &m,
        &format!(
            "mount -T {fstab} {mnt}\n\
             grep ' {mnt} ' /proc/mounts\n\
             echo 'written through fstab' > {mnt}/f\n\
             findmnt -n -o FSTYPE {mnt}\n\
             umount {mnt}\n\
             ! mountpoint -q {mnt}\n\
             mount -t fuse.sealfs -o ro,cache_dir={cache} {url} {mnt}\n\
             cat {mnt}/f\n\
             if echo no > {mnt}/g 2>/dev/null; then echo 'read-only mount took a write'; fi\n\
             umount {mnt}\n",
            fstab = fstab.display(),
            mnt = m.mnt().display(),
            cache = m.cache().display(),
            url = m.url(),
        ),
    );
    let lines: Vec<&str> = out.lines().collect();
    // The fstab mount: type fuse.sealfs, allow_other, and never dev or suid
    // (fuse3's helper adds both to root's mounts; sealfs ignores them).
    let fields: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(fields[0], format!("sealfs:{}", m.url()), "{out}");
    assert_eq!(fields[2], "fuse.sealfs", "{out}");
    for o in ["nosuid", "nodev", "allow_other", "rw"] {
        assert!(fields[3].split(',').any(|x| x == o), "{o} in {out}");
    }
    assert_eq!(lines[1], "fuse.sealfs");
    assert_eq!(lines[2], "written through fstab");
    assert_eq!(lines.len(), 3, "{out}");
    // What it wrote is in S3, sealed.
    let cat = ok(m.sealfs().args(["cat", &format!("{}/f", m.url())]));
    assert_eq!(text(&cat.stdout), "written through fstab\n");
}

#[tokio::test]
async fn an_unknown_option_fails_the_mount_and_names_it() {
    let m = Mounted::new("fstab-bad");
    let out = run(Command::new(env!("CARGO_BIN_EXE_sealfs")).args([
        &m.url(),
        m.mnt().to_str().unwrap(),
        "-o",
        "allow_other,cache_sise=1G",
    ]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown mount option \"cache_sise=1G\""),
        "{}",
        stderr(&out)
    );
    assert!(!std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .contains(m.mnt().to_str().unwrap()));
}
