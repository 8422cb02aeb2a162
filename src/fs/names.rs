//! Answering lookups of names that do not exist, and revalidating files,
//! with as few requests as S3 allows.
//!
//! Tools that create many files (cp -r, tar, rsync) look up every new name
//! first. Asked one by one, each absent name costs three requests (HEAD of
//! the file, HEAD of a directory marker, LIST of the prefix). Instead, one
//! LIST of the directory (a page per 1,000 entries) answers every absent name
//! for the metadata TTL, like a fresh listing does. A name the listing has is
//! still fetched to get its attributes; a name created or removed by this
//! mount is in the inode table, which is asked first. Directories of more
//! than [`MAX_PAGES`] pages are not listed for this: their lookups go one by one.

use super::inode::Seen;
use super::{Kind, SealFs};
use crate::error::Result;
use crate::store::StoreError;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// LIST pages one absent-name lookup may spend on its directory.
const MAX_PAGES: usize = 10;

/// Listings held before the stale ones are pruned.
const PRUNE_AT: usize = 256;

/// The names a directory had in S3, and when they were listed.
type Listed = (Instant, Arc<HashSet<String>>);

#[derive(Default)]
pub(super) struct DirNames {
    map: Mutex<HashMap<u64, Listed>>,
}

impl DirNames {
    pub(super) fn remember(&self, dir: u64, names: HashSet<String>, ttl: Duration) {
        let mut m = self.map.lock();
        // Listings of directories not looked at again within the TTL are
        // dropped as others come, so a walk of a huge tree keeps only the
        // recent ones.
        if m.len() >= PRUNE_AT {
            m.retain(|_, (t, _)| t.elapsed() < ttl);
        }
        m.insert(dir, (Instant::now(), Arc::new(names)));
    }

    /// Something changed in `dir` behind the inode table's back (a conflict
    /// copy, a recovered upload): list it again next time.
    pub(super) fn forget(&self, dir: u64) {
        self.map.lock().remove(&dir);
    }

    pub(super) fn clear(&self) {
        self.map.lock().clear();
    }

    fn fresh(&self, dir: u64, ttl: std::time::Duration) -> Option<Arc<HashSet<String>>> {
        let mut m = self.map.lock();
        match m.get(&dir) {
            Some((t, names)) if t.elapsed() < ttl => Some(names.clone()),
            Some(_) => {
                m.remove(&dir);
                None
            }
            None => None,
        }
    }
}

impl SealFs {
    /// Whether S3 has `name` in `parent` (whose path is that of `path`'s
    /// parent), by a listing no older than the TTL; `None` when the directory
    /// is too large to list for one lookup.
    pub(super) async fn listed_name(
        &self,
        parent: u64,
        path: &str,
        name: &str,
    ) -> Result<Option<bool>> {
        if let Some(names) = self.names.fresh(parent, self.settings.metadata_ttl) {
            return Ok(Some(names.contains(name)));
        }
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let prefix = self.dir_prefix(dir);
        let mut names = HashSet::new();
        let mut token = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .store
                .list(&prefix, Some("/"), token.as_deref())
                .await?;
            names.extend(
                page.objects
                    .iter()
                    .map(|o| o.key[prefix.len()..].to_string()),
            );
            names.extend(
                page.prefixes
                    .iter()
                    .map(|p| p[prefix.len()..].trim_end_matches('/').to_string()),
            );
            match page.next {
                Some(t) => token = Some(t),
                None => {
                    let found = names.contains(name);
                    self.names
                        .remember(parent, names, self.settings.metadata_ttl);
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// A file's current attributes by one HEAD; `None` when there is no
    /// object at its key (it may have become a directory: the caller fetches).
    pub(super) async fn head_file(&self, path: &str) -> Result<Option<Seen>> {
        match self.store.head(&self.key_of(path)).await {
            Ok(info) if !info.key.ends_with('/') => {
                let seen = self.seen_object(&info);
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
