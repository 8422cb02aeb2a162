//! Pre-generated data keys for new files, so creating a file never waits on KMS.
//!
//! Each pooled key has its own random file id and was generated with that id in
//! its encryption context, so a pooled key is as single-use as a fresh one.
//! Taking a key triggers a background refill back to the target size; when the
//! pool is empty the caller generates synchronously and sees any KMS error.

use super::{EncryptionContext, GeneratedKey, KeyError, KeyService};
use crate::crypto::FileId;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// GenerateDataKey calls in flight while refilling.
const FILL_CONCURRENCY: usize = 8;

/// A data key for one new file, with the file id it is bound to.
#[derive(Debug)]
pub struct NewFileKey {
    pub file_id: FileId,
    pub generated: GeneratedKey,
}

pub struct KeyPool {
    inner: Arc<dyn KeyService>,
    key_id: String,
    target: usize,
    ready: Mutex<VecDeque<NewFileKey>>,
    refilling: AtomicBool,
}

impl KeyPool {
    pub fn new(inner: Arc<dyn KeyService>, key_id: impl Into<String>, target: usize) -> Arc<Self> {
        Arc::new(KeyPool {
            inner,
            key_id: key_id.into(),
            target,
            ready: Mutex::new(VecDeque::with_capacity(target)),
            refilling: AtomicBool::new(false),
        })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Keys ready to hand out now.
    pub fn ready(&self) -> usize {
        self.ready.lock().len()
    }

    async fn generate(&self) -> Result<NewFileKey, KeyError> {
        let file_id = FileId::random();
        let ctx = EncryptionContext::for_file(&file_id);
        let generated = self.inner.generate_data_key(&self.key_id, &ctx).await?;
        Ok(NewFileKey { file_id, generated })
    }

    /// Fills the pool to its target now, returning the first error. Up to
    /// [`FILL_CONCURRENCY`] GenerateDataKey calls run at once: a burst of new
    /// files (cp -r of thousands) drains the pool faster than one call at a
    /// time, each a KMS round trip, could refill it.
    pub async fn fill(&self) -> Result<(), KeyError> {
        loop {
            let missing = self.target.saturating_sub(self.ready());
            if missing == 0 {
                return Ok(());
            }
            let batch = futures::future::join_all(
                (0..missing.min(FILL_CONCURRENCY)).map(|_| self.generate()),
            )
            .await;
            let mut first_err = None;
            for k in batch {
                match k {
                    Ok(k) => self.ready.lock().push_back(k),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
    }

    /// A key for a new file: from the pool when one is ready, else generated now.
    pub async fn take(self: &Arc<Self>) -> Result<NewFileKey, KeyError> {
        let pooled = self.ready.lock().pop_front();
        self.spawn_refill();
        match pooled {
            Some(k) => Ok(k),
            None => self.generate().await,
        }
    }

    fn spawn_refill(self: &Arc<Self>) {
        if self.target == 0 || self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = pool.fill().await {
                tracing::warn!(error = %e, "could not refill the data key pool; new files will call KMS directly");
            }
            pool.refilling.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::FakeKms;
    use std::time::Duration;

    #[tokio::test]
    async fn pooled_keys_are_distinct_and_bound_to_their_file_id() {
        let kms = FakeKms::new();
        let arn = kms.add_key();
        let pool = KeyPool::new(Arc::new(kms.clone()), arn.clone(), 4);
        pool.fill().await.unwrap();
        assert_eq!(kms.calls().generate_data_key, 4);
        let a = pool.take().await.unwrap();
        let b = pool.take().await.unwrap();
        assert_ne!(a.file_id, b.file_id);
        assert_ne!(a.generated.key.expose(), b.generated.key.expose());
        let ctx = EncryptionContext::for_file(&a.file_id);
        let dk = kms.decrypt(&arn, &a.generated.wrapped, &ctx).await.unwrap();
        assert_eq!(dk.expose(), a.generated.key.expose());
    }

    // Paused (virtual) time makes this deterministic: a take that waited on the
    // 200 ms KMS latency would advance the virtual clock.
    #[tokio::test(start_paused = true)]
    async fn take_does_not_wait_on_kms_and_refills_in_background() {
        let kms = FakeKms::new();
        let arn = kms.add_key();
        let pool = KeyPool::new(Arc::new(kms.clone()), arn, 3);
        pool.fill().await.unwrap();
        kms.set_latency(Some(Duration::from_millis(200)));
        let started = tokio::time::Instant::now();
        for _ in 0..3 {
            pool.take().await.unwrap();
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(pool.ready(), 3);
        assert_eq!(kms.calls().generate_data_key, 6);
    }

    #[tokio::test]
    async fn empty_pool_surfaces_kms_errors() {
        let kms = FakeKms::new();
        let arn = kms.add_key();
        kms.deny(&arn);
        let pool = KeyPool::new(Arc::new(kms.clone()), arn, 0);
        assert!(matches!(
            pool.take().await.unwrap_err(),
            KeyError::AccessDenied { .. }
        ));
    }
}
