//! An in-memory `ObjectStore` with S3's conditional-write, ranged-GET, listing
//! and multipart semantics, and counters of requests by type.

use super::{
    bump, GetResult, GetStream, ListEntry, ListPage, Metadata, ObjectInfo, ObjectStore,
    PutCondition, RequestCounts, StoreError,
};
use async_trait::async_trait;

/// The size of the pieces [`MemoryStore::get_stream`] hands a body over in:
/// odd, so segments and tags straddle pieces.
const PIECE: usize = 12_345;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

#[derive(Clone)]
struct Object {
    data: Bytes,
    metadata: Metadata,
    etag: String,
    modified: SystemTime,
}

struct Upload {
    key: String,
    metadata: Metadata,
    parts: BTreeMap<i32, (String, Bytes)>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Object>,
    uploads: HashMap<String, Upload>,
    next_id: u64,
}

#[derive(Clone)]
pub struct MemoryStore {
    bucket: String,
    state: Arc<Mutex<State>>,
    counts: Arc<RequestCounts>,
}

impl MemoryStore {
    pub fn new(bucket: &str) -> Self {
        MemoryStore {
            bucket: bucket.to_string(),
            state: Arc::default(),
            counts: Arc::default(),
        }
    }

    pub fn counts(&self) -> &RequestCounts {
        &self.counts
    }

    /// Raw bytes of an object, as another S3 client would see them.
    pub fn raw(&self, key: &str) -> Option<(Bytes, Metadata)> {
        let st = self.state.lock();
        st.objects
            .get(key)
            .map(|o| (o.data.clone(), o.metadata.clone()))
    }

    /// Replaces an object's bytes and/or metadata behind sealfs's back (tests).
    pub fn tamper(&self, key: &str, data: Option<Bytes>, metadata: Option<Metadata>) {
        let mut st = self.state.lock();
        let etag = Self::new_etag(&mut st);
        let o = st.objects.get_mut(key).expect("object to tamper with");
        if let Some(d) = data {
            o.data = d;
        }
        if let Some(m) = metadata {
            o.metadata = m;
        }
        o.etag = etag;
    }

    /// Moves every object's LastModified `by` into the past, as if written
    /// that long ago (tests of what LIST vouches for).
    pub fn age(&self, by: std::time::Duration) {
        for o in self.state.lock().objects.values_mut() {
            o.modified -= by;
        }
    }

    /// Replaces an object's metadata the way a self-copy does: same bytes
    /// and ETag, LastModified now (tests).
    pub fn recopy(&self, key: &str, metadata: Metadata) {
        let mut st = self.state.lock();
        let o = st.objects.get_mut(key).expect("object to copy");
        o.metadata = metadata;
        o.modified = SystemTime::now();
    }

    pub fn keys(&self) -> Vec<String> {
        self.state.lock().objects.keys().cloned().collect()
    }

    /// Number of multipart uploads started and neither completed nor aborted.
    pub fn pending_uploads(&self) -> usize {
        self.state.lock().uploads.len()
    }

    fn new_etag(st: &mut State) -> String {
        st.next_id += 1;
        format!("\"{:032x}\"", st.next_id)
    }

    fn not_found(&self, key: &str) -> StoreError {
        StoreError::NotFound {
            bucket: self.bucket.clone(),
            key: key.to_string(),
        }
    }

    fn check(&self, st: &State, key: &str, cond: &PutCondition) -> Result<(), StoreError> {
        let existing = st.objects.get(key);
        let ok = match cond {
            PutCondition::None => true,
            PutCondition::IfNoneMatch => existing.is_none(),
            PutCondition::IfMatch(etag) => existing.is_some_and(|o| &o.etag == etag),
        };
        if ok {
            Ok(())
        } else {
            Err(StoreError::PreconditionFailed {
                bucket: self.bucket.clone(),
                key: key.to_string(),
            })
        }
    }

    fn store(&self, st: &mut State, key: &str, data: Bytes, metadata: Metadata) -> String {
        let etag = Self::new_etag(st);
        st.objects.insert(
            key.to_string(),
            Object {
                data,
                metadata,
                etag: etag.clone(),
                modified: SystemTime::now(),
            },
        );
        etag
    }

    fn info(key: &str, o: &Object) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: o.data.len() as u64,
            etag: o.etag.clone(),
            metadata: o.metadata.clone(),
            last_modified: Some(o.modified),
        }
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        bump(&self.counts.head);
        let st = self.state.lock();
        st.objects
            .get(key)
            .map(|o| Self::info(key, o))
            .ok_or_else(|| self.not_found(key))
    }

    async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        if_match: Option<&str>,
    ) -> Result<GetResult, StoreError> {
        bump(&self.counts.get);
        let st = self.state.lock();
        let o = st.objects.get(key).ok_or_else(|| self.not_found(key))?;
        if let Some(etag) = if_match {
            if o.etag != etag {
                return Err(StoreError::PreconditionFailed {
                    bucket: self.bucket.clone(),
                    key: key.to_string(),
                });
            }
        }
        let len = o.data.len() as u64;
        let body = match range {
            None => o.data.clone(),
            Some(r) if r.start < len && r.start < r.end => {
                o.data.slice(r.start as usize..r.end.min(len) as usize)
            }
            Some(_) => {
                return Err(StoreError::InvalidRange {
                    bucket: self.bucket.clone(),
                    key: key.to_string(),
                })
            }
        };
        Ok(GetResult {
            body,
            info: Self::info(key, o),
        })
    }

    /// The body in pieces of [`PIECE`] bytes, as a network delivers it, so
    /// that every reader is tested with segments split across pieces.
    async fn get_stream(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        if_match: Option<&str>,
    ) -> Result<GetStream, StoreError> {
        let got = self.get(key, range, if_match).await?;
        let pieces: Vec<Result<Bytes, StoreError>> = (0..got.body.len())
            .step_by(PIECE)
            .map(|at| Ok(got.body.slice(at..(at + PIECE).min(got.body.len()))))
            .collect();
        Ok(GetStream {
            info: got.info,
            body: Box::pin(futures::stream::iter(pieces)),
        })
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: &Metadata,
        cond: &PutCondition,
    ) -> Result<String, StoreError> {
        bump(&self.counts.put);
        let mut st = self.state.lock();
        self.check(&st, key, cond)?;
        Ok(self.store(&mut st, key, body, metadata.clone()))
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        bump(&self.counts.list);
        const PAGE: usize = 1000;
        let st = self.state.lock();
        let mut page = ListPage::default();
        let mut prefixes = BTreeSet::new();
        let mut count = 0;
        let start = token.unwrap_or(prefix).to_string();
        for (key, o) in st.objects.range(start.clone()..) {
            if !key.starts_with(prefix) {
                break;
            }
            // A token naming a common prefix resumes after everything under it.
            let under_token_prefix = delimiter.is_some_and(|d| !d.is_empty() && start.ends_with(d))
                && key.starts_with(&start);
            if token.is_some() && (*key <= start || under_token_prefix) {
                continue;
            }
            if count == PAGE {
                let last_key = page.objects.last().map(|e: &ListEntry| e.key.clone());
                let last_prefix = prefixes.iter().next_back().cloned();
                page.next = last_key.into_iter().chain(last_prefix).max();
                break;
            }
            let rest = &key[prefix.len()..];
            if let Some(d) = delimiter.filter(|d| !d.is_empty()) {
                if let Some(i) = rest.find(d) {
                    let p = format!("{prefix}{}", &rest[..i + d.len()]);
                    if prefixes.insert(p) {
                        count += 1;
                    }
                    continue;
                }
            }
            page.objects.push(ListEntry {
                key: key.clone(),
                size: o.data.len() as u64,
                etag: o.etag.clone(),
                last_modified: Some(o.modified),
            });
            count += 1;
        }
        page.prefixes = prefixes.into_iter().collect();
        Ok(page)
    }

    async fn copy(
        &self,
        from: &str,
        to: &str,
        source_etag: Option<&str>,
        metadata: &Metadata,
        cond: &PutCondition,
    ) -> Result<String, StoreError> {
        bump(&self.counts.copy);
        let mut st = self.state.lock();
        let source = st.objects.get(from).ok_or_else(|| self.not_found(from))?;
        if source_etag.is_some_and(|e| e != source.etag) {
            return Err(StoreError::PreconditionFailed {
                bucket: self.bucket.clone(),
                key: from.to_string(),
            });
        }
        let data = source.data.clone();
        self.check(&st, to, cond)?;
        Ok(self.store(&mut st, to, data, metadata.clone()))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        bump(&self.counts.delete);
        self.state.lock().objects.remove(key);
        Ok(())
    }

    async fn create_multipart(&self, key: &str, metadata: &Metadata) -> Result<String, StoreError> {
        bump(&self.counts.create_multipart);
        let mut st = self.state.lock();
        st.next_id += 1;
        let id = format!("upload-{}", st.next_id);
        st.uploads.insert(
            id.clone(),
            Upload {
                key: key.to_string(),
                metadata: metadata.clone(),
                parts: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        bump(&self.counts.upload_part);
        let mut st = self.state.lock();
        let etag = Self::new_etag(&mut st);
        let up = st
            .uploads
            .get_mut(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| self.not_found(key))?;
        up.parts.insert(part_number, (etag.clone(), body));
        Ok(etag)
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(i32, String)>,
        cond: &PutCondition,
    ) -> Result<String, StoreError> {
        bump(&self.counts.complete_multipart);
        let mut st = self.state.lock();
        self.check(&st, key, cond)?;
        let up = st
            .uploads
            .get(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| self.not_found(key))?;
        let mut data = BytesMut::new();
        for (n, etag) in &parts {
            match up.parts.get(n) {
                Some((e, body)) if e == etag => data.extend_from_slice(body),
                _ => {
                    return Err(StoreError::Other {
                        action: "s3:CompleteMultipartUpload",
                        message: format!("part {n} missing or ETag mismatch"),
                    })
                }
            }
        }
        let metadata = up.metadata.clone();
        st.uploads.remove(upload_id);
        Ok(self.store(&mut st, key, data.freeze(), metadata))
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> Result<(), StoreError> {
        bump(&self.counts.abort_multipart);
        self.state.lock().uploads.remove(upload_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::list_all;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn conditional_writes() {
        let s = MemoryStore::new("b");
        let m = Metadata::new();
        let e1 = s
            .put(
                "k",
                Bytes::from_static(b"1"),
                &m,
                &PutCondition::IfNoneMatch,
            )
            .await
            .unwrap();
        assert!(matches!(
            s.put(
                "k",
                Bytes::from_static(b"2"),
                &m,
                &PutCondition::IfNoneMatch
            )
            .await,
            Err(StoreError::PreconditionFailed { .. })
        ));
        let e2 = s
            .put(
                "k",
                Bytes::from_static(b"2"),
                &m,
                &PutCondition::IfMatch(e1.clone()),
            )
            .await
            .unwrap();
        assert!(s
            .put(
                "k",
                Bytes::from_static(b"3"),
                &m,
                &PutCondition::IfMatch(e1.clone())
            )
            .await
            .is_err());
        assert!(s.get("k", None, Some(&e1)).await.is_err());
        assert_eq!(&s.get("k", None, Some(&e2)).await.unwrap().body[..], b"2");
    }

    #[tokio::test]
    async fn ranges_and_listing() {
        let s = MemoryStore::new("b");
        let m = Metadata::new();
        s.put(
            "p/a",
            Bytes::from_static(b"hello world"),
            &m,
            &PutCondition::None,
        )
        .await
        .unwrap();
        assert_eq!(
            &s.get("p/a", Some(6..11), None).await.unwrap().body[..],
            b"world"
        );
        assert_eq!(s.get("p/a", Some(6..11), None).await.unwrap().info.size, 11);
        assert!(s.get("p/a", Some(11..12), None).await.is_err());
        for i in 0..2500 {
            s.put(
                &format!("p/d/{i:05}"),
                Bytes::new(),
                &m,
                &PutCondition::None,
            )
            .await
            .unwrap();
        }
        let page = s.list("p/", Some("/"), None).await.unwrap();
        assert_eq!(page.objects.len(), 1);
        assert_eq!(page.prefixes, vec!["p/d/".to_string()]);
        assert_eq!(list_all(&s, "p/d/").await.unwrap().len(), 2500);
        assert_eq!(s.counts().list.load(Ordering::Relaxed), 1 + 3);
    }
}
