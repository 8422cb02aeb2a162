//! The attacker suite: someone who can write the bucket (an IAM user with
//! S3 rights on it and nothing else: no KMS, no IAM) against real mounts and
//! the real CLI, with moto enforcing IAM. Every class must end in a refusal,
//! EIO on that object only, or a fresh key; never in a grant, a readable
//! secret or a dead mount.

mod common;

use common::mounted::Mounted;
use common::*;
use serde_json::json;
use std::collections::HashMap;
use std::process::Command;

/// An IAM user who can do anything to the bucket's objects and nothing else.
async fn attacker(stack: &Stack) -> String {
    let bucket = stack.bucket();
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": [
            format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")
        ]},
    ]});
    stack.new_user("mallory", Some(&policy)).await
}

fn grantee_policy() -> serde_json::Value {
    json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["iam:ListAttachedUserPolicies", "iam:GetPolicy", "iam:GetPolicyVersion"], "Resource": "*"},
    ]})
}

/// Replaces the metadata of `key` as `user` (a metadata-only CopyObject, as
/// the attack needs no byte of the body).
async fn set_metadata(m: &Mounted, user: &str, rel: &str, meta: HashMap<String, String>) {
    let key = format!("{}/{rel}", m.prefix);
    m.stack
        .s3(user)
        .copy_object()
        .bucket(m.stack.bucket())
        .key(&key)
        .copy_source(format!("{}/{key}", m.stack.bucket()))
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .set_metadata(Some(meta))
        .send()
        .await
        .unwrap();
}

/// Writes raw bytes and metadata at `rel` as `user`.
async fn put_raw(m: &Mounted, user: &str, rel: &str, body: Vec<u8>, meta: HashMap<String, String>) {
    m.stack
        .s3(user)
        .put_object()
        .bucket(m.stack.bucket())
        .key(format!("{}/{rel}", m.prefix))
        .set_metadata(Some(meta))
        .body(body.into())
        .send()
        .await
        .unwrap();
}

fn log(m: &Mounted) -> String {
    std::fs::read_to_string(m.local("sealfs.log")).unwrap_or_default()
}

/// The file ids the grantee's grant policies name (admin reads IAM).
async fn granted_ids(stack: &Stack, grantee: &str) -> Vec<String> {
    grant_docs(stack, grantee)
        .await
        .into_iter()
        .flat_map(|(_, doc, _)| doc.by_sharer.into_values())
        .flat_map(|g| g.file_ids)
        .collect()
}

#[tokio::test]
async fn the_attacker_has_s3_and_nothing_else() {
    let m = Mounted::new("atk-rights");
    let mallory = attacker(&m.stack).await;
    // Not KMS: the attacker cannot unwrap a volume's keys or make its own.
    let kms = m.stack.kms(&mallory);
    assert!(kms.list_keys().send().await.is_err());
    assert!(kms.create_key().send().await.is_err());
    // Not IAM.
    assert!(m.stack.iam(&mallory).list_policies().send().await.is_err());
}

/// Points `to` at `from`'s data key: every sealing field but the path
/// binding (the file id, the KMS key, and the wrapped key or the branch).
fn copy_key_fields(from: &HashMap<String, String>, to: &mut HashMap<String, String>) {
    for k in [
        "sealfs-v",
        "sealfs-kid",
        "sealfs-dk",
        "sealfs-branch",
        "sealfs-fid",
    ] {
        match from.get(k) {
            Some(v) => to.insert(k.into(), v.clone()),
            None => to.remove(k),
        };
    }
}

/// Grant hijack: the shared file's metadata names another file's id (and key).
/// Sharing refuses (EIO) and no grant names the other file.
#[tokio::test]
async fn grant_hijack_is_refused() {
    let m = Mounted::new("atk-hijack").mount();
    let mallory = attacker(&m.stack).await;
    let alice = m.stack.new_user("alice", Some(&grantee_policy())).await;
    m.sh("echo public > $M/shared.txt; echo 'the secret' > $M/secret.txt");
    let (_, secret) = m.object("secret.txt").await;
    let (_, mut shared) = m.object("shared.txt").await;
    copy_key_fields(&secret, &mut shared);
    set_metadata(&m, &mallory, "shared.txt", shared).await;
    // Through the mount (a fresh lookup: the TTL is 1 s).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = m.sh_any(&format!("setfattr -n user.share -v {alice} $M/shared.txt"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Input/output error"),
        "{}",
        text(&out.stderr)
    );
    // Through the CLI, by URL.
    let out = run(m
        .sealfs()
        .args(["share", &format!("{}/shared.txt", m.url()), &alice]));
    assert!(!out.status.success(), "{}", text(&out.stderr));
    let ids = granted_ids(&m.stack, &alice).await;
    assert!(
        !ids.contains(&secret["sealfs-fid"]),
        "hijacked grant: {ids:?}"
    );
    // alice reads neither file.
    for f in ["shared.txt", "secret.txt"] {
        let out = run(m.stack.sealfs(&alice, &m.tmp.path().join("alice")).args([
            "get",
            &format!("{}/{f}", m.url()),
            "-",
        ]));
        assert!(!out.status.success());
        assert!(!text(&out.stdout).contains("secret"));
    }
    // The secret is intact and the mount alive.
    assert_eq!(m.sh("cat $M/secret.txt").trim(), "the secret");
    m.finish().await;
}

/// Write-key redirection: the file's metadata names another file's data key.
/// The owner's overwrite is refused (EIO on that file), the CLI's too, and
/// nothing is ever sealed under the redirected key.
#[tokio::test]
async fn write_key_redirection_seals_nothing_under_the_planted_key() {
    let m = Mounted::new("atk-redirect").mount();
    let mallory = attacker(&m.stack).await;
    m.sh("echo one > $M/target; echo 'the secret' > $M/secret");
    let (_, secret) = m.object("secret").await;
    let (_, mut target) = m.object("target").await;
    copy_key_fields(&secret, &mut target);
    set_metadata(&m, &mallory, "target", target).await;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = m.sh_any("echo new > $M/target");
    assert!(
        !out.status.success(),
        "overwrite of a redirected file succeeded"
    );
    std::fs::write(m.local("new"), b"new content").unwrap();
    let out = run(m
        .sealfs()
        .arg("put")
        .arg(m.local("new"))
        .arg(format!("{}/target", m.url())));
    assert!(!out.status.success());
    // Whatever is at target now, it is not sealed under the secret's key.
    let (_, now) = m.object("target").await;
    assert_eq!(
        now["sealfs-fid"], secret["sealfs-fid"],
        "still the attacker's edit"
    );
    // Every other file works; a new file gets a fresh key.
    m.sh("echo fresh > $M/other");
    let (_, other) = m.object("other").await;
    assert_ne!(other["sealfs-fid"], secret["sealfs-fid"]);
    assert_eq!(m.sh("cat $M/secret $M/other").trim(), "the secret\nfresh");
}

/// Content sealed under a second KMS key (one the attacker could control)
/// placed at a file's key: the owner gets EIO, a grantee refuses it (its key
/// comes from the owner's grant, never from the object).
#[tokio::test]
async fn content_under_a_foreign_key_is_refused_by_owner_and_grantee() {
    let mut m = Mounted::new("atk-foreign").mount();
    let mallory = attacker(&m.stack).await;
    let alice = m.stack.new_user("alice", Some(&grantee_policy())).await;
    m.sh("echo 'genuine' > $M/doc.txt");
    m.sh(&format!("setfattr -n user.share -v {alice} $M/doc.txt"));
    // A second volume under a key of its own, with a file planted for the swap.
    let evil = unique("atk-evil");
    let evil_url = format!("s3://{}/{evil}", m.stack.bucket());
    ok(m.sealfs().args(["init", &evil_url, "--create-key"]));
    std::fs::write(m.local("evil"), b"attacker content").unwrap();
    ok(m.sealfs()
        .arg("put")
        .arg(m.local("evil"))
        .arg(format!("{evil_url}/doc.txt")));
    let (body, meta) = m.object_at(&format!("{evil}/doc.txt")).await;
    put_raw(&m, &mallory, "doc.txt", body, meta).await;
    // The grantee: refused, naming the key check, nothing written.
    let out = run(m.stack.sealfs(&alice, &m.tmp.path().join("alice")).args([
        "get",
        &format!("{}/doc.txt", m.url()),
        "-",
    ]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("doc.txt"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("attacker"));
    // The owner: EIO on that file (attributes and key both refuse it).
    m.remount();
    let out = m.sh_any("cat $M/doc.txt");
    assert!(!out.status.success());
    assert!(!text(&out.stdout).contains("attacker"));
    m.sh("echo still > $M/alive && cat $M/alive");
    // `sealfs verify` reports it.
    let out = run(m.sealfs().args(["verify", &m.url()]));
    assert!(!out.status.success());
    assert!(text(&out.stdout).contains("doc.txt") || text(&out.stderr).contains("doc.txt"));
    assert!(log(&m).contains("doc.txt"), "no log line names the file");
}

/// Hostile values in every metadata field, each on its own file: each is EIO
/// (or refused from the listing), every other file reads, the mount lives.
#[tokio::test]
async fn hostile_metadata_costs_one_eio_per_object() {
    let m = Mounted::new("atk-hostile").mount();
    let mallory = attacker(&m.stack).await;
    m.sh("echo good > $M/good");
    let fields = [
        "sealfs-v",
        "sealfs-kid",
        "sealfs-dk",
        "sealfs-fid",
        "sealfs-bind",
        "sealfs-type",
        "sealfs-mode",
        "sealfs-uid",
        "sealfs-gid",
        "sealfs-mtime",
        "sealfs-ctime",
        "sealfs-atime",
        "sealfs-rdev",
        "sealfs-amac",
        "sealfs-xattrs",
        "sealfs-xref",
    ];
    let values = [
        "99999999999999999999.999999999",
        "-18446744073709551616.5",
        "%%%not base64%%%",
        "ff",
        "",
    ];
    let mut bad = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        let name = format!("f{i}");
        m.sh(&format!("echo victim > $M/{name}"));
        let (_, mut meta) = m.object(&name).await;
        meta.insert(field.to_string(), values[i % values.len()].to_string());
        set_metadata(&m, &mallory, &name, meta).await;
        bad.push(name);
    }
    // A directory marker and a huge value too.
    m.sh("mkdir $M/d");
    let (_, mut meta) = m.object("d/").await;
    meta.insert("sealfs-mode".into(), "x".repeat(1500));
    set_metadata(&m, &mallory, "d/", meta).await;
    bad.push("d".into());

    let mut fresh = m.another();
    fresh = fresh.mount();
    let listing = fresh.sh("ls $M");
    assert!(listing.contains("good"), "{listing}");
    for name in &bad {
        let out = fresh.sh_any(&format!("cat $M/{name} || ls $M/{name}"));
        assert!(!out.status.success(), "{name} was served");
        assert!(!text(&out.stdout).contains("victim"), "{name} leaked");
    }
    assert_eq!(fresh.sh("cat $M/good").trim(), "good");
    fresh.sh("echo after > $M/after && cat $M/after");
}

/// Attribute tampering: mode, owner, type and xattrs are authenticated; an
/// edit is EIO, never wider access or another type; xattr values are not in S3.
#[tokio::test]
async fn attributes_are_authenticated_and_xattrs_encrypted() {
    let m = Mounted::new("atk-attrs").mount();
    let mallory = attacker(&m.stack).await;
    m.sh("echo private > $M/p && chmod 600 $M/p && setfattr -n user.origin -v https://secret.example/x $M/p");
    let (_, meta) = m.object("p").await;
    let stored = format!("{meta:?}");
    assert!(!stored.contains("secret.example"), "xattr in S3: {stored}");
    for (field, value) in [
        ("sealfs-mode", "666"),
        ("sealfs-uid", "65534"),
        ("sealfs-type", "l"),
    ] {
        let (_, mut edited) = m.object("p").await;
        edited.insert(field.into(), value.into());
        set_metadata(&m, &mallory, "p", edited).await;
        let mut fresh = m.another().mount();
        let out = fresh.sh_any("stat -c %a $M/p");
        assert!(
            !out.status.success(),
            "{field}: stat gave {}",
            text(&out.stdout)
        );
        // `sealfs verify` reports it too.
        let out = run(m.sealfs().args(["verify", &m.url()]));
        assert!(!out.status.success(), "{field}: verify passed");
        assert!(text(&out.stdout).contains("/p:"), "{}", text(&out.stdout));
        fresh.unmount();
        set_metadata(&m, &mallory, "p", meta.clone()).await;
    }
    // Restored byte for byte: the genuine attributes verify again.
    let fresh = m.another().mount();
    assert_eq!(fresh.sh("stat -c %a $M/p").trim(), "600");
    assert_eq!(
        fresh
            .sh("getfattr --only-values -n user.origin $M/p")
            .trim(),
        "https://secret.example/x"
    );
}

/// A config planted below a volume this machine knows is not trusted on
/// first use: nothing is sealed under the planted key.
#[tokio::test]
async fn planted_configs_are_refused() {
    let m = Mounted::new("atk-config");
    let mallory = attacker(&m.stack).await;
    std::fs::write(m.local("f"), b"data").unwrap();
    ok(m.sealfs()
        .arg("put")
        .arg(m.local("f"))
        .arg(format!("{}/x", m.url())));
    // Another volume's genuine config, planted at a sub-prefix.
    let evil = unique("atk-evilcfg");
    let evil_url = format!("s3://{}/{evil}", m.stack.bucket());
    ok(m.sealfs().args(["init", &evil_url, "--create-key"]));
    let (cfg, _) = m.object_at(&format!("{evil}/.sealfs/volume.json")).await;
    put_raw(&m, &mallory, "sub/.sealfs/volume.json", cfg, HashMap::new()).await;
    let out = run(m
        .sealfs()
        .arg("put")
        .arg(m.local("f"))
        .arg(format!("{}/sub/y", m.url())));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not trusted on first use"),
        "{}",
        text(&out.stderr)
    );
    let listed = m.keys().await;
    assert!(!listed.iter().any(|k| k.ends_with("/sub/y")), "{listed:?}");
}

/// Sharing with a user who lacks the sealfs permissions boundary: EPERM and
/// a log line saying what to run. (moto cannot keep user boundaries, so the
/// positive path is covered against the fake IAM.)
#[tokio::test]
async fn sharing_needs_the_grantee_boundary() {
    let mut m = Mounted::new("atk-boundary");
    m.mount_env = vec![("SEALFS_GRANTEE_BOUNDARY".into(), "standard".into())];
    let m = m.mount();
    let bob = m.stack.new_user("bob", Some(&grantee_policy())).await;
    m.sh("echo x > $M/f");
    let out = m.sh_any(&format!("setfattr -n user.share -v {bob} $M/f"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Operation not permitted"),
        "{}",
        text(&out.stderr)
    );
    assert!(log(&m).contains("sealfs grantee setup"), "{}", log(&m));
    assert!(granted_ids(&m.stack, &bob).await.is_empty());
}

/// With allow_other, another local user can reach the files but cannot
/// make grants with the owner's credentials.
#[tokio::test]
async fn other_local_users_cannot_share() {
    let mut m = Mounted::new("atk-local");
    m.mount_args = vec!["--allow-other".into()];
    let m = m.mount();
    let alice = m.stack.new_user("alice", Some(&grantee_policy())).await;
    // The test's directories are private; let nobody reach the mount.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(m.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    m.sh("echo x > $M/f && chmod 666 $M/f");
    let as_nobody = |cmd: &str| {
        run(Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "bash",
                "-c",
                cmd,
            ])
            .env("M", m.mnt()))
    };
    // nobody may use the file (its mode says so)...
    let out = as_nobody("setfattr -n user.tag -v ok $M/f && cat $M/f");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // ...but not share it.
    let out = as_nobody(&format!("setfattr -n user.share -v {alice} $M/f"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Operation not permitted"),
        "{}",
        text(&out.stderr)
    );
    assert!(granted_ids(&m.stack, &alice).await.is_empty());
    // The owner can.
    m.sh(&format!("setfattr -n user.share -v {alice} $M/f"));
}

/// Another file's bytes under a file's own (genuine) metadata: its
/// attributes verify, its content does not. Reading is EIO; the owner's full
/// overwrite seals under a fresh data key and file id, with a log line,
/// never under the key the metadata names.
#[tokio::test]
async fn an_overwrite_of_a_file_that_does_not_verify_gets_a_fresh_key() {
    let m = Mounted::new("atk-fresh").mount();
    let mallory = attacker(&m.stack).await;
    m.sh("echo one > $M/f; echo two > $M/g");
    let (_, f_meta) = m.object("f").await;
    let (g_body, _) = m.object("g").await;
    put_raw(&m, &mallory, "f", g_body, f_meta.clone()).await;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = m.sh_any("cat $M/f");
    assert!(!out.status.success());
    assert!(!text(&out.stdout).contains("two"));
    m.sh("echo fresh > $M/f");
    let (_, now) = m.object("f").await;
    assert_ne!(
        now["sealfs-fid"], f_meta["sealfs-fid"],
        "sealed under the old key"
    );
    assert_eq!(m.sh("cat $M/f").trim(), "fresh");
    assert!(log(&m).contains("does not verify"), "{}", log(&m));
    m.finish().await;
}
