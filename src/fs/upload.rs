//! The upload engine: seals staged content into S3, streamed while a
//! sequential writer writes (see [`crate::sealed::stream`]) or whole at
//! flush, fsync and close, and keeps a conflict copy when the upload loses.
//!
//! It takes the staged content (and the attributes to seal with) and
//! returns what happened, moving the content through its states
//! ([`super::staged`]); it never touches the namespace. `SealFs::commit`
//! applies the outcome.

use super::attr::Attr;
use super::namespace::Uploaded;
use super::staged::StagedInner;
use super::SealFs;
use crate::error::{Error, Result};
use crate::local::file::PlainReader;
use crate::sealed::{KeyRef, PlainSource, SealedStore};
use crate::store::{PutCondition, StoreError};
use std::sync::Arc;
use std::time::SystemTime;

/// A new name beside `path` for a version that lost a conflict:
/// `NAME.sealfs-conflict-<unix secs>-<4 hex>`.
pub(super) fn conflict_name(path: &str) -> String {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{path}.sealfs-conflict-{stamp}-{:04x}",
        rand::random::<u16>()
    )
}

/// What committing staged content did.
pub(super) enum Committed {
    /// Nothing to upload: the content is clean, or its name is gone.
    Unchanged,
    /// The content is the object's new version. `metadata_stale`: the
    /// attributes changed while it streamed, so the object's metadata must
    /// be rewritten.
    Uploaded { up: Uploaded, metadata_stale: bool },
    /// The file changed in S3 since it was opened: the content was kept as
    /// a copy beside it (the copy's path), or keeping it failed too.
    Conflict(Result<String>),
}

/// Seals and uploads with the volume's store (which chooses data keys).
pub(super) struct Uploader<'a> {
    pub sealed: &'a SealedStore,
}

impl SealFs {
    /// The upload engine over this volume's store.
    pub(super) fn uploader(&self) -> Uploader<'_> {
        Uploader {
            sealed: &self.sealed,
        }
    }
}

/// The staged content, as a reader from its first byte.
fn from_start(s: &StagedInner) -> Result<PlainReader> {
    s.file()
        .reader(s.size())
        .map_err(|e| Error::io("staging", e))
}

impl Uploader<'_> {
    /// After `data` was written at `offset` into content that was
    /// `old_size` bytes long: starts or advances the streamed upload while
    /// the file is written in order, or gives it up when it is not. Streaming never fails
    /// a write: whatever goes wrong, the staged file still holds the data and
    /// the upload at close sends it whole. `attr` gives the attributes the
    /// stream's object is sealed with, if one starts.
    pub(super) async fn advance_stream(
        &self,
        s: &mut StagedInner,
        offset: u64,
        data: &[u8],
        old_size: u64,
        attr: impl FnOnce() -> Result<Attr>,
    ) {
        let below = s.stream().is_some_and(|st| offset < st.upload.sent());
        if below || offset > old_size {
            if s.stream().is_some() {
                tracing::debug!(key = %s.key(), offset, "non-sequential write; the streamed upload is dropped and the file will be uploaded whole");
            }
            s.scatter();
            return;
        }
        if s.may_start_stream() {
            if s.size() <= self.sealed.part_plain() {
                return;
            }
            if let Err(e) = self.start_stream(s, attr).await {
                tracing::warn!(key = %s.key(), error = %e, "cannot start a streamed upload; the file will be uploaded at close");
                s.scatter();
                return;
            }
        } else if let Some(st) = s.stream_mut() {
            st.upload.wrote(offset, data);
        }
        let size = s.size();
        let Some(st) = s.stream_mut() else { return };
        if let Err(e) = st.upload.advance(size).await {
            tracing::warn!(key = %s.key(), error = %e, "streamed upload failed; the file will be uploaded whole at close");
            s.scatter();
        }
    }

    async fn start_stream(
        &self,
        s: &mut StagedInner,
        attr: impl FnOnce() -> Result<Attr>,
    ) -> Result<()> {
        let attr = attr()?;
        let key = s.key().to_string();
        let wk = self
            .sealed
            .key_for_version(&key, s.sealed_base(), PutCondition::None)
            .await?;
        let source: Arc<dyn PlainSource> =
            Arc::new(s.file().try_clone().map_err(|e| Error::io("staging", e))?);
        let upload = self
            .sealed
            .start_stream(&key, source, &attr.metadata(), &wk)
            .await?;
        s.start_stream(upload, attr);
        Ok(())
    }

    /// Seals and uploads dirty content to `key` (the file's `path` in the
    /// volume) with attributes `attr`, conditional on the version it builds
    /// on: completes the streamed upload when there is one, otherwise sends
    /// the whole file. A lost condition keeps the content as a conflict copy.
    pub(super) async fn commit(
        &self,
        s: &mut StagedInner,
        key: &str,
        path: &str,
        attr: &Attr,
    ) -> Result<Committed> {
        s.check_broken()?;
        if !s.is_dirty() {
            return Ok(Committed::Unchanged);
        }
        let condition = s.condition();
        let mut meta_attr = attr.clone();
        meta_attr.size = s.size();
        tracing::debug!(
            path,
            size = s.size(),
            streamed = s.stream().is_some(),
            "upload"
        );
        let mut streamed = None;
        let result = match s.take_stream() {
            Some(st) if st.upload.key() == key && s.size() > st.upload.sent() => {
                let kr = st.upload.key_ref().clone();
                let (attr, meta_changed) = (st.attr, st.meta_changed);
                match st.upload.finish(s.size(), &condition).await {
                    Ok(etag) => {
                        streamed = Some((attr, meta_changed));
                        Ok((etag, kr))
                    }
                    Err(e @ Error::Store(StoreError::PreconditionFailed { .. })) => Err(e),
                    Err(e) => {
                        tracing::warn!(path, error = %e, "streamed upload failed; uploading the whole file");
                        s.scatter();
                        self.upload_whole(key, s, &meta_attr, condition).await
                    }
                }
            }
            _ => self.upload_whole(key, s, &meta_attr, condition).await,
        };
        match result {
            Ok((etag, key_ref)) => {
                s.uploaded(etag.clone(), key_ref.clone());
                let stored_times = match &streamed {
                    Some((a, false)) => Some((a.mtime, a.ctime)),
                    _ => None,
                };
                Ok(Committed::Uploaded {
                    up: Uploaded {
                        etag,
                        key_ref,
                        size: s.size(),
                        stored_times,
                    },
                    metadata_stale: matches!(streamed, Some((_, true))),
                })
            }
            Err(Error::Store(StoreError::PreconditionFailed { .. })) => {
                let kept = self.keep_conflict_copy(key, path, s, &meta_attr).await;
                // If even the copy failed, the content stays dirty (and
                // journaled) for a retry or the next mount.
                if kept.is_ok() {
                    s.conflict_kept();
                }
                Ok(Committed::Conflict(kept))
            }
            Err(e) => Err(e),
        }
    }

    /// Seals the whole staged file into `key` under `condition`, with the
    /// key [`SealedStore::key_for_version`] chooses.
    async fn upload_whole(
        &self,
        key: &str,
        s: &StagedInner,
        attr: &Attr,
        condition: PutCondition,
    ) -> Result<(String, KeyRef)> {
        let wk = self
            .sealed
            .key_for_version(key, s.sealed_base(), condition)
            .await?;
        let mut f = from_start(s)?;
        let etag = self
            .sealed
            .write(key, &mut f, s.size(), &attr.metadata(), &wk, &|_| {})
            .await?;
        Ok((etag, wk.key_ref))
    }

    /// Uploads the staged content beside `path` under a new conflict name
    /// ([`conflict_name`]), with a new data key; returns the copy's path.
    async fn keep_conflict_copy(
        &self,
        key: &str,
        path: &str,
        s: &StagedInner,
        attr: &Attr,
    ) -> Result<String> {
        let copy = conflict_name(path);
        let copy_key = format!("{key}{}", &copy[path.len()..]);
        let mut f = from_start(s)?;
        let wk = self.sealed.new_key().await?;
        self.sealed
            .write(&copy_key, &mut f, s.size(), &attr.metadata(), &wk, &|_| {})
            .await?;
        Ok(copy)
    }
}
