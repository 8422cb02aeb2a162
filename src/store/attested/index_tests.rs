//! The attribute index: a cold listing's attributes from one GET, believed
//! per entry only while LIST shows the version it was read from.

use super::index::{index_key, IndexEntry};
use super::*;
use crate::store::{list_all, MemoryStore, SETTLE};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, UNIX_EPOCH};

const DIR: &str = "vol/d/";

fn keys() -> AttributeKeys {
    AttributeKeys::derive(&[4u8; 32])
}

fn store(mem: &MemoryStore) -> AttestedStore {
    AttestedStore::new(Arc::new(mem.clone()), keys(), "vol", AttributeRule::Strict)
}

fn mode(m: &str) -> Metadata {
    [("sealfs-mode".to_string(), m.to_string())].into()
}

/// An xattr `user.color` whose value must never reach S3 in plaintext.
const SECRET: &str = "blue-secret";

fn with_xattr(mut m: Metadata) -> Metadata {
    m.insert(
        format!("{XATTR_PREFIX}{}", hex::encode("user.color")),
        B64.encode(SECRET),
    );
    m
}

/// `n` objects in DIR written through sealfs, then aged past settling.
async fn volume(n: usize) -> MemoryStore {
    let mem = MemoryStore::new("b");
    let s = store(&mem);
    for i in 0..n {
        let key = format!("{DIR}f{i:03}");
        s.put(
            &key,
            Bytes::from("x"),
            &with_xattr(mode("600")),
            &PutCondition::None,
        )
        .await
        .unwrap();
    }
    mem.age(Duration::from_secs(10));
    mem
}

/// A listing of DIR's objects as readdir makes it, and the attributes of all.
async fn list_and_head(s: &AttestedStore, mem: &MemoryStore) -> Vec<(String, Metadata)> {
    let listing: Vec<_> = list_all(mem, DIR)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| !e.key.contains(".sealfs"))
        .collect();
    let wanted: Vec<usize> = (0..listing.len()).collect();
    s.head_listed(DIR, &listing, &wanted)
        .await
        .into_iter()
        .map(|r| {
            let o = r.unwrap();
            (o.info.key, o.info.metadata)
        })
        .collect()
}

fn heads(mem: &MemoryStore) -> u64 {
    mem.counts().head.load(Relaxed)
}

#[tokio::test]
async fn a_cold_listing_reads_one_index_instead_of_a_head_per_entry() {
    let mem = volume(50).await;
    let first = list_and_head(&store(&mem), &mem).await;
    assert_eq!(heads(&mem), 50, "no index yet: one HEAD each");
    assert!(
        mem.raw(&index_key("vol", DIR)).is_some(),
        "and it was written"
    );
    // Another mount, cold: the same attributes, no HEAD.
    let (h0, g0) = (heads(&mem), mem.counts().get.load(Relaxed));
    let second = list_and_head(&store(&mem), &mem).await;
    assert_eq!(second, first);
    assert_eq!(heads(&mem) - h0, 0);
    assert_eq!(mem.counts().get.load(Relaxed) - g0, 1);
    assert!(second.iter().all(|(_, m)| m["sealfs-mode"] == "600"));
    assert!(second.iter().all(|(_, m)| m == &with_xattr(mode("600"))));
    // Kept as stored in S3: xattrs encrypted.
    let (body, _) = mem.raw(&index_key("vol", DIR)).unwrap();
    assert!(!body.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
    assert!(!body
        .windows(8)
        .any(|w| w == &B64.encode(SECRET).as_bytes()[..8]));
}

#[tokio::test]
async fn an_entry_is_believed_only_while_list_shows_its_version() {
    let mem = volume(3).await;
    list_and_head(&store(&mem), &mem).await;
    let s = store(&mem);
    // A chmod elsewhere: a self-copy keeps the ETag and size; LastModified moves.
    let chmod = s.seal("vol/d/f001", &mode("644")).await.unwrap();
    mem.recopy("vol/d/f001", chmod);
    // New content: a new ETag.
    s.put(
        "vol/d/f002",
        Bytes::from("y"),
        &mode("640"),
        &PutCondition::None,
    )
    .await
    .unwrap();
    let h0 = heads(&mem);
    let got = list_and_head(&store(&mem), &mem).await;
    assert_eq!(heads(&mem) - h0, 2, "both changed entries asked S3");
    let modes: Vec<_> = got.iter().map(|(_, m)| m["sealfs-mode"].clone()).collect();
    assert_eq!(modes, ["600", "644", "640"]);
}

#[tokio::test]
async fn metadata_read_before_it_settled_is_not_indexed() {
    // Written just now: a change within this second would leave LIST's
    // answer unchanged, so nothing read now may be vouched for by it.
    let mem = MemoryStore::new("b");
    let s = store(&mem);
    s.put(
        "vol/d/new",
        Bytes::from("x"),
        &mode("600"),
        &PutCondition::None,
    )
    .await
    .unwrap();
    list_and_head(&s, &mem).await;
    assert!(mem.raw(&index_key("vol", DIR)).is_none());
    let h0 = heads(&mem);
    list_and_head(&store(&mem), &mem).await;
    assert_eq!(heads(&mem) - h0, 1);

    // The rule itself, at the second boundary.
    let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let raw = ObjectInfo {
        key: "k".into(),
        size: 1,
        etag: "\"e\"".into(),
        metadata: Metadata::new(),
        last_modified: Some(t + Duration::from_millis(900)),
    };
    assert!(IndexEntry::record(&raw, t + SETTLE - Duration::from_millis(1)).is_none());
    let e = IndexEntry::record(&raw, t + SETTLE).unwrap();
    let listed = |etag: &str, size, lm| ListEntry {
        key: "k".into(),
        size,
        etag: etag.into(),
        last_modified: lm,
    };
    // LIST may carry milliseconds where HEAD has whole seconds.
    assert!(e.vouched_by(&listed("\"e\"", 1, Some(t + Duration::from_millis(123)))));
    assert!(!e.vouched_by(&listed("\"e\"", 1, Some(t + Duration::from_secs(1)))));
    assert!(!e.vouched_by(&listed("\"f\"", 1, Some(t))));
    assert!(!e.vouched_by(&listed("\"e\"", 2, Some(t))));
    assert!(!e.vouched_by(&listed("\"e\"", 1, None)));
}

#[tokio::test]
async fn a_forged_moved_or_replayed_index_costs_heads_never_a_wrong_attribute() {
    let mem = volume(2).await;
    let s = store(&mem);
    list_and_head(&s, &mem).await;
    let index = index_key("vol", DIR);
    let (good, _) = mem.raw(&index).unwrap();

    // Edited: one byte of the body (a mode in it) changed.
    let text = String::from_utf8(good.to_vec()[32..].to_vec()).unwrap();
    let mut forged = good[..32].to_vec();
    forged.extend(text.replace("\"600\"", "\"666\"").into_bytes());
    mem.tamper(&index, Some(Bytes::from(forged)), None);
    let h0 = heads(&mem);
    let got = list_and_head(&store(&mem), &mem).await;
    assert_eq!(heads(&mem) - h0, 2);
    assert!(got.iter().all(|(_, m)| m["sealfs-mode"] == "600"));
    // ...and the listing that had to HEAD wrote a good one back.
    assert!(s.decode_index(DIR, &mem.raw(&index).unwrap().0).is_ok());

    // Moved: another directory's genuine index.
    assert!(s.decode_index("vol/e/", &good).is_err());
    let other = AttestedStore::new(
        Arc::new(mem.clone()),
        AttributeKeys::derive(&[5u8; 32]),
        "vol",
        AttributeRule::Strict,
    );
    assert!(
        other.decode_index(DIR, &good).is_err(),
        "another volume's key"
    );
    assert!(s.decode_index(DIR, &good[..20]).is_err());

    // Replayed: an older genuine index after a chmod.
    let chmod = s.seal("vol/d/f000", &mode("400")).await.unwrap();
    mem.recopy("vol/d/f000", chmod);
    mem.tamper(&index, Some(good), None);
    let got = list_and_head(&store(&mem), &mem).await;
    assert_eq!(got[0].1["sealfs-mode"], "400");
}

#[tokio::test]
async fn read_only_use_never_writes_and_off_never_reads() {
    let mem = volume(3).await;
    let ro = store(&mem).with_index(IndexUse::Read);
    list_and_head(&ro, &mem).await;
    assert!(mem.raw(&index_key("vol", DIR)).is_none());
    assert_eq!(mem.counts().put.load(Relaxed), 3);
    list_and_head(&store(&mem), &mem).await;
    let (h0, g0) = (heads(&mem), mem.counts().get.load(Relaxed));
    list_and_head(&store(&mem).with_index(IndexUse::Off), &mem).await;
    assert_eq!(heads(&mem) - h0, 3);
    assert_eq!(mem.counts().get.load(Relaxed) - g0, 0);
}

#[tokio::test]
async fn a_damaged_index_is_not_an_error_and_is_replaced() {
    let mem = volume(1).await;
    let index = index_key("vol", DIR);
    mem.put(
        &index,
        Bytes::from(vec![0u8; 10]),
        &Metadata::new(),
        &PutCondition::None,
    )
    .await
    .unwrap();
    let got = list_and_head(&store(&mem), &mem).await;
    assert_eq!(got.len(), 1);
    // Replaced by a good one (conditional on the bad one's ETag).
    let s = store(&mem);
    assert!(s.decode_index(DIR, &mem.raw(&index).unwrap().0).is_ok());
}

#[test]
fn the_stored_form_is_the_mac_then_the_json_body() {
    let mem = MemoryStore::new("bucket");
    let s = AttestedStore::new(
        Arc::new(mem),
        AttributeKeys::derive(&[9u8; 32]),
        "vol",
        AttributeRule::Strict,
    );
    let stored = s.encode_index("vol/d/", Default::default());
    let body = br#"{"format":1,"dir":"vol/d/","entries":{}}"#;
    assert_eq!(&stored[32..], body);
    assert_eq!(stored[..32], s.keys.index_mac("bucket", "vol/d/", body));
    assert_eq!(s.decode_index("vol/d/", &stored), Ok(Default::default()));
}
