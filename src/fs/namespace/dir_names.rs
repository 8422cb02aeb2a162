//! The names each directory had in S3 at its last LIST, and what LIST
//! showed of each object, so that lookups of names that do not exist cost
//! one LIST per directory and TTL rather than three requests each (see
//! `SealFs::listed_name`), and known files are revalidated by that LIST
//! rather than by a HEAD each (`SealFs::confirmed_by_listing`).

use crate::store::ListedVersion;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Listings held before the stale ones are pruned.
const PRUNE_AT: usize = 256;

/// A directory's names in S3: objects with what LIST showed of them,
/// prefixes with `None`.
pub type ListedNames = HashMap<String, Option<ListedVersion>>;

/// The names a directory had in S3, and when they were listed.
type Listed = (Instant, Arc<ListedNames>);

/// What lookups spent on one directory within the current TTL window.
#[derive(Clone, Copy)]
struct Spent {
    since: Instant,
    /// Entries revalidated by a HEAD each.
    heads: usize,
    /// A LIST limited to this many pages did not reach the directory's end:
    /// none so limited is tried again within the window.
    too_long_at: usize,
}

#[derive(Default)]
pub(super) struct DirNames {
    map: Mutex<HashMap<u64, Listed>>,
    spent: Mutex<HashMap<u64, Spent>>,
}

/// `dir`'s spending in the window that began no more than `ttl` ago.
fn window(m: &mut HashMap<u64, Spent>, dir: u64, ttl: Duration) -> &mut Spent {
    if m.len() >= PRUNE_AT {
        m.retain(|_, s| s.since.elapsed() < ttl);
    }
    let new = || Spent {
        since: Instant::now(),
        heads: 0,
        too_long_at: 0,
    };
    let s = m.entry(dir).or_insert_with(new);
    if s.since.elapsed() >= ttl {
        *s = new();
    }
    s
}

impl DirNames {
    pub(super) fn remember(&self, dir: u64, names: ListedNames, ttl: Duration) {
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

    /// Whether the next stale entry of `dir` is better revalidated by a
    /// HEAD than by a LIST of `pages` pages, which would revalidate all of
    /// them for the TTL: a HEAD while the HEADs of this window have cost
    /// less than that LIST (so neither a single `stat` in a huge directory
    /// nor a walk of every entry pays more than twice the cheaper way).
    /// Counts the HEAD when it says yes.
    pub(super) fn head_rather_than_list(&self, dir: u64, pages: usize, ttl: Duration) -> bool {
        let mut m = self.spent.lock();
        let s = window(&mut m, dir, ttl);
        let head = s.heads + 1 < pages || s.too_long_at >= pages;
        if head {
            s.heads += 1;
        }
        head
    }

    /// Whether a LIST of `dir` limited to `pages` pages may be tried (no
    /// such LIST fell short within the window).
    pub(super) fn may_list(&self, dir: u64, pages: usize, ttl: Duration) -> bool {
        window(&mut self.spent.lock(), dir, ttl).too_long_at < pages
    }

    /// A LIST of `dir` limited to `pages` pages did not reach its end.
    pub(super) fn list_fell_short(&self, dir: u64, pages: usize, ttl: Duration) {
        let mut m = self.spent.lock();
        let s = window(&mut m, dir, ttl);
        s.too_long_at = s.too_long_at.max(pages);
    }

    pub(super) fn fresh(&self, dir: u64, ttl: Duration) -> Option<Arc<ListedNames>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn a_directory_is_listed_once_its_heads_have_cost_as_much_as_the_list() {
        let n = DirNames::default();
        // One page: listing costs what a HEAD does, and answers every entry.
        assert!(!n.head_rather_than_list(1, 1, TTL));
        // Three pages: two HEADs first, then the LIST.
        assert!(n.head_rather_than_list(2, 3, TTL));
        assert!(n.head_rather_than_list(2, 3, TTL));
        assert!(!n.head_rather_than_list(2, 3, TTL));
        // Directories are counted apart.
        assert!(n.head_rather_than_list(3, 3, TTL));
    }

    #[test]
    fn a_listing_that_fell_short_is_not_tried_again_within_the_window() {
        let n = DirNames::default();
        assert!(n.may_list(1, 10, TTL));
        n.list_fell_short(1, 10, TTL);
        assert!(!n.may_list(1, 10, TTL));
        assert!(!n.may_list(1, 5, TTL));
        assert!(
            n.may_list(1, 11, TTL),
            "a longer one may still reach the end"
        );
        assert!(n.head_rather_than_list(1, 10, TTL), "HEADs meanwhile");
        assert!(n.may_list(2, 10, TTL));
        // A new window forgets.
        let short = Duration::from_millis(1);
        n.list_fell_short(3, 10, short);
        std::thread::sleep(Duration::from_millis(5));
        assert!(n.may_list(3, 10, short));
    }
}
