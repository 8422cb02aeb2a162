//! The read-side cache of unwrapped data keys.
//!
//! An LRU keyed by a digest of (key id, wrapped key, context), with a max age
//! so that a revoked KMS permission takes effect within that age. Concurrent
//! misses for one key share a single KMS call. Keys are `Zeroizing`, so an
//! evicted or expired entry is wiped when it is dropped.

use super::{EncryptionContext, GeneratedKey, KeyError, KeyService};
use crate::crypto::DataKey;
use async_trait::async_trait;
use lru::LruCache;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

type CacheKey = [u8; 32];
type Flight = Arc<OnceCell<Result<DataKey, KeyError>>>;

pub struct CachingKeyService<K> {
    inner: K,
    max_age: Duration,
    lru: Mutex<LruCache<CacheKey, (DataKey, Instant)>>,
    in_flight: Mutex<HashMap<CacheKey, Flight>>,
}

impl<K: KeyService> CachingKeyService<K> {
    pub fn new(inner: K, capacity: usize, max_age: Duration) -> Self {
        CachingKeyService {
            inner,
            max_age,
            lru: Mutex::new(LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap())),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    fn cache_key(key_id: &str, wrapped: &[u8], ctx: &EncryptionContext) -> CacheKey {
        let mut h = Sha256::new();
        for part in [key_id.as_bytes(), wrapped, &ctx.canonical_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }

    fn lookup(&self, ck: &CacheKey) -> Option<DataKey> {
        let mut lru = self.lru.lock();
        match lru.get(ck) {
            Some((dk, at)) if at.elapsed() < self.max_age => Some(dk.clone()),
            Some(_) => {
                lru.pop(ck);
                None
            }
            None => None,
        }
    }

    /// Number of keys held (expired ones included until touched).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lru.lock().len()
    }
}

#[async_trait]
impl<K: KeyService> KeyService for CachingKeyService<K> {
    async fn generate_data_key(
        &self,
        key_id: &str,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedKey, KeyError> {
        let g = self.inner.generate_data_key(key_id, ctx).await?;
        // A key we just generated will be needed to read the file back: cache it
        // so that a read within max_age costs no Decrypt.
        let ck = Self::cache_key(&g.key_id, &g.wrapped, ctx);
        self.lru.lock().put(ck, (g.key.clone(), Instant::now()));
        Ok(g)
    }

    async fn decrypt(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KeyError> {
        let ck = Self::cache_key(key_id, wrapped, ctx);
        if let Some(dk) = self.lookup(&ck) {
            return Ok(dk);
        }
        let flight = self
            .in_flight
            .lock()
            .entry(ck)
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let result = flight
            .get_or_init(|| async {
                // Another flight may have filled the cache between our miss and now.
                if let Some(dk) = self.lookup(&ck) {
                    return Ok(dk);
                }
                let r = self.inner.decrypt(key_id, wrapped, ctx).await;
                if let Ok(dk) = &r {
                    self.lru.lock().put(ck, (dk.clone(), Instant::now()));
                }
                r
            })
            .await
            .clone();
        let mut in_flight = self.in_flight.lock();
        if in_flight.get(&ck).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            in_flight.remove(&ck);
        }
        result
    }

    async fn wrap(
        &self,
        key_id: &str,
        key: &DataKey,
        ctx: &EncryptionContext,
    ) -> Result<Vec<u8>, KeyError> {
        self.inner.wrap(key_id, key, ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::FileId;
    use crate::keys::FakeKms;

    async fn setup(
        max_age: Duration,
    ) -> (
        FakeKms,
        Arc<CachingKeyService<FakeKms>>,
        String,
        GeneratedKey,
        EncryptionContext,
    ) {
        let kms = FakeKms::new();
        let arn = kms.add_key();
        let ctx = EncryptionContext::for_file(&FileId([4; 16]));
        let g = kms.generate_data_key(&arn, &ctx).await.unwrap();
        let cache = Arc::new(CachingKeyService::new(kms.clone(), 16, max_age));
        (kms, cache, arn, g, ctx)
    }

    #[tokio::test]
    async fn hit_costs_no_kms_call() {
        let (kms, cache, arn, g, ctx) = setup(Duration::from_secs(60)).await;
        let a = cache.decrypt(&arn, &g.wrapped, &ctx).await.unwrap();
        let b = cache.decrypt(&arn, &g.wrapped, &ctx).await.unwrap();
        assert_eq!(a.expose(), g.key.expose());
        assert_eq!(b.expose(), g.key.expose());
        assert_eq!(kms.calls().decrypt, 1);
    }

    #[tokio::test]
    async fn generated_keys_are_cached_for_read_back() {
        let (kms, cache, arn, _, ctx) = setup(Duration::from_secs(60)).await;
        let g = cache.generate_data_key(&arn, &ctx).await.unwrap();
        cache.decrypt(&g.key_id, &g.wrapped, &ctx).await.unwrap();
        assert_eq!(kms.calls().decrypt, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_collapse_into_one_call() {
        let (kms, cache, arn, g, ctx) = setup(Duration::from_secs(60)).await;
        kms.set_latency(Some(Duration::from_millis(50)));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (cache, arn, w, ctx) = (cache.clone(), arn.clone(), g.wrapped.clone(), ctx.clone());
            tasks.push(tokio::spawn(
                async move { cache.decrypt(&arn, &w, &ctx).await },
            ));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().expose(), g.key.expose());
        }
        assert_eq!(kms.calls().decrypt, 1);
    }

    #[tokio::test]
    async fn expiry_causes_exactly_one_new_call() {
        let (kms, cache, arn, g, ctx) = setup(Duration::from_millis(30)).await;
        cache.decrypt(&arn, &g.wrapped, &ctx).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        cache.decrypt(&arn, &g.wrapped, &ctx).await.unwrap();
        cache.decrypt(&arn, &g.wrapped, &ctx).await.unwrap();
        assert_eq!(kms.calls().decrypt, 2);
    }

    #[tokio::test]
    async fn errors_are_not_cached_and_contexts_are_separate() {
        let (kms, cache, arn, g, ctx) = setup(Duration::from_secs(60)).await;
        kms.inject([KeyError::Unavailable {
            action: "kms:Decrypt",
            message: "down".into(),
        }]);
        assert!(cache.decrypt(&arn, &g.wrapped, &ctx).await.is_err());
        cache.decrypt(&arn, &g.wrapped, &ctx).await.unwrap();
        let other = EncryptionContext::for_file(&FileId([5; 16]));
        assert_eq!(
            cache.decrypt(&arn, &g.wrapped, &other).await.unwrap_err(),
            KeyError::InvalidCiphertext
        );
        assert_eq!(kms.calls().decrypt, 3);
    }

    #[tokio::test]
    async fn lru_evicts_beyond_capacity() {
        let kms = FakeKms::new();
        let arn = kms.add_key();
        let cache = CachingKeyService::new(kms.clone(), 2, Duration::from_secs(60));
        let mut keys = Vec::new();
        for i in 0..3u8 {
            let ctx = EncryptionContext::for_file(&FileId([i; 16]));
            keys.push((kms.generate_data_key(&arn, &ctx).await.unwrap(), ctx));
        }
        for (g, ctx) in &keys {
            cache.decrypt(&arn, &g.wrapped, ctx).await.unwrap();
        }
        assert_eq!(cache.len(), 2);
        // the first was evicted: reading it again costs a call
        cache
            .decrypt(&arn, &keys[0].0.wrapped, &keys[0].1)
            .await
            .unwrap();
        assert_eq!(kms.calls().decrypt, 4);
    }
}
