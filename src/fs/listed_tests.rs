//! Attributes LIST vouches for: a cold `ls -l` from the directory's
//! attribute index, and stale entries revalidated by one LIST of their
//! directory instead of a HEAD each; never staler than the TTL allows.

use super::tests::{chmod, rig_same_store, rig_with, Rig};
use super::{DirEntry, SealFs, ROOT};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

const TTL: Duration = Duration::from_millis(200);

/// `d` with `n` files, every third chmod 600, written long enough ago for
/// LIST to vouch for what is read of them now. Returns `d` and the files.
async fn tree(r: &Rig, n: usize) -> (u64, Vec<u64>) {
    let d = r.fs.mkdir(ROOT, "d", 0o755, 0, 0).await.unwrap().ino;
    let mut files = Vec::new();
    for i in 0..n {
        let f = r.write_file(d, &format!("f{i:02}"), b"x").await;
        if i % 3 == 0 {
            chmod(&r.fs, f, 0o600).await;
        }
        files.push(f);
    }
    r.mem.age(Duration::from_secs(10));
    (d, files)
}

/// `ls -l d` on `fs`: readdir, then a lookup of every name. Returns each
/// file's mode, and the HEADs and GETs it cost.
async fn ls_l(r: &Rig, fs: &SealFs) -> (Vec<(String, u32)>, u64, u64) {
    let d = fs.lookup(ROOT, "d").await.unwrap().ino;
    let c = r.mem.counts();
    let (h0, g0) = (c.head.load(Relaxed), c.get.load(Relaxed));
    let mut modes = Vec::new();
    for e in fs.readdir(d).await.unwrap() {
        if e.name != "." && e.name != ".." {
            let attr = fs.lookup(d, &e.name).await.unwrap().attr;
            modes.push((e.name, attr.mode));
        }
    }
    (modes, c.head.load(Relaxed) - h0, c.get.load(Relaxed) - g0)
}

/// `d` with `n` files, listed by another mount of the same store: that
/// mount, `d`'s inode there, and the entries (without "." and "..").
async fn listed_elsewhere(r: &Rig, n: usize) -> (SealFs, u64, Vec<DirEntry>) {
    tree(r, n).await;
    let fs = rig_same_store(r);
    let d = fs.lookup(ROOT, "d").await.unwrap().ino;
    let listed = fs
        .readdir(d)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.name != "." && e.name != "..")
        .collect();
    (fs, d, listed)
}

fn expected(n: usize) -> Vec<(String, u32)> {
    (0..n)
        .map(|i| (format!("f{i:02}"), if i % 3 == 0 { 0o600 } else { 0o644 }))
        .collect()
}

#[tokio::test]
async fn a_cold_ls_l_reads_the_attribute_index_instead_of_a_head_per_entry() {
    let r = rig_with(TTL);
    let (_, files) = tree(&r, 30).await;
    // The first cold listing HEADs every entry, and writes the index.
    let (modes, heads, _) = ls_l(&r, &rig_same_store(&r)).await;
    assert_eq!(modes, expected(30));
    assert_eq!(heads, 30);
    // Every later cold listing reads it: one GET, no HEAD.
    let other = rig_same_store(&r);
    let (modes, heads, gets) = ls_l(&r, &other).await;
    assert_eq!(modes, expected(30));
    assert_eq!((heads, gets), (0, 1));

    // A chmod through the first mount: the next listing past the TTL shows
    // it (that entry no longer matches LIST: one HEAD), the rest still
    // come from the index.
    chmod(&r.fs, files[1], 0o640).await;
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    let (modes, heads, _) = ls_l(&r, &other).await;
    let mut want = expected(30);
    want[1].1 = 0o640;
    assert_eq!(modes, want);
    assert_eq!(heads, 1);
}

#[tokio::test]
async fn stale_entries_are_revalidated_by_one_list_not_a_head_each() {
    let r = rig_with(TTL);
    let (_, files) = tree(&r, 20).await;
    let other = rig_same_store(&r);
    ls_l(&r, &other).await;
    let d = other.lookup(ROOT, "d").await.unwrap().ino;
    let c = r.mem.counts();

    // Past the TTL, `tar c d`'s lstat of each file: one LIST, no HEAD.
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    let (h0, l0) = (c.head.load(Relaxed), c.list.load(Relaxed));
    let mut inos = Vec::new();
    for (name, mode) in expected(20) {
        let e = other.lookup(d, &name).await.unwrap();
        assert_eq!(e.attr.mode, mode);
        inos.push(e.ino);
    }
    assert_eq!(c.head.load(Relaxed) - h0, 0);
    assert_eq!(c.list.load(Relaxed) - l0, 1);

    // getattr of open files (fstat) revalidates the same way.
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    let (h0, l0) = (c.head.load(Relaxed), c.list.load(Relaxed));
    for &ino in &inos {
        other.getattr(ino).await.unwrap();
    }
    assert_eq!(c.head.load(Relaxed) - h0, 0);
    assert_eq!(c.list.load(Relaxed) - l0, 1);

    // An entry changed elsewhere does not match that LIST: one HEAD, and
    // the new mode, as soon as the TTL allows.
    chmod(&r.fs, files[4], 0o604).await;
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    let h0 = c.head.load(Relaxed);
    assert_eq!(other.lookup(d, "f04").await.unwrap().attr.mode, 0o604);
    assert_eq!(other.lookup(d, "f05").await.unwrap().attr.mode, 0o644);
    assert_eq!(c.head.load(Relaxed) - h0, 1);
}

#[tokio::test]
async fn attributes_read_within_a_second_of_a_change_are_always_asked_again() {
    // Nothing aged: every object was written within this second, when a
    // metadata-only change could still leave LIST's answer unchanged.
    let r = rig_with(TTL);
    let d = r.fs.mkdir(ROOT, "d", 0o755, 0, 0).await.unwrap().ino;
    for i in 0..5 {
        r.write_file(d, &format!("f{i:02}"), b"x").await;
    }
    let other = rig_same_store(&r);
    let (_, heads, _) = ls_l(&r, &other).await;
    assert_eq!(heads, 5);
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    let d2 = other.lookup(ROOT, "d").await.unwrap().ino;
    let h0 = r.mem.counts().head.load(Relaxed);
    for i in 0..5 {
        other.lookup(d2, &format!("f{i:02}")).await.unwrap();
    }
    assert_eq!(r.mem.counts().head.load(Relaxed) - h0, 5, "a HEAD each");
    // And no index was written from them.
    assert!(!r
        .mem
        .keys()
        .iter()
        .any(|k| k.starts_with("vol/.sealfs/attribute-index/")));
}

#[tokio::test]
async fn a_large_directory_is_listed_once_its_heads_cost_as_much_as_the_list() {
    // Long enough that the walk below stays within one window.
    let ttl = Duration::from_secs(1);
    let r = rig_with(ttl);
    let d = r.fs.mkdir(ROOT, "d", 0o755, 0, 0).await.unwrap().ino;
    for i in 0..2100 {
        r.write_file(d, &format!("f{i:04}"), b"").await;
    }
    r.mem.age(Duration::from_secs(10));
    let other = rig_same_store(&r);
    let d2 = other.lookup(ROOT, "d").await.unwrap().ino;
    other.readdir(d2).await.unwrap();
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    let c = r.mem.counts();
    // A stat of one entry in a directory of three pages: one HEAD.
    let (h0, l0) = (c.head.load(Relaxed), c.list.load(Relaxed));
    other.lookup(d2, "f0007").await.unwrap();
    assert_eq!(
        (c.head.load(Relaxed) - h0, c.list.load(Relaxed) - l0),
        (1, 0)
    );
    // A walk of all of them: one more HEAD, then one LIST answers the rest.
    for i in 0..2100 {
        other.lookup(d2, &format!("f{i:04}")).await.unwrap();
    }
    assert_eq!(c.head.load(Relaxed) - h0, 2);
    assert_eq!(c.list.load(Relaxed) - l0, 3, "three pages");
}

/// After a listing, what `ls -l` asks of every entry (a lookup, a getattr,
/// `security.*` and `system.*` attributes) is answered at hand, with no
/// request to S3; an absent name of a listed directory too. What needs S3
/// (a stale entry, a `user.*` attribute) is left to the async path.
#[tokio::test]
async fn after_a_listing_ls_l_is_answered_at_hand() {
    let r = rig_with(TTL);
    let (fs, d, listed) = listed_elsewhere(&r, 12).await;
    let names: Vec<String> = listed.into_iter().map(|e| e.name).collect();
    let requests = || r.mem.counts().nonzero().iter().map(|(_, n)| n).sum::<u64>();
    let before = requests();
    let mut modes = Vec::new();
    for n in &names {
        let e = fs.lookup_at_hand(d, n).expect("at hand").unwrap();
        let again = fs.getattr_at_hand(e.ino).expect("at hand").unwrap();
        assert_eq!(again.attr.mode, e.attr.mode);
        let xattrs = fs.listxattr_at_hand(e.ino).expect("at hand").unwrap();
        assert_eq!(xattrs, fs.listxattr(e.ino).await.unwrap());
        for x in ["security.selinux", "system.posix_acl_access"] {
            let err = fs.getxattr_at_hand(e.ino, x).expect("at hand").unwrap_err();
            assert_eq!(err.errno(), libc::EOPNOTSUPP);
        }
        modes.push((n.clone(), e.attr.mode));
    }
    assert_eq!(modes, expected(12));
    let absent = fs.lookup_at_hand(d, "nope").expect("at hand").unwrap_err();
    assert_eq!(absent.errno(), libc::ENOENT);
    assert!(fs.getxattr_at_hand(ROOT, "user.note").is_none());
    assert_eq!(requests(), before, "no S3 request");
    let f = fs
        .lookup_at_hand(d, &names[1])
        .expect("at hand")
        .unwrap()
        .ino;
    fs.setxattr(f, "user.k", b"v", 0).await.unwrap();
    let xattrs = fs.listxattr_at_hand(f).expect("at hand").unwrap();
    assert_eq!(xattrs, b"user.k\0");
    // Past the TTL the entries need S3 again: not at hand.
    tokio::time::sleep(TTL * 3).await;
    assert!(fs.lookup_at_hand(d, &names[0]).is_none());
    assert!(fs
        .listxattr_at_hand(listed_ino(&fs, d, &names[2]))
        .is_none());
}

/// The inode `name` in `d` has in `fs`'s table.
fn listed_ino(fs: &SealFs, d: u64, name: &str) -> u64 {
    fs.ns.child(d, name).expect("in the table")
}

/// `readdirplus` hands each entry with what a lookup would answer, and each
/// is counted as a lookup the kernel will forget. Past the TTL, or for a
/// name unlinked since, the entry is handed only for revalidation; an entry
/// gone from the table is not counted.
#[tokio::test]
async fn entries_handed_with_a_listing_are_counted_like_lookups() {
    let r = rig_with(TTL);
    let (fs, d, listed) = listed_elsewhere(&r, 12).await;
    let requests = || r.mem.counts().nonzero().iter().map(|(_, n)| n).sum::<u64>();
    let before = requests();
    let mut modes = Vec::new();
    for e in &listed {
        assert_eq!(fs.ns.lookups(e.ino), Some(0));
        let (entry, vouched) = fs.lookup_listed(d, &e.name, e.ino).expect("in the table");
        assert!(vouched, "{}: a trusted listing vouches for it", e.name);
        assert_eq!(entry.ino, e.ino);
        assert_eq!(fs.ns.lookups(e.ino), Some(1));
        modes.push((e.name.clone(), entry.attr.mode));
    }
    assert_eq!(modes, expected(12));
    assert_eq!(requests(), before, "no S3 request");
    for e in &listed[1..] {
        fs.forget(e.ino, 1);
        assert_eq!(fs.ns.lookups(e.ino), Some(0));
    }

    // Unlinked since the listing while the kernel still holds it: handed
    // (and counted), but to be looked up again.
    let held = &listed[0];
    fs.unlink(d, &held.name).await.unwrap();
    let (entry, vouched) = fs.lookup_listed(d, &held.name, held.ino).unwrap();
    assert!(!vouched && !entry.linked);
    assert_eq!(fs.ns.lookups(held.ino), Some(2));
    // Unlinked and no longer held: gone from the table, not counted.
    let gone = &listed[1];
    fs.unlink(d, &gone.name).await.unwrap();
    assert!(fs.lookup_listed(d, &gone.name, gone.ino).is_none());
    assert_eq!(fs.ns.lookups(gone.ino), None);
    // Past the TTL the listing vouches for nothing.
    tokio::time::sleep(TTL * 3).await;
    let late = &listed[2];
    let (entry, vouched) = fs.lookup_listed(d, &late.name, late.ino).unwrap();
    assert!(!vouched && entry.linked);
    assert_eq!(fs.ns.lookups(late.ino), Some(1));
}
