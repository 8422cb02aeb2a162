//! A directory's attribute index: the verified metadata of its objects,
//! kept in one internal object so that a cold `ls -l` reads one GET beside
//! its LIST instead of one HEAD per entry.
//!
//! Every entry records what LIST showed of its object when its metadata was
//! read (ETag, size, LastModified) and is believed only while LIST still
//! shows exactly that, and only if it was read after that LastModified had
//! settled ([`SETTLE`]): a change of content moves the ETag, a change of
//! attributes (a self-copy) moves LastModified, and within one second a
//! change could move neither. So an entry is never staler than a HEAD made
//! at the LIST would be. Entries are the metadata as stored in S3 (xattrs
//! still encrypted) and pass the same attribute MAC check a HEAD does; the
//! index as a whole carries a MAC under a key derived from the volume key,
//! bound to its directory (docs/FORMAT.md, "Attribute index"). A missing,
//! damaged or forged index costs HEADs, never a wrong attribute.
//!
//! Whoever lists a directory and has to HEAD entries writes the index again
//! (conditionally, so two writers cannot interleave): entries LIST still
//! vouches for, plus the settled ones just read. Nothing else keeps it: a
//! changed object's entry stops matching LIST by itself.

use super::AttestedStore;
use crate::store::{
    head_each, whole_seconds, ListEntry, ListedVersion, Metadata, ObjectInfo, ObjectStore,
    Observed, PutCondition, StoreError, LISTED_HEAD_CONCURRENCY,
};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where indexes live, below the volume prefix: one per directory, named by
/// the SHA-256 of its prefix.
pub const INDEX_DIR: &str = ".sealfs/attribute-index";
/// The index body's format.
const FORMAT: u32 = 1;
const MAC_LEN: usize = 32;
/// An index larger than this is not read (a directory of ~100,000 entries).
pub const MAX_BYTES: u64 = 64 << 20;
/// A directory with more entries than this gets no index.
pub const MAX_ENTRIES: usize = 100_000;

/// How a mount uses attribute indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexUse {
    /// Neither read nor written: every cold entry costs a HEAD.
    Off,
    /// Read, never written (read-only mounts).
    Read,
    /// Read, and written by listings that had to HEAD.
    ReadWrite,
}

/// One object's metadata as stored, and what LIST showed of it then
/// (stored as the fields `etag`, `size` and `modified`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    #[serde(flatten)]
    version: ListedVersion,
    /// When the metadata was read (the reader's clock before the HEAD),
    /// whole seconds since the epoch.
    seen: u64,
    /// The metadata as S3 returned it: checked by the attribute MAC on use.
    meta: Metadata,
}

#[derive(Serialize, Deserialize)]
struct Body {
    format: u32,
    /// The directory prefix, again inside the MAC.
    dir: String,
    /// By name within the directory.
    entries: BTreeMap<String, IndexEntry>,
}

impl IndexEntry {
    /// The entry for metadata read at `at` as `raw`; `None` unless it had
    /// settled (LIST could not vouch for it later).
    pub fn record(raw: &ObjectInfo, at: SystemTime) -> Option<IndexEntry> {
        Some(IndexEntry {
            version: ListedVersion::settled(raw, at)?,
            seen: whole_seconds(at),
            meta: raw.metadata.clone(),
        })
    }

    /// Whether LIST's `entry` shows the very version this was read from.
    pub fn vouched_by(&self, entry: &ListEntry) -> bool {
        self.version.settled_by(self.seen)
            && ListedVersion::of_entry(entry).as_ref() == Some(&self.version)
    }

    /// The HEAD this entry stands for (metadata still as stored).
    fn raw_info(&self, key: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: self.version.size,
            etag: self.version.etag.clone(),
            metadata: self.meta.clone(),
            last_modified: Some(UNIX_EPOCH + Duration::from_secs(self.version.modified)),
        }
    }

    fn seen_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.seen)
    }
}

/// An index as read: its entries, and the ETag a rewrite is conditional on.
#[derive(Default)]
pub struct DirIndex {
    /// `None`: there was no index object.
    pub etag: Option<String>,
    pub entries: BTreeMap<String, IndexEntry>,
}

/// The index object of directory prefix `dir` in the volume at `prefix`.
pub fn index_key(prefix: &str, dir: &str) -> String {
    let digest = hex::encode(Sha256::digest(dir.as_bytes()));
    crate::volume::join(prefix, &format!("{INDEX_DIR}/{digest}"))
}

impl AttestedStore {
    /// The stored form of `entries` for `dir`: MAC, then the JSON body.
    pub fn encode_index(&self, dir: &str, entries: BTreeMap<String, IndexEntry>) -> Vec<u8> {
        let body = serde_json::to_vec(&Body {
            format: FORMAT,
            dir: dir.to_string(),
            entries,
        })
        .expect("an index serializes");
        let mut out = self.keys.index_mac(self.bucket(), dir, &body).to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// The entries of a stored index of `dir`, or why it is not believed.
    pub fn decode_index(
        &self,
        dir: &str,
        bytes: &[u8],
    ) -> Result<BTreeMap<String, IndexEntry>, &'static str> {
        if bytes.len() < MAC_LEN {
            return Err("shorter than its MAC");
        }
        let (mac, body) = bytes.split_at(MAC_LEN);
        if !self.keys.check_index(self.bucket(), dir, body, mac) {
            return Err("MAC mismatch (edited, or from another directory or volume)");
        }
        let body: Body = serde_json::from_slice(body).map_err(|_| "malformed")?;
        if body.format != FORMAT {
            return Err("unknown format");
        }
        if body.dir != dir {
            return Err("names another directory");
        }
        Ok(body.entries)
    }

    /// The index of `dir`; one that cannot be read or believed is logged
    /// and read as empty (its ETag kept, so a rewrite replaces it).
    async fn read_index(&self, dir: &str) -> DirIndex {
        let key = index_key(&self.prefix, dir);
        let got = match self.inner.get(&key, Some(0..MAX_BYTES), None).await {
            Ok(got) => got,
            Err(StoreError::NotFound { .. }) => return DirIndex::default(),
            Err(e) => {
                tracing::warn!(error = %e, "attribute index of {dir} not read: every entry is HEADed");
                return DirIndex::default();
            }
        };
        let etag = Some(got.info.etag.clone());
        if got.info.size > MAX_BYTES {
            tracing::warn!("attribute index {key} is over {MAX_BYTES} bytes: ignored");
            return DirIndex {
                etag,
                ..DirIndex::default()
            };
        }
        match self.decode_index(dir, &got.body) {
            Ok(entries) => DirIndex { etag, entries },
            Err(reason) => {
                tracing::warn!("attribute index {key} ignored: {reason}");
                DirIndex {
                    etag,
                    ..DirIndex::default()
                }
            }
        }
    }

    /// One wanted entry: from the index if it vouches for it and its
    /// attributes verify, else by HEAD. Also returns the entry to index, if
    /// a HEAD read settled metadata that verified.
    async fn head_one(
        &self,
        entry: &ListEntry,
        indexed: Option<&IndexEntry>,
    ) -> (Result<Observed, StoreError>, Option<IndexEntry>) {
        if let Some(x) = indexed.filter(|x| x.vouched_by(entry)) {
            match self.open(&entry.key, x.raw_info(&entry.key)).await {
                Ok(info) => {
                    let at = x.seen_at();
                    return (Ok(Observed { info, at }), None);
                }
                // The index's MAC held, so this is a key change or a
                // missing xattr sidecar: S3 itself decides.
                Err(e) => tracing::debug!(error = %e, "indexed attributes refused; asking S3"),
            }
        }
        let at = SystemTime::now();
        let raw = match self.inner.head(&entry.key).await {
            Ok(raw) => raw,
            Err(e) => return (Err(e), None),
        };
        let record = IndexEntry::record(&raw, at);
        match self.open(&entry.key, raw).await {
            Ok(info) => (Ok(Observed { info, at }), record),
            Err(e) => (Err(e), None),
        }
    }

    /// [`ObjectStore::head_listed`] through the directory's index.
    pub(super) async fn head_listed_indexed(
        &self,
        dir: &str,
        listing: &[ListEntry],
        wanted: &[usize],
    ) -> Vec<Result<Observed, StoreError>> {
        if self.index == IndexUse::Off || crate::volume::is_internal(dir) || wanted.is_empty() {
            return head_each(self, listing, wanted).await;
        }
        let index = self.read_index(dir).await;
        let name = |e: &ListEntry| e.key.strip_prefix(dir).unwrap_or(&e.key).to_string();
        let results: Vec<_> = futures::stream::iter(wanted.iter().copied().map(|i| {
            let entry = &listing[i];
            let name = name(entry);
            let indexed = index.entries.get(&name);
            async move { (name, self.head_one(entry, indexed).await) }
        }))
        .buffered(LISTED_HEAD_CONCURRENCY)
        .collect()
        .await;

        let mut fresh = BTreeMap::new();
        let mut out = Vec::with_capacity(results.len());
        for (name, (result, record)) in results {
            if let Some(r) = record {
                fresh.insert(name, r);
            }
            out.push(result);
        }
        if self.index == IndexUse::ReadWrite {
            self.rewrite_index(dir, listing, index, fresh).await;
        }
        out
    }

    /// Writes `dir`'s index again when it gains or loses entries: those LIST
    /// still vouches for, and `fresh`. Conditional on the index read, so a
    /// concurrent rewrite wins and this one is dropped (it is only a cache).
    async fn rewrite_index(
        &self,
        dir: &str,
        listing: &[ListEntry],
        old: DirIndex,
        fresh: BTreeMap<String, IndexEntry>,
    ) {
        let old_len = old.entries.len();
        let mut entries: BTreeMap<String, IndexEntry> = listing
            .iter()
            .filter_map(|e| {
                let name = e.key.strip_prefix(dir)?;
                let x = old.entries.get(name)?;
                x.vouched_by(e).then(|| (name.to_string(), x.clone()))
            })
            .collect();
        let kept = entries.len();
        let added = fresh.len();
        entries.extend(fresh);
        if (added == 0 && kept == old_len) || entries.len() > MAX_ENTRIES {
            return;
        }
        let cond = match &old.etag {
            Some(etag) => PutCondition::IfMatch(etag.clone()),
            None => PutCondition::IfNoneMatch,
        };
        let key = index_key(&self.prefix, dir);
        let body = Bytes::from(self.encode_index(dir, entries));
        match self.inner.put(&key, body, &Metadata::new(), &cond).await {
            Ok(_) => {}
            Err(StoreError::PreconditionFailed { .. }) => {
                tracing::debug!("attribute index {key} rewritten concurrently; this one dropped")
            }
            Err(e) => tracing::warn!(error = %e, "attribute index {key} not written"),
        }
    }
}
