//! Grants to roles and groups against the in-memory IAM: where their
//! policies live, what the grantee sees, and what makes a role or group
//! unfit to receive files.

use super::tests::{file, share_until_full};
use super::*;
use std::sync::Arc;

/// The keys of what has been shared with `g`'s caller.
async fn shared_keys(g: &Grants) -> Vec<String> {
    g.shared_with_me()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect()
}

const BOUNDARY: &str = "arn:aws:iam::123456789012:policy/sealfs-boundary/sealfs-grantee-boundary";

/// An account set up as `sealfs policy owner` says: the owner shares with
/// users alice, bob and carol, role `reader`, and groups at /sealfs/.
fn account() -> (Arc<FakeIam>, Grants) {
    let iam = Arc::new(FakeIam::new("owner", &["alice", "bob", "carol"]));
    iam.enforce_owner_policy(BOUNDARY);
    iam.add_role("reader");
    iam.add_group("finance", "/sealfs/", &["alice", "bob"]);
    let g = Grants::new(iam.clone(), GrantSettings::default());
    (iam, g)
}

fn role(name: &str) -> Grantee {
    Grantee {
        kind: GranteeKind::Role,
        name: name.into(),
    }
}

fn group(name: &str) -> Grantee {
    Grantee {
        kind: GranteeKind::Group,
        name: name.into(),
    }
}

#[tokio::test]
async fn a_role_receives_files_in_its_own_policies_and_its_sessions_see_them() {
    let (iam, g) = account();
    let (a, b) = (file("a", 1), file("b", 2));
    let p = g.share("role/reader", &a).await.unwrap();
    assert_eq!(p.arn, "arn:aws:iam::123456789012:role/reader");
    g.share("alice", &b).await.unwrap();
    assert_eq!(
        iam.attached_to_grantee(&role("reader")),
        vec!["arn:aws:iam::123456789012:policy/sealfs/role/reader/sealfs-role-reader-1"]
    );
    assert_eq!(g.grantees(&a).await.unwrap(), vec!["role/reader"]);
    assert_eq!(g.grantees(&b).await.unwrap(), vec!["alice"]);
    // A session of the role sees what the role was given, and nothing of
    // alice's; alice sees nothing of the role's.
    iam.assume_role("reader");
    let seen = Grants::new(iam.clone(), GrantSettings::default());
    let keys = shared_keys(&seen).await;
    assert_eq!(keys, vec!["vol/a"]);
    assert_eq!(
        seen.keys_granted_to_me("bucket", "vol/a", &a.file_id)
            .await
            .unwrap()
            .len(),
        1
    );
    iam.set_caller("alice");
    let keys = shared_keys(&seen).await;
    assert_eq!(keys, vec!["vol/b"]);
    // Unsharing finds the role's policy by its path.
    iam.set_caller("owner");
    g.unshare("role/reader", &a).await.unwrap();
    assert!(g.grantees(&a).await.unwrap().is_empty());
    assert!(iam.attached_to_grantee(&role("reader")).is_empty());
}

#[tokio::test]
async fn a_role_without_the_boundary_or_the_callers_own_role_is_refused() {
    let (iam, g) = account();
    let a = file("a", 1);
    iam.clear_role_boundary("reader");
    let err = g.share("role/reader", &a).await.unwrap_err();
    assert_eq!(err.errno(), libc::EPERM);
    assert!(
        err.to_string().contains("sealfs grantee setup role/reader"),
        "{err}"
    );
    iam.add_role("owners");
    iam.assume_role("owners");
    let session = Grants::new(iam.clone(), GrantSettings::default());
    let err = session.share("role/owners", &a).await.unwrap_err();
    assert_eq!(err.errno(), libc::EPERM);
    assert!(err.to_string().contains("runs as"), "{err}");
    assert!(iam.attached_to_grantee(&role("owners")).is_empty());
    // A role that does not exist is a clear EINVAL.
    let err = g.share("role/nobody", &a).await.unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    assert!(err.to_string().contains("no such IAM role"), "{err}");
}

#[tokio::test]
async fn a_group_receives_files_and_every_member_sees_them() {
    let (iam, g) = account();
    let a = file("a", 1);
    g.share("group/finance", &a).await.unwrap();
    assert_eq!(
        iam.attached_to_grantee(&group("finance")),
        vec!["arn:aws:iam::123456789012:policy/sealfs/group/finance/sealfs-group-finance-1"]
    );
    assert_eq!(g.grantees(&a).await.unwrap(), vec!["group/finance"]);
    // alice is also in a group outside /sealfs/, whose policies she may
    // not even list: it is not asked about.
    iam.add_group("everyone", "/", &["alice", "carol"]);
    let member = Grants::new(iam.clone(), GrantSettings::default());
    for (who, sees) in [("bob", true), ("alice", true), ("carol", false)] {
        iam.set_caller(who);
        let listed = member.shared_with_me().await.unwrap();
        assert_eq!(!listed.is_empty(), sees, "{who}: {listed:?}");
    }
    iam.set_caller("owner");
    // `sealfs shares` shows the group as it is written.
    let shown: Vec<String> = g
        .grants_of(&a)
        .await
        .unwrap()
        .into_iter()
        .map(|(who, until)| grantee::Request::show(&who, until))
        .collect();
    assert_eq!(shown, vec!["group/finance"]);
    assert_eq!(g.unshare_all(&a).await.unwrap(), vec!["group/finance"]);
    assert!(iam.attached_to_grantee(&group("finance")).is_empty());
}

#[tokio::test]
async fn unfit_groups_are_refused_with_the_reason() {
    let (iam, g) = account();
    let a = file("a", 1);
    // Not at /sealfs/: the owner policy cannot attach to it anyway.
    iam.add_group("everyone", "/", &["alice"]);
    let err = g.share("group/everyone", &a).await.unwrap_err();
    assert_eq!(err.errno(), libc::EPERM);
    assert!(err.to_string().contains("IAM path /sealfs/"), "{err}");
    // A member without the boundary would get whatever the policy says.
    iam.clear_boundary("bob");
    let err = g.share("group/finance", &a).await.unwrap_err();
    assert_eq!(err.errno(), libc::EPERM);
    assert!(err.to_string().contains(": bob"), "{err}");
    // The sharer in the group: a grant on itself.
    iam.add_group("mine", "/sealfs/", &["owner", "alice"]);
    let err = g.share("group/mine", &a).await.unwrap_err();
    assert_eq!(err.errno(), libc::EPERM);
    assert!(err.to_string().contains("owner, who is sharing"), "{err}");
    for name in ["everyone", "finance", "mine"] {
        assert!(iam.attached_to_grantee(&group(name)).is_empty(), "{name}");
    }
    assert!(iam.policies().is_empty(), "nothing was written");
}

#[tokio::test]
async fn a_groups_limit_is_ten_whatever_the_user_quota() {
    let iam = Arc::new(FakeIam::new("owner", &["alice"]));
    iam.add_group("finance", "/sealfs/", &["alice"]);
    for n in 0..9 {
        iam.attach_foreign_to(&group("finance"), &format!("other-{n}"));
    }
    let g = Grants::new(
        iam.clone(),
        GrantSettings {
            attached_policy_limit: 20,
            ..GrantSettings::default()
        },
    );
    let (_, err) = share_until_full(&g, "group/finance").await;
    assert_eq!(err.errno(), libc::ENOSPC);
    let text = err.to_string();
    assert!(
        text.contains("10 managed policies IAM allows per group"),
        "{text}"
    );
    assert!(text.contains("cannot be raised"), "{text}");
    assert_eq!(iam.attached_to_grantee(&group("finance")).len(), 10);
}

#[tokio::test]
async fn users_roles_and_groups_of_one_name_never_mix() {
    let iam = Arc::new(FakeIam::new("owner", &["x", "role"]));
    iam.add_role("x");
    iam.add_group("x", "/sealfs/", &[]);
    let g = Grants::new(iam.clone(), GrantSettings::default());
    let (a, b, c, d) = (file("a", 1), file("b", 2), file("c", 3), file("d", 4));
    g.share("x", &a).await.unwrap();
    g.share("role/x", &b).await.unwrap();
    g.share("group/x", &c).await.unwrap();
    // A user named "role": its path /sealfs/role/ is a prefix of every role's.
    g.share("role", &d).await.unwrap();
    assert_eq!(g.grantees(&a).await.unwrap(), vec!["x"]);
    assert_eq!(g.grantees(&b).await.unwrap(), vec!["role/x"]);
    assert_eq!(g.grantees(&c).await.unwrap(), vec!["group/x"]);
    assert_eq!(g.grantees(&d).await.unwrap(), vec!["role"]);
    g.unshare("role", &d).await.unwrap();
    assert_eq!(g.grantees(&b).await.unwrap(), vec!["role/x"], "untouched");
    g.unshare("role/x", &b).await.unwrap();
    assert_eq!(g.grantees(&a).await.unwrap(), vec!["x"]);
    assert_eq!(g.grantees(&c).await.unwrap(), vec!["group/x"]);
    // The role's session sees its own grants only, not the user x's.
    g.share("role/x", &b).await.unwrap();
    iam.assume_role("x");
    let keys = shared_keys(&g).await;
    assert_eq!(keys, vec!["vol/b"]);
}
