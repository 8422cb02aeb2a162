//! Directory listings: `readdir` from one LIST (per 1,000 entries) plus
//! parallel HEADs of the entries whose attributes are not fresh, and how
//! long a complete listing is trusted.

use super::{enoent, valid_name, DirEntry, Kind, SealFs, ROOT};
use crate::error::{Error, Result};
use crate::store::{ObjectInfo, StoreError};
use crate::volume;
use futures::{StreamExt, TryStreamExt};
use libc::ENOTDIR;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// HEADs in flight while listing a directory.
const LIST_HEAD_CONCURRENCY: usize = 64;

impl SealFs {
    /// The whole listing of a directory, "." and ".." first. Costs one LIST
    /// per 1,000 entries plus parallel HEADs for entries whose attributes are
    /// not fresh; every entry lands in the inode cache, so `ls -l` after it
    /// costs nothing more.
    pub async fn readdir(&self, ino: u64) -> Result<Vec<DirEntry>> {
        let started = Instant::now();
        let (path, parent) = {
            let t = self.table.lock();
            let i = t.get(ino).ok_or_else(|| enoent(&format!("inode {ino}")))?;
            if i.attr.kind != Kind::Dir {
                return Err(Error::posix(ENOTDIR, "not a directory"));
            }
            (t.path(ino).unwrap_or_default(), i.parent)
        };
        let prefix = self.dir_prefix(&path);
        let mut files: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut dirs: BTreeMap<String, String> = BTreeMap::new();
        let mut token = None;
        loop {
            let page = self
                .store
                .list(&prefix, Some("/"), token.as_deref())
                .await?;
            for o in page.objects {
                let name = &o.key[prefix.len()..];
                if valid_name(name) && !(ino == ROOT && name == volume::INTERNAL_DIR) {
                    files.insert(name.to_string(), (o.key.clone(), o.etag));
                }
            }
            for p in page.prefixes {
                let name = p[prefix.len()..].trim_end_matches('/');
                if valid_name(name) && !(ino == ROOT && name == volume::INTERNAL_DIR) {
                    dirs.insert(name.to_string(), p.clone());
                }
            }
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        dirs.retain(|name, _| !files.contains_key(name));

        // Which entries need a HEAD: unknown, changed, or stale. The inode
        // of every entry is noted as it is seen: a directory larger than
        // the table's cache evicts its own first entries while it is listed,
        // and the listing must still name them all.
        let mut to_head = Vec::new();
        let mut found: HashMap<String, (u64, Kind)> = HashMap::new();
        {
            let t = self.table.lock();
            for (name, (key, etag)) in &files {
                let known = t.child(ino, name).and_then(|c| Some((c, t.get(c)?)));
                match known {
                    Some((c, i))
                        if i.local()
                            || (i.etag.as_ref() == Some(etag) && self.fresh(i.validated)) =>
                    {
                        found.insert(name.clone(), (c, i.attr.kind));
                    }
                    _ => to_head.push((name.clone(), key.clone(), false)),
                }
            }
            for (name, p) in &dirs {
                let known = t.child(ino, name).and_then(|c| Some((c, t.get(c)?)));
                match known {
                    Some((c, i)) if i.attr.kind == Kind::Dir => {
                        found.insert(name.clone(), (c, Kind::Dir));
                    }
                    _ => to_head.push((name.clone(), p.clone(), true)),
                }
            }
        }
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

        let mut t = self.table.lock();
        // A listing with a refused entry is not complete: its lookup must ask S3.
        let refused = heads.iter().any(Option::is_none);
        for (name, is_dir, info) in heads.into_iter().flatten() {
            let seen = match (is_dir, info) {
                (false, Some(info)) => self.seen_object(&info),
                // Deleted between the LIST and the HEAD: not listed.
                (false, None) => continue,
                (true, Some(info)) => {
                    let mut s = self.seen_object(&info);
                    s.attr.kind = Kind::Dir;
                    s
                }
                (true, None) => self.implicit_dir(),
            };
            let kind = seen.attr.kind;
            let c = t.upsert(ino, &name, seen);
            found.insert(name, (c, kind));
        }
        let mut out = vec![
            DirEntry {
                ino,
                name: ".".into(),
                kind: Kind::Dir,
            },
            DirEntry {
                ino: parent,
                name: "..".into(),
                kind: Kind::Dir,
            },
        ];
        for name in files.keys().chain(dirs.keys()) {
            if let Some(&(c, kind)) = found.get(name) {
                out.push(DirEntry {
                    ino: c,
                    name: name.clone(),
                    kind,
                });
            }
        }
        for (name, c, kind) in t.local_children(ino) {
            if !files.contains_key(&name) && !dirs.contains_key(&name) {
                out.push(DirEntry { ino: c, name, kind });
            }
        }
        // Entries that vanished remotely are dropped from the cache (not
        // those created or confirmed since the LIST began: it cannot know them).
        for (name, c) in t.children_of(ino) {
            let remote_gone = t
                .get(c)
                .is_some_and(|i| i.remote && !i.local() && i.validated < started);
            if remote_gone && !files.contains_key(&name) && !dirs.contains_key(&name) {
                t.unlink(ino, &name);
            }
        }
        // Trusted as complete only if every name is in the table still.
        let complete = !refused && found.keys().all(|n| t.child(ino, n).is_some());
        drop(t);
        if complete {
            self.mark_listed(ino, started.elapsed());
        }
        self.names.remember(
            ino,
            files.keys().chain(dirs.keys()).cloned().collect(),
            self.settings.metadata_ttl,
        );
        Ok(out)
    }

    /// A complete listing of `dir` that took `took` to make is trusted for
    /// the metadata TTL, or for as long as it took when that is longer: a
    /// listing of 10,000 entries is seconds old by its end anyway, and the
    /// `lstat` of every entry that `ls -l` makes next must not send each one
    /// back to S3 (the staleness bound becomes twice the listing's time).
    /// With a TTL of 0 nothing is trusted.
    pub(super) fn mark_listed(&self, dir: u64, took: Duration) {
        let ttl = self.settings.metadata_ttl;
        // TTL 0 asks S3 every time, as configured.
        let until = Instant::now() + if ttl.is_zero() { ttl } else { ttl.max(took) };
        self.table.lock().set_listed(dir, until);
    }
}
