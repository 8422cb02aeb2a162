//! Per-file sharing end to end: real mounts, the real binary, moto with IAM
//! enforcement on. Every test makes its own IAM users, so tests never share
//! grants.
//!
//! moto enforces an identity policy's action and S3 object ARN, so these
//! tests prove the S3 gate by real denials. It checks KMS by action name
//! only and ignores conditions, so the kms:Decrypt condition is proven by
//! asserting the policy documents themselves.

mod common;

use common::mounted::Mounted;
use common::*;
use serde_json::{json, Value};
use std::process::Output;

fn grantee_policy() -> Value {
    for_moto(json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iam:ListAttachedUserPolicies", "Resource": "x"},
        {"Effect": "Allow", "Action": ["iam:GetPolicy", "iam:GetPolicyVersion"], "Resource": "x"},
    ]}))
}

/// `sealfs get URL -` as `user`.
fn get_as(m: &Mounted, user: &str, key: &str) -> Output {
    run(m
        .stack
        .sealfs(user, &m.tmp.path().join(format!("config-{user}")))
        .args([
            "get",
            &format!("s3://{}/{}/{key}", m.stack.bucket(), m.prefix),
            "-",
        ]))
}

/// The object's file id, from its metadata.
async fn file_id(m: &Mounted, key: &str) -> String {
    m.object(key).await.1["sealfs-fid"].clone()
}

/// All object ARNs and all KMS-condition file ids across the grantee's policies.
async fn granted(stack: &Stack, grantee: &str) -> (Vec<String>, Vec<String>) {
    let mut arns = Vec::new();
    let mut ids = Vec::new();
    for (_, doc, _) in grant_docs(stack, grantee).await {
        let v: Value = serde_json::from_str(&doc.render()).unwrap();
        for st in v["Statement"].as_array().unwrap() {
            match st["Action"].as_str().unwrap() {
                "s3:GetObject" => arns.extend(
                    st["Resource"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap().to_string()),
                ),
                "kms:Decrypt" => {
                    // Named, never "*": the key a grantee pins the file to.
                    assert_eq!(st["Resource"], stack.kms_key());
                    ids.extend(
                        st["Condition"]["StringEquals"]["kms:EncryptionContext:sealfs:file"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|a| a.as_str().unwrap().to_string()),
                    )
                }
                other => panic!("unexpected action {other} in a grant policy"),
            }
        }
    }
    arns.sort();
    ids.sort();
    (arns, ids)
}

#[tokio::test]
async fn share_rename_unshare_delete() {
    let m = Mounted::new("share-flow").mount();
    let alice = m.stack.new_user("alice", Some(&grantee_policy())).await;
    m.sh("echo 'for alice' > $M/a.txt; echo 'not for alice' > $M/b.txt; mkdir $M/d");
    m.sh(&format!("setfattr -n user.share -v {alice} $M/a.txt"));
    // Idempotent.
    m.sh(&format!("setfattr -n user.share -v {alice} $M/a.txt"));
    assert_eq!(m.sh("getfattr -n user.share --only-values $M/a.txt"), alice);
    // She reads what was shared and nothing else.
    let got = get_as(&m, &alice, "a.txt");
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert_eq!(text(&got.stdout), "for alice\n");
    let denied = get_as(&m, &alice, "b.txt");
    assert!(!denied.status.success());
    assert!(
        text(&denied.stderr).contains("denied"),
        "{}",
        text(&denied.stderr)
    );
    // `sealfs shared` lists it, with its size and who shared it.
    let shared = ok(m
        .stack
        .sealfs(&alice, &m.local("config-alice"))
        .arg("shared"));
    let listing = text(&shared.stdout);
    assert!(
        listing.contains(&format!("s3://{}/{}/a.txt", m.stack.bucket(), m.prefix)),
        "{listing}"
    );
    assert!(listing.contains("10  admin"), "{listing}");
    assert!(!listing.contains("b.txt"));
    // The policy grants exactly a.txt's object and file id.
    let (arns, ids) = granted(&m.stack, &alice).await;
    assert_eq!(
        arns,
        vec![format!(
            "arn:aws:s3:::{}/{}/a.txt",
            m.stack.bucket(),
            m.prefix
        )]
    );
    assert_eq!(ids, vec![file_id(&m, "a.txt").await]);

    // Rename: the grant follows the file.
    m.sh("mv $M/a.txt $M/d/a2.txt");
    let got = get_as(&m, &alice, "d/a2.txt");
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert_eq!(text(&got.stdout), "for alice\n");
    let (arns, _) = granted(&m.stack, &alice).await;
    assert_eq!(
        arns,
        vec![format!(
            "arn:aws:s3:::{}/{}/d/a2.txt",
            m.stack.bucket(),
            m.prefix
        )]
    );
    // Renaming the directory above it moves the grant too.
    m.sh("mv $M/d $M/e && mv $M/e $M/d");
    let got = get_as(&m, &alice, "d/a2.txt");
    assert_eq!(text(&got.stdout), "for alice\n", "{}", text(&got.stderr));
    assert_eq!(granted(&m.stack, &alice).await.0.len(), 1);
    // Names with spaces are shared like any other.
    m.sh(&format!(
        "echo spaced > \"$M/my notes.txt\"; setfattr -n user.share -v {alice} \"$M/my notes.txt\""
    ));
    let got = get_as(&m, &alice, "my notes.txt");
    assert_eq!(text(&got.stdout), "spaced\n", "{}", text(&got.stderr));
    m.sh("rm \"$M/my notes.txt\"");
    // A new file at the old name is not hers.
    m.sh("echo 'new a' > $M/a.txt");
    assert!(!get_as(&m, &alice, "a.txt").status.success());

    // Unshare: denied again, and nothing listed.
    m.sh(&format!("setfattr -n user.unshare -v {alice} $M/d/a2.txt"));
    let after = get_as(&m, &alice, "d/a2.txt");
    assert!(!after.status.success());
    assert!(text(&after.stderr).contains("denied"));
    let none = m.sh_any("getfattr -n user.share --only-values $M/d/a2.txt");
    assert!(!none.status.success());
    assert!(
        text(&none.stderr).contains("No such attribute"),
        "{}",
        text(&none.stderr)
    );
    assert!(
        grant_docs(&m.stack, &alice).await.is_empty(),
        "empty policies are deleted"
    );

    // Delete: the grant goes with the file.
    m.sh(&format!("setfattr -n user.share -v {alice} $M/d/a2.txt"));
    assert_eq!(grant_docs(&m.stack, &alice).await.len(), 1);
    m.sh("rm $M/d/a2.txt");
    assert!(grant_docs(&m.stack, &alice).await.is_empty());
    m.finish().await;
}

#[tokio::test]
async fn grantees_survive_remount_and_revoke_all() {
    let mut m = Mounted::new("share-remount").mount();
    let a = m.stack.new_user("ga", Some(&grantee_policy())).await;
    let b = m.stack.new_user("gb", Some(&grantee_policy())).await;
    m.sh("echo shared > $M/f");
    m.sh(&format!("setfattr -n user.share -v {a},{b} $M/f"));
    // Not listed: cp -a and rsync -X must never copy a grant.
    assert!(!m.sh("getfattr -d $M/f").contains("share"));
    m.remount();
    let mut want = [a.clone(), b.clone()];
    want.sort();
    assert_eq!(
        m.sh("getfattr -n user.share --only-values $M/f"),
        want.join(",")
    );
    // The size-0 probe agrees with the value.
    let probe = m.sh(
        "python3 -c \"import os,sys; print(len(os.getxattr(sys.argv[1], 'user.share')))\" $M/f",
    );
    assert_eq!(probe.trim(), want.join(",").len().to_string());
    // The CLI sees the same through the mount and through S3.
    let through_mount = ok(m.sealfs().arg("shares").arg(m.mnt().join("f")));
    assert_eq!(text(&through_mount.stdout).trim(), want.join("\n"));
    let through_s3 = ok(m.sealfs().args(["shares", &format!("{}/f", m.url())]));
    assert_eq!(text(&through_s3.stdout), text(&through_mount.stdout));
    // Revoke one with the CLI, then everyone with setfattr -x.
    ok(m.sealfs().arg("unshare").arg(m.mnt().join("f")).arg(&a));
    assert_eq!(
        m.sh("getfattr -n user.share --only-values $M/f"),
        b.as_str()
    );
    m.sh("setfattr -x user.share $M/f");
    assert!(!m.sh_any("getfattr -n user.share $M/f").status.success());
    assert!(grant_docs(&m.stack, &a).await.is_empty());
    assert!(grant_docs(&m.stack, &b).await.is_empty());
    assert!(!get_as(&m, &a, "f").status.success());
    m.finish().await;
}

/// Sharing a file that is open and changed, under --write-back: what is
/// shared is what the user sees (the spooled upload lands first, then the
/// key is wrapped for the grantee), and a later version keeps the grant.
#[tokio::test]
async fn sharing_an_open_changed_file_under_write_back_shares_what_the_user_sees() {
    let mut m = Mounted::new("share-wb");
    m.mount_args = vec!["--write-back".into()];
    let m = m.mount();
    let g = m.stack.new_user("gw", Some(&grantee_policy())).await;
    m.sh("echo first > $M/f");
    m.sh(&format!(
        "python3 -c \"import os,sys; fd=os.open(sys.argv[1], os.O_WRONLY|os.O_TRUNC); \
         os.write(fd, b'second\\n'); os.setxattr(sys.argv[1], 'user.share', sys.argv[2].encode()); \
         os.close(fd)\" $M/f {g}"
    ));
    let got = get_as(&m, &g, "f");
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert_eq!(text(&got.stdout), "second\n");
    // No conflict copy: the spooled upload was not overtaken by the share.
    assert_eq!(m.sh("ls $M"), "f\n");
    // A later version keeps the file's key and its wrapped form.
    m.sh("echo third > $M/f && sync");
    m.sh("python3 -c \"import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)\" $M/f");
    let got = get_as(&m, &g, "f");
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert_eq!(text(&got.stdout), "third\n");
    m.finish().await;
}

#[tokio::test]
async fn bad_shares_fail_clearly_and_change_nothing() {
    let m = Mounted::new("share-errors").mount();
    let a = m.stack.new_user("gx", Some(&grantee_policy())).await;
    m.sh("echo data > $M/f; mkdir $M/d");
    let out = m.sh_any("setfattr -n user.share -v no-such-user-7f3a $M/f");
    assert!(
        text(&out.stderr).contains("Invalid argument"),
        "{}",
        text(&out.stderr)
    );
    let log = std::fs::read_to_string(m.local("sealfs.log")).unwrap();
    assert!(log.contains("no such IAM user"), "the log names the cause");
    assert!(grant_docs(&m.stack, "no-such-user-7f3a").await.is_empty());
    let out = m.sh_any(&format!("setfattr -n user.share -v {a} $M/d"));
    assert!(
        text(&out.stderr).contains("Is a directory"),
        "{}",
        text(&out.stderr)
    );
    // The CLI says the same, through S3 and through the mount.
    let out = run(m
        .sealfs()
        .args(["share", &format!("{}/f", m.url()), "no-such-user-7f3a"]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no such IAM user"),
        "{}",
        text(&out.stderr)
    );
    let out = run(m
        .sealfs()
        .arg("share")
        .arg(m.mnt().join("f"))
        .arg("no-such-user-7f3a"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Invalid argument"),
        "{}",
        text(&out.stderr)
    );
    // An ARN that names another account's user is refused too.
    let out = m.sh_any(&format!(
        "setfattr -n user.share -v arn:aws:iam::999999999999:user/{a} $M/f"
    ));
    assert!(
        text(&out.stderr).contains("Invalid argument"),
        "{}",
        text(&out.stderr)
    );
    // ... while the right ARN works.
    let account = m.stack.var("SEALFS_TEST_ACCOUNT").to_string();
    m.sh(&format!(
        "setfattr -n user.share -v arn:aws:iam::{account}:user/{a} $M/f"
    ));
    assert_eq!(m.sh("getfattr -n user.share --only-values $M/f"), a);
    m.finish().await;
}

/// A share with an end: the end is IAM's `aws:CurrentTime` condition on
/// both statements (AWS enforces it; moto ignores conditions, so the text
/// is what is asserted), getfattr, `sealfs shares` and `sealfs shared`
/// show it, an ended statement is no longer shown and is pruned when the
/// grantee's policies are next written, and ends in the past are refused.
#[tokio::test]
async fn expiring_shares_carry_the_time_condition_and_are_pruned() {
    let m = Mounted::new("share-expiry").mount();
    let alice = m.stack.new_user("ge", Some(&grantee_policy())).await;
    m.sh("echo until > $M/f; echo week > $M/g; echo later > $M/h");
    m.sh(&format!(
        "setfattr -n user.share -v '{alice};until=2099-01-31' $M/f"
    ));
    assert_eq!(
        m.sh("getfattr -n user.share --only-values $M/f"),
        format!("{alice};until=2099-02-01T00:00:00Z")
    );
    let docs = grant_docs(&m.stack, &alice).await;
    let v: Value = serde_json::from_str(&docs[0].1.render()).unwrap();
    let statements = v["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 2);
    for st in statements {
        assert_eq!(
            st["Condition"]["DateLessThan"]["aws:CurrentTime"], "2099-02-01T00:00:00Z",
            "{st}"
        );
    }
    let got = get_as(&m, &alice, "f");
    assert!(got.status.success(), "{}", text(&got.stderr));
    // The CLI: --for through the mount; shares and shared show the end.
    ok(m.sealfs()
        .arg("share")
        .arg(m.mnt().join("g"))
        .arg(&alice)
        .args(["--for", "7d"]));
    let listed = text(&ok(m.sealfs().arg("shares").arg(m.mnt().join("g"))).stdout);
    assert!(listed.starts_with(&format!("{alice};until=")), "{listed}");
    let shared = text(
        &ok(m
            .stack
            .sealfs(&alice, &m.local("config-alice"))
            .arg("shared"))
        .stdout,
    );
    assert!(shared.contains("UNTIL"), "{shared}");
    assert!(shared.contains("2099-02-01T00:00:00Z"), "{shared}");
    // An end in the past is refused, and grants nothing.
    let out = m.sh_any(&format!(
        "setfattr -n user.share -v '{alice};until=2001-01-01' $M/h"
    ));
    assert!(
        text(&out.stderr).contains("Invalid argument"),
        "{}",
        text(&out.stderr)
    );
    let out = run(m
        .sealfs()
        .arg("share")
        .arg(m.mnt().join("h"))
        .arg(&alice)
        .args(["--until", "2001-01-01"]));
    assert!(stderr(&out).contains("already passed"), "{}", stderr(&out));
    assert!(!m.sh_any("getfattr -n user.share $M/h").status.success());
    // A statement that has ended (written as it would be by a share made
    // long ago) is shown to no one and goes at the next write.
    let iam = m.stack.iam("admin");
    let (name, mut doc, _) = grant_docs(&m.stack, &alice).await.remove(0);
    let h = sealfs::grants::SharedFile {
        bucket: m.stack.bucket().to_string(),
        key: format!("{}/h", m.prefix),
        file_id: file_id(&m, "h").await,
        key_arn: m.stack.kms_key().to_string(),
    };
    doc.add_until("admin", &h, sealfs::grants::expiry::Until::from_unix(1_000));
    let arn = iam
        .list_policies()
        .path_prefix(format!("/sealfs/{alice}/"))
        .send()
        .await
        .unwrap()
        .policies()
        .iter()
        .find(|p| p.policy_name() == Some(name.as_str()))
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    iam.create_policy_version()
        .policy_arn(&arn)
        .policy_document(doc.render())
        .set_as_default(true)
        .send()
        .await
        .unwrap();
    assert!(grant_docs(&m.stack, &alice).await[0].1.grants(&h));
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    assert!(!m.sh_any("getfattr -n user.share $M/h").status.success());
    m.sh("echo more > $M/i");
    m.sh(&format!("setfattr -n user.share -v {alice} $M/i"));
    let after = grant_docs(&m.stack, &alice).await;
    assert!(
        after.iter().all(|(_, d, _)| !d.grants(&h)),
        "pruned at the next write"
    );
    assert!(after
        .iter()
        .any(|(_, d, _)| d.listed().iter().any(|l| l.key.ends_with("/f"))));
    m.finish().await;
}

#[tokio::test]
async fn owner_without_iam_rights_gets_eacces() {
    let stack = Stack::get();
    // Everything an owner needs for the volume, nothing for IAM.
    let storage_only = for_moto(json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*"]},
        {"Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"], "Resource": "x"},
    ]}));
    let owner = stack.new_user("noiam", Some(&storage_only)).await;
    let grantee = stack.new_user("gy", Some(&grantee_policy())).await;
    let mut m = Mounted::new("share-noiam");
    m.owner = owner;
    let m = m.mount();
    m.sh("echo untouched > $M/f");
    let before = file_id(&m, "f").await;
    let out = m.sh_any(&format!("setfattr -n user.share -v {grantee} $M/f"));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(m.sh("cat $M/f"), "untouched\n");
    assert_eq!(file_id(&m, "f").await, before);
    assert!(grant_docs(&m.stack, &grantee).await.is_empty());
    // Renames and deletes still work; the mount says once that grants cannot follow.
    m.sh("mv $M/f $M/g && rm $M/g");
    m.finish().await;
}

/// The unwrapped data key of an object, as someone allowed kms:Decrypt gets it.
async fn data_key(m: &Mounted, key: &str) -> sealfs::crypto::DataKey {
    use base64::Engine;
    let (_, meta) = m.object(key).await;
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(&meta["sealfs-dk"])
        .unwrap();
    let out = m
        .stack
        .kms("admin")
        .decrypt()
        .key_id(&meta["sealfs-kid"])
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wrapped))
        .encryption_context("sealfs:v", "1")
        .encryption_context("sealfs:file", &meta["sealfs-fid"])
        .send()
        .await
        .unwrap();
    sealfs::crypto::DataKey::from_slice(out.plaintext().unwrap().as_ref()).unwrap()
}

/// Opens raw object bytes with a given data key and file id.
fn open_with(dk: &sealfs::crypto::DataKey, fid: &str, object: &[u8]) -> Result<Vec<u8>, String> {
    let fid = sealfs::crypto::FileId::from_hex(fid).unwrap();
    let header = &object[..sealfs::crypto::HEADER_LEN.min(object.len())];
    sealfs::crypto::Opener::new(dk, header, &fid)
        .and_then(|o| o.open(object))
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn one_files_key_opens_no_other_file_and_rekey_retires_it() {
    let m = Mounted::new("share-keys").mount();
    let alice = m.stack.new_user("gk", Some(&grantee_policy())).await;
    m.sh("echo 'file A' > $M/a; echo 'file B' > $M/b");
    m.sh(&format!("setfattr -n user.share -v {alice} $M/a"));
    let dk_a = data_key(&m, "a").await;
    let (fid_a, fid_b) = (file_id(&m, "a").await, file_id(&m, "b").await);
    let (obj_a, obj_b) = (m.object("a").await.0, m.object("b").await.0);
    assert_eq!(open_with(&dk_a, &fid_a, &obj_a).unwrap(), b"file A\n");
    // A's key, with either file id, opens nothing of B.
    assert!(open_with(&dk_a, &fid_b, &obj_b).is_err());
    assert!(open_with(&dk_a, &fid_a, &obj_b).is_err());
    // A and B derive from one branch key; sharing A wrapped A's key alone
    // (sealfs-dk), B has none, and alice cannot fetch the branch key.
    let (meta_a, meta_b) = (m.object("a").await.1, m.object("b").await.1);
    assert_eq!(meta_a["sealfs-v"], "2");
    assert_eq!(meta_a["sealfs-branch"], meta_b["sealfs-branch"]);
    assert!(!meta_b.contains_key("sealfs-dk"), "{meta_b:?}");
    let branch = format!("{}/.sealfs/branches/{}", m.prefix, meta_a["sealfs-branch"]);
    assert!(
        !m.object_at(&branch).await.0.is_empty(),
        "the branch key is stored"
    );
    let denied = m
        .stack
        .s3(&alice)
        .get_object()
        .bucket(m.stack.bucket())
        .key(&branch)
        .send()
        .await;
    assert!(denied.is_err(), "a grantee fetched a branch key");
    let got = get_as(&m, &alice, "b");
    assert!(!got.status.success(), "alice read an unshared file");

    // Re-key A: fresh data key and file id; the grant follows.
    m.sh("chmod 600 $M/a; setfattr -n user.note -v kept $M/a");
    let out = ok(m.sealfs().arg("rekey").arg(m.mnt().join("a")));
    assert!(text(&out.stderr).contains(&alice), "{}", text(&out.stderr));
    let new_fid = file_id(&m, "a").await;
    assert_ne!(new_fid, fid_a);
    // A key of its own from KMS, derived from no branch.
    let rekeyed = m.object("a").await.1;
    assert_eq!(rekeyed["sealfs-v"], "1");
    assert!(!rekeyed.contains_key("sealfs-branch"));
    let new_obj = m.object("a").await.0;
    let err = open_with(&dk_a, &new_fid, &new_obj).unwrap_err();
    assert!(err.contains("commitment"), "{err}");
    assert!(open_with(&dk_a, &fid_a, &new_obj).is_err());
    assert_eq!(
        open_with(&data_key(&m, "a").await, &new_fid, &new_obj).unwrap(),
        b"file A\n"
    );
    let (_, ids) = granted(&m.stack, &alice).await;
    assert_eq!(ids, vec![new_fid]);
    let got = get_as(&m, &alice, "a");
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert_eq!(text(&got.stdout), "file A\n");
    // Content and attributes (mode, xattrs) survive the re-key.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(m.sh("cat $M/a"), "file A\n");
    assert_eq!(m.sh("stat -c %a $M/a"), "600\n");
    assert_eq!(m.sh("getfattr -n user.note --only-values $M/a"), "kept");
    m.finish().await;
}

#[tokio::test]
async fn three_hundred_grants_spill_across_policies() {
    let m = Mounted::new("share-many").mount();
    let g = m.stack.new_user("gm", Some(&grantee_policy())).await;
    m.sh("mkdir $M/s; for i in $(seq -w 1 300); do echo \"file $i\" > $M/s/f$i; done");
    m.sh(&format!(
        "for f in $M/s/*; do setfattr -n user.share -v {g} $f; done"
    ));
    let docs = grant_docs(&m.stack, &g).await;
    assert!(
        docs.len() >= 2,
        "300 grants fit in {} policies?",
        docs.len()
    );
    assert!(
        docs.iter().all(|(_, _, size)| *size <= 6144),
        "{:?}",
        docs.iter().map(|d| d.2).collect::<Vec<_>>()
    );
    let (arns, ids) = granted(&m.stack, &g).await;
    assert_eq!(arns.len(), 300);
    let mut want = Vec::new();
    for i in 1..=300 {
        want.push(file_id(&m, &format!("s/f{i:03}")).await);
    }
    want.sort();
    assert_eq!(
        ids, want,
        "the KMS condition names exactly the shared file ids"
    );
    // Every one of them is readable with her own credentials...
    let s3 = m.stack.s3(&g);
    for i in 1..=300 {
        let got = s3
            .get_object()
            .bucket(m.stack.bucket())
            .key(format!("{}/s/f{i:03}", m.prefix))
            .send()
            .await;
        assert!(got.is_ok(), "f{i:03} not readable by the grantee");
    }
    // ... and decrypts, from the first policy and the last.
    for i in [1, 150, 300] {
        let got = get_as(&m, &g, &format!("s/f{i:03}"));
        assert!(got.status.success(), "{}", text(&got.stderr));
        assert_eq!(text(&got.stdout), format!("file {i:03}\n"));
    }
    m.finish().await;
}

#[tokio::test]
async fn exhausted_grantee_gets_enospc() {
    let mut m = Mounted::new("share-full");
    m.mount_args = vec!["--iam-policy-limit".into(), "1".into()];
    let m = m.mount();
    let g = m.stack.new_user("gf", Some(&grantee_policy())).await;
    m.sh("mkdir $M/s; for i in $(seq -w 1 90); do echo $i > $M/s/f$i; done");
    let out = m.sh_any(
                &format!("n=0; for f in $M/s/*; do setfattr -n user.share -v {g} $f || break; n=$((n+1)); done; echo $n"),
    );
    let shared: usize = text(&out.stdout).trim().parse().unwrap();
    assert!(
        (20..90).contains(&shared),
        "shared {shared} before running out"
    );
    assert!(
        text(&out.stderr).contains("No space left on device"),
        "{}",
        text(&out.stderr)
    );
    let log = std::fs::read_to_string(m.local("sealfs.log")).unwrap();
    assert!(log.contains("IAM limit reached"), "the log names the limit");
    assert_eq!(grant_docs(&m.stack, &g).await.len(), 1);
    // What was granted before stays granted.
    let got = get_as(&m, &g, "s/f01");
    assert!(got.status.success(), "{}", text(&got.stderr));
    m.finish().await;
}

#[tokio::test]
async fn printed_policies_are_enough_for_owner_and_grantee() {
    let stack = Stack::get();
    let mut m = Mounted::new("share-policy");
    let owner_doc: Value =
        serde_json::from_slice(&ok(m.sealfs().args(["policy", "owner", &m.url()])).stdout).unwrap();
    let grantee_doc: Value =
        serde_json::from_slice(&ok(m.sealfs().args(["policy", "grantee", &m.url()])).stdout)
            .unwrap();
    let owner = stack.new_user("po", Some(&for_moto(owner_doc))).await;
    let grantee = stack.new_user("pg", Some(&for_moto(grantee_doc))).await;
    m.owner = owner.clone();
    let m = m.mount();
    m.sh("echo 'by the book' > $M/f; mkdir $M/d; mv $M/f $M/d/f; cp $M/d/f $M/g; rm $M/g");
    m.sh(&format!("setfattr -n user.share -v {grantee} $M/d/f"));
    let listing = text(&ok(stack.sealfs(&grantee, &m.local("cfg-g")).arg("shared")).stdout);
    assert!(listing.contains(&format!("{owner}  ")), "{listing}");
    let got = get_as(&m, &grantee, "d/f");
    assert_eq!(text(&got.stdout), "by the book\n", "{}", text(&got.stderr));
    m.finish().await;
}
