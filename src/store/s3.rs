//! `ObjectStore` over Amazon S3 (aws-sdk-s3), also used for S3-compatible
//! servers and emulators (path-style addressing is chosen by the app).

use super::{
    bump, GetResult, GetStream, ListEntry, ListPage, Metadata, ObjectInfo, ObjectStore,
    PutCondition, RequestCounts, StoreError,
};
use crate::aws_error::{classify, Class};
use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use bytes::Bytes;
use futures::TryStreamExt;
use std::collections::HashMap;
use std::ops::Range;
use std::time::SystemTime;

/// The most a GET allocates for its body before bytes arrive (read-ahead
/// GETs are 4 MiB; a larger body grows its buffer as it comes).
const PREALLOCATE_MAX: u64 = 16 << 20;

#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    counts: std::sync::Arc<RequestCounts>,
}

impl S3Store {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3Store {
            client,
            bucket: bucket.into(),
            counts: Default::default(),
        }
    }

    /// Requests sent (attempts the SDK retried count once).
    pub fn counts(&self) -> &RequestCounts {
        &self.counts
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    fn err<E>(&self, action: &'static str, key: &str, err: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let f = classify(&err);
        let bucket = self.bucket.clone();
        let key = key.to_string();
        match f.class {
            _ if f.code.as_deref() == Some("NoSuchBucket") => StoreError::NoSuchBucket(bucket),
            _ if f.code.as_deref() == Some("InvalidRange") || f.status == Some(416) => {
                StoreError::InvalidRange { bucket, key }
            }
            Class::Denied => StoreError::AccessDenied {
                action,
                bucket,
                key,
            },
            Class::NoCredentials => StoreError::NoCredentials,
            Class::NotFound => StoreError::NotFound { bucket, key },
            Class::PreconditionFailed => StoreError::PreconditionFailed { bucket, key },
            Class::Throttled => StoreError::Throttled { action },
            Class::Unreachable => StoreError::Unavailable {
                action,
                message: f.message,
            },
            Class::Other => StoreError::Other {
                action,
                message: f.message,
            },
        }
    }
}

fn to_map(m: &Metadata) -> Option<HashMap<String, String>> {
    Some(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn from_map(m: Option<&HashMap<String, String>>) -> Metadata {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

fn time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

/// Total size from `Content-Range: bytes a-b/total`.
fn total_from_content_range(cr: &str) -> Option<u64> {
    cr.rsplit('/').next()?.parse().ok()
}

/// Percent-encodes a key for `x-amz-copy-source` (everything but unreserved and '/').
fn encode_copy_source(bucket: &str, key: &str) -> String {
    let mut out = format!("{bucket}/");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A key from a listing made with `encoding-type=url`: form-style
/// encoding, where `+` is a space and a literal `+` arrives as `%2B`.
fn url_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[async_trait]
impl ObjectStore for S3Store {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        bump(&self.counts.head);
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("s3:GetObject (HEAD)", key, e))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().unwrap_or_default().to_string(),
            metadata: from_map(out.metadata()),
            last_modified: time(out.last_modified()),
        })
    }

    async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        if_match: Option<&str>,
    ) -> Result<GetResult, StoreError> {
        let GetStream { info, mut body } = self.get_stream(key, range, if_match).await?;
        // Each piece is copied into one buffer of the announced length as
        // it arrives, while it is still in cache, rather than all pieces
        // held until the end and then concatenated (a second pass over
        // every body). What is allocated ahead is bounded whatever the
        // server announces.
        let mut buf = bytes::BytesMut::with_capacity(info.size.min(PREALLOCATE_MAX) as usize);
        while let Some(piece) = body.try_next().await? {
            buf.extend_from_slice(&piece);
        }
        Ok(GetResult {
            body: buf.freeze(),
            info,
        })
    }

    async fn get_stream(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        if_match: Option<&str>,
    ) -> Result<GetStream, StoreError> {
        bump(&self.counts.get);
        if let Some(r) = &range {
            if r.start >= r.end {
                return Err(StoreError::InvalidRange {
                    bucket: self.bucket.clone(),
                    key: key.to_string(),
                });
            }
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(
                range
                    .as_ref()
                    .map(|r| format!("bytes={}-{}", r.start, r.end - 1)),
            )
            .set_if_match(if_match.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.err("s3:GetObject", key, e))?;
        let length = out.content_length().unwrap_or(0).max(0) as u64;
        let size = out
            .content_range()
            .and_then(total_from_content_range)
            .unwrap_or(length);
        let info = ObjectInfo {
            key: key.to_string(),
            size,
            etag: out.e_tag().unwrap_or_default().to_string(),
            metadata: from_map(out.metadata()),
            last_modified: time(out.last_modified()),
        };
        // A body that runs past the announced length is refused.
        let announced = out.content_length().filter(|l| *l >= 0).map(|l| l as u64);
        let key = key.to_string();
        let body = futures::stream::try_unfold((out.body, 0u64), move |(mut body, seen)| {
            let key = key.clone();
            async move {
                let unavailable = |message: String| StoreError::Unavailable {
                    action: "s3:GetObject",
                    message,
                };
                let Some(piece) = body
                    .try_next()
                    .await
                    .map_err(|e| unavailable(format!("reading body of {key}: {e}")))?
                else {
                    return Ok(None);
                };
                let seen = seen + piece.len() as u64;
                if let Some(l) = announced.filter(|l| seen > *l) {
                    return Err(unavailable(format!(
                        "body of {key} is longer than its Content-Length {l}"
                    )));
                }
                Ok(Some((piece, (body, seen))))
            }
        });
        Ok(GetStream {
            info,
            body: Box::pin(body),
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
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .set_metadata(to_map(metadata));
        req = match cond {
            PutCondition::None => req,
            PutCondition::IfNoneMatch => req.if_none_match("*"),
            PutCondition::IfMatch(etag) => req.if_match(etag),
        };
        // No SHA-256 of the body for the signature (a fifth of the CPU of
        // a large write): the body is ciphertext that sealfs authenticates
        // end to end, and the SDK's CRC checksum still guards the transfer.
        let out = req
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.err("s3:PutObject", key, e))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        bump(&self.counts.list);
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_string))
            .set_continuation_token(token.map(str::to_string))
            // Keys may hold characters XML 1.0 cannot carry (U+0001...):
            // ask for them URL-encoded, and decode below.
            .encoding_type(aws_sdk_s3::types::EncodingType::Url)
            .send()
            .await
            .map_err(|e| self.err("s3:ListBucket", prefix, e))?;
        Ok(ListPage {
            objects: out
                .contents()
                .iter()
                .map(|o| ListEntry {
                    key: url_decode(o.key().unwrap_or_default()),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().unwrap_or_default().to_string(),
                    last_modified: time(o.last_modified()),
                })
                .collect(),
            prefixes: out
                .common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(url_decode))
                .collect(),
            next: if out.is_truncated().unwrap_or(false) {
                out.next_continuation_token().map(str::to_string)
            } else {
                None
            },
        })
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
        let mut req = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(encode_copy_source(&self.bucket, from))
            .set_copy_source_if_match(source_etag.map(str::to_string))
            .metadata_directive(MetadataDirective::Replace)
            .set_metadata(to_map(metadata));
        req = match cond {
            PutCondition::None => req,
            PutCondition::IfNoneMatch => req.if_none_match("*"),
            PutCondition::IfMatch(etag) => req.if_match(etag),
        };
        let out = req
            .send()
            .await
            .map_err(|e| self.err("s3:CopyObject", to, e))?;
        Ok(out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .unwrap_or_default()
            .to_string())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        bump(&self.counts.delete);
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("s3:DeleteObject", key, e))?;
        Ok(())
    }

    async fn create_multipart(&self, key: &str, metadata: &Metadata) -> Result<String, StoreError> {
        bump(&self.counts.create_multipart);
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_metadata(to_map(metadata))
            .send()
            .await
            .map_err(|e| self.err("s3:PutObject (CreateMultipartUpload)", key, e))?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| StoreError::Other {
                action: "s3:CreateMultipartUpload",
                message: "response has no upload id".into(),
            })
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        bump(&self.counts.upload_part);
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number)
            .body(ByteStream::from(body))
            // As for PutObject: ciphertext, authenticated end to end.
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.err("s3:PutObject (UploadPart)", key, e))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(i32, String)>,
        cond: &PutCondition,
    ) -> Result<String, StoreError> {
        bump(&self.counts.complete_multipart);
        let parts = parts
            .into_iter()
            .map(|(n, etag)| CompletedPart::builder().part_number(n).e_tag(etag).build())
            .collect();
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        req = match cond {
            PutCondition::None => req,
            PutCondition::IfNoneMatch => req.if_none_match("*"),
            PutCondition::IfMatch(etag) => req.if_match(etag),
        };
        let out = req
            .send()
            .await
            .map_err(|e| self.err("s3:PutObject (CompleteMultipartUpload)", key, e))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        bump(&self.counts.abort_multipart);
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.err("s3:AbortMultipartUpload", key, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_is_percent_encoded() {
        assert_eq!(encode_copy_source("b", "a b/c+d%"), "b/a%20b/c%2Bd%25");
        assert_eq!(encode_copy_source("b", "ü"), "b/%C3%BC");
    }

    #[test]
    fn content_range_total() {
        assert_eq!(total_from_content_range("bytes 0-9/1234"), Some(1234));
        assert_eq!(total_from_content_range("bytes 0-9/*"), None);
    }
}

#[cfg(test)]
mod url_tests {
    #[test]
    fn listing_keys_decode() {
        assert_eq!(super::url_decode("a+b%2Bc%01%20d/%C3%A9"), "a b+c\u{1} d/é");
    }
}
