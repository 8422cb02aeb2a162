//! Branch keys (see [`super::branches`]): KMS calls per branch, not per
//! file; rotation; every tamper with a branch is that file's integrity
//! failure; a grantee gets one file's key and nothing that opens another.

use super::tests::{data, rig, rig_with, small_parts, Rig};
use super::*;
use crate::crypto::IntegrityError;
use crate::keys::{CachingKeyService, EncryptionContext, KeyError, KeyService};
use crate::store::{ObjectStore, PutCondition};
use std::time::Duration;

/// Another client of the same bucket and KMS, with a decrypt cache of its
/// own: an owner (with the volume's branches) or a grantee (without).
fn client(r: &Rig, owner: bool) -> SealedStore {
    let keys: Arc<dyn KeyService> = Arc::new(CachingKeyService::new(
        r.kms.clone(),
        64,
        Duration::from_secs(600),
    ));
    let store: Arc<dyn ObjectStore> = Arc::new(r.mem.clone());
    let pinned = r.sealed.pinned_key().to_string();
    let s = SealedStore::new(store.clone(), keys.clone(), small_parts(), pinned.clone());
    match owner {
        true => s.with_branches(Branches::new(store, keys, &pinned, "v0", "vol", None)),
        false => s,
    }
}

async fn read(s: &SealedStore, key: &str) -> Result<Vec<u8>> {
    let obj = s.open(key).await?;
    let mut out = Vec::new();
    obj.copy_to(s.store().as_ref(), &mut out, 3 * 4096, 2, &|_| {})
        .await?;
    Ok(out)
}

fn branch_objects(r: &Rig) -> Vec<String> {
    let mut k = r.mem.keys();
    k.retain(|k| k.starts_with("vol/.sealfs/branches/"));
    k
}

fn integrity_check(e: Error) -> IntegrityError {
    match e {
        Error::Integrity { check, .. } => check,
        e => panic!("not an integrity failure: {e}"),
    }
}

#[tokio::test]
async fn many_files_cost_one_kms_call_to_write_and_one_to_read() {
    let r = rig(small_parts());
    for i in 0..300 {
        r.put(&format!("vol/f{i}"), &data(100, i as u8))
            .await
            .unwrap();
    }
    assert_eq!(r.kms.calls().generate_data_key, 1);
    assert_eq!(branch_objects(&r).len(), 1);
    let (_, m) = r.mem.raw("vol/f7").unwrap();
    assert_eq!(m[meta::VERSION], "2");
    assert!(!m.contains_key(meta::WRAPPED_KEY), "no per-file KMS blob");
    // Another client (a remount) reads them all with one Decrypt.
    let other = client(&r, true);
    let before = r.kms.calls().decrypt;
    for i in 0..300 {
        assert_eq!(
            read(&other, &format!("vol/f{i}")).await.unwrap(),
            data(100, i as u8)
        );
    }
    assert_eq!(r.kms.calls().decrypt - before, 1);
}

#[tokio::test]
async fn concurrent_first_files_make_one_branch() {
    let r = rig(small_parts());
    let keys = futures::future::join_all((0..40).map(|_| r.sealed.new_key())).await;
    let ids: std::collections::HashSet<_> = keys
        .into_iter()
        .map(|k| k.unwrap().key_ref.file_id)
        .collect();
    assert_eq!(ids.len(), 40, "every file its own id");
    assert_eq!(r.kms.calls().generate_data_key, 1);
}

#[tokio::test]
async fn branches_rotate_by_count_and_by_age() {
    let by_count = rig_with(
        small_parts(),
        Some(BranchSettings {
            max_files: 3,
            max_age: Duration::from_secs(3600),
        }),
    );
    for i in 0..7 {
        by_count.put(&format!("vol/f{i}"), b"x").await.unwrap();
    }
    assert_eq!(by_count.kms.calls().generate_data_key, 3);
    assert_eq!(branch_objects(&by_count).len(), 3);
    let by_age = rig_with(
        small_parts(),
        Some(BranchSettings {
            max_files: 1000,
            max_age: Duration::ZERO,
        }),
    );
    by_age.put("vol/a", b"a").await.unwrap();
    by_age.put("vol/b", b"b").await.unwrap();
    assert_eq!(branch_objects(&by_age).len(), 2);
    for (r, n) in [(&by_count, 7), (&by_age, 0)] {
        let other = client(r, true);
        for i in 0..n {
            assert_eq!(read(&other, &format!("vol/f{i}")).await.unwrap(), b"x");
        }
    }
    assert_eq!(read(&client(&by_age, true), "vol/b").await.unwrap(), b"b");
}

#[tokio::test]
async fn a_tampered_branch_is_an_integrity_failure_of_its_files() {
    let r = rig_with(
        small_parts(),
        Some(BranchSettings {
            max_files: 1,
            max_age: Duration::from_secs(3600),
        }),
    );
    r.put("vol/a", b"aaa").await.unwrap();
    r.put("vol/b", b"bbb").await.unwrap();
    let branches = branch_objects(&r);
    let (a_branch, b_branch) = {
        let branch_of = |k: &str| {
            let (_, m) = r.mem.raw(k).unwrap();
            format!("vol/.sealfs/branches/{}", m[meta::BRANCH])
        };
        (branch_of("vol/a"), branch_of("vol/b"))
    };
    assert_eq!(branches.len(), 2);
    let (a_wrapped, _) = r.mem.raw(&a_branch).unwrap();
    // b's branch object replaced by a's wrapped key: KMS refuses it under
    // b's branch context.
    r.mem.tamper(&b_branch, Some(a_wrapped.clone()), None);
    let check = integrity_check(read(&client(&r, true), "vol/b").await.unwrap_err());
    assert!(matches!(check, IntegrityError::BranchKey(_)), "{check}");
    // A branch key wrapped under a KMS key the attacker controls, with the
    // right context: the pinned key is the one asked, so KMS refuses it.
    let evil = r.kms.add_key();
    let (_, bm) = r.mem.raw("vol/b").unwrap();
    let id = crate::crypto::BranchId::from_hex(&bm[meta::BRANCH]).unwrap();
    let planted = r
        .kms
        .generate_data_key(&evil, &EncryptionContext::for_branch("v0", &id))
        .await
        .unwrap();
    r.mem.tamper(&b_branch, Some(planted.wrapped.into()), None);
    let check = integrity_check(read(&client(&r, true), "vol/b").await.unwrap_err());
    assert!(matches!(check, IntegrityError::BranchKey(_)), "{check}");
    // Garbage, an empty object, a deleted one.
    for body in [vec![0u8; 5000], vec![]] {
        r.mem.tamper(&b_branch, Some(body.into()), None);
        let check = integrity_check(read(&client(&r, true), "vol/b").await.unwrap_err());
        assert!(matches!(check, IntegrityError::BranchKey(_)), "{check}");
    }
    r.mem.delete(&b_branch).await.unwrap();
    let check = integrity_check(read(&client(&r, true), "vol/b").await.unwrap_err());
    assert!(matches!(check, IntegrityError::BranchKey(_)), "{check}");
    // a, whose branch is untouched, still reads; so a file pointed at a's
    // branch fails its key commitment, not silently.
    assert_eq!(read(&client(&r, true), "vol/a").await.unwrap(), b"aaa");
    let (body, mut m) = r.mem.raw("vol/b").unwrap();
    let (_, am) = r.mem.raw("vol/a").unwrap();
    m.insert(meta::BRANCH.into(), am[meta::BRANCH].clone());
    r.mem.tamper("vol/b", Some(body), Some(m));
    let check = integrity_check(read(&client(&r, true), "vol/b").await.unwrap_err());
    assert_eq!(check, IntegrityError::KeyCommitment);
}

#[tokio::test]
async fn a_grantee_gets_one_files_key_and_nothing_that_opens_another() {
    let r = rig(small_parts());
    r.put("vol/shared", b"for alice").await.unwrap();
    r.put("vol/private", b"not for alice").await.unwrap();
    let alice = client(&r, false);
    // Not shared yet: no key a grantee could unwrap.
    let check = integrity_check(read(&alice, "vol/shared").await.unwrap_err());
    assert_eq!(check, IntegrityError::NotPublished);
    let before = r.kms.calls();
    let (v, changed) = r.sealed.publish_key("vol/shared").await.unwrap();
    assert!(changed);
    assert_eq!(r.kms.calls().encrypt - before.encrypt, 1);
    assert_eq!(r.kms.calls().generate_data_key, before.generate_data_key);
    // Sharing again costs nothing; the grant names the id it verified with.
    let (again, changed) = r.sealed.publish_key("vol/shared").await.unwrap();
    assert!(!changed);
    assert_eq!(again.key_ref, v.key_ref);
    assert_eq!(r.kms.calls().encrypt - before.encrypt, 1);
    assert_eq!(read(&alice, "vol/shared").await.unwrap(), b"for alice");
    // The same branch's other file stays closed to her...
    let check = integrity_check(read(&alice, "vol/private").await.unwrap_err());
    assert_eq!(check, IntegrityError::NotPublished);
    // ...and so does the shared file's key copied onto it: KMS refuses it
    // under the other file's context.
    let (_, sm) = r.mem.raw("vol/shared").unwrap();
    let (body, mut pm) = r.mem.raw("vol/private").unwrap();
    pm.insert(meta::WRAPPED_KEY.into(), sm[meta::WRAPPED_KEY].clone());
    r.mem
        .tamper("vol/private", Some(body.clone()), Some(pm.clone()));
    let check = integrity_check(read(&alice, "vol/private").await.unwrap_err());
    assert_eq!(check, IntegrityError::WrappedKey);
    // With the file id too: the key opens nothing (key commitment).
    pm.insert(meta::FILE_ID.into(), sm[meta::FILE_ID].clone());
    r.mem.tamper("vol/private", Some(body), Some(pm));
    let check = integrity_check(read(&alice, "vol/private").await.unwrap_err());
    assert!(
        matches!(
            check,
            IntegrityError::KeyCommitment | IntegrityError::FileIdMismatch
        ),
        "{check}"
    );
    // The branch key's wrapped form does not open under a file's context
    // (what a grant's kms:Decrypt condition allows).
    let (_, shared_meta) = r.mem.raw("vol/shared").unwrap();
    let branch = branch_objects(&r).pop().unwrap();
    let (wrapped_branch, _) = r.mem.raw(&branch).unwrap();
    let fid = crate::crypto::FileId::from_hex(&shared_meta[meta::FILE_ID]).unwrap();
    assert_eq!(
        r.kms
            .decrypt(
                r.sealed.pinned_key(),
                &wrapped_branch,
                &EncryptionContext::for_file(&fid)
            )
            .await
            .unwrap_err(),
        KeyError::InvalidCiphertext
    );
}

#[tokio::test]
async fn a_shared_file_stays_shared_across_rewrites_and_renames() {
    let r = rig(small_parts());
    r.put("vol/doc", b"v1").await.unwrap();
    r.sealed.publish_key("vol/doc").await.unwrap();
    let alice = client(&r, false);
    assert_eq!(read(&alice, "vol/doc").await.unwrap(), b"v1");
    // A new version keeps the file's key and its wrapped form.
    r.put("vol/doc", b"v2, longer").await.unwrap();
    assert_eq!(read(&alice, "vol/doc").await.unwrap(), b"v2, longer");
    let etag = r
        .sealed
        .rebind_copy("vol/doc", "vol/moved", &PutCondition::None, |_| {})
        .await
        .unwrap();
    assert!(!etag.is_empty());
    assert_eq!(read(&alice, "vol/moved").await.unwrap(), b"v2, longer");
    // Its owner reads it through the branch, as before sharing.
    assert_eq!(
        read(&client(&r, true), "vol/moved").await.unwrap(),
        b"v2, longer"
    );
}

#[tokio::test]
async fn wrapped_branch_keys_kept_on_disk_spare_a_get_and_a_bad_copy_costs_one() {
    use std::sync::atomic::Ordering::Relaxed;
    let r = rig(small_parts());
    r.put("vol/f", b"kept").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let with_copies = || client(&r, true).keep_branch_keys_in(dir.path().join("branches"));
    let gets = || r.mem.counts().get.load(Relaxed);
    // The first mount fetches the wrapped branch key once and keeps it.
    let before = gets();
    assert_eq!(read(&with_copies(), "vol/f").await.unwrap(), b"kept");
    let first = gets() - before;
    let kept: Vec<_> = std::fs::read_dir(dir.path().join("branches"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    // The next one reads it from disk: one GET fewer.
    let before = gets();
    assert_eq!(read(&with_copies(), "vol/f").await.unwrap(), b"kept");
    assert_eq!(gets() - before, first - 1);
    // A damaged copy is refused by KMS, fetched again from S3 and replaced.
    std::fs::write(&kept[0], b"garbage").unwrap();
    assert_eq!(read(&with_copies(), "vol/f").await.unwrap(), b"kept");
    assert_ne!(std::fs::read(&kept[0]).unwrap(), b"garbage");
}
