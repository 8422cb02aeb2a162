//! The core under S3 faults (the in-memory store behind a fault injector):
//! a failed upload keeps the data staged until a retry succeeds, nothing
//! partial ever becomes visible, and failed reads are errors, never wrong data.

use super::tests::{rig_over, Rig};
use super::ROOT;
use crate::store::{FaultyStore, ObjectStore};
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn faulty_rig() -> (Rig, Arc<FaultyStore>) {
    let mut faulty = None;
    let r = rig_over(Duration::from_secs(1), |mem| {
        let f = Arc::new(FaultyStore::new(Arc::new(mem.clone())));
        faulty = Some(f.clone());
        f as Arc<dyn ObjectStore>
    });
    (r, faulty.expect("wrapped"))
}

async fn write_and_close(r: &Rig, name: &str, data: &[u8]) -> crate::Result<()> {
    let (_, fh) = r.fs.create(ROOT, name, 0o644, 0, 0).await?;
    r.fs.write(fh, 0, data).await?;
    r.fs.release(fh).await
}

#[tokio::test]
async fn a_failed_upload_keeps_the_data_until_a_retry_succeeds() {
    let (r, faults) = faulty_rig();
    faults.fail_next("put", 100);
    let err = write_and_close(&r, "f", b"precious").await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    assert!(r.mem.raw("vol/f").is_none(), "nothing partial is visible");
    // Still unreachable: the retry keeps it.
    assert!(r.fs.recover_staged().await.is_empty());
    faults.heal();
    let done = r.fs.recover_staged().await;
    assert_eq!(done.len(), 1, "{done:?}");
    let f = r.fs.lookup(ROOT, "f").await.unwrap();
    assert_eq!(r.read_file(f.ino).await, b"precious");
}

#[tokio::test]
async fn failed_multipart_uploads_are_aborted_and_invisible() {
    for op in ["upload_part", "complete_multipart", "create_multipart"] {
        let (r, faults) = faulty_rig();
        // Larger than 1.5 parts of the rig's 64 KiB: a multipart upload.
        let data: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
        // Until healed: the streamed upload fails (the close then sends the
        // file whole), and that whole upload fails too.
        faults.fail_next(op, 1000);
        let err = write_and_close(&r, "big", &data).await.unwrap_err();
        assert_eq!(err.errno(), libc::EIO, "{op}");
        assert!(
            r.mem.raw("vol/big").is_none(),
            "{op}: nothing partial is visible"
        );
        assert_eq!(
            r.mem.pending_uploads(),
            0,
            "{op}: the failed upload was aborted"
        );
        faults.heal();
        let done = r.fs.recover_staged().await;
        assert_eq!(done.len(), 1, "{op}: {done:?}");
        let f = r.fs.lookup(ROOT, "big").await.unwrap();
        assert_eq!(r.read_file(f.ino).await, data, "{op}");
    }
}

#[tokio::test]
async fn failed_reads_are_errors_never_wrong_data() {
    let (r, faults) = faulty_rig();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    write_and_close(&r, "f", &data).await.unwrap();
    let ino = r.fs.lookup(ROOT, "f").await.unwrap().ino;
    faults.fail_at_rate(0.3, 7);
    let (mut whole, mut failed) = (0, 0);
    for _ in 0..40 {
        let Ok(fh) = r.fs.open(ino, libc::O_RDONLY).await else {
            failed += 1;
            continue;
        };
        let mut out = Vec::new();
        let mut ok = true;
        while out.len() < data.len() {
            match r.fs.read(fh, out.len() as u64, 50_000).await {
                Ok(chunk) if chunk.is_empty() => break,
                Ok(chunk) => out.extend(chunk),
                Err(e) => {
                    assert_eq!(e.errno(), libc::EIO);
                    ok = false;
                    break;
                }
            }
        }
        r.fs.release(fh).await.unwrap();
        if ok {
            assert_eq!(out, data, "a read that succeeded returned other bytes");
            whole += 1;
        } else {
            assert_eq!(
                out[..],
                data[..out.len()],
                "bytes before the error are right"
            );
            failed += 1;
        }
    }
    assert!(
        faults.injected() > 0 && whole > 0 && failed > 0,
        "{whole} whole, {failed} failed"
    );
}
