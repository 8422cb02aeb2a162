//! The `sealfs` binary against the local AWS stack (moto, IAM enforcement on).

mod common;

use common::*;

/// A volume initialised in its own prefix, with a private pin directory.
struct Volume {
    stack: Stack,
    prefix: String,
    tmp: tempfile::TempDir,
}

impl Volume {
    fn new(name: &str) -> Volume {
        let stack = Stack::get();
        let prefix = unique(name);
        let tmp = tempfile::tempdir().unwrap();
        let v = Volume { stack, prefix, tmp };
        ok(v.sealfs("admin")
            .args(["init", &v.url(""), "--kms-key", "alias/sealfs-test"]));
        v
    }

    fn url(&self, rel: &str) -> String {
        if rel.is_empty() {
            format!("s3://{}/{}", self.stack.bucket(), self.prefix)
        } else {
            format!("s3://{}/{}/{rel}", self.stack.bucket(), self.prefix)
        }
    }

    fn key(&self, rel: &str) -> String {
        format!("{}/{rel}", self.prefix)
    }

    fn sealfs(&self, user: &str) -> std::process::Command {
        self.stack.sealfs(user, &self.tmp.path().join("config"))
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.tmp.path().join(name)
    }

    fn put(&self, name: &str, data: &[u8]) {
        let local = self.path(name);
        std::fs::write(&local, data).unwrap();
        ok(self
            .sealfs("admin")
            .arg("put")
            .arg(&local)
            .arg(self.url(name)));
    }

    async fn raw(&self, rel: &str) -> (Vec<u8>, std::collections::HashMap<String, String>) {
        let got = self
            .stack
            .s3("admin")
            .get_object()
            .bucket(self.stack.bucket())
            .key(self.key(rel))
            .send()
            .await
            .unwrap();
        let meta = got.metadata().cloned().unwrap_or_default();
        (got.body.collect().await.unwrap().to_vec(), meta)
    }
}

fn stats(out: &std::process::Output) -> String {
    let err = stderr(out);
    err.lines()
        .find(|l| l.starts_with("sealfs: stats:"))
        .unwrap_or_else(|| panic!("no stats line in {err}"))
        .to_string()
}

#[tokio::test]
async fn put_get_round_trip_across_sizes() {
    let v = Volume::new("roundtrip");
    for (i, n) in [0usize, 1, 65535, 65536, 65537, 20 << 20]
        .into_iter()
        .enumerate()
    {
        let name = format!("f{i}-{n}.bin");
        let data = content(n, i as u64 + 1);
        v.put(&name, &data);
        let back = v.path(&format!("{name}.back"));
        ok(v.sealfs("admin").arg("get").arg(v.url(&name)).arg(&back));
        assert!(
            std::fs::read(&back).unwrap() == data,
            "size {n} did not round trip"
        );
        // The raw object carries no plaintext and has the sealed size.
        let (raw, meta) = v.raw(&name).await;
        let layout = sealfs::crypto::Layout::new(65536);
        assert_eq!(raw.len() as u64, layout.object_len(n as u64));
        assert!(
            !raw.windows(MARKER.len()).any(|w| w == MARKER),
            "plaintext marker in object"
        );
        assert!(
            meta.get("sealfs-dk").is_some_and(|d| d.len() > 20),
            "wrapped key missing: {meta:?}"
        );
        assert_eq!(meta["sealfs-kid"], v.stack.kms_key());
    }
    // cat streams the same bytes to stdout.
    let out = ok(v.sealfs("admin").args(["cat", &v.url("f2-65535.bin")]));
    assert!(out.stdout == content(65535, 3));
}

#[tokio::test]
async fn kms_calls_are_one_per_operation() {
    let v = Volume::new("kmscalls");
    let local = v.path("a.txt");
    std::fs::write(&local, b"hello").unwrap();
    // A new file: one GenerateDataKey, one Decrypt (the volume config's key).
    let out = ok(v
        .sealfs("admin")
        .arg("--stats")
        .arg("put")
        .arg(&local)
        .arg(v.url("a.txt")));
    assert!(
        stats(&out).contains("GenerateDataKey=1 Decrypt=1"),
        "{}",
        stats(&out)
    );
    // An overwrite reuses the file's data key: no GenerateDataKey.
    let out = ok(v
        .sealfs("admin")
        .arg("--stats")
        .arg("put")
        .arg(&local)
        .arg(v.url("a.txt")));
    assert!(
        stats(&out).contains("GenerateDataKey=0 Decrypt=2"),
        "{}",
        stats(&out)
    );
    // A read: exactly one Decrypt and one GET for a small file.
    let out = ok(v.sealfs("admin").args(["--stats", "cat", &v.url("a.txt")]));
    assert_eq!(out.stdout, b"hello");
    let s = stats(&out);
    assert!(s.contains("GenerateDataKey=0 Decrypt=1"), "{s}");
    assert!(s.split_whitespace().any(|w| w == "GET=1"), "{s}");
}

#[tokio::test]
async fn changed_encryption_context_is_refused_by_kms() {
    let v = Volume::new("context");
    v.put("c.txt", b"context");
    let (_, meta) = v.raw("c.txt").await;
    use base64::Engine;
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(&meta["sealfs-dk"])
        .unwrap();
    let kms = v.stack.kms("admin");
    let decrypt = |file: String| {
        kms.decrypt()
            .key_id(v.stack.kms_key())
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wrapped.clone()))
            .encryption_context("sealfs:v", "1")
            .encryption_context("sealfs:file", file)
            .send()
    };
    decrypt(meta["sealfs-fid"].clone())
        .await
        .expect("the right context decrypts");
    let other = format!("{:032x}", 1);
    assert!(
        decrypt(other).await.is_err(),
        "a changed context must not decrypt"
    );
}

#[tokio::test]
async fn swapped_objects_are_detected() {
    let v = Volume::new("swap");
    v.put("x.txt", b"content of x");
    v.put("y.txt", b"content of y");
    let s3 = v.stack.s3("admin");
    let (xb, xm) = v.raw("x.txt").await;
    let (yb, ym) = v.raw("y.txt").await;
    for (key, body, meta) in [("x.txt", yb, ym), ("y.txt", xb, xm)] {
        s3.put_object()
            .bucket(v.stack.bucket())
            .key(v.key(key))
            .body(body.into())
            .set_metadata(Some(meta))
            .send()
            .await
            .unwrap();
    }
    for name in ["x.txt", "y.txt"] {
        let target = v.path(&format!("{name}.out"));
        let out = run(v.sealfs("admin").arg("get").arg(v.url(name)).arg(&target));
        assert!(!out.status.success());
        assert!(stderr(&out).contains("path binding"), "{}", stderr(&out));
        assert!(!target.exists(), "output written for a swapped object");
    }
    let out = run(v.sealfs("admin").args(["inspect", &v.url("x.txt")]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED"));
}

#[tokio::test]
async fn tampered_object_names_the_check_and_writes_nothing() {
    let v = Volume::new("tamper");
    let data = content(200_000, 9);
    v.put("t.bin", &data);
    let (mut raw, meta) = v.raw("t.bin").await;
    raw[120 + 70_000] ^= 1;
    v.stack
        .s3("admin")
        .put_object()
        .bucket(v.stack.bucket())
        .key(v.key("t.bin"))
        .body(raw.into())
        .set_metadata(Some(meta))
        .send()
        .await
        .unwrap();
    let out = run(v
        .sealfs("admin")
        .arg("get")
        .arg(v.url("t.bin"))
        .arg(v.path("t.out")));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("segment 1 failed authentication"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_dir(v.tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("t.out"))
            .count(),
        0
    );
}

#[tokio::test]
async fn alice_without_rights_is_denied_and_gets_nothing() {
    let v = Volume::new("denied");
    v.put("secret.txt", b"not for alice");
    let out = run(v
        .sealfs("alice")
        .arg("get")
        .arg(v.url("secret.txt"))
        .arg(v.path("stolen.txt")));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("denied") && err.contains("s3:GetObject"),
        "{err}"
    );
    assert!(!v.path("stolen.txt").exists());
}

#[tokio::test]
async fn clear_errors_for_missing_things() {
    let v = Volume::new("errors");
    // Missing object.
    let out = run(v.sealfs("admin").args(["get", &v.url("nope.txt"), "-"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no object at"), "{}", stderr(&out));
    // No volume config: the hint names `sealfs init`.
    let local = v.path("l.txt");
    std::fs::write(&local, b"x").unwrap();
    let elsewhere = format!("s3://{}/{}/f.txt", v.stack.bucket(), unique("novolume"));
    let out = run(v.sealfs("admin").arg("put").arg(&local).arg(&elsewhere));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("sealfs init"), "{}", stderr(&out));
    // Unreachable KMS: a clear message, no hang, nothing written.
    let out = run(v
        .sealfs("admin")
        .env("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:9")
        .arg("put")
        .arg(&local)
        .arg(v.url("k.txt")));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("KMS unreachable"), "{}", stderr(&out));
    let head = v
        .stack
        .s3("admin")
        .head_object()
        .bucket(v.stack.bucket())
        .key(v.key("k.txt"))
        .send()
        .await;
    assert!(
        head.is_err(),
        "an object was written although KMS was unreachable"
    );
    // Not a sealfs object.
    v.stack
        .s3("admin")
        .put_object()
        .bucket(v.stack.bucket())
        .key(v.key("plain.txt"))
        .body(b"plain".to_vec().into())
        .send()
        .await
        .unwrap();
    let out = run(v.sealfs("admin").args(["cat", &v.url("plain.txt")]));
    assert!(
        stderr(&out).contains("not a sealfs object"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn init_refuses_to_reinitialise_or_change_the_key() {
    let v = Volume::new("init");
    let out = run(v
        .sealfs("admin")
        .args(["init", &v.url(""), "--kms-key", "alias/sealfs-test"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already a sealfs volume"),
        "{}",
        stderr(&out)
    );
    let out = run(v
        .sealfs("admin")
        .args(["init", &v.url(""), "--create-key", "--force"]));
    assert!(!out.status.success());
    let out = ok(v.sealfs("admin").args(["init", &v.url(""), "--force"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains(v.stack.kms_key()));
    // A volume written before --force still reads.
    v.put("after.txt", b"after");
    ok(v.sealfs("admin").args(["cat", &v.url("after.txt")]));
}

#[tokio::test]
async fn init_creates_a_private_bucket_and_a_key() {
    let stack = Stack::get();
    let tmp = tempfile::tempdir().unwrap();
    let bucket = format!("sealfs-new-{:08x}", rand::random::<u32>());
    let url = format!("s3://{bucket}/vol");
    let out = ok(stack.sealfs("admin", tmp.path()).args([
        "init",
        &url,
        "--create-key",
        "--create-bucket",
    ]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("arn:aws:kms:"));
    let pab = stack
        .s3("admin")
        .get_public_access_block()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let c = pab.public_access_block_configuration().unwrap();
    assert_eq!(c.block_public_acls(), Some(true));
    assert_eq!(c.restrict_public_buckets(), Some(true));
    let local = tmp.path().join("f");
    std::fs::write(&local, b"fresh").unwrap();
    ok(stack
        .sealfs("admin", tmp.path())
        .arg("put")
        .arg(&local)
        .arg(format!("{url}/f")));
    let out = ok(stack
        .sealfs("admin", tmp.path())
        .args(["cat", &format!("{url}/f")]));
    assert_eq!(out.stdout, b"fresh");
}

#[tokio::test]
async fn inspect_shows_fields_but_no_secret() {
    let v = Volume::new("inspect");
    v.put("i.txt", b"inspect me");
    let out = ok(v.sealfs("admin").args(["inspect", &v.url("i.txt")]));
    let text = String::from_utf8_lossy(&out.stdout);
    let (_, meta) = v.raw("i.txt").await;
    assert!(text.contains(&meta["sealfs-fid"]));
    assert!(text.contains(v.stack.kms_key()));
    assert!(text.contains("plaintext:     10 bytes"));
    assert!(text.contains("path binding OK"));
    assert!(
        !text.contains(&meta["sealfs-dk"]),
        "inspect printed the wrapped key"
    );
    assert!(!text.contains("inspect me"));
}

#[test]
fn put_rejects_bad_input_before_any_request() {
    let stack = Stack::get();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("s3://{}/x/y", stack.bucket());
    let out = run(stack
        .sealfs("admin", tmp.path())
        .arg("put")
        .arg(tmp.path())
        .arg(&url));
    assert!(
        stderr(&out).contains("is not a regular file"),
        "{}",
        stderr(&out)
    );
    let out = run(stack
        .sealfs("admin", tmp.path())
        .args(["put", "/nonexistent/file", &url]));
    assert!(
        stderr(&out).contains("cannot read /nonexistent/file"),
        "{}",
        stderr(&out)
    );
    let out = run(stack
        .sealfs("admin", tmp.path())
        .args(["get", "/not/a/url"]));
    assert!(
        stderr(&out).contains("is not an s3://BUCKET/PATH URL"),
        "{}",
        stderr(&out)
    );
}
