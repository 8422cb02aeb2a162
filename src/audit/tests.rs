//! The trail against the grant book over the fake IAM and the memory store:
//! one verified entry per change of access, in order; anything else in the
//! trail's directory is refused, never shown as the owners' word.

use super::entry::{AuditKey, Stamp};
use super::{AuditTrail, Read};
use crate::grants::expiry::Until;
use crate::grants::{FakeIam, GrantChange, GrantLog, GrantSettings, Grantee, Grants, SharedFile};
use crate::store::MemoryStore;
use crate::store::ObjectStore;
use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn file(name: &str, n: u8) -> SharedFile {
    SharedFile {
        bucket: "bucket".into(),
        key: format!("vol/{name}"),
        file_id: hex::encode([n; 16]),
        key_arn: "arn:aws:kms:us-east-1:123456789012:key/vol".into(),
    }
}

fn trail(store: &Arc<MemoryStore>, volume_key: u8) -> Arc<AuditTrail> {
    Arc::new(AuditTrail::new(
        store.clone(),
        "vol",
        AuditKey::derive(&[volume_key; 32]),
    ))
}

/// (action, grantee, file, extra) of every entry, failing on a refused one.
async fn entries(t: &AuditTrail) -> Vec<(String, String, String, Option<String>)> {
    t.read(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| match r {
            Read::Verified { entry: e, .. } => (
                e.action.as_str().to_string(),
                e.grantee,
                e.file,
                e.until.or(e.to).or(e.new_file_id),
            ),
            Read::Refused { name, reason } => panic!("{name}: {reason}"),
        })
        .collect()
}

fn row(
    action: &str,
    who: &str,
    file: &str,
    extra: Option<&str>,
) -> (String, String, String, Option<String>) {
    (
        action.into(),
        who.into(),
        format!("s3://bucket/vol/{file}"),
        extra.map(str::to_string),
    )
}

#[tokio::test]
async fn every_change_of_access_is_one_verified_entry_in_order() {
    let iam = Arc::new(FakeIam::new("owner", &["alice", "bob"]));
    iam.add_role("reader");
    let store = Arc::new(MemoryStore::new("bucket"));
    let t = trail(&store, 1);
    let g = Grants::new(iam.clone(), GrantSettings::default()).with_log(t.clone());
    let (a, b) = (file("a", 1), file("b", 2));
    let end = Until::from_unix(1_900_000_000);
    let alice = Grantee::parse("alice").unwrap();
    g.share_until(&alice, &a, end).await.unwrap();
    g.share("role/reader", &a).await.unwrap();
    // The same grant again changes nothing, and nor does revoking what
    // was never granted: no entries.
    g.share_until(&alice, &a, end).await.unwrap();
    g.unshare("bob", &a).await.unwrap();
    g.unshare("alice", &a).await.unwrap();
    g.share("bob", &b).await.unwrap();
    g.moved("bucket", &[("vol/a".into(), "vol/c".into())])
        .await
        .unwrap();
    let c = SharedFile {
        key: "vol/c".into(),
        ..a.clone()
    };
    g.rekeyed(&c, &hex::encode([9u8; 16])).await.unwrap();
    g.removed("bucket", &[("vol/b".into(), Some(b.file_id.clone()))])
        .await
        .unwrap();
    let nine = hex::encode([9u8; 16]);
    assert_eq!(
        entries(&t).await,
        vec![
            row("share", "alice", "a", Some("2030-03-17T17:46:40Z")),
            row("share", "role/reader", "a", None),
            row("unshare", "alice", "a", None),
            row("share", "bob", "b", None),
            row("move", "role/reader", "a", Some("s3://bucket/vol/c")),
            row("rekey", "role/reader", "c", Some(&nine)),
            row("remove", "bob", "b", None),
        ]
    );
    let all = t.read(None).await.unwrap();
    let Read::Verified { entry, .. } = &all[0] else {
        panic!()
    };
    assert_eq!(entry.actor, "arn:aws:iam::123456789012:user/owner");
    assert_eq!(entry.file_id.as_deref(), Some(a.file_id.as_str()));
    // Every entry is its own object in the volume's internal area.
    let keys = store.keys();
    assert_eq!(keys.len(), 7);
    assert!(
        keys.iter().all(|k| k.starts_with("vol/.sealfs/audit/")),
        "{keys:?}"
    );
}

#[tokio::test]
async fn stale_grants_dropped_are_recorded() {
    let iam = Arc::new(FakeIam::new("owner", &["alice"]));
    let store = Arc::new(MemoryStore::new("bucket"));
    let t = trail(&store, 1);
    let g = Grants::new(iam.clone(), GrantSettings::default()).with_log(t.clone());
    g.share("alice", &file("gone", 3)).await.unwrap();
    let alice = Grantee::user("alice");
    g.drop_stale("bucket", &[(alice.clone(), "vol/gone".into())])
        .await
        .unwrap();
    // Dropped already: nothing more.
    g.drop_stale("bucket", &[(alice, "vol/gone".into())])
        .await
        .unwrap();
    let rows = entries(&t).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1], row("drop-stale", "alice", "gone", None));
}

#[tokio::test]
async fn forged_edited_moved_and_foreign_entries_are_refused() {
    let iam = Arc::new(FakeIam::new("owner", &["alice"]));
    let store = Arc::new(MemoryStore::new("bucket"));
    let t = trail(&store, 1);
    let g = Grants::new(iam.clone(), GrantSettings::default()).with_log(t.clone());
    for n in 0..3 {
        g.share("alice", &file(&format!("f{n}"), n)).await.unwrap();
    }
    let names: Vec<String> = store.keys();
    // Edited: one bit of the sealed entry flipped.
    let (body, _) = store.raw(&names[0]).unwrap();
    let mut line: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut sealed = B64.decode(line["sealed"].as_str().unwrap()).unwrap();
    sealed[20] ^= 1;
    line["sealed"] = B64.encode(&sealed).into();
    store.tamper(&names[0], Some(Bytes::from(line.to_string())), None);
    // Copied to another name (a replayed entry).
    let (body, _) = store.raw(&names[1]).unwrap();
    let copy = format!("{}-copy", names[1]);
    store
        .put(
            &copy,
            body,
            &Default::default(),
            &crate::store::PutCondition::None,
        )
        .await
        .unwrap();
    // Written with another volume's key (a forgery by whoever has another
    // volume), and garbage.
    let other = trail(&store, 2);
    other
        .record(
            "arn:aws:iam::1:user/mallory",
            &[GrantChange::new(
                crate::grants::GrantAction::Share,
                "bucket",
                "vol/f9",
                &Grantee::user("mallory"),
            )],
        )
        .await
        .unwrap();
    store
        .put(
            "vol/.sealfs/audit/2026-12/junk",
            Bytes::from_static(b"{\"v\":1"),
            &Default::default(),
            &crate::store::PutCondition::None,
        )
        .await
        .unwrap();
    let read = t.read(None).await.unwrap();
    assert_eq!(read.len(), 6);
    let verified: Vec<&str> = read
        .iter()
        .filter_map(|r| match r {
            Read::Verified { entry, .. } => Some(entry.file.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(verified, ["s3://bucket/vol/f1", "s3://bucket/vol/f2"]);
    let refused: Vec<&str> = read
        .iter()
        .filter_map(|r| match r {
            Read::Refused { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert_eq!(
        refused
            .iter()
            .filter(|r| r.contains("authenticate"))
            .count(),
        3,
        "{refused:?}"
    );
}

#[tokio::test]
async fn since_reads_only_what_came_after() {
    let store = Arc::new(MemoryStore::new("bucket"));
    let t = trail(&store, 1);
    let alice = Grantee::user("alice");
    let change = GrantChange::new(crate::grants::GrantAction::Share, "bucket", "vol/x", &alice);
    t.record("me", std::slice::from_ref(&change)).await.unwrap();
    let before = Stamp::of(SystemTime::now());
    assert_eq!(
        t.read(Some(before.after(Duration::from_secs(1))))
            .await
            .unwrap()
            .len(),
        0
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mid = Stamp::of(SystemTime::now());
    t.record("me", &[change]).await.unwrap();
    assert_eq!(t.read(Some(mid)).await.unwrap().len(), 1);
    assert_eq!(t.read(None).await.unwrap().len(), 2);
}

#[tokio::test]
async fn changes_outside_the_volume_are_not_written_to_it() {
    let store = Arc::new(MemoryStore::new("bucket"));
    let t = trail(&store, 1);
    let alice = Grantee::user("alice");
    let share = |bucket: &str, key: &str| {
        GrantChange::new(crate::grants::GrantAction::Share, bucket, key, &alice)
    };
    t.record(
        "me",
        &[
            share("bucket", "volume2/x"),
            share("other", "vol/x"),
            share("bucket", "vol/x"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(t.read(None).await.unwrap().len(), 1);
}

/// A log that cannot write.
struct Broken;

#[async_trait]
impl GrantLog for Broken {
    async fn record(&self, _: &str, _: &[GrantChange]) -> crate::Result<()> {
        Err(crate::Error::InvalidArgument("audit store down".into()))
    }
}

#[tokio::test]
async fn a_grant_stands_when_its_entry_cannot_be_written() {
    let iam = Arc::new(FakeIam::new("owner", &["alice"]));
    let g = Grants::new(iam.clone(), GrantSettings::default()).with_log(Arc::new(Broken));
    let f = file("a", 1);
    g.share("alice", &f).await.unwrap();
    assert_eq!(g.grantees(&f).await.unwrap(), vec![Grantee::user("alice")]);
}
