//! Staged data that outlived its mount (a crash, a kill -9, an upload that
//! kept failing) is never lost: each staging file with unsaved changes has a
//! journal beside it (`<staging file>.json`: the object key and the ETag the
//! change was made on), and [`SealFs::recover_staged`] uploads it at the next
//! mount, or periodically while S3 was away.
//!
//! Recovery uploads the content as the file's next version when the object
//! is still the one the change was based on (or still absent, for a new
//! file); otherwise, someone else wrote the file since, so the content is
//! kept beside it as a conflict copy. Either way it is logged.

use super::attr::{Attr, Kind};
use super::journal::{journal_path, other_live_process, read_journal, Journal};
use super::SealFs;
use crate::error::{Error, Result};
use crate::local::EncryptedFile;
use crate::sealed::{SealMeta, WriteKey};
use crate::store::{Metadata, PutCondition, StoreError};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What recovery did with one staging file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// Uploaded as the file's next version.
    Uploaded { key: String },
    /// The file changed since: kept beside it under this key.
    ConflictCopy { key: String, copy: String },
}

impl SealFs {
    /// Uploads staged data left by an earlier mount (or by uploads of this
    /// one that failed after their file was closed). Files that cannot be
    /// uploaded now stay staged for the next attempt.
    pub async fn recover_staged(&self) -> Vec<Recovered> {
        let mut done = Vec::new();
        let Ok(dir) = std::fs::read_dir(&self.settings.cache_dir) else {
            return done;
        };
        let entries: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        self.remove_clean_leftovers(&entries);
        let journals: Vec<PathBuf> = entries
            .into_iter()
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("staged-"))
            })
            .collect();
        for jpath in journals {
            let staged = jpath.with_extension("");
            if self.live_staged.lock().contains(&staged) {
                continue;
            }
            let journal = match read_journal(&self.local, &jpath) {
                Some(j) => j,
                None => {
                    tracing::warn!(journal = %jpath.display(), "unreadable recovery journal left alone");
                    continue;
                }
            };
            if other_live_process(journal.pid) {
                continue;
            }
            if !self.in_volume(&journal.key) {
                tracing::error!(journal = %jpath.display(), key = %journal.key, "staging journal names a key outside this volume; left alone");
                continue;
            }
            if !staged.exists() {
                let _ = std::fs::remove_file(&jpath);
                continue;
            }
            match self.recover_one(&staged, &journal).await {
                Ok(r) => {
                    self.activity
                        .recovered(matches!(r, Recovered::ConflictCopy { .. }));
                    match &r {
                        Recovered::Uploaded { key } => tracing::warn!(
                            key = %key, "recovered staged changes (left by a crash or a failed upload): uploaded"
                        ),
                        Recovered::ConflictCopy { key, copy } => tracing::warn!(
                            key = %key, copy = %copy,
                            "recovered staged changes (left by a crash or a failed upload): the file changed since, so they were kept as a conflict copy"
                        ),
                    }
                    let _ = std::fs::remove_file(&staged);
                    let _ = std::fs::remove_file(&jpath);
                    done.push(r);
                }
                Err(e) => tracing::error!(
                    key = %journal.key, staged = %staged.display(),
                    "staged changes not recovered yet (kept for the next attempt): {e}"
                ),
            }
        }
        if !done.is_empty() {
            self.ns.invalidate_all();
        }
        done
    }

    /// Staging files without a journal held no unsaved change; those left
    /// by a process that is gone are just removed.
    fn remove_clean_leftovers(&self, entries: &[PathBuf]) {
        for p in entries {
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(pid) = name
                .strip_prefix("staged-")
                .filter(|_| p.extension().is_none())
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if journal_path(p).exists()
                || self.live_staged.lock().contains(p)
                || other_live_process(pid)
            {
                continue;
            }
            if std::fs::remove_file(p).is_ok() {
                tracing::debug!(path = %p.display(), "removed a clean staging file left by an earlier mount");
            }
        }
    }

    async fn recover_one(&self, staged: &Path, j: &Journal) -> Result<Recovered> {
        let file = EncryptedFile::open(staged, &self.local)
            .map_err(|e| Error::io("opening staged file", e))?;
        let size = file
            .len()
            .map_err(|e| Error::io("reading staged file", e))?;
        let current = match self.store.head(&j.key).await {
            Ok(info) => Some(info),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let d = &self.settings.defaults;
        let fresh_attr = || {
            let mut a = Attr::new(Kind::File, d.file_mode, d.uid, d.gid);
            a.size = size;
            a.metadata()
        };
        let in_place = match (&current, &j.base_etag) {
            (Some(info), Some(base)) if info.etag == *base => {
                // Only a sealed version can lend its key (if it verifies).
                SealMeta::read_from(&info.metadata).ok().map(|_| {
                    let mut m = Attr::from_object(info, size, d);
                    m.size = size;
                    m.mtime = SystemTime::now();
                    (Some(info.etag.clone()), m.metadata())
                })
            }
            (None, None) => Some((None, fresh_attr())),
            _ => None,
        };
        if let Some((base, meta)) = in_place {
            let condition = base
                .clone()
                .map_or(PutCondition::IfNoneMatch, PutCondition::IfMatch);
            let wk = self
                .sealed
                .key_for_version(&j.key, base.as_deref(), condition)
                .await?;
            match self.upload_file(&file, &j.key, size, &meta, &wk).await {
                Ok(()) => return Ok(Recovered::Uploaded { key: j.key.clone() }),
                Err(Error::Store(StoreError::PreconditionFailed { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        let copy = super::upload::conflict_name(&j.key);
        let wk = self.sealed.new_key().await?;
        self.upload_file(&file, &copy, size, &fresh_attr(), &wk)
            .await?;
        Ok(Recovered::ConflictCopy {
            key: j.key.clone(),
            copy,
        })
    }

    async fn upload_file(
        &self,
        file: &EncryptedFile,
        key: &str,
        size: u64,
        meta: &Metadata,
        wk: &WriteKey,
    ) -> Result<()> {
        let mut f = file
            .reader(size)
            .map_err(|e| Error::io("reading staged file", e))?;
        self.sealed
            .write(key, &mut f, size, meta, wk, &|_| {})
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::journal::STAGING_JOURNAL;
    use crate::fs::tests::{rig, rig_same_store, rig_with_cache};
    use crate::fs::ROOT;

    /// A mount that dies with a file open and changed: the next one uploads it.
    #[tokio::test]
    async fn changes_left_by_a_dead_mount_are_uploaded() {
        let r = rig();
        let (e, fh) = r.fs.create(ROOT, "new", 0o644, 0, 0).await.unwrap();
        r.fs.write(fh, 0, b"never closed").await.unwrap();
        let a = r.write_file(ROOT, "old", b"v1").await;
        let fh2 = r.fs.open(a, libc::O_WRONLY).await.unwrap();
        r.fs.write(fh2, 0, b"v2").await.unwrap();
        // The "crash": this mount's state is gone, its staging area is not.
        r.fs.live_staged.lock().clear();
        let next = rig_with_cache(&r, r.fs.settings.cache_dir.clone());
        let mut done = next.recover_staged().await;
        done.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        assert_eq!(
            done,
            vec![
                Recovered::Uploaded {
                    key: "vol/new".into()
                },
                Recovered::Uploaded {
                    key: "vol/old".into()
                },
            ]
        );
        let n = next.lookup(ROOT, "new").await.unwrap();
        let o = next.lookup(ROOT, "old").await.unwrap();
        assert_eq!(n.attr.size, 12);
        let fh = next.open(o.ino, libc::O_RDONLY).await.unwrap();
        assert_eq!(&next.read(fh, 0, 10).await.unwrap()[..], b"v2");
        assert!(next.recover_staged().await.is_empty(), "nothing twice");
        let _ = (e, fh);
    }

    #[tokio::test]
    async fn changes_to_a_file_that_moved_on_become_a_conflict_copy() {
        let r = rig();
        let a = r.write_file(ROOT, "f", b"base").await;
        let fh = r.fs.open(a, libc::O_WRONLY).await.unwrap();
        r.fs.write(fh, 0, b"mine").await.unwrap();
        r.fs.live_staged.lock().clear();
        // Someone else writes the file before the crashed mount comes back.
        let other = rig_same_store(&r);
        let o = other.lookup(ROOT, "f").await.unwrap();
        let fh2 = other
            .open(o.ino, libc::O_WRONLY | libc::O_TRUNC)
            .await
            .unwrap();
        other.write(fh2, 0, b"theirs").await.unwrap();
        other.release(fh2).await.unwrap();
        let next = rig_with_cache(&r, r.fs.settings.cache_dir.clone());
        let done = next.recover_staged().await;
        let [Recovered::ConflictCopy { key, copy }] = done.as_slice() else {
            panic!("{done:?}");
        };
        assert_eq!(key, "vol/f");
        let names = crate::store::list_all(&r.mem, "vol/").await.unwrap();
        assert!(names.iter().any(|e| &e.key == copy));
        let f = next.lookup(ROOT, "f").await.unwrap();
        let fh = next.open(f.ino, libc::O_RDONLY).await.unwrap();
        assert_eq!(&next.read(fh, 0, 10).await.unwrap()[..], b"theirs");
    }

    /// A journal planted in the cache directory that names a key outside
    /// this volume is never replayed there.
    #[tokio::test]
    async fn a_journal_for_another_prefix_is_never_replayed() {
        let r = rig();
        let dir = &r.fs.settings.cache_dir;
        for (n, key) in ["elsewhere/x", "vol/.sealfs/volume.json", "vol"]
            .iter()
            .enumerate()
        {
            let staged = dir.join(format!("staged-{}-{n:016x}", 1u32 << 30));
            std::fs::write(&staged, b"planted").unwrap();
            let j = Journal {
                key: key.to_string(),
                base_etag: None,
                pid: 1 << 30,
            };
            r.fs.local
                .write_record(&journal_path(&staged), STAGING_JOURNAL, &j, false)
                .unwrap();
        }
        assert!(r.fs.recover_staged().await.is_empty());
        for key in ["elsewhere/x", "vol/.sealfs/volume.json", "vol"] {
            assert!(r.mem.raw(key).is_none(), "{key} was written");
        }
    }
}
