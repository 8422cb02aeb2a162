//! Core tests of `--write-back`: close returns with the file sealed in the
//! spool (ciphertext only), uploads finish in the background, fsync and
//! every operation that needs the object wait for them, failures and
//! crashes leave the spool for recovery, conflicts become conflict copies.

use super::fault_tests::faulty_rig;
use super::tests::{rig, rig_with_settings, Rig};
use super::*;
use crate::store::FaultyStore;

fn write_back(r: &Rig) -> SealFs {
    rig_with_settings(r, |s| {
        s.write_back = true;
        s.cache_dir = s.cache_dir.join("wb");
    })
}

fn spool_files(fs: &SealFs) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(fs.settings.cache_dir.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

async fn write_close(fs: &SealFs, name: &str, data: &[u8]) -> u64 {
    let (e, fh) = fs.create(ROOT, name, 0o644, 0, 0).await.unwrap();
    fs.write(fh, 0, data).await.unwrap();
    fs.flush(fh).await.unwrap();
    fs.release(fh).await.unwrap();
    e.ino
}

async fn read_all(fs: &SealFs, ino: u64) -> Vec<u8> {
    let fh = fs.open(ino, libc::O_RDONLY).await.unwrap();
    let mut out = Vec::new();
    loop {
        let b = fs.read(fh, out.len() as u64, 65536).await.unwrap();
        if b.is_empty() {
            break;
        }
        out.extend(b);
    }
    fs.release(fh).await.unwrap();
    out
}

/// S3 refuses every write from now on. The mount made its branch key (one
/// KMS call, one PUT: a file written first) while S3 still answered.
async fn stalled(fs: &SealFs, faults: &Arc<FaultyStore>) {
    write_close(fs, "before-the-outage", b"x").await;
    fs.drain_spool().await.unwrap();
    faults.fail_next("put", 1_000_000);
    faults.fail_next("create_multipart", 1_000_000);
}

#[tokio::test]
async fn close_returns_with_ciphertext_in_the_spool_and_open_reports_failure() {
    let (r, faults) = faulty_rig();
    let fs = write_back(&r);
    stalled(&fs, &faults).await;
    let secret = b"WRITE-BACK-PLAINTEXT-MARKER".repeat(100);
    let ino = write_close(&fs, "f", &secret).await;
    // Close succeeded while S3 refuses every write: the file is spooled.
    let files = spool_files(&fs);
    assert_eq!(files.len(), 2, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes
                .windows(27)
                .any(|w| w == b"WRITE-BACK-PLAINTEXT-MARKER"),
            "plaintext in {f:?}"
        );
    }
    // The file is there for the mount meanwhile.
    assert_eq!(
        fs.lookup(ROOT, "f").await.unwrap().attr.size,
        secret.len() as u64
    );
    // What waits for the upload is not answered at hand (the kernel's
    // security.capability probe before a write must wait for it).
    assert!(fs.getxattr_at_hand(ino, "security.capability").is_none());
    assert!(fs.getxattr_at_hand(ROOT, "security.capability").is_some());
    // Opening it again (after the retries give up) says the data is not in S3.
    let fh = fs.open(ino, libc::O_RDONLY).await;
    assert_eq!(fh.unwrap_err().errno(), libc::EIO);
    assert!(r.mem.raw("vol/f").is_none());
    // S3 back: the periodic recovery uploads it, and it reads back.
    faults.heal();
    let done = fs.recover_spool().await;
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(spool_files(&fs).is_empty());
    assert_eq!(read_all(&fs, ino).await, secret);
}

#[tokio::test]
async fn background_uploads_finish_and_reads_wait_for_them() {
    let r = rig();
    let fs = write_back(&r);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let mut inos = Vec::new();
    for n in 0..20 {
        inos.push(write_close(&fs, &format!("small{n}"), format!("file {n}").as_bytes()).await);
    }
    let big_ino = write_close(&fs, "big", &big).await;
    // Reading waits for the upload, then reads from S3.
    assert_eq!(read_all(&fs, big_ino).await, big);
    fs.drain_spool().await.unwrap();
    for (n, ino) in inos.iter().enumerate() {
        assert_eq!(read_all(&fs, *ino).await, format!("file {n}").as_bytes());
    }
    assert!(spool_files(&fs).is_empty());
    // Another mount sees everything.
    let other = super::tests::rig_same_store(&r);
    assert_eq!(other.lookup(ROOT, "small7").await.unwrap().attr.size, 6);
    assert_eq!(other.lookup(ROOT, "big").await.unwrap().attr.size, 300_000);
}

#[tokio::test]
async fn rename_unlink_and_chmod_wait_for_the_upload() {
    let r = rig();
    let fs = write_back(&r);
    write_close(&fs, "a", b"alpha").await;
    fs.rename(ROOT, "a", ROOT, "b", false).await.unwrap();
    assert!(r.mem.raw("vol/a").is_none());
    let b = fs.lookup(ROOT, "b").await.unwrap();
    assert_eq!(read_all(&fs, b.ino).await, b"alpha");
    let c = write_close(&fs, "c", b"gamma").await;
    fs.setattr(
        c,
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let other = super::tests::rig_same_store(&r);
    assert_eq!(other.lookup(ROOT, "c").await.unwrap().attr.mode, 0o600);
    write_close(&fs, "d", b"delta").await;
    fs.unlink(ROOT, "d").await.unwrap();
    fs.drain_spool().await.unwrap();
    assert!(r.mem.raw("vol/d").is_none(), "an unlinked file came back");
}

#[tokio::test]
async fn a_crashed_mounts_spool_is_uploaded_by_the_next_mount() {
    let (r, faults) = faulty_rig();
    let fs = write_back(&r);
    stalled(&fs, &faults).await;
    write_close(&fs, "left", b"left behind").await;
    let _ = fs.drain_spool().await;
    drop(fs); // the crash: nothing uploaded
    faults.heal();
    let next = rig_with_settings(&r, |s| {
        s.write_back = true;
        s.cache_dir = s.cache_dir.join("wb");
    });
    let done = next.recover_spool().await;
    assert_eq!(done.len(), 1);
    let e = next.lookup(ROOT, "left").await.unwrap();
    assert_eq!(read_all(&next, e.ino).await, b"left behind");
}

#[tokio::test]
async fn a_spooled_version_that_lost_a_conflict_is_kept_as_a_copy() {
    let r = rig();
    let fs = write_back(&r);
    let (_, fh) = fs.create(ROOT, "x", 0o644, 0, 0).await.unwrap();
    fs.write(fh, 0, b"mine").await.unwrap();
    // Another mount creates "x" first.
    let other = super::tests::rig_same_store(&r);
    write_close(&other, "x", b"theirs").await;
    fs.flush(fh).await.unwrap();
    fs.release(fh).await.unwrap();
    let err = fs.drain_spool().await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    let copy = r
        .mem
        .keys()
        .into_iter()
        .find(|k| k.starts_with("vol/x.sealfs-conflict-"))
        .expect("conflict copy");
    // A mount that has not looked at the directory yet sees both at once.
    let third = super::tests::rig_same_store(&r);
    let c = third.lookup(ROOT, &copy[4..]).await.unwrap();
    assert_eq!(read_all(&third, c.ino).await, b"mine");
    let x = third.lookup(ROOT, "x").await.unwrap();
    assert_eq!(read_all(&third, x.ino).await, b"theirs");
}

/// While an overwrite waits in the spool, S3 still has the old version: the
/// mount keeps showing the new one, through listings and revalidation alike.
#[tokio::test]
async fn a_pending_overwrite_is_not_replaced_by_the_old_version_in_s3() {
    let (r, faults) = faulty_rig();
    let fs = rig_with_settings(&r, |s| {
        s.write_back = true;
        s.metadata_ttl = Duration::ZERO;
        s.cache_dir = s.cache_dir.join("wb");
    });
    let ino = write_close(&fs, "o", b"old").await;
    fs.drain_spool().await.unwrap();
    stalled(&fs, &faults).await;
    let fh = fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    fs.write(fh, 0, b"the new version").await.unwrap();
    fs.flush(fh).await.unwrap();
    fs.release(fh).await.unwrap();
    for _ in 0..3 {
        fs.readdir(ROOT).await.unwrap();
        assert_eq!(fs.lookup(ROOT, "o").await.unwrap().attr.size, 15);
        assert_eq!(fs.getattr(ino).await.unwrap().attr.size, 15);
    }
    faults.heal();
    let _ = fs.drain_spool().await;
    fs.recover_spool().await;
    assert_eq!(read_all(&fs, ino).await, b"the new version");
}

/// `echo first > f` under `--write-back`: the shell's first close (of the
/// descriptor it dup2()s away) spools the empty file, and the real close
/// spools "first" while that upload may still be running. The second
/// version waits for the first to be in S3 and builds on it; it does not
/// race it with a condition S3 then refuses (which made "first" a
/// conflict copy when nothing else waited for the first upload).
#[tokio::test]
async fn a_second_close_while_the_first_upload_runs_builds_on_it() {
    let r = rig();
    let fs = write_back(&r);
    let (e, fh) = fs.create(ROOT, "f", 0o644, 0, 0).await.unwrap();
    fs.flush(fh).await.unwrap();
    fs.write(fh, 0, b"first\n").await.unwrap();
    fs.flush(fh).await.unwrap();
    fs.release(fh).await.unwrap();
    fs.drain_spool().await.unwrap();
    let keys: Vec<String> = r
        .mem
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("vol/f"))
        .collect();
    assert_eq!(keys, ["vol/f"], "no conflict copy");
    assert_eq!(read_all(&fs, e.ino).await, b"first\n");
}
