//! What sealfs leaves on local disk, through real mounts: no plaintext
//! under the cache directory whatever the workload (writes, rewrites,
//! random writes, a kill -9 mid-write, the write-back spool, reads through
//! the read cache), crash recovery still works, `sealfs cache status` finds
//! what a dead mount left; and the read cache: a second read costs no GET,
//! a changed file is never served stale, a changed cache entry is refetched,
//! and the cache keeps to its size.

mod common;

use common::mounted::Mounted;
use common::*;
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

/// Plaintext with a marker, as aligned 32-byte blocks: any 64-byte window
/// of the plaintext that reached the disk contains one of them.
struct Secret {
    data: Vec<u8>,
    blocks: HashSet<[u8; 32]>,
}

const MARKER: &[u8] = b"SEALFS-PLAINTEXT-MARKER-7f3a";

fn secret(len: usize, seed: u64) -> Secret {
    let mut data = content(len, seed);
    for at in (0..len.saturating_sub(MARKER.len())).step_by(4096) {
        data[at..at + MARKER.len()].copy_from_slice(MARKER);
    }
    let blocks = data
        .chunks_exact(32)
        .map(|c| c.try_into().unwrap())
        .collect();
    Secret { data, blocks }
}

/// Every file under `dir`, each checked for the marker and for any
/// 32-byte block of the secrets' plaintext. Returns the files read.
fn assert_no_plaintext(dir: &Path, secrets: &[&Secret]) -> usize {
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let Ok(bytes) = std::fs::read(&p) else {
                continue;
            };
            files += 1;
            assert!(
                !bytes.windows(MARKER.len()).any(|w| w == MARKER),
                "the marker is in {}",
                p.display()
            );
            for w in bytes.windows(32) {
                let w: &[u8; 32] = w.try_into().unwrap();
                for s in secrets {
                    assert!(!s.blocks.contains(w), "plaintext is in {}", p.display());
                }
            }
        }
    }
    files
}

fn py(m: &Mounted, script: &str) {
    let out = run(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(m.mnt())
        .arg(m.daemon_pid().to_string())
        .current_dir(m.tmp.path()));
    assert!(out.status.success(), "{}", stderr(&out));
}

fn stats(m: &Mounted) -> serde_json::Value {
    serde_json::from_str(&m.sh("getfattr --only-values -n user.sealfs.stats $M")).unwrap()
}

fn gets(m: &Mounted) -> u64 {
    stats(m)["s3"]["GET"].as_u64().unwrap_or(0)
}

fn cache_status(m: &Mounted) -> (i32, String) {
    let out = run(m
        .sealfs()
        .args(["cache", "status", "--cache-base"])
        .arg(m.tmp.path()));
    (out.status.code().unwrap_or(-1), text(&out.stdout))
}

#[tokio::test]
async fn nothing_under_the_cache_directory_is_plaintext() {
    let mut m = Mounted::new("local-plain").mount();
    let (a, b, c) = (secret(3 << 20, 1), secret(1 << 20, 2), secret(200 << 10, 3));
    std::fs::write(m.local("a.bin"), &a.data).unwrap();
    std::fs::write(m.local("b.bin"), &b.data).unwrap();
    std::fs::write(m.local("c.bin"), &c.data).unwrap();
    // Write, rewrite in place, random writes, reads (into the read cache),
    // and a file left open and changed when the daemon is killed.
    m.sh("cp a.bin $M/a && cp c.bin $M/c && cat $M/a $M/c > /dev/null");
    m.sh("dd if=b.bin of=$M/a bs=64K seek=3 conv=notrunc status=none");
    py(
        &m,
        r#"
import os, sys, random
d = sys.argv[1]
data = open("b.bin", "rb").read()
f = os.open(d + "/r", os.O_RDWR | os.O_CREAT, 0o600)
rnd = random.Random(5)
for _ in range(64):
    at = rnd.randrange(0, len(data) - 5000)
    os.pwrite(f, data[at:at + 5000], rnd.randrange(0, 4 << 20))
os.close(f)
g = os.open(d + "/open", os.O_WRONLY | os.O_CREAT, 0o644)
os.write(g, open("c.bin", "rb").read())
os.kill(int(sys.argv[2]), 9)
"#,
    );
    m.crash();
    // What the dead mount left: its staged change, encrypted, reported.
    let files = assert_no_plaintext(&m.cache(), &[&a, &b, &c]);
    assert!(
        files >= 3,
        "the staged file, its journal, the key, the read cache"
    );
    let (code, out) = cache_status(&m);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("ORPHANED") && out.contains("staged changes not in S3: 1"),
        "{out}"
    );
    // Recovery unwraps the same local key and uploads it.
    m.remount();
    assert_eq!(m.sh("sha256sum < $M/open"), m.sh("sha256sum < c.bin"));
    let (code, out) = cache_status(&m);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("mounted"), "{out}");

    // The write-back spool: a close returns once sealed into the spool; the
    // daemon dies before the upload may finish.
    m.mount_args = vec!["--write-back".into()];
    m.remount();
    py(
        &m,
        r#"
import os, sys
d = sys.argv[1]
for i in range(4):
    with open(d + "/spooled%d" % i, "wb") as f:
        f.write(open("b.bin", "rb").read())
        # Attributes of dirty content travel with its upload (the spool entry).
        os.setxattr(f.fileno(), "user.note", b"SEALFS-PLAINTEXT-MARKER-7f3a")
os.kill(int(sys.argv[2]), 9)
"#,
    );
    m.crash();
    assert_no_plaintext(&m.cache(), &[&a, &b, &c]);
    m.remount();
    for i in 0..4 {
        assert_eq!(
            m.sh(&format!("sha256sum < $M/spooled{i}")),
            m.sh("sha256sum < b.bin")
        );
    }
    m.sh("cat $M/a $M/r > /dev/null");
    m.unmount();
    assert_no_plaintext(&m.cache(), &[&a, &b, &c]);
    // A clean unmount leaves no staged data: only the key, the mount
    // record, the log and the (encrypted) read cache.
    let leftovers: Vec<String> = std::fs::read_dir(m.cache())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("staged-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let spooled = std::fs::read_dir(m.cache().join("spool")).map_or(0, |d| d.count());
    assert_eq!(spooled, 0, "the spool is drained");
}

#[tokio::test]
async fn a_second_read_costs_no_get_and_a_changed_file_is_never_served_stale() {
    let mut m = Mounted::new("local-cache").mount();
    let data = content(100 << 20, 11);
    std::fs::write(m.local("big.bin"), &data).unwrap();
    m.sh("cp big.bin $M/big && sync");
    let want = m.sh("sha256sum < big.bin");
    // After a remount only S3 or the read cache can answer.
    m.remount();
    let g0 = gets(&m);
    assert_eq!(m.sh("sha256sum < $M/big"), want);
    let g1 = gets(&m);
    assert!(g1 > g0, "the first read fetches");
    assert_eq!(m.sh("sha256sum < $M/big"), want);
    let g2 = gets(&m);
    // The kernel's pages serve it (now and then the kernel has dropped a
    // page: the read cache serves that one, and the object's header too).
    assert!(
        g2 - g1 == 0,
        "the second read (kernel pages kept) made {} GETs (the first made {})",
        g2 - g1,
        g1 - g0
    );
    // After a remount the read cache answers, the object's header included.
    // The cache keeps what its idle-priority writer stored while a read
    // ran (a read never waits for it), and every read offers the rest
    // again: a file read a few times is read from the cache alone.
    let mut rounds = 0;
    loop {
        m.remount();
        let g3 = gets(&m);
        assert_eq!(m.sh("sha256sum < $M/big"), want);
        let fetched = gets(&m) - g3;
        if fetched == 0 {
            break;
        }
        rounds += 1;
        assert!(rounds < 10, "still {fetched} GETs after {rounds} remounts");
    }
    // The mount reports the cache it found (1 MiB groups of segments).
    let rc = &stats(&m)["read_cache"];
    let entries = rc["entries"].as_u64().unwrap();
    assert!((100..=200).contains(&entries), "{rc}");
    assert!(rc["bytes"].as_u64().unwrap() <= rc["limit"].as_u64().unwrap());
    // Random reads too (answered piece by piece from the read cache), with
    // the kernel's pages dropped first.
    m.remount();
    let g4 = gets(&m);
    py(
        &m,
        r#"
import os, random, sys
want = open("big.bin", "rb").read()
fd = os.open(os.path.join(sys.argv[1], "big"), os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
rng = random.Random(7)
for _ in range(2000):
    n = rng.choice([1, 100, 4096, 5000, 70000])
    at = rng.randrange(0, len(want) - n)
    got = os.pread(fd, n, at)
    assert got == want[at:at + n], (at, n)
"#,
    );
    assert_eq!(gets(&m) - g4, 0, "GETs of random reads after a remount");

    // Another mount changes the file: after the metadata TTL it is read anew.
    let mut other = m.another().mount();
    other.sh("echo changed > $M/big");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(m.sh("cat $M/big"), "changed\n");
    other.unmount();

    // A changed cache entry is discarded and the data fetched again.
    m.sh("head -c 5000000 big.bin > small.bin && cp small.bin $M/small");
    let small = m.sh("sha256sum < small.bin");
    m.remount();
    assert_eq!(m.sh("sha256sum < $M/small"), small);
    m.unmount();
    let dir = m.cache().join("read-cache");
    let mut flipped = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let mut bytes = std::fs::read(e.path()).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        std::fs::write(e.path(), &bytes).unwrap();
        flipped += 1;
    }
    assert!(flipped > 0);
    m.remount();
    let g3 = gets(&m);
    assert_eq!(m.sh("sha256sum < $M/small"), small);
    assert!(
        gets(&m) > g3,
        "refetched, never served from a changed entry"
    );
    let log = std::fs::read_to_string(m.local("sealfs.log")).unwrap_or_default();
    assert!(log.contains("does not authenticate; discarded"), "{log}");

    // The cache keeps to its size.
    m.mount_args = vec!["--cache-size".into(), "8M".into()];
    m.remount();
    m.sh("cat $M/small > /dev/null; cp big.bin $M/big2 && cat $M/big2 > /dev/null");
    // Measured once unmounted: the cache's writer is done (unmount waits).
    m.unmount();
    let on_disk: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|md| md.len())
        .sum();
    assert!(on_disk <= 8 << 20, "{on_disk} bytes");
    m.finish().await;
}
