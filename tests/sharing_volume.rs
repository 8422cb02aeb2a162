//! `sealfs shares --volume`: every grant of a volume's files, with each
//! file's state, and `--prune-stale`, against moto with IAM enforcement on.

mod common;

use common::mounted::Mounted;
use common::*;
use serde_json::{json, Value};

/// `sealfs shares --volume URL --json` as the owner: (file name, grantee, status).
fn survey(m: &Mounted, extra: &[&str]) -> Vec<(String, String, String)> {
    let out = ok(m
        .sealfs()
        .args(["shares", "--volume", &m.url(), "--json"])
        .args(extra));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut rows: Vec<(String, String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let file = r["file"].as_str().unwrap();
            let name = file.rsplit('/').next().unwrap().to_string();
            (
                name,
                r["grantee"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

#[tokio::test]
async fn a_volumes_grants_show_their_files_state_and_stale_ones_go() {
    let m = Mounted::new("share-volume").mount();
    let reader = for_moto(json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iam:ListAttachedUserPolicies", "Resource": "x"},
        {"Effect": "Allow", "Action": ["iam:GetPolicy", "iam:GetPolicyVersion"], "Resource": "x"},
    ]}));
    let alice = m.stack.new_user("sv", Some(&reader)).await;
    m.sh("echo one > $M/f; echo two > $M/g; echo three > $M/h");
    for f in ["f", "g", "h"] {
        m.sh(&format!("setfattr -n user.share -v {alice} $M/{f}"));
    }
    let row = |f: &str, s: &str| (f.to_string(), alice.clone(), s.to_string());
    assert_eq!(
        survey(&m, &[]),
        vec![row("f", "ok"), row("g", "ok"), row("h", "ok")]
    );
    // Behind the mount's back: f deleted in S3; g deleted and a new file
    // (a new file id) put at its name. (Overwriting g in place would keep
    // its file id, and the grant would still open it.)
    for f in ["f", "g"] {
        m.stack
            .s3("admin")
            .delete_object()
            .bucket(m.stack.bucket())
            .key(format!("{}/{f}", m.prefix))
            .send()
            .await
            .unwrap();
    }
    std::fs::write(m.local("other"), b"another file").unwrap();
    ok(m.sealfs()
        .arg("put")
        .arg(m.local("other"))
        .arg(format!("{}/g", m.url())));
    assert_eq!(
        survey(&m, &[]),
        vec![row("f", "missing"), row("g", "replaced"), row("h", "ok")]
    );
    // The table form names the state too.
    let table = text(&ok(m.sealfs().args(["shares", "--volume", &m.url()])).stdout);
    assert!(table.starts_with("STATUS"), "{table}");
    assert!(table.contains("replaced"), "{table}");
    // Pruning removes the two stale grants and keeps the live one.
    let out = ok(m
        .sealfs()
        .args(["shares", "--volume", &m.url(), "--prune-stale"]));
    assert!(
        stderr(&out).contains("2 stale grant(s) removed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(survey(&m, &[]), vec![row("h", "ok")]);
    let (arns, _) = {
        let docs = grant_docs(&m.stack, &alice).await;
        let mut arns = Vec::new();
        for (_, d, _) in docs {
            arns.extend(d.listed().into_iter().map(|l| l.key));
        }
        (arns, ())
    };
    assert_eq!(arns, vec![format!("{}/h", m.prefix)]);
    m.finish().await;
}
