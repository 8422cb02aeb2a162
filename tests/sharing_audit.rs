//! The audit trail end to end, against moto with IAM enforcement on: every
//! change of access made through a mount or the CLI is one entry, in order,
//! with its actor and file id; the entries are sealed (a bucket reader
//! learns nothing of who was granted what); an edited entry fails
//! `sealfs audit`; a grantee cannot read the trail.

mod common;

use common::mounted::Mounted;
use common::*;
use serde_json::{json, Value};

fn grantee_policy() -> Value {
    for_moto(json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iam:ListAttachedUserPolicies", "Resource": "x"},
        {"Effect": "Allow", "Action": ["iam:GetPolicy", "iam:GetPolicyVersion"], "Resource": "x"},
    ]}))
}

/// `sealfs audit URL --json`, one entry per line.
fn audit(m: &Mounted) -> Vec<Value> {
    let out = ok(m.sealfs().args(["audit", &m.url(), "--json"]));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn every_change_of_access_is_one_sealed_entry_only_owners_read() {
    let m = Mounted::new("share-audit").mount();
    let alice = m.stack.new_user("au", Some(&grantee_policy())).await;
    m.sh("echo one > $M/a; echo two > $M/b");
    let url = |f: &str| format!("{}/{f}", m.url());
    let fid = |meta: std::collections::HashMap<String, String>| meta["sealfs-fid"].clone();
    // Through the CLI, with an end; then through the mount.
    ok(m.sealfs().args(["share", &url("b"), &alice, "--for", "7d"]));
    m.sh(&format!("setfattr -n user.share -v {alice} $M/a"));
    // The same grant again changes nothing: no entry.
    m.sh(&format!("setfattr -n user.share -v {alice} $M/a"));
    let a_id = fid(m.object("a").await.1);
    m.sh(&format!("setfattr -n user.unshare -v {alice} $M/a"));
    let b_id = fid(m.object("b").await.1);
    ok(m.sealfs().args(["rekey", &url("b")]));
    let b_new = fid(m.object("b").await.1);
    m.sh("mv $M/b $M/c");
    m.sh("rm $M/c");

    let entries = audit(&m);
    let rows: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["file"].as_str().unwrap()))
        .collect();
    let (a, b, c) = (url("a"), url("b"), url("c"));
    assert_eq!(
        rows,
        vec![
            ("share", b.as_str()),
            ("share", a.as_str()),
            ("unshare", a.as_str()),
            ("rekey", b.as_str()),
            ("move", b.as_str()),
            ("remove", c.as_str()),
        ],
        "{entries:#?}"
    );
    for e in &entries {
        assert_eq!(e["grantee"], alice.as_str(), "{e}");
        assert!(
            e["actor"].as_str().unwrap().starts_with("arn:aws:iam::"),
            "{e}"
        );
    }
    assert!(entries[0]["until"].as_str().unwrap().ends_with('Z'));
    assert_eq!(entries[0]["file_id"], b_id.as_str());
    assert_eq!(entries[1]["file_id"], a_id.as_str());
    assert_eq!(entries[3]["new_file_id"], b_new.as_str());
    assert_eq!(entries[4]["to"], c.as_str());
    // Times never go backwards.
    let times: Vec<&str> = entries
        .iter()
        .map(|e| e["time"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // The table form, and --since.
    let table = text(&ok(m.sealfs().args(["audit", &m.url()])).stdout);
    assert!(table.starts_with("TIME"), "{table}");
    assert_eq!(table.lines().count(), 7, "{table}");
    let later = ok(m
        .sealfs()
        .args(["audit", &m.url(), "--since", "2999-01-01"]));
    assert!(text(&later.stdout).is_empty());

    // A bucket reader sees six opaque objects.
    let trail: Vec<(String, Vec<u8>)> = m
        .objects()
        .await
        .into_iter()
        .filter(|(k, _)| k.contains("/.sealfs/audit/"))
        .collect();
    assert_eq!(trail.len(), 6);
    for (k, body) in &trail {
        let body = text(body);
        for secret in [alice.as_str(), "s3://", "share", &a_id] {
            assert!(!body.contains(secret), "{secret} in {k}: {body}");
        }
    }

    // An entry edited by someone who can write the bucket: `sealfs audit`
    // names it and fails; the others still show.
    let (key, body) = &trail[2];
    let mut line: Value = serde_json::from_slice(body).unwrap();
    let sealed = line["sealed"].as_str().unwrap().to_string();
    let flipped = if sealed.starts_with('A') { "B" } else { "A" };
    line["sealed"] = format!("{flipped}{}", &sealed[1..]).into();
    m.stack
        .s3("admin")
        .put_object()
        .bucket(m.stack.bucket())
        .key(key)
        .body(line.to_string().into_bytes().into())
        .send()
        .await
        .unwrap();
    let out = run(m.sealfs().args(["audit", &m.url(), "--json"]));
    assert!(!out.status.success());
    let err = stderr(&out);
    let name = key.rsplit_once("/audit/").unwrap().1;
    assert!(err.contains(name) && err.contains("1 of 6"), "{err}");
    assert_eq!(text(&out.stdout).lines().count(), 5);

    // The grantee cannot read the trail.
    let denied = run(m
        .stack
        .sealfs(&alice, &m.local("config-alice"))
        .args(["audit", &m.url()]));
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).to_lowercase().contains("denied"),
        "{}",
        stderr(&denied)
    );
    m.finish().await;
}
