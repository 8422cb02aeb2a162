//! One entry of a volume's audit trail: its JSON form, its object name, and
//! the encryption that keeps it the volume owners' secret and their word.
//!
//! An entry is one JSON line, the whole body of the object
//! `<prefix>/.sealfs/audit/<YYYY-MM>/<YYYYMMDD>T<HHMMSS>.<mmm>Z-<writer><seq>`
//! (8 hex digits each): names sort in time order, a month is one LIST
//! prefix, the writer (random) keeps two mounts writing in the same
//! millisecond apart, and its count keeps its own entries in order. The
//! line is `{"v":1,"sealed":"<base64>"}`: the entry's JSON encrypted with
//! AES-256-GCM under a key only the volume's owners can derive, with the
//! name as associated data. So whoever can read the bucket does not learn
//! who was granted what, and nobody without the volume key can forge an
//! entry, edit one, or copy one to another name.

use crate::grants::expiry::Until;
use crate::grants::{GrantAction, GrantChange};
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::{SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// The version of the entry format.
pub const ENTRY_VERSION: u32 = 1;

/// The largest entry body read; anything longer is not an entry.
pub const MAX_ENTRY_BYTES: u64 = 16 * 1024;

/// The key entries are encrypted with, derived from the volume key
/// (`HKDF-SHA-256(volume key, "sealfs/v1/audit")`).
pub struct AuditKey(Zeroizing<[u8; 32]>);

const NONCE_LEN: usize = 12;

impl AuditKey {
    pub fn derive(volume_key: &[u8]) -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        hkdf::Hkdf::<Sha256>::new(None, volume_key)
            .expand(b"sealfs/v1/audit", k.as_mut())
            .expect("valid length");
        AuditKey(k)
    }

    /// `"sealfs/v1/audit-entry" || u64_be(len name) || name`: an entry
    /// opens under its own name only.
    fn aad(name: &str) -> Vec<u8> {
        let mut aad = b"sealfs/v1/audit-entry".to_vec();
        aad.extend_from_slice(&(name.len() as u64).to_be_bytes());
        aad.extend_from_slice(name.as_bytes());
        aad
    }

    /// nonce || ciphertext || tag
    fn seal(&self, name: &str, plain: &[u8], nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let cipher = Aes256Gcm::new_from_slice(self.0.as_ref()).expect("32-byte key");
        let aad = Self::aad(name);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .expect("in-memory encryption");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    fn open(&self, name: &str, blob: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if blob.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let cipher = Aes256Gcm::new_from_slice(self.0.as_ref()).expect("32-byte key");
        let aad = Self::aad(name);
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .ok()
            .map(Zeroizing::new)
    }
}

/// The line an entry's object holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    v: u32,
    /// Base64 of nonce || ciphertext || tag.
    sealed: String,
}

/// One change of access, as the trail keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub v: u32,
    /// When it was recorded, UTC to the millisecond: `2026-12-03T06:04:10.123Z`.
    pub time: String,
    /// Who made the change: the caller's ARN.
    pub actor: String,
    pub action: GrantAction,
    /// The file: `s3://BUCKET/KEY`.
    pub file: String,
    /// The file id the grant names (the `sealfs:file` of the KMS encryption
    /// context, which CloudTrail logs with each `Decrypt`), when known.
    pub file_id: Option<String>,
    /// `alice`, `role/NAME` or `group/NAME`.
    pub grantee: String,
    /// A share's end.
    pub until: Option<String>,
    /// A move's new name (`s3://BUCKET/KEY`).
    pub to: Option<String>,
    /// A re-key's new file id.
    pub new_file_id: Option<String>,
}

impl Entry {
    /// The entry for `change`, made by `actor` at `at`.
    pub fn of(change: &GrantChange, actor: &str, at: SystemTime) -> Entry {
        let url = |key: &str| format!("s3://{}/{key}", change.bucket);
        let (to, new_file_id) = match change.action {
            GrantAction::Move => (change.to.as_deref().map(url), None),
            GrantAction::Rekey => (None, change.to.clone()),
            _ => (None, None),
        };
        Entry {
            v: ENTRY_VERSION,
            time: Stamp::of(at).iso8601(),
            actor: actor.to_string(),
            action: change.action,
            file: url(&change.key),
            file_id: change.file_id.clone(),
            grantee: change.grantee.to_string(),
            until: change.until.map(|u| u.iso8601()),
            to,
            new_file_id,
        }
    }

    /// The body of the object `name` holding this entry (a random nonce).
    pub fn sealed_body(&self, key: &AuditKey, name: &str) -> Vec<u8> {
        self.sealed_body_with(key, name, rand::random())
    }

    fn sealed_body_with(&self, key: &AuditKey, name: &str, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let plain = Zeroizing::new(serde_json::to_vec(self).expect("serializable"));
        let line = Sealed {
            v: ENTRY_VERSION,
            sealed: B64.encode(key.seal(name, &plain, nonce)),
        };
        let mut body = serde_json::to_vec(&line).expect("serializable");
        body.push(b'\n');
        body
    }

    /// The entry in `body`, read from the object `name`, if it opens under
    /// `key` and that name; else why not. Hostile input: any bytes give an
    /// answer.
    pub fn open(key: &AuditKey, name: &str, body: &[u8]) -> Result<Entry, String> {
        if body.len() as u64 > MAX_ENTRY_BYTES {
            return Err(format!("{} bytes: too long for an entry", body.len()));
        }
        let text = body.strip_suffix(b"\n").unwrap_or(body);
        let line: Sealed =
            serde_json::from_slice(text).map_err(|e| format!("not an audit entry: {e}"))?;
        if line.v != ENTRY_VERSION {
            return Err(format!("unknown entry version {}", line.v));
        }
        let blob = B64
            .decode(line.sealed.as_bytes())
            .map_err(|_| "not an audit entry: not base64".to_string())?;
        let plain = key.open(name, &blob).ok_or_else(|| {
            "does not authenticate under this volume's key and this name \
             (forged, edited, or copied from another name or volume)"
                .to_string()
        })?;
        let entry: Entry = serde_json::from_slice(&plain)
            .map_err(|e| format!("authenticates but is not an entry: {e}"))?;
        if entry.v != ENTRY_VERSION {
            return Err(format!("unknown entry version {}", entry.v));
        }
        Ok(entry)
    }
}

/// An instant to the millisecond, as entries and their names write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    unix_ms: i64,
}

impl Stamp {
    pub fn of(at: SystemTime) -> Stamp {
        let ms = match at.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        };
        Stamp { unix_ms: ms }
    }

    fn second(self) -> Until {
        // Entries are written now; an instant outside 1970..=9999 is a
        // broken clock, shown as the epoch rather than refused.
        Until::from_unix(self.unix_ms.div_euclid(1000))
            .unwrap_or_else(|| Until::from_unix(0).expect("the epoch"))
    }

    /// `2026-12-03T06:04:10.123Z`
    pub fn iso8601(self) -> String {
        let s = self.second().iso8601();
        format!(
            "{}.{:03}Z",
            s.trim_end_matches('Z'),
            self.unix_ms.rem_euclid(1000)
        )
    }

    /// `2026-12/20261203T060410.123Z`: the name an entry of this instant
    /// starts with (its month, then the instant).
    pub fn name_prefix(self) -> String {
        let iso = self.second().iso8601();
        let tag = self.second().tag();
        format!(
            "{}/{}.{:03}Z",
            &iso[..7],
            tag.trim_end_matches('Z'),
            self.unix_ms.rem_euclid(1000)
        )
    }

    /// The name of a new entry: the instant, the writer (a random number
    /// each trail draws once) and the writer's count of entries, so that one
    /// writer's entries of the same millisecond keep their order.
    pub fn new_name(self, writer: u32, seq: u32) -> String {
        format!("{}-{writer:08x}{seq:08x}", self.name_prefix())
    }

    #[cfg(test)]
    pub fn after(self, d: std::time::Duration) -> Stamp {
        Stamp {
            unix_ms: self.unix_ms + d.as_millis() as i64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::Grantee;
    use proptest::prelude::*;
    use std::time::Duration;

    fn change() -> GrantChange {
        GrantChange::new(
            GrantAction::Share,
            "bucket",
            "vol/a.txt",
            &Grantee::parse("role/reader").unwrap().grantee,
        )
        .file_id("00112233445566778899aabbccddeeff")
        .until(Until::from_unix(1_800_000_000))
    }

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_764_741_850_123)
    }

    #[test]
    fn names_and_times_sort_with_the_instant() {
        let s = Stamp::of(at());
        assert_eq!(s.iso8601(), "2025-12-03T06:04:10.123Z");
        assert_eq!(s.name_prefix(), "2025-12/20251203T060410.123Z");
        let n = s.new_name(0xabc, 2);
        assert_eq!(n, "2025-12/20251203T060410.123Z-00000abc00000002");
        assert!(s.new_name(0xabc, 10) > n);
        let later = s.after(Duration::from_millis(900)).name_prefix();
        assert!(later > s.name_prefix(), "{later}");
        let next_month = Stamp::of(UNIX_EPOCH + Duration::from_secs(1_767_225_600));
        assert_eq!(next_month.name_prefix(), "2026-01/20260101T000000.000Z");
    }

    #[test]
    fn an_entry_opens_under_its_key_and_name_only() {
        let key = AuditKey::derive(&[7; 32]);
        let e = Entry::of(&change(), "arn:aws:iam::1:user/owner", at());
        assert_eq!(e.file, "s3://bucket/vol/a.txt");
        assert_eq!(e.grantee, "role/reader");
        assert_eq!(e.until.as_deref(), Some("2027-01-15T08:00:00Z"));
        let body = e.sealed_body(&key, "n1");
        assert_eq!(body.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(Entry::open(&key, "n1", &body).unwrap(), e);
        // Nothing of the entry shows in the object.
        let text = String::from_utf8(body.clone()).unwrap();
        for secret in ["reader", "a.txt", "owner", "share", "0011223344"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        // Another name, another volume's key: refused.
        assert!(Entry::open(&key, "n2", &body)
            .unwrap_err()
            .contains("authenticate"));
        let other = AuditKey::derive(&[8; 32]);
        assert!(Entry::open(&other, "n1", &body).is_err());
        // A plain entry, an unknown field, another version, garbage, a huge body.
        let plain = serde_json::to_vec(&e).unwrap();
        assert!(Entry::open(&key, "n1", &plain).is_err());
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["extra"] = 1.into();
        assert!(Entry::open(&key, "n1", v.to_string().as_bytes()).is_err());
        v = serde_json::from_slice(&body).unwrap();
        v["v"] = 2.into();
        assert!(Entry::open(&key, "n1", v.to_string().as_bytes())
            .unwrap_err()
            .contains("version"));
        assert!(Entry::open(&key, "n1", b"\xff\x00").is_err());
        assert!(Entry::open(&key, "n1", br#"{"v":1,"sealed":"AAAA"}"#).is_err());
        let huge = vec![b' '; MAX_ENTRY_BYTES as usize + 1];
        assert!(Entry::open(&key, "n1", &huge)
            .unwrap_err()
            .contains("too long"));
    }

    /// The SHA-256 of the body below; `scripts/format_reference.py`
    /// computes it from docs/FORMAT.md alone.
    const GOLDEN_AUDIT_BODY: &str =
        "e904679ed1a54fbb78c422d382f5b67b3fd543d7f2a1aa308ed62191f1673533";

    /// Volume key 00 01 .. 1f, nonce a0 a1 .. ab, this name and entry.
    #[test]
    fn golden_audit_entry() {
        let vk: Vec<u8> = (0u8..32).collect();
        let key = AuditKey::derive(&vk);
        let name = "2026-12/20261203T060410.123Z-0000000100000002";
        let e = Entry {
            v: 1,
            time: "2026-12-03T06:04:10.123Z".into(),
            actor: "arn:aws:iam::111122223333:user/carol".into(),
            action: GrantAction::Share,
            file: "s3://bucket/vol/report.pdf".into(),
            file_id: Some("404142434445464748494a4b4c4d4e4f".into()),
            grantee: "role/analytics-reader".into(),
            until: Some("2026-12-10T06:04:10Z".into()),
            to: None,
            new_file_id: None,
        };
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| 0xa0 + i as u8);
        let body = e.sealed_body_with(&key, name, nonce);
        use sha2::Digest;
        assert_eq!(hex::encode(Sha256::digest(&body)), GOLDEN_AUDIT_BODY);
        assert_eq!(Entry::open(&key, name, &body).unwrap(), e);
    }

    #[test]
    fn moves_and_rekeys_say_where_the_grant_went() {
        let g = Grantee::user("alice");
        let mv = GrantChange::new(GrantAction::Move, "b", "v/x", &g).to("v/y");
        let e = Entry::of(&mv, "a", at());
        assert_eq!((e.to.as_deref(), e.new_file_id), (Some("s3://b/v/y"), None));
        let rk = GrantChange::new(GrantAction::Rekey, "b", "v/x", &g)
            .file_id("aa")
            .to("bb");
        let e = Entry::of(&rk, "a", at());
        assert_eq!(
            (e.to.as_deref(), e.new_file_id.as_deref()),
            (None, Some("bb"))
        );
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""action":"rekey""#), "{json}");
    }

    proptest! {
        /// Any change to any byte of a sealed entry is caught.
        #[test]
        fn every_edit_of_an_entry_is_caught(i in any::<prop::sample::Index>(), x in 1u8..=255) {
            let key = AuditKey::derive(&[3; 32]);
            let e = Entry::of(&change(), "arn:aws:iam::1:user/o", at());
            let mut body = e.sealed_body(&key, "n");
            let i = i.index(body.len() - 1); // the final newline is optional
            body[i] ^= x;
            // Base64 has no other spelling of the same bytes that a flip
            // could produce, except in the unused bits of the last
            // character: only then may the entry still open, unchanged.
            match Entry::open(&key, "n", &body) {
                Err(_) => {}
                Ok(got) => prop_assert_eq!(got, e),
            }
        }
    }
}
