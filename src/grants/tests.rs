//! The grant logic against the in-memory IAM.

use super::*;
use crate::error::Error;
use std::sync::Arc;

pub(super) fn file(key: &str, n: u32) -> SharedFile {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    SharedFile {
        bucket: "bucket".into(),
        key: format!("vol/{key}"),
        file_id: hex::encode(id),
        key_arn: "arn:aws:kms:us-east-1:123456789012:key/vol".into(),
    }
}

fn named(who: &str) -> grantee::Named {
    Grantee::parse(who).unwrap()
}

/// A file's grants as getfattr shows their grantees.
async fn shown(g: &Grants, f: &SharedFile) -> Vec<(String, Option<expiry::Until>)> {
    g.grants_of(f)
        .await
        .unwrap()
        .into_iter()
        .map(|(who, until)| (who.to_string(), until))
        .collect()
}

/// Shares files f0, f1, … with `who` until a share fails: how many were
/// shared, and the failure.
pub(super) async fn share_until_full(g: &Grants, who: &str) -> (u32, Error) {
    let mut n = 0;
    loop {
        match g.share(who, &file(&format!("f{n}"), n)).await {
            Ok(_) => n += 1,
            Err(e) => return (n, e),
        }
        assert!(n < 1000, "never ran out");
    }
}

fn setup() -> (Arc<FakeIam>, Grants) {
    let iam = Arc::new(FakeIam::new("owner", &["alice", "bob"]));
    let grants = Grants::new(iam.clone(), GrantSettings::default());
    (iam, grants)
}

#[tokio::test]
async fn share_is_idempotent_and_listed() {
    let (iam, g) = setup();
    let f = file("a.txt", 1);
    g.share("alice", &f).await.unwrap();
    g.share("alice", &f).await.unwrap();
    g.share("bob", &f).await.unwrap();
    assert_eq!(g.grantees(&f).await.unwrap(), vec!["alice", "bob"]);
    assert_eq!(iam.policies().len(), 2);
    // One version per grantee: the repeat changed nothing.
    assert!(iam.policies().iter().all(|(_, v)| *v == 1));
    assert_eq!(iam.attached_to("alice").len(), 1);
    assert!(iam.attached_to("alice")[0].contains(":policy/sealfs/alice/sealfs-alice-1"));
    assert!(g.grantees(&file("other", 2)).await.unwrap().is_empty());
}

#[tokio::test]
async fn policy_names_the_object_and_conditions_kms_on_the_file_id() {
    let (_, g) = setup();
    let f = file("report.pdf", 7);
    g.share("alice", &f).await.unwrap();
    let docs = g.documents_of("alice").await.unwrap();
    assert_eq!(docs.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&docs[0].1.render()).unwrap();
    let st = v["Statement"].as_array().unwrap();
    assert_eq!(st[0]["Resource"], serde_json::json!([f.arn()]));
    assert_eq!(st[1]["Action"], "kms:Decrypt");
    assert_eq!(
        st[1]["Condition"]["StringEquals"][policy::FILE_CONDITION],
        serde_json::json!([f.file_id])
    );
    assert_eq!(docs[0].1.listed()[0].sharer, "owner");
}

#[tokio::test]
async fn unknown_user_is_einval_and_creates_nothing() {
    let (iam, g) = setup();
    for who in ["mallory", "bad name", "arn:aws:iam::123456789012:role/x"] {
        let e = g.share(who, &file("a", 1)).await.unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL, "{who}: {e}");
    }
    assert!(iam.policies().is_empty());
}

#[tokio::test]
async fn arn_is_accepted_and_checked() {
    let (_, g) = setup();
    let f = file("a", 1);
    g.share("arn:aws:iam::123456789012:user/alice", &f)
        .await
        .unwrap();
    assert_eq!(g.grantees(&f).await.unwrap(), vec!["alice"]);
    let e = g
        .share("arn:aws:iam::999999999999:user/alice", &f)
        .await
        .unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
}

#[tokio::test]
async fn denied_iam_is_eacces_and_leaves_nothing() {
    let (iam, g) = setup();
    iam.deny("iam:AttachUserPolicy");
    let e = g.share("alice", &file("a", 1)).await.unwrap_err();
    assert_eq!(e.errno(), libc::EACCES, "{e}");
    assert!(
        iam.policies().is_empty(),
        "the unattached policy was deleted"
    );
    let (iam, g) = setup();
    iam.deny("iam:CreatePolicy");
    assert_eq!(
        g.share("alice", &file("a", 1)).await.unwrap_err().errno(),
        libc::EACCES
    );
}

#[tokio::test]
async fn many_grants_spill_and_versions_stay_within_five() {
    let (iam, g) = setup();
    let files: Vec<SharedFile> = (0..300)
        .map(|n| file(&format!("dir/file-{n:04}"), n))
        .collect();
    for f in &files {
        g.share("alice", f).await.unwrap();
    }
    let policies = iam.policies();
    assert!(policies.len() > 1, "300 grants need more than one policy");
    assert!(policies.iter().all(|(_, v)| *v <= 5));
    let docs = g.documents_of("alice").await.unwrap();
    for (_, d) in &docs {
        assert!(d.size() <= policy::POLICY_SIZE_LIMIT);
    }
    for f in &files {
        assert!(docs.iter().any(|(_, d)| d.grants(f)), "{} lost", f.key);
    }
    assert_eq!(iam.attached_to("alice").len(), policies.len());
}

#[tokio::test]
async fn capacity_exhaustion_is_enospc() {
    let iam = Arc::new(FakeIam::new("owner", &["alice"]));
    for n in 0..9 {
        iam.attach_foreign("alice", &format!("other-{n}"));
    }
    let g = Grants::new(iam.clone(), GrantSettings::default());
    let (n, err) = share_until_full(&g, "alice").await;
    assert_eq!(err.errno(), libc::ENOSPC);
    assert!(err.to_string().contains("10 managed policies"), "{err}");
    assert!(n > 20, "one policy holds many grants, held {n}");
    // Everything granted before is still granted.
    assert_eq!(g.grantees(&file("f0", 0)).await.unwrap(), vec!["alice"]);
    // Revoking frees room.
    g.unshare("alice", &file("f0", 0)).await.unwrap();
    g.share("alice", &file(&format!("f{n}"), n)).await.unwrap();
}

#[tokio::test]
async fn unshare_revokes_and_deletes_empty_policies() {
    let (iam, g) = setup();
    let (a, b) = (file("a", 1), file("b", 2));
    g.share("alice", &a).await.unwrap();
    g.share("alice", &b).await.unwrap();
    g.unshare("alice", &a).await.unwrap();
    assert!(g.grantees(&a).await.unwrap().is_empty());
    assert_eq!(g.grantees(&b).await.unwrap(), vec!["alice"]);
    g.unshare("alice", &b).await.unwrap();
    assert!(iam.policies().is_empty());
    assert!(iam.attached_to("alice").is_empty());
    // Revoking what was never granted is not an error.
    g.unshare("bob", &a).await.unwrap();
}

#[tokio::test]
async fn unshare_all_revokes_everyone() {
    let (_, g) = setup();
    let a = file("a", 1);
    g.share("alice", &a).await.unwrap();
    g.share("bob", &a).await.unwrap();
    assert_eq!(g.unshare_all(&a).await.unwrap(), vec!["alice", "bob"]);
    assert!(g.grantees(&a).await.unwrap().is_empty());
}

#[tokio::test]
async fn rename_moves_and_delete_removes() {
    let (_, g) = setup();
    let a = file("dir/a", 1);
    let untouched = file("z", 9);
    g.share("alice", &a).await.unwrap();
    g.share("alice", &untouched).await.unwrap();
    g.moved("bucket", &[("vol/dir/a".into(), "vol/new/a".into())])
        .await
        .unwrap();
    let moved = SharedFile {
        key: "vol/new/a".into(),
        ..a.clone()
    };
    assert!(g.grantees(&a).await.unwrap().is_empty());
    assert_eq!(g.grantees(&moved).await.unwrap(), vec!["alice"]);
    g.removed("bucket", &[("vol/new/a".into(), Some(a.file_id.clone()))])
        .await
        .unwrap();
    assert!(g.grantees(&moved).await.unwrap().is_empty());
    let docs = g.documents_of("alice").await.unwrap();
    assert!(!docs[0].1.render().contains(&a.file_id));
    assert_eq!(g.grantees(&untouched).await.unwrap(), vec!["alice"]);
}

#[tokio::test]
async fn rekey_moves_grants_to_the_new_file_id() {
    let (_, g) = setup();
    let a = file("a", 1);
    g.share("alice", &a).await.unwrap();
    let new_id = hex::encode([0xee; 16]);
    assert_eq!(g.rekeyed(&a, &new_id).await.unwrap(), vec!["alice"]);
    assert!(g.grantees(&a).await.unwrap().is_empty());
    let rekeyed = SharedFile {
        file_id: new_id,
        ..a
    };
    assert_eq!(g.grantees(&rekeyed).await.unwrap(), vec!["alice"]);
}

#[tokio::test]
async fn the_grantee_sees_what_was_shared_and_by_whom() {
    let iam = Arc::new(FakeIam::new("owner", &["alice"]));
    let owner = Grants::new(iam.clone(), GrantSettings::default());
    owner.share("alice", &file("a b*", 1)).await.unwrap();
    owner.share("alice", &file("c", 2)).await.unwrap();
    // Ended: no longer listed (AWS no longer honours it).
    owner
        .share_until(&named("alice"), &file("d", 3), end(1_000))
        .await
        .unwrap();
    iam.set_caller("alice");
    let as_alice = Grants::new(iam.clone(), GrantSettings::default());
    let shared: Vec<(String, String, String)> = as_alice
        .shared_with_me()
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.bucket, l.key, l.sharer))
        .collect();
    assert_eq!(
        shared,
        vec![
            ("bucket".into(), "vol/a b*".into(), "owner".into()),
            ("bucket".into(), "vol/c".into(), "owner".into()),
        ]
    );
}

#[tokio::test]
async fn foreign_policies_under_the_path_are_left_alone() {
    let (iam, g) = setup();
    iam.create_policy(
        "sealfs-alice-1",
        "/sealfs/alice/",
        r#"{"Version":"2012-10-17","Statement":[{"Sid":"X","Effect":"Allow","Action":"*","Resource":"*"}]}"#,
        "",
    )
    .await
    .unwrap();
    g.share("alice", &file("a", 1)).await.unwrap();
    let names: Vec<String> = iam.policies().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"sealfs-alice-2".to_string()));
    let foreign = iam
        .policy_document(
            "arn:aws:iam::123456789012:policy/sealfs/alice/sealfs-alice-1",
            "v1",
        )
        .await
        .unwrap();
    assert!(foreign.contains("\"Sid\":\"X\""));
}

#[test]
fn error_kinds_map_to_errnos() {
    let e: Error = GrantError::LimitExceeded {
        message: "x".into(),
    }
    .into();
    assert_eq!(e.errno(), libc::ENOSPC);
}

#[test]
fn caller_names() {
    let user = Caller {
        arn: "arn:aws:iam::1:user/team/alice".into(),
        account: "1".into(),
    };
    assert_eq!(user.display_name(), "alice");
    assert_eq!(user.user_name().as_deref(), Some("alice"));
    let role = Caller {
        arn: "arn:aws:sts::1:assumed-role/Admin/sess".into(),
        account: "1".into(),
    };
    assert_eq!(role.display_name(), "Admin/sess");
    assert_eq!(role.user_name(), None);
}

/// The permissions-boundary pattern: grants go only to users carrying the
/// sealfs boundary, never to the owner, and owners cannot hand out boundaries.
#[tokio::test]
async fn grants_need_the_boundary_and_never_reach_the_owner() {
    let (iam, g) = setup();
    let boundary = format!("arn:aws:iam::123456789012:policy{BOUNDARY_PATH}{BOUNDARY_NAME}");
    iam.enforce_owner_policy(&boundary);
    let a = file("a", 1);
    g.share("alice", &a).await.unwrap();
    // bob was never set up: a clear EPERM naming the command, nothing granted.
    iam.clear_boundary("bob");
    let err = g.share("bob", &a).await.unwrap_err();
    assert_eq!(err.errno(), libc::EPERM);
    assert!(
        err.to_string().contains("sealfs grantee setup bob"),
        "{err}"
    );
    assert!(iam.attached_to("bob").is_empty());
    // Skipping the client check does not help: IAM (here, the fake with the
    // owner policy's conditions) refuses the attachment.
    let lax = Grants::new(
        iam.clone(),
        GrantSettings {
            boundary: BoundaryCheck::Off,
            ..GrantSettings::default()
        },
    );
    assert!(lax.share("bob", &a).await.is_err());
    assert!(iam.attached_to("bob").is_empty());
    // The owner cannot share with itself (its policy denies the attachment)
    // nor give bob a boundary.
    assert!(lax.share("owner", &a).await.is_err());
    assert!(iam
        .put_boundary(&Grantee::user("bob"), &boundary)
        .await
        .is_err());
}

fn end(unix: i64) -> Option<expiry::Until> {
    Some(expiry::Until::from_unix(unix).unwrap())
}

/// 2099-01-01: an end that has not come.
const LATER: i64 = 4_070_908_800;

#[tokio::test]
async fn an_end_is_written_replaced_and_shown() {
    let (iam, g) = setup();
    let f = file("report.pdf", 1);
    g.share_until(&named("alice"), &f, end(LATER))
        .await
        .unwrap();
    assert_eq!(shown(&g, &f).await, vec![("alice".to_string(), end(LATER))]);
    let text = g.documents_of("alice").await.unwrap()[0].1.render();
    assert!(
        text.contains(r#""DateLessThan":{"aws:CurrentTime":"2099-01-01T00:00:00Z"}"#),
        "{text}"
    );
    // The same grant again writes nothing.
    g.share_until(&named("alice"), &f, end(LATER))
        .await
        .unwrap();
    assert_eq!(iam.policies(), vec![("sealfs-alice-1".to_string(), 1)]);
    // Another end replaces it (one grant, not two); no end makes it lasting.
    g.share_until(&named("alice"), &f, end(LATER + 86_400))
        .await
        .unwrap();
    let docs = g.documents_of("alice").await.unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].1.by_sharer.len(), 1);
    assert_eq!(
        shown(&g, &f).await,
        vec![("alice".to_string(), end(LATER + 86_400))]
    );
    g.share("alice", &f).await.unwrap();
    assert_eq!(shown(&g, &f).await, vec![("alice".to_string(), None)]);
    assert!(!g.documents_of("alice").await.unwrap()[0]
        .1
        .render()
        .contains("DateLessThan"));
}

#[tokio::test]
async fn ended_grants_are_not_shown_and_are_pruned_at_the_next_write() {
    let (iam, g) = setup();
    let (a, b) = (file("a", 1), file("b", 2));
    g.share_until(&named("alice"), &a, end(1_000))
        .await
        .unwrap();
    assert!(
        g.grants_of(&a).await.unwrap().is_empty(),
        "ended: shown to no one"
    );
    assert_eq!(
        g.grantees(&a).await.unwrap(),
        vec!["alice"],
        "but still in IAM"
    );
    g.share("alice", &b).await.unwrap();
    let docs = g.documents_of("alice").await.unwrap();
    assert_eq!(docs.len(), 1);
    assert!(
        !docs[0].1.grants(&a),
        "pruned when alice's policy was written"
    );
    assert!(docs[0].1.grants(&b));
    assert_eq!(iam.attached_to("alice").len(), 1);
}

#[tokio::test]
async fn the_prune_command_removes_every_ended_statement() {
    let (iam, g) = setup();
    let (a, c, d) = (file("a", 1), file("c", 3), file("d", 4));
    g.share_until(&named("alice"), &a, end(1_000))
        .await
        .unwrap();
    // (In this order: a share prunes the grantee's ended statements.)
    g.share("bob", &d).await.unwrap();
    g.share_until(&named("bob"), &c, end(1_000)).await.unwrap();
    assert_eq!(g.prune_ended().await.unwrap(), 2);
    // alice's only policy emptied: detached and deleted.
    assert!(iam.attached_to("alice").is_empty());
    assert_eq!(iam.policies().len(), 1);
    let bob = g.documents_of("bob").await.unwrap();
    assert!(!bob[0].1.grants(&c) && bob[0].1.grants(&d));
    assert_eq!(g.prune_ended().await.unwrap(), 0);
}

/// At IAM's limit, ended grants make room instead of failing with ENOSPC.
#[tokio::test]
async fn ended_grants_free_room_at_the_limit() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let iam = Arc::new(FakeIam::new("owner", &["alice"]));
    for n in 0..9 {
        iam.attach_foreign("alice", &format!("other-{n}"));
    }
    let t = Arc::new(AtomicI64::new(LATER - 100));
    let clock = t.clone();
    let g = Grants::new(iam.clone(), GrantSettings::default()).with_clock(Arc::new(move || {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(clock.load(Ordering::SeqCst) as u64)
    }));
    let mut n = 0;
    loop {
        match g
            .share_until(&named("alice"), &file(&format!("f{n}"), n), end(LATER))
            .await
        {
            Ok(_) => n += 1,
            Err(e) => {
                assert_eq!(e.errno(), libc::ENOSPC);
                break;
            }
        }
        assert!(n < 1000, "never ran out");
    }
    assert!(g.grants_of(&file("f0", 0)).await.unwrap().len() == 1);
    t.store(LATER, Ordering::SeqCst);
    assert!(g.grants_of(&file("f0", 0)).await.unwrap().is_empty());
    g.share("alice", &file("new", 5_000)).await.unwrap();
    assert_eq!(g.grants_of(&file("new", 5_000)).await.unwrap().len(), 1);
    let docs = g.documents_of("alice").await.unwrap();
    assert_eq!(
        docs.len(),
        1,
        "the ended grants' policy was emptied and deleted"
    );
}
