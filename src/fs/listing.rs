//! Directory listings: `readdir` from one LIST (per 1,000 entries) plus
//! parallel HEADs of the entries whose attributes are not fresh, and how
//! long a complete listing is trusted (the merge is the namespace's).

use super::namespace::ListedDir;
use super::{valid_name, DirEntry, Kind, SealFs, ROOT};
use crate::error::{Error, Result};
use crate::store::{ObjectInfo, StoreError};
use crate::volume;
use futures::{StreamExt, TryStreamExt};
use std::time::Instant;

/// HEADs in flight while listing a directory.
const LIST_HEAD_CONCURRENCY: usize = 64;

impl SealFs {
    /// The whole listing of a directory, "." and ".." first. Costs one LIST
    /// per 1,000 entries plus parallel HEADs for entries whose attributes are
    /// not fresh; every entry lands in the inode cache, so `ls -l` after it
    /// costs nothing more.
    pub async fn readdir(&self, ino: u64) -> Result<Vec<DirEntry>> {
        let started = Instant::now();
        let (path, parent) = self.ns.dir_to_list(ino)?;
        let prefix = self.dir_prefix(&path);
        let mut listed = ListedDir::default();
        let mut token = None;
        loop {
            let page = self
                .store
                .list(&prefix, Some("/"), token.as_deref())
                .await?;
            for o in page.objects {
                let name = &o.key[prefix.len()..];
                if valid_name(name) && !(ino == ROOT && name == volume::INTERNAL_DIR) {
                    listed
                        .files
                        .insert(name.to_string(), (o.key.clone(), o.etag));
                }
            }
            for p in page.prefixes {
                let name = p[prefix.len()..].trim_end_matches('/');
                if valid_name(name) && !(ino == ROOT && name == volume::INTERNAL_DIR) {
                    listed.dirs.insert(name.to_string(), p.clone());
                }
            }
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let ListedDir { files, dirs } = &mut listed;
        dirs.retain(|name, _| !files.contains_key(name));

        let (found, to_head) = self.ns.plan_listing(ino, &listed);
        let heads: Vec<Option<(String, bool, Option<ObjectInfo>)>> = futures::stream::iter(to_head)
            .map(|(name, key, is_dir)| async move {
                match self.store.head(&key).await {
                    Ok(info) => Ok(Some((name, is_dir, Some(info)))),
                    Err(StoreError::NotFound { .. }) => Ok(Some((name, is_dir, None))),
                    // One object whose attributes do not verify costs
                    // that entry (its lookup answers EIO), never the listing.
                    Err(e @ StoreError::Tampered { .. }) => {
                        tracing::error!(error = %e, "not listed");
                        Ok(None)
                    }
                    Err(e) => Err(Error::from(e)),
                }
            })
            .buffer_unordered(LIST_HEAD_CONCURRENCY)
            .try_collect()
            .await?;

        // A listing with a refused entry is not complete: its lookup must ask S3.
        let refused = heads.iter().any(Option::is_none);
        let mut seen = Vec::new();
        for (name, is_dir, info) in heads.into_iter().flatten() {
            seen.push((
                name,
                match (is_dir, info) {
                    (false, Some(info)) => self.seen_object(&info),
                    // Deleted between the LIST and the HEAD: not listed.
                    (false, None) => continue,
                    (true, Some(info)) => {
                        let mut s = self.seen_object(&info);
                        s.attr.kind = Kind::Dir;
                        s
                    }
                    (true, None) => self.implicit_dir(),
                },
            ));
        }
        Ok(self
            .ns
            .merge_listing(ino, parent, &listed, found, seen, refused, started))
    }
}
