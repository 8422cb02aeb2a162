//! Uploads of staged content: streamed while a sequential writer writes
//! (see [`crate::sealed::stream`]), or whole at flush, fsync and close; and
//! what happens when the upload loses a conflict.

use super::attr::Attr;
use super::file::{Staged, StagedInner};
use super::{enoent, SealFs};
use crate::error::{Error, Result};
use crate::sealed::KeyRef;
use crate::store::{PutCondition, StoreError};
use libc::EIO;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::io::AsyncSeekExt;

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

/// The staged content, as a reader from its first byte.
async fn staged_from_start(s: &StagedInner) -> Result<tokio::fs::File> {
    let mut f = tokio::fs::File::from_std(s.file.try_clone().map_err(|e| Error::io("staging", e))?);
    f.seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(|e| Error::io("staging", e))?;
    Ok(f)
}

impl SealFs {
    /// After a write at `offset` into staged content that was `old_size`
    /// bytes long: starts or advances the streamed upload when the file is
    /// being written sequentially, or gives it up when it is not. Streaming
    /// never fails a write: whatever goes wrong, the staged file still holds
    /// the data and the upload at close sends it whole.
    pub(super) async fn feed_stream(
        &self,
        ino: u64,
        s: &mut StagedInner,
        offset: u64,
        old_size: u64,
    ) {
        let below = s.stream.as_ref().is_some_and(|st| offset < st.sent());
        if below || offset > old_size {
            if s.stream.is_some() {
                tracing::debug!(key = %s.key, offset, "non-sequential write; the streamed upload is dropped and the file will be uploaded whole");
            }
            s.drop_stream();
            return;
        }
        if !s.streamable || s.unlinked {
            return;
        }
        if s.stream.is_none() {
            if s.size <= self.sealed.part_plain() {
                return;
            }
            if let Err(e) = self.start_stream(ino, s).await {
                tracing::warn!(key = %s.key, error = %e, "cannot start a streamed upload; the file will be uploaded at close");
                s.streamable = false;
                return;
            }
        }
        let size = s.size;
        let st = s.stream.as_mut().expect("started above");
        if let Err(e) = st.advance(size).await {
            tracing::warn!(key = %s.key, error = %e, "streamed upload failed; the file will be uploaded whole at close");
            s.drop_stream();
        }
    }

    async fn start_stream(&self, ino: u64, s: &mut StagedInner) -> Result<()> {
        let attr = self
            .table
            .lock()
            .get(ino)
            .map(|i| i.attr.clone())
            .ok_or_else(|| enoent(&format!("inode {ino}")))?;
        let wk = self
            .sealed
            .key_for_version(&s.key, s.sealed_base(), PutCondition::None, &self.pool)
            .await?;
        let source = Arc::new(s.file.try_clone().map_err(|e| Error::io("staging", e))?);
        let st = self
            .sealed
            .start_stream(&s.key, source, &attr.metadata(), &wk)
            .await?;
        s.stream = Some(st);
        s.stream_attr = Some(attr);
        s.meta_changed = false;
        Ok(())
    }

    /// Seals and uploads staged content if it changed: completes the
    /// streamed upload when there is one, otherwise sends the whole file.
    pub(super) async fn upload(&self, ino: u64, staged: &Staged) -> Result<()> {
        let mut s = staged.inner.lock().await;
        s.check_broken()?;
        if !s.dirty || s.unlinked {
            return Ok(());
        }
        let (path, attr) = {
            let t = self.table.lock();
            let i = t.get(ino).ok_or_else(|| enoent(&format!("inode {ino}")))?;
            (t.path(ino).unwrap_or_default(), i.attr.clone())
        };
        let key = self.key_of(&path);
        let condition = match &s.base_etag {
            Some(etag) => PutCondition::IfMatch(etag.clone()),
            None => PutCondition::IfNoneMatch,
        };
        let mut meta_attr = attr.clone();
        meta_attr.size = s.size;
        tracing::debug!(path = %path, size = s.size, streamed = s.stream.is_some(), "upload");
        let mut streamed_attr = None;
        let result = match s.stream.take() {
            Some(st) if st.key() == key && s.size > st.sent() => {
                let kr = st.key_ref().clone();
                match st.finish(s.size, &condition).await {
                    Ok(etag) => {
                        streamed_attr = s.stream_attr.take();
                        Ok((etag, kr))
                    }
                    Err(e @ Error::Store(StoreError::PreconditionFailed { .. })) => Err(e),
                    Err(e) => {
                        tracing::warn!(path = %path, error = %e, "streamed upload failed; uploading the whole file");
                        s.streamable = false;
                        self.upload_whole(&key, &s, &meta_attr, condition).await
                    }
                }
            }
            _ => self.upload_whole(&key, &s, &meta_attr, condition).await,
        };
        match result {
            Ok((etag, key_ref)) => {
                s.mark_clean();
                s.base_etag = Some(etag.clone());
                s.key_ref = Some(key_ref.clone());
                {
                    let mut t = self.table.lock();
                    if let Some(i) = t.get_mut(ino) {
                        i.remote = true;
                        i.etag = Some(etag);
                        i.key_ref = Some(key_ref);
                        i.attr.size = s.size;
                        i.validated = Instant::now();
                        // The stored times are those from the stream's
                        // start: show what a remount will show.
                        if let (Some(a), false) = (&streamed_attr, s.meta_changed) {
                            i.attr.mtime = a.mtime;
                            i.attr.ctime = a.ctime;
                        }
                    }
                }
                if streamed_attr.is_some() && std::mem::take(&mut s.meta_changed) {
                    // Attributes changed while the object streamed: rewrite
                    // its metadata (a self-copy, no data through the client).
                    if let Some(etag) = self.persist_attr(ino).await? {
                        s.base_etag = Some(etag);
                    }
                }
                Ok(())
            }
            Err(Error::Store(StoreError::PreconditionFailed { .. })) => {
                let kept = self.keep_conflict_copy(ino, &path, &s, &meta_attr).await;
                // If even the copy failed, the content stays staged (and
                // journaled) for a retry or the next mount.
                if kept.is_ok() {
                    s.mark_clean();
                }
                let what = match kept {
                    Ok(copy) => format!("write conflict on {path}: it changed in S3 since it was opened here; this version was kept as {copy}"),
                    Err(e) => format!("write conflict on {path}, and keeping a conflict copy failed too: {e}"),
                };
                tracing::error!("{what}");
                Err(Error::posix(EIO, what))
            }
            Err(e) => {
                tracing::error!(path = %path, error = %e, "upload failed; changes stay staged");
                Err(e)
            }
        }
    }

    /// Seals the whole staged file into `key` under `condition`, with the
    /// file's data key (a fresh one from the pool for a new file).
    async fn upload_whole(
        &self,
        key: &str,
        s: &StagedInner,
        attr: &Attr,
        condition: PutCondition,
    ) -> Result<(String, KeyRef)> {
        let wk = self
            .sealed
            .key_for_version(key, s.sealed_base(), condition, &self.pool)
            .await?;
        let mut f = staged_from_start(s).await?;
        let etag = self
            .sealed
            .write(key, &mut f, s.size, &attr.metadata(), &wk, &|_| {})
            .await?;
        Ok((etag, wk.key_ref))
    }

    /// Uploads the staged content beside `path` under a new conflict name
    /// ([`conflict_name`]), with a new data key.
    async fn keep_conflict_copy(
        &self,
        ino: u64,
        path: &str,
        s: &StagedInner,
        attr: &Attr,
    ) -> Result<String> {
        let copy = conflict_name(path);
        let mut f = staged_from_start(s).await?;
        let wk = self.sealed.new_key(&self.pool).await?;
        self.sealed
            .write(
                &self.key_of(&copy),
                &mut f,
                s.size,
                &attr.metadata(),
                &wk,
                &|_| {},
            )
            .await?;
        let parent = {
            let mut t = self.table.lock();
            let p = t.get(ino).map(|i| i.parent);
            if let Some(p) = p {
                t.unlist(p);
            }
            p
        };
        if let Some(p) = parent {
            self.names.forget(p);
        }
        Ok(copy)
    }
}
