//! What a mount has done since it started, for `sealfs status` and the
//! metrics endpoint: conflict copies made, staged changes recovered, and
//! the errors answered to applications, by errno. Counters only; each is
//! bumped where the event happens and read as one JSON snapshot.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

pub struct Activity {
    started: SystemTime,
    conflicts: AtomicU64,
    recovered: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            started: SystemTime::now(),
            conflicts: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
        }
    }
}

/// The symbolic name of the errnos sealfs answers with.
pub fn errno_name(code: i32) -> &'static str {
    match code {
        libc::EIO => "EIO",
        libc::ENOSPC => "ENOSPC",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::EROFS => "EROFS",
        libc::EINVAL => "EINVAL",
        libc::ENOTSUP => "ENOTSUP",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::EFBIG => "EFBIG",
        libc::EBUSY => "EBUSY",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::EISDIR => "EISDIR",
        libc::ENOTDIR => "ENOTDIR",
        libc::EEXIST => "EEXIST",
        libc::ENOENT => "ENOENT",
        libc::ENODATA => "ENODATA",
        libc::EXDEV => "EXDEV",
        libc::ERANGE => "ERANGE",
        libc::E2BIG => "E2BIG",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EAGAIN => "EAGAIN",
        libc::EINTR => "EINTR",
        _ => "other",
    }
}

impl Activity {
    /// A conflict copy was made (two writers, or a recovered change whose
    /// file had moved on).
    pub fn conflict(&self) {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
    }

    /// Staged or spooled changes a crash left behind were uploaded: as the
    /// file's next version, or (`as_conflict_copy`) beside it.
    pub fn recovered(&self, as_conflict_copy: bool) {
        self.recovered.fetch_add(1, Ordering::Relaxed);
        if as_conflict_copy {
            self.conflict();
        }
    }

    /// An error (not an ordinary answer such as ENOENT from a lookup) was
    /// answered to an application.
    pub fn error(&self, code: i32) {
        *self.errors.lock().entry(errno_name(code)).or_insert(0) += 1;
    }

    /// `{"started_unix", "uptime_s", "conflict_copies", "recovered", "errors": {"EIO": n}}`
    pub fn snapshot(&self) -> serde_json::Value {
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        serde_json::json!({
            "started_unix": unix(self.started),
            "uptime_s": SystemTime::now().duration_since(self.started).map(|d| d.as_secs()).unwrap_or(0),
            "conflict_copies": self.conflicts.load(Ordering::Relaxed),
            "recovered": self.recovered.load(Ordering::Relaxed),
            "errors": *self.errors.lock(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_snapshot() {
        let a = Activity::default();
        a.conflict();
        a.recovered(false);
        a.recovered(true);
        a.error(libc::EIO);
        a.error(libc::EIO);
        a.error(libc::ENOSPC);
        a.error(12345);
        let s = a.snapshot();
        assert_eq!(s["conflict_copies"], 2);
        assert_eq!(s["recovered"], 2);
        assert_eq!(
            s["errors"],
            serde_json::json!({"EIO": 2, "ENOSPC": 1, "other": 1})
        );
        assert!(s["uptime_s"].as_u64().unwrap() < 60);
    }
}
