//! Data keys: the `KeyService` trait, its KMS and in-memory implementations,
//! and the decorators that make KMS cheap to use (retry, decrypt cache).
//!
//! Stack used by the app: `CachingKeyService(Retrying(KmsKeyService))`; new
//! files' keys derive from branch keys (`crate::sealed::branches`), so a
//! mount makes one GenerateDataKey per branch, not per file.

mod cache;
#[cfg(test)]
mod fake;
mod kms;
mod retry;

pub use cache::CachingKeyService;
#[cfg(test)]
pub use fake::FakeKms;
pub use kms::KmsKeyService;
pub use retry::{RetryPolicy, Retrying};

use crate::crypto::{BranchId, DataKey, FileId};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// The KMS encryption context. It is logged by CloudTrail, so it carries only
/// a format version and a random id, never a path or a secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    pub const VERSION_KEY: &'static str = "sealfs:v";
    pub const FILE_KEY: &'static str = "sealfs:file";
    pub const VOLUME_KEY: &'static str = "sealfs:volume";
    pub const LOCAL_KEY: &'static str = "sealfs:local";
    pub const BRANCH_KEY: &'static str = "sealfs:branch";
    pub const PROBE_KEY: &'static str = "sealfs:probe";

    pub fn for_file(file_id: &FileId) -> Self {
        Self::with(Self::FILE_KEY, file_id.to_hex())
    }

    pub fn for_volume(volume_id: &str) -> Self {
        Self::with(Self::VOLUME_KEY, volume_id.to_string())
    }

    /// A branch key of one volume (see `crate::sealed::branches`). It has no
    /// `sealfs:file`, so no grant (which allows Decrypt only for listed file
    /// ids) can unwrap it.
    pub fn for_branch(volume_id: &str, branch: &BranchId) -> Self {
        let mut ctx = Self::for_volume(volume_id);
        ctx.0.insert(Self::BRANCH_KEY.to_string(), branch.to_hex());
        ctx
    }

    /// A key made only to see that KMS works (`sealfs doctor`) and dropped:
    /// no file, branch or grant uses this context.
    pub fn for_probe() -> Self {
        Self::with(Self::PROBE_KEY, "doctor".to_string())
    }

    /// The local key of one cache directory (see `crate::local`).
    pub fn for_local(id: &str) -> Self {
        Self::with(Self::LOCAL_KEY, id.to_string())
    }

    fn with(k: &str, v: String) -> Self {
        let mut m = BTreeMap::new();
        m.insert(Self::VERSION_KEY.to_string(), "1".to_string());
        m.insert(k.to_string(), v);
        EncryptionContext(m)
    }

    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Unambiguous byte encoding (sorted, length-prefixed), for cache keys and the fake's AAD.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in &self.0 {
            for s in [k, v] {
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        out
    }
}

/// A freshly generated data key: the plaintext key, the KMS-wrapped form that
/// rides with the object, and the ARN of the KMS key that wrapped it.
#[derive(Clone, Debug)]
pub struct GeneratedKey {
    pub key: DataKey,
    pub wrapped: Vec<u8>,
    pub key_id: String,
}

/// Failures of the key service; each maps to one errno in the filesystem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("KMS denied {action}: {message}")]
    AccessDenied {
        action: &'static str,
        message: String,
    },
    #[error("KMS throttled {action} (retries exhausted)")]
    Throttled { action: &'static str },
    #[error("KMS unreachable during {action}: {message}")]
    Unavailable {
        action: &'static str,
        message: String,
    },
    #[error("KMS rejected the wrapped data key (wrong KMS key, wrong encryption context, or corrupted key blob)")]
    InvalidCiphertext,
    #[error("KMS key {0} not found or not usable")]
    KeyNotFound(String),
    #[error("KMS {action} failed: {message}")]
    Other {
        action: &'static str,
        message: String,
    },
}

impl KeyError {
    /// Transient failures worth retrying with backoff.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            KeyError::Throttled { .. } | KeyError::Unavailable { .. }
        )
    }
}

/// Generates and unwraps per-file data keys.
#[async_trait]
pub trait KeyService: Send + Sync {
    /// One `GenerateDataKey(AES_256)` under `key_id` with `ctx`.
    async fn generate_data_key(
        &self,
        key_id: &str,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedKey, KeyError>;
    /// One `Decrypt` of `wrapped`, which must have been made under `key_id` with `ctx`.
    async fn decrypt(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KeyError>;
    /// One `Encrypt` of a data key the caller already holds, under `key_id`
    /// with `ctx`: the wrapped form `decrypt` opens with the same context.
    /// Used to hand one file's key to a grantee (a key derived from a
    /// branch key has no KMS-wrapped form of its own until it is shared).
    async fn wrap(
        &self,
        key_id: &str,
        key: &DataKey,
        ctx: &EncryptionContext,
    ) -> Result<Vec<u8>, KeyError>;
}

#[async_trait]
impl<T: KeyService + ?Sized> KeyService for std::sync::Arc<T> {
    async fn generate_data_key(
        &self,
        key_id: &str,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedKey, KeyError> {
        (**self).generate_data_key(key_id, ctx).await
    }
    async fn decrypt(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KeyError> {
        (**self).decrypt(key_id, wrapped, ctx).await
    }
    async fn wrap(
        &self,
        key_id: &str,
        key: &DataKey,
        ctx: &EncryptionContext,
    ) -> Result<Vec<u8>, KeyError> {
        (**self).wrap(key_id, key, ctx).await
    }
}

/// Key administration used by `sealfs init`, kept off the hot-path trait.
#[async_trait]
pub trait KeyAdmin: Send + Sync {
    /// Resolves a key id, ARN or alias to the key's ARN, checking that it exists.
    async fn resolve_key(&self, id: &str) -> Result<String, KeyError>;
    /// Creates a symmetric key for a new volume and returns its ARN.
    async fn create_key(&self, description: &str) -> Result<String, KeyError>;
}

/// Counts of real KMS calls (attempts, including retried ones), for tests,
/// benchmarks and the log.
#[derive(Debug, Default)]
pub struct CallCounter {
    generate: AtomicU64,
    decrypt: AtomicU64,
    encrypt: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KmsCalls {
    pub generate_data_key: u64,
    pub decrypt: u64,
    pub encrypt: u64,
}

impl CallCounter {
    pub fn count_generate(&self) {
        self.generate.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_decrypt(&self) {
        self.decrypt.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_encrypt(&self) {
        self.encrypt.fetch_add(1, Ordering::Relaxed);
    }
    pub fn snapshot(&self) -> KmsCalls {
        KmsCalls {
            generate_data_key: self.generate.load(Ordering::Relaxed),
            decrypt: self.decrypt.load(Ordering::Relaxed),
            encrypt: self.encrypt.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_has_no_path_and_is_canonical() {
        let fid = FileId([0xab; 16]);
        let ctx = EncryptionContext::for_file(&fid);
        assert_eq!(ctx.pairs().len(), 2);
        assert_eq!(ctx.pairs()["sealfs:v"], "1");
        assert_eq!(ctx.pairs()["sealfs:file"], "ab".repeat(16));
        assert_ne!(
            ctx.canonical_bytes(),
            EncryptionContext::for_volume(&"ab".repeat(16)).canonical_bytes()
        );
    }
}
