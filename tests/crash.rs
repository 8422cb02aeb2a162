//! Crash safety through real mounts: the daemon is killed with SIGKILL at
//! chosen points, and what the application was told was saved is there
//! after a remount; unsaved changes are recovered (or kept as a conflict
//! copy) and logged; an object is never a mix of two versions.

mod common;

use common::mounted::Mounted;
use common::*;
use std::process::Command;

/// Runs Python with the mountpoint as argv[1] and the daemon pid as argv[2].
fn py(m: &Mounted, script: &str) {
    let out = run(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(m.mnt())
        .arg(m.daemon_pid().to_string()));
    assert!(out.status.success(), "{}", stderr(&out));
}

fn log(m: &Mounted) -> String {
    std::fs::read_to_string(m.local("sealfs.log")).unwrap_or_default()
}

fn sha(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[tokio::test]
async fn kill_after_fsync_loses_nothing_and_unsaved_writes_are_recovered() {
    let mut m = Mounted::new("crash").mount();
    m.sh("echo base > $M/edited");
    // fsync'd: durable. Written but never closed: staged only. Both then die.
    py(
        &m,
        r#"
import os, sys
d = sys.argv[1]
f = os.open(d + "/synced", os.O_WRONLY | os.O_CREAT, 0o640)
os.write(f, b"fsync returned")
os.fsync(f)
g = os.open(d + "/unsaved", os.O_WRONLY | os.O_CREAT, 0o644)
os.write(g, b"written, never closed")
h = os.open(d + "/edited", os.O_WRONLY | os.O_APPEND)
os.write(h, b"appended, never closed\n")
os.kill(int(sys.argv[2]), 9)
"#,
    );
    m.crash();
    m.remount();
    assert_eq!(m.sh("cat $M/synced"), "fsync returned");
    assert_eq!(m.sh("cat $M/unsaved"), "written, never closed");
    assert_eq!(m.sh("cat $M/edited"), "base\nappended, never closed\n");
    assert_eq!(m.sh("stat -c %a $M/synced"), "640\n");
    let l = log(&m);
    assert_eq!(
        l.matches("recovered staged changes (left by a crash or a failed upload): uploaded")
            .count(),
        2,
        "each recovery is logged"
    );
    // Nothing is left to recover, and no conflict copy appeared.
    assert!(!m.sh("ls $M").contains("conflict"));
    m.finish().await;
}

#[tokio::test]
async fn unsaved_changes_to_a_file_changed_elsewhere_become_a_conflict_copy() {
    let mut m = Mounted::new("crash-conflict").mount();
    m.sh("echo original > $M/f");
    py(
        &m,
        r#"
import os, sys
f = os.open(sys.argv[1] + "/f", os.O_WRONLY | os.O_TRUNC)
os.write(f, b"mine, unsaved\n")
os.kill(int(sys.argv[2]), 9)
"#,
    );
    m.crash();
    // While that mount is down, someone else writes the file.
    std::fs::write(m.local("theirs"), "theirs\n").unwrap();
    ok(m.sealfs()
        .arg("put")
        .arg(m.local("theirs"))
        .arg(format!("{}/f", m.url())));
    m.remount();
    assert_eq!(m.sh("cat $M/f"), "theirs\n");
    let copies = m.sh("ls $M | grep '^f.sealfs-conflict-'");
    assert_eq!(copies.lines().count(), 1, "{copies}");
    assert_eq!(
        m.sh(&format!("cat $M/{}", copies.trim())),
        "mine, unsaved\n"
    );
    assert!(log(&m).contains("kept as a conflict copy"));
    m.finish().await;
}

#[tokio::test]
async fn a_kill_during_the_upload_leaves_the_old_or_the_new_version() {
    let mut m = Mounted::new("crash-mid").mount();
    let v1 = content(3 << 20, 1);
    let v2 = content(24 << 20, 2);
    std::fs::write(m.local("v1"), &v1).unwrap();
    std::fs::write(m.local("v2"), &v2).unwrap();
    m.sh("cp v1 $M/big");
    // Close (the upload of 24 MiB, a multipart upload) is under way when the kill lands.
    py(
        &m,
        r#"
import os, sys, threading, time
src = open(sys.argv[1] + "/../v2", "rb").read()
f = os.open(sys.argv[1] + "/big", os.O_WRONLY | os.O_TRUNC)
os.write(f, src)
t = threading.Thread(target=os.close, args=(f,), daemon=True)
t.start()
time.sleep(0.15)
os.kill(int(sys.argv[2]), 9)
"#,
    );
    m.crash();
    // Whatever S3 holds now is one whole version. A completion the server
    // was still processing when the daemon died can land while `cat` reads:
    // cat then refuses to mix versions ("changed concurrently"); read again.
    let mut raw = run(m.sealfs().args(["cat", &format!("{}/big", m.url())]));
    for _ in 0..5 {
        if raw.status.success() || !stderr(&raw).contains("changed concurrently") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        raw = run(m.sealfs().args(["cat", &format!("{}/big", m.url())]));
    }
    assert!(raw.status.success(), "{}", stderr(&raw));
    let now = sha(&raw.stdout);
    assert!(now == sha(&v1) || now == sha(&v2), "a mix of versions");
    // And after the remount the new version is there (uploaded then, or recovered now).
    m.remount();
    let got = std::fs::read(m.mnt().join("big")).unwrap();
    assert_eq!(sha(&got), sha(&v2));
    m.finish().await;
}
