//! The read cache: entries, groups, tampering, the bound, the writer.

use super::*;
use bytes::Bytes;

fn cache(dir: &Path, key: &Arc<LocalKey>, limit: u64) -> Arc<ReadCache> {
    ReadCache::open_with(dir, key.clone(), limit, false).unwrap()
}

/// A cache of `limit` bytes in a new directory under a new local key (the
/// directory and key returned, for remounts), written inline.
fn fresh(limit: u64) -> (tempfile::TempDir, Arc<LocalKey>, Arc<ReadCache>) {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(LocalKey::ephemeral());
    let c = cache(dir.path(), &key, limit);
    (dir, key, c)
}

/// Segment `index` (`len` bytes) of version `etag` of `vol/f`, in 64
/// KiB segments.
fn seg(etag: &str, index: u64, len: u64) -> Slot<'_> {
    Slot {
        key: "vol/f",
        etag,
        segment_size: 64 << 10,
        index,
        len,
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join(DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn entries_survive_a_remount_and_a_new_version_misses() {
    let (dir, key, c) = fresh(1 << 20);
    c.put(&seg("e1", 3, 13), Bytes::from_static(b"segment three"));
    assert_eq!(
        c.get(&seg("e1", 3, 13)).as_deref(),
        Some(&b"segment three"[..])
    );
    assert_eq!(c.get(&seg("e2", 3, 13)), None, "another version");
    assert_eq!(c.get(&seg("e1", 4, 13)), None, "another segment");
    let again = cache(dir.path(), &key, 1 << 20);
    assert_eq!(
        again.get(&seg("e1", 3, 13)).as_deref(),
        Some(&b"segment three"[..])
    );
    // Under another local key (another cache directory's), nothing opens.
    let other = cache(dir.path(), &Arc::new(LocalKey::ephemeral()), 1 << 20);
    assert_eq!(other.get(&seg("e1", 3, 13)), None);
    assert_eq!(other.bytes(), 0, "the unreadable entry was discarded");
}

#[test]
fn a_changed_entry_is_discarded_never_served() {
    let (dir, _key, c) = fresh(1 << 20);
    // An entry of another length than the object says is not served.
    c.put(&seg("e", 5, 1000), Bytes::from(vec![5u8; 1000]));
    assert_eq!(c.get(&seg("e", 5, 999)), None);
    assert_eq!(c.get(&seg("e", 5, 1000)), None, "and it is gone");
    c.put(&seg("e", 0, 1000), Bytes::from(vec![7u8; 1000]));
    let path = files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[50] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(c.get(&seg("e", 0, 1000)), None);
    assert!(!path.exists());
    assert_eq!(c.bytes(), 0);
    // Another entry's bytes under this entry's name do not open either.
    c.put(&seg("e", 1, 10), Bytes::from(vec![1u8; 10]));
    let one = files(dir.path()).pop().unwrap();
    c.put(&seg("e", 2, 10), Bytes::from(vec![2u8; 10]));
    let two = files(dir.path()).into_iter().find(|p| *p != one).unwrap();
    std::fs::copy(&two, &one).unwrap();
    assert_eq!(c.get(&seg("e", 1, 10)), None);
    assert!(!std::fs::read(&two)
        .unwrap()
        .windows(10)
        .any(|w| w == [2u8; 10]));
}

/// A run of segments as a sequential read offers it: `n` segments of
/// 64 KiB from `first`, the last `last` bytes long; segment i is filled
/// with byte i.
fn run(first: u64, n: u64, last: u64) -> Bytes {
    let mut v = Vec::new();
    for i in first..first + n {
        let len = if i + 1 == first + n { last } else { 64 << 10 };
        v.extend(std::iter::repeat_n(i as u8, len as usize));
    }
    Bytes::from(v)
}

#[test]
fn a_run_is_kept_in_groups_and_each_segment_reads_from_them() {
    let (dir, key, c) = fresh(64 << 20);
    // Segments 8..52: 8..16 and 48..52 as segments, 16..48 as groups.
    c.put_run(&seg("e", 8, 64 << 10), run(8, 44, 64 << 10));
    assert_eq!(files(dir.path()).len(), 8 + 2 + 4);
    for i in 8..52 {
        let at = seg("e", i, 64 << 10);
        assert!(c.has(&at), "segment {i}");
        assert_eq!(c.get(&at).unwrap(), vec![i as u8; 64 << 10]);
        let part = c.get_range(&at, 100..4200).unwrap();
        assert_eq!(part, vec![i as u8; 4100]);
    }
    assert!(!c.has(&seg("e", 52, 64 << 10)));
    assert!(!c.has(&seg("e", 7, 64 << 10)));
    // A run ending in a short segment is the object's end: the last
    // group is whole with fewer segments.
    c.put_run(&seg("e2", 64, 64 << 10), run(64, 3, 1000));
    assert_eq!(files(dir.path()).len(), 14 + 1);
    assert_eq!(c.get(&seg("e2", 66, 1000)).unwrap(), vec![66u8; 1000]);
    assert_eq!(
        c.get(&seg("e2", 65, 64 << 10)).unwrap(),
        vec![65u8; 64 << 10]
    );
    // A length the group does not hold is not served from it.
    assert_eq!(c.get(&seg("e2", 66, 999)), None);
    assert_eq!(c.get(&seg("e2", 65, 1000)), None);
    // They survive a remount.
    let again = cache(dir.path(), &key, 64 << 20);
    assert_eq!(
        again.get(&seg("e", 20, 64 << 10)).unwrap(),
        vec![20u8; 64 << 10]
    );
    let stats = again.stats();
    assert_eq!((stats.entries, stats.stored), (15, 0));
    assert_eq!(c.stats().stored, 15);
}

#[test]
fn an_altered_group_is_discarded_and_its_segments_read_elsewhere() {
    let (dir, _key, c) = fresh(64 << 20);
    c.put_run(&seg("e", 0, 64 << 10), run(0, 16, 64 << 10));
    let group = files(dir.path()).pop().unwrap();
    c.put(&seg("e", 3, 64 << 10), run(3, 1, 64 << 10));
    let mut bytes = std::fs::read(&group).unwrap();
    // A byte in the piece holding segment 3's first bytes.
    let at = (3 * (64 << 10) / ENTRY_PIECE * (ENTRY_PIECE + 28) + 20) as usize;
    bytes[at] ^= 1;
    std::fs::write(&group, &bytes).unwrap();
    // Segment 3 is served from its own entry; the group is gone.
    assert_eq!(c.get(&seg("e", 3, 64 << 10)).unwrap(), vec![3u8; 64 << 10]);
    assert!(!group.exists());
    assert!(!c.has(&seg("e", 4, 64 << 10)));
    // A group cut short (at a piece boundary) fails to open as a whole.
    c.put_run(&seg("e", 0, 64 << 10), run(0, 16, 64 << 10));
    let group = files(dir.path())
        .into_iter()
        .find(|p| std::fs::metadata(p).unwrap().len() > 1 << 20)
        .unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&group)
        .unwrap();
    f.set_len(10 * (ENTRY_PIECE + 28)).unwrap();
    assert_eq!(c.get(&seg("e", 0, 64 << 10)), None);
    assert!(!group.exists());
}

#[test]
fn the_cache_never_exceeds_its_size() {
    let (dir, key, c) = fresh(10_000);
    for i in 0..100 {
        c.put(&seg("e", i, 1000), Bytes::from(vec![i as u8; 1000]));
        assert!(c.bytes() <= 10_000);
    }
    let on_disk: u64 = files(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, c.bytes());
    assert!(c.get(&seg("e", 99, 1000)).is_some(), "the newest stay");
    assert!(c.get(&seg("e", 0, 1000)).is_none(), "the oldest go");
    // A smaller bound at the next mount evicts down to it.
    let small = cache(dir.path(), &key, 3_000);
    assert!(small.bytes() <= 3_000);
    let off = cache(dir.path(), &key, 0);
    off.put(&seg("e", 200, 1), Bytes::from_static(b"x"));
    off.put_run(&seg("e", 0, 64 << 10), run(0, 16, 64 << 10));
    assert_eq!(off.bytes(), 0, "size 0 turns it off");
}

#[test]
fn the_background_writer_writes_what_reads_put_and_drops_what_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(LocalKey::ephemeral());
    let c = ReadCache::open(dir.path(), key, 1 << 30).unwrap();
    c.put(&seg("e", 0, 5), Bytes::from_static(b"later"));
    c.flush();
    assert_eq!(c.get(&seg("e", 0, 5)).as_deref(), Some(&b"later"[..]));
    // More than the queue holds at once, offered faster than it is
    // written: what is not kept is counted, never waited for.
    let big = run(0, 16, 64 << 10);
    let offers = 20 * QUEUE_BYTES / big.len() as u64;
    for g in 0..offers {
        c.put_run(&seg("e", g * 16, 64 << 10), big.clone());
    }
    c.flush();
    let stats = c.stats();
    assert_eq!(stats.stored + stats.dropped, 1 + offers);
    assert!(stats.dropped > 0, "{stats:?}");
    assert_eq!(stats.entries, stats.stored);
}

#[test]
fn a_miss_beside_a_held_group_fetches_its_whole_group() {
    let (_dir, _key, c) = fresh(64 << 20);
    let total = 100; // segments of the object
                     // Nothing held: a random miss fetches what it needs.
    assert_eq!(c.fill_run(&seg("e", 37, 64 << 10), 37..38, total), 37..38);
    // Group 1 (segments 16..32) held: a miss in group 2 or group 0 fetches
    // that group; a miss in group 3 (no held neighbour) does not.
    c.put_run(&seg("e", 16, 64 << 10), run(16, 16, 64 << 10));
    assert_eq!(c.fill_run(&seg("e", 37, 64 << 10), 37..39, total), 32..48);
    assert_eq!(c.fill_run(&seg("e", 3, 64 << 10), 3..4, total), 0..16);
    assert_eq!(c.fill_run(&seg("e", 50, 64 << 10), 50..51, total), 50..51);
    // A run across two groups is left as it is; so is another version's.
    assert_eq!(c.fill_run(&seg("e", 47, 64 << 10), 47..49, total), 47..49);
    assert_eq!(c.fill_run(&seg("f", 37, 64 << 10), 37..38, total), 37..38);
    // The last group ends at the object's end.
    c.put_run(&seg("e", 80, 64 << 10), run(80, 16, 64 << 10));
    assert_eq!(c.fill_run(&seg("e", 98, 64 << 10), 98..99, total), 96..100);
}
