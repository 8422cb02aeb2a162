//! Small private files beside staged content: the recovery journal of a
//! staging file (`<staging file>.json`: the object key and the ETag the
//! change was made on), written atomically with mode 0600, and which
//! process left a file behind.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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

/// Writes the journal atomically (temporary file, fsync, rename), mode 0600.
pub(super) fn write_journal(
    staged: &Path,
    key: &str,
    base_etag: Option<&str>,
) -> std::io::Result<()> {
    let j = Journal {
        key: key.to_string(),
        base_etag: base_etag.map(str::to_string),
        pid: std::process::id(),
    };
    write_private_json(&journal_path(staged), &j, true)
}

/// The journal at `path`; `None` when it is missing or unreadable.
pub(super) fn read_journal(path: &Path) -> Option<Journal> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

pub(super) fn remove_journal(staged: &Path) {
    let _ = std::fs::remove_file(journal_path(staged));
}

/// Writes `value` as JSON to `path` atomically (a temporary file renamed
/// into place), mode 0600, fsynced first when `sync`.
pub(super) fn write_private_json(
    path: &Path,
    value: &impl Serialize,
    sync: bool,
) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(value).expect("plain data serialises"))?;
    if sync {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// A process id that is running (not a zombie: those have no command
/// line) and is not us.
pub(super) fn other_live_process(pid: u32) -> bool {
    pid != std::process::id()
        && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}
