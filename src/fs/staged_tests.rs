//! Each transition of staged content, and what it leaves on local disk.

use super::*;
use crate::fs::journal::{journal_path, read_journal};

struct Bench {
    _dir: tempfile::TempDir,
    live: Live,
    local: Arc<LocalKey>,
    path: PathBuf,
}

/// Staged content of `size` bytes for `vol/f`, building on version "base".
fn staged(size: u64) -> (Bench, StagedInner) {
    let dir = tempfile::tempdir().unwrap();
    let live = Live::default();
    let local = Arc::new(LocalKey::ephemeral());
    let s = Staged::create(
        dir.path(),
        &local,
        &live,
        "vol/f".into(),
        size,
        Some("base".into()),
        None,
    )
    .unwrap()
    .inner
    .into_inner();
    let path = s.path.clone();
    (
        Bench {
            _dir: dir,
            live,
            local,
            path,
        },
        s,
    )
}

fn journal_of(b: &Bench) -> Option<(String, Option<String>)> {
    read_journal(&b.local, &journal_path(&b.path)).map(|j| (j.key, j.base_etag))
}

fn key_ref() -> KeyRef {
    KeyRef {
        key_id: "k".into(),
        source: crate::sealed::KeySource::Wrapped(vec![7]),
        file_id: crate::crypto::FileId::random(),
    }
}

#[test]
fn new_content_is_clean_and_only_an_empty_file_is_in_order() {
    let (b, s) = staged(0);
    assert!(matches!(s.state(), State::Clean { sequential: true }));
    assert!(b.live.lock().contains(&b.path), "registered as live");
    let (_b, s) = staged(10);
    assert!(matches!(s.state(), State::Clean { sequential: false }));
}

#[test]
fn the_first_write_makes_it_dirty_and_journals_it() {
    let (b, mut s) = staged(0);
    assert_eq!(journal_of(&b), None);
    assert_eq!(s.write_at(b"hello", 0).unwrap(), 0);
    assert!(matches!(
        s.state(),
        State::Dirty {
            journaled: true,
            order: Order::Sequential
        }
    ));
    assert_eq!(journal_of(&b), Some(("vol/f".into(), Some("base".into()))));
    assert_eq!(s.write_at(b"!", 5).unwrap(), 5, "returns the size before");
    assert_eq!(s.read_at(0, 100).unwrap(), b"hello!");
    assert_eq!(s.read_at(6, 10).unwrap(), b"", "nothing past the end");
    assert!(matches!(s.condition(), PutCondition::IfMatch(e) if e == "base"));
}

#[test]
fn an_upload_makes_it_clean_on_top_of_the_new_version() {
    let (b, mut s) = staged(0);
    s.write_at(b"x", 0).unwrap();
    s.uploaded("v2".into(), key_ref());
    assert!(matches!(s.state(), State::Clean { sequential: true }));
    assert_eq!(journal_of(&b), None, "nothing left to recover");
    assert_eq!(s.base_etag(), Some("v2"));
    assert_eq!(s.sealed_base(), Some("v2"), "its key may be kept");
}

#[test]
fn spooling_and_a_kept_conflict_copy_make_it_clean() {
    let (b, mut s) = staged(0);
    s.write_at(b"x", 0).unwrap();
    s.spooled(key_ref());
    assert!(matches!(s.state(), State::Clean { .. }));
    assert_eq!(journal_of(&b), None);
    assert_eq!(s.base_etag(), Some("base"), "the spool's upload rebases it");
    s.rebased("v2".into());
    assert_eq!(s.base_etag(), Some("v2"));

    s.write_at(b"y", 1).unwrap();
    assert!(journal_of(&b).is_some());
    s.conflict_kept();
    assert!(matches!(s.state(), State::Clean { sequential: true }));
    assert_eq!(journal_of(&b), None);
}

#[test]
fn writes_out_of_order_and_truncates_decide_how_it_uploads() {
    let (_b, mut s) = staged(0);
    s.write_at(b"abc", 0).unwrap();
    s.scatter();
    assert!(matches!(
        s.state(),
        State::Dirty {
            order: Order::Scattered,
            ..
        }
    ));
    s.set_len(0).unwrap();
    assert!(s.may_start_stream(), "empty again: in order");
    s.set_len(4).unwrap();
    assert!(!s.may_start_stream());
    assert_eq!(s.size(), 4);
    // A clean file written out of order stays so when it changes again.
    s.uploaded("v".into(), key_ref());
    assert!(matches!(s.state(), State::Clean { sequential: false }));
    s.make_dirty();
    assert!(!s.may_start_stream());
}

#[test]
fn a_rename_rewrites_the_journal_for_the_new_key() {
    let (b, mut s) = staged(0);
    s.write_at(b"x", 0).unwrap();
    s.moved("vol/g".into(), "copied".into());
    assert_eq!(
        journal_of(&b),
        Some(("vol/g".into(), Some("copied".into())))
    );
    assert_eq!(s.key(), "vol/g");
    assert!(!s.may_start_stream(), "a stream is bound to the old name");
}

#[test]
fn unlinked_content_is_never_uploaded_or_recovered() {
    let (b, mut s) = staged(0);
    s.write_at(b"secret", 0).unwrap();
    s.unlinked();
    assert!(matches!(s.state(), State::Unlinked));
    assert!(!s.is_dirty());
    assert_eq!(journal_of(&b), None, "a crash must not bring it back");
    // Writes through a descriptor still open land, and are still not journaled.
    s.write_at(b"more", 6).unwrap();
    assert!(matches!(s.state(), State::Unlinked));
    assert_eq!(journal_of(&b), None);
    assert_eq!(s.read_at(0, 20).unwrap(), b"secretmore");
    drop(s);
    assert!(!b.path.exists(), "the staging file goes with it");
    assert!(!b.live.lock().contains(&b.path));
}

#[test]
fn broken_content_fails_every_later_operation_with_its_errno() {
    let (b, mut s) = staged(0);
    s.write_at(b"x", 0).unwrap();
    s.break_off(libc::ENOSPC);
    assert_eq!(journal_of(&b), None, "a hole must never be recovered");
    assert_eq!(s.write_at(b"y", 1).unwrap_err().errno(), libc::ENOSPC);
    assert_eq!(s.set_len(0).unwrap_err().errno(), libc::ENOSPC);
    assert_eq!(s.check_broken().unwrap_err().errno(), libc::ENOSPC);
    assert_eq!(s.read_at(0, 1).unwrap_err().errno(), libc::ENOSPC);
    assert_eq!(
        std::fs::metadata(&b.path).unwrap().len(),
        32,
        "its blocks are freed at once"
    );
    s.unlinked();
    assert!(s.is_broken(), "an unlink does not hide the failure");
    drop(s);
    assert!(!b.path.exists());
}

#[test]
fn dirty_content_outlives_its_mount_on_disk() {
    let (b, mut s) = staged(0);
    s.write_at(b"unsaved", 0).unwrap();
    drop(s);
    assert!(b.path.exists(), "kept for the next mount");
    assert!(journal_of(&b).is_some());
    assert!(
        !b.live.lock().contains(&b.path),
        "no longer live: recoverable"
    );
    let (b, s) = staged(0);
    drop(s);
    assert!(!b.path.exists(), "clean content is removed");
}

/// Starts a real streamed upload of `s` (a multipart upload to the rig's store).
async fn start_stream(r: &crate::fs::tests::Rig, s: &mut StagedInner) {
    let wk = r.fs.sealed.new_key().await.unwrap();
    let source: Arc<dyn crate::sealed::PlainSource> = Arc::new(s.file().try_clone().unwrap());
    let attr = Attr::new(crate::fs::Kind::File, 0o644, 0, 0);
    let upload =
        r.fs.sealed
            .start_stream("vol/f", source, &attr.metadata(), &wk)
            .await
            .unwrap();
    s.start_stream(upload, attr);
}

#[tokio::test]
async fn a_stream_starts_in_order_and_is_given_up_out_of_order() {
    let r = crate::fs::tests::rig();
    let (_b, mut s) = staged(0);
    s.write_at(b"data", 0).unwrap();
    assert!(s.may_start_stream());
    start_stream(&r, &mut s).await;
    assert!(s.stream().is_some() && !s.may_start_stream());
    assert!(s.attributes_changed(), "dirty: they go with the upload");
    assert!(s.stream().unwrap().meta_changed, "noted for a rewrite");
    let st = s.take_stream().expect("the stream");
    assert!(st.meta_changed);
    assert!(s.is_dirty() && s.may_start_stream(), "dirty, in order");
    drop(st);
    // Given up: uploaded whole.
    start_stream(&r, &mut s).await;
    s.scatter();
    assert!(s.stream().is_none() && !s.may_start_stream());
    assert!(s.take_stream().is_none());
}

/// `cp` run twice over one file: the second open (O_TRUNC) comes before
/// the release of the first handle, which FUSE sends after close returned,
/// and truncates the staged content while that release waits for it. The
/// release must not upload the emptied content, which belongs to the new
/// writer until its own close (regression: another mount read an empty
/// file between two copies).
#[tokio::test]
async fn a_release_never_uploads_what_a_later_open_truncated() {
    use crate::fs::tests::{rig, rig_same_store};
    use crate::fs::ROOT;
    let r = rig();
    let ino = r.write_file(ROOT, "f", b"version one").await;
    let fh1 =
        r.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC)
            .await
            .unwrap();
    r.fs.write(fh1, 0, b"version two").await.unwrap();
    r.fs.flush(fh1).await.unwrap();
    let staged = r.fs.staged(ino).unwrap();
    // Held while the release and the next open queue for the staged
    // content, in that order; then let go.
    let held = staged.lock().await;
    let (released, reopened, ()) = tokio::join!(
        r.fs.release(fh1),
        r.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC),
        async move { drop(held) },
    );
    released.unwrap();
    let fh2 = reopened.unwrap();
    let other = rig_same_store(&r);
    let seen = other.lookup(ROOT, "f").await.unwrap();
    assert_eq!(seen.attr.size, 11, "S3 holds the truncated content");
    r.fs.write(fh2, 0, b"version three").await.unwrap();
    r.fs.flush(fh2).await.unwrap();
    r.fs.release(fh2).await.unwrap();
    assert_eq!(r.read_file(ino).await, b"version three");
}
