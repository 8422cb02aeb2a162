//! The encrypted local file against a plain buffer, and what is on disk.

use super::*;
use proptest::prelude::*;

fn key() -> LocalKey {
    LocalKey::ephemeral()
}

fn read_all(f: &EncryptedFile, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..3 * B + 100, proptest::collection::vec(any::<u8>(), 1..2 * BLOCK + 10))
            .prop_map(|(o, d)| Op::Write(o, d)),
        1 => (0u64..4 * B).prop_map(Op::SetLen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Any sequence of writes and truncates reads back as on a plain
    /// buffer, and the length is recovered from the disk alone.
    #[test]
    fn behaves_like_a_plain_file(ops in proptest::collection::vec(op(), 1..12)) {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let path = dir.path().join("f");
        let f = EncryptedFile::create(&path, &k).unwrap();
        let mut model: Vec<u8> = Vec::new();
        for op in ops {
            match op {
                Op::Write(o, d) => {
                    f.write_at(&d, o, model.len() as u64).unwrap();
                    let end = o as usize + d.len();
                    if model.len() < end { model.resize(end, 0); }
                    model[o as usize..end].copy_from_slice(&d);
                }
                Op::SetLen(n) => {
                    f.set_len(n, model.len() as u64).unwrap();
                    model.resize(n as usize, 0);
                }
            }
            prop_assert_eq!(f.len().unwrap(), model.len() as u64);
            prop_assert_eq!(read_all(&f, model.len() as u64), model.clone());
        }
        let again = EncryptedFile::open(&path, &k).unwrap();
        prop_assert_eq!(again.len().unwrap(), model.len() as u64);
        prop_assert_eq!(read_all(&again, model.len() as u64), model);
    }
}

#[test]
fn no_plaintext_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let f = EncryptedFile::create(&path, &key()).unwrap();
    let marker = b"SEALFS-MARKER-0123456789";
    let data: Vec<u8> = marker
        .iter()
        .cycle()
        .take(3 * BLOCK + 77)
        .copied()
        .collect();
    f.write_at(&data, 0, 0).unwrap();
    f.write_at(marker, 5, data.len() as u64).unwrap();
    let disk = std::fs::read(&path).unwrap();
    assert!(!disk.windows(8).any(|w| marker.windows(8).any(|m| m == w)));
}

#[test]
fn a_changed_block_or_another_key_is_an_error_never_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let k = key();
    let f = EncryptedFile::create(&path, &k).unwrap();
    f.write_at(&vec![9u8; 2 * BLOCK], 0, 0).unwrap();
    assert!(
        EncryptedFile::open(&path, &key()).unwrap().len().is_err(),
        "another key"
    );
    let mut disk = std::fs::read(&path).unwrap();
    disk[HEADER as usize + 40] ^= 1;
    std::fs::write(&path, &disk).unwrap();
    let mut buf = vec![0u8; 10];
    let e = f.read_exact_at(&mut buf, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    assert!(
        f.read_exact_at(&mut buf, B).is_ok(),
        "the other block is intact"
    );
    // Swapping two blocks is detected too (each is bound to its index).
    let f2 = EncryptedFile::create(&dir.path().join("g"), &k).unwrap();
    f2.write_at(&vec![1u8; 2 * BLOCK], 0, 0).unwrap();
    let mut d = std::fs::read(dir.path().join("g")).unwrap();
    let (h, s) = (HEADER as usize, SEALED_BLOCK);
    let first: Vec<u8> = d[h..h + s].to_vec();
    d.copy_within(h + s..h + 2 * s, h);
    d[h + s..h + 2 * s].copy_from_slice(&first);
    std::fs::write(dir.path().join("g"), &d).unwrap();
    assert!(f2.read_exact_at(&mut buf, 0).is_err());
    assert!(EncryptedFile::open(&dir.path().join("nope"), &k).is_err());
    std::fs::write(
        dir.path().join("plain"),
        b"not a staging file at all, just text",
    )
    .unwrap();
    assert!(EncryptedFile::open(&dir.path().join("plain"), &k).is_err());
}

#[tokio::test]
async fn the_async_reader_and_writer_carry_the_plaintext() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let f = EncryptedFile::create(&dir.path().join("f"), &key()).unwrap();
    let data: Vec<u8> = (0..3 * BLOCK + 5).map(|i| (i % 251) as u8).collect();
    let mut w = f.writer().unwrap();
    for chunk in data.chunks(5000) {
        w.write_all(chunk).await.unwrap();
    }
    let mut back = Vec::new();
    f.reader(data.len() as u64)
        .unwrap()
        .read_to_end(&mut back)
        .await
        .unwrap();
    assert_eq!(back, data);
}
