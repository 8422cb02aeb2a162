//! Two mounts of one volume (as two machines would have): concurrent
//! writers never lose data silently, readers never see a mix of versions,
//! and racing creates have exactly one winner.

mod common;

use common::mounted::Mounted;
use common::*;
use std::process::{Command, Output};

fn py(script: &str, args: &[&std::path::Path]) -> Output {
    run(Command::new("python3").arg("-c").arg(script).args(args))
}

#[tokio::test]
async fn concurrent_writers_one_wins_the_other_gets_eio_and_a_conflict_copy() {
    let a = Mounted::new("two-writers").mount();
    let b = a.another().mount();
    a.sh("echo original > $M/f");
    // Both open the same version for writing; A closes first.
    let out = py(
        r#"
import os, sys
fa = os.open(sys.argv[1] + "/f", os.O_WRONLY | os.O_TRUNC)
fb = os.open(sys.argv[2] + "/f", os.O_WRONLY | os.O_TRUNC)
os.write(fa, b"from A\n")
os.write(fb, b"from B\n")
os.close(fa)
try:
    os.close(fb)
    print("B closed cleanly")
except OSError as e:
    print("B:", e.errno)
"#,
        &[&a.mnt(), &b.mnt()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("B: {}", libc::EIO)
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(a.sh("cat $M/f"), "from A\n");
    assert_eq!(b.sh("cat $M/f"), "from A\n");
    let copy = b.sh("ls $M | grep '^f.sealfs-conflict-'");
    assert_eq!(copy.lines().count(), 1, "{copy}");
    assert_eq!(a.sh(&format!("cat $M/{}", copy.trim())), "from B\n");
    let log = std::fs::read_to_string(b.local("sealfs.log")).unwrap();
    assert!(
        log.contains("write conflict on f"),
        "the log names the file"
    );
    // `sealfs status` tells the two mounts apart: B made the conflict copy
    // and answered one EIO; A did neither.
    let status = |m: &Mounted| -> serde_json::Value {
        let out = ok(m.sealfs().args(["status", "--json"]).arg(m.mnt()));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
        v[0]["stats"].clone()
    };
    let (sa, sb) = (status(&a), status(&b));
    assert_eq!(sb["volume"], a.url().as_str());
    assert_eq!(sb["activity"]["conflict_copies"], 1, "{sb}");
    assert_eq!(sb["activity"]["errors"]["EIO"], 1, "{sb}");
    assert_eq!(sa["activity"]["conflict_copies"], 0, "{sa}");
    assert!(
        sa["activity"]["errors"].as_object().unwrap().is_empty(),
        "{sa}"
    );
    assert!(sa["s3"]["PUT"].as_u64().unwrap() >= 1, "{sa}");
    let all = text(&ok(a.sealfs().arg("status")).stdout);
    for m in [&a, &b] {
        assert!(all.contains(&format!("{}\n", m.mnt().display())), "{all}");
    }
    assert!(
        all.contains("conflict copies 1, recovered files 0"),
        "{all}"
    );
    b.finish().await;
    a.finish().await;
}

#[tokio::test]
async fn racing_creates_have_exactly_one_winner() {
    let a = Mounted::new("two-creates").mount();
    let b = a.another().mount();
    let out = py(
        r#"
import os, sys
fds = [os.open(d + "/new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644) for d in sys.argv[1:3]]
for i, fd in enumerate(fds):
    os.write(fd, b"writer %d\n" % i)
ok = 0
for fd in fds:
    try:
        os.close(fd)
        ok += 1
    except OSError as e:
        assert e.errno == 5, e
print(ok)
"#,
        &[&a.mnt(), &b.mnt()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(a.sh("cat $M/new"), "writer 0\n");
    assert_eq!(b.sh("ls $M | grep -c '^new.sealfs-conflict-'"), "1\n");
    b.finish().await;
    a.finish().await;
}

#[tokio::test]
async fn a_reader_never_sees_a_mix_of_two_versions() {
    let a = Mounted::new("two-readers").mount();
    let b = a.another().mount();
    let v1 = content(3 << 20, 11);
    let v2 = content(3 << 20, 12);
    std::fs::write(a.local("v1"), &v1).unwrap();
    std::fs::write(a.local("v2"), &v2).unwrap();
    a.sh("cp v1 $M/f");
    // A rewrites the file back and forth while B reads it whole, over and over.
    let writer = {
        let dir = a.tmp.path().to_path_buf();
        let mnt = a.mnt();
        std::thread::spawn(move || {
            for i in 0..12 {
                let src = dir.join(if i % 2 == 0 { "v2" } else { "v1" });
                // std::fs::copy reopens with O_TRUNC while the kernel may
                // still be releasing the previous handle: that once
                // uploaded an empty version (a regression test now).
                std::fs::copy(&src, mnt.join("f")).unwrap();
            }
        })
    };
    let out = py(
        r#"
import hashlib, os, sys, time
seen = {}
for _ in range(40):
    try:
        with open(sys.argv[1] + "/f", "rb") as f:
            h = hashlib.sha256(f.read()).hexdigest()
        seen[h] = seen.get(h, 0) + 1
    except OSError as e:
        assert e.errno == 5, e
        seen["EIO"] = seen.get("EIO", 0) + 1
    time.sleep(0.05)
print(" ".join(f"{k}={v}" for k, v in seen.items()))
"#,
        &[&b.mnt()],
    );
    writer.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let sha = |d: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(d))
    };
    let allowed = [sha(&v1), sha(&v2), "EIO".to_string()];
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    for entry in report.split_whitespace() {
        let (h, _) = entry.split_once('=').unwrap();
        assert!(
            allowed.contains(&h.to_string()),
            "a read returned neither version: {report}"
        );
    }
    b.finish().await;
    a.finish().await;
}

fn s3_count(m: &Mounted, op: &str) -> u64 {
    let out = m.sh("getfattr --only-values -n user.sealfs.stats $M");
    let v: serde_json::Value = serde_json::from_str(&out).expect("stats are JSON");
    v["s3"][op].as_u64().unwrap_or(0)
}

/// `ls -l` through the attribute index, with two mounts changing
/// attributes: a cold listing reads the index (no HEAD per entry), and a
/// change by the other mount shows as soon as the metadata TTL allows,
/// whether it moved the ETag (new content) or only LastModified (chmod).
#[tokio::test]
async fn attribute_changes_by_one_mount_show_in_anothers_cold_and_warm_listings() {
    let a = Mounted::new("attr-index").mount();
    a.sh("mkdir $M/d && for i in $(seq 10 39); do echo $i > $M/d/f$i; done && chmod 600 $M/d/f1*");
    // Past the second of their last change, LIST can vouch for what is read.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let ls = "stat -c '%n %a %s' $M/d/* | sed \"s|$M/||\"";
    let want: String = (10..40)
        .map(|i| format!("d/f{i} {} 3\n", if i < 20 { 600 } else { 644 }))
        .collect();

    // The first cold listing HEADs each entry and writes the index...
    let mut b = a.another().mount();
    assert_eq!(b.sh(ls), want);
    assert!(s3_count(&b, "HEAD") >= 30);
    // ...which every later cold listing reads instead.
    b.remount();
    assert_eq!(b.sh(ls), want);
    let heads = s3_count(&b, "HEAD");
    assert!(
        heads <= 3,
        "{heads} HEADs: the lookups of d and the root only"
    );

    // A changes a mode (a self-copy: the ETag may stay, LastModified moves)
    // and a content (a new ETag); B sees both once its TTL has passed.
    a.sh("chmod 640 $M/d/f25 && echo longer > $M/d/f26");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let want = want
        .replace("d/f25 644 3", "d/f25 640 3")
        .replace("d/f26 644 3", "d/f26 644 7");
    assert_eq!(b.sh(ls), want);
    b.finish().await;
    a.finish().await;
}
