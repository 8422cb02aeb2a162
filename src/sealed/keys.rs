//! Which data key a version is sealed with, and which keys may be unwrapped:
//! the one place a key is chosen.
//!
//! Two rules hold here for every path (mount reads and writes, `put`, `get`,
//! `verify`, recovery, rekey, the write-back spool):
//!
//! - **Strict pinning.** Every KMS `Decrypt` names the KMS key this store was
//!   pinned to (the volume's key from its authenticated config, or for a
//!   grantee the key its owner-written grant names), never the key id an
//!   object's metadata claims. An object claiming another key is an
//!   integrity failure of that object.
//! - **Keys for writing come from verified objects.** A new version reuses a
//!   file's data key and file id only if the current version verified with
//!   them (key unwrapped under the pinned key, key commitment, header MAC,
//!   header file id equal to the metadata's, path binding). Otherwise it is
//!   sealed under a fresh key and file id. Versions that verified, or that
//!   this process wrote, are remembered by (object key, ETag), so a rewrite
//!   after a read or a write costs no extra request.

use super::SealedStore;
use crate::crypto::{file_key, BranchId, DataKey, FileId, IntegrityError, Opener, HEADER_LEN};
use crate::error::{Error, Result};
use crate::keys::EncryptionContext;
use crate::store::{Metadata, PutCondition, StoreError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// Metadata names (`x-amz-meta-<name>`) of the sealing fields.
pub mod meta {
    pub const VERSION: &str = "sealfs-v";
    pub const KEY_ID: &str = "sealfs-kid";
    pub const WRAPPED_KEY: &str = "sealfs-dk";
    pub const BRANCH: &str = "sealfs-branch";
    pub const FILE_ID: &str = "sealfs-fid";
    pub const BINDING: &str = "sealfs-bind";
}

/// Longest wrapped key accepted from metadata (KMS blobs are a few hundred
/// bytes; anything near S3's 2 KB metadata limit is not one).
const MAX_WRAPPED_KEY: usize = 1024;

/// Where a file's data key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// Sealing fields version 1: the file's own data key, wrapped by KMS
    /// under the file's context (one KMS call per file).
    Wrapped(Vec<u8>),
    /// Version 2: derived from a branch key and the file id
    /// ([`crate::crypto::file_key`]). `shared` is that key wrapped by KMS
    /// under the file's context, written when the file is first shared,
    /// so a grantee can unwrap this file's key and no other.
    Branch {
        id: BranchId,
        shared: Option<Vec<u8>>,
    },
}

/// Which data key a file uses: the KMS key, where the DK comes from and the
/// file id bound into it. Shared by every version of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRef {
    pub key_id: String,
    pub file_id: FileId,
    pub source: KeySource,
}

/// Room kept for the wrapped key sharing adds to a version-2 file (KMS
/// blobs of a 32-byte key are about 180 bytes).
const SHARED_KEY_ROOM: usize = 256;

impl KeyRef {
    pub fn context(&self) -> EncryptionContext {
        EncryptionContext::for_file(&self.file_id)
    }

    /// Whether `other` names the same data key (a copy of the file, perhaps
    /// shared since).
    pub fn same_key(&self, other: &KeyRef) -> bool {
        self.key_id == other.key_id
            && self.file_id == other.file_id
            && match (&self.source, &other.source) {
                (KeySource::Wrapped(a), KeySource::Wrapped(b)) => a == b,
                (KeySource::Branch { id: a, .. }, KeySource::Branch { id: b, .. }) => a == b,
                _ => false,
            }
    }

    /// Bytes the sealing fields of a version sealed with this key take in
    /// its object metadata, counted as S3 counts them (names and values):
    /// the room attributes must leave.
    pub fn sealing_fields_size(&self) -> usize {
        let mut m = Metadata::new();
        let mut key = self.clone();
        if let KeySource::Branch { shared, .. } = &mut key.source {
            shared.get_or_insert_with(|| vec![0; SHARED_KEY_ROOM]);
        }
        SealMeta {
            key,
            binding: [0; 32],
        }
        .write_into(&mut m);
        crate::store::attested::metadata_size(&m)
    }
}

/// The sealing fields of one object's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealMeta {
    pub key: KeyRef,
    pub binding: [u8; 32],
}

impl SealMeta {
    pub fn write_into(&self, m: &mut Metadata) {
        m.remove(meta::WRAPPED_KEY);
        m.remove(meta::BRANCH);
        match &self.key.source {
            KeySource::Wrapped(w) => {
                m.insert(meta::VERSION.into(), "1".into());
                m.insert(meta::WRAPPED_KEY.into(), B64.encode(w));
            }
            KeySource::Branch { id, shared } => {
                m.insert(meta::VERSION.into(), "2".into());
                m.insert(meta::BRANCH.into(), id.to_hex());
                if let Some(w) = shared {
                    m.insert(meta::WRAPPED_KEY.into(), B64.encode(w));
                }
            }
        }
        m.insert(meta::KEY_ID.into(), self.key.key_id.clone());
        m.insert(meta::FILE_ID.into(), self.key.file_id.to_hex());
        m.insert(meta::BINDING.into(), hex::encode(self.binding));
    }

    /// Every sealing field's name (what a re-seal under another key drops).
    pub const NAMES: [&'static str; 6] = [
        meta::VERSION,
        meta::KEY_ID,
        meta::WRAPPED_KEY,
        meta::BRANCH,
        meta::FILE_ID,
        meta::BINDING,
    ];

    /// True when the metadata carries sealing fields at all (a sealfs object).
    pub fn present(m: &Metadata) -> bool {
        m.contains_key(meta::VERSION)
    }

    /// Reads the sealing fields; `Err(reason)` when they are missing or
    /// malformed. Total: any map gives a value or a reason, never a panic.
    pub fn read_from(m: &Metadata) -> std::result::Result<Self, String> {
        let get = |k: &str| m.get(k).ok_or_else(|| format!("metadata {k} missing"));
        let wrapped = || -> std::result::Result<Vec<u8>, String> {
            let wrapped_b64 = get(meta::WRAPPED_KEY)?;
            if wrapped_b64.len() > MAX_WRAPPED_KEY * 4 / 3 + 4 {
                return Err(format!("metadata {} too long", meta::WRAPPED_KEY));
            }
            let wrapped = B64
                .decode(wrapped_b64)
                .map_err(|_| format!("metadata {} is not base64", meta::WRAPPED_KEY))?;
            if wrapped.is_empty() {
                return Err(format!("metadata {} is empty", meta::WRAPPED_KEY));
            }
            Ok(wrapped)
        };
        let source = match get(meta::VERSION)?.as_str() {
            "1" => KeySource::Wrapped(wrapped()?),
            "2" => KeySource::Branch {
                id: BranchId::from_hex(get(meta::BRANCH)?)
                    .ok_or_else(|| format!("metadata {} malformed", meta::BRANCH))?,
                shared: match m.contains_key(meta::WRAPPED_KEY) {
                    true => Some(wrapped()?),
                    false => None,
                },
            },
            other => {
                return Err(format!(
                    "unsupported {} {:?}",
                    meta::VERSION,
                    other.chars().take(16).collect::<String>()
                ))
            }
        };
        let file_id = FileId::from_hex(get(meta::FILE_ID)?)
            .ok_or_else(|| format!("metadata {} malformed", meta::FILE_ID))?;
        let binding = hex::decode(get(meta::BINDING)?)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("metadata {} malformed", meta::BINDING))?;
        Ok(SealMeta {
            key: KeyRef {
                key_id: get(meta::KEY_ID)?.clone(),
                file_id,
                source,
            },
            binding,
        })
    }
}

/// The data key a new version will be sealed with, and the condition that
/// makes the write safe against a concurrent writer.
pub struct WriteKey {
    pub key_ref: KeyRef,
    pub key: DataKey,
    pub condition: PutCondition,
}

/// One version of an object whose header verified with its data key.
pub struct Verified {
    pub etag: String,
    pub key_ref: KeyRef,
}

impl SealedStore {
    /// The KMS key every data key of this store must be wrapped under.
    pub fn pinned_key(&self) -> &str {
        &self.pinned_key
    }

    /// An object's data key, under the pinned KMS key: derived from its
    /// branch key (an owner), or unwrapped from its own wrapped form (a
    /// version-1 file; a grantee reading a shared version-2 file). A key id
    /// in the metadata other than the pinned one, a branch that is missing
    /// or not this volume's, or KMS refusing the ciphertext under the
    /// file's context, is an integrity failure of that object.
    pub(super) async fn unwrap_key(&self, key: &str, kr: &KeyRef) -> Result<DataKey> {
        if kr.key_id != self.pinned_key {
            return Err(self.integrity(key, IntegrityError::ForeignKey(short(&kr.key_id))));
        }
        let wrapped = match (&kr.source, &self.branches) {
            (KeySource::Wrapped(w), _) => w,
            (KeySource::Branch { id, .. }, Some(branches)) => {
                return match branches.key_of(id).await? {
                    Ok(bk) => Ok(file_key(&bk, id, &kr.file_id)),
                    Err(reason) => Err(self.integrity(key, IntegrityError::BranchKey(reason))),
                };
            }
            (
                KeySource::Branch {
                    shared: Some(w), ..
                },
                None,
            ) => w,
            (KeySource::Branch { shared: None, .. }, None) => {
                return Err(self.integrity(key, IntegrityError::NotPublished))
            }
        };
        match self
            .keys
            .decrypt(&self.pinned_key, wrapped, &kr.context())
            .await
        {
            Err(crate::keys::KeyError::InvalidCiphertext) => {
                Err(self.integrity(key, IntegrityError::WrappedKey))
            }
            other => Ok(other?),
        }
    }

    /// Verifies the sealing of the object at `key` whose metadata gave `sm`
    /// and whose bytes start with `head`: data key unwrapped under the pin,
    /// key commitment, header MAC, header file id, path binding. Returns the
    /// opener of its segments.
    pub(super) async fn verify_sealing(
        &self,
        key: &str,
        sm: &SealMeta,
        head: &[u8],
    ) -> Result<Opener> {
        let header = head
            .get(..HEADER_LEN)
            .ok_or_else(|| self.integrity(key, IntegrityError::BadLength(head.len() as u64)))?;
        let dk = self.unwrap_key(key, &sm.key).await?;
        let opener =
            Opener::new(&dk, header, &sm.key.file_id).map_err(|e| self.integrity(key, e))?;
        opener
            .check_binding(self.store.bucket(), key, &sm.binding)
            .map_err(|e| self.integrity(key, e))?;
        Ok(opener)
    }

    /// Records that version `etag` of `key` verified (or was written by this
    /// process) with `key_ref`.
    pub fn remember_verified(&self, key: &str, etag: &str, key_ref: &KeyRef) {
        self.verified
            .lock()
            .put((key.to_string(), etag.to_string()), key_ref.clone());
    }

    fn known_verified(&self, key: &str, etag: &str) -> Option<KeyRef> {
        self.verified
            .lock()
            .get(&(key.to_string(), etag.to_string()))
            .cloned()
    }

    /// Fetches the header of `key` (exactly version `etag` when given) and
    /// verifies it: sealing metadata, key under the pinned KMS key, key
    /// commitment, header MAC, header file id, path binding.
    pub async fn verify_header(&self, key: &str, etag: Option<&str>) -> Result<Verified> {
        if let Some(kr) = etag.and_then(|e| self.known_verified(key, e)) {
            return Ok(Verified {
                etag: etag.unwrap_or_default().to_string(),
                key_ref: kr,
            });
        }
        let got = match self.store.get(key, Some(0..HEADER_LEN as u64), etag).await {
            Err(StoreError::InvalidRange { .. }) => {
                return Err(self.not_sealfs(key, "empty object"))
            }
            other => other?,
        };
        let sm = SealMeta::read_from(&got.info.metadata).map_err(|r| self.not_sealfs(key, r))?;
        self.verify_sealing(key, &sm, &got.body).await?;
        self.remember_verified(key, &got.info.etag, &sm.key);
        Ok(Verified {
            etag: got.info.etag,
            key_ref: sm.key,
        })
    }

    /// The key for writing a new version of `key` from a client that knows
    /// nothing of it (`sealfs put`): the current version's data key if that
    /// version verifies, with `If-Match` on it; a fresh key with
    /// `If-None-Match: *` when there is none; a fresh key with `If-Match` if
    /// it does not verify. An object that is not sealfs's is never replaced.
    pub async fn key_for_write(&self, key: &str) -> Result<WriteKey> {
        match self.verify_header(key, None).await {
            Ok(v) => {
                self.existing_key(key, v.key_ref, PutCondition::IfMatch(v.etag))
                    .await
            }
            Err(Error::Store(StoreError::NotFound { .. })) => self.new_key().await,
            Err(e @ Error::NotSealfs { .. }) => Err(Error::NotSealfs {
                bucket: self.store.bucket().to_string(),
                key: key.to_string(),
                reason: format!("{e}; refusing to overwrite it"),
            }),
            Err(e @ Error::Integrity { .. }) => {
                let etag = self.store.head(key).await?.etag;
                tracing::warn!(error = %e, "the existing object does not verify; the new version is sealed under a fresh data key and file id");
                let mut wk = self.new_key().await?;
                wk.condition = PutCondition::IfMatch(etag);
                Ok(wk)
            }
            Err(e) => Err(e),
        }
    }

    /// The key for a new version of `key` replacing `base`, the ETag of the
    /// sealed version it replaces (none for a new file), written under
    /// `condition`. The file's own key only if version `base` verifies; a
    /// fresh key and file id when there is no base, or it does not verify
    /// (logged), or it is gone.
    pub async fn key_for_version(
        &self,
        key: &str,
        base: Option<&str>,
        condition: PutCondition,
    ) -> Result<WriteKey> {
        let fresh = |condition| async move {
            let mut wk = self.new_key().await?;
            wk.condition = condition;
            Ok(wk)
        };
        let Some(etag) = base else {
            return fresh(condition).await;
        };
        match self.verify_header(key, Some(etag)).await {
            Ok(v) => self.existing_key(key, v.key_ref, condition).await,
            Err(e @ (Error::Integrity { .. } | Error::NotSealfs { .. })) => {
                tracing::warn!(error = %e, "the version being replaced does not verify; the new version is sealed under a fresh data key and file id");
                fresh(condition).await
            }
            // Replaced or removed meanwhile: the conditional write decides,
            // and the content is no longer that file's anyway.
            Err(Error::Store(
                StoreError::PreconditionFailed { .. } | StoreError::NotFound { .. },
            )) => fresh(condition).await,
            Err(e) => Err(e),
        }
    }

    /// The write key of a version of `key` that verified (its DK unwrapped
    /// under the pinned key, usually from the decrypt cache).
    async fn existing_key(
        &self,
        key: &str,
        key_ref: KeyRef,
        condition: PutCondition,
    ) -> Result<WriteKey> {
        let dk = self.unwrap_key(key, &key_ref).await?;
        Ok(WriteKey {
            key_ref,
            key: dk,
            condition,
        })
    }

    /// A fresh data key and file id for a new file, to be created with
    /// `If-None-Match: *`: derived from the current branch key on a store
    /// that writes branches (a mount), else one GenerateDataKey (one-shot
    /// commands, `rekey`: a key no branch key derives).
    pub async fn new_key(&self) -> Result<WriteKey> {
        if let Some(b) = self.branches.as_ref().filter(|b| b.writes()) {
            let d = b.new_file_key().await?;
            return Ok(WriteKey {
                key_ref: KeyRef {
                    key_id: self.pinned_key.clone(),
                    file_id: d.file_id,
                    source: KeySource::Branch {
                        id: d.branch,
                        shared: None,
                    },
                },
                key: d.key,
                condition: PutCondition::IfNoneMatch,
            });
        }
        self.own_key().await
    }

    /// A data key of a new file's own: one GenerateDataKey under the
    /// file's context (sealing fields version 1), derived from no branch.
    pub async fn own_key(&self) -> Result<WriteKey> {
        let file_id = FileId::random();
        let g = self
            .keys
            .generate_data_key(&self.pinned_key, &EncryptionContext::for_file(&file_id))
            .await?;
        Ok(WriteKey {
            key_ref: KeyRef {
                key_id: g.key_id,
                file_id,
                source: KeySource::Wrapped(g.wrapped),
            },
            key: g.key,
            condition: PutCondition::IfNoneMatch,
        })
    }

    /// Makes the current version of `key` readable by a grantee: a file
    /// whose key derives from a branch gets that one key wrapped by KMS
    /// under its own context (`kms:Encrypt`), written into its metadata by
    /// a self-copy of exactly the version that verified. Version-1 files,
    /// and files shared before, need nothing. Returns what the grant names
    /// (the file id and KMS key it verified with) and the new ETag when the
    /// object changed.
    pub async fn publish_key(&self, key: &str) -> Result<(Verified, bool)> {
        let v = self.verify_header(key, None).await?;
        let KeySource::Branch { id, shared: None } = &v.key_ref.source else {
            return Ok((v, false));
        };
        let dk = self.unwrap_key(key, &v.key_ref).await?;
        let wrapped = self
            .keys
            .wrap(&self.pinned_key, &dk, &v.key_ref.context())
            .await?;
        let info = self.store.head(key).await?;
        if info.etag != v.etag {
            return Err(Error::Store(StoreError::PreconditionFailed {
                bucket: self.store.bucket().to_string(),
                key: key.to_string(),
            }));
        }
        let key_ref = KeyRef {
            source: KeySource::Branch {
                id: *id,
                shared: Some(wrapped.clone()),
            },
            ..v.key_ref.clone()
        };
        let mut metadata = info.metadata;
        metadata.insert(meta::WRAPPED_KEY.into(), B64.encode(&wrapped));
        let etag = self
            .store
            .copy(
                key,
                key,
                Some(&v.etag),
                &metadata,
                &PutCondition::IfMatch(v.etag.clone()),
            )
            .await?;
        self.remember_verified(key, &etag, &key_ref);
        Ok((Verified { etag, key_ref }, true))
    }
}

/// A key id from metadata, cut to a length fit for a log line.
fn short(s: &str) -> String {
    s.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any metadata map gives sealing fields or a reason, never a panic.
        #[test]
        fn read_from_is_total(m in proptest::collection::btree_map(
            prop_oneof![
                Just(meta::VERSION.to_string()), Just(meta::KEY_ID.to_string()),
                Just(meta::WRAPPED_KEY.to_string()), Just(meta::FILE_ID.to_string()),
                Just(meta::BINDING.to_string()), Just(meta::BRANCH.to_string()), "[a-z-]{1,12}",
            ],
            prop_oneof![Just("1".to_string()), Just("2".to_string()), "[0-9a-f]{32}", "[0-9a-f]{64}", "[A-Za-z0-9+/=]{0,64}", any::<String>()],
            0..8,
        )) {
            let m: Metadata = m.into_iter().collect();
            let _ = SealMeta::read_from(&m);
        }
    }
}
