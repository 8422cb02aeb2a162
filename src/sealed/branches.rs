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
//! immutable KMS blobs, cached without limit of age). The unwrapped keys
//! live in the key service's decrypt cache, like every other data key, and
//! expire with it.
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

type Wrapped = Arc<OnceCell<Vec<u8>>>;

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
        let cell = Arc::new(OnceCell::new_with(Some(g.wrapped)));
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
        let wrapped = match self.wrapped_of(id).await? {
            Ok(w) => w,
            Err(reason) => return Ok(Err(reason)),
        };
        match self
            .keys
            .decrypt(&self.pinned_key, &wrapped, &self.context(id))
            .await
        {
            Ok(k) => Ok(Ok(k)),
            Err(KeyError::InvalidCiphertext) => Ok(Err(format!(
                "branch key {id} was not wrapped under the volume's KMS key for this branch"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The wrapped form of branch `id`: fetched once (concurrent first reads
    /// share one GET), then remembered.
    async fn wrapped_of(&self, id: &BranchId) -> Result<std::result::Result<Vec<u8>, String>> {
        let cell = self
            .wrapped
            .lock()
            .get_or_insert(*id, || Arc::new(OnceCell::new()))
            .clone();
        let got = cell
            .get_or_try_init(|| async {
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
                Ok(body.to_vec())
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
