//! Tampering with raw objects in the bucket, then reading through a real
//! mount: every tamper class of docs/FORMAT.md (on the bytes and on the sealing
//! metadata) gives EIO and one log line naming the file and the failed
//! check; `sealfs verify` reports each one and exits non-zero.

mod common;

use common::mounted::Mounted;
use common::*;
use std::collections::HashMap;

const SEG: usize = 4096;
const HEADER: usize = 120;
const SEALED_SEG: usize = SEG + 16;

struct Raw {
    body: Vec<u8>,
    meta: HashMap<String, String>,
}

async fn fetch(m: &Mounted, name: &str) -> Raw {
    let (body, meta) = m.object(name).await;
    Raw { body, meta }
}

async fn store(m: &Mounted, name: &str, raw: Raw) {
    m.stack
        .s3("admin")
        .put_object()
        .bucket(m.stack.bucket())
        .key(format!("{}/{name}", m.prefix))
        .set_metadata(Some(raw.meta))
        .body(raw.body.into())
        .send()
        .await
        .unwrap();
}

fn segment(body: &[u8], i: usize) -> std::ops::Range<usize> {
    let start = HEADER + i * SEALED_SEG;
    start..(start + SEALED_SEG).min(body.len())
}

#[tokio::test]
async fn every_tamper_class_is_eio_through_the_mount_and_in_verify() {
    let mut m = Mounted::new_with_init("tamper", &["--segment-size", "4096"]);
    m.remount();
    // 20,000 bytes: four full segments and a short last one.
    let data = content(20_000, 7);
    std::fs::write(m.local("src"), &data).unwrap();
    let classes = [
        "bitflip",
        "truncate",
        "extend",
        "swap",
        "duplicate",
        "version",
        "transplant",
        "objswap",
        "header",
        "meta-key",
        "meta-fid",
        "meta-bind",
        "wrongkey",
    ];
    for c in classes.iter().chain(["intact", "other"].iter()) {
        m.sh(&format!("cp src $M/{c}"));
    }
    let old_version = fetch(&m, "version").await;
    // An overwrite in place: same file, same data key, a new version.
    m.sh("printf x | cat src - > $M/version");
    m.unmount();

    let other = fetch(&m, "other").await;
    for c in classes {
        let mut r = fetch(&m, c).await;
        let b = &mut r.body;
        match c {
            "bitflip" => {
                let at = segment(b, 1).start + 10;
                b[at] ^= 1
            }
            "truncate" => {
                let n = b.len() - segment(b, 4).len();
                b.truncate(n)
            }
            "extend" => b.extend_from_slice(&[0u8; 16]),
            "swap" => {
                let (s1, s2) = (segment(b, 1), segment(b, 2));
                let one = b[s1.clone()].to_vec();
                let two = b[s2.clone()].to_vec();
                b[s1].copy_from_slice(&two);
                b[s2].copy_from_slice(&one);
            }
            "duplicate" => {
                let one = b[segment(b, 1)].to_vec();
                let s2 = segment(b, 2);
                b[s2].copy_from_slice(&one);
            }
            "version" => {
                let s = segment(b, 1);
                b[s.clone()].copy_from_slice(&old_version.body[s]);
            }
            "transplant" => {
                let s = segment(b, 1);
                b[s.clone()].copy_from_slice(&other.body[s]);
            }
            "objswap" => {
                *b = other.body.clone();
                r.meta = other.meta.clone();
            }
            "header" => b[40] ^= 0x80,
            // The key field: another file's wrapped key (version 1), or a
            // branch that is not this file's (version 2, what a mount writes).
            "meta-key" => match other.meta.get("sealfs-dk") {
                Some(dk) => {
                    r.meta.insert("sealfs-dk".into(), dk.clone());
                }
                None => {
                    r.meta.insert("sealfs-branch".into(), "ab".repeat(16));
                }
            },
            "meta-fid" => {
                r.meta
                    .insert("sealfs-fid".into(), other.meta["sealfs-fid"].clone());
            }
            "meta-bind" => {
                r.meta.insert("sealfs-bind".into(), "00".repeat(32));
            }
            "wrongkey" => {
                for k in ["sealfs-dk", "sealfs-branch", "sealfs-fid"] {
                    if let Some(v) = other.meta.get(k) {
                        r.meta.insert(k.into(), v.clone());
                    }
                }
            }
            _ => unreachable!(),
        }
        store(&m, c, r).await;
    }

    m.remount();
    assert_eq!(std::fs::read(m.mnt().join("intact")).unwrap(), data);
    for c in classes {
        let err = std::fs::read(m.mnt().join(c)).expect_err(c);
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{c}: {err}");
    }
    m.unmount();
    let log = std::fs::read_to_string(m.local("sealfs.log")).unwrap();
    for c in classes {
        let key = format!(
            "s3://{}/{}/{c} failed verification",
            m.stack.bucket(),
            m.prefix
        );
        let lines = log.lines().filter(|l| l.contains(&key)).count();
        assert!(
            lines >= 1,
            "{c}: no log line names the file and the check\n{log}"
        );
    }

    let out = run(m.sealfs().args(["verify", &m.url()]));
    assert!(!out.status.success(), "verify must fail");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    for c in classes {
        let line = format!("FAILED s3://{}/{}/{c}:", m.stack.bucket(), m.prefix);
        assert!(report.contains(&line), "{c} not reported:\n{report}");
    }
    assert!(
        !report.contains("/intact:") && !report.contains("/other:"),
        "{report}"
    );
    assert!(
        report.contains(&format!("{} failed", classes.len())),
        "{report}"
    );
    // With the tampered objects gone, the volume verifies.
    for c in classes {
        m.stack
            .s3("admin")
            .delete_object()
            .bucket(m.stack.bucket())
            .key(format!("{}/{c}", m.prefix))
            .send()
            .await
            .unwrap();
    }
    let out = ok(m.sealfs().args(["verify", &m.url()]));
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("2 verified (40000 plaintext bytes), 0 failed"));
}
