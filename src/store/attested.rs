//! Authenticated attributes: a store decorator that MACs every object's
//! sealfs metadata on the way in and verifies it on the way out, and keeps
//! `user.*` xattr values encrypted in S3 (format 2 of the attributes; the
//! construction is in [`crate::crypto::attributes`]).
//!
//! Callers above see plaintext metadata, exactly as before: each xattr as a
//! `sealfs-x-<hex name>` entry. Below, in S3, they become one encrypted
//! `sealfs-xattrs` blob (or, when that would not fit S3's 2 KB of user
//! metadata, an encrypted object in the volume's internal area named by its
//! SHA-256 in `sealfs-xref`), and every `sealfs-*` entry is covered by the
//! `sealfs-amac` MAC, bound to the object's key. Because every write goes
//! through here, no path can forget to authenticate, and every read of
//! metadata (HEAD or GET) is verified before anyone acts on it.
//!
//! Objects in a volume's internal area (`.sealfs/`) pass through untouched.
//!
//! Version rule: in a format-2 volume every object must carry a valid MAC;
//! one without is refused like one with a wrong MAC. In a format-1 volume an
//! object without a MAC was written before attributes were authenticated:
//! its type, times and xattrs are read as stored, but its permission bits,
//! owner and device number are not (the mount's defaults apply), so an
//! edited legacy object can neither widen access nor change hands.

mod index;
#[cfg(test)]
mod index_tests;

pub use index::IndexUse;

use super::{
    GetResult, GetStream, ListEntry, ListPage, Metadata, ObjectInfo, ObjectStore, Observed,
    PutCondition, StoreError,
};
use crate::crypto::attributes::AttributeKeys;
use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

/// The MAC over every `sealfs-*` entry.
pub const MAC: &str = "sealfs-amac";
/// The encrypted xattr set, base64.
pub const XATTRS: &str = "sealfs-xattrs";
/// SHA-256 (hex) of the encrypted xattr set kept as an internal object.
pub const XREF: &str = "sealfs-xref";
/// Plaintext form of one xattr, as callers see it: `sealfs-x-<hex name>`.
pub const XATTR_PREFIX: &str = "sealfs-x-";
/// Entries of a MAC-less (format 1) object that are not believed.
pub const LEGACY_UNTRUSTED: [&str; 4] = ["sealfs-mode", "sealfs-uid", "sealfs-gid", "sealfs-rdev"];
/// Bytes the MAC entry takes in object metadata (its name and 64 hex digits).
pub const MAC_ENTRY_SIZE: usize = MAC.len() + 64;
/// S3's limit on user metadata: names and values, in bytes.
pub const METADATA_LIMIT: usize = 2048;
/// Where large xattr sets live, below the volume prefix.
const SIDECAR_DIR: &str = ".sealfs/xattrs";

/// Whether objects without a MAC are refused (format 2) or read with the
/// legacy limits (format 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttributeRule {
    Strict,
    Legacy,
}

pub struct AttestedStore {
    inner: Arc<dyn ObjectStore>,
    keys: AttributeKeys,
    /// The volume's prefix.
    prefix: String,
    sidecars: String,
    rule: AttributeRule,
    /// Whether directory listings read and write attribute indexes.
    index: IndexUse,
}

fn is_sealfs(name: &str) -> bool {
    name.starts_with("sealfs-")
}

/// Bytes S3 counts against the user-metadata limit.
pub fn metadata_size(m: &Metadata) -> usize {
    m.iter().map(|(k, v)| k.len() + v.len()).sum()
}

impl AttestedStore {
    /// Wraps `inner` for the volume at `prefix`.
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        keys: AttributeKeys,
        prefix: &str,
        rule: AttributeRule,
    ) -> Self {
        AttestedStore {
            inner,
            keys,
            prefix: prefix.to_string(),
            sidecars: crate::volume::join(prefix, SIDECAR_DIR),
            rule,
            index: IndexUse::ReadWrite,
        }
    }

    /// How listings use attribute indexes (read and written by default).
    pub fn with_index(mut self, index: IndexUse) -> Self {
        self.index = index;
        self
    }

    fn tampered(&self, key: &str, reason: impl Into<String>) -> StoreError {
        StoreError::Tampered {
            bucket: self.inner.bucket().to_string(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    fn sidecar_key(&self, digest: &str) -> String {
        format!("{}/{digest}", self.sidecars)
    }

    /// The metadata to store for `key`: xattrs encrypted, everything MACed.
    async fn seal(&self, key: &str, metadata: &Metadata) -> Result<Metadata, StoreError> {
        if crate::volume::is_internal(key) {
            return Ok(metadata.clone());
        }
        let mut m = Metadata::new();
        let mut xattrs = BTreeMap::new();
        for (k, v) in metadata {
            if [MAC, XATTRS, XREF].contains(&k.as_str()) {
                continue;
            }
            match k.strip_prefix(XATTR_PREFIX) {
                Some(hex_name) => {
                    let name = hex::decode(hex_name)
                        .map_err(|_| self.tampered(key, format!("xattr entry {k} malformed")))?;
                    let value = B64
                        .decode(v)
                        .map_err(|_| self.tampered(key, format!("xattr entry {k} not base64")))?;
                    xattrs.insert(name, value);
                }
                None => {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        if !xattrs.is_empty() {
            let blob = self.keys.seal_xattrs(self.inner.bucket(), key, &xattrs);
            let inline = B64.encode(&blob);
            // Room for the MAC entry as well.
            if metadata_size(&m) + XATTRS.len() + inline.len() + MAC_ENTRY_SIZE <= METADATA_LIMIT {
                m.insert(XATTRS.into(), inline);
            } else {
                let digest = hex::encode(Sha256::digest(&blob));
                self.inner
                    .put(
                        &self.sidecar_key(&digest),
                        Bytes::from(blob),
                        &Metadata::new(),
                        &PutCondition::None,
                    )
                    .await?;
                m.insert(XREF.into(), digest);
            }
        }
        let mac = self.keys.mac(
            self.inner.bucket(),
            key,
            m.iter().filter(|(k, _)| is_sealfs(k)),
        );
        m.insert(MAC.into(), hex::encode(mac));
        let size = metadata_size(&m);
        if size > METADATA_LIMIT {
            return Err(StoreError::MetadataTooLarge {
                bucket: self.inner.bucket().to_string(),
                key: key.to_string(),
                size,
            });
        }
        Ok(m)
    }

    /// The verified, plaintext metadata of `info` (the object at `key`).
    async fn open(&self, key: &str, mut info: ObjectInfo) -> Result<ObjectInfo, StoreError> {
        if crate::volume::is_internal(key) {
            return Ok(info);
        }
        let m = std::mem::take(&mut info.metadata);
        let Some(mac) = m.get(MAC) else {
            // A directory marker without any sealfs metadata reads as an
            // implicit directory (the mount's defaults): what deleting the
            // marker gives, which nobody can detect anyway. Some
            // S3-compatible stores (SeaweedFS) keep no metadata on keys
            // ending in '/'.
            if key.ends_with('/') && !m.keys().any(|k| is_sealfs(k)) {
                info.metadata = m;
                return Ok(info);
            }
            if self.rule == AttributeRule::Strict {
                return Err(self.tampered(key, "no attribute MAC (required in this volume)"));
            }
            // Malformed xattr entries are dropped (no name or value to show).
            let readable = |k: &str, v: &str| match k.strip_prefix(XATTR_PREFIX) {
                Some(name) => hex::decode(name).is_ok() && B64.decode(v).is_ok(),
                None => true,
            };
            info.metadata = m
                .into_iter()
                .filter(|(k, v)| {
                    !LEGACY_UNTRUSTED.contains(&k.as_str())
                        && k != XATTRS
                        && k != XREF
                        && readable(k, v)
                })
                .collect();
            return Ok(info);
        };
        let covered = m.iter().filter(|(k, _)| is_sealfs(k) && k.as_str() != MAC);
        if !self.keys.check(self.inner.bucket(), key, covered, mac) {
            return Err(self.tampered(
                key,
                "attribute MAC mismatch (metadata edited, or moved from another object)",
            ));
        }
        let blob = match (m.get(XATTRS), m.get(XREF)) {
            (Some(b), None) => Some(
                B64.decode(b)
                    .map_err(|_| self.tampered(key, "xattr blob not base64"))?,
            ),
            (None, Some(digest)) => Some(self.sidecar(key, digest).await?),
            (None, None) => None,
            (Some(_), Some(_)) => return Err(self.tampered(key, "two xattr sets")),
        };
        let mut out: Metadata = m
            .into_iter()
            .filter(|(k, _)| {
                ![MAC, XATTRS, XREF].contains(&k.as_str()) && !k.starts_with(XATTR_PREFIX)
            })
            .collect();
        if let Some(blob) = blob {
            let xattrs = self
                .keys
                .open_xattrs(self.inner.bucket(), key, &blob)
                .ok_or_else(|| self.tampered(key, "xattrs do not authenticate"))?;
            for (name, value) in xattrs {
                out.insert(
                    format!("{XATTR_PREFIX}{}", hex::encode(name)),
                    B64.encode(value),
                );
            }
        }
        info.metadata = out;
        Ok(info)
    }

    /// The encrypted xattr set kept beside the object, checked against its digest.
    async fn sidecar(&self, key: &str, digest: &str) -> Result<Vec<u8>, StoreError> {
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.tampered(key, "xattr reference malformed"));
        }
        let got = self
            .inner
            .get(&self.sidecar_key(digest), None, None)
            .await
            .map_err(|e| match e {
                StoreError::NotFound { .. } => self.tampered(key, "xattr set missing"),
                e => e,
            })?;
        if hex::encode(Sha256::digest(&got.body)) != digest {
            return Err(self.tampered(key, "xattr set does not match its digest"));
        }
        Ok(got.body.to_vec())
    }
}

#[async_trait]
impl ObjectStore for AttestedStore {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        let info = self.inner.head(key).await?;
        self.open(key, info).await
    }

    async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        if_match: Option<&str>,
    ) -> Result<GetResult, StoreError> {
        let got = self.inner.get(key, range, if_match).await?;
        Ok(GetResult {
            info: self.open(key, got.info).await?,
            body: got.body,
        })
    }

    async fn get_stream(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        if_match: Option<&str>,
    ) -> Result<GetStream, StoreError> {
        let got = self.inner.get_stream(key, range, if_match).await?;
        Ok(GetStream {
            info: self.open(key, got.info).await?,
            body: got.body,
        })
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: &Metadata,
        cond: &PutCondition,
    ) -> Result<String, StoreError> {
        let m = self.seal(key, metadata).await?;
        self.inner.put(key, body, &m, cond).await
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        self.inner.list(prefix, delimiter, token).await
    }

    async fn copy(
        &self,
        from: &str,
        to: &str,
        if_match: Option<&str>,
        metadata: &Metadata,
        cond: &PutCondition,
    ) -> Result<String, StoreError> {
        let m = self.seal(to, metadata).await?;
        self.inner.copy(from, to, if_match, &m, cond).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }

    async fn head_listed(
        &self,
        dir: &str,
        listing: &[ListEntry],
        wanted: &[usize],
    ) -> Vec<Result<Observed, StoreError>> {
        self.head_listed_indexed(dir, listing, wanted).await
    }

    async fn create_multipart(&self, key: &str, metadata: &Metadata) -> Result<String, StoreError> {
        let m = self.seal(key, metadata).await?;
        self.inner.create_multipart(key, &m).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        self.inner
            .upload_part(key, upload_id, part_number, body)
            .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(i32, String)>,
        cond: &PutCondition,
    ) -> Result<String, StoreError> {
        self.inner
            .complete_multipart(key, upload_id, parts, cond)
            .await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.inner.abort_multipart(key, upload_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use proptest::prelude::*;

    fn stores(rule: AttributeRule) -> (MemoryStore, AttestedStore) {
        let mem = MemoryStore::new("b");
        let keys = AttributeKeys::derive(&[4u8; 32]);
        let s = AttestedStore::new(Arc::new(mem.clone()), keys, "vol", rule);
        (mem, s)
    }

    fn meta(pairs: &[(&str, &str)]) -> Metadata {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn legacy_objects_keep_type_times_and_xattrs_but_not_mode_or_owner() {
        let (mem, s) = stores(AttributeRule::Legacy);
        let old = meta(&[
            ("sealfs-type", "l"),
            ("sealfs-mode", "4777"),
            ("sealfs-uid", "0"),
            ("sealfs-gid", "0"),
            ("sealfs-mtime", "5.0"),
            ("sealfs-x-636f6c6f72", "Ymx1ZQ=="),
        ]);
        mem.put("vol/l", Bytes::new(), &old, &PutCondition::None)
            .await
            .unwrap();
        let seen = s.head("vol/l").await.unwrap().metadata;
        assert_eq!(
            seen,
            meta(&[
                ("sealfs-type", "l"),
                ("sealfs-mtime", "5.0"),
                ("sealfs-x-636f6c6f72", "Ymx1ZQ=="),
            ])
        );
        // Written again through the store, it is authenticated from then on,
        // and a MAC that fails is refused even in a legacy volume.
        s.put("vol/l", Bytes::new(), &old, &PutCondition::None)
            .await
            .unwrap();
        assert_eq!(s.head("vol/l").await.unwrap().metadata, old);
        let (body, mut m) = mem.raw("vol/l").unwrap();
        m.insert("sealfs-uid".into(), "7".into());
        mem.tamper("vol/l", Some(body), Some(m));
        assert!(matches!(
            s.head("vol/l").await,
            Err(StoreError::Tampered { .. })
        ));
    }

    #[tokio::test]
    async fn internal_objects_pass_through_and_strict_refuses_bare_objects() {
        let (mem, s) = stores(AttributeRule::Strict);
        let m = meta(&[("anything", "x")]);
        s.put(
            "vol/.sealfs/volume.json",
            Bytes::new(),
            &m,
            &PutCondition::None,
        )
        .await
        .unwrap();
        assert_eq!(mem.raw("vol/.sealfs/volume.json").unwrap().1, m);
        assert_eq!(s.head("vol/.sealfs/volume.json").await.unwrap().metadata, m);
        mem.put(
            "vol/bare",
            Bytes::new(),
            &Metadata::new(),
            &PutCondition::None,
        )
        .await
        .unwrap();
        assert!(matches!(
            s.get("vol/bare", None, None).await,
            Err(StoreError::Tampered { .. })
        ));
        // A marker with no sealfs metadata at all is an implicit directory;
        // one with some but no MAC is refused.
        let other = meta(&[("other", "x")]);
        mem.put("vol/d/", Bytes::new(), &other, &PutCondition::None)
            .await
            .unwrap();
        assert_eq!(s.head("vol/d/").await.unwrap().metadata, other);
        let partial = meta(&[("sealfs-mode", "777")]);
        mem.put("vol/e/", Bytes::new(), &partial, &PutCondition::None)
            .await
            .unwrap();
        assert!(matches!(
            s.head("vol/e/").await,
            Err(StoreError::Tampered { .. })
        ));
    }

    proptest! {
        /// Any stored metadata map reads as verified metadata or a refusal,
        /// never a panic, under either rule.
        #[test]
        fn any_stored_metadata_is_verified_or_refused(
            m in proptest::collection::btree_map(
                prop_oneof![
                    Just(MAC.to_string()), Just(XATTRS.to_string()), Just(XREF.to_string()),
                    Just("sealfs-mode".to_string()), "sealfs-x-[0-9a-f]{0,6}", "[a-z-]{1,12}",
                ],
                prop_oneof!["[0-9a-f]{64}", "[A-Za-z0-9+/=]{0,40}", any::<String>()],
                0..6,
            ),
            strict in any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let rule = if strict { AttributeRule::Strict } else { AttributeRule::Legacy };
                let (mem, s) = stores(rule);
                let m: Metadata = m.into_iter().collect();
                mem.put("vol/k", Bytes::new(), &m, &PutCondition::None).await.unwrap();
                if let Ok(info) = s.head("vol/k").await {
                    // Whatever passes can be written back and reads the same.
                    s.put("vol/k", Bytes::new(), &info.metadata, &PutCondition::None).await.unwrap();
                    prop_assert_eq!(s.head("vol/k").await.unwrap().metadata, info.metadata);
                }
                Ok(())
            })?;
        }
    }
}
