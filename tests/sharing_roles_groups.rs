//! Sharing with IAM roles and groups end to end: real mounts, the real
//! binary, moto with IAM enforcement on. moto evaluates a role session's
//! requests against the role's policies and a user's against its groups'
//! too, so a role session and a group member read what was shared with the
//! role or group by real S3 permission, and are denied the rest.

mod common;

use common::mounted::Mounted;
use common::*;
use serde_json::json;
use std::process::Output;

/// What `sealfs policy grantee` gives, as moto can evaluate it.
fn reader_policy() -> serde_json::Value {
    for_moto(json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": [
            "iam:ListAttachedUserPolicies", "iam:ListGroupsForUser",
            "iam:ListAttachedRolePolicies", "iam:ListAttachedGroupPolicies"
        ], "Resource": "x"},
        {"Effect": "Allow", "Action": ["iam:GetPolicy", "iam:GetPolicyVersion"], "Resource": "x"},
    ]}))
}

/// `sealfs get URL -` as `who` (a user or a role session).
fn get_as(m: &Mounted, who: &str, key: &str) -> Output {
    run(m
        .stack
        .sealfs(who, &m.local(&format!("config-{who}")))
        .args(["get", &format!("{}/{key}", m.url()), "-"]))
}

/// A group at IAM path `path` with `members`.
async fn new_group(stack: &Stack, prefix: &str, path: &str, members: &[&str]) -> String {
    let iam = stack.iam("admin");
    let name = format!("{prefix}-{:08x}", rand::random::<u32>());
    iam.create_group()
        .group_name(&name)
        .path(path)
        .send()
        .await
        .unwrap();
    for m in members {
        iam.add_user_to_group()
            .group_name(&name)
            .user_name(*m)
            .send()
            .await
            .unwrap();
    }
    name
}

#[tokio::test]
async fn a_role_session_reads_what_was_shared_with_the_role_and_nothing_else() {
    let m = Mounted::new("share-role").mount();
    let (role, session) = m.stack.new_role_session("rr", &reader_policy()).await;
    m.sh("echo 'for the role' > $M/f; echo private > $M/g");
    m.sh(&format!("setfattr -n user.share -v role/{role} $M/f"));
    assert_eq!(
        m.sh("getfattr -n user.share --only-values $M/f"),
        format!("role/{role}")
    );
    let got = get_as(&m, &session, "f");
    assert_eq!(text(&got.stdout), "for the role\n", "{}", stderr(&got));
    let denied = get_as(&m, &session, "g");
    assert!(!denied.status.success(), "the neighbour is not shared");
    let listed = text(&ok(m.stack.sealfs(&session, &m.local("cfg-s")).arg("shared")).stdout);
    assert!(listed.contains(&format!("{}/f", m.prefix)), "{listed}");
    assert!(!listed.contains(&format!("{}/g", m.prefix)), "{listed}");
    // The grant lives in the role's own policy, attached to the role.
    let attached = m
        .stack
        .iam("admin")
        .list_attached_role_policies()
        .role_name(&role)
        .send()
        .await
        .unwrap();
    let arns: Vec<&str> = attached
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn())
        .collect();
    assert_eq!(arns.len(), 1);
    assert!(
        arns[0].contains(&format!(":policy/sealfs/role/{role}/sealfs-role-{role}-1")),
        "{arns:?}"
    );
    // Unshared: the session reads it no more.
    m.sh(&format!("setfattr -n user.unshare -v role/{role} $M/f"));
    assert!(!get_as(&m, &session, "f").status.success());
    m.finish().await;
}

#[tokio::test]
async fn a_group_member_reads_what_was_shared_with_the_group() {
    let m = Mounted::new("share-group").mount();
    let member = m.stack.new_user("gm", Some(&reader_policy())).await;
    let outsider = m.stack.new_user("go", Some(&reader_policy())).await;
    let group = new_group(&m.stack, "fin", "/sealfs/", &[&member]).await;
    m.sh("echo 'for the group' > $M/f; echo private > $M/g");
    // Through the CLI, with an end.
    ok(m.sealfs()
        .arg("share")
        .arg(m.mnt().join("f"))
        .arg(format!("group/{group}"))
        .args(["--for", "7d"]));
    let shown = text(&ok(m.sealfs().arg("shares").arg(m.mnt().join("f"))).stdout);
    assert!(
        shown.starts_with(&format!("group/{group};until=")),
        "{shown}"
    );
    let got = get_as(&m, &member, "f");
    assert_eq!(text(&got.stdout), "for the group\n", "{}", stderr(&got));
    assert!(!get_as(&m, &member, "g").status.success());
    assert!(!get_as(&m, &outsider, "f").status.success());
    // Revoking every grant of the file removes the group's.
    m.sh("setfattr -x user.share $M/f");
    assert!(!get_as(&m, &member, "f").status.success());
    m.finish().await;
}

#[tokio::test]
async fn unfit_groups_and_full_ones_fail_clearly() {
    let m = Mounted::new("share-group-bad").mount();
    let member = m.stack.new_user("gb", Some(&reader_policy())).await;
    m.sh("echo x > $M/f");
    // Not at /sealfs/: EPERM, with the reason in the log.
    let loose = new_group(&m.stack, "loose", "/", &[&member]).await;
    let out = m.sh_any(&format!("setfattr -n user.share -v group/{loose} $M/f"));
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        stderr(&out)
    );
    // The owner in the group: a grant on itself.
    let mine = new_group(&m.stack, "mine", "/sealfs/", &[&member, &m.owner]).await;
    let out = m.sh_any(&format!("setfattr -n user.share -v group/{mine} $M/f"));
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        stderr(&out)
    );
    // A group with IAM's 10 managed policies attached already: ENOSPC.
    let full = new_group(&m.stack, "full", "/sealfs/", &[&member]).await;
    let iam = m.stack.iam("admin");
    for n in 0..10 {
        let p = iam
            .create_policy()
            .policy_name(format!("{full}-other-{n}"))
            .policy_document(
                json!({"Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"}
                ]})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        iam.attach_group_policy()
            .group_name(&full)
            .policy_arn(p.policy().unwrap().arn().unwrap())
            .send()
            .await
            .unwrap();
    }
    let out = m.sh_any(&format!("setfattr -n user.share -v group/{full} $M/f"));
    assert!(
        stderr(&out).contains("No space left on device"),
        "{}",
        stderr(&out)
    );
    let log = std::fs::read_to_string(m.local("sealfs.log")).unwrap();
    assert!(
        log.contains("only groups at the IAM path /sealfs/"),
        "{log}"
    );
    assert!(log.contains("who is sharing, is a member of it"), "{log}");
    assert!(log.contains("per group attached"), "{log}");
    assert!(log.contains("cannot be raised"), "{log}");
    // Nothing was granted to any of them.
    assert!(m.sh_any("getfattr -n user.share $M/f").status.code() != Some(0));
    m.finish().await;
}
