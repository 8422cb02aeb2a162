//! The filesystem core: POSIX operations over a sealed volume, usable and
//! tested without FUSE (the adapter in `crate::fuse` only translates).
//!
//! Finding entries (lookup, getattr, forget) lives here; listings in
//! [`listing`], creating and removing entries in [`entries`], file I/O
//! (open, read, write, flush) in [`file`], attribute changes in [`setattr`],
//! extended attributes in [`xattr`]; docs/ARCHITECTURE.md has the whole map.

pub mod attr;
pub mod byte_names;
mod entries;
mod file;
mod inode;
mod listing;
mod names;
mod recover;
mod rename;
mod setattr;
mod share;
mod spool;
mod upload;
mod xattr;

pub use attr::{Attr, Defaults, Kind};
pub use inode::{DEFAULT_CACHED_ENTRIES, ROOT};
pub use setattr::SetAttr;
pub use share::{share_refused, SHARE, UNSHARE};

use crate::crypto::Layout;
use crate::error::{Error, Result};
use crate::grants::Grants;
use crate::keys::KeyPool;
use crate::sealed::reader::{ReadSettings, ReadShared};
use crate::sealed::{SealMeta, SealedStore};
use crate::store::{ObjectInfo, ObjectStore, StoreError};
use crate::volume;
use file::Handle;
use inode::{Seen, Table};
use libc::{ENAMETOOLONG, ENOENT, EPERM, EROFS};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Longest file name (bytes), as on most Linux filesystems.
pub const NAME_MAX: usize = 255;
/// S3's key length limit (bytes).
pub const KEY_MAX: usize = 1024;
/// HEADs in flight while listing a directory.

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
    /// Close returns once the file is sealed into the local spool; uploads
    /// run in the background (see [`spool`]).
    pub write_back: bool,
    /// Uploads of spooled files in flight at once.
    pub write_back_uploads: usize,
    /// Entries the kernel does not reference kept as a cache of S3's answers
    /// (the inode table's bound beyond what the kernel holds).
    pub cached_entries: usize,
}

/// An inode and its attributes, as returned to the kernel.
#[derive(Clone, Debug)]
pub struct Entry {
    pub ino: u64,
    pub attr: Attr,
    /// False once the name is gone (unlinked while open): st_nlink 0.
    pub linked: bool,
    /// A directory's subdirectories known to the mount (st_nlink is 2 plus
    /// these): exact for a directory listed or made here, a lower bound
    /// otherwise (readdir's d_type, not st_nlink, is what tools walk by).
    pub subdirs: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub name: String,
    pub kind: Kind,
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
    pool: Arc<KeyPool>,
    prefix: String,
    layout: Layout,
    settings: FsSettings,
    table: Arc<Mutex<Table>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Per-file sharing; `None` where IAM is not wired (core tests).
    grants: Option<Arc<Grants>>,
    /// Set once a grant upkeep was denied, so the warning is logged once.
    grants_denied: AtomicBool,
    /// Staging files of this mount's open files (recovery skips them).
    live_staged: recover::Live,
    /// Journals of this mount's directory renames in progress.
    renames_live: recover::Live,
    /// Read-ahead budget and plaintext cache of all readers.
    read_shared: Arc<ReadShared>,
    /// Sealed objects waiting for upload (`--write-back`).
    spool: Arc<spool::Spool>,
    /// The names of directories in S3, for absent-name lookups.
    names: Arc<names::DirNames>,
    /// Request and KMS call counters, read through [`STATS`] on the root.
    stats: Option<StatsFn>,
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
        pool: Arc<KeyPool>,
        prefix: &str,
        settings: FsSettings,
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
        let mut root = Attr::implicit_dir(&settings.defaults);
        root.mtime = SystemTime::now();
        root.ctime = root.mtime;
        Ok(SealFs {
            store: sealed.store().clone(),
            spool: spool::Spool::new(&settings)?,
            sealed: Arc::new(sealed),
            pool,
            prefix: prefix.trim_end_matches('/').to_string(),
            layout,
            table: Arc::new(Mutex::new(Table::new(root, settings.cached_entries))),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            grants: None,
            grants_denied: AtomicBool::new(false),
            live_staged: Default::default(),
            renames_live: Default::default(),
            read_shared: ReadShared::new(settings.read.clone()),
            stats: None,
            names: Default::default(),
            settings,
        })
    }

    /// Enables the [`STATS`] attribute.
    pub fn with_stats(mut self, stats: StatsFn) -> Self {
        self.stats = Some(stats);
        self
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
        self.table
            .lock()
            .path(ino)
            .ok_or_else(|| enoent(&format!("inode {ino}")))
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
        }
    }

    fn implicit_dir(&self) -> Seen {
        Seen {
            attr: Attr::implicit_dir(&self.settings.defaults),
            etag: None,
            key_ref: None,
            remote: true,
        }
    }

    /// Asks S3 what `path` is: a file or symlink object, a directory marker, or
    /// a prefix with children. One round trip (three requests in parallel).
    async fn fetch(&self, path: &str) -> Result<Option<Seen>> {
        let key = self.key_of(path);
        let dir = format!("{key}/");
        let (file, marker, listing) = tokio::join!(
            self.store.head(&key),
            self.store.head(&dir),
            self.store.list(&dir, Some("/"), None)
        );
        match file {
            Ok(info) => return Ok(Some(self.seen_object(&info))),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        match marker {
            Ok(info) => {
                let mut seen = self.seen_object(&info);
                seen.attr.kind = Kind::Dir;
                return Ok(Some(seen));
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let page = listing?;
        Ok((!page.objects.is_empty() || !page.prefixes.is_empty()).then(|| self.implicit_dir()))
    }

    fn fresh(&self, t: Instant) -> bool {
        t.elapsed() < self.settings.metadata_ttl
    }

    fn listed_fresh(&self, dir: u64) -> bool {
        self.table.lock().is_listed(dir)
    }

    fn entry(&self, ino: u64) -> Result<Entry> {
        let t = self.table.lock();
        let i = t.get(ino).ok_or_else(|| enoent(&format!("inode {ino}")))?;
        Ok(Entry {
            ino,
            attr: i.attr.clone(),
            linked: t.is_linked(ino),
            subdirs: t.subdirs(ino),
        })
    }

    /// Looks `name` up for the kernel: the entry is remembered (counted)
    /// until the kernel forgets it, so the table keeps it.
    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Entry> {
        // An entry can be evicted between resolving it and remembering it
        // only when a huge listing ran meanwhile; resolving again is right.
        for _ in 0..3 {
            let e = self.resolve(parent, name).await?;
            if self.table.lock().remember(e.ino) {
                return Ok(e);
            }
        }
        Err(Error::posix(
            libc::EAGAIN,
            format!("{name}: evicted from the inode cache while being looked up"),
        ))
    }

    /// What `name` in `parent` is, without a kernel reference (the
    /// operations' own look-ups).
    async fn resolve(&self, parent: u64, name: &str) -> Result<Entry> {
        if byte_names::byte_len(name) > NAME_MAX {
            return Err(Error::posix(
                ENAMETOOLONG,
                format!("name longer than {NAME_MAX} bytes"),
            ));
        }
        if parent == ROOT && name == volume::INTERNAL_DIR {
            return Err(enoent(name));
        }
        // A fresh listing of the parent answers without S3: present names
        // from the cache, absent names with ENOENT.
        let parent_listed = self.listed_fresh(parent);
        let known_file = {
            let t = self.table.lock();
            match t.child(parent, name) {
                Some(ino) => {
                    let i = t.get(ino).expect("child inode");
                    // A directory whose own listing is still trusted exists:
                    // path walks through it (every `lstat` of `ls -l DIR`)
                    // need not ask S3 about it again.
                    let dir_listed = i.attr.kind == Kind::Dir && t.is_listed(ino);
                    if i.local()
                        || !i.remote
                        || parent_listed
                        || dir_listed
                        || self.fresh(i.validated)
                    {
                        return Ok(Entry {
                            ino,
                            attr: i.attr.clone(),
                            linked: true,
                            subdirs: t.subdirs(ino),
                        });
                    }
                    i.attr.kind != Kind::Dir
                }
                None if parent_listed => return Err(enoent(name)),
                None => false,
            }
        };
        let path = self.child_path(parent, name)?;
        if self.key_of(&path).len() > KEY_MAX {
            return Err(Error::posix(
                ENAMETOOLONG,
                "path longer than the S3 key limit",
            ));
        }
        if known_file {
            // A known file is revalidated with one HEAD.
            if let Some(seen) = self.head_file(&path).await? {
                let ino = self.table.lock().upsert(parent, name, seen);
                return self.entry(ino);
            }
        } else if self.listed_name(parent, &path, name).await? == Some(false) {
            // An unknown name: the directory's names (one LIST page per
            // 1,000, cached for the TTL) answer every absent name at once.
            return Err(enoent(name));
        }
        match self.fetch(&path).await? {
            Some(seen) => {
                let ino = self.table.lock().upsert(parent, name, seen);
                self.entry(ino)
            }
            None => {
                let mut t = self.table.lock();
                if let Some(ino) = t.child(parent, name) {
                    if t.get(ino).is_some_and(|i| !i.local() && i.remote) {
                        t.unlink(parent, name);
                    }
                }
                Err(enoent(name))
            }
        }
    }

    pub async fn getattr(&self, ino: u64) -> Result<Entry> {
        let stale = {
            let t = self.table.lock();
            let i = t.get(ino).ok_or_else(|| enoent(&format!("inode {ino}")))?;
            // An unlinked inode (open, then replaced or removed) keeps its
            // attributes: its old path names another file now, whose size
            // must never become this one's (the kernel would cut its cache).
            t.is_linked(ino)
                && i.remote
                && !i.local()
                && i.attr.kind != Kind::Dir
                && !self.fresh(i.validated)
                && !t.is_listed(i.parent)
        };
        if stale {
            let path = self.path_of(ino)?;
            match self.store.head(&self.key_of(&path)).await {
                Ok(info) => {
                    let seen = self.seen_object(&info);
                    let mut t = self.table.lock();
                    if let Some(i) = t.get_mut(ino) {
                        if !i.local() {
                            if i.etag != seen.etag {
                                i.target = None;
                            }
                            i.attr = seen.attr;
                            i.etag = seen.etag;
                            i.key_ref = seen.key_ref;
                        }
                        i.validated = Instant::now();
                    }
                }
                Err(StoreError::NotFound { .. }) => return Err(enoent(&path)),
                Err(e) => return Err(e.into()),
            }
        }
        self.entry(ino)
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.table.lock().forget(ino, n);
    }

    /// Inodes in the table (tests and stats).
    pub fn cached_inodes(&self) -> usize {
        self.table.lock().len()
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

    /// Flushes every file with staged changes (unmount, SIGTERM).
    pub async fn flush_all(&self) -> Result<()> {
        let staged: Vec<(u64, Arc<file::Staged>)> = {
            let t = self.table.lock();
            self.handles
                .lock()
                .values()
                .filter_map(|h| {
                    t.get(h.ino)
                        .and_then(|i| i.staged.clone())
                        .map(|s| (h.ino, s))
                })
                .collect()
        };
        let mut first_err = None;
        for (ino, s) in staged {
            if let Err(e) = self.upload(ino, &s).await {
                tracing::error!(ino, error = %e, "flush at unmount failed");
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = self.drain_spool().await {
            tracing::error!(error = %e, "the write-back spool could not be drained; what is left is uploaded by the next mount");
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
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
mod spool_tests;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
pub(crate) mod tests;
