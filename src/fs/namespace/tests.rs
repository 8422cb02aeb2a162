//! The namespace's named operations, one rule each.

use super::*;
use crate::crypto::FileId;
use crate::fs::journal::Live;

fn root() -> Attr {
    Attr::new(Kind::Dir, 0o755, 0, 0)
}

fn ns(ttl: Duration) -> Namespace {
    Namespace::new(root(), 100, ttl)
}

fn seen(kind: Kind, size: u64, etag: &str) -> Seen {
    let mut attr = Attr::new(kind, 0o644, 0, 0);
    attr.size = size;
    Seen {
        attr,
        etag: Some(etag.into()),
        key_ref: None,
        remote: true,
        listed: None,
    }
}

fn key_ref() -> KeyRef {
    KeyRef {
        key_id: "k".into(),
        source: crate::sealed::KeySource::Wrapped(vec![1, 2, 3]),
        file_id: FileId::random(),
    }
}

/// Staged content in a private directory that lives as long as the test.
fn staged(dir: &tempfile::TempDir) -> Arc<Staged> {
    let live = Live::default();
    let local = Arc::new(crate::local::LocalKey::ephemeral());
    Arc::new(Staged::create(dir.path(), &local, &live, "vol/f".into(), 0, None, None).unwrap())
}

fn is_absent(c: Cached) -> bool {
    matches!(c, Cached::Absent)
}

#[test]
fn a_trusted_listing_answers_absent_names_and_known_ones() {
    let n = ns(Duration::from_secs(60));
    let f = n.record(ROOT, "f", seen(Kind::File, 3, "e")).unwrap().ino;
    assert!(matches!(n.cached(ROOT, "f"), Cached::Known(e) if e.ino == f));
    assert!(matches!(
        n.cached(ROOT, "nope"),
        Cached::Ask { known_file: false }
    ));
    n.mark_listed(ROOT, Duration::ZERO);
    assert!(is_absent(n.cached(ROOT, "nope")));
}

#[test]
fn stale_entries_are_asked_for_a_file_by_one_head() {
    let n = ns(Duration::ZERO);
    n.record(ROOT, "f", seen(Kind::File, 3, "e")).unwrap();
    n.record(ROOT, "d", seen(Kind::Dir, 0, "m")).unwrap();
    assert!(matches!(
        n.cached(ROOT, "f"),
        Cached::Ask { known_file: true }
    ));
    assert!(matches!(
        n.cached(ROOT, "d"),
        Cached::Ask { known_file: false }
    ));
    // TTL 0: a listing is never trusted either.
    n.mark_listed(ROOT, Duration::from_secs(5));
    assert!(!is_absent(n.cached(ROOT, "nope")));
}

#[test]
fn s3s_view_never_replaces_local_state() {
    let dir = tempfile::tempdir().unwrap();
    let n = ns(Duration::ZERO);
    let f = n.create_staged(ROOT, "f", Attr::new(Kind::File, 0o600, 0, 0), staged(&dir));
    n.wrote(f, 10);
    let e = n.record(ROOT, "f", seen(Kind::File, 99, "theirs")).unwrap();
    assert_eq!((e.ino, e.attr.size, e.attr.mode), (f, 10, 0o600));
    assert!(
        matches!(n.cached(ROOT, "f"), Cached::Known(_)),
        "local state answers without S3"
    );
    n.revalidated(f, seen(Kind::File, 99, "theirs"));
    assert_eq!(n.entry(f).unwrap().attr.size, 10);
    n.gone_from_s3(ROOT, "f");
    assert_eq!(n.child(ROOT, "f"), Some(f), "a local entry is not dropped");
}

#[test]
fn every_revalidation_applies_s3s_answer_the_same_way() {
    let n = ns(Duration::ZERO);
    let mut s = seen(Kind::Symlink, 1, "e1");
    s.key_ref = Some(key_ref());
    let l = n.record(ROOT, "l", s).unwrap().ino;
    n.set_symlink_target(l, b"t".to_vec());
    assert!(n.facts(l).unwrap().file_id.is_some());
    // Same version: the target read stays. A new one (without a data key,
    // say a plain object put behind the mount's back) replaces it all.
    n.revalidated(l, {
        let mut s = seen(Kind::Symlink, 1, "e1");
        s.key_ref = Some(key_ref());
        s
    });
    assert_eq!(n.symlink_target(l).unwrap(), Some(b"t".to_vec()));
    n.record(ROOT, "l", seen(Kind::Symlink, 2, "e2")).unwrap();
    assert_eq!(n.symlink_target(l).unwrap(), None);
    assert_eq!(n.facts(l).unwrap().file_id, None, "no stale key kept");
    assert_eq!(n.etag(l).as_deref(), Some("e2"));
    assert_eq!(n.symlink_target(ROOT).unwrap_err().errno(), libc::EINVAL);
}

#[test]
fn gone_from_s3_drops_a_cached_entry() {
    let n = ns(Duration::ZERO);
    n.record(ROOT, "f", seen(Kind::File, 1, "e")).unwrap();
    n.gone_from_s3(ROOT, "f");
    assert_eq!(n.child(ROOT, "f"), None);
}

#[test]
fn getattr_revalidates_only_linked_stale_files_outside_a_listing() {
    let n = ns(Duration::ZERO);
    let f = n.record(ROOT, "f", seen(Kind::File, 1, "e")).unwrap().ino;
    let d = n.record(ROOT, "d", seen(Kind::Dir, 0, "m")).unwrap().ino;
    assert!(n.needs_revalidation(f).unwrap());
    assert!(!n.needs_revalidation(d).unwrap(), "directories are not");
    // Open (held by the kernel), then replaced: it keeps its attributes.
    n.remember(f);
    n.unlink(ROOT, "f");
    assert!(!n.needs_revalidation(f).unwrap());
    assert!(!n.entry(f).unwrap().linked);
    assert_eq!(n.needs_revalidation(999).unwrap_err().errno(), libc::ENOENT);
}

#[test]
fn writers_are_counted_and_the_last_one_ends_staging() {
    let dir = tempfile::tempdir().unwrap();
    let n = ns(Duration::from_secs(60));
    let f = n.create_staged(ROOT, "f", Attr::new(Kind::File, 0o644, 0, 0), staged(&dir));
    n.add_writer(f);
    assert_eq!(n.writers(f), 2);
    assert!(n.remove_writer(f).is_none(), "one writer is left");
    assert!(
        n.remove_writer(f).is_some(),
        "the last writer gets the content"
    );
    n.uploaded(
        f,
        &Uploaded {
            etag: "v1".into(),
            key_ref: key_ref(),
            size: 4,
            stored_times: None,
        },
    );
    n.staging_ended(f, false);
    assert!(n.staged(f).is_none());
    let e = n.entry(f).unwrap();
    assert_eq!((e.attr.size, n.etag(f).as_deref()), (4, Some("v1")));
    assert!(n.facts(f).unwrap().remote);
}

#[test]
fn a_new_file_whose_changes_were_dropped_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let n = ns(Duration::from_secs(60));
    let f = n.create_staged(ROOT, "f", Attr::new(Kind::File, 0o644, 0, 0), staged(&dir));
    n.remove_writer(f);
    n.staging_ended(f, true);
    assert_eq!(n.child(ROOT, "f"), None);
}

#[test]
fn a_second_stager_uses_the_first_ones_content() {
    let dir = tempfile::tempdir().unwrap();
    let n = ns(Duration::from_secs(60));
    let f = n.record(ROOT, "f", seen(Kind::File, 7, "e")).unwrap().ino;
    let (a, b) = (staged(&dir), staged(&dir));
    let first = n.install_staged(f, a.clone(), true).unwrap();
    let second = n.install_staged(f, b, false).unwrap();
    assert!(Arc::ptr_eq(&first, &a) && Arc::ptr_eq(&second, &a));
    assert_eq!(
        n.entry(f).unwrap().attr.size,
        0,
        "a truncating open empties it"
    );
}

#[test]
fn a_pending_upload_keeps_local_attributes_until_it_lands() {
    let n = ns(Duration::ZERO);
    let f = n.record(ROOT, "f", seen(Kind::File, 1, "e")).unwrap().ino;
    n.mark_pending(f, key_ref(), 50);
    n.record(ROOT, "f", seen(Kind::File, 1, "e")).unwrap();
    assert_eq!(n.entry(f).unwrap().attr.size, 50);
    assert!(n.spool_uploaded(f, "e2").is_none(), "no writer reopened it");
    assert_eq!(n.etag(f).as_deref(), Some("e2"));
    n.record(ROOT, "f", seen(Kind::File, 1, "e3")).unwrap();
    assert_eq!(n.entry(f).unwrap().attr.size, 1, "S3's view again");
}

#[test]
fn invalidation_clears_the_listing_and_the_names_together() {
    let n = ns(Duration::from_secs(60));
    let f = n.record(ROOT, "f", seen(Kind::File, 1, "e")).unwrap().ino;
    let reset = |n: &Namespace| {
        n.mark_listed(ROOT, Duration::ZERO);
        n.remember_names(ROOT, [("f".to_string(), None)].into());
    };
    let cleared = |n: &Namespace| !is_absent(n.cached(ROOT, "x")) && n.fresh_names(ROOT).is_none();
    reset(&n);
    assert!(!cleared(&n));
    n.invalidate_parent_of(f);
    assert!(cleared(&n));
    reset(&n);
    n.invalidate_all();
    assert!(cleared(&n));
    reset(&n);
    n.mark_pending(f, key_ref(), 1);
    n.spool_conflict(f);
    assert!(cleared(&n), "a conflict copy appeared beside f");
    assert_eq!(n.etag(f), None, "S3 holds someone else's version");
}

#[test]
fn removing_a_directory_forgets_its_names() {
    let n = ns(Duration::from_secs(60));
    let d = n.record(ROOT, "d", seen(Kind::Dir, 0, "m")).unwrap().ino;
    n.remember_names(d, Default::default());
    n.remove_dir(ROOT, "d", d);
    assert!(n.fresh_names(d).is_none());
    assert_eq!(n.child(ROOT, "d"), None);
}

#[test]
fn a_rename_forgets_the_names_of_both_directories() {
    let n = ns(Duration::from_secs(60));
    let d = n.record(ROOT, "d", seen(Kind::Dir, 0, "m")).unwrap().ino;
    n.record(ROOT, "a", seen(Kind::File, 1, "e")).unwrap();
    // The names each directory had before (`mv`'s own look-up of the
    // destination lists it without the name about to arrive).
    n.remember_names(d, Default::default());
    n.remember_names(
        ROOT,
        [("a".to_string(), None), ("d".to_string(), None)].into(),
    );
    n.rename(ROOT, "a", d, "a2");
    assert!(
        n.fresh_names(d).is_none(),
        "the destination's names are stale"
    );
    assert!(n.fresh_names(ROOT).is_none(), "so are the source's");
    assert!(n.child(d, "a2").is_some());
}

#[test]
fn an_attribute_edit_that_refuses_changes_nothing() {
    let n = ns(Duration::from_secs(60));
    let f = n.record(ROOT, "f", seen(Kind::File, 1, "e")).unwrap().ino;
    let before = n.entry(f).unwrap().attr;
    let r = n.edit_attributes(f, |a, _| {
        a.mode = 0o777;
        Err(Error::posix(libc::ENOSPC, "too big"))
    });
    assert_eq!(r.unwrap_err().errno(), libc::ENOSPC);
    assert_eq!(
        n.entry(f).unwrap().attr,
        before,
        "a refused edit is not applied"
    );
    let old = n
        .edit_attributes(f, |a, _| {
            a.mode = 0o600;
            Ok(())
        })
        .unwrap();
    assert_eq!(old.mode, before.mode);
    assert_eq!(n.entry(f).unwrap().attr.mode, 0o600);
    n.restore_attributes(f, old);
    assert_eq!(n.entry(f).unwrap().attr.mode, before.mode);
    n.set_attributes(
        f,
        &SetAttr {
            size: Some(9),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(n.entry(f).unwrap().attr.size, 9);
}

#[test]
fn attributes_of_an_unlinked_or_local_entry_are_not_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let n = ns(Duration::from_secs(60));
    let f = n.record(ROOT, "f", seen(Kind::File, 1, "e")).unwrap().ino;
    assert_eq!(n.attributes_to_persist(f).unwrap().unwrap().0, "f");
    n.remember(f);
    n.unlink(ROOT, "f");
    assert!(n.attributes_to_persist(f).unwrap().is_none());
    let g = n.create_staged(ROOT, "g", Attr::new(Kind::File, 0o644, 0, 0), staged(&dir));
    assert!(n.attributes_to_persist(g).unwrap().is_none());
}

#[test]
fn a_listing_merges_into_the_table_and_is_trusted_when_complete() {
    let dir = tempfile::tempdir().unwrap();
    let n = ns(Duration::from_secs(60));
    let old = n.record(ROOT, "old", seen(Kind::File, 1, "o")).unwrap().ino;
    let local = n.create_staged(
        ROOT,
        "local",
        Attr::new(Kind::File, 0o644, 0, 0),
        staged(&dir),
    );
    let kept = n
        .record(ROOT, "kept", seen(Kind::File, 1, "k"))
        .unwrap()
        .ino;
    let started = Instant::now() + Duration::from_millis(1);
    let mut listed = ListedDir::default();
    listed
        .files
        .insert("kept".into(), listed_entry("vol/kept", "k"));
    listed
        .files
        .insert("new".into(), listed_entry("vol/new", "n"));
    listed.dirs.insert("sub".into(), "vol/sub/".into());
    let (found, to_head) = n.plan_listing(ROOT, &listed);
    assert_eq!(
        found.get("kept"),
        Some(&(kept, Kind::File)),
        "fresh: no HEAD"
    );
    assert_eq!(to_head.files, ["new"]);
    assert_eq!(to_head.dirs, [("sub".to_string(), "vol/sub/".to_string())]);
    let seen_now = vec![
        ("new".to_string(), seen(Kind::File, 2, "n")),
        ("sub".to_string(), seen(Kind::Dir, 0, "")),
    ];
    let out = n.merge_listing(ROOT, ROOT, &listed, found, seen_now, false, started);
    let names: Vec<&str> = out.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, [".", "..", "kept", "new", "sub", "local"]);
    assert_eq!(n.child(ROOT, "old"), None, "gone from S3: dropped");
    assert!(n.entry(old).is_err());
    assert_eq!(n.child(ROOT, "local"), Some(local));
    assert!(is_absent(n.cached(ROOT, "old")), "complete: trusted");
    assert!(n.fresh_names(ROOT).unwrap().contains_key("new"));
    // A listing with a refused entry is not complete.
    n.invalidate_all();
    let (found, _) = n.plan_listing(ROOT, &listed);
    n.merge_listing(ROOT, ROOT, &listed, found, vec![], true, Instant::now());
    assert!(!is_absent(n.cached(ROOT, "old")));
}

#[test]
fn only_directories_are_listed() {
    let n = ns(Duration::from_secs(60));
    let f = n.record(ROOT, "f", seen(Kind::File, 1, "e")).unwrap().ino;
    assert_eq!(n.dir_to_list(f).unwrap_err().errno(), libc::ENOTDIR);
    assert_eq!(n.dir_to_list(ROOT).unwrap(), (String::new(), ROOT));
}

#[test]
fn renames_and_directory_times_follow_the_named_operations() {
    let n = ns(Duration::from_secs(60));
    let d = n.record(ROOT, "d", seen(Kind::Dir, 0, "m")).unwrap().ino;
    let f = n.record(d, "f", seen(Kind::File, 1, "e")).unwrap().ino;
    let t0 = n.entry(d).unwrap().attr.mtime;
    std::thread::sleep(Duration::from_millis(2));
    n.touch_dir(d);
    assert!(n.entry(d).unwrap().attr.mtime > t0);
    n.rename(d, "f", ROOT, "g");
    n.file_moved(f, "e2".into());
    assert_eq!(n.path(f).unwrap(), "g");
    assert_eq!(n.etag(f).as_deref(), Some("e2"));
    assert_eq!(n.entry(ROOT).unwrap().subdirs, 1);
    assert!(!n.has_local_children(ROOT));
}

#[test]
fn the_kernel_keeps_pages_only_of_a_version_it_read_and_drops_changed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let n = ns(Duration::ZERO);
    let dropped = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let d = dropped.clone();
    n.set_page_invalidator(Arc::new(move |ino| d.lock().push(ino)));
    let f = n.record(ROOT, "f", seen(Kind::File, 1, "v1")).unwrap().ino;
    assert!(!n.open_pages(f), "the first open reads afresh");
    assert!(n.open_pages(f), "the same version again: pages kept");
    n.record(ROOT, "f", seen(Kind::File, 1, "v1")).unwrap();
    assert!(dropped.lock().is_empty(), "unchanged: nothing dropped");
    n.revalidated(f, seen(Kind::File, 2, "v2"));
    assert_eq!(*dropped.lock(), vec![f], "another mount changed it");
    assert!(!n.open_pages(f));
    // Pages written through this mount are not trusted as the new version's.
    n.install_staged(f, staged(&dir), false).unwrap();
    assert!(!n.open_pages(f), "open for writing");
    n.uploaded(
        f,
        &Uploaded {
            etag: "v3".into(),
            key_ref: key_ref(),
            size: 5,
            stored_times: None,
        },
    );
    n.staging_ended(f, false);
    assert!(!n.open_pages(f), "after a write, read afresh once");
    assert!(n.open_pages(f));
}

fn listed_entry(key: &str, etag: &str) -> crate::store::ListEntry {
    crate::store::ListEntry {
        key: key.into(),
        size: 1,
        etag: etag.into(),
        last_modified: Some(std::time::SystemTime::now()),
    }
}
