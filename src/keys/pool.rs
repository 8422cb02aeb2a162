//! Pre-generated data keys for new files, so creating a file never waits on KMS.
//!
//! Each pooled key has its own random file id and was generated with that id in
//! its encryption context, so a pooled key is as single-use as a fresh one.
//! Taking a key triggers a background refill back to the target size; when the
//! pool is empty the caller generates synchronously and sees any KMS error.
//!
//! Sized for real quotas: the target and the refill concurrency are mount
//! options (`--kms-pool`, `--kms-concurrency`). A refill that fails (KMS
//! throttling, after the retry layer's own backoff) is not tried again by
//! the next take, but only after a pause that doubles with each failure
//! (1 s up to 60 s): under throttling the pool backs off instead of adding a
//! storm of calls to an account-wide quota.

use super::{EncryptionContext, GeneratedKey, KeyError, KeyService};
use crate::crypto::FileId;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How the pool is sized.
#[derive(Clone, Copy, Debug)]
pub struct PoolSettings {
    /// Keys kept ready (0: every new file calls KMS itself).
    pub target: usize,
    /// GenerateDataKey calls in flight while refilling.
    pub concurrency: usize,
}

impl PoolSettings {
    /// No pool: each new file calls KMS itself (one-shot commands, tests).
    pub fn off() -> Self {
        PoolSettings {
            target: 0,
            ..PoolSettings::default()
        }
    }
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            target: 32,
            concurrency: 8,
        }
    }
}

/// The pause after a failed refill: doubled by each failure in a row.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(60);

/// A data key for one new file, with the file id it is bound to.
#[derive(Debug)]
pub struct NewFileKey {
    pub file_id: FileId,
    pub generated: GeneratedKey,
}

pub struct KeyPool {
    inner: Arc<dyn KeyService>,
    key_id: String,
    settings: PoolSettings,
    ready: Mutex<VecDeque<NewFileKey>>,
    refilling: AtomicBool,
    /// After failed refills: no refill before this, and the next pause.
    backoff: Mutex<Option<(Instant, Duration)>>,
}

impl KeyPool {
    pub fn new(
        inner: Arc<dyn KeyService>,
        key_id: impl Into<String>,
        settings: PoolSettings,
    ) -> Arc<Self> {
        Arc::new(KeyPool {
            inner,
            key_id: key_id.into(),
            ready: Mutex::new(VecDeque::with_capacity(settings.target)),
            settings,
            refilling: AtomicBool::new(false),
            backoff: Mutex::new(None),
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
    /// `concurrency` GenerateDataKey calls run at once: a burst of new files
    /// (cp -r of thousands) drains the pool faster than one call at a time,
    /// each a KMS round trip, could refill it.
    pub async fn fill(&self) -> Result<(), KeyError> {
        loop {
            let missing = self.settings.target.saturating_sub(self.ready());
            if missing == 0 {
                return Ok(());
            }
            let at_once = missing.min(self.settings.concurrency.max(1));
            let batch = futures::future::join_all((0..at_once).map(|_| self.generate())).await;
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
        if self.settings.target == 0 {
            return;
        }
        if self
            .backoff
            .lock()
            .is_some_and(|(until, _)| Instant::now() < until)
        {
            return;
        }
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            match pool.fill().await {
                Ok(()) => *pool.backoff.lock() = None,
                Err(e) => {
                    let mut b = pool.backoff.lock();
                    let pause = b.map_or(FIRST_PAUSE, |(_, p)| (p * 2).min(LONGEST_PAUSE));
                    *b = Some((Instant::now() + pause, pause));
                    tracing::warn!(error = %e, pause_s = pause.as_secs(), "could not refill the data key pool; new files call KMS directly, and the pool tries again after the pause");
                }
            }
            pool.refilling.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::FakeKms;

    fn sized(target: usize) -> PoolSettings {
        PoolSettings {
            target,
            ..PoolSettings::default()
        }
    }

    #[tokio::test]
    async fn pooled_keys_are_distinct_and_bound_to_their_file_id() {
        let kms = FakeKms::new();
        let arn = kms.add_key();
        let pool = KeyPool::new(Arc::new(kms.clone()), arn.clone(), sized(4));
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
        let pool = KeyPool::new(Arc::new(kms.clone()), arn, sized(3));
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
        let pool = KeyPool::new(Arc::new(kms.clone()), arn, sized(0));
        assert!(matches!(
            pool.take().await.unwrap_err(),
            KeyError::AccessDenied { .. }
        ));
    }

    // Virtual time: the pauses are counted exactly.
    #[tokio::test(start_paused = true)]
    async fn a_throttled_refill_backs_off_instead_of_retrying_on_every_take() {
        let kms = FakeKms::new();
        let arn = kms.add_key();
        let settings = PoolSettings {
            target: 4,
            concurrency: 2,
        };
        let pool = KeyPool::new(Arc::new(kms.clone()), arn, settings);
        let throttled = || KeyError::Throttled {
            action: "GenerateDataKey",
        };
        // A refill whose calls are throttled (after the retry layer gave up).
        kms.inject([throttled(), throttled()]);
        pool.spawn_refill();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!((kms.calls().generate_data_key, pool.ready()), (2, 0));
        // Takes within the pause call KMS for themselves only: no refill.
        for _ in 0..5 {
            pool.take().await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!((kms.calls().generate_data_key, pool.ready()), (7, 0));
        // After the pause a take refills again; failing once more, the
        // pause doubles.
        tokio::time::sleep(FIRST_PAUSE).await;
        kms.inject([throttled(), throttled()]);
        pool.spawn_refill();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!((kms.calls().generate_data_key, pool.ready()), (9, 0));
        tokio::time::sleep(FIRST_PAUSE + Duration::from_millis(100)).await;
        pool.take().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(kms.calls().generate_data_key, 10, "still paused");
        // Past the doubled pause, the refill runs and succeeds.
        tokio::time::sleep(FIRST_PAUSE).await;
        pool.take().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(kms.calls().generate_data_key, 15);
        assert_eq!(pool.ready(), 4);
    }
}
