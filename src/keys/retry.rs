//! Retries transient KMS failures (throttling, unreachable) with capped,
//! jittered exponential backoff. AccessDenied and other definite answers are
//! returned at once: retrying them only delays the error the user must see.

use super::{EncryptionContext, GeneratedKey, KeyError, KeyService};
use crate::crypto::DataKey;
use async_trait::async_trait;
use rand::Rng;
use std::future::Future;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `attempt` (1-based retry count): full jitter over
    /// `min(max, base * 2^attempt)`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        let ms = cap.as_millis().max(1) as u64;
        Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
    }

    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T, KeyError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, KeyError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.is_transient() && attempt < self.max_attempts => {
                    let d = self.delay(attempt);
                    tracing::debug!(error = %e, attempt, delay_ms = d.as_millis() as u64, "retrying KMS call");
                    tokio::time::sleep(d).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

pub struct Retrying<K> {
    inner: K,
    policy: RetryPolicy,
}

impl<K> Retrying<K> {
    pub fn new(inner: K, policy: RetryPolicy) -> Self {
        Retrying { inner, policy }
    }
}

#[async_trait]
impl<K: KeyService> KeyService for Retrying<K> {
    async fn generate_data_key(
        &self,
        key_id: &str,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedKey, KeyError> {
        self.policy
            .run(|| self.inner.generate_data_key(key_id, ctx))
            .await
    }

    async fn decrypt(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KeyError> {
        self.policy
            .run(|| self.inner.decrypt(key_id, wrapped, ctx))
            .await
    }

    async fn wrap(
        &self,
        key_id: &str,
        key: &DataKey,
        ctx: &EncryptionContext,
    ) -> Result<Vec<u8>, KeyError> {
        self.policy.run(|| self.inner.wrap(key_id, key, ctx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::FileId;
    use crate::keys::FakeKms;

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }
    }

    #[tokio::test]
    async fn throttling_is_retried_then_succeeds() {
        let kms = FakeKms::new();
        let arn = kms.add_key();
        let svc = Retrying::new(kms.clone(), fast());
        let throttled = KeyError::Throttled {
            action: "kms:GenerateDataKey",
        };
        kms.inject([throttled.clone(), throttled]);
        let ctx = EncryptionContext::for_file(&FileId([3; 16]));
        svc.generate_data_key(&arn, &ctx).await.unwrap();
        assert_eq!(kms.calls().generate_data_key, 3);
    }

    #[tokio::test]
    async fn throttling_gives_up_with_a_distinct_error() {
        let kms = FakeKms::new();
        let arn = kms.add_key();
        let svc = Retrying::new(kms.clone(), fast());
        kms.inject(std::iter::repeat_n(
            KeyError::Throttled {
                action: "kms:Decrypt",
            },
            10,
        ));
        let ctx = EncryptionContext::for_file(&FileId([3; 16]));
        let err = svc.decrypt(&arn, b"x", &ctx).await.unwrap_err();
        assert_eq!(
            err,
            KeyError::Throttled {
                action: "kms:Decrypt"
            }
        );
        assert_eq!(kms.calls().decrypt, 4);
    }

    #[tokio::test]
    async fn access_denied_is_not_retried() {
        let kms = FakeKms::new();
        let arn = kms.add_key();
        kms.deny(&arn);
        let svc = Retrying::new(kms.clone(), fast());
        let ctx = EncryptionContext::for_file(&FileId([3; 16]));
        let err = svc.generate_data_key(&arn, &ctx).await.unwrap_err();
        assert!(matches!(err, KeyError::AccessDenied { .. }));
        assert_ne!(
            err,
            KeyError::Throttled {
                action: "kms:GenerateDataKey"
            }
        );
        assert_eq!(kms.calls().generate_data_key, 1);
    }

    #[test]
    fn delays_grow_and_are_capped() {
        let p = RetryPolicy::default();
        assert!(p.delay(1) <= Duration::from_millis(100));
        assert!(p.delay(10) <= Duration::from_secs(2));
        assert!(p.delay(10) >= Duration::from_secs(1));
    }
}
