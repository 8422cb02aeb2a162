//! A volume's audit trail: one MAC'd JSON entry per change of who can read
//! a file (a share, an unshare, a re-key, a grant following a rename or a
//! delete, a stale grant dropped), each its own object under
//! `<prefix>/.sealfs/audit/`. One object per entry, never an append to a
//! shared object: S3 has no append, and two mounts sharing at once must not
//! lose each other's entries.
//!
//! [`AuditTrail`] is the volume's [`GrantLog`]: the grant book reports each
//! change to it once IAM has the change. Reading it back verifies every
//! entry; one that does not verify is reported, never shown as the owners'.
//! Deleting entries needs only write access to the bucket and cannot be
//! detected from the trail alone (docs/SHARING.md: CloudTrail's IAM events
//! are the record nobody with the bucket can touch).

pub mod entry;

use crate::grants::{GrantChange, GrantLog};
use crate::store::{list_all, Metadata, ObjectStore, PutCondition, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use entry::{AuditKey, Entry, Stamp, MAX_ENTRY_BYTES};
use futures::{StreamExt, TryStreamExt};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// The directory of the trail, under a volume's internal area.
const AUDIT_DIR: &str = "audit";

/// What reading one entry of the trail gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// The entry verifies: the owners' record.
    Verified { name: String, entry: Entry },
    /// It does not: forged, edited, copied from another name, or not an entry.
    Refused { name: String, reason: String },
}

/// The trail of the volume at one prefix of one bucket.
pub struct AuditTrail {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    key: AuditKey,
    /// This writer's number in entry names, and its count of entries.
    writer: u32,
    written: AtomicU32,
}

impl AuditTrail {
    /// The trail of the volume at `prefix`, with the key derived from its
    /// volume key ([`crate::volume::VolumeConfig::audit_key`]).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, key: AuditKey) -> Self {
        AuditTrail {
            store,
            prefix: prefix.trim_end_matches('/').to_string(),
            key,
            writer: rand::random(),
            written: AtomicU32::new(0),
        }
    }

    /// `<prefix>/.sealfs/audit/`
    fn dir(&self) -> String {
        crate::volume::join(
            &self.prefix,
            &format!("{}/{AUDIT_DIR}/", crate::volume::INTERNAL_DIR),
        )
    }

    /// Whether `key` of `bucket` is a file of this volume.
    fn holds(&self, bucket: &str, key: &str) -> bool {
        bucket == self.store.bucket() && crate::volume::holds(&self.prefix, key)
    }

    /// Writes one entry as a new object (`If-None-Match`: an entry is never
    /// replaced; a name taken in the same millisecond draws another).
    async fn write(&self, entry: Entry, at: SystemTime) -> crate::Result<String> {
        let mut tries = 0;
        loop {
            let seq = self.written.fetch_add(1, Ordering::Relaxed);
            let name = Stamp::of(at).new_name(self.writer, seq);
            let body = entry.clone().sealed_body(&self.key, &name);
            let put = self
                .store
                .put(
                    &format!("{}{name}", self.dir()),
                    Bytes::from(body),
                    &Metadata::new(),
                    &PutCondition::IfNoneMatch,
                )
                .await;
            match put {
                Ok(_) => return Ok(name),
                Err(StoreError::PreconditionFailed { .. }) if tries < 3 => tries += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Every entry from `since` on (all when `None`), verified, in time order.
    pub async fn read(&self, since: Option<Stamp>) -> crate::Result<Vec<Read>> {
        let dir = self.dir();
        let from = since.map(Stamp::name_prefix);
        let mut names: Vec<String> = list_all(self.store.as_ref(), &dir)
            .await?
            .into_iter()
            .filter_map(|e| e.key.strip_prefix(&dir).map(str::to_string))
            .filter(|n| from.as_ref().is_none_or(|f| n >= f))
            .collect();
        names.sort();
        futures::stream::iter(names)
            .map(|name| self.read_one(name))
            .buffered(16)
            .try_collect()
            .await
    }

    async fn read_one(&self, name: String) -> crate::Result<Read> {
        let key = format!("{}{name}", self.dir());
        let got = match self.store.get(&key, Some(0..MAX_ENTRY_BYTES), None).await {
            Ok(g) => g,
            // Deleted between the LIST and the GET.
            Err(StoreError::NotFound { .. }) => {
                return Ok(Read::Refused {
                    name,
                    reason: "deleted while the trail was read".into(),
                })
            }
            Err(StoreError::InvalidRange { .. }) => {
                return Ok(Read::Refused {
                    name,
                    reason: "empty: not an entry".into(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        if got.info.size > MAX_ENTRY_BYTES {
            return Ok(Read::Refused {
                name,
                reason: format!("{} bytes: too long for an entry", got.info.size),
            });
        }
        Ok(match Entry::open(&self.key, &name, &got.body) {
            Ok(entry) => Read::Verified { name, entry },
            Err(reason) => Read::Refused { name, reason },
        })
    }
}

#[async_trait]
impl GrantLog for AuditTrail {
    /// One object per change of this volume's files, written 8 at a time.
    async fn record(&self, actor: &str, changes: &[GrantChange]) -> crate::Result<()> {
        let at = SystemTime::now();
        let mine: Vec<&GrantChange> = changes
            .iter()
            .filter(|c| {
                let ours = self.holds(&c.bucket, &c.key);
                if !ours {
                    tracing::warn!(bucket = %c.bucket, key = %c.key, "a grant change outside the volume is not in its audit trail");
                }
                ours
            })
            .collect();
        let entries: Vec<Entry> = mine.into_iter().map(|c| Entry::of(c, actor, at)).collect();
        futures::stream::iter(entries)
            .map(|e| self.write(e, at))
            .buffer_unordered(8)
            .try_for_each(|_| async { Ok(()) })
            .await
    }
}

#[cfg(test)]
mod tests;
