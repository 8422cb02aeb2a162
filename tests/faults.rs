//! Faults between sealfs and S3/KMS, injected by a real HTTP proxy
//! (scripts/faultproxy.py, on 127.0.0.1) that the mount talks to: transient
//! errors, connection resets, slow bodies and KMS throttling cost no data;
//! with S3 unreachable, close fails promptly and the data stays staged
//! until S3 is back.

mod common;

use common::mounted::Mounted;
use common::*;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The proxy process, stopped on drop.
struct Proxy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Proxy {
    fn start(stack: &Stack) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let mut child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/faultproxy.py"))
            .arg(stack.endpoint())
            .arg(&port_file)
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                if let Ok(port) = p.trim().parse() {
                    return Proxy {
                        child,
                        port,
                        _dir: dir,
                    };
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("fault proxy did not start");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sets the fault settings; returns the proxy's counters.
    fn set(&self, settings: serde_json::Value) -> serde_json::Value {
        let out = ok(Command::new("curl")
            .args(["-fsS", "-X", "POST", "--data-binary"])
            .arg(settings.to_string())
            .arg(format!("{}/__faults", self.url())));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mount whose S3 and KMS traffic goes through `proxy`.
fn mount_through(name: &str, proxy: &Proxy, extra_env: &[(&str, &str)]) -> Mounted {
    let mut m = Mounted::new(name);
    m.mount_args = vec!["--endpoint-url".into(), proxy.url()];
    m.mount_env = extra_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    m.mount()
}

fn make_files(root: &Path, n: usize) {
    for i in 0..n {
        let dir = root.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        let size = 1 + (i * 7919) % 40_000;
        std::fs::write(dir.join(format!("f{i:03}")), content(size, i as u64)).unwrap();
    }
}

#[tokio::test]
async fn a_copy_through_ten_percent_faults_is_exact() {
    let stack = Stack::get();
    let proxy = Proxy::start(&stack);
    let mut m = mount_through("faults", &proxy, &[]);
    make_files(&m.local("src"), 300);
    proxy.set(serde_json::json!({
        "rate": 0.1, "kinds": ["500", "503", "reset", "slow", "throttle"]
    }));
    m.sh("cp -r src $M/copy");
    m.sh("diff -r src $M/copy");
    let stats = proxy.set(serde_json::json!({"rate": 0.0}));
    let faults = stats["counts"]["faults"].as_u64().unwrap();
    let requests = stats["counts"]["requests"].as_u64().unwrap();
    assert!(faults >= 30, "only {faults} faults in {requests} requests");
    eprintln!("300-file copy: {faults} faults injected in {requests} requests");
    m.remount();
    m.sh("diff -r src $M/copy");
    assert!(m
        .objects()
        .await
        .iter()
        .all(|(k, _)| !k.contains("conflict")));
    m.finish().await;
}

#[tokio::test]
async fn stalls_past_the_client_timeout_are_retried() {
    let stack = Stack::get();
    let proxy = Proxy::start(&stack);
    let m = mount_through("stalls", &proxy, &[("SEALFS_READ_TIMEOUT", "1.5")]);
    make_files(&m.local("src"), 20);
    proxy.set(serde_json::json!({"rate": 0.15, "kinds": ["stall"], "stall_seconds": 4}));
    m.sh("cp -r src $M/copy");
    let stats = proxy.set(serde_json::json!({"rate": 0.0}));
    assert!(stats["counts"]["faults"].as_u64().unwrap() >= 1, "{stats}");
    m.sh("diff -r src $M/copy");
    m.finish().await;
}

#[tokio::test]
async fn with_s3_down_close_fails_promptly_and_the_data_waits_for_s3() {
    let stack = Stack::get();
    let proxy = Proxy::start(&stack);
    let m = mount_through("s3down", &proxy, &[]);
    m.sh("echo before > $M/f");
    let script = r#"
import os, sys, time, json, urllib.request
f = os.open(sys.argv[1] + "/f", os.O_WRONLY | os.O_TRUNC)
urllib.request.urlopen(urllib.request.Request(sys.argv[2] + "/__faults", data=b'{"down": true}'))
os.write(f, b"written while S3 was down\n")
t = time.time()
try:
    os.fsync(f)
    print("fsync ok")
except OSError as e:
    print("fsync", e.errno, round(time.time() - t, 1))
t = time.time()
try:
    os.close(f)
    print("close ok")
except OSError as e:
    print("close", e.errno, round(time.time() - t, 1))
"#;
    let out = ok(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(m.mnt())
        .arg(proxy.url()));
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("with S3 down: {}", report.replace('\n', "; "));
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 2, "{report}");
    for (line, op) in lines.iter().zip(["fsync", "close"]) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(parts[..2], [op, "5"], "{report}");
        let secs: f64 = parts[2].parse().unwrap();
        assert!(secs < 60.0, "{op} took {secs} s: {report}");
    }
    // S3 is back: the staged data goes up by itself, without a remount.
    proxy.set(serde_json::json!({"down": false}));
    let start = Instant::now();
    loop {
        let cat = run(m.sealfs().args(["cat", &format!("{}/f", m.url())]));
        if String::from_utf8_lossy(&cat.stdout) == "written while S3 was down\n" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "never uploaded");
        std::thread::sleep(Duration::from_secs(1));
    }
    let log = std::fs::read_to_string(m.local("sealfs.log")).unwrap();
    assert!(
        log.contains("changes stay staged"),
        "the failure was logged"
    );
    m.finish().await;
}
