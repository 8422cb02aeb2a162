//! Key choice under attack: strict pinning, write keys only from verified
//! versions, sharing only verified files (see [`super::keys`]).

use super::tests::{rig, small_parts};
use super::*;
use crate::crypto::IntegrityError;
use crate::keys::KeyService;
use crate::store::{MemoryStore, Metadata, PutCondition};

/// Copies the key fields (every sealing field but the binding) of `from`
/// onto `to`'s metadata, as a bucket writer with no KMS rights can.
fn redirect_key(mem: &MemoryStore, to: &str, from: &Metadata) {
    let (body, mut m) = mem.raw(to).unwrap();
    for k in SealMeta::NAMES.into_iter().filter(|k| *k != meta::BINDING) {
        match from.get(k) {
            Some(v) => m.insert(k.into(), v.clone()),
            None => m.remove(k),
        };
    }
    mem.tamper(to, Some(body), Some(m));
}

#[tokio::test]
async fn a_key_outside_the_pin_is_an_integrity_failure_and_never_asked_for() {
    let r = rig(small_parts());
    // A store pinned to another key (say, one the attacker controls) writes
    // a perfectly valid object under it.
    let evil = r.kms.add_key();
    let evil_keys: Arc<dyn KeyService> = Arc::new(r.kms.clone());
    let evil_store = SealedStore::new(
        r.sealed.store().clone(),
        evil_keys.clone(),
        small_parts(),
        evil.clone(),
    );
    let wk = evil_store.key_for_write("vol/e").await.unwrap();
    evil_store
        .write(
            "vol/e",
            &mut &b"planted"[..],
            7,
            &Metadata::new(),
            &wk,
            &|_| {},
        )
        .await
        .unwrap();
    let before = r.kms.calls();
    match r.get("vol/e").await.unwrap_err() {
        Error::Integrity {
            check: IntegrityError::ForeignKey(k),
            ..
        } => assert_eq!(k, evil),
        e => panic!("unexpected {e}"),
    }
    assert_eq!(r.kms.calls().decrypt, before.decrypt, "KMS never asked");
    // Writing over it seals under a fresh key of the volume, not the planted one.
    r.put("vol/e", b"mine").await.unwrap();
    assert_eq!(r.get("vol/e").await.unwrap(), b"mine");
    let (_, m) = r.mem.raw("vol/e").unwrap();
    assert_eq!(m[meta::KEY_ID], *r.sealed.pinned_key());
}

#[tokio::test]
async fn write_keys_come_only_from_verified_versions() {
    let r = rig(small_parts());
    r.put("vol/secret", b"the other file").await.unwrap();
    r.put("vol/target", b"v1").await.unwrap();
    let (_, secret_meta) = r.mem.raw("vol/secret").unwrap();
    let secret_fid = secret_meta[meta::FILE_ID].clone();
    // The attacker points target's metadata at secret's data key.
    redirect_key(&r.mem, "vol/target", &secret_meta);
    let fresh = r.sealed.sibling();
    let wk = fresh.key_for_write("vol/target").await.unwrap();
    assert_ne!(
        wk.key_ref.file_id.to_hex(),
        secret_fid,
        "never the redirected key"
    );
    assert!(matches!(wk.condition, PutCondition::IfMatch(_)));
    // The same through key_for_version (the mount's path): the redirected
    // metadata's key is never the one written under.
    let (_, m) = r.mem.raw("vol/target").unwrap();
    let hint = SealMeta::read_from(&m).unwrap().key;
    let etag = r.mem.head("vol/target").await.unwrap().etag;
    let wk = fresh
        .key_for_version("vol/target", Some(&etag), PutCondition::None)
        .await
        .unwrap();
    assert_ne!(wk.key_ref.file_id, hint.file_id);
    // An untampered file keeps its key (one DK per file), and a version
    // this store verified or wrote costs no request to reuse.
    let etag = r.put("vol/kept", b"one").await.unwrap();
    let (_, m) = r.mem.raw("vol/kept").unwrap();
    let kr = SealMeta::read_from(&m).unwrap().key;
    let gets = r
        .mem
        .counts()
        .get
        .load(std::sync::atomic::Ordering::Relaxed);
    let wk = r
        .sealed
        .key_for_version("vol/kept", Some(&etag), PutCondition::None)
        .await
        .unwrap();
    assert_eq!(wk.key_ref, kr);
    assert_eq!(
        r.mem
            .counts()
            .get
            .load(std::sync::atomic::Ordering::Relaxed),
        gets
    );
}

#[tokio::test]
async fn only_verified_files_can_be_shared_and_grants_name_their_own_id() {
    let r = rig(small_parts());
    r.put("vol/a", b"aaa").await.unwrap();
    r.put("vol/b", b"bbb").await.unwrap();
    let a = crate::grants::SharedFile::verified(&r.sealed, "vol/a")
        .await
        .unwrap();
    let (_, am) = r.mem.raw("vol/a").unwrap();
    assert_eq!(a.file_id, am[meta::FILE_ID]);
    assert_eq!(a.key_arn, *r.sealed.pinned_key());
    // Grant hijack: b's metadata now names a's file id (and key).
    redirect_key(&r.mem, "vol/b", &am);
    let err = crate::grants::SharedFile::verified(&r.sealed.sibling(), "vol/b")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err}");
}
