//! `s3://bucket/key` URLs as users type them.

use crate::error::{Error, Result};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Object key or prefix, without a leading slash; may be empty.
    pub key: String,
}

impl S3Url {
    pub fn parse(s: &str) -> Result<Self> {
        let rest = s.strip_prefix("s3://").ok_or_else(|| {
            Error::InvalidArgument(format!("{s:?} is not an s3://BUCKET/PATH URL"))
        })?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::InvalidArgument(format!("{s:?} names no bucket")));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// The key as a volume prefix: no trailing slash.
    pub fn prefix(&self) -> &str {
        self.key.trim_end_matches('/')
    }

    pub fn file_name(&self) -> Option<&str> {
        self.key.rsplit('/').next().filter(|n| !n.is_empty())
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let u = S3Url::parse("s3://b/p/q.txt").unwrap();
        assert_eq!((u.bucket.as_str(), u.key.as_str()), ("b", "p/q.txt"));
        assert_eq!(u.file_name(), Some("q.txt"));
        assert_eq!(S3Url::parse("s3://b").unwrap().key, "");
        assert_eq!(S3Url::parse("s3://b/p/").unwrap().prefix(), "p");
        assert!(S3Url::parse("s3:///x").is_err());
        assert!(S3Url::parse("/tmp/x").is_err());
        assert_eq!(S3Url::parse("s3://b/p/").unwrap().file_name(), None);
    }
}
