//! A file named on the command line: an s3:// URL, or a path on a sealfs
//! mount (found in /proc/self/mountinfo, where a sealfs mount's source is
//! `sealfs:s3://BUCKET/PREFIX`).

use crate::url::S3Url;
use crate::volume;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    S3(S3Url),
    /// A path on a mount, with the object it is.
    Mounted {
        path: PathBuf,
        url: S3Url,
    },
}

impl Target {
    pub fn parse(arg: &str) -> anyhow::Result<Self> {
        if arg.starts_with("s3://") {
            return Ok(Target::S3(S3Url::parse(arg)?));
        }
        let path = Path::new(arg);
        let canonical =
            std::fs::canonicalize(path).with_context(|| format!("cannot find {arg}"))?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .context("cannot read /proc/self/mountinfo")?;
        let Some(url) = resolve(&mounts, &canonical) else {
            bail!("{arg} is neither an s3:// URL nor a path on a sealfs mount");
        };
        Ok(Target::Mounted {
            path: canonical,
            url,
        })
    }

    pub fn url(&self) -> &S3Url {
        match self {
            Target::S3(u) | Target::Mounted { url: u, .. } => u,
        }
    }
}

/// Octal escapes (`\040` for a space) as the kernel writes mountinfo fields.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every sealfs mount in `mountinfo`: its mountpoint and volume, in order.
pub fn sealfs_mounts(mountinfo: &str) -> Vec<(PathBuf, S3Url)> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mountpoint), Some(fstype), Some(source)) =
            (fields.get(4), fields.get(sep + 1), fields.get(sep + 2))
        else {
            continue;
        };
        // "fuse.sealfs" (older sealfs mounted by root showed plain "fuse");
        // the source is what marks a sealfs mount.
        if *fstype != "fuse.sealfs" && *fstype != "fuse" {
            continue;
        }
        let Some(url) = unescape(source)
            .strip_prefix("sealfs:")
            .and_then(|s| S3Url::parse(s).ok())
        else {
            continue;
        };
        out.push((PathBuf::from(unescape(mountpoint)), url));
    }
    out
}

/// The object behind `path` if it lies on a sealfs mount listed in `mountinfo`
/// (the innermost mount wins).
fn resolve(mountinfo: &str, path: &Path) -> Option<S3Url> {
    let (mountpoint, volume_url) = sealfs_mounts(mountinfo)
        .into_iter()
        .filter(|(m, _)| path.starts_with(m))
        .max_by_key(|(m, _)| m.as_os_str().len())?;
    let rel = path.strip_prefix(&mountpoint).ok()?.to_str()?;
    if rel.is_empty() {
        return None;
    }
    Some(S3Url {
        bucket: volume_url.bucket.clone(),
        key: volume::join(volume_url.prefix(), rel),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
90 22 0:50 / /work/my\\040mnt rw,nosuid,nodev,relatime shared:2 - fuse.sealfs sealfs:s3://bkt/vol rw,user_id=0,group_id=0
91 90 0:51 / /work/my\\040mnt/inner rw shared:3 - fuse sealfs:s3://other/p/q rw
92 22 0:52 / /mnt/x rw shared:4 - fuse.sshfs host:/x rw
";

    #[test]
    fn paths_map_to_objects() {
        let u = resolve(INFO, Path::new("/work/my mnt/d/a.txt")).unwrap();
        assert_eq!((u.bucket.as_str(), u.key.as_str()), ("bkt", "vol/d/a.txt"));
        let u = resolve(INFO, Path::new("/work/my mnt/inner/f")).unwrap();
        assert_eq!((u.bucket.as_str(), u.key.as_str()), ("other", "p/q/f"));
        assert_eq!(resolve(INFO, Path::new("/mnt/x/f")), None);
        assert_eq!(resolve(INFO, Path::new("/work/my mnt")), None);
        assert_eq!(resolve(INFO, Path::new("/work/my mntx/f")), None);
    }
}
