//! POSIX attributes of a file or directory, and how they ride in object
//! metadata (`x-amz-meta-sealfs-*`).
//!
//! | name | value |
//! |---|---|
//! | `sealfs-type` | `l` for a symlink, `d` on a directory marker, `p` a FIFO, `s` a socket, `c`/`b` a character/block device; absent for a file |
//! | `sealfs-rdev` | a device node's device number, decimal (`c` and `b` only) |
//! | `sealfs-mode` | permission bits, octal |
//! | `sealfs-uid`, `sealfs-gid` | decimal |
//! | `sealfs-mtime`, `sealfs-ctime`, `sealfs-atime` | `<seconds>.<nanoseconds>` since the epoch (`-` before it); atime only when set explicitly (the mount is `noatime`) |
//! | `sealfs-x-<hex name>` | a `user.*` xattr value, base64 (name without `user.`) |

use crate::store::{Metadata, ObjectInfo};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TYPE: &str = "sealfs-type";
const MODE: &str = "sealfs-mode";
const UID: &str = "sealfs-uid";
const GID: &str = "sealfs-gid";
const MTIME: &str = "sealfs-mtime";
const ATIME: &str = "sealfs-atime";
pub(crate) const CTIME: &str = "sealfs-ctime";
const RDEV: &str = "sealfs-rdev";
use crate::store::attested::XATTR_PREFIX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A named pipe: the kernel implements it; sealfs stores only the node.
    Fifo,
    /// A Unix socket's name (bound by `bind`); nothing to store but the node.
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    /// The kind of a `mknod` mode (`S_IFMT` bits); `None` for directories
    /// and symlinks, which have operations of their own.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        match mode & libc::S_IFMT {
            0 | libc::S_IFREG => Some(Kind::File),
            libc::S_IFIFO => Some(Kind::Fifo),
            libc::S_IFSOCK => Some(Kind::Socket),
            libc::S_IFCHR => Some(Kind::CharDevice),
            libc::S_IFBLK => Some(Kind::BlockDevice),
            _ => None,
        }
    }

    fn tag(self) -> Option<&'static str> {
        match self {
            Kind::File => None,
            Kind::Dir => Some("d"),
            Kind::Symlink => Some("l"),
            Kind::Fifo => Some("p"),
            Kind::Socket => Some("s"),
            Kind::CharDevice => Some("c"),
            Kind::BlockDevice => Some("b"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub kind: Kind,
    /// Plaintext size (for a symlink, the target's length).
    pub size: u64,
    /// Permission bits (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
    pub atime: SystemTime,
    pub ctime: SystemTime,
    /// `user.*` xattrs, keyed by the full name (`user.foo`).
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Device number of a character or block device node (0 otherwise).
    pub rdev: u32,
}

/// Owner and default modes for objects that carry no POSIX metadata (implicit
/// directories, objects written by other tools).
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u32,
    pub dir_mode: u32,
}

fn fmt_time(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            format!("-{}.{:09}", d.as_secs(), d.subsec_nanos())
        }
    }
}

/// The current time in the metadata encoding.
pub fn format_now() -> String {
    fmt_time(SystemTime::now())
}

fn parse_time(s: &str) -> Option<SystemTime> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, nanos) = s.split_once('.').unwrap_or((s, "0"));
    let nanos: u32 = nanos.parse().ok()?;
    // Hostile metadata: nanoseconds past a second would carry into the
    // seconds (and `Duration::new` panics on overflow); refuse, never panic.
    if nanos >= 1_000_000_000 {
        return None;
    }
    let d = Duration::new(secs.parse().ok()?, nanos);
    if neg {
        UNIX_EPOCH.checked_sub(d)
    } else {
        UNIX_EPOCH.checked_add(d)
    }
}

impl Attr {
    pub fn new(kind: Kind, mode: u32, uid: u32, gid: u32) -> Attr {
        let now = SystemTime::now();
        Attr {
            kind,
            size: 0,
            mode: mode & 0o7777,
            uid,
            gid,
            mtime: now,
            atime: now,
            ctime: now,
            xattrs: BTreeMap::new(),
            rdev: 0,
        }
    }

    /// Attributes of an implicit directory (a common prefix with no marker).
    pub fn implicit_dir(d: &Defaults) -> Attr {
        let mut a = Attr::new(Kind::Dir, d.dir_mode, d.uid, d.gid);
        a.mtime = UNIX_EPOCH;
        a.atime = UNIX_EPOCH;
        a.ctime = UNIX_EPOCH;
        a
    }

    /// Reads attributes from an object's metadata; `size` is the plaintext size.
    pub fn from_object(info: &ObjectInfo, size: u64, d: &Defaults) -> Attr {
        let m = &info.metadata;
        let kind = match m.get(TYPE).map(String::as_str) {
            _ if info.key.ends_with('/') => Kind::Dir,
            Some("l") => Kind::Symlink,
            Some("d") => Kind::Dir,
            // A special file has no content: an object with content is a file.
            Some("p") if info.size == 0 => Kind::Fifo,
            Some("s") if info.size == 0 => Kind::Socket,
            Some("c") if info.size == 0 => Kind::CharDevice,
            Some("b") if info.size == 0 => Kind::BlockDevice,
            _ => Kind::File,
        };
        let default_mode = match kind {
            Kind::Dir => d.dir_mode,
            Kind::Symlink => 0o777,
            _ => d.file_mode,
        };
        let rdev = match kind {
            Kind::CharDevice | Kind::BlockDevice => {
                m.get(RDEV).and_then(|s| s.parse().ok()).unwrap_or(0)
            }
            _ => 0,
        };
        let modified = info.last_modified.unwrap_or(UNIX_EPOCH);
        let mtime = m.get(MTIME).and_then(|s| parse_time(s)).unwrap_or(modified);
        let xattrs = m
            .iter()
            .filter_map(|(k, v)| {
                let name = hex::decode(k.strip_prefix(XATTR_PREFIX)?).ok()?;
                let name = String::from_utf8(name).ok()?;
                Some((format!("user.{name}"), B64.decode(v).ok()?))
            })
            .collect();
        Attr {
            kind,
            size,
            mode: m
                .get(MODE)
                .and_then(|s| u32::from_str_radix(s, 8).ok())
                .unwrap_or(default_mode)
                & 0o7777,
            uid: m.get(UID).and_then(|s| s.parse().ok()).unwrap_or(d.uid),
            gid: m.get(GID).and_then(|s| s.parse().ok()).unwrap_or(d.gid),
            mtime,
            atime: m.get(ATIME).and_then(|s| parse_time(s)).unwrap_or(mtime),
            ctime: m.get(CTIME).and_then(|s| parse_time(s)).unwrap_or(mtime),
            xattrs,
            rdev,
        }
    }

    /// Replaces the POSIX fields of `m` with these attributes (sealing fields are kept).
    pub fn write_into(&self, m: &mut Metadata) {
        m.retain(|k, _| {
            !(k.starts_with(XATTR_PREFIX)
                || [TYPE, MODE, UID, GID, MTIME, CTIME, ATIME, RDEV].contains(&k.as_str()))
        });
        if let Some(tag) = self.kind.tag() {
            m.insert(TYPE.into(), tag.into());
        }
        if matches!(self.kind, Kind::CharDevice | Kind::BlockDevice) {
            m.insert(RDEV.into(), self.rdev.to_string());
        }
        m.insert(MODE.into(), format!("{:o}", self.mode));
        m.insert(UID.into(), self.uid.to_string());
        m.insert(GID.into(), self.gid.to_string());
        m.insert(MTIME.into(), fmt_time(self.mtime));
        if self.atime != self.mtime {
            m.insert(ATIME.into(), fmt_time(self.atime));
        }
        m.insert(CTIME.into(), fmt_time(self.ctime));
        for (name, value) in &self.xattrs {
            let short = name.strip_prefix("user.").unwrap_or(name);
            m.insert(
                format!("{XATTR_PREFIX}{}", hex::encode(short)),
                B64.encode(value),
            );
        }
    }

    pub fn metadata(&self) -> Metadata {
        let mut m = Metadata::new();
        self.write_into(&mut m);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_metadata() {
        let mut a = Attr::new(Kind::Symlink, 0o120644, 1000, 100);
        a.size = 7;
        a.mtime = UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
        a.atime = UNIX_EPOCH - Duration::new(86_400, 5);
        a.xattrs.insert("user.color".into(), b"blue\0\xff".to_vec());
        let mut m = a.metadata();
        m.insert("sealfs-dk".into(), "keep".into());
        let info = ObjectInfo {
            key: "k".into(),
            size: 0,
            etag: String::new(),
            metadata: m.clone(),
            last_modified: None,
        };
        let d = Defaults {
            uid: 0,
            gid: 0,
            file_mode: 0o644,
            dir_mode: 0o755,
        };
        let b = Attr::from_object(&info, 7, &d);
        assert_eq!(a, b);
        assert_eq!(b.mode, 0o644);
        // Rewriting keeps foreign fields and drops removed xattrs.
        let mut c = b.clone();
        c.xattrs.clear();
        c.write_into(&mut m);
        assert_eq!(m["sealfs-dk"], "keep");
        assert!(!m.keys().any(|k| k.starts_with(XATTR_PREFIX)));
    }

    #[test]
    fn special_files_round_trip_and_need_no_content() {
        let d = Defaults {
            uid: 0,
            gid: 0,
            file_mode: 0o644,
            dir_mode: 0o755,
        };
        for kind in [
            Kind::Fifo,
            Kind::Socket,
            Kind::CharDevice,
            Kind::BlockDevice,
        ] {
            let mut a = Attr::new(kind, 0o600, 1, 2);
            if matches!(kind, Kind::CharDevice | Kind::BlockDevice) {
                a.rdev = (8 << 8) | 3;
            }
            let mut info = ObjectInfo {
                key: "n".into(),
                size: 0,
                etag: String::new(),
                metadata: a.metadata(),
                last_modified: None,
            };
            assert_eq!(Attr::from_object(&info, 0, &d), a, "{kind:?}");
            // With content it is not a special file (a node has none).
            info.size = 10;
            assert_eq!(Attr::from_object(&info, 10, &d).kind, Kind::File);
        }
        assert_eq!(Kind::from_mode(libc::S_IFIFO | 0o644), Some(Kind::Fifo));
        assert_eq!(Kind::from_mode(0o644), Some(Kind::File));
        assert_eq!(Kind::from_mode(libc::S_IFDIR), None);
    }

    #[test]
    fn hostile_times_are_refused_not_panicked_on() {
        for bad in [
            "18446744073709551615.4294967295",
            "18446744073709551615.999999999",
            "-18446744073709551615.0",
            "1.1000000000",
            "x.1",
            "",
            ".",
        ] {
            let _ = parse_time(bad);
        }
        assert_eq!(parse_time("1.1000000000"), None);
        assert_eq!(parse_time("5.5"), Some(UNIX_EPOCH + Duration::new(5, 5)));
    }

    proptest::proptest! {
        /// Whatever a bucket writer puts in an object's metadata, reading
        /// its attributes returns attributes, never a panic.
        #[test]
        fn any_metadata_reads_without_panic(
            fields in proptest::collection::btree_map(
                proptest::sample::select(vec![
                    TYPE, MODE, UID, GID, MTIME, ATIME, CTIME, RDEV, "sealfs-x-zz", "sealfs-x-6869",
                ]),
                "\\PC{0,40}|[0-9.\\-]{0,40}",
                0..10,
            ),
            size in proptest::prelude::any::<u64>(),
        ) {
            let info = ObjectInfo {
                key: "k".into(),
                size,
                etag: String::new(),
                metadata: fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                last_modified: None,
            };
            let d = Defaults { uid: 1, gid: 2, file_mode: 0o644, dir_mode: 0o755 };
            let a = Attr::from_object(&info, size, &d);
            proptest::prop_assert!(a.mode <= 0o7777);
        }
    }

    #[test]
    fn defaults_for_foreign_objects() {
        let d = Defaults {
            uid: 5,
            gid: 6,
            file_mode: 0o640,
            dir_mode: 0o750,
        };
        let info = ObjectInfo {
            key: "x/".into(),
            size: 0,
            etag: String::new(),
            metadata: Metadata::new(),
            last_modified: Some(UNIX_EPOCH + Duration::from_secs(9)),
        };
        let a = Attr::from_object(&info, 0, &d);
        assert_eq!((a.kind, a.mode, a.uid, a.gid), (Kind::Dir, 0o750, 5, 6));
        assert_eq!(a.mtime, UNIX_EPOCH + Duration::from_secs(9));
    }
}

/// What `setattr` changes; `None` fields stay as they are.
#[derive(Default, Debug, Clone)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
    pub atime: Option<SystemTime>,
}

impl SetAttr {
    /// Applies the changes to `a` at time `now`: a size change moves mtime
    /// (unless one is given), and ctime always moves.
    pub fn apply(&self, a: &mut Attr, now: SystemTime) {
        if let Some(m) = self.mode {
            a.mode = m & 0o7777;
        }
        if let Some(u) = self.uid {
            a.uid = u;
        }
        if let Some(g) = self.gid {
            a.gid = g;
        }
        if let Some(size) = self.size {
            a.size = size;
            a.mtime = now;
        }
        if let Some(m) = self.mtime {
            a.mtime = m;
        }
        if let Some(t) = self.atime {
            a.atime = t;
        }
        a.ctime = now;
    }
}
