//! `sealfs mount --metrics-addr`: the Prometheus endpoint of a real mount
//! answers the mount's counters and the latency of its S3 and KMS calls;
//! a port already taken fails the mount, naming it.

mod common;

use common::mounted::Mounted;
use common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_mount_serves_its_counters_and_call_latencies() {
    let port = free_port();
    let mut m = Mounted::new("metrics");
    m.mount_args = vec!["--metrics-addr".into(), format!("127.0.0.1:{port}")];
    let m = m.mount();
    m.sh("echo one > $M/a; cat $M/a >/dev/null");
    let out = ok(std::process::Command::new("curl").args([
        "-fsS",
        "-D",
        "-",
        &format!("http://127.0.0.1:{port}/metrics"),
    ]));
    let text = text(&out.stdout);
    for want in [
        "application/openmetrics-text",
        "sealfs_s3_requests_total{operation=\"PUT\"}",
        "sealfs_call_duration_seconds_count{service=\"S3\",operation=\"PutObject\",outcome=\"ok\"}",
        "sealfs_conflict_copies_total 0",
        "# EOF",
    ] {
        assert!(text.contains(want), "{want:?} missing from\n{text}");
    }
    // Each KMS call the mount counted was timed once (KMS is not retried
    // by the SDK here, so calls and attempts agree).
    let value = |prefix: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} missing from\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let calls = value("sealfs_kms_calls_total{operation=\"GenerateDataKey\"}");
    assert!(calls >= 1);
    assert_eq!(
        value("sealfs_call_duration_seconds_count{service=\"KMS\",operation=\"GenerateDataKey\",outcome=\"ok\"}"),
        calls
    );
    // Anything but GET /metrics is a 404.
    let other = run(
        std::process::Command::new("curl").args(["-fsS", &format!("http://127.0.0.1:{port}/")])
    );
    assert!(!other.status.success());

    // A second mount asking for the same port fails, and says why.
    let mut b = m.another();
    b.mount_args = vec!["--metrics-addr".into(), format!("127.0.0.1:{port}")];
    let out = run(b
        .sealfs()
        .args(["mount", &b.url()])
        .arg(b.mnt())
        .args(["--cache-dir"])
        .arg(b.cache())
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("cannot serve metrics on 127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
    assert!(!std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .contains(&b.mnt().display().to_string()));
    m.finish().await;
}
