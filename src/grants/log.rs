//! The record of every change sealfs makes to who can read a file: the
//! [`GrantLog`] trait the grant book reports each change to once IAM has
//! it, and [`MemoryGrantLog`], the in-memory log beside it for tests.
//!
//! The book reports changes of access only: a grant made, changed (a new
//! end) or revoked, and a grant that followed its file (a rename, a delete,
//! a re-key) or was dropped as stale. Pruning statements whose end has
//! passed is housekeeping (AWS already refuses them) and is not reported;
//! nor is a share that wrote nothing because the grant was already there.

use super::expiry::Until;
use super::grantee::Grantee;
use async_trait::async_trait;
use parking_lot::Mutex;

/// What happened to a grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrantAction {
    /// The grantee may read the file (until `until`, when it has one).
    Share,
    /// The grantee's grant of the file was revoked.
    Unshare,
    /// The file was re-keyed; the grant follows the new file id (`to`).
    Rekey,
    /// The file was renamed; the grant follows it to `to`.
    Move,
    /// The file was deleted; its grant went with it.
    Remove,
    /// The grant named a file that is gone or was replaced, and was dropped.
    DropStale,
}

impl GrantAction {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantAction::Share => "share",
            GrantAction::Unshare => "unshare",
            GrantAction::Rekey => "rekey",
            GrantAction::Move => "move",
            GrantAction::Remove => "remove",
            GrantAction::DropStale => "drop-stale",
        }
    }
}

/// One change of one grantee's access to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantChange {
    pub action: GrantAction,
    pub bucket: String,
    /// The file's object key.
    pub key: String,
    /// The file id the grant names, when known (a delete by name, or a
    /// stale grant, may not know it).
    pub file_id: Option<String>,
    pub grantee: Grantee,
    /// A share's end.
    pub until: Option<Until>,
    /// Where the grant went: the new key (a move) or file id (a re-key).
    pub to: Option<String>,
}

impl GrantChange {
    pub fn new(action: GrantAction, bucket: &str, key: &str, grantee: &Grantee) -> Self {
        GrantChange {
            action,
            bucket: bucket.to_string(),
            key: key.to_string(),
            file_id: None,
            grantee: grantee.clone(),
            until: None,
            to: None,
        }
    }

    pub fn file_id(mut self, id: &str) -> Self {
        self.file_id = Some(id.to_string());
        self
    }

    pub fn until(mut self, until: Option<Until>) -> Self {
        self.until = until;
        self
    }

    pub fn to(mut self, to: &str) -> Self {
        self.to = Some(to.to_string());
        self
    }
}

/// Where the grant book reports the changes it made, after IAM has them.
#[async_trait]
pub trait GrantLog: Send + Sync {
    /// Records `changes`, made by `actor` (the caller's ARN). An error means
    /// the changes stand in IAM but are not recorded; the book logs it.
    async fn record(&self, actor: &str, changes: &[GrantChange]) -> crate::Result<()>;
}

/// A [`GrantLog`] that keeps what it is told, for tests.
#[derive(Default)]
pub struct MemoryGrantLog {
    changes: Mutex<Vec<(String, GrantChange)>>,
}

impl MemoryGrantLog {
    /// Everything recorded so far, with its actor, and forgets it.
    pub fn take(&self) -> Vec<(String, GrantChange)> {
        std::mem::take(&mut self.changes.lock())
    }
}

#[async_trait]
impl GrantLog for MemoryGrantLog {
    async fn record(&self, actor: &str, changes: &[GrantChange]) -> crate::Result<()> {
        self.changes
            .lock()
            .extend(changes.iter().map(|c| (actor.to_string(), c.clone())));
        Ok(())
    }
}
