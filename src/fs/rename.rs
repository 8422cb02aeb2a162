//! Renames. S3 has no rename: a file is copied to its new key (re-bound
//! to it, see `SealedStore::rebind_copy`) and the old key deleted; a
//! directory is every object under it, moved one by one.
//!
//! A directory rename is made crash-safe by a journal: before the first
//! copy, the list of moves is written to `<cache dir>/renames/`; the journal
//! goes once every object is under its new name and grants have followed.
//! A rename interrupted by a crash (or by S3 failing half-way) is finished
//! by [`SealFs::recover_renames`] at the next mount and on the periodic
//! retry: every object ends up under the new name only, with a log line.

use super::attr;
use super::journal::{other_live_process, RENAME_JOURNAL};
use super::{Kind, SealFs};
use crate::error::{Error, Result};
use crate::sealed::SealMeta;
use crate::store::{ObjectInfo, PutCondition, StoreError};
use futures::{StreamExt, TryStreamExt};
use libc::{EEXIST, EINVAL, EISDIR, ENOENT, ENOTDIR, ENOTEMPTY};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::SystemTime;

/// Copies and deletes in flight during a directory rename.
const RENAME_CONCURRENCY: usize = 8;

/// The intent of one directory rename, written before anything moves.
#[derive(Serialize, Deserialize, Debug)]
struct RenameJournal {
    /// (old key, new key) of every object under the directory.
    moves: Vec<(String, String)>,
    pid: u32,
}

/// What finishing an interrupted rename did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenameFinished {
    pub from: String,
    pub to: String,
    /// Objects moved by the recovery (the rest had moved before the crash).
    pub moved: usize,
    /// Objects left at their old key because the new key holds another object.
    pub kept: usize,
}

impl SealFs {
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        noreplace: bool,
    ) -> Result<()> {
        self.check_writable()?;
        let src = self.resolve(parent, name).await?;
        // Both names must be in S3 as they are here before the copy.
        if src.attr.kind == Kind::Dir {
            self.drain_spool().await?;
        } else {
            self.settle(src.ino).await?;
            self.settle_child(new_parent, new_name).await?;
        }
        let new_path = self.check_new_name(new_parent, new_name)?;
        let old_path = self.child_path(parent, name)?;
        if old_path == new_path {
            return Ok(());
        }
        if src.attr.kind == Kind::Dir && (new_path.starts_with(&format!("{old_path}/"))) {
            return Err(Error::posix(EINVAL, "cannot move a directory into itself"));
        }
        match self.resolve(new_parent, new_name).await {
            Ok(dst) => {
                if noreplace {
                    return Err(Error::posix(EEXIST, format!("{new_name}: file exists")));
                }
                match (src.attr.kind == Kind::Dir, dst.attr.kind == Kind::Dir) {
                    (true, false) => {
                        return Err(Error::posix(
                            ENOTDIR,
                            format!("{new_name}: not a directory"),
                        ))
                    }
                    (false, true) => {
                        return Err(Error::posix(EISDIR, format!("{new_name}: is a directory")))
                    }
                    (true, true) => {
                        if !self.dir_is_empty(dst.ino, &new_path).await? {
                            return Err(Error::posix(
                                ENOTEMPTY,
                                format!("{new_name}: directory not empty"),
                            ));
                        }
                        self.rmdir(new_parent, new_name).await?;
                    }
                    (false, false) => {
                        // Readers of the file being replaced keep reading
                        // the version they opened, never the one moved in.
                        self.pin_readers(dst.ino, &self.key_of(&new_path)).await;
                        // The replaced file is gone: so are its grants
                        // (before the copy, so the moved grants survive).
                        let fid = self.ns.facts(dst.ino)?.file_id;
                        self.grants_removed(&[(self.key_of(&new_path), fid)]).await;
                        // The replaced inode loses its name now, before the
                        // copy lands: from then on its path names the new
                        // object, whose attributes must never become its own
                        // (open descriptors would see another size).
                        self.ns.unlink(new_parent, new_name);
                    }
                }
            }
            Err(e) if e.errno() == ENOENT => {}
            Err(e) => return Err(e),
        }
        if src.attr.kind == Kind::Dir {
            self.rename_tree(&old_path, &new_path).await?;
        } else {
            self.rename_file(src.ino, &old_path, &new_path).await?;
        }
        self.ns.rename(parent, name, new_parent, new_name);
        self.ns.touch_dir(parent);
        self.ns.touch_dir(new_parent);
        Ok(())
    }

    async fn rename_file(&self, ino: u64, old_path: &str, new_path: &str) -> Result<()> {
        let super::namespace::Facts { remote, staged, .. } = self.ns.facts(ino)?;
        if !remote {
            return Ok(());
        }
        let (from, to) = (self.key_of(old_path), self.key_of(new_path));
        let ctime = attr::format_now();
        // Hold the staged state (if the file is open for writing) so that no
        // upload of it can slip in between reading the header and the copy.
        let mut guard = match &staged {
            Some(s) => Some(s.lock().await),
            None => None,
        };
        let etag = self.copy_object(&from, &to, Some(ctime)).await?;
        self.store.delete(&from).await?;
        self.grants_moved(&[(from.clone(), to.clone())]).await;
        if let Some(g) = guard.as_mut() {
            g.moved(to.clone(), etag.clone());
        }
        drop(guard);
        self.ns.file_moved(ino, etag);
        Ok(())
    }

    /// Copies one object for a rename: sealed objects are re-bound to the new
    /// key; markers and foreign objects are copied with their metadata as is.
    async fn copy_object(&self, from: &str, to: &str, ctime: Option<String>) -> Result<String> {
        if !from.ends_with('/') {
            match self
                .sealed
                .rebind_copy(from, to, &PutCondition::None, |m| {
                    if let Some(c) = ctime.clone() {
                        m.insert(attr::CTIME.into(), c);
                    }
                })
                .await
            {
                Err(Error::NotSealfs { .. }) => {}
                other => return other,
            }
        }
        let info = self.store.head(from).await?;
        Ok(self
            .store
            .copy(
                from,
                to,
                Some(&info.etag),
                &info.metadata,
                &PutCondition::None,
            )
            .await?)
    }

    fn renames_dir(&self) -> PathBuf {
        self.settings.cache_dir.join("renames")
    }

    /// Renames a directory: journals every move, copies every object under
    /// it, deletes the originals, moves the grants, then drops the journal.
    async fn rename_tree(&self, old_path: &str, new_path: &str) -> Result<()> {
        let from_prefix = format!("{}/", self.key_of(old_path));
        let to_prefix = format!("{}/", self.key_of(new_path));
        let moves: Vec<(String, String)> =
            crate::store::list_all(self.store.as_ref(), &from_prefix)
                .await?
                .into_iter()
                .map(|o| {
                    let to = format!("{to_prefix}{}", &o.key[from_prefix.len()..]);
                    (o.key, to)
                })
                .collect();
        let dir = self.renames_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io("creating the rename journal directory", e))?;
        let journal = dir.join(format!(
            "rename-{}-{}.json",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        let j = RenameJournal {
            moves,
            pid: std::process::id(),
        };
        self.local
            .write_record(&journal, RENAME_JOURNAL, &j, true)
            .map_err(|e| Error::io("writing the rename journal", e))?;
        self.renames_live.lock().insert(journal.clone());
        let done = self.apply_moves(&j.moves).await;
        self.renames_live.lock().remove(&journal);
        done?;
        let _ = std::fs::remove_file(&journal);
        Ok(())
    }

    /// Copies every move whose source is still there and whose destination
    /// is not, deletes the sources, and moves the grants. Idempotent: after
    /// a crash at any point, running it again finishes the rename.
    /// Returns (objects moved now, objects kept at their old key).
    async fn apply_moves(&self, moves: &[(String, String)]) -> Result<(usize, usize)> {
        let results: Vec<(bool, bool)> = futures::stream::iter(moves.iter().cloned())
            .map(|(from, to)| async move { self.move_one(&from, &to).await })
            .buffer_unordered(RENAME_CONCURRENCY)
            .try_collect()
            .await?;
        self.grants_moved(moves).await;
        let moved = results.iter().filter(|(m, _)| *m).count();
        let kept = results.iter().filter(|(_, k)| *k).count();
        Ok((moved, kept))
    }

    /// One object of a directory rename: (moved now, kept at the old key).
    async fn move_one(&self, from: &str, to: &str) -> Result<(bool, bool)> {
        let src = match self.store.head(from).await {
            Ok(info) => info,
            // Moved (copied and deleted) before.
            Err(StoreError::NotFound { .. }) => return Ok((false, false)),
            Err(e) => return Err(e.into()),
        };
        match self.store.head(to).await {
            Ok(dst) if same_object(&src, &dst) => {}
            Ok(_) => {
                // Something else was written at the new name since (by
                // another mount): the old object is kept, never lost.
                tracing::warn!(
                    from,
                    to,
                    "rename: the new name holds another object; the old one is kept at its name"
                );
                return Ok((false, true));
            }
            Err(StoreError::NotFound { .. }) => {
                self.copy_object(from, to, None).await?;
            }
            Err(e) => return Err(e.into()),
        }
        match self.store.delete(from).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok((true, false)),
            Err(e) => Err(e.into()),
        }
    }

    /// Finishes directory renames that a crash (or failing S3) interrupted,
    /// from their journals. Renames of a process still running are left to it.
    pub async fn recover_renames(&self) -> Vec<RenameFinished> {
        let mut done = Vec::new();
        let Ok(dir) = std::fs::read_dir(self.renames_dir()) else {
            return done;
        };
        let mut journals: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        journals.sort();
        for path in journals {
            if self.renames_live.lock().contains(&path) {
                continue;
            }
            let Some(j) = self
                .local
                .read_record::<RenameJournal>(&path, RENAME_JOURNAL)
            else {
                tracing::warn!(journal = %path.display(), "unreadable rename journal left alone");
                continue;
            };
            if other_live_process(j.pid) {
                continue;
            }
            let outside = j
                .moves
                .iter()
                .any(|(f, t)| !self.in_volume(f) || !self.in_volume(t));
            if outside {
                tracing::error!(journal = %path.display(), "rename journal names keys outside this volume; left alone");
                continue;
            }
            let (from, to) = span(&j.moves);
            match self.apply_moves(&j.moves).await {
                Ok((moved, kept)) => {
                    tracing::warn!(
                        from = %from, to = %to, moved, kept,
                        "finished a directory rename that was interrupted (by a crash or by S3 failing)"
                    );
                    let _ = std::fs::remove_file(&path);
                    done.push(RenameFinished {
                        from,
                        to,
                        moved,
                        kept,
                    });
                }
                Err(e) => {
                    tracing::error!(from = %from, to = %to, "interrupted directory rename not finished yet (retried later): {e}")
                }
            }
        }
        if !done.is_empty() {
            self.ns.invalidate_all();
        }
        done
    }
}

/// The directories a journal moves from and to (their common prefixes).
fn span(moves: &[(String, String)]) -> (String, String) {
    fn common(keys: impl Iterator<Item = String>) -> String {
        let mut it = keys;
        let Some(first) = it.next() else {
            return String::new();
        };
        let mut p = first;
        for k in it {
            let n = p.bytes().zip(k.bytes()).take_while(|(a, b)| a == b).count();
            p.truncate(n);
        }
        while !p.is_empty() && !p.ends_with('/') {
            p.pop();
        }
        p
    }
    (
        common(moves.iter().map(|m| m.0.clone())),
        common(moves.iter().map(|m| m.1.clone())),
    )
}

/// Whether `dst` is the copy of `src` a rename made: a copy keeps the size
/// and, for sealed objects, the sealing header (the same file id and
/// wrapped key); other objects (markers, special files) keep their metadata.
fn same_object(src: &ObjectInfo, dst: &ObjectInfo) -> bool {
    if src.size != dst.size {
        return false;
    }
    match (
        SealMeta::read_from(&src.metadata),
        SealMeta::read_from(&dst.metadata),
    ) {
        (Ok(a), Ok(b)) => a.key.same_key(&b.key),
        (Err(_), Err(_)) => src.metadata == dst.metadata,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::fault_tests::faulty_rig;
    use crate::fs::tests::rig_with_cache;
    use crate::fs::ROOT;
    use crate::store::ObjectStore;

    fn content(i: usize) -> Vec<u8> {
        format!("file {i} ").repeat(50 + i).into_bytes()
    }

    /// A directory rename cut short at several points (S3 failing half-way
    /// leaves the same state as a kill -9 there): the next mount finishes
    /// it from the journal, and every object ends up under the new name only.
    #[tokio::test]
    async fn an_interrupted_directory_rename_is_finished_by_the_next_mount() {
        // 21 objects: two markers and 19 files.
        for (op, pass) in [
            ("copy", 0),
            ("copy", 7),
            ("copy", 20),
            ("delete", 0),
            ("delete", 9),
            ("delete", 20),
        ] {
            let (r, faults) = faulty_rig();
            let d = r.fs.mkdir(ROOT, "d", 0o755, 0, 0).await.unwrap().ino;
            let sub = r.fs.mkdir(d, "sub", 0o755, 0, 0).await.unwrap().ino;
            for i in 0..15 {
                r.write_file(d, &format!("f{i}"), &content(i)).await;
            }
            for i in 15..19 {
                r.write_file(sub, &format!("f{i}"), &content(i)).await;
            }
            faults.fail_after(op, pass, 100_000);
            let err = r.fs.rename(ROOT, "d", ROOT, "e", false).await.unwrap_err();
            assert_eq!(err.errno(), libc::EIO, "{op} {pass}");
            faults.heal();
            let next = rig_with_cache(&r, r.fs.settings.cache_dir.clone());
            let done = next.recover_renames().await;
            assert_eq!(done.len(), 1, "{op} {pass}: {done:?}");
            assert_eq!(
                (done[0].from.as_str(), done[0].to.as_str()),
                ("vol/d/", "vol/e/")
            );
            assert_eq!(done[0].kept, 0);
            let keys = r.mem.keys();
            assert!(
                !keys.iter().any(|k| k.starts_with("vol/d/")),
                "{op} {pass}: left behind: {keys:?}"
            );
            assert_eq!(
                keys.iter().filter(|k| k.starts_with("vol/e/")).count(),
                21,
                "{op} {pass}: {keys:?}"
            );
            let e = next.lookup(ROOT, "e").await.unwrap().ino;
            let s = next.lookup(e, "sub").await.unwrap().ino;
            for i in 0..19 {
                let dir = if i < 15 { e } else { s };
                let f = next.lookup(dir, &format!("f{i}")).await.unwrap().ino;
                let fh = next.open(f, libc::O_RDONLY).await.unwrap();
                let got = next.read(fh, 0, 1 << 20).await.unwrap();
                assert_eq!(&got[..], &content(i)[..], "{op} {pass}: f{i}");
                next.release(fh).await.unwrap();
            }
            assert!(next.recover_renames().await.is_empty(), "nothing twice");
        }
    }

    /// A completed rename leaves no journal behind.
    #[tokio::test]
    async fn a_completed_rename_leaves_no_journal() {
        let (r, _) = faulty_rig();
        let d = r.fs.mkdir(ROOT, "d", 0o755, 0, 0).await.unwrap().ino;
        r.write_file(d, "f", b"x").await;
        r.fs.rename(ROOT, "d", ROOT, "e", false).await.unwrap();
        let left = std::fs::read_dir(r.fs.renames_dir()).unwrap().count();
        assert_eq!(left, 0);
        assert!(r.fs.recover_renames().await.is_empty());
    }

    /// A journal that names keys outside the volume is never acted on.
    #[tokio::test]
    async fn a_journal_outside_the_volume_is_refused() {
        let (r, _) = faulty_rig();
        r.mem
            .put(
                "elsewhere/x",
                bytes::Bytes::from_static(b"x"),
                &Default::default(),
                &PutCondition::None,
            )
            .await
            .unwrap();
        let dir = r.fs.renames_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let j = RenameJournal {
            moves: vec![("elsewhere/x".into(), "vol/x".into())],
            pid: 1 << 30,
        };
        r.fs.local
            .write_record(&dir.join("rename-planted.json"), RENAME_JOURNAL, &j, false)
            .unwrap();
        assert!(r.fs.recover_renames().await.is_empty());
        assert!(r.mem.raw("elsewhere/x").is_some());
        assert!(r.mem.raw("vol/x").is_none());
    }

    /// Another mount wrote the new name meanwhile: the old object is kept.
    #[tokio::test]
    async fn an_object_at_the_new_name_is_never_overwritten_by_recovery() {
        let (r, faults) = faulty_rig();
        let d = r.fs.mkdir(ROOT, "d", 0o755, 0, 0).await.unwrap().ino;
        r.write_file(d, "f", b"old content").await;
        faults.fail_after("copy", 0, 100_000);
        assert!(r.fs.rename(ROOT, "d", ROOT, "e", false).await.is_err());
        faults.heal();
        let e = r.fs.mkdir(ROOT, "e", 0o755, 0, 0).await.unwrap().ino;
        r.write_file(e, "f", b"another").await;
        let next = rig_with_cache(&r, r.fs.settings.cache_dir.clone());
        let done = next.recover_renames().await;
        // The file, and the directory marker (e's is mkdir's own).
        assert_eq!(done[0].kept, 2, "{done:?}");
        assert!(r.mem.raw("vol/d/f").is_some(), "kept, never lost");
    }
}
