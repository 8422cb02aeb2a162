//! Drives one multipart upload with several parts in flight at once.
//!
//! The object only becomes visible at `finish` (CompleteMultipartUpload, with
//! the write condition). Any failure aborts the upload, and so does dropping an
//! unfinished one, so a failed write never leaves a partial object or parts
//! that cost storage.

use super::{Metadata, ObjectStore, PutCondition, StoreError};
use bytes::Bytes;
use std::sync::Arc;
use tokio::task::JoinSet;

pub struct MultipartUpload {
    store: Arc<dyn ObjectStore>,
    key: String,
    upload_id: String,
    next_part: i32,
    in_flight: JoinSet<Result<(i32, String), StoreError>>,
    done: Vec<(i32, String)>,
    max_in_flight: usize,
    open: bool,
}

impl MultipartUpload {
    pub async fn start(
        store: Arc<dyn ObjectStore>,
        key: &str,
        metadata: &Metadata,
        max_in_flight: usize,
    ) -> Result<Self, StoreError> {
        let upload_id = store.create_multipart(key, metadata).await?;
        Ok(MultipartUpload {
            store,
            key: key.to_string(),
            upload_id,
            next_part: 1,
            in_flight: JoinSet::new(),
            done: Vec::new(),
            max_in_flight: max_in_flight.max(1),
            open: true,
        })
    }

    /// Queues the next part; waits while `max_in_flight` parts are uploading.
    /// All parts but the last must be at least 5 MiB on S3.
    pub async fn push(&mut self, part: Bytes) -> Result<(), StoreError> {
        self.push_with(async move { Ok(part) }).await
    }

    /// Queues the next part, produced by `make` inside the part's own task
    /// (so that sealing a part overlaps uploading the ones before it).
    /// Waits while `max_in_flight` parts are in flight.
    pub async fn push_with<F>(&mut self, make: F) -> Result<(), StoreError>
    where
        F: std::future::Future<Output = Result<Bytes, StoreError>> + Send + 'static,
    {
        while self.in_flight.len() >= self.max_in_flight {
            if let Err(e) = self.reap_one().await {
                self.abort_now().await;
                return Err(e);
            }
        }
        let (store, key, id, n) = (
            self.store.clone(),
            self.key.clone(),
            self.upload_id.clone(),
            self.next_part,
        );
        self.next_part += 1;
        self.in_flight.spawn(async move {
            let part = make.await?;
            let etag = store.upload_part(&key, &id, n, part).await?;
            Ok((n, etag))
        });
        Ok(())
    }

    /// Parts queued so far.
    pub fn parts(&self) -> i32 {
        self.next_part - 1
    }

    async fn reap_one(&mut self) -> Result<(), StoreError> {
        match self.in_flight.join_next().await {
            Some(Ok(Ok(done))) => {
                self.done.push(done);
                Ok(())
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(join)) => Err(StoreError::Other {
                action: "s3:UploadPart",
                message: format!("upload task failed: {join}"),
            }),
            None => Ok(()),
        }
    }

    /// Waits for every part and completes the upload under `cond`.
    pub async fn finish(mut self, cond: &PutCondition) -> Result<String, StoreError> {
        while !self.in_flight.is_empty() {
            if let Err(e) = self.reap_one().await {
                self.abort_now().await;
                return Err(e);
            }
        }
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|(n, _)| *n);
        match self
            .store
            .complete_multipart(&self.key, &self.upload_id, parts, cond)
            .await
        {
            Ok(etag) => {
                self.open = false;
                Ok(etag)
            }
            Err(e) => {
                self.abort_now().await;
                Err(e)
            }
        }
    }

    pub async fn abort(mut self) {
        self.abort_now().await;
    }

    async fn abort_now(&mut self) {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        if self.open {
            self.open = false;
            if let Err(e) = self.store.abort_multipart(&self.key, &self.upload_id).await {
                tracing::warn!(key = %self.key, error = %e, "could not abort multipart upload; a bucket lifecycle rule for incomplete uploads will clean it up");
            }
        }
    }
}

impl Drop for MultipartUpload {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        self.in_flight.abort_all();
        let (store, key, id) = (self.store.clone(), self.key.clone(), self.upload_id.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = store.abort_multipart(&key, &id).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn parts_assemble_in_order() {
        let mem = MemoryStore::new("b");
        let store: Arc<dyn ObjectStore> = Arc::new(mem.clone());
        let mut up = MultipartUpload::start(store, "k", &Metadata::new(), 3)
            .await
            .unwrap();
        for i in 0..10u8 {
            up.push(Bytes::from(vec![i; 100])).await.unwrap();
        }
        assert!(mem.raw("k").is_none(), "object visible before completion");
        up.finish(&PutCondition::IfNoneMatch).await.unwrap();
        let (data, _) = mem.raw("k").unwrap();
        assert_eq!(data.len(), 1000);
        assert!(data
            .chunks(100)
            .enumerate()
            .all(|(i, c)| c.iter().all(|b| *b == i as u8)));
        assert_eq!(mem.pending_uploads(), 0);
    }

    #[tokio::test]
    async fn failed_condition_aborts_and_leaves_nothing() {
        let mem = MemoryStore::new("b");
        let store: Arc<dyn ObjectStore> = Arc::new(mem.clone());
        store
            .put(
                "k",
                Bytes::from_static(b"old"),
                &Metadata::new(),
                &PutCondition::None,
            )
            .await
            .unwrap();
        let mut up = MultipartUpload::start(store, "k", &Metadata::new(), 2)
            .await
            .unwrap();
        up.push(Bytes::from_static(b"new")).await.unwrap();
        assert!(matches!(
            up.finish(&PutCondition::IfNoneMatch).await,
            Err(StoreError::PreconditionFailed { .. })
        ));
        assert_eq!(&mem.raw("k").unwrap().0[..], b"old");
        assert_eq!(mem.pending_uploads(), 0);
    }

    #[tokio::test]
    async fn dropped_upload_is_aborted() {
        let mem = MemoryStore::new("b");
        let store: Arc<dyn ObjectStore> = Arc::new(mem.clone());
        let mut up = MultipartUpload::start(store, "k", &Metadata::new(), 2)
            .await
            .unwrap();
        up.push(Bytes::from_static(b"x")).await.unwrap();
        drop(up);
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert_eq!(mem.pending_uploads(), 0);
        assert!(mem.raw("k").is_none());
    }
}
