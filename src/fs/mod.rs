//! The filesystem core: POSIX operations over a sealed volume, usable and
//! tested without FUSE (the adapter in `crate::fuse` only translates).
//!
//! This file holds the shared state and the helpers every operation uses;
//! the operations are in one file per family: finding entries in
//! [`lookup`], listings in [`listing`], creating and removing entries in
//! [`entries`], file I/O in [`file`], attribute changes in [`setattr`],
//! extended attributes in [`xattr`], sharing in [`share`], renames in
//! [`rename`]. The inode table and directory caches belong to
//! [`namespace`]; staged content and its states to [`staged`]; uploads to
//! [`upload`], [`spool`] and [`recover`]. Modules only call downwards, in
//! the order docs/ARCHITECTURE.md gives.

pub mod activity;
pub mod attr;
pub mod byte_names;
mod entries;
mod file;
mod journal;
mod listing;
mod lookup;
mod metadata;
mod namespace;
mod recover;
mod rename;
mod setattr;
mod share;
mod spool;
mod staged;
mod upload;
mod xattr;

pub use attr::{Attr, Defaults, Kind, SetAttr};
pub use namespace::{DirEntry, Entry, DEFAULT_CACHED_ENTRIES, ROOT};
pub use share::{share_refused, SHARE, UNSHARE};

use crate::crypto::Layout;
use crate::error::{Error, Result};
use crate::grants::Grants;
use crate::local::LocalKey;
use crate::sealed::reader::{ReadSettings, ReadShared};
use crate::sealed::{SealMeta, SealedStore};
use crate::store::{ObjectInfo, ObjectStore, Observed};
use crate::volume;
use file::Handle;
use libc::{ENAMETOOLONG, ENOENT, EPERM, EROFS};
use namespace::{Namespace, Seen};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Longest file name (bytes), as on most Linux filesystems.
pub const NAME_MAX: usize = 255;
/// S3's key length limit (bytes).
pub const KEY_MAX: usize = 1024;
#[derive(Clone, Debug)]
pub struct FsSettings {
    /// How long attributes and directory listings are trusted before S3 is asked again.
    pub metadata_ttl: Duration,
    /// Private directory for staged writes (created 0700).
    pub cache_dir: PathBuf,
    pub defaults: Defaults,
    pub read_only: bool,
    /// Read-ahead and the plaintext cache.
    pub read: ReadSettings,
    /// Bytes of the encrypted read cache on local disk (0: none).
    pub disk_cache_bytes: u64,
    /// Close returns once the file is sealed into the local spool; uploads
    /// run in the background (see [`spool`]).
    pub write_back: bool,
    /// Uploads of spooled files in flight at once.
    pub write_back_uploads: usize,
    /// Entries the kernel does not reference kept as a cache of S3's answers
    /// (the inode table's bound beyond what the kernel holds).
    pub cached_entries: usize,
}

/// Filesystem statistics (S3 has no capacity limit; these are nominal).
pub struct FsStats {
    pub blocks: u64,
    pub bfree: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

pub struct SealFs {
    sealed: Arc<SealedStore>,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    layout: Layout,
    settings: FsSettings,
    /// The inode table and directory caches: the one owner of both.
    ns: Arc<Namespace>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Lookups the kernel asked for (reported in [`STATS`]): what listings
    /// that hand entries with their attributes spare `ls -l`.
    kernel_lookups: AtomicU64,
    /// Per-file sharing; `None` where IAM is not wired (core tests).
    grants: Option<Arc<Grants>>,
    /// Set once a grant upkeep was denied, so the warning is logged once.
    grants_denied: AtomicBool,
    /// Staging files of this mount's open files (recovery skips them).
    live_staged: journal::Live,
    /// Journals of this mount's directory renames in progress.
    renames_live: journal::Live,
    /// Read-ahead budget and plaintext cache of all readers.
    read_shared: Arc<ReadShared>,
    /// Sealed objects waiting for upload (`--write-back`).
    spool: Arc<spool::Spool>,
    /// The key everything under the cache directory is encrypted with.
    local: Arc<LocalKey>,
    /// Request and KMS call counters, read through [`STATS`] on the root.
    stats: Option<StatsFn>,
    /// Conflict copies, recoveries and errors answered since the mount began.
    activity: Arc<activity::Activity>,
}

/// Produces the counters behind [`STATS`].
pub type StatsFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// A read-only virtual attribute of the mount's root: S3 requests by type
/// and KMS calls so far, as JSON (for benchmarks and curious users).
pub const STATS: &str = "user.sealfs.stats";

fn enoent(what: &str) -> Error {
    Error::posix(ENOENT, format!("{what}: no such file or directory"))
}

impl SealFs {
    pub fn new(
        sealed: SealedStore,
        prefix: &str,
        settings: FsSettings,
        local: Arc<LocalKey>,
    ) -> Result<Self> {
        std::fs::create_dir_all(&settings.cache_dir).map_err(|e| {
            Error::io(
                format!("creating cache dir {}", settings.cache_dir.display()),
                e,
            )
        })?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&settings.cache_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("securing cache dir", e))?;
        let layout = Layout::new(sealed.settings().segment_size);
        let disk: Option<Arc<dyn crate::sealed::SegmentCache>> = if settings.disk_cache_bytes > 0 {
            let cache = crate::local::cache::ReadCache::open(
                &settings.cache_dir,
                local.clone(),
                settings.disk_cache_bytes,
            )
            .map_err(|e| Error::io("opening the read cache", e))?;
            Some(cache)
        } else {
            None
        };
        let mut root = Attr::implicit_dir(&settings.defaults);
        root.mtime = SystemTime::now();
        root.ctime = root.mtime;
        Ok(SealFs {
            store: sealed.store().clone(),
            spool: spool::Spool::new(&settings)?,
            sealed: Arc::new(sealed),
            prefix: prefix.trim_end_matches('/').to_string(),
            layout,
            ns: Arc::new(Namespace::new(
                root,
                settings.cached_entries,
                settings.metadata_ttl,
            )),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            kernel_lookups: AtomicU64::new(0),
            grants: None,
            grants_denied: AtomicBool::new(false),
            live_staged: Default::default(),
            renames_live: Default::default(),
            read_shared: ReadShared::with_disk(settings.read.clone(), disk),
            stats: None,
            activity: Arc::default(),
            local,
            settings,
        })
    }

    /// `s3://BUCKET/PREFIX`
    pub fn volume_url(&self) -> String {
        format!("s3://{}/{}", self.store.bucket(), self.prefix)
    }

    /// What the mount has done since it began (the adapter reports errors).
    pub fn activity(&self) -> &Arc<activity::Activity> {
        &self.activity
    }

    /// Enables the [`STATS`] attribute.
    pub fn with_stats(mut self, stats: StatsFn) -> Self {
        self.stats = Some(stats);
        self
    }

    /// How the kernel is told to drop cached pages of a file that changed
    /// in S3 (the FUSE adapter's notifier).
    pub fn set_page_invalidator(&self, f: namespace::PageInvalidator) {
        self.ns.set_page_invalidator(f);
    }

    /// Enables sharing (the `user.share` attributes and grant upkeep).
    pub fn with_grants(mut self, grants: Arc<Grants>) -> Self {
        self.grants = Some(grants);
        self
    }

    pub fn settings(&self) -> &FsSettings {
        &self.settings
    }

    fn key_of(&self, path: &str) -> String {
        volume::join(&self.prefix, path)
    }

    /// Whether `key` lies in this volume (and not in its internal area):
    /// journals and spool entries found on local disk are replayed only
    /// into their own volume.
    fn in_volume(&self, key: &str) -> bool {
        let root = self.dir_prefix("");
        key.starts_with(&root)
            && key.len() > root.len()
            && !key[root.len()..].starts_with(&format!("{}/", volume::INTERNAL_DIR))
    }

    /// The LIST prefix of a directory ("" or ending in '/').
    fn dir_prefix(&self, path: &str) -> String {
        if path.is_empty() {
            if self.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", self.prefix)
            }
        } else {
            format!("{}/", self.key_of(path))
        }
    }

    fn path_of(&self, ino: u64) -> Result<String> {
        self.ns.path(ino)
    }

    fn child_path(&self, parent: u64, name: &str) -> Result<String> {
        let dir = self.path_of(parent)?;
        Ok(if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        })
    }

    fn check_writable(&self) -> Result<()> {
        if self.settings.read_only {
            return Err(Error::posix(EROFS, "mounted read-only"));
        }
        Ok(())
    }

    /// Validates a new name: length limits, and the volume's internal area.
    fn check_new_name(&self, parent: u64, name: &str) -> Result<String> {
        if byte_names::byte_len(name) > NAME_MAX {
            return Err(Error::posix(
                ENAMETOOLONG,
                format!("name longer than {NAME_MAX} bytes"),
            ));
        }
        if parent == ROOT && name == volume::INTERNAL_DIR {
            return Err(Error::posix(
                EPERM,
                format!("{} is reserved for sealfs", volume::INTERNAL_DIR),
            ));
        }
        let path = self.child_path(parent, name)?;
        if self.key_of(&path).len() + 1 > KEY_MAX {
            return Err(Error::posix(
                ENAMETOOLONG,
                format!("path longer than the S3 key limit ({KEY_MAX} bytes)"),
            ));
        }
        Ok(path)
    }

    /// Attributes and key reference of an object from its HEAD/GET info.
    fn seen_object(&self, info: &ObjectInfo) -> Seen {
        let sealed = SealMeta::read_from(&info.metadata).ok();
        let size = match &sealed {
            Some(_) => self.layout.plain_len(info.size).unwrap_or(0),
            None => info.size,
        };
        Seen {
            attr: Attr::from_object(info, size, &self.settings.defaults),
            etag: Some(info.etag.clone()),
            key_ref: sealed.map(|s| s.key),
            remote: true,
            listed: None,
        }
    }

    /// What a read of `o`'s attributes says, with what LIST will show of
    /// it while they stand (when LIST can vouch for them).
    fn seen_observed(&self, o: &Observed) -> Seen {
        Seen {
            listed: o.listed_version(),
            ..self.seen_object(&o.info)
        }
    }

    fn implicit_dir(&self) -> Seen {
        Seen {
            attr: Attr::implicit_dir(&self.settings.defaults),
            etag: None,
            key_ref: None,
            remote: true,
            listed: None,
        }
    }

    fn entry(&self, ino: u64) -> Result<Entry> {
        self.ns.entry(ino)
    }

    /// Inodes in the table (tests and stats).
    pub fn cached_inodes(&self) -> usize {
        self.ns.len()
    }

    pub fn statfs(&self) -> FsStats {
        FsStats {
            blocks: 1 << 40,
            bfree: 1 << 40,
            files: 1 << 32,
            ffree: 1 << 32,
            bsize: 4096,
            namelen: NAME_MAX as u32,
        }
    }
}

/// A name S3 can hold that is also a valid POSIX file name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && byte_names::decode(name).is_some_and(|b| b.len() <= NAME_MAX)
}

#[cfg(test)]
mod attribute_tests;
#[cfg(test)]
pub(crate) mod fault_tests;
#[cfg(test)]
mod listed_tests;
#[cfg(test)]
mod spool_tests;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
pub(crate) mod tests;
