//! Authenticated attributes and encrypted xattrs through the core: what a
//! bucket writer gets by editing object metadata (an EIO for that object,
//! never wider access, another type, or a readable xattr).

use super::tests::{chmod, rig, rig_same_store, Rig};
use super::ROOT;
use crate::store::attested::{MAC, XATTRS, XREF};
use crate::store::Metadata;

fn raw_meta(r: &Rig, key: &str) -> Metadata {
    r.mem.raw(key).expect("object").1
}

fn edit_meta(r: &Rig, key: &str, edit: impl FnOnce(&mut Metadata)) {
    let (body, mut m) = r.mem.raw(key).expect("object");
    edit(&mut m);
    r.mem.tamper(key, Some(body), Some(m));
}

#[tokio::test]
async fn edited_attributes_are_eio_for_that_object_only() {
    let r = rig();
    let a = r.write_file(ROOT, "a", b"secret").await;
    r.write_file(ROOT, "b", b"fine").await;
    chmod(&r.fs, a, 0o600).await;
    for (field, value) in [
        ("sealfs-mode", "666"),
        ("sealfs-uid", "4242"),
        ("sealfs-type", "l"),
        ("sealfs-mtime", "99999999999999999999.0"),
    ] {
        let saved = r.mem.raw("vol/a").unwrap();
        edit_meta(&r, "vol/a", |m| {
            m.insert(field.into(), value.into());
        });
        let fresh = rig_same_store(&r);
        let err = fresh.lookup(ROOT, "a").await.unwrap_err();
        assert_eq!(err.errno(), libc::EIO, "{field}");
        assert!(err.to_string().contains("attribute MAC"), "{err}");
        // Every other entry and operation keeps working.
        let b = fresh.lookup(ROOT, "b").await.unwrap();
        assert_eq!(b.attr.mode, 0o644);
        let names: Vec<String> = fresh
            .readdir(ROOT)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(names.contains(&"b".to_string()) && !names.contains(&"a".to_string()));
        r.mem.tamper("vol/a", Some(saved.0), Some(saved.1));
    }
    // Untampered again: readable, with the mode the owner set.
    let fresh = rig_same_store(&r);
    assert_eq!(fresh.lookup(ROOT, "a").await.unwrap().attr.mode, 0o600);
}

#[tokio::test]
async fn attributes_cannot_be_moved_between_objects_or_stripped() {
    let r = rig();
    let a = r.write_file(ROOT, "a", b"one").await;
    r.write_file(ROOT, "b", b"two").await;
    chmod(&r.fs, a, 0o600).await;
    // b's (valid, MACed) metadata copied onto a: bound to b's key, refused.
    let b_meta = raw_meta(&r, "vol/b");
    edit_meta(&r, "vol/a", |m| *m = b_meta.clone());
    let fresh = rig_same_store(&r);
    assert_eq!(
        fresh.lookup(ROOT, "a").await.unwrap_err().errno(),
        libc::EIO
    );
    // The MAC stripped: a format-2 volume does not fall back to the legacy rule.
    edit_meta(&r, "vol/b", |m| {
        m.remove(MAC);
    });
    let fresh = rig_same_store(&r);
    assert_eq!(
        fresh.lookup(ROOT, "b").await.unwrap_err().errno(),
        libc::EIO
    );
    // A directory marker's attributes are authenticated too.
    r.fs.mkdir(ROOT, "d", 0o700, 0, 0).await.unwrap();
    edit_meta(&r, "vol/d/", |m| {
        m.insert("sealfs-mode".into(), "777".into());
    });
    let fresh = rig_same_store(&r);
    assert_eq!(
        fresh.lookup(ROOT, "d").await.unwrap_err().errno(),
        libc::EIO
    );
}

#[tokio::test]
async fn xattr_values_are_encrypted_and_large_sets_fit() {
    let r = rig();
    let f = r.write_file(ROOT, "f", b"x").await;
    r.fs.setxattr(f, "user.origin", b"https://example.com/secret-download", 0)
        .await
        .unwrap();
    let m = raw_meta(&r, "vol/f");
    assert!(m.contains_key(XATTRS));
    let stored = serde_json::to_string(&m).unwrap();
    assert!(
        !stored.contains("example"),
        "plaintext xattr in S3: {stored}"
    );
    assert!(!m.keys().any(|k| k.starts_with("sealfs-x-")), "{m:?}");
    // A hundred attributes (Python's test_os): beyond S3's 2 KB of metadata,
    // kept encrypted in the volume's internal area.
    for i in 0..100 {
        let v = format!("value number {i} of a long set of attributes");
        r.fs.setxattr(f, &format!("user.attr{i:03}"), v.as_bytes(), 0)
            .await
            .unwrap();
    }
    let m = raw_meta(&r, "vol/f");
    assert!(m.contains_key(XREF) && !m.contains_key(XATTRS));
    let fresh = rig_same_store(&r);
    let e = fresh.lookup(ROOT, "f").await.unwrap();
    assert_eq!(e.attr.xattrs.len(), 101);
    assert_eq!(
        fresh.getxattr(e.ino, "user.attr042").await.unwrap(),
        b"value number 42 of a long set of attributes"
    );
    let sidecar = format!("vol/.sealfs/xattrs/{}", m[XREF]);
    let (blob, _) = r.mem.raw(&sidecar).unwrap();
    assert!(!blob.windows(12).any(|w| w == b"value number"));
    // A swapped or edited sidecar is refused.
    let mut bad = blob.to_vec();
    bad[20] ^= 1;
    r.mem.tamper(&sidecar, Some(bad.into()), None);
    let fresh = rig_same_store(&r);
    assert_eq!(
        fresh.lookup(ROOT, "f").await.unwrap_err().errno(),
        libc::EIO
    );
    // Past the per-file limit: ENOSPC, nothing stored.
    let big = vec![b'v'; 60 << 10];
    let err = r.fs.setxattr(f, "user.big", &big, 0).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOSPC);
}

#[tokio::test]
async fn renames_and_chmods_re_authenticate_and_verify_first() {
    let r = rig();
    let f = r.write_file(ROOT, "f", b"data").await;
    r.fs.setxattr(f, "user.tag", b"t", 0).await.unwrap();
    r.fs.rename(ROOT, "f", ROOT, "g", false).await.unwrap();
    let fresh = rig_same_store(&r);
    let g = fresh.lookup(ROOT, "g").await.unwrap();
    assert_eq!(fresh.getxattr(g.ino, "user.tag").await.unwrap(), b"t");
    // A tampered object is not laundered by a rename: the rename fails.
    edit_meta(&r, "vol/g", |m| {
        m.insert("sealfs-mode".into(), "4777".into());
    });
    let fresh = rig_same_store(&r);
    let err = fresh.rename(ROOT, "g", ROOT, "h", false).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    assert!(r.mem.raw("vol/h").is_none());
}

mod hostile_listings {
    use super::*;
    use crate::store::{ObjectStore, PutCondition};
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{1,3}",
            "[a-z]{1,3}/[a-z]{0,3}",
            "[a-z]{1,2}//[a-z]{1,2}",
            "[a-z]{0,2}/",
            Just(".sealfs/x".to_string()),
            Just("\u{10FFFD}4\u{10FFFD}".to_string()),
            any::<String>(),
        ]
    }

    fn metadata() -> impl Strategy<Value = Metadata> {
        proptest::collection::btree_map(
            prop_oneof![
                Just("sealfs-type".to_string()),
                Just("sealfs-mode".to_string()),
                Just("sealfs-mtime".to_string()),
                Just("sealfs-v".to_string()),
                Just(MAC.to_string()),
                "sealfs-[a-z]{1,6}",
            ],
            prop_oneof!["[0-9]{1,25}", "[0-9a-f]{64}", any::<String>()],
            0..4,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Arbitrary objects (keys, sizes, metadata) written into the volume
        /// behind sealfs's back: listing and looking up every name answers
        /// entries or errors, never a panic, and the mount keeps working.
        #[test]
        fn any_listing_is_served_or_refused(
            objects in proptest::collection::vec((key(), 0usize..300, metadata()), 0..12)
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async {
                let r = rig();
                for (k, size, m) in &objects {
                    r.mem
                        .put(&format!("vol/{k}"), vec![7u8; *size].into(), m, &PutCondition::None)
                        .await
                        .unwrap();
                }
                let mut dirs = vec![ROOT];
                let mut seen = 0;
                while let Some(dir) = dirs.pop() {
                    let Ok(entries) = r.fs.readdir(dir).await else { continue };
                    for e in entries.into_iter().skip(2) {
                        seen += 1;
                        if seen > 200 {
                            break;
                        }
                        if let Ok(found) = r.fs.lookup(dir, &e.name).await {
                            let _ = r.fs.getattr(found.ino).await;
                            if found.attr.kind == crate::fs::Kind::Dir {
                                dirs.push(found.ino);
                            } else if let Ok(fh) = r.fs.open(found.ino, libc::O_RDONLY).await {
                                let _ = r.fs.read(fh, 0, 4096).await;
                                let _ = r.fs.release(fh).await;
                            }
                        }
                    }
                }
                let ino = r.write_file(ROOT, "after-the-storm", b"fine").await;
                assert_eq!(r.read_file(ino).await, b"fine");
            });
        }
    }
}
