//! Sealed objects that wait in a local file before they go to S3 (the
//! `--write-back` spool): sealing a plaintext file into its final object
//! bytes, uploading such a file, and re-binding it to another name when the
//! upload loses a conflict.
//!
//! The spool holds ciphertext only: the bytes are exactly the object that
//! will be uploaded, and the metadata (with the wrapped key and the path
//! binding) travels beside them.

use super::{SealMeta, SealedStore, WriteKey};
use crate::crypto::{Opener, HEADER_LEN};
use crate::error::{Error, Result};
use crate::store::{Metadata, MultipartUpload, PutCondition};
use bytes::Bytes;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

impl SealedStore {
    /// Seals the `len` plaintext bytes of `src` into `dst` as the complete
    /// object for `key`. Returns the object's metadata (`extra` plus the
    /// sealing fields). Runs on a blocking thread.
    pub async fn seal_to_file(
        &self,
        key: &str,
        src: Box<dyn super::PlainSource>,
        len: u64,
        dst: std::fs::File,
        extra: &Metadata,
        wk: &WriteKey,
    ) -> Result<Metadata> {
        let (sealer, metadata) = self.new_version(key, extra, wk);
        let run = self.part_plain();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let seg = sealer.layout().segment_size();
            let mut at = 0u64;
            let mut out_at = 0u64;
            let mut plain = Vec::new();
            loop {
                let n = (len - at).min(run);
                plain.resize(n as usize, 0);
                src.read_plain_at(&mut plain, at)?;
                let sealed = sealer.seal_run(at / seg, &plain, at + n == len);
                dst.write_all_at(&sealed, out_at)?;
                out_at += sealed.len() as u64;
                at += n;
                if at >= len {
                    return Ok(());
                }
            }
        })
        .await
        .expect("sealing task panicked")
        .map_err(|e| Error::io("sealing into the write-back spool", e))?;
        Ok(metadata)
    }

    /// Uploads a spooled object file as it is: one PUT when small, a
    /// multipart upload of raw byte ranges otherwise. Nothing is visible
    /// unless all of it arrived and `cond` held.
    pub async fn upload_sealed_file(
        &self,
        key: &str,
        file: Arc<std::fs::File>,
        metadata: &Metadata,
        cond: &PutCondition,
    ) -> Result<String> {
        let len = file
            .metadata()
            .map_err(|e| Error::io("reading the write-back spool", e))?
            .len();
        let part = self.part_plain();
        let read = |at: u64, n: u64| {
            let file = file.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n as usize];
                    file.read_exact_at(&mut buf, at).map(|_| Bytes::from(buf))
                })
                .await
                .expect("read task panicked")
            }
        };
        if len <= part + part / 2 {
            let body = read(0, len)
                .await
                .map_err(|e| Error::io("reading the write-back spool", e))?;
            return Ok(self.store.put(key, body, metadata, cond).await?);
        }
        let mut up = MultipartUpload::start(
            self.store.clone(),
            key,
            metadata,
            self.settings.upload_concurrency,
        )
        .await?;
        let mut at = 0;
        while at < len {
            // The last part takes the remainder when it is small.
            let n = if len - at < 2 * part { len - at } else { part };
            let chunk = read(at, n);
            up.push_with(async move {
                chunk.await.map_err(|e| crate::store::StoreError::Other {
                    action: "s3:UploadPart",
                    message: format!("reading the write-back spool: {e}"),
                })
            })
            .await?;
            at += n;
        }
        Ok(up.finish(cond).await?)
    }

    /// The metadata that makes spooled bytes (whose header is `header`)
    /// valid at `to`: the same wrapped key and file id, a binding for `to`.
    /// The header is verified with the data key first.
    pub async fn rebind_metadata(
        &self,
        header: &[u8],
        metadata: &Metadata,
        to: &str,
    ) -> Result<Metadata> {
        let sm = SealMeta::read_from(metadata)
            .map_err(|r| Error::posix(libc::EIO, format!("spooled metadata: {r}")))?;
        let dk = self.unwrap_key(to, &sm.key).await?;
        let opener = Opener::new(
            &dk,
            &header[..HEADER_LEN.min(header.len())],
            &sm.key.file_id,
        )
        .map_err(|e| self.integrity(to, e))?;
        let mut out = metadata.clone();
        SealMeta {
            binding: opener.binding(self.store.bucket(), to),
            key: sm.key,
        }
        .write_into(&mut out);
        Ok(out)
    }
}
