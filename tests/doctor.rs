//! `sealfs doctor` against the local AWS stack: a healthy volume passes,
//! and each thing that can be wrong is named, with its fix, and fails the
//! command: the endpoint, the credentials, the region, the bucket and its
//! privacy, the volume config and its pin, the KMS key, IAM rights for
//! sharing, the grantee boundary, and FUSE on this machine.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::{Command, Output};

/// A volume of its own (prefix and pin directory).
struct Volume {
    stack: Stack,
    prefix: String,
    tmp: tempfile::TempDir,
}

impl Volume {
    fn new(name: &str) -> Volume {
        let stack = Stack::get();
        let v = Volume {
            stack,
            prefix: unique(name),
            tmp: tempfile::tempdir().unwrap(),
        };
        ok(v.sealfs("admin")
            .args(["init", &v.url(), "--kms-key", "alias/sealfs-test"]));
        v
    }

    fn url(&self) -> String {
        format!("s3://{}/{}", self.stack.bucket(), self.prefix)
    }

    fn sealfs(&self, user: &str) -> Command {
        self.stack.sealfs(user, &self.tmp.path().join("config"))
    }

    fn doctor(&self, user: &str, args: &[&str]) -> Output {
        run(self.sealfs(user).arg("doctor").args(args))
    }
}

/// A bucket name of its own (`unique` gives a prefix).
fn bucket_name(tag: &str) -> String {
    unique(tag).replace('/', "-")
}

/// The report as JSON: check name -> (status, found, fix).
fn checks(out: &Output) -> std::collections::HashMap<String, (String, String, String)> {
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", text(&out.stdout), stderr(out)));
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("check"), (s("status"), s("found"), s("fix")))
        })
        .collect()
}

/// Asserts `check` has `status`, its finding containing `found` and its
/// fix containing `fix`; returns the finding.
fn expect(out: &Output, check: &str, status: &str, found: &str, fix: &str) -> String {
    let all = checks(out);
    let (s, f, x) = all
        .get(check)
        .unwrap_or_else(|| panic!("no check {check:?} in {all:?}"));
    assert_eq!(s, status, "{check}: {f} / {x}");
    assert!(f.contains(found), "{check}: {f:?} lacks {found:?}");
    assert!(x.contains(fix), "{check}: fix {x:?} lacks {fix:?}");
    f.clone()
}

fn failed(out: &Output) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    assert!(stderr(out).contains("failed"), "{}", stderr(out));
}

#[tokio::test]
async fn a_healthy_volume_passes_every_check() {
    let v = Volume::new("doctor-ok");
    let out = v.doctor("admin", &[&v.url()]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", stderr(&out));
    for check in [
        "endpoint",
        "credentials",
        "bucket",
        "private",
        "volume",
        "pin",
        "kms key",
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("ok ") && l.contains(check)),
            "{check} did not pass:\n{report}"
        );
    }
    assert!(!report.contains("FAIL"), "{report}");
    let out = v.doctor("admin", &["--json", &v.url()]);
    expect(&out, "credentials", "pass", "user/admin", "");
    expect(
        &out,
        "kms key",
        "pass",
        "GenerateDataKey and Decrypt work",
        "",
    );
    expect(&out, "volume", "pass", "verifies", "");
    // The doctor only reads: the volume was pinned by init, nothing else
    // was written there.
    let pins = std::fs::read_to_string(v.tmp.path().join("config/pins.json")).unwrap();
    assert_eq!(pins.matches("s3://").count(), 1, "{pins}");
}

#[tokio::test]
async fn bad_or_missing_credentials_are_named() {
    let v = Volume::new("doctor-creds");
    let out = run(v
        .sealfs("admin")
        .env("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNUNKNOWN00")
        .args(["doctor", "--json", &v.url()]));
    failed(&out);
    expect(
        &out,
        "credentials",
        "fail",
        "InvalidClientTokenId",
        "make a new access key",
    );
    expect(&out, "volume", "skip", "credentials", "");

    let out = run(v
        .sealfs("admin")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .args(["doctor", "--json", &v.url()]));
    failed(&out);
    expect(
        &out,
        "credentials",
        "fail",
        "no credentials",
        "AWS_ACCESS_KEY_ID",
    );
}

#[tokio::test]
async fn an_endpoint_that_does_not_answer_is_named() {
    let v = Volume::new("doctor-endpoint");
    let out = v.doctor(
        "admin",
        &["--endpoint-url", "http://127.0.0.1:1", "--json", &v.url()],
    );
    failed(&out);
    expect(
        &out,
        "endpoint",
        "fail",
        "cannot connect to S3 at http://127.0.0.1:1",
        "--endpoint-url",
    );
    expect(&out, "credentials", "skip", "endpoint", "");
}

#[tokio::test]
async fn a_missing_bucket_or_one_in_another_region_is_named() {
    let v = Volume::new("doctor-bucket");
    let gone = format!("s3://{}/x", unique("doctor-no-bucket"));
    let out = v.doctor("admin", &["--json", &gone]);
    failed(&out);
    expect(&out, "bucket", "fail", "does not exist", "--create-bucket");
    expect(&out, "volume", "skip", "bucket", "");

    let west = bucket_name("doctor-west");
    v.stack
        .s3("admin")
        .create_bucket()
        .bucket(&west)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::UsWest2)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let out = v.doctor("admin", &["--json", &format!("s3://{west}/v")]);
    failed(&out);
    expect(
        &out,
        "bucket",
        "fail",
        "is in region us-west-2",
        "--region us-west-2",
    );
}

#[tokio::test]
async fn a_public_bucket_fails_and_an_unblocked_one_warns() {
    let v = Volume::new("doctor-public");
    let bucket = bucket_name("doctor-public");
    let s3 = v.stack.s3("admin");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let url = format!("s3://{bucket}/v");
    ok(v.sealfs("admin")
        .args(["init", &url, "--kms-key", "alias/sealfs-test"]));
    let out = v.doctor("admin", &["--json", &url]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    expect(
        &out,
        "private",
        "warn",
        "public access block is not fully on",
        "put-public-access-block",
    );
    s3.put_bucket_acl()
        .bucket(&bucket)
        .acl(aws_sdk_s3::types::BucketCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    let out = v.doctor("admin", &["--json", &url]);
    failed(&out);
    expect(
        &out,
        "private",
        "fail",
        "is public: its ACL",
        "put-public-access-block",
    );
}

#[tokio::test]
async fn a_missing_changed_or_unpinned_volume_config_is_named() {
    let v = Volume::new("doctor-volume");
    let elsewhere = format!("{}-none", v.url());
    let out = v.doctor("admin", &["--json", &elsewhere]);
    failed(&out);
    expect(&out, "volume", "fail", "no sealfs volume", "sealfs init");
    expect(&out, "kms key", "skip", "volume config", "");

    // Re-created in the bucket (by someone with another pin directory):
    // this machine's pin no longer matches.
    let other = tempfile::tempdir().unwrap();
    ok(v.stack.sealfs("admin", other.path()).args([
        "init",
        "--force",
        &v.url(),
        "--kms-key",
        "alias/sealfs-test",
    ]));
    let out = v.doctor("admin", &["--json", &v.url()]);
    failed(&out);
    expect(
        &out,
        "pin",
        "fail",
        "not the one this machine knows",
        "remove its entry",
    );

    // A config whose MAC no longer verifies.
    let key = format!("{}/.sealfs/volume.json", v.prefix);
    let s3 = v.stack.s3("admin");
    let body = s3
        .get_object()
        .bucket(v.stack.bucket())
        .key(&key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let mut cfg: Value = serde_json::from_slice(&body).unwrap();
    cfg["segment_size"] = json!(4096);
    s3.put_object()
        .bucket(v.stack.bucket())
        .key(&key)
        .body(cfg.to_string().into_bytes().into())
        .send()
        .await
        .unwrap();
    let out = v.doctor("admin", &["--json", &v.url()]);
    failed(&out);
    expect(&out, "volume", "fail", "does not verify", "do not mount it");
}

#[tokio::test]
async fn a_kms_key_that_cannot_make_data_keys_is_named() {
    let v = Volume::new("doctor-kms");
    let b = v.stack.bucket();
    // Can read the volume (Decrypt of its key) but not make data keys.
    let policy = for_moto(json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": format!("arn:aws:s3:::{b}")},
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::{b}/{}/*", v.prefix)},
            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": v.stack.kms_key()},
        ]
    }));
    let reader = v.stack.new_user("doctor-reader", Some(&policy)).await;
    let out = v.doctor(&reader, &["--json", &v.url()]);
    failed(&out);
    expect(&out, "volume", "pass", "verifies", "");
    expect(
        &out,
        "kms key",
        "fail",
        "GenerateDataKey failed",
        "kms:GenerateDataKey",
    );
    // Nor may it write grant policies: sharing is named too.
    expect(
        &out,
        "sharing rights",
        "fail",
        "iam:ListPolicies",
        "sealfs policy owner",
    );
}

#[tokio::test]
async fn a_missing_grantee_boundary_is_named() {
    let v = Volume::new("doctor-boundary");
    let missing = format!(
        "arn:aws:iam::{}:policy/{}",
        v.stack.var("SEALFS_TEST_ACCOUNT"),
        unique("doctor-boundary")
    );
    let out = v.doctor(
        "admin",
        &["--json", "--grantee-boundary", &missing, &v.url()],
    );
    failed(&out);
    expect(
        &out,
        "grantee boundary",
        "fail",
        "does not exist",
        "create the policy",
    );
}

/// Runs `sealfs doctor ARGS` in a private mount namespace after `setup`
/// (shell commands run as root there), as the user `as_user` (uid:gid, via
/// setpriv) when given; its output.
fn doctor_in_namespace(setup: &str, as_user: Option<&str>, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    // A copy others may run (the target directory may not be theirs).
    let bin = dir.path().join("sealfs");
    std::fs::copy(env!("CARGO_BIN_EXE_sealfs"), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let who = match as_user {
        Some(ids) => {
            let (u, g) = ids.split_once(':').unwrap();
            format!("setpriv --reuid {u} --regid {g} --clear-groups env PATH=/nonexistent HOME=/nonexistent ")
        }
        None => String::new(),
    };
    let script = format!(
        "set -eu\n{setup}\n{who}{} doctor {}",
        bin.display(),
        args.join(" ")
    );
    let stack = Stack::get();
    run(Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("SEALFS_GRANTEE_BOUNDARY", "none")
        .envs(stack.user_env("admin")))
}

#[test]
fn a_device_that_is_not_fuse_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("not-fuse");
    std::fs::write(&fake, b"").unwrap();
    let out = doctor_in_namespace(
        &format!("mount --bind {} /dev/fuse", fake.display()),
        None,
        &["--json"],
    );
    failed(&out);
    expect(
        &out,
        "fuse device",
        "fail",
        "is not the FUSE device",
        "mknod",
    );
}

#[test]
fn an_unprivileged_user_needs_fusermount3_and_user_allow_other() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("fuse.conf");
    std::fs::write(&conf, "# mount_max = 1000\n#user_allow_other\n").unwrap();
    let out = doctor_in_namespace(
        &format!("mount --bind {} /etc/fuse.conf", conf.display()),
        Some("65534:65534"),
        &["--json", "--allow-other"],
    );
    failed(&out);
    expect(
        &out,
        "fusermount3",
        "fail",
        "not on PATH",
        "apt install fuse3",
    );
    expect(
        &out,
        "allow other",
        "fail",
        "does not set user_allow_other",
        "echo user_allow_other >> /etc/fuse.conf",
    );
}
