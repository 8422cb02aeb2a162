//! The names each directory had in S3 at its last LIST, so that lookups
//! of names that do not exist cost one LIST per directory and TTL rather
//! than three requests each (see `SealFs::listed_name`).

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Listings held before the stale ones are pruned.
const PRUNE_AT: usize = 256;

/// The names a directory had in S3, and when they were listed.
type Listed = (Instant, Arc<HashSet<String>>);

#[derive(Default)]
pub(super) struct DirNames {
    map: Mutex<HashMap<u64, Listed>>,
}

impl DirNames {
    pub(super) fn remember(&self, dir: u64, names: HashSet<String>, ttl: Duration) {
        let mut m = self.map.lock();
        // Listings of directories not looked at again within the TTL are
        // dropped as others come, so a walk of a huge tree keeps only the
        // recent ones.
        if m.len() >= PRUNE_AT {
            m.retain(|_, (t, _)| t.elapsed() < ttl);
        }
        m.insert(dir, (Instant::now(), Arc::new(names)));
    }

    /// Something changed in `dir` behind the inode table's back (a conflict
    /// copy, a recovered upload): list it again next time.
    pub(super) fn forget(&self, dir: u64) {
        self.map.lock().remove(&dir);
    }

    pub(super) fn clear(&self) {
        self.map.lock().clear();
    }

    pub(super) fn fresh(&self, dir: u64, ttl: std::time::Duration) -> Option<Arc<HashSet<String>>> {
        let mut m = self.map.lock();
        match m.get(&dir) {
            Some((t, names)) if t.elapsed() < ttl => Some(names.clone()),
            Some(_) => {
                m.remove(&dir);
                None
            }
            None => None,
        }
    }
}
