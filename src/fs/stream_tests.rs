//! Core tests of streamed uploads: parts leave while the writer writes, the
//! object appears only at close, and anything non-sequential falls back to
//! the whole-file upload without losing a byte.

use super::tests::rig;
use super::*;
use std::sync::atomic::Ordering::Relaxed;

const PART: usize = 16 * 4096;

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn sequential_writes_stream_parts_before_close() {
    let r = rig();
    let plain = data(10 * PART + 1234, 1);
    let (e, fh) = r.fs.create(ROOT, "big", 0o640, 0, 0).await.unwrap();
    for (n, chunk) in plain.chunks(10_000).enumerate() {
        r.fs.write(fh, (n * 10_000) as u64, chunk).await.unwrap();
    }
    // Before close: parts went up (all but the unfinished tail), nothing is
    // visible yet.
    let parts = r.mem.counts().upload_part.load(Relaxed);
    assert!(parts >= 8, "only {parts} parts sent while writing");
    assert!(r.mem.raw("vol/big").is_none(), "visible before close");
    r.fs.flush(fh).await.unwrap();
    r.fs.release(fh).await.unwrap();
    assert_eq!(r.mem.counts().complete_multipart.load(Relaxed), 1);
    assert_eq!(r.object_puts(), 0, "no whole-file upload");
    assert_eq!(r.mem.counts().upload_part.load(Relaxed), 11);
    assert_eq!(r.read_file(e.ino).await, plain);
    // A remount reads it, with the attributes the mount showed.
    let r2 = super::tests::rig_same_store(&r);
    let e2 = r2.lookup(ROOT, "big").await.unwrap();
    assert_eq!(e2.attr.size, plain.len() as u64);
    assert_eq!(e2.attr.mode, 0o640);
    assert_eq!(e2.attr.mtime, r.fs.getattr(e.ino).await.unwrap().attr.mtime);
}

#[tokio::test]
async fn a_file_ending_on_a_part_boundary_streams_correctly() {
    let r = rig();
    let plain = data(4 * PART, 2);
    let (e, fh) = r.fs.create(ROOT, "even", 0o644, 0, 0).await.unwrap();
    for (n, chunk) in plain.chunks(PART).enumerate() {
        r.fs.write(fh, (n * PART) as u64, chunk).await.unwrap();
    }
    r.fs.release(fh).await.unwrap();
    assert_eq!(r.read_file(e.ino).await, plain);
}

#[tokio::test]
async fn a_write_below_the_streamed_part_falls_back_to_a_whole_upload() {
    let r = rig();
    let mut plain = data(6 * PART, 3);
    let (e, fh) = r.fs.create(ROOT, "patched", 0o644, 0, 0).await.unwrap();
    for (n, chunk) in plain.chunks(8192).enumerate() {
        r.fs.write(fh, (n * 8192) as u64, chunk).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(r.mem.counts().upload_part.load(Relaxed) >= 4);
    // Patch the start (as a tool rewriting a header would).
    r.fs.write(fh, 10, b"HEADER").await.unwrap();
    plain[10..16].copy_from_slice(b"HEADER");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        r.mem.pending_uploads(),
        0,
        "the dropped stream was not aborted"
    );
    r.fs.release(fh).await.unwrap();
    assert_eq!(r.read_file(e.ino).await, plain);
    assert_eq!(r.mem.counts().complete_multipart.load(Relaxed), 1);
}

#[tokio::test]
async fn a_hole_or_a_truncate_stops_streaming_and_keeps_the_data() {
    let r = rig();
    let (e, fh) = r.fs.create(ROOT, "holes", 0o644, 0, 0).await.unwrap();
    let a = data(3 * PART, 4);
    r.fs.write(fh, 0, &a).await.unwrap();
    r.fs.write(fh, (5 * PART) as u64, b"tail").await.unwrap();
    r.fs.setattr(
        e.ino,
        SetAttr {
            size: Some((5 * PART + 2) as u64),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    r.fs.release(fh).await.unwrap();
    let mut want = a.clone();
    want.resize(5 * PART, 0);
    want.extend_from_slice(b"ta");
    assert_eq!(r.read_file(e.ino).await, want);
    assert_eq!(r.mem.pending_uploads(), 0);
}

#[tokio::test]
async fn attribute_changes_during_a_stream_reach_the_object() {
    let r = rig();
    let plain = data(5 * PART, 5);
    let (e, fh) = r.fs.create(ROOT, "attrs", 0o600, 0, 0).await.unwrap();
    r.fs.write(fh, 0, &plain[..3 * PART]).await.unwrap();
    r.fs.setattr(
        e.ino,
        SetAttr {
            mode: Some(0o604),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    r.fs.write(fh, (3 * PART) as u64, &plain[3 * PART..])
        .await
        .unwrap();
    r.fs.release(fh).await.unwrap();
    let r2 = super::tests::rig_same_store(&r);
    let e2 = r2.lookup(ROOT, "attrs").await.unwrap();
    assert_eq!(e2.attr.mode, 0o604);
    assert_eq!(e2.attr.size, plain.len() as u64);
}

#[tokio::test]
async fn a_stream_that_loses_a_conflict_keeps_a_conflict_copy() {
    let r = rig();
    let plain = data(4 * PART, 6);
    let (_, fh) = r.fs.create(ROOT, "raced", 0o644, 0, 0).await.unwrap();
    r.fs.write(fh, 0, &plain).await.unwrap();
    // Another mount creates the same name first.
    let other = super::tests::rig_same_store(&r);
    let (_, fh2) = other.create(ROOT, "raced", 0o644, 0, 0).await.unwrap();
    other.write(fh2, 0, b"theirs").await.unwrap();
    other.release(fh2).await.unwrap();
    let err = r.fs.release(fh).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    let keys = r.mem.keys();
    let copy = keys
        .iter()
        .find(|k| k.starts_with("vol/raced.sealfs-conflict-"))
        .expect("conflict copy");
    let c = r.fs.lookup(ROOT, &copy[4..]).await.unwrap();
    assert_eq!(r.read_file(c.ino).await, plain);
    assert_eq!(r.mem.pending_uploads(), 0);
}

#[tokio::test]
async fn dd_pattern_create_truncate_write_fsync_makes_one_multipart_upload() {
    let r = rig();
    let plain = data(6 * PART + 5, 9);
    let (e, fh) = r.fs.create(ROOT, "dd", 0o644, 0, 0).await.unwrap();
    r.fs.setattr(
        e.ino,
        SetAttr {
            size: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for (n, chunk) in plain.chunks(PART).enumerate() {
        r.fs.write(fh, (n * PART) as u64, chunk).await.unwrap();
    }
    r.fs.fsync(fh).await.unwrap();
    r.fs.flush(fh).await.unwrap();
    r.fs.release(fh).await.unwrap();
    assert_eq!(r.object_puts(), 0, "a whole-object PUT");
    assert_eq!(r.mem.counts().complete_multipart.load(Relaxed), 1);
    assert_eq!(r.read_file(e.ino).await, plain);
}
