use super::*;
use proptest::prelude::*;

fn seen(kind: Kind) -> Seen {
    Seen {
        attr: Attr::new(kind, 0o644, 0, 0),
        etag: Some("e".into()),
        key_ref: None,
        remote: true,
        listed: None,
    }
}

#[test]
fn paths_follow_renames() {
    let mut t = Table::new(Attr::new(Kind::Dir, 0o755, 0, 0), 100);
    let a = t.upsert(ROOT, "a", seen(Kind::Dir));
    let b = t.upsert(a, "b", seen(Kind::Dir));
    let f = t.upsert(b, "f.txt", seen(Kind::File));
    assert_eq!(t.path(f).unwrap(), "a/b/f.txt");
    t.rename(ROOT, "a", ROOT, "z");
    assert_eq!(t.path(f).unwrap(), "z/b/f.txt");
    assert_eq!(
        t.upsert(b, "f.txt", seen(Kind::File)),
        f,
        "same kind keeps the inode"
    );
    assert_ne!(
        t.upsert(b, "f.txt", seen(Kind::Dir)),
        f,
        "a new kind is a new inode"
    );
    assert_eq!(t.unlink(ROOT, "z"), Some(a));
    assert_eq!(t.child(ROOT, "z"), None);
}

#[test]
fn unreferenced_entries_are_a_bounded_cache() {
    let mut t = Table::new(Attr::new(Kind::Dir, 0o755, 0, 0), 10);
    let d = t.upsert(ROOT, "d", seen(Kind::Dir));
    t.remember(d);
    let held = t.upsert(d, "held", seen(Kind::File));
    t.remember(held);
    for n in 0..1000 {
        t.upsert(d, &format!("f{n}"), seen(Kind::File));
    }
    // Root, d, held, and at most 10 cached entries.
    assert!(t.len() <= 13, "{} inodes", t.len());
    assert_eq!(t.child(d, "held"), Some(held), "referenced entries stay");
    assert!(t.child(d, "f999").is_some(), "the most recent stay");
    assert_eq!(t.child(d, "f0"), None, "the least recent go");
    assert_eq!(t.path(held).unwrap(), "d/held");
}

#[test]
fn forgotten_entries_become_cache_and_unlinked_ones_go() {
    let mut t = Table::new(Attr::new(Kind::Dir, 0o755, 0, 0), 1);
    let a = t.upsert(ROOT, "a", seen(Kind::File));
    t.remember(a);
    t.remember(a);
    t.forget(a, 1);
    let b = t.upsert(ROOT, "b", seen(Kind::File));
    t.upsert(ROOT, "c", seen(Kind::File));
    assert_eq!(t.child(ROOT, "a"), Some(a), "still referenced once");
    assert_eq!(t.child(ROOT, "b"), None, "evicted: over the cap");
    // Unlinked while the kernel holds it: kept until forgotten.
    t.unlink(ROOT, "a");
    assert!(t.get(a).is_some());
    t.forget(a, 1);
    assert!(t.get(a).is_none());
    assert!(t.get(b).is_none());
}

#[test]
fn a_directory_above_a_referenced_entry_is_not_evicted() {
    let mut t = Table::new(Attr::new(Kind::Dir, 0o755, 0, 0), 3);
    let d = t.upsert(ROOT, "d", seen(Kind::Dir));
    let e = t.upsert(d, "e", seen(Kind::Dir));
    let f = t.upsert(e, "f", seen(Kind::File));
    t.remember(f);
    for n in 0..20 {
        t.upsert(ROOT, &format!("x{n}"), seen(Kind::File));
    }
    assert_eq!(t.path(f).unwrap(), "d/e/f", "its ancestors stay");
    t.forget(f, 1);
    for n in 0..20 {
        t.upsert(ROOT, &format!("y{n}"), seen(Kind::File));
    }
    assert!(t.get(f).is_none() && t.get(d).is_none(), "then all go");
    assert!(t.len() <= 4, "{}", t.len());
}

#[test]
fn evicting_an_entry_unlists_its_directory() {
    let mut t = Table::new(Attr::new(Kind::Dir, 0o755, 0, 0), 2);
    let d = t.upsert(ROOT, "d", seen(Kind::Dir));
    t.remember(d);
    t.upsert(d, "a", seen(Kind::File));
    t.set_listed(d, Instant::now() + std::time::Duration::from_secs(60));
    assert!(t.is_listed(d));
    t.upsert(ROOT, "b", seen(Kind::File));
    t.upsert(ROOT, "c", seen(Kind::File));
    assert_eq!(t.child(d, "a"), None);
    assert!(
        !t.is_listed(d),
        "an absent name is no longer proof of absence"
    );
}

/// One change to the table, on a small tree so that names and directories
/// collide often.
#[derive(Debug, Clone)]
enum Change {
    Upsert { parent: usize, name: u8, dir: bool },
    Unlink { parent: usize, name: u8 },
    Rename { from: (usize, u8), to: (usize, u8) },
    Remember { dir: usize },
    Forget { dir: usize },
}

fn change() -> impl Strategy<Value = Change> {
    let at = || (0usize..6, 0u8..4);
    prop_oneof![
        (0usize..6, 0u8..4, any::<bool>()).prop_map(|(parent, name, dir)| Change::Upsert {
            parent,
            name,
            dir
        }),
        at().prop_map(|(parent, name)| Change::Unlink { parent, name }),
        (at(), at()).prop_map(|(from, to)| Change::Rename { from, to }),
        (0usize..6).prop_map(|dir| Change::Remember { dir }),
        (0usize..6).prop_map(|dir| Change::Forget { dir }),
    ]
}

proptest! {
    /// The kept count of subdirectories is, after any sequence of changes
    /// (with evictions from a small cap), what counting the children gives.
    #[test]
    fn subdirectory_counts_match_the_children(changes in prop::collection::vec(change(), 1..80)) {
        let mut t = Table::new(Attr::new(Kind::Dir, 0o755, 0, 0), 5);
        // Directories by index: whatever inode currently answers to the
        // index's path, falling back to the root.
        let mut dirs = vec![ROOT];
        let name = |n: u8| format!("n{n}");
        let dir_at = |t: &Table, dirs: &[u64], i: usize| {
            dirs.get(i).copied().filter(|d| t.get(*d).is_some()).unwrap_or(ROOT)
        };
        for c in changes {
            match c {
                Change::Upsert { parent, name: n, dir } => {
                    let p = dir_at(&t, &dirs, parent);
                    let kind = if dir { Kind::Dir } else { Kind::File };
                    let ino = t.upsert(p, &name(n), seen(kind));
                    if dir {
                        dirs.push(ino);
                    }
                }
                Change::Unlink { parent, name: n } => {
                    let p = dir_at(&t, &dirs, parent);
                    t.unlink(p, &name(n));
                }
                Change::Rename { from, to } => {
                    let (a, b) = (dir_at(&t, &dirs, from.0), dir_at(&t, &dirs, to.0));
                    // Never a directory into itself or below itself.
                    let moved = t.child(a, &name(from.1));
                    let mut cur = Some(b);
                    while let Some(c) = cur.filter(|c| *c != ROOT) {
                        if Some(c) == moved {
                            break;
                        }
                        cur = t.get(c).map(|i| i.parent);
                    }
                    if cur.is_none_or(|c| c == ROOT) && moved != Some(b) {
                        t.rename(a, &name(from.1), b, &name(to.1));
                    }
                }
                Change::Remember { dir } => {
                    let d = dir_at(&t, &dirs, dir);
                    t.remember(d);
                }
                Change::Forget { dir } => {
                    let d = dir_at(&t, &dirs, dir);
                    if d != ROOT && t.lookups(d).is_some_and(|n| n > 0) {
                        t.forget(d, 1);
                    }
                }
            }
            for (&d, children) in &t.dirs {
                let counted = children
                    .values()
                    .filter(|c| t.get(**c).is_some_and(|i| i.attr.kind == Kind::Dir))
                    .count() as u32;
                prop_assert_eq!(t.subdirs(d), counted, "directory {}", d);
            }
            for (&d, &n) in &t.subdir_counts {
                prop_assert!(n > 0 && t.dirs.contains_key(&d), "stale count for {}", d);
            }
        }
    }
}
