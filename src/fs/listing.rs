//! Directory listings: `readdir` from one LIST (per 1,000 entries) plus
//! the attributes of the entries the table cannot vouch for, from the
//! directory's attribute index or one HEAD each (`ObjectStore::head_listed`),
//! and how long a complete listing is trusted (the merge is the namespace's).

use super::namespace::ListedDir;
use super::{valid_name, DirEntry, Kind, SealFs, ROOT};
use crate::error::{Error, Result};
use crate::store::{ListEntry, ObjectInfo, StoreError, LISTED_HEAD_CONCURRENCY};
use crate::volume;
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Instant;

impl SealFs {
    /// The whole listing of a directory, "." and ".." first. Costs one LIST
    /// per 1,000 entries, plus for entries whose attributes are neither
    /// fresh nor vouched for by this LIST, one GET of the directory's
    /// attribute index and a HEAD for each entry it cannot answer; every
    /// entry lands in the inode cache, so `ls -l` after it costs nothing
    /// more.
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
                    listed.files.insert(name.to_string(), o);
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
        let listing: Vec<ListEntry> = listed.files.values().cloned().collect();
        let position: HashMap<&str, usize> = listed
            .files
            .keys()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let wanted: Vec<usize> = to_head.files.iter().map(|n| position[n.as_str()]).collect();
        let markers: Vec<String> = to_head.dirs.iter().map(|(_, p)| p.clone()).collect();
        let (files, dirs) = tokio::join!(
            self.store.head_listed(&prefix, &listing, &wanted),
            futures::stream::iter(markers)
                .map(|p| async move { self.store.head(&p).await })
                .buffered(LISTED_HEAD_CONCURRENCY)
                .collect::<Vec<_>>()
        );

        let mut seen = Vec::new();
        let mut refused = false;
        for (name, got) in to_head.files.into_iter().zip(files) {
            match keep(got)? {
                Kept::Yes(o) => seen.push((name, self.seen_observed(&o))),
                // Deleted between the LIST and the HEAD: not listed.
                Kept::Gone => {}
                Kept::Refused => refused = true,
            }
        }
        for ((name, _), got) in to_head.dirs.into_iter().zip(dirs) {
            match keep(got)? {
                Kept::Yes(info) => seen.push((name, self.marker_seen(&info))),
                Kept::Gone => seen.push((name, self.implicit_dir())),
                Kept::Refused => refused = true,
            }
        }
        // A listing with a refused entry is not complete: its lookup must ask S3.
        Ok(self
            .ns
            .merge_listing(ino, parent, &listed, found, seen, refused, started))
    }

    fn marker_seen(&self, info: &ObjectInfo) -> super::namespace::Seen {
        let mut s = self.seen_object(info);
        s.attr.kind = Kind::Dir;
        s
    }
}

/// What a listing does with one entry's attributes.
enum Kept<T> {
    Yes(T),
    /// Gone from S3 since the LIST.
    Gone,
    /// Attributes that do not verify: that entry is left out (its lookup
    /// answers EIO), never the whole listing.
    Refused,
}

fn keep<T>(got: std::result::Result<T, StoreError>) -> Result<Kept<T>> {
    match got {
        Ok(x) => Ok(Kept::Yes(x)),
        Err(StoreError::NotFound { .. }) => Ok(Kept::Gone),
        Err(e @ StoreError::Tampered { .. }) => {
            tracing::error!(error = %e, "not listed");
            Ok(Kept::Refused)
        }
        Err(e) => Err(Error::from(e)),
    }
}
