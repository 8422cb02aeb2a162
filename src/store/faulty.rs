//! A fault-injecting [`ObjectStore`] decorator for core tests: chosen
//! operations fail (as S3 being unreachable would) for their next N calls,
//! or every call fails at a seeded random rate. The HTTP-level equivalent,
//! for real mounts, is scripts/faultproxy.py.

use super::{
    GetResult, GetStream, ListPage, Metadata, ObjectInfo, ObjectStore, PutCondition, StoreError,
};
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

/// Operation names, as `fail_next` takes them.
pub const OPS: [&str; 10] = [
    "head",
    "get",
    "put",
    "list",
    "copy",
    "delete",
    "create_multipart",
    "upload_part",
    "complete_multipart",
    "abort_multipart",
];

struct Plan {
    /// Per operation: calls that still succeed, then calls that fail.
    next: HashMap<&'static str, (u32, u32)>,
    rate: f64,
    rng: rand::rngs::StdRng,
    injected: u64,
}

pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    plan: Mutex<Plan>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        FaultyStore {
            inner,
            plan: Mutex::new(Plan {
                next: HashMap::new(),
                rate: 0.0,
                rng: rand::rngs::StdRng::seed_from_u64(1),
                injected: 0,
            }),
        }
    }

    /// The next `n` calls of `op` fail.
    pub fn fail_next(&self, op: &'static str, n: u32) {
        assert!(OPS.contains(&op), "unknown operation {op}");
        self.plan.lock().next.insert(op, (0, n));
    }

    /// The next `pass` calls of `op` succeed, then `n` fail (a crash or an
    /// outage half-way through a batch).
    pub fn fail_after(&self, op: &'static str, pass: u32, n: u32) {
        assert!(OPS.contains(&op), "unknown operation {op}");
        self.plan.lock().next.insert(op, (pass, n));
    }

    /// Every call fails with probability `rate` (seeded: reproducible).
    pub fn fail_at_rate(&self, rate: f64, seed: u64) {
        let mut p = self.plan.lock();
        p.rate = rate;
        p.rng = rand::rngs::StdRng::seed_from_u64(seed);
    }

    /// No more faults.
    pub fn heal(&self) {
        let mut p = self.plan.lock();
        p.next.clear();
        p.rate = 0.0;
    }

    pub fn injected(&self) -> u64 {
        self.plan.lock().injected
    }

    fn check(&self, op: &'static str) -> Result<(), StoreError> {
        let mut p = self.plan.lock();
        let planned = match p.next.get_mut(op) {
            Some((pass, _)) if *pass > 0 => {
                *pass -= 1;
                false
            }
            Some((_, n)) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        let rate = p.rate;
        if planned || (rate > 0.0 && p.rng.gen_bool(rate)) {
            p.injected += 1;
            return Err(StoreError::Unavailable {
                action: op,
                message: "injected fault".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        self.check("head")?;
        self.inner.head(key).await
    }

    async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        if_match: Option<&str>,
    ) -> Result<GetResult, StoreError> {
        self.check("get")?;
        self.inner.get(key, range, if_match).await
    }

    async fn get_stream(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        if_match: Option<&str>,
    ) -> Result<GetStream, StoreError> {
        self.check("get")?;
        self.inner.get_stream(key, range, if_match).await
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: &Metadata,
        cond: &PutCondition,
    ) -> Result<String, StoreError> {
        self.check("put")?;
        self.inner.put(key, body, metadata, cond).await
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        self.check("list")?;
        self.inner.list(prefix, delimiter, token).await
    }

    async fn copy(
        &self,
        from: &str,
        to: &str,
        source_etag: Option<&str>,
        metadata: &Metadata,
        cond: &PutCondition,
    ) -> Result<String, StoreError> {
        self.check("copy")?;
        self.inner.copy(from, to, source_etag, metadata, cond).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.check("delete")?;
        self.inner.delete(key).await
    }

    async fn create_multipart(&self, key: &str, metadata: &Metadata) -> Result<String, StoreError> {
        self.check("create_multipart")?;
        self.inner.create_multipart(key, metadata).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        self.check("upload_part")?;
        self.inner
            .upload_part(key, upload_id, part_number, body)
            .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(i32, String)>,
        cond: &PutCondition,
    ) -> Result<String, StoreError> {
        self.check("complete_multipart")?;
        self.inner
            .complete_multipart(key, upload_id, parts, cond)
            .await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.check("abort_multipart")?;
        self.inner.abort_multipart(key, upload_id).await
    }
}
