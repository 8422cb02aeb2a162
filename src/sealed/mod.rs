//! Sealed objects in a store: writing a plaintext stream as one encrypted
//! object, and opening one for verified random-access reads.
//!
//! This is the layer both the CLI (`put`, `get`) and the filesystem core use.
//! It knows the object metadata that travels with each object (wrapped data
//! key, KMS key id, file id, path binding) and wires the format to the store
//! and key service.

pub use branches::{BranchSettings, Branches};
#[cfg(test)]
use keys::meta;
pub use keys::{KeyRef, KeySource, SealMeta, Verified, WriteKey};

/// One entry of a [`SegmentCache`]: segment `index` of one version (ETag)
/// of an object whose segments are `segment_size` bytes, `len` bytes long
/// (known from the verified header), or the object's header (index
/// [`HEADER_SLOT`]).
#[derive(Clone, Copy, Debug)]
pub struct Slot<'a> {
    pub key: &'a str,
    pub etag: &'a str,
    pub segment_size: u64,
    pub index: u64,
    pub len: u64,
}

impl Slot<'_> {
    /// The header's slot of that version.
    pub fn header<'a>(key: &'a str, etag: &'a str) -> Slot<'a> {
        Slot {
            key,
            etag,
            segment_size: 0,
            index: HEADER_SLOT,
            len: HEADER_LEN as u64,
        }
    }
}

/// Verified plaintext segments kept beyond memory (the mount's encrypted
/// read cache on local disk), by object key, version and segment index.
pub trait SegmentCache: Send + Sync {
    /// Whether that entry is there (no I/O).
    fn has(&self, at: &Slot) -> bool;
    /// Bytes `range` of that entry, clamped to its length; `None` when it
    /// is not there or does not verify (an entry of another length than
    /// `at.len` does not verify).
    fn get_range(&self, at: &Slot, range: std::ops::Range<u64>) -> Option<Vec<u8>>;
    /// The whole entry.
    fn get(&self, at: &Slot) -> Option<Vec<u8>> {
        self.get_range(at, 0..at.len)
    }
    /// Offers one entry (a segment or the header): kept if the cache can
    /// take it now, never waited for.
    fn put(&self, at: &Slot, plain: Bytes);
    /// Offers consecutive segments from `first` on, `first.segment_size`
    /// bytes each (the last may be shorter: the object's end). A cache may
    /// store a run more cheaply than its segments one by one.
    fn put_run(&self, first: &Slot, plain: Bytes) {
        let size = first.segment_size.max(1) as usize;
        for (n, a) in (0..plain.len()).step_by(size).enumerate() {
            let b = (a + size).min(plain.len());
            let at = Slot {
                index: first.index + n as u64,
                len: (b - a) as u64,
                ..*first
            };
            self.put(&at, plain.slice(a..b));
        }
    }
    /// The segments a random read that misses `run` (inside an object of
    /// `segments` segments; `at` is its first) should fetch: `run` itself,
    /// or more when the cache judges that more would complete an entry
    /// worth having. At S3 latencies a GET of 1 MiB costs about what a GET
    /// of 64 KiB does.
    fn fill_run(
        &self,
        at: &Slot,
        run: std::ops::Range<u64>,
        segments: u64,
    ) -> std::ops::Range<u64> {
        let _ = (at, segments);
        run
    }
    /// Returns once everything put so far is stored (unmount).
    fn flush(&self);
    /// What the cache holds and has done, for `user.sealfs.stats`.
    fn stats(&self) -> CacheStats;
}

/// A [`SegmentCache`]'s figures since the mount (as `user.sealfs.stats`
/// shows them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Entries and bytes held now, and the bound on bytes.
    pub entries: u64,
    pub bytes: u64,
    pub limit: u64,
    /// Entries written, and entries offered but not kept because the
    /// writer was behind.
    pub stored: u64,
    pub dropped: u64,
}

/// The [`SegmentCache`] slot of an object's header (no segment has this index).
pub const HEADER_SLOT: u64 = u64::MAX;

/// Plaintext to seal, read by offset (staged content: an encrypted local
/// file in the mount, a plain file in tests).
pub trait PlainSource: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_plain_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl PlainSource for std::fs::File {
    fn read_plain_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

use crate::crypto::{Header, IntegrityError, Layout, Opener, RunOpener, Sealer, HEADER_LEN};
use crate::error::{Error, Result};
use crate::keys::KeyService;
use crate::store::{Metadata, MultipartUpload, ObjectInfo, ObjectStore, PutCondition, StoreError};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use lru::LruCache;
use parking_lot::Mutex;
use std::ops::Range;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Tunables of the I/O layer (separate from the components, so tests and
/// benchmarks can vary them).
#[derive(Clone, Debug)]
pub struct IoSettings {
    pub segment_size: u32,
    /// Plaintext bytes per multipart part (a multiple of the segment size).
    pub part_size: usize,
    pub upload_concurrency: usize,
    /// Plaintext bytes per ranged GET when streaming a whole object.
    pub read_run: u64,
    pub read_concurrency: usize,
}

impl Default for IoSettings {
    fn default() -> Self {
        IoSettings {
            segment_size: crate::crypto::DEFAULT_SEGMENT_SIZE,
            part_size: 8 << 20,
            upload_concurrency: 4,
            read_run: 8 << 20,
            read_concurrency: 4,
        }
    }
}

pub struct SealedStore {
    store: Arc<dyn ObjectStore>,
    keys: Arc<dyn KeyService>,
    settings: IoSettings,
    /// The only KMS key data keys are unwrapped with (see [`keys`]).
    pinned_key: String,
    /// Versions known to verify, by (object key, ETag) (see [`keys`]).
    verified: Mutex<LruCache<(String, String), KeyRef>>,
    /// An owner's branch keys (see [`branches`]); none for a grantee.
    branches: Option<Arc<Branches>>,
}

/// How many verified versions a store remembers.
const VERIFIED_VERSIONS: usize = 4096;

impl SealedStore {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        keys: Arc<dyn KeyService>,
        settings: IoSettings,
        pinned_key: impl Into<String>,
    ) -> Self {
        SealedStore {
            store,
            keys,
            settings,
            pinned_key: pinned_key.into(),
            verified: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(VERIFIED_VERSIONS).expect("non-zero"),
            )),
            branches: None,
        }
    }

    /// This store with an owner's branch keys: files sealed under a branch
    /// open with the branch's key, and, if `branches` writes, new files
    /// take keys derived from it.
    pub fn with_branches(mut self, branches: Branches) -> Self {
        self.branches = Some(Arc::new(branches));
        self
    }

    /// This store with the wrapped branch keys it fetches or makes kept in
    /// `dir` across mounts ([`Branches::with_local_copies`]).
    pub fn keep_branch_keys_in(mut self, dir: std::path::PathBuf) -> Self {
        if let Some(b) = self.branches.take() {
            let b = Arc::try_unwrap(b).unwrap_or_else(|shared| shared.sibling());
            self.branches = Some(Arc::new(b.with_local_copies(dir)));
        }
        self
    }

    /// Another store over the same bucket, keys and pin, knowing nothing of
    /// what this one verified (another client, in tests).
    pub fn sibling(&self) -> SealedStore {
        let mut s = SealedStore::new(
            self.store.clone(),
            self.keys.clone(),
            self.settings.clone(),
            self.pinned_key.clone(),
        );
        s.branches = self.branches.as_ref().map(|b| Arc::new(b.sibling()));
        s
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn keys(&self) -> &Arc<dyn KeyService> {
        &self.keys
    }

    pub fn settings(&self) -> &IoSettings {
        &self.settings
    }

    pub(crate) fn integrity(&self, key: &str, check: IntegrityError) -> Error {
        Error::Integrity {
            bucket: self.store.bucket().to_string(),
            key: key.to_string(),
            check,
        }
    }

    fn not_sealfs(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::NotSealfs {
            bucket: self.store.bucket().to_string(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// Copies the sealed object at `from` to `to` without touching its data:
    /// the binding at `from` is verified first (so a swapped object is not
    /// laundered by a rename), then re-computed for `to`. `edit` may change the
    /// other metadata (e.g. ctime). Returns the new ETag.
    pub async fn rebind_copy(
        &self,
        from: &str,
        to: &str,
        cond: &PutCondition,
        edit: impl Fn(&mut Metadata),
    ) -> Result<String> {
        // The copy is pinned to the version whose header was read; if the
        // source changes in between, read it again (a few times at most).
        let mut attempt = 0;
        loop {
            attempt += 1;
            let got = match self.store.get(from, Some(0..HEADER_LEN as u64), None).await {
                // Empty: no header, so not a sealed object (a special file).
                Err(StoreError::InvalidRange { .. }) => {
                    return Err(self.not_sealfs(from, "empty object"))
                }
                other => other?,
            };
            let mut metadata = got.info.metadata.clone();
            let sm = SealMeta::read_from(&metadata).map_err(|r| self.not_sealfs(from, r))?;
            let opener = self.verify_sealing(from, &sm, &got.body).await?;
            let moved = SealMeta {
                binding: opener.binding(self.store.bucket(), to),
                key: sm.key,
            };
            moved.write_into(&mut metadata);
            edit(&mut metadata);
            match self
                .store
                .copy(from, to, Some(&got.info.etag), &metadata, cond)
                .await
            {
                Err(StoreError::PreconditionFailed { .. })
                    if attempt < 4 && *cond == PutCondition::None =>
                {
                    continue
                }
                other => {
                    let etag = other?;
                    self.remember_verified(to, &etag, &moved.key);
                    return Ok(etag);
                }
            }
        }
    }

    /// The sealer of a new version of `key` under `wk`, and the object's
    /// metadata: `extra` plus the sealing fields (wrapped key, binding).
    fn new_version(&self, key: &str, extra: &Metadata, wk: &WriteKey) -> (Sealer, Metadata) {
        let sealer = Sealer::new(&wk.key, wk.key_ref.file_id, self.settings.segment_size);
        let mut metadata = extra.clone();
        SealMeta {
            key: wk.key_ref.clone(),
            binding: sealer.binding(self.store.bucket(), key),
        }
        .write_into(&mut metadata);
        (sealer, metadata)
    }

    /// Seals exactly `len` bytes from `reader` into `key`. Small objects go up
    /// in one PUT; larger ones stream as a multipart upload with parts sealed
    /// on blocking threads and several in flight. Nothing is visible at `key`
    /// unless the whole object was written and the write condition held.
    pub async fn write<R: AsyncRead + Unpin>(
        &self,
        key: &str,
        reader: &mut R,
        len: u64,
        extra: &Metadata,
        wk: &WriteKey,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<String> {
        let (sealer, metadata) = self.new_version(key, extra, wk);
        let sealer = Arc::new(sealer);
        let layout = sealer.layout();

        let seg = layout.segment_size() as usize;
        let part_plain = self.part_plain() as usize;
        let segments = layout.segment_count(len);
        let multipart = layout.object_len(len) > (part_plain + part_plain / 2) as u64;

        let mut upload = if multipart {
            Some(
                MultipartUpload::start(
                    self.store.clone(),
                    key,
                    &metadata,
                    self.settings.upload_concurrency,
                )
                .await?,
            )
        } else {
            None
        };
        let mut single = Vec::new();
        let mut next_segment = 0u64;
        let mut done = 0u64;
        while next_segment < segments {
            let want = (len - done).min(part_plain as u64) as usize;
            let mut plain = vec![0u8; want];
            if let Err(e) = reader.read_exact(&mut plain).await {
                if let Some(up) = upload.take() {
                    up.abort().await;
                }
                let ctx = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    format!("source ended before {len} bytes (file changed while reading?)")
                } else {
                    "reading source".to_string()
                };
                return Err(Error::io(ctx, e));
            }
            let first = next_segment;
            let count = plain.len().div_ceil(seg).max(1) as u64;
            next_segment += count;
            done += want as u64;
            let s = sealer.clone();
            let ends = next_segment == segments;
            let sealed = tokio::task::spawn_blocking(move || s.seal_run(first, &plain, ends))
                .await
                .expect("sealing task panicked");
            match upload.as_mut() {
                Some(up) => up.push(Bytes::from(sealed)).await?,
                None => single.extend_from_slice(&sealed),
            }
            progress(done);
        }
        let etag = match upload {
            Some(up) => up.finish(&wk.condition).await?,
            None => {
                self.store
                    .put(key, Bytes::from(single), &metadata, &wk.condition)
                    .await?
            }
        };
        self.remember_verified(key, &etag, &wk.key_ref);
        Ok(etag)
    }

    /// Opens `key` for reading with one GET that returns the header, the
    /// metadata and the first run of segments together. The data key is
    /// unwrapped, the header and path binding verified, and the ETag pinned.
    pub async fn open(&self, key: &str) -> Result<SealedObject> {
        self.open_version(key, None).await
    }

    /// [`SealedStore::open`] of exactly the version `etag` (when given):
    /// PreconditionFailed if the object is another version now.
    /// [`SealedStore::open_version`] of a pinned version, with the header
    /// from `cache` when it has it: one HEAD (is this version still there,
    /// and its metadata) instead of a GET. The header is verified as always.
    /// Otherwise opens with the GET and keeps the header in `cache`.
    pub async fn open_cached(
        &self,
        key: &str,
        etag: &str,
        cache: Option<&dyn SegmentCache>,
    ) -> Result<SealedObject> {
        let Some(cache) = cache else {
            return self.open_version(key, Some(etag)).await;
        };
        let slot = Slot::header(key, etag);
        if let Some(head) = cache.get(&slot) {
            let info = self.store.head(key).await?;
            if info.etag == etag && head.len() == HEADER_LEN {
                return self.open_parts(key, info, Bytes::from(head)).await;
            }
        }
        let obj = self.open_version(key, Some(etag)).await?;
        if obj.prefix.len() >= HEADER_LEN {
            cache.put(&slot, obj.prefix.slice(..HEADER_LEN));
        }
        Ok(obj)
    }

    pub async fn open_version(&self, key: &str, etag: Option<&str>) -> Result<SealedObject> {
        // One GET brings a small file whole, and the start of a large one;
        // read-ahead (see [`reader`]) takes over from there.
        let run = self.settings.read_run.min(1 << 20);
        let first_run = HEADER_LEN as u64 + run + run / 64;
        let got = self.store.get(key, Some(0..first_run), etag).await?;
        self.open_parts(key, got.info, got.body).await
    }

    /// Opens an object from its info and its first bytes (at least the header).
    async fn open_parts(&self, key: &str, info: ObjectInfo, body: Bytes) -> Result<SealedObject> {
        let got = crate::store::GetResult { info, body };
        let sm = SealMeta::read_from(&got.info.metadata).map_err(|r| self.not_sealfs(key, r))?;
        let header = Header::parse(&got.body).map_err(|e| match e {
            IntegrityError::BadMagic => self.not_sealfs(key, "no sealfs header"),
            e => self.integrity(key, e),
        })?;
        let layout = Layout::new(header.segment_size());
        let plain_len = layout
            .plain_len(got.info.size)
            .map_err(|e| self.integrity(key, e))?;
        let opener = self.verify_sealing(key, &sm, &got.body).await?;
        self.remember_verified(key, &got.info.etag, &sm.key);
        Ok(SealedObject {
            key: key.to_string(),
            info: got.info,
            seal: sm,
            opener: Arc::new(opener),
            plain_len,
            prefix: got.body,
        })
    }
}

/// An opened, header-verified object. Reads are pinned to its ETag and
/// release only bytes of segments that verified.
pub struct SealedObject {
    key: String,
    info: ObjectInfo,
    seal: SealMeta,
    opener: Arc<Opener>,
    plain_len: u64,
    /// The first bytes of the object, fetched by `open`.
    prefix: Bytes,
}

impl SealedObject {
    /// The object's key in the store.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn plain_len(&self) -> u64 {
        self.plain_len
    }

    pub fn info(&self) -> &ObjectInfo {
        &self.info
    }

    pub fn seal(&self) -> &SealMeta {
        &self.seal
    }

    pub fn header(&self) -> &Header {
        self.opener.header()
    }

    pub fn layout(&self) -> Layout {
        self.opener.layout()
    }

    /// Segment `index`'s entry in a [`SegmentCache`].
    pub fn slot(&self, index: u64) -> Slot<'_> {
        let layout = self.layout();
        Slot {
            key: &self.key,
            etag: &self.info.etag,
            segment_size: layout.segment_size(),
            index,
            len: layout.segment_plain_len(index, self.plain_len),
        }
    }

    fn integrity(&self, bucket: &str, check: IntegrityError) -> Error {
        Error::Integrity {
            bucket: bucket.to_string(),
            key: self.key.clone(),
            check,
        }
    }

    /// Fetches and opens segments `segs`, from the prefix when it holds them.
    ///
    /// A GET's body is opened segment by segment as it arrives, on the task
    /// that receives it ([`RunOpener`]): each segment's ciphertext is copied
    /// once, into the buffer that is returned, and decrypted there while in
    /// cache. No second pass over the body, no hand-off to another thread
    /// (a segment is tens of microseconds of AES-GCM).
    async fn segments(&self, store: &dyn ObjectStore, segs: Range<u64>) -> Result<Vec<u8>> {
        let range = self.layout().sealed_range(segs.clone(), self.plain_len);
        if range.end <= self.prefix.len() as u64 {
            let sealed = &self.prefix[range.start as usize..range.end as usize];
            return self
                .opener
                .open_run(segs.start, sealed, self.plain_len)
                .map_err(|e| self.integrity(store.bucket(), e));
        }
        let want = range.end - range.start;
        let mut got = store
            .get_stream(&self.key, Some(range), Some(&self.info.etag))
            .await?;
        let mut run = RunOpener::new(&self.opener, segs.start, want, self.plain_len);
        let mut received = 0u64;
        while let Some(piece) = got.body.try_next().await? {
            received += piece.len() as u64;
            if received > want {
                break;
            }
            run.feed(&piece)
                .map_err(|e| self.integrity(store.bucket(), e))?;
        }
        if received != want {
            return Err(self.integrity(store.bucket(), IntegrityError::BadLength(got.info.size)));
        }
        run.finish().map_err(|e| self.integrity(store.bucket(), e))
    }

    /// Reads up to `len` plaintext bytes at `offset` (fewer at end of file).
    pub async fn read(&self, store: &dyn ObjectStore, offset: u64, len: u64) -> Result<Vec<u8>> {
        let segs = self.layout().segments_for(offset, len, self.plain_len);
        if segs.is_empty() {
            return Ok(Vec::new());
        }
        let mut plain = self.segments(store, segs.clone()).await?;
        let skip = (offset - segs.start * self.layout().segment_size()) as usize;
        let take = (len.min(self.plain_len - offset)) as usize;
        // In place: a read that starts on a segment (read-ahead) moves nothing.
        plain.truncate(skip + take);
        plain.drain(..skip);
        Ok(plain)
    }

    /// Streams the whole plaintext to `out`, with several ranged GETs in flight.
    /// Every byte written has been verified; on an error, what was written so
    /// far is a verified prefix and the caller must discard it.
    pub async fn copy_to<W: AsyncWrite + Unpin>(
        &self,
        store: &dyn ObjectStore,
        out: &mut W,
        read_run: u64,
        concurrency: usize,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        let layout = self.layout();
        let total = layout.segment_count(self.plain_len);
        let per_run = (read_run / layout.segment_size()).max(1);
        let runs = (0..total)
            .step_by(per_run as usize)
            .map(|s| s..(s + per_run).min(total));
        let mut stream = futures::stream::iter(runs)
            .map(|r| self.segments(store, r))
            .buffered(concurrency.max(1));
        let mut written = 0u64;
        while let Some(plain) = stream.try_next().await? {
            out.write_all(&plain)
                .await
                .map_err(|e| Error::io("writing output", e))?;
            written += plain.len() as u64;
            progress(written);
        }
        out.flush()
            .await
            .map_err(|e| Error::io("writing output", e))?;
        Ok(())
    }
}

pub mod branches;
mod keys;
mod plain_cache;
pub mod reader;
pub mod spooled;
pub mod stream;

#[cfg(test)]
mod branch_tests;
#[cfg(test)]
mod key_tests;
#[cfg(test)]
mod reader_tests;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
