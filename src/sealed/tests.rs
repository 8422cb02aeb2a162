//! Tests of sealed objects in a store: round trips, conditional writes,
//! tamper and binding checks, no plaintext in the store. Also the rig the
//! reader tests (`reader_tests.rs`) share.

use super::*;
use crate::crypto::FileId;
use crate::keys::{CachingKeyService, FakeKms};
use crate::store::MemoryStore;
use std::time::Duration;

pub(super) struct Rig {
    pub(super) mem: MemoryStore,
    pub(super) kms: FakeKms,
    pub(super) sealed: SealedStore,
}

/// A store as a mount has it: new files' keys derive from branch keys.
pub(super) fn rig(settings: IoSettings) -> Rig {
    rig_with(settings, Some(BranchSettings::default()))
}

/// A store as one-shot commands have it: one KMS call per new file.
pub(super) fn rig_own_keys(settings: IoSettings) -> Rig {
    rig_with(settings, None)
}

pub(super) fn rig_with(settings: IoSettings, branches: Option<BranchSettings>) -> Rig {
    let mem = MemoryStore::new("bucket");
    let kms = FakeKms::new();
    let arn = kms.add_key();
    let keys: Arc<dyn KeyService> = Arc::new(CachingKeyService::new(
        kms.clone(),
        64,
        Duration::from_secs(600),
    ));
    let store: Arc<dyn ObjectStore> = Arc::new(mem.clone());
    let branch_keys = Branches::new(store.clone(), keys.clone(), &arn, "v0", "vol", branches);
    Rig {
        sealed: SealedStore::new(store, keys, settings, arn).with_branches(branch_keys),
        mem,
        kms,
    }
}

pub(super) fn small_parts() -> IoSettings {
    IoSettings {
        segment_size: 4096,
        part_size: 4 * 4096,
        upload_concurrency: 3,
        read_run: 3 * 4096,
        read_concurrency: 2,
    }
}

pub(super) fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

impl Rig {
    pub(super) async fn put(&self, key: &str, plain: &[u8]) -> Result<String> {
        let wk = self.sealed.key_for_write(key).await?;
        self.sealed
            .write(
                key,
                &mut &plain[..],
                plain.len() as u64,
                &Metadata::new(),
                &wk,
                &|_| {},
            )
            .await
    }

    pub(super) async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let obj = self.sealed.open(key).await?;
        let mut out = Vec::new();
        obj.copy_to(self.sealed.store().as_ref(), &mut out, 3 * 4096, 2, &|_| {})
            .await?;
        Ok(out)
    }
}

#[tokio::test]
async fn round_trip_single_and_multipart() {
    let r = rig(small_parts());
    for n in [
        0usize,
        1,
        4095,
        4096,
        4097,
        5 * 4096,
        24 * 4096 + 7,
        100_000,
    ] {
        let plain = data(n, n as u8);
        let key = format!("vol/f{n}");
        r.put(&key, &plain).await.unwrap();
        let (raw, _) = r.mem.raw(&key).unwrap();
        assert_eq!(raw.len() as u64, Layout::new(4096).object_len(n as u64));
        assert_eq!(r.get(&key).await.unwrap(), plain, "size {n}");
    }
    assert!(
        r.mem
            .counts()
            .complete_multipart
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    assert_eq!(r.mem.pending_uploads(), 0);
}

#[tokio::test]
async fn random_reads_match_slices() {
    let r = rig(small_parts());
    let plain = data(50_000, 9);
    r.put("vol/r", &plain).await.unwrap();
    let obj = r.sealed.open("vol/r").await.unwrap();
    let store = r.sealed.store().as_ref();
    for (off, len) in [
        (0u64, 10u64),
        (4090, 20),
        (49_990, 100),
        (50_000, 5),
        (12_000, 30_000),
    ] {
        let got = obj.read(store, off, len).await.unwrap();
        let end = (off + len).min(50_000) as usize;
        assert_eq!(
            got,
            plain[off.min(50_000) as usize..end].to_vec(),
            "({off},{len})"
        );
    }
}

#[tokio::test]
async fn overwrite_reuses_the_data_key_and_is_conditional() {
    let r = rig(small_parts());
    r.put("vol/a", b"one").await.unwrap();
    let m1 = SealMeta::read_from(&r.mem.raw("vol/a").unwrap().1).unwrap();
    let stale = r.sealed.key_for_write("vol/a").await.unwrap();
    r.put("vol/a", b"two").await.unwrap();
    let m2 = SealMeta::read_from(&r.mem.raw("vol/a").unwrap().1).unwrap();
    assert_eq!(m1.key, m2.key);
    assert_ne!(m1.binding, m2.binding, "a new version has a new salt");
    assert_eq!(r.kms.calls().generate_data_key, 1);
    // A writer holding the ETag of version one loses the race, and nothing changes.
    let err = r
        .sealed
        .write(
            "vol/a",
            &mut &b"three"[..],
            5,
            &Metadata::new(),
            &stale,
            &|_| {},
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Store(StoreError::PreconditionFailed { .. })
    ));
    assert_eq!(r.get("vol/a").await.unwrap(), b"two");
}

#[tokio::test]
async fn swapped_objects_fail_the_path_binding() {
    let r = rig(small_parts());
    r.put("vol/x", b"xxxx").await.unwrap();
    r.put("vol/y", b"yyyy").await.unwrap();
    let (xb, xm) = r.mem.raw("vol/x").unwrap();
    let (yb, ym) = r.mem.raw("vol/y").unwrap();
    r.mem.tamper("vol/x", Some(yb), Some(ym));
    r.mem.tamper("vol/y", Some(xb), Some(xm));
    for k in ["vol/x", "vol/y"] {
        match r.get(k).await.unwrap_err() {
            Error::Integrity { check, .. } => assert_eq!(check, IntegrityError::PathBinding),
            e => panic!("unexpected {e}"),
        }
    }
}

#[tokio::test]
async fn tampered_body_and_metadata_are_rejected() {
    let r = rig(small_parts());
    let plain = data(10_000, 1);
    r.put("vol/t", &plain).await.unwrap();
    let (raw, meta) = r.mem.raw("vol/t").unwrap();
    let mut flipped = raw.to_vec();
    flipped[HEADER_LEN + 5000] ^= 0x40;
    r.mem.tamper("vol/t", Some(Bytes::from(flipped)), None);
    assert!(matches!(
        r.get("vol/t").await.unwrap_err(),
        Error::Integrity {
            check: IntegrityError::Segment(1),
            ..
        }
    ));
    // A file id in metadata that differs from the header's: the key it
    // derives fails the key commitment.
    let mut m = meta.clone();
    m.insert(meta::FILE_ID.into(), FileId([0; 16]).to_hex());
    r.mem.tamper("vol/t", Some(raw.clone()), Some(m));
    assert!(matches!(
        r.get("vol/t").await.unwrap_err(),
        Error::Integrity {
            check: IntegrityError::KeyCommitment,
            ..
        }
    ));
    // Another branch named: missing from the volume.
    let mut m = meta.clone();
    m.insert(meta::BRANCH.into(), "ab".repeat(16));
    r.mem.tamper("vol/t", Some(raw.clone()), Some(m));
    assert!(matches!(
        r.get("vol/t").await.unwrap_err(),
        Error::Integrity {
            check: IntegrityError::BranchKey(_),
            ..
        }
    ));
    // Missing sealing metadata: not a sealfs object.
    r.mem.tamper("vol/t", Some(raw), Some(Metadata::new()));
    assert!(matches!(
        r.get("vol/t").await.unwrap_err(),
        Error::NotSealfs { .. }
    ));
}

#[tokio::test]
async fn a_version_1_file_id_swap_is_refused_by_kms() {
    let r = rig_own_keys(small_parts());
    r.put("vol/t", &data(100, 1)).await.unwrap();
    let (raw, meta) = r.mem.raw("vol/t").unwrap();
    assert_eq!(meta[meta::VERSION], "1");
    let mut m = meta.clone();
    m.insert(meta::FILE_ID.into(), FileId([0; 16]).to_hex());
    r.mem.tamper("vol/t", Some(raw), Some(m));
    assert!(matches!(
        r.get("vol/t").await.unwrap_err(),
        Error::Integrity {
            check: IntegrityError::WrappedKey,
            ..
        }
    ));
}

#[tokio::test]
async fn foreign_objects_are_reported_not_overwritten() {
    let r = rig(small_parts());
    r.mem
        .put(
            "vol/plain.txt",
            Bytes::from_static(b"hello"),
            &Metadata::new(),
            &PutCondition::None,
        )
        .await
        .unwrap();
    assert!(matches!(
        r.get("vol/plain.txt").await.unwrap_err(),
        Error::NotSealfs { .. }
    ));
    assert!(matches!(
        r.put("vol/plain.txt", b"x").await.unwrap_err(),
        Error::NotSealfs { .. }
    ));
    assert_eq!(&r.mem.raw("vol/plain.txt").unwrap().0[..], b"hello");
}

#[tokio::test]
async fn short_source_aborts_without_a_visible_object() {
    let r = rig(small_parts());
    let plain = data(100_000, 3);
    let wk = r.sealed.key_for_write("vol/short").await.unwrap();
    // Claims 200,000 bytes but the reader has 100,000: the upload must abort.
    let err = r
        .sealed
        .write(
            "vol/short",
            &mut &plain[..],
            200_000,
            &Metadata::new(),
            &wk,
            &|_| {},
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(r.mem.raw("vol/short").is_none());
    assert_eq!(r.mem.pending_uploads(), 0);
}

#[tokio::test]
async fn no_plaintext_reaches_the_store() {
    let r = rig(small_parts());
    let marker = b"SEALFS-PLAINTEXT-MARKER-0123456789";
    let plain: Vec<u8> = marker.iter().cycle().take(30_000).copied().collect();
    r.put("vol/m", &plain).await.unwrap();
    let (raw, meta) = r.mem.raw("vol/m").unwrap();
    assert!(!raw.windows(marker.len()).any(|w| w == marker));
    assert!(!meta.values().any(|v| v.contains("MARKER")));
}
