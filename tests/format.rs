//! Property tests and golden vectors for object format v1 (no AWS needed).

use proptest::prelude::*;
use sealfs::crypto::{
    file_key, BranchId, DataKey, FileId, IntegrityError, Layout, Opener, RunOpener, Sealer,
    HEADER_LEN, TAG_LEN,
};
use sha2::{Digest, Sha256};

const P: usize = 4096;

fn dk(b: u8) -> DataKey {
    DataKey::from_bytes([b; 32])
}

fn plain(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn open(key: &DataKey, fid: &FileId, object: &[u8]) -> Result<Vec<u8>, IntegrityError> {
    Opener::new(key, &object[..HEADER_LEN.min(object.len())], fid)?.open(object)
}

/// Golden vector: fixed DK, salt and file id give exactly these bytes. A change
/// here is a format change and must come with a new format version. The values
/// were computed by scripts/format_reference.py, an independent implementation
/// of docs/FORMAT.md, which scripts/test runs against these constants.
#[test]
fn golden_vector() {
    let key = DataKey::from_bytes(core::array::from_fn(|i| i as u8));
    let salt: [u8; 32] = core::array::from_fn(|i| 0x20 + i as u8);
    let fid = FileId(core::array::from_fn(|i| 0x40 + i as u8));
    let text: Vec<u8> = b"sealfs golden vector. "
        .iter()
        .cycle()
        .take(10_000)
        .copied()
        .collect();
    let s = Sealer::with_salt(&key, fid, 4096, salt);
    let object = s.seal(&text);
    assert_eq!(object.len(), 120 + 10_000 + 3 * 16);
    assert_eq!(hex::encode(&object[..HEADER_LEN]), GOLDEN_HEADER);
    assert_eq!(hex::encode(Sha256::digest(&object)), GOLDEN_SHA256);
    assert_eq!(
        hex::encode(s.binding("bucket", "prefix/file.txt")),
        GOLDEN_BINDING
    );
    assert_eq!(open(&key, &fid, &object).unwrap(), text);
}

const GOLDEN_HEADER: &str = "5345414c4653010c404142434445464748494a4b4c4d4e4f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f1620f05ca1bd5661c97a22eb55f7c70e1d61f4fe190be4abad5504ac3a6982e070e8d8de49cf7d28045dc399e03d9603f9df3682474e47fd3a6368b420dccc4b";
const GOLDEN_SHA256: &str = "c324748a46f4df3228a5dfe75953d87dab3a254990be6d22aed3c5068ac7e9c8";
/// Sealing fields version 2: the data key a file derives from a branch key
/// and its file id (also recomputed by scripts/format_reference.py).
#[test]
fn golden_file_key() {
    let branch_key = DataKey::from_bytes(core::array::from_fn(|i| 0x60 + i as u8));
    let branch = BranchId(core::array::from_fn(|i| 0x80 + i as u8));
    let fid = FileId(core::array::from_fn(|i| 0x40 + i as u8));
    let k = file_key(&branch_key, &branch, &fid);
    assert_eq!(hex::encode(k.expose()), GOLDEN_FILE_KEY);
    // Each input matters: another file, branch or branch key, another key.
    let other_fid = FileId([0x41; 16]);
    let other_branch = BranchId([0x81; 16]);
    for other in [
        file_key(&branch_key, &branch, &other_fid),
        file_key(&branch_key, &other_branch, &fid),
        file_key(&DataKey::from_bytes([0x60; 32]), &branch, &fid),
    ] {
        assert_ne!(other.expose(), k.expose());
    }
}

/// Attribute index: the MAC over an index body, under the key derived from
/// the volume key (also recomputed by scripts/format_reference.py).
#[test]
fn golden_index_mac() {
    use sealfs::crypto::attributes::AttributeKeys;
    let keys = AttributeKeys::derive(&core::array::from_fn::<u8, 32, _>(|i| 0xa0 + i as u8));
    let body = br#"{"format":1,"dir":"vol/d/","entries":{}}"#;
    let mac = keys.index_mac("bucket", "vol/d/", body);
    assert_eq!(hex::encode(mac), GOLDEN_INDEX_MAC);
}

const GOLDEN_INDEX_MAC: &str = "a9c659225655eeadbe676baaa3b29a6f5b43cf580d45fe85134360835989a9b2";
const GOLDEN_FILE_KEY: &str = "75c454492080a83f8656149b5df84795bec007ed2c42d584cf738a999aae9f53";
const GOLDEN_BINDING: &str = "aa30778ecf935ac3ee4cb760e2777161fc0a0c1bd8cf531ab4a20ed1af8de0d3";

#[test]
fn boundary_sizes_round_trip() {
    let fid = FileId([1; 16]);
    for k in 1..4 {
        for n in [0, 1, P - 1, P, P + 1, k * P, k * P + 1, k * P - 1] {
            let data = plain(n, n as u64);
            let obj = Sealer::new(&dk(1), fid, P as u32).seal(&data);
            assert_eq!(obj.len() as u64, Layout::new(P as u32).object_len(n as u64));
            assert_eq!(open(&dk(1), &fid, &obj).unwrap(), data, "n={n}");
        }
    }
}

/// Every tamper class of docs/FORMAT.md on a 3-segment object.
#[test]
fn tamper_classes_are_rejected() {
    let fid = FileId([2; 16]);
    let data = plain(2 * P + 100, 7);
    let obj = Sealer::new(&dk(2), fid, P as u32).seal(&data);
    let seg = |i: usize| HEADER_LEN + i * (P + TAG_LEN);
    let reject = |o: &[u8], what: &str| {
        let r = open(&dk(2), &fid, o);
        assert!(r.is_err(), "{what} was accepted");
        r.unwrap_err()
    };
    // Bit flips in the header (every field), body and tag.
    for pos in [
        0,
        6,
        7,
        8,
        30,
        60,
        100,
        seg(0) + 1,
        seg(1) + 7,
        seg(1) + P + 3,
        obj.len() - 1,
    ] {
        let mut o = obj.clone();
        o[pos] ^= 0x01;
        reject(&o, &format!("bit flip at {pos}"));
    }
    // Truncation mid-segment, at a segment boundary, mid-tag; extension.
    for cut in [
        seg(1) + 10,
        seg(1),
        seg(2),
        obj.len() - 1,
        obj.len() - TAG_LEN,
        HEADER_LEN + 5,
    ] {
        reject(&obj[..cut], &format!("truncation to {cut}"));
    }
    let mut ext = obj.clone();
    ext.extend_from_slice(&obj[seg(1)..seg(2)]);
    reject(&ext, "extension by a copied segment");
    let mut ext = obj.clone();
    ext.extend_from_slice(&[0u8; 40]);
    reject(&ext, "extension by zeros");
    // Segment swap and duplication.
    let mut swap = obj.clone();
    swap[seg(0)..seg(1)].copy_from_slice(&obj[seg(1)..seg(2)]);
    swap[seg(1)..seg(2)].copy_from_slice(&obj[seg(0)..seg(1)]);
    assert_eq!(reject(&swap, "swap"), IntegrityError::Segment(0));
    let mut dup = obj.clone();
    dup[seg(1)..seg(2)].copy_from_slice(&obj[seg(0)..seg(1)]);
    assert_eq!(reject(&dup, "duplication"), IntegrityError::Segment(1));
    // Transplant from another version of the same file (same DK, new salt).
    let v2 = Sealer::new(&dk(2), fid, P as u32).seal(&data);
    let mut mix = obj.clone();
    mix[seg(1)..seg(2)].copy_from_slice(&v2[seg(1)..seg(2)]);
    assert_eq!(
        reject(&mix, "cross-version transplant"),
        IntegrityError::Segment(1)
    );
    let mut hdr = v2.clone();
    hdr[..HEADER_LEN].copy_from_slice(&obj[..HEADER_LEN]);
    reject(&hdr, "header from another version");
    // Transplant from another file (other DK and file id).
    let other_fid = FileId([3; 16]);
    let other = Sealer::new(&dk(3), other_fid, P as u32).seal(&data);
    let mut mix = obj.clone();
    mix[seg(1)..seg(2)].copy_from_slice(&other[seg(1)..seg(2)]);
    assert_eq!(
        reject(&mix, "cross-file transplant"),
        IntegrityError::Segment(1)
    );
    // Wrong DK: caught by the key commitment, before any segment is opened.
    assert_eq!(
        open(&dk(9), &fid, &obj).unwrap_err(),
        IntegrityError::KeyCommitment
    );
    // A header whose file id differs from the metadata's.
    assert_eq!(
        open(&dk(2), &other_fid, &obj).unwrap_err(),
        IntegrityError::FileIdMismatch
    );
    // Object swap between two keys: the path binding differs.
    let s = Sealer::new(&dk(2), fid, P as u32);
    let o = Opener::new(&dk(2), s.header_bytes(), &fid).unwrap();
    o.check_binding("b", "a.txt", &s.binding("b", "a.txt"))
        .unwrap();
    assert_eq!(
        o.check_binding("b", "b.txt", &s.binding("b", "a.txt")),
        Err(IntegrityError::PathBinding)
    );
    assert_eq!(
        o.check_binding("c", "a.txt", &s.binding("b", "a.txt")),
        Err(IntegrityError::PathBinding)
    );
}

#[test]
fn salts_are_fresh_per_version() {
    let fid = FileId([4; 16]);
    let a = Sealer::new(&dk(4), fid, P as u32);
    let b = Sealer::new(&dk(4), fid, P as u32);
    assert_ne!(a.header().salt, b.header().salt);
    assert_ne!(a.seal(b"same"), b.seal(b"same"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_sizes_round_trip(n in 0usize..(3 << 20), seed in any::<u64>()) {
        let fid = FileId([5; 16]);
        let data = plain(n, seed);
        let obj = Sealer::new(&dk(5), fid, 65536).seal(&data);
        let layout = Layout::new(65536);
        prop_assert_eq!(layout.plain_len(obj.len() as u64).unwrap(), n as u64);
        prop_assert_eq!(open(&dk(5), &fid, &obj).unwrap(), data);
    }

    #[test]
    fn random_range_reads_equal_the_slice(n in 1usize..200_000, off in any::<u64>(), len in 1u64..70_000, seed in any::<u64>()) {
        let fid = FileId([6; 16]);
        let data = plain(n, seed);
        let s = Sealer::new(&dk(6), fid, P as u32);
        let obj = s.seal(&data);
        let layout = s.layout();
        let off = off % n as u64;
        let segs = layout.segments_for(off, len, n as u64);
        let range = layout.sealed_range(segs.clone(), n as u64);
        let o = Opener::new(&dk(6), &obj[..HEADER_LEN], &fid).unwrap();
        let run = o.open_run(segs.start, &obj[range.start as usize..range.end as usize], n as u64).unwrap();
        let skip = (off - segs.start * P as u64) as usize;
        let end = (off + len).min(n as u64);
        prop_assert_eq!(&run[skip..skip + (end - off) as usize], &data[off as usize..end as usize]);
    }

    /// A run opened as its bytes arrive, in pieces of any sizes, is the run
    /// opened whole; a flipped bit anywhere in it, a missing tail or bytes
    /// beyond it fail, and nothing is returned.
    #[test]
    fn a_run_opened_piece_by_piece_is_the_run_opened_whole(
        n in 1usize..60_000,
        first in any::<u64>(),
        pieces in proptest::collection::vec(1usize..9_000, 1..40),
        flip in any::<usize>(),
        seed in any::<u64>(),
    ) {
        let fid = FileId([9; 16]);
        let data = plain(n, seed);
        let s = Sealer::new(&dk(9), fid, P as u32);
        let obj = s.seal(&data);
        let layout = s.layout();
        let count = layout.segment_count(n as u64);
        let segs = first % count..count;
        let range = layout.sealed_range(segs.clone(), n as u64);
        let sealed = &obj[range.start as usize..range.end as usize];
        let o = Opener::new(&dk(9), &obj[..HEADER_LEN], &fid).unwrap();
        let feed = |bytes: &[u8], declared: u64| -> Result<Vec<u8>, IntegrityError> {
            let mut run = RunOpener::new(&o, segs.start, declared, n as u64);
            let mut at = 0;
            for size in pieces.iter().cycle() {
                if at >= bytes.len() {
                    break;
                }
                let end = (at + size).min(bytes.len());
                run.feed(&bytes[at..end])?;
                at = end;
            }
            run.finish()
        };
        let whole = o.open_run(segs.start, sealed, n as u64).unwrap();
        prop_assert_eq!(&whole[..], &data[(segs.start * P as u64) as usize..]);
        prop_assert_eq!(feed(sealed, sealed.len() as u64).unwrap(), whole);
        let mut flipped = sealed.to_vec();
        flipped[flip % sealed.len()] ^= 0x10;
        prop_assert!(feed(&flipped, sealed.len() as u64).is_err());
        let cut = flip % sealed.len();
        prop_assert!(feed(&sealed[..cut], sealed.len() as u64).is_err());
        let mut longer = sealed.to_vec();
        longer.push(0);
        prop_assert!(feed(&longer, longer.len() as u64).is_err());
        prop_assert!(feed(&longer, sealed.len() as u64).is_err());
    }

    #[test]
    fn any_single_byte_change_is_rejected(n in 0usize..20_000, pos in any::<usize>(), bit in 0u8..8, seed in any::<u64>()) {
        let fid = FileId([7; 16]);
        let obj = Sealer::new(&dk(7), fid, P as u32).seal(&plain(n, seed));
        let mut o = obj.clone();
        let pos = pos % o.len();
        o[pos] ^= 1 << bit;
        prop_assert!(open(&dk(7), &fid, &o).is_err());
    }

    #[test]
    fn any_truncation_or_extension_is_rejected(n in 0usize..20_000, cut in any::<usize>(), extra in 1usize..5000, seed in any::<u64>()) {
        let fid = FileId([8; 16]);
        let obj = Sealer::new(&dk(8), fid, P as u32).seal(&plain(n, seed));
        let cut = cut % obj.len();
        prop_assert!(open(&dk(8), &fid, &obj[..cut]).is_err());
        let mut ext = obj.clone();
        ext.extend(plain(extra, seed ^ 1));
        prop_assert!(open(&dk(8), &fid, &ext).is_err());
    }
}

proptest! {
    /// Hostile bytes and lengths from S3: the header parser, the length
    /// inverse and the opener answer an error, never a panic.
    #[test]
    fn any_header_and_length_parse_or_are_refused(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        len in any::<u64>(),
        log2 in 0u8..=40,
    ) {
        let _ = sealfs::crypto::Header::parse(&bytes);
        if (12..=24).contains(&log2) {
            let _ = sealfs::crypto::Layout::new(1u32 << log2).plain_len(len);
        }
        let _ = sealfs::crypto::Opener::new(&dk(1), &bytes, &FileId([1; 16]));
    }
}
