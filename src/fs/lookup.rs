//! Finding entries: lookup, getattr and forget, and the checks every
//! create-like operation makes, with as few requests as S3 allows.
//!
//! What the namespace trusts answers without S3. Otherwise a known file is
//! revalidated by the directory's LIST when LIST can vouch for its
//! attributes (one LIST, shared by every entry for the metadata TTL: a
//! `tar c` or `grep -r` of a tree costs a GET per file, not a HEAD and a
//! GET), else with one HEAD. A directory of several pages is listed for
//! this only once the HEADs its entries needed within the TTL have cost as
//! much as its LIST would, so a single `stat` in a huge directory stays one
//! HEAD and a walk of all its entries costs about one LIST. An unknown name is first checked against the
//! directory's names: tools that create many files (cp -r, tar, rsync) look
//! up every new name first, and asked one by one each absent name costs
//! three requests (HEAD of the file, HEAD of a directory marker, LIST of the
//! prefix), whereas one LIST of the directory (a page per 1,000 entries)
//! answers every absent name for the metadata TTL. Directories of more than
//! [`MAX_PAGES`] pages are not listed for this (a listing that fell short
//! is not tried again within the TTL): their lookups go one by one.

use super::namespace::{Cached, ListedNames, Seen};
use super::{byte_names, enoent, Entry, Kind, SealFs, KEY_MAX, NAME_MAX, ROOT};
use crate::error::{Error, Result};
use crate::store::{Observed, StoreError};
use crate::volume;
use libc::{EEXIST, ENAMETOOLONG, ENOENT};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

/// LIST pages one absent-name lookup may spend on its directory.
const MAX_PAGES: usize = 10;

impl SealFs {
    /// Looks `name` up for the kernel: the entry is remembered (counted)
    /// until the kernel forgets it, so the table keeps it.
    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Entry> {
        self.kernel_lookups.fetch_add(1, Ordering::Relaxed);
        // An entry can be evicted between resolving it and remembering it
        // only when a huge listing ran meanwhile; resolving again is right.
        for _ in 0..3 {
            let e = self.resolve(parent, name).await?;
            if self.ns.remember(e.ino) {
                return Ok(e);
            }
        }
        Err(Error::posix(
            libc::EAGAIN,
            format!("{name}: evicted from the inode cache while being looked up"),
        ))
    }

    /// [`lookup`](Self::lookup) when the namespace answers without S3 (an
    /// entry it trusts, or a name a trusted listing lacks), on the caller's
    /// thread: `ls -l` looks up every name the listing just returned, and
    /// a task per name would cost more than the answer. `None`: call
    /// `lookup`.
    pub fn lookup_at_hand(&self, parent: u64, name: &str) -> Option<Result<Entry>> {
        if byte_names::byte_len(name) > NAME_MAX || (parent == ROOT && name == volume::INTERNAL_DIR)
        {
            return None;
        }
        let done = match self.ns.cached(parent, name) {
            Cached::Known(e) => self.ns.remember(e.ino).then_some(Ok(e)),
            Cached::Absent => Some(Err(enoent(name))),
            Cached::Ask { .. } => None,
        };
        if done.is_some() {
            self.kernel_lookups.fetch_add(1, Ordering::Relaxed);
        }
        done
    }

    /// Entry `name` (`ino`) of a listing of `parent`, for `readdirplus`,
    /// which hands the kernel each entry with its attributes so that `ls -l`
    /// needs no lookup per entry. Counted as a lookup (the kernel links it
    /// like one; a reply that could not carry it is taken back with
    /// [`forget`](Self::forget)). The flag: a lookup would answer the same
    /// now, without S3, so the kernel may keep it for the metadata TTL;
    /// otherwise it must look the name up before using it. None: the
    /// entry left the inode cache since the listing (not counted).
    pub fn lookup_listed(&self, parent: u64, name: &str, ino: u64) -> Option<(Entry, bool)> {
        self.ns.remember_listed(parent, name, ino)
    }

    /// [`getattr`](Self::getattr) when the entry needs no revalidation, on
    /// the caller's thread. `None`: call `getattr`.
    pub fn getattr_at_hand(&self, ino: u64) -> Option<Result<Entry>> {
        match self.ns.needs_revalidation(ino) {
            Ok(false) => Some(self.entry(ino)),
            Ok(true) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.ns.forget(ino, n);
    }

    /// What `name` in `parent` is, without a kernel reference (the
    /// operations' own look-ups).
    pub(super) async fn resolve(&self, parent: u64, name: &str) -> Result<Entry> {
        if byte_names::byte_len(name) > NAME_MAX {
            return Err(Error::posix(
                ENAMETOOLONG,
                format!("name longer than {NAME_MAX} bytes"),
            ));
        }
        if parent == ROOT && name == volume::INTERNAL_DIR {
            return Err(enoent(name));
        }
        let known_file = match self.ns.cached(parent, name) {
            Cached::Known(e) => return Ok(e),
            Cached::Absent => return Err(enoent(name)),
            Cached::Ask { known_file } => known_file,
        };
        let path = self.child_path(parent, name)?;
        if self.key_of(&path).len() > KEY_MAX {
            return Err(Error::posix(
                ENAMETOOLONG,
                "path longer than the S3 key limit",
            ));
        }
        if known_file {
            // A known file is revalidated by its directory's LIST, or with one HEAD.
            if let Some(e) = self.confirmed_by_listing(parent, &path, name).await? {
                return Ok(e);
            }
            if let Some(seen) = self.head_file(&path).await? {
                return self.ns.record(parent, name, seen);
            }
        } else if self.listed_name(parent, &path, name).await? == Some(false) {
            // An unknown name: the directory's names answer every absent name at once.
            return Err(enoent(name));
        }
        match self.fetch(&path).await? {
            Some(seen) => self.ns.record(parent, name, seen),
            None => {
                self.ns.gone_from_s3(parent, name);
                Err(enoent(name))
            }
        }
    }

    pub async fn getattr(&self, ino: u64) -> Result<Entry> {
        if self.ns.needs_revalidation(ino)? {
            let path = self.path_of(ino)?;
            if let Some((parent, name)) = self.ns.parent_and_name(ino) {
                if self
                    .confirmed_by_listing(parent, &path, &name)
                    .await?
                    .is_some()
                {
                    return self.entry(ino);
                }
            }
            let at = SystemTime::now();
            match self.store.head(&self.key_of(&path)).await {
                Ok(info) => self
                    .ns
                    .revalidated(ino, self.seen_observed(&Observed { info, at })),
                Err(StoreError::NotFound { .. }) => return Err(enoent(&path)),
                Err(e) => return Err(e.into()),
            }
        }
        self.entry(ino)
    }

    /// The checks every create-like operation makes: writable mount, valid
    /// name, nothing there yet. Returns the new entry's path.
    pub(super) async fn new_entry_path(&self, parent: u64, name: &str) -> Result<String> {
        self.check_writable()?;
        let path = self.check_new_name(parent, name)?;
        match self.resolve(parent, name).await {
            Ok(_) => Err(Error::posix(EEXIST, format!("{name}: file exists"))),
            Err(e) if e.errno() == ENOENT => Ok(path),
            Err(e) => Err(e),
        }
    }

    /// Asks S3 what `path` is: a file or symlink object, a directory marker, or
    /// a prefix with children. One round trip (three requests in parallel).
    async fn fetch(&self, path: &str) -> Result<Option<Seen>> {
        let key = self.key_of(path);
        let dir = format!("{key}/");
        let at = SystemTime::now();
        let (file, marker, listing) = tokio::join!(
            self.store.head(&key),
            self.store.head(&dir),
            self.store.list(&dir, Some("/"), None)
        );
        match file {
            Ok(info) => return Ok(Some(self.seen_observed(&Observed { info, at }))),
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

    /// Whether S3 has `name` in `parent` (whose path is that of `path`'s
    /// parent), by a listing no older than the TTL; `None` when the directory
    /// is too large to list for one lookup.
    async fn listed_name(&self, parent: u64, path: &str, name: &str) -> Result<Option<bool>> {
        Ok(self
            .names_in(parent, path, MAX_PAGES)
            .await?
            .map(|names| names.contains_key(name)))
    }

    /// The known file `name` in `parent`, revalidated by a LIST of the
    /// directory (no older than the TTL) that shows the very version its
    /// attributes were read from; `None` when LIST cannot vouch for them,
    /// shows something else, or a HEAD is cheaper for now (a LIST of a
    /// large directory is made once the HEADs its entries needed within the
    /// TTL have cost as much).
    async fn confirmed_by_listing(
        &self,
        parent: u64,
        path: &str,
        name: &str,
    ) -> Result<Option<Entry>> {
        let Some((ino, version)) = self.ns.listed_version(parent, name) else {
            return Ok(None);
        };
        let names = match self.ns.fresh_names(parent) {
            Some(names) => names,
            None => {
                let Some(pages) = self.ns.revalidation_pages(parent) else {
                    return Ok(None);
                };
                let Some(names) = self.names_in(parent, path, pages).await? else {
                    return Ok(None);
                };
                names
            }
        };
        Ok(match names.get(name) {
            Some(Some(v)) if *v == version => self.ns.confirm_listed(ino, &version),
            _ => None,
        })
    }

    /// The names S3 has in `parent` (whose path is that of `path`'s
    /// parent) by a listing no older than the TTL, listed now if that takes
    /// at most `max_pages` pages; `None` otherwise.
    async fn names_in(
        &self,
        parent: u64,
        path: &str,
        max_pages: usize,
    ) -> Result<Option<Arc<ListedNames>>> {
        if let Some(names) = self.ns.fresh_names(parent) {
            return Ok(Some(names));
        }
        if !self.ns.may_list(parent, max_pages) {
            return Ok(None);
        }
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let prefix = self.dir_prefix(dir);
        let mut names = ListedNames::new();
        let mut token = None;
        for _ in 0..max_pages {
            let page = self
                .store
                .list(&prefix, Some("/"), token.as_deref())
                .await?;
            names.extend(page.objects.iter().map(|o| {
                (
                    o.key[prefix.len()..].to_string(),
                    crate::store::ListedVersion::of_entry(o),
                )
            }));
            names.extend(
                page.prefixes
                    .iter()
                    .map(|p| (p[prefix.len()..].trim_end_matches('/').to_string(), None)),
            );
            match page.next {
                Some(t) => token = Some(t),
                None => {
                    self.ns.remember_names(parent, names);
                    return Ok(self.ns.fresh_names(parent));
                }
            }
        }
        // Too large for one lookup: not listed again for that within the TTL.
        self.ns.list_fell_short(parent, max_pages);
        Ok(None)
    }

    /// A file's current attributes by one HEAD; `None` when there is no
    /// object at its key (it may have become a directory: the caller fetches).
    async fn head_file(&self, path: &str) -> Result<Option<Seen>> {
        let at = SystemTime::now();
        match self.store.head(&self.key_of(path)).await {
            Ok(info) if !info.key.ends_with('/') => {
                let seen = self.seen_observed(&Observed { info, at });
                Ok((seen.attr.kind != Kind::Dir).then_some(seen))
            }
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::fs::tests::rig_with;
    use crate::fs::ROOT;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    /// cp -r's pattern after the listing went stale: a lookup of each new
    /// name, then its create. One LIST answers all the absent names.
    #[tokio::test]
    async fn absent_names_cost_one_listing_per_ttl_not_three_requests_each() {
        let r = rig_with(Duration::from_secs(30));
        r.write_file(ROOT, "existing", b"x").await;
        let other = crate::fs::tests::rig_same_store(&r);
        let c = r.mem.counts();
        let (h0, l0) = (c.head.load(Relaxed), c.list.load(Relaxed));
        for i in 0..100 {
            let name = format!("new{i}");
            assert_eq!(
                other.lookup(ROOT, &name).await.unwrap_err().errno(),
                libc::ENOENT
            );
            let (_, fh) = other.create(ROOT, &name, 0o644, 0, 0).await.unwrap();
            other.release(fh).await.unwrap();
        }
        assert_eq!(c.head.load(Relaxed) - h0, 0);
        assert_eq!(c.list.load(Relaxed) - l0, 1);
        // A name that exists in S3 is still found (and fetched).
        assert!(other.lookup(ROOT, "existing").await.is_ok());
    }
}

#[cfg(test)]
mod listing_tests {
    use crate::fs::tests::rig_with;
    use crate::fs::ROOT;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    /// `ls -l DIR` of a large directory: the path walk looks DIR up again
    /// for every entry; while DIR's listing is trusted that costs nothing.
    #[tokio::test]
    async fn a_listed_directory_is_not_fetched_again_for_each_path_walk() {
        let r = rig_with(Duration::from_millis(200));
        let d = r.fs.mkdir(ROOT, "d", 0o755, 0, 0).await.unwrap().ino;
        r.write_file(d, "f", b"x").await;
        let other = crate::fs::tests::rig_same_store(&r);
        let d2 = other.lookup(ROOT, "d").await.unwrap().ino;
        other.readdir(d2).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        // The root's entry for d is stale now, d's own listing too: one
        // lookup goes to S3...
        let c = r.mem.counts();
        let before = c.list.load(Relaxed) + c.head.load(Relaxed);
        other.lookup(ROOT, "d").await.unwrap();
        assert!(c.list.load(Relaxed) + c.head.load(Relaxed) > before);
        // ...but right after a fresh listing of d, none does.
        other.readdir(d2).await.unwrap();
        let before = c.list.load(Relaxed) + c.head.load(Relaxed);
        for _ in 0..10 {
            other.lookup(ROOT, "d").await.unwrap();
            other.lookup(d2, "f").await.unwrap();
        }
        assert_eq!(c.list.load(Relaxed) + c.head.load(Relaxed), before);
    }
}
