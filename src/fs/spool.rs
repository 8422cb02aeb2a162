//! `--write-back`: close returns once the file is sealed into its final
//! object bytes in a local spool, and uploads run in the background, several
//! at once.
//!
//! What stays true: the spool holds ciphertext only (exactly the object that
//! will be uploaded, with its metadata beside it in `<id>.json`); fsync waits
//! for S3 (it settles the file's pending upload, then uploads anything still
//! staged); unmount drains the spool; a crash leaves spool entries that the
//! next mount uploads, or keeps as a conflict copy when the file changed in
//! S3 since. Anything that needs the object in S3 (opening the file again,
//! rename, unlink, attribute changes, sharing) first waits for its pending
//! upload, so nothing ever sees a half-state.
//!
//! What is weaker than the default: a close no longer reports upload errors
//! (they are logged, and fsync or the next open of the file reports EIO
//! while the upload cannot be made), and the spool is not fsynced, so it
//! survives a crash of sealfs but not necessarily a power cut.

use super::journal::{other_live_process, SPOOL_ENTRY};
use super::staged::{Staged, StagedInner};
use super::{FsSettings, SealFs};
use crate::error::{Error, Result};
use crate::sealed::SealedStore;
use crate::store::{Metadata, PutCondition, StoreError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// How a background upload ended: `Err` carries the message fsync reports.
type Outcome = std::result::Result<(), String>;

/// An inode's pending upload: its object key, and the outcome once known.
type Pending = (String, watch::Receiver<Option<Outcome>>);

pub(super) struct Spool {
    dir: PathBuf,
    slots: Arc<Semaphore>,
    /// Inodes with an upload in the spool: the object key and the outcome
    /// once known. Failed ones stay until recovery uploads them.
    pending: Mutex<HashMap<u64, Pending>>,
    /// Spool entries a task of this process is uploading.
    live: Mutex<HashSet<PathBuf>>,
}

#[derive(Serialize, Deserialize)]
struct EntryMeta {
    key: String,
    base_etag: Option<String>,
    metadata: Metadata,
    pid: u32,
}

/// What uploading one entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spooled {
    Uploaded {
        key: String,
        etag: String,
    },
    /// The file changed in S3 since it was opened: kept under `copy`.
    ConflictCopy {
        key: String,
        copy: String,
    },
}

fn meta_path(obj: &Path) -> PathBuf {
    obj.with_extension("json")
}

impl Spool {
    pub(super) fn new(settings: &FsSettings) -> Result<Arc<Self>> {
        let dir = settings.cache_dir.join("spool");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating spool dir {}", dir.display()), e))?;
        Ok(Arc::new(Spool {
            dir,
            slots: Arc::new(Semaphore::new(settings.write_back_uploads.max(1))),
            pending: Mutex::new(HashMap::new()),
            live: Mutex::new(HashSet::new()),
        }))
    }

    /// Uploads `obj` (with the metadata beside it); on a lost conflict, the
    /// same bytes re-bound to a conflict name beside the file.
    async fn upload_entry(sealed: &SealedStore, obj: &Path, m: &EntryMeta) -> Result<Spooled> {
        let file = Arc::new(
            std::fs::File::open(obj).map_err(|e| Error::io("opening a spooled object", e))?,
        );
        let cond = match &m.base_etag {
            Some(e) => PutCondition::IfMatch(e.clone()),
            None => PutCondition::IfNoneMatch,
        };
        match sealed
            .upload_sealed_file(&m.key, file.clone(), &m.metadata, &cond)
            .await
        {
            Ok(etag) => Ok(Spooled::Uploaded {
                key: m.key.clone(),
                etag,
            }),
            Err(Error::Store(StoreError::PreconditionFailed { .. })) => {
                let copy = super::upload::conflict_name(&m.key);
                let mut header = vec![0u8; crate::crypto::HEADER_LEN];
                file.read_exact_at(&mut header, 0)
                    .map_err(|e| Error::io("reading a spooled object", e))?;
                let meta = sealed.rebind_metadata(&header, &m.metadata, &copy).await?;
                sealed
                    .upload_sealed_file(&copy, file, &meta, &PutCondition::IfNoneMatch)
                    .await?;
                Ok(Spooled::ConflictCopy {
                    key: m.key.clone(),
                    copy,
                })
            }
            Err(e) => Err(e),
        }
    }

    fn remove(obj: &Path) {
        let _ = std::fs::remove_file(meta_path(obj));
        let _ = std::fs::remove_file(obj);
    }
}

impl SealFs {
    /// `{"pending_uploads", "failed_uploads", "bytes"}`: uploads waiting in
    /// the spool (and those that failed, retried every 20 s), and what the
    /// spool holds on disk.
    pub(super) fn spool_snapshot(&self) -> serde_json::Value {
        let (mut waiting, mut failed) = (0u64, 0u64);
        for (_, rx) in self.spool.pending.lock().values() {
            match &*rx.borrow() {
                None => waiting += 1,
                Some(Err(_)) => failed += 1,
                Some(Ok(())) => {}
            }
        }
        let bytes: u64 = std::fs::read_dir(&self.spool.dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        serde_json::json!({"pending_uploads": waiting, "failed_uploads": failed, "bytes": bytes})
    }

    /// Whether `flush` should spool this file rather than upload it: the
    /// mount writes back, this is the file's only writer, and no streamed
    /// upload already carries most of it.
    pub(super) fn spools(&self, ino: u64, s: &StagedInner) -> bool {
        self.settings.write_back
            && s.is_dirty()
            && s.stream().is_none()
            && self.ns.writers(ino) <= 1
    }

    /// Seals the staged content into the spool and starts its upload.
    pub(super) async fn spool_staged(&self, ino: u64, s: &mut StagedInner) -> Result<()> {
        let (path, mut attr) = self.ns.path_and_attr(ino)?;
        attr.size = s.size();
        let key = self.key_of(&path);
        let wk = self
            .sealed
            .key_for_version(&key, s.sealed_base(), PutCondition::None)
            .await?;
        let obj = self.spool.dir.join(format!(
            "{}-{:016x}.obj",
            std::process::id(),
            rand::random::<u64>()
        ));
        // Claimed before it exists, so the periodic recovery never takes an
        // entry this task is about to upload.
        self.spool.live.lock().insert(obj.clone());
        let unclaim = |obj: &Path| {
            let _ = std::fs::remove_file(obj);
            self.spool.live.lock().remove(obj);
        };
        let dst = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&obj)
        {
            Ok(f) => f,
            Err(e) => {
                unclaim(&obj);
                return Err(Error::io("creating a spool file", e));
            }
        };
        let src: Box<dyn crate::sealed::PlainSource> = match s.file().try_clone() {
            Ok(f) => Box::new(f),
            Err(e) => {
                unclaim(&obj);
                return Err(Error::io("staging", e));
            }
        };
        let sealed = self
            .sealed
            .seal_to_file(&key, src, s.size(), dst, &attr.metadata(), &wk)
            .await;
        let metadata = match sealed {
            Ok(m) => m,
            Err(e) => {
                unclaim(&obj);
                return Err(e);
            }
        };
        let m = EntryMeta {
            key: key.clone(),
            base_etag: s.base_etag().map(str::to_string),
            metadata,
            pid: std::process::id(),
        };
        if let Err(e) = self
            .local
            .write_record(&meta_path(&obj), SPOOL_ENTRY, &m, false)
        {
            unclaim(&obj);
            return Err(Error::io("writing a spool entry", e));
        }
        // The content is in the spool now: the staged copy is not needed
        // for recovery any more.
        s.spooled(wk.key_ref.clone());
        self.ns.mark_pending(ino, wk.key_ref.clone(), s.size());
        let (tx, rx) = watch::channel(None);
        self.spool.pending.lock().insert(ino, (key.clone(), rx));
        let (spool, sealed, ns) = (self.spool.clone(), self.sealed.clone(), self.ns.clone());
        let activity = self.activity.clone();
        tokio::spawn(async move {
            let _slot = spool.slots.clone().acquire_owned().await;
            let outcome = upload_with_retries(&sealed, &obj, &m).await;
            spool.live.lock().remove(&obj);
            match &outcome {
                Ok(Spooled::Uploaded { etag, .. }) => {
                    // A writer that reopened the file builds on the uploaded version.
                    if let Some(st) = ns.spool_uploaded(ino, etag) {
                        st.lock().await.rebased(etag.clone());
                    }
                }
                Ok(Spooled::ConflictCopy { .. }) => {
                    activity.conflict();
                    ns.spool_conflict(ino)
                }
                Err(_) => {}
            }
            let result = match outcome {
                Ok(Spooled::Uploaded { .. }) => {
                    Spool::remove(&obj);
                    spool.pending.lock().remove(&ino);
                    Ok(())
                }
                Ok(Spooled::ConflictCopy { key, copy }) => {
                    Spool::remove(&obj);
                    spool.pending.lock().remove(&ino);
                    let what = format!("write conflict on {key}: it changed in S3 since it was opened here; this version was kept as {copy}");
                    tracing::error!("{what}");
                    Err(what)
                }
                Err(e) => {
                    let what = format!("background upload of {} failed; it stays in the spool ({}) and is retried: {e}", m.key, obj.display());
                    tracing::error!("{what}");
                    Err(what)
                }
            };
            let _ = tx.send(Some(result));
        });
        Ok(())
    }

    /// `staged` locked to make the next version of `ino`. If it holds
    /// changes, only once `ino`'s background upload, if any, is over,
    /// whatever its outcome (the upload logged a failure; the data stays in
    /// the spool): a writer that opened the file again while the previous
    /// version was still going up (its release, which spools, can arrive
    /// after the next open) builds on the version the upload makes, which
    /// the upload's end rebases it on, never on the one before (which S3
    /// would refuse, and the earlier version would become a conflict copy).
    /// The wait holds no lock: the upload's end takes it to rebase.
    pub(super) async fn lock_for_next_version<'a>(
        &self,
        ino: u64,
        staged: &'a Staged,
    ) -> tokio::sync::MutexGuard<'a, StagedInner> {
        if staged.lock().await.is_dirty() {
            let _ = self.settle(ino).await;
        }
        staged.lock().await
    }

    /// Whether `ino` has a background upload in the spool (running, or
    /// failed and waiting for a retry): what [`settle`](Self::settle)s
    /// cannot be answered without waiting for it.
    pub(super) fn has_background_upload(&self, ino: u64) -> bool {
        self.spool.pending.lock().contains_key(&ino)
    }

    /// Waits for `ino`'s pending background upload, if any. EIO when it
    /// failed (the data stays in the spool for the retry).
    pub(super) async fn settle(&self, ino: u64) -> Result<()> {
        let rx = self
            .spool
            .pending
            .lock()
            .get(&ino)
            .map(|(_, rx)| rx.clone());
        let Some(mut rx) = rx else { return Ok(()) };
        let outcome = match rx.wait_for(|o| o.is_some()).await {
            Ok(o) => o.clone().expect("waited for it"),
            Err(_) => return Ok(()),
        };
        // The background task logged the failure.
        outcome.map_err(|what| Error::Reported {
            errno: libc::EIO,
            what,
        })
    }

    /// Settles the entry `name` of `parent`, if it is known.
    pub(super) async fn settle_child(&self, parent: u64, name: &str) -> Result<()> {
        match self.ns.child(parent, name) {
            Some(ino) => self.settle(ino).await,
            None => Ok(()),
        }
    }

    /// Forgets `ino`'s failed spooled upload (its file was unlinked).
    pub(super) fn drop_spooled(&self, ino: u64) {
        self.ns.pending_dropped(ino);
        let Some((key, _)) = self.spool.pending.lock().remove(&ino) else {
            return;
        };
        let Ok(dir) = std::fs::read_dir(&self.spool.dir) else {
            return;
        };
        for obj in dir.filter_map(|e| e.ok().map(|e| e.path())) {
            if obj.extension().is_some_and(|x| x == "obj")
                && !self.spool.live.lock().contains(&obj)
                && self
                    .local
                    .read_record::<EntryMeta>(&meta_path(&obj), SPOOL_ENTRY)
                    .is_some_and(|m| m.key == key)
            {
                Spool::remove(&obj);
            }
        }
    }

    /// Waits for every upload in flight (unmount). Failed ones stay in the
    /// spool; the first failure is returned.
    pub(super) async fn drain_spool(&self) -> Result<()> {
        let inos: Vec<u64> = self.spool.pending.lock().keys().copied().collect();
        let mut first = Ok(());
        for ino in inos {
            if let Err(e) = self.settle(ino).await {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Spooled objects no task of a running sealfs is uploading (left by a
    /// crash, or whose upload failed): uploads them now.
    pub async fn recover_spool(&self) -> Vec<Spooled> {
        let mut done = Vec::new();
        let Ok(dir) = std::fs::read_dir(&self.spool.dir) else {
            return done;
        };
        let objs: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "obj"))
            .collect();
        for obj in objs {
            if self.spool.live.lock().contains(&obj) {
                continue;
            }
            let m: EntryMeta = match self.local.read_record(&meta_path(&obj), SPOOL_ENTRY) {
                Some(m) => m,
                None => {
                    // Sealing was cut short before the entry was complete:
                    // the staged copy (with its journal) is what recovers.
                    if !other_live_process(pid_of(&obj)) {
                        Spool::remove(&obj);
                    }
                    continue;
                }
            };
            if other_live_process(m.pid) {
                continue;
            }
            if !self.in_volume(&m.key) {
                tracing::error!(entry = %obj.display(), key = %m.key, "spool entry names a key outside this volume; left alone");
                continue;
            }
            match Spool::upload_entry(&self.sealed, &obj, &m).await {
                Ok(r) => {
                    tracing::warn!(key = %m.key, outcome = ?r, "uploaded a spooled write left by a crash or a failed upload");
                    self.activity
                        .recovered(matches!(r, Spooled::ConflictCopy { .. }));
                    Spool::remove(&obj);
                    // A failed upload of this mount: its inode is in S3 now.
                    let inos: Vec<u64> = {
                        let mut pending = self.spool.pending.lock();
                        let inos = pending
                            .iter()
                            .filter(|(_, (k, _))| *k == m.key)
                            .map(|(ino, _)| *ino)
                            .collect();
                        pending.retain(|_, (k, _)| *k != m.key);
                        inos
                    };
                    self.ns.pending_settled(&inos);
                    done.push(r);
                }
                Err(e) => {
                    tracing::error!(key = %m.key, "spooled write not uploaded yet (kept for the next attempt): {e}")
                }
            }
        }
        if !done.is_empty() {
            self.ns.invalidate_all();
        }
        done
    }
}

fn pid_of(obj: &Path) -> u32 {
    obj.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('-').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Transient failures are retried a few times with backoff before the
/// entry is left to the periodic recovery.
async fn upload_with_retries(sealed: &SealedStore, obj: &Path, m: &EntryMeta) -> Result<Spooled> {
    let mut delay = Duration::from_millis(250);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match Spool::upload_entry(sealed, obj, m).await {
            Err(e) if attempt < 4 && e.errno() == libc::EIO => {
                tracing::warn!(key = %m.key, error = %e, "background upload failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
}
