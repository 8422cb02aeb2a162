//! The object store: the `ObjectStore` trait, its S3 and in-memory
//! implementations, and the concurrent multipart upload driver.
//!
//! The trait is deliberately close to S3's own operations so that request
//! counts seen through the in-memory store predict those against S3.

pub mod attested;
#[cfg(test)]
mod faulty;
#[cfg(test)]
mod memory;
mod multipart;
mod s3;

pub use attested::{AttestedStore, AttributeRule, IndexUse};
#[cfg(test)]
pub use faulty::FaultyStore;
#[cfg(test)]
pub use memory::MemoryStore;
pub use multipart::MultipartUpload;
pub use s3::S3Store;

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// User metadata (`x-amz-meta-*`), names without the prefix, lower case.
pub type Metadata = BTreeMap<String, String>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    /// Size of the whole object, even for a ranged GET.
    pub size: u64,
    pub etag: String,
    pub metadata: Metadata,
    pub last_modified: Option<SystemTime>,
}

#[derive(Clone, Debug)]
pub struct GetResult {
    pub body: Bytes,
    pub info: ObjectInfo,
}

/// A GET whose body arrives piece by piece ([`ObjectStore::get_stream`]),
/// so a reader can work on each piece while it is still in cache.
pub struct GetStream {
    pub info: ObjectInfo,
    /// The body's pieces in order; an error ends it. The pieces may be
    /// fewer bytes than announced (the caller checks the length it needs).
    pub body: futures::stream::BoxStream<'static, Result<Bytes, StoreError>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: Option<SystemTime>,
}

/// How long after the second of an object's LastModified its metadata must
/// have been read for LIST to vouch for it later. S3 keeps LastModified to
/// the second, and a metadata-only change (a self-copy) keeps a single-part
/// object's ETag and size: within that second, a change can leave what LIST
/// shows exactly as it was. Read a full second after it (and one more for
/// the local clock's distance from S3's), the metadata is the last one with
/// that LastModified.
pub const SETTLE: Duration = Duration::from_secs(2);

/// What LIST shows of one version of an object: equal values mean the same
/// content and the same metadata, once that metadata has settled
/// ([`SETTLE`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListedVersion {
    pub etag: String,
    pub size: u64,
    /// LastModified in whole seconds since the epoch (LIST may give
    /// milliseconds where HEAD gives seconds).
    pub modified: u64,
}

/// `t` in whole seconds since the epoch.
pub fn whole_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl ListedVersion {
    pub fn of_entry(e: &ListEntry) -> Option<ListedVersion> {
        Some(ListedVersion {
            etag: e.etag.clone(),
            size: e.size,
            modified: whole_seconds(e.last_modified?),
        })
    }

    /// The version whose metadata was read at `at` (the local clock, taken
    /// before the request), if that metadata had settled by then.
    pub fn settled(info: &ObjectInfo, at: SystemTime) -> Option<ListedVersion> {
        let v = ListedVersion {
            etag: info.etag.clone(),
            size: info.size,
            modified: whole_seconds(info.last_modified?),
        };
        v.settled_by(whole_seconds(at)).then_some(v)
    }

    /// Whether metadata read at `seen` (whole seconds, the local clock) had
    /// settled for this version ([`SETTLE`]).
    pub fn settled_by(&self, seen: u64) -> bool {
        seen >= self.modified + SETTLE.as_secs()
    }
}

/// An object's verified attributes and when they were read.
#[derive(Clone, Debug)]
pub struct Observed {
    pub info: ObjectInfo,
    /// The local clock before the read was sent.
    pub at: SystemTime,
}

impl Observed {
    /// What LIST will show while these attributes stand, if LIST can vouch
    /// for them ([`SETTLE`]).
    pub fn listed_version(&self) -> Option<ListedVersion> {
        ListedVersion::settled(&self.info, self.at)
    }
}

/// HEADs in flight for one listing.
pub const LISTED_HEAD_CONCURRENCY: usize = 64;

/// HEADs of `wanted` (indexes into `listing`), at most
/// [`LISTED_HEAD_CONCURRENCY`] at a time, results in order.
pub async fn head_each(
    store: &(impl ObjectStore + ?Sized),
    listing: &[ListEntry],
    wanted: &[usize],
) -> Vec<Result<Observed, StoreError>> {
    use futures::StreamExt;
    futures::stream::iter(wanted.iter().copied().map(|i| {
        let key = listing[i].key.as_str();
        async move {
            let at = SystemTime::now();
            store.head(key).await.map(|info| Observed { info, at })
        }
    }))
    .buffered(LISTED_HEAD_CONCURRENCY)
    .collect()
    .await
}

#[derive(Clone, Debug, Default)]
pub struct ListPage {
    pub objects: Vec<ListEntry>,
    /// Common prefixes (with the delimiter) when a delimiter was given.
    pub prefixes: Vec<String>,
    /// Continuation token for the next page.
    pub next: Option<String>,
}

/// Requests served, by S3 operation.
#[derive(Debug, Default)]
pub struct RequestCounts {
    pub get: AtomicU64,
    pub head: AtomicU64,
    pub put: AtomicU64,
    pub list: AtomicU64,
    pub copy: AtomicU64,
    pub delete: AtomicU64,
    pub create_multipart: AtomicU64,
    pub upload_part: AtomicU64,
    pub complete_multipart: AtomicU64,
    pub abort_multipart: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl RequestCounts {
    /// `(operation, count)` for every operation with a non-zero count.
    pub fn nonzero(&self) -> Vec<(&'static str, u64)> {
        let all = [
            ("GET", &self.get),
            ("HEAD", &self.head),
            ("PUT", &self.put),
            ("LIST", &self.list),
            ("COPY", &self.copy),
            ("DELETE", &self.delete),
            ("CreateMultipartUpload", &self.create_multipart),
            ("UploadPart", &self.upload_part),
            ("CompleteMultipartUpload", &self.complete_multipart),
            ("AbortMultipartUpload", &self.abort_multipart),
        ];
        all.iter()
            .map(|(n, c)| (*n, c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect()
    }
}

/// Condition on a write: how concurrent writers are kept from silently
/// overwriting each other (docs/SEMANTICS.md, "Consistency between mounts").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutCondition {
    /// Unconditional.
    None,
    /// `If-None-Match: *`: only if no object exists at the key.
    IfNoneMatch,
    /// `If-Match: <etag>`: only if the object is still the one we saw.
    IfMatch(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("no object at s3://{bucket}/{key}")]
    NotFound { bucket: String, key: String },
    #[error("bucket {0} does not exist")]
    NoSuchBucket(String),
    #[error("S3 denied {action} on s3://{bucket}/{key}")]
    AccessDenied {
        action: &'static str,
        bucket: String,
        key: String,
    },
    #[error("no AWS credentials found (set AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or use an instance role)")]
    NoCredentials,
    #[error("s3://{bucket}/{key} changed concurrently (precondition failed)")]
    PreconditionFailed { bucket: String, key: String },
    #[error("S3 throttled {action} (retries exhausted)")]
    Throttled { action: &'static str },
    #[error("S3 unreachable during {action}: {message}")]
    Unavailable {
        action: &'static str,
        message: String,
    },
    #[error("requested range not satisfiable on s3://{bucket}/{key}")]
    InvalidRange { bucket: String, key: String },
    /// Object metadata that does not authenticate ([`attested`]).
    #[error("s3://{bucket}/{key} failed verification: attributes: {reason}")]
    Tampered {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("object metadata of s3://{bucket}/{key} would be {size} bytes, over S3's 2 KB limit for user metadata")]
    MetadataTooLarge {
        bucket: String,
        key: String,
        size: usize,
    },
    #[error("S3 {action} failed: {message}")]
    Other {
        action: &'static str,
        message: String,
    },
}

/// The operations sealfs needs from S3.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    fn bucket(&self) -> &str;

    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError>;

    /// GET of the whole object or of `range` (end exclusive), optionally pinned
    /// with `If-Match` so a read never mixes two versions.
    async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        if_match: Option<&str>,
    ) -> Result<GetResult, StoreError>;

    /// [`get`](Self::get), with the body handed over as it arrives rather
    /// than collected (the S3 store streams it; the others hand over the
    /// whole body as one piece).
    async fn get_stream(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        if_match: Option<&str>,
    ) -> Result<GetStream, StoreError> {
        let got = self.get(key, range, if_match).await?;
        let body = got.body;
        Ok(GetStream {
            info: got.info,
            body: Box::pin(futures::stream::once(async move { Ok(body) })),
        })
    }

    /// Single-request PUT; returns the new ETag.
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: &Metadata,
        cond: &PutCondition,
    ) -> Result<String, StoreError>;

    /// One page of ListObjectsV2.
    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
    ) -> Result<ListPage, StoreError>;

    /// Server-side copy with the metadata replaced (`x-amz-metadata-directive: REPLACE`).
    /// `source_etag` pins the version copied (`x-amz-copy-source-if-match`):
    /// PreconditionFailed if the source changed since it was read.
    async fn copy(
        &self,
        from: &str,
        to: &str,
        source_etag: Option<&str>,
        metadata: &Metadata,
        cond: &PutCondition,
    ) -> Result<String, StoreError>;

    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// The attributes of the objects at `wanted` (indexes into `listing`, a
    /// complete LIST of the directory prefix `dir`), in that order: what a
    /// HEAD of each would say. The authenticating store answers from the
    /// directory's attribute index where it vouches for an entry
    /// ([`AttestedStore`]); the rest send one HEAD each.
    async fn head_listed(
        &self,
        dir: &str,
        listing: &[ListEntry],
        wanted: &[usize],
    ) -> Vec<Result<Observed, StoreError>> {
        let _ = dir;
        head_each(self, listing, wanted).await
    }

    async fn create_multipart(&self, key: &str, metadata: &Metadata) -> Result<String, StoreError>;

    /// Uploads part `part_number` (1-based); returns its ETag.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> Result<String, StoreError>;

    /// Completes the upload; the object becomes visible only now, and only if `cond` holds.
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(i32, String)>,
        cond: &PutCondition,
    ) -> Result<String, StoreError>;

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError>;
}

/// Lists every object under `prefix` (no delimiter), following continuation tokens.
pub async fn list_all(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<ListEntry>, StoreError> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = store.list(prefix, None, token.as_deref()).await?;
        out.extend(page.objects);
        match page.next {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}
