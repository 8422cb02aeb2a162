//! Sealing a file while it is still being written: a multipart upload fed
//! part by part from the staging file as a sequential writer gets past each
//! part, so that close (or fsync) only has the last part and the completion
//! left to wait for.
//!
//! A part is only sent once the writer has written beyond it: the format
//! marks the object's last segment, and until more data exists nobody knows
//! which segment is last. A part is sealed from the plaintext the writer
//! handed over, which the stream keeps in memory from the last part sent
//! up to the end of the file (its *tail*); reading it back from the
//! (encrypted) staging file would decrypt every byte a second time. A write
//! that lands anywhere but at the end of the tail drops the tail, and parts
//! come from the staging file again until the next part is sent, when the
//! remainder is read back once and the tail resumes. Parts are sealed and
//! uploaded in their own tasks (several in flight), so the writer's
//! `write(2)` calls only wait when every upload slot is busy (back-pressure,
//! which also bounds memory). Nothing is visible in S3 until [`finish`]
//! completes the upload under the write condition; dropping an unfinished
//! stream aborts it.
//!
//! [`finish`]: StreamingWrite::finish

use super::{KeyRef, SealedStore, WriteKey};
use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::store::{Metadata, MultipartUpload, PutCondition, StoreError};
use bytes::Bytes;
use std::sync::Arc;

/// A multipart upload of one file version in the making.
pub struct StreamingWrite {
    sealer: Arc<Sealer>,
    upload: MultipartUpload,
    source: Arc<dyn super::PlainSource>,
    /// The plaintext from `sent` to the end of the file, when the writer's
    /// data since the last part sent all landed at the end (`None`: the
    /// staging file is the only copy of that range).
    tail: Option<Vec<u8>>,
    part_plain: u64,
    sent: u64,
    key: String,
    key_ref: KeyRef,
    metadata: Metadata,
}

impl SealedStore {
    /// Starts streaming a new version of `key` whose plaintext is being
    /// written into `source` from offset 0. `metadata` is stored with the
    /// object as it is now (S3 fixes metadata when the upload starts).
    pub async fn start_stream(
        &self,
        key: &str,
        source: Arc<dyn super::PlainSource>,
        metadata: &Metadata,
        wk: &WriteKey,
    ) -> Result<StreamingWrite> {
        let (sealer, metadata) = self.new_version(key, metadata, wk);
        let sealer = Arc::new(sealer);
        let upload = MultipartUpload::start(
            self.store.clone(),
            key,
            &metadata,
            self.settings.upload_concurrency,
        )
        .await?;
        Ok(StreamingWrite {
            sealer,
            upload,
            source,
            tail: None,
            part_plain: self.part_plain(),
            sent: 0,
            key: key.to_string(),
            key_ref: wk.key_ref.clone(),
            metadata,
        })
    }

    /// Plaintext bytes per multipart part: the configured part size in
    /// whole segments.
    pub fn part_plain(&self) -> u64 {
        let seg = self.settings.segment_size as u64;
        ((self.settings.part_size as u64 / seg).max(1)) * seg
    }
}

impl StreamingWrite {
    /// Plaintext bytes already handed to the upload: the writer must not
    /// change anything below this offset (or the stream must be dropped).
    pub fn sent(&self) -> u64 {
        self.sent
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn key_ref(&self) -> &KeyRef {
        &self.key_ref
    }

    /// The metadata the object will carry (fixed at the start).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The writer wrote `data` at `offset` (at or above [`sent`]), and the
    /// staging file holds it: a copy joins the tail when it lands at its
    /// end; any other write drops the tail.
    ///
    /// [`sent`]: Self::sent
    pub fn wrote(&mut self, offset: u64, data: &[u8]) {
        if let Some(tail) = &mut self.tail {
            if offset == self.sent + tail.len() as u64 {
                tail.extend_from_slice(data);
            } else {
                self.tail = None;
            }
        }
    }

    /// Sends every whole part that the writer has written beyond, given the
    /// file is now `written` bytes long.
    pub async fn advance(&mut self, written: u64) -> Result<()> {
        let mut pushed = false;
        while written > self.sent + self.part_plain {
            self.push(self.part_plain, false).await?;
            pushed = true;
        }
        if pushed && self.tail.is_none() {
            self.tail = Some(self.read_back(written).await?);
        }
        Ok(())
    }

    /// The staged plaintext from [`sent`](Self::sent) to `written`, read
    /// back into a new tail (with room for one more part).
    async fn read_back(&self, written: u64) -> Result<Vec<u8>> {
        let (source, at, room) = (self.source.clone(), self.sent, self.tail_room());
        let len = (written - at) as usize;
        let read = tokio::task::spawn_blocking(move || {
            let mut tail = Vec::with_capacity(room.max(len));
            tail.resize(len, 0);
            source.read_plain_at(&mut tail, at).map(|()| tail)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        read.map_err(|e| Error::io("reading the staged data back", e))
    }

    /// The capacity a tail starts with: a part and a large write beyond it,
    /// so that appending never reallocates while a part fills.
    fn tail_room(&self) -> usize {
        self.part_plain as usize + (1 << 20)
    }

    /// The first `len` bytes of the tail, which a new, shorter tail
    /// replaces; `None` when the tail does not hold them.
    fn take_from_tail(&mut self, len: u64) -> Option<Vec<u8>> {
        let len = len as usize;
        let room = self.tail_room();
        let tail = self.tail.as_mut().filter(|t| t.len() >= len)?;
        let mut rest = Vec::with_capacity(room.max(tail.len() - len));
        rest.extend_from_slice(&tail[len..]);
        tail.truncate(len);
        Some(std::mem::replace(tail, rest))
    }

    async fn push(&mut self, len: u64, ends: bool) -> Result<()> {
        let (sealer, source, at) = (self.sealer.clone(), self.source.clone(), self.sent);
        let first = at / sealer.layout().segment_size();
        let held = if ends {
            self.tail.take().filter(|t| t.len() as u64 == len)
        } else {
            self.take_from_tail(len)
        };
        self.sent += len;
        self.upload
            .push_with(async move {
                tokio::task::spawn_blocking(move || {
                    let plain = match held {
                        Some(plain) => plain,
                        None => {
                            let mut plain = vec![0u8; len as usize];
                            source.read_plain_at(&mut plain, at).map_err(|e| {
                                StoreError::Other {
                                    action: "s3:UploadPart",
                                    message: format!("reading the staged data: {e}"),
                                }
                            })?;
                            plain
                        }
                    };
                    Ok(Bytes::from(sealer.seal_run(first, &plain, ends)))
                })
                .await
                .map_err(|e| StoreError::Other {
                    action: "s3:UploadPart",
                    message: format!("sealing task failed: {e}"),
                })?
            })
            .await?;
        Ok(())
    }

    /// Sends the rest (the file is `len` bytes in the end) and completes the
    /// upload under `condition`. Returns the new ETag.
    pub async fn finish(mut self, len: u64, condition: &PutCondition) -> Result<String> {
        if len <= self.sent {
            return Err(Error::posix(
                libc::EIO,
                format!(
                    "stream of {} ended at {len} bytes, below the {} already sent",
                    self.key, self.sent
                ),
            ));
        }
        self.advance(len).await?;
        self.push(len - self.sent, true).await?;
        Ok(self.upload.finish(condition).await?)
    }

    /// Parts sent so far (for tests and stats).
    pub fn parts(&self) -> i32 {
        self.upload.parts()
    }
}
