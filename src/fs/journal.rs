//! Small private files beside staged content: the recovery journal of a
//! staging file (`<staging file>.json`: the object key and the ETag the
//! change was made on), sealed under the local key and written atomically
//! with mode 0600, and which process left a file behind.

use crate::local::LocalKey;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Local files in use by this mount (recovery leaves them alone).
pub(super) type Live = Arc<Mutex<HashSet<PathBuf>>>;

/// What a staging file's journal says: the content belongs to `key`, on
/// top of the version `base_etag` (none for a new file).
#[derive(Serialize, Deserialize)]
pub(super) struct Journal {
    pub key: String,
    pub base_etag: Option<String>,
    pub pid: u32,
}

pub(super) fn journal_path(staged: &Path) -> PathBuf {
    let mut p = staged.as_os_str().to_owned();
    p.push(".json");
    PathBuf::from(p)
}

/// Record purposes: each sealed record opens only as what it was written as.
pub(super) const STAGING_JOURNAL: &str = "sealfs staging journal";
pub(super) const SPOOL_ENTRY: &str = "sealfs spool entry";
pub(super) const RENAME_JOURNAL: &str = "sealfs rename journal";

/// Writes the journal of `staged` sealed under the local key, atomically,
/// mode 0600. Not fsynced: it guards against a crash of sealfs, which the
/// page cache survives; the staging file it names is not fsynced either, so
/// an fsync here would not make the change survive a power cut, and cost a
/// disk flush per file written (most of a small file's close on ext4).
pub(super) fn write_journal(
    local: &LocalKey,
    staged: &Path,
    key: &str,
    base_etag: Option<&str>,
) -> std::io::Result<()> {
    let j = Journal {
        key: key.to_string(),
        base_etag: base_etag.map(str::to_string),
        pid: std::process::id(),
    };
    local.write_record(&journal_path(staged), STAGING_JOURNAL, &j, false)
}

/// The journal at `path`; `None` when it is missing or does not open
/// under the local key.
pub(super) fn read_journal(local: &LocalKey, path: &Path) -> Option<Journal> {
    local.read_record(path, STAGING_JOURNAL)
}

pub(super) fn remove_journal(staged: &Path) {
    let _ = std::fs::remove_file(journal_path(staged));
}

/// A process id that is running (not a zombie: those have no command
/// line) and is not us.
pub(super) fn other_live_process(pid: u32) -> bool {
    pid != std::process::id()
        && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}
