//! Branch keys: one KMS call for thousands of files, a key of its own for
//! each file.
//!
//! A branch key is a data key made by one `GenerateDataKey` under the
//! volume's (pinned) KMS key with the context `{"sealfs:v": "1",
//! "sealfs:volume": <volume id>, "sealfs:branch": <branch id>}`. Its wrapped
//! form is the object `<prefix>/.sealfs/branches/<branch id>` (the KMS blob
//! itself, written once with `If-None-Match: *`). A file sealed under it
//! (sealing fields version 2) names the branch in its metadata, and its data
//! key is `crypto::file_key(branch key, branch id, file id)`.
//!
//! This module owns the branch keys of one store: the branch new files are
//! derived from (made on the first new file, replaced after `max_files`
//! files or `max_age`), and the wrapped forms it has fetched (not secret:
//! immutable KMS blobs, cached without limit of age, and by a mount also in
//! its cache directory, so that after a remount its read cache answers
//! without a single GET). The unwrapped keys live in the key service's
//! decrypt cache, like every other data key, and expire with it; they are
//! never written anywhere.
//!
//! A grantee never holds a branch key: no grant allows `kms:Decrypt` under a
//! context without a `sealfs:file`, and no grant names a branch object.

use crate::crypto::{file_key, BranchId, DataKey, FileId};
use crate::error::Result;
use crate::keys::{EncryptionContext, KeyError, KeyService};
use crate::store::{Metadata, ObjectStore, PutCondition, StoreError};
use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// When a writer replaces its branch key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BranchSettings {
    /// Files derived from one branch key before the next is made.
    pub max_files: u64,
    /// Age after which the next new file starts a new branch.
    pub max_age: Duration,
}

impl Default for BranchSettings {
    fn default() -> Self {
        BranchSettings {
            max_files: 10_000,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// Longest wrapped branch key accepted from the bucket (KMS blobs are a few
/// hundred bytes).
const MAX_WRAPPED: usize = 1024;
/// Wrapped forms remembered (each a few hundred bytes).
const REMEMBERED: usize = 4096;

const AREA: &str = "branches";

/// The branch a writer derives new files' keys from.
struct Current {
    id: BranchId,
    key: DataKey,
    made: Instant,
    files: u64,
}

/// A wrapped branch key, and whether it is on local disk yet (it is kept
/// there only once KMS has accepted it).
struct WrappedForm {
    blob: Vec<u8>,
    on_disk: std::sync::atomic::AtomicBool,
}

impl WrappedForm {
    fn new(blob: Vec<u8>, on_disk: bool) -> Self {
        WrappedForm {
            blob,
            on_disk: on_disk.into(),
        }
    }
}

type Wrapped = Arc<OnceCell<Arc<WrappedForm>>>;

pub struct Branches {
    store: Arc<dyn ObjectStore>,
    keys: Arc<dyn KeyService>,
    pinned_key: String,
    volume_id: String,
    /// `<prefix>/.sealfs/branches/`.
    area: String,
    /// `None`: this store does not derive new files' keys from branches.
    writing: Option<BranchSettings>,
    current: tokio::sync::Mutex<Option<Current>>,
    wrapped: Mutex<LruCache<BranchId, Wrapped>>,
    /// Where wrapped forms are kept across mounts (files named by branch id).
    local: Option<std::path::PathBuf>,
}

/// A new file's key, derived from the current branch.
pub struct DerivedKey {
    pub branch: BranchId,
    pub file_id: FileId,
    pub key: DataKey,
}

impl Branches {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        keys: Arc<dyn KeyService>,
        pinned_key: &str,
        volume_id: &str,
        prefix: &str,
        writing: Option<BranchSettings>,
    ) -> Self {
        Branches {
            store,
            keys,
            pinned_key: pinned_key.to_string(),
            volume_id: volume_id.to_string(),
            area: crate::volume::join(prefix, &format!("{}/{AREA}/", crate::volume::INTERNAL_DIR)),
            writing,
            current: tokio::sync::Mutex::new(None),
            wrapped: Mutex::new(LruCache::new(
                NonZeroUsize::new(REMEMBERED).expect("non-zero"),
            )),
            local: None,
        }
    }

    /// Keeps the wrapped forms fetched or made in `dir` too (created 0700),
    /// and reads them from there first. A copy KMS refuses is deleted and
    /// fetched again from S3, so a damaged local file costs one request.
    pub fn with_local_copies(mut self, dir: std::path::PathBuf) -> Self {
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
        {
            Ok(()) => self.local = Some(dir),
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "branch keys are not kept on local disk")
            }
        }
        self
    }

    fn local_path(&self, id: &BranchId) -> Option<std::path::PathBuf> {
        self.local.as_ref().map(|d| d.join(id.to_hex()))
    }

    fn local_copy(&self, id: &BranchId) -> Option<Vec<u8>> {
        let b = std::fs::read(self.local_path(id)?).ok()?;
        (!b.is_empty() && b.len() <= MAX_WRAPPED).then_some(b)
    }

    /// Best effort: a copy that cannot be written is fetched again next mount.
    fn keep_local_copy(&self, id: &BranchId, wrapped: &[u8]) {
        let Some(path) = self.local_path(id) else {
            return;
        };
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        let res = std::fs::write(&tmp, wrapped).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(error = %e, branch = %id, "wrapped branch key not kept locally");
        }
    }

    /// Forgets what is known of branch `id`'s wrapped form, here and on disk.
    fn forget(&self, id: &BranchId) {
        self.wrapped.lock().pop(id);
        if let Some(p) = self.local_path(id) {
            let _ = std::fs::remove_file(p);
        }
    }

    /// The same volume's branches as another client sees them: no current
    /// branch, nothing fetched.
    pub fn sibling(&self) -> Branches {
        let mut b = Branches::new(
            self.store.clone(),
            self.keys.clone(),
            &self.pinned_key,
            &self.volume_id,
            "",
            self.writing,
        );
        b.area = self.area.clone();
        b.local = self.local.clone();
        b
    }

    /// Whether new files take keys derived from a branch (a mount) rather
    /// than one KMS call each (one-shot commands, which would otherwise
    /// leave a branch object per run).
    pub fn writes(&self) -> bool {
        self.writing.is_some()
    }

    fn context(&self, id: &BranchId) -> EncryptionContext {
        EncryptionContext::for_branch(&self.volume_id, id)
    }

    /// The object holding branch `id`'s wrapped key.
    pub fn object_key(&self, id: &BranchId) -> String {
        format!("{}{}", self.area, id.to_hex())
    }

    /// A key for a new file: a fresh file id, its key derived from the
    /// current branch, which is made first (one GenerateDataKey, one PUT)
    /// when there is none or it is spent. Writers wait for each other only
    /// while a branch is being made.
    pub async fn new_file_key(&self) -> Result<DerivedKey> {
        let settings = self.writing.unwrap_or_default();
        let mut current = self.current.lock().await;
        let spent = current
            .as_ref()
            .is_none_or(|c| c.files >= settings.max_files || c.made.elapsed() >= settings.max_age);
        if spent {
            *current = Some(self.make().await?);
        }
        let c = current.as_mut().expect("made above");
        c.files += 1;
        let file_id = FileId::random();
        Ok(DerivedKey {
            branch: c.id,
            file_id,
            key: file_key(&c.key, &c.id, &file_id),
        })
    }

    /// Makes a branch: its key from KMS, its wrapped form stored before any
    /// file uses it (a file must never name a branch that is not in S3).
    async fn make(&self) -> Result<Current> {
        let id = BranchId::random();
        let g = self
            .keys
            .generate_data_key(&self.pinned_key, &self.context(&id))
            .await?;
        self.store
            .put(
                &self.object_key(&id),
                Bytes::from(g.wrapped.clone()),
                &Metadata::new(),
                &PutCondition::IfNoneMatch,
            )
            .await?;
        self.keep_local_copy(&id, &g.wrapped);
        let cell = Arc::new(OnceCell::new_with(Some(Arc::new(WrappedForm::new(
            g.wrapped, true,
        )))));
        self.wrapped.lock().put(id, cell);
        tracing::debug!(branch = %id, "new branch key");
        Ok(Current {
            id,
            key: g.key,
            made: Instant::now(),
            files: 0,
        })
    }

    /// Branch `id`'s key, unwrapped under the pinned KMS key (from the
    /// decrypt cache after the first time). `Ok(Err(reason))` when the
    /// branch is missing, malformed, or refused by KMS as not this volume's
    /// branch `id`: an integrity failure of the file that names it.
    pub async fn key_of(&self, id: &BranchId) -> Result<std::result::Result<DataKey, String>> {
        // A local copy KMS refuses is not the bucket's word: ask S3 once.
        let attempts = if self.local.is_some() { 2 } else { 1 };
        for attempt in 1..=attempts {
            let wrapped = match self.wrapped_of(id, attempt == 1).await? {
                Ok(w) => w,
                Err(reason) => return Ok(Err(reason)),
            };
            match self
                .keys
                .decrypt(&self.pinned_key, &wrapped.blob, &self.context(id))
                .await
            {
                Ok(k) => {
                    if !wrapped
                        .on_disk
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                    {
                        self.keep_local_copy(id, &wrapped.blob);
                    }
                    return Ok(Ok(k));
                }
                Err(KeyError::InvalidCiphertext) if attempt < attempts => self.forget(id),
                Err(KeyError::InvalidCiphertext) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Err(format!(
            "branch key {id} was not wrapped under the volume's KMS key for this branch"
        )))
    }

    /// The wrapped form of branch `id`: from memory, else from the local
    /// copy (when `local_ok`), else one GET (concurrent first reads share
    /// it); then remembered.
    async fn wrapped_of(
        &self,
        id: &BranchId,
        local_ok: bool,
    ) -> Result<std::result::Result<Arc<WrappedForm>, String>> {
        let cell = self
            .wrapped
            .lock()
            .get_or_insert(*id, || Arc::new(OnceCell::new()))
            .clone();
        let got = cell
            .get_or_try_init(|| async {
                if let Some(kept) = local_ok.then(|| self.local_copy(id)).flatten() {
                    return Ok(Arc::new(WrappedForm::new(kept, true)));
                }
                let body = match self.store.get(&self.object_key(id), None, None).await {
                    Ok(g) => g.body,
                    Err(StoreError::NotFound { .. }) => {
                        return Err(Bad(format!("branch key {id} is missing")))
                    }
                    Err(e) => return Err(Failed(e.into())),
                };
                if body.is_empty() || body.len() > MAX_WRAPPED {
                    return Err(Bad(format!(
                        "branch key {id} is {} bytes, not a wrapped key",
                        body.len()
                    )));
                }
                Ok(Arc::new(WrappedForm::new(body.to_vec(), false)))
            })
            .await;
        match got {
            Ok(w) => Ok(Ok(w.clone())),
            Err(Bad(reason)) => Ok(Err(reason)),
            Err(Failed(e)) => Err(e),
        }
    }
}

/// Why fetching a wrapped branch key failed: the bucket's answer is bad
/// (an integrity failure of the file), or the request failed (retry later).
enum FetchError {
    Bad(String),
    Failed(crate::error::Error),
}
use FetchError::{Bad, Failed};
