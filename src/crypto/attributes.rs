//! Authenticated object attributes (format 2): the MAC over an object's
//! sealfs metadata, and the encryption of its `user.*` xattrs.
//!
//! Both keys derive from the volume key, which only holders of the volume's
//! KMS key can unwrap:
//!
//! ```text
//! attribute MAC key = HKDF-SHA-256(volume key, "sealfs/v2/attribute-mac")
//! xattr key         = HKDF-SHA-256(volume key, "sealfs/v2/xattrs")
//! index key         = HKDF-SHA-256(volume key, "sealfs/v2/attribute-index")
//! MAC   = HMAC-SHA-256(attribute MAC key, "sealfs/v2/attributes" || lp(bucket) || lp(key)
//!                      || for each sealfs-* entry but the MAC, sorted: lp(name) || lp(value))
//! blob  = nonce(12, random) || AES-256-GCM(xattr key, nonce,
//!                      AAD = "sealfs/v2/xattrs" || lp(bucket) || lp(key),
//!                      for each xattr, sorted: lp(name) || lp(value))
//! index MAC = HMAC-SHA-256(index key, "sealfs/v2/attribute-index" || lp(bucket)
//!                      || lp(directory prefix) || index body)
//! lp(x) = u32_be(len x) || x
//! ```
//!
//! The MAC binds the attributes to the object's key, and (through the
//! `sealfs-bind` entry, itself a MAC of the header) to one version of a
//! sealed file. Pure: bytes in, bytes out.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

const MAC_LABEL: &[u8] = b"sealfs/v2/attribute-mac";
const XATTR_LABEL: &[u8] = b"sealfs/v2/xattrs";
const MAC_DOMAIN: &[u8] = b"sealfs/v2/attributes";
const INDEX_LABEL: &[u8] = b"sealfs/v2/attribute-index";
const NONCE_LEN: usize = 12;

/// The attribute keys of one volume.
pub struct AttributeKeys {
    mac: Zeroizing<[u8; 32]>,
    xattr: Zeroizing<[u8; 32]>,
    index: Zeroizing<[u8; 32]>,
}

fn lp(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn object_id(domain: &[u8], bucket: &str, key: &str) -> Vec<u8> {
    let mut out = domain.to_vec();
    lp(&mut out, bucket.as_bytes());
    lp(&mut out, key.as_bytes());
    out
}

impl AttributeKeys {
    /// Derives the keys from the volume key.
    pub fn derive(volume_key: &[u8]) -> Self {
        let hk = Hkdf::<Sha256>::new(None, volume_key);
        let expand = |label: &[u8]| {
            let mut k = Zeroizing::new([0u8; 32]);
            hk.expand(label, k.as_mut()).expect("valid length");
            k
        };
        AttributeKeys {
            mac: expand(MAC_LABEL),
            xattr: expand(XATTR_LABEL),
            index: expand(INDEX_LABEL),
        }
    }

    /// The MAC of a directory's attribute index: binds its body to the
    /// directory, so an index can be neither edited nor moved to another
    /// directory (only an older index of the same directory can be put
    /// back, whose entries LIST then no longer matches).
    pub fn index_mac(&self, bucket: &str, dir: &str, body: &[u8]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.index.as_ref()).expect("any length");
        m.update(&object_id(INDEX_LABEL, bucket, dir));
        m.update(body);
        m.finalize().into_bytes().into()
    }

    /// Constant-time check of an index MAC.
    pub fn check_index(&self, bucket: &str, dir: &str, body: &[u8], mac: &[u8]) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.index_mac(bucket, dir, body)[..], mac).into()
    }

    /// The MAC of `entries` (name, value) as stored at `bucket`/`key`.
    pub fn mac<'a>(
        &self,
        bucket: &str,
        key: &str,
        entries: impl Iterator<Item = (&'a String, &'a String)>,
    ) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.mac.as_ref()).expect("any length");
        m.update(&object_id(MAC_DOMAIN, bucket, key));
        let mut buf = Vec::new();
        for (name, value) in entries {
            buf.clear();
            lp(&mut buf, name.as_bytes());
            lp(&mut buf, value.as_bytes());
            m.update(&buf);
        }
        m.finalize().into_bytes().into()
    }

    /// Constant-time check of `mac` (hex) against the entries.
    pub fn check<'a>(
        &self,
        bucket: &str,
        key: &str,
        entries: impl Iterator<Item = (&'a String, &'a String)>,
        mac_hex: &str,
    ) -> bool {
        let expected = hex::encode(self.mac(bucket, key, entries));
        subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), mac_hex.as_bytes()).into()
    }

    /// Encrypts an xattr set for the object at `bucket`/`key`.
    pub fn seal_xattrs(
        &self,
        bucket: &str,
        key: &str,
        xattrs: &BTreeMap<Vec<u8>, Vec<u8>>,
    ) -> Vec<u8> {
        let mut plain = Zeroizing::new(Vec::new());
        for (name, value) in xattrs {
            lp(&mut plain, name);
            lp(&mut plain, value);
        }
        let nonce: [u8; NONCE_LEN] = rand::random();
        let cipher = Aes256Gcm::new_from_slice(self.xattr.as_ref()).expect("32-byte key");
        let aad = object_id(XATTR_LABEL, bucket, key);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .expect("in-memory encryption");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts a blob made by [`AttributeKeys::seal_xattrs`] for this
    /// object; `None` when it does not authenticate or is malformed.
    pub fn open_xattrs(
        &self,
        bucket: &str,
        key: &str,
        blob: &[u8],
    ) -> Option<BTreeMap<Vec<u8>, Vec<u8>>> {
        if blob.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let cipher = Aes256Gcm::new_from_slice(self.xattr.as_ref()).expect("32-byte key");
        let aad = object_id(XATTR_LABEL, bucket, key);
        let plain = Zeroizing::new(
            cipher
                .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
                .ok()?,
        );
        let mut out = BTreeMap::new();
        let mut rest: &[u8] = &plain;
        while !rest.is_empty() {
            let name = take_lp(&mut rest)?;
            let value = take_lp(&mut rest)?;
            out.insert(name.to_vec(), value.to_vec());
        }
        Some(out)
    }
}

fn take_lp<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let v = rest.get(4..4usize.checked_add(len)?)?;
    *rest = &rest[4 + len..];
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mac_binds_bucket_key_and_every_entry() {
        let k = AttributeKeys::derive(&[7u8; 32]);
        let mut m = BTreeMap::new();
        m.insert("sealfs-mode".to_string(), "600".to_string());
        m.insert("sealfs-uid".to_string(), "1000".to_string());
        let mac = hex::encode(k.mac("b", "vol/f", m.iter()));
        assert!(k.check("b", "vol/f", m.iter(), &mac));
        assert!(!k.check("b", "vol/g", m.iter(), &mac), "moved");
        assert!(!k.check("c", "vol/f", m.iter(), &mac), "other bucket");
        let mut w = m.clone();
        w.insert("sealfs-mode".into(), "666".into());
        assert!(!k.check("b", "vol/f", w.iter(), &mac), "widened");
        let mut w = m.clone();
        w.insert("sealfs-type".into(), "l".into());
        assert!(!k.check("b", "vol/f", w.iter(), &mac), "type added");
        let other = AttributeKeys::derive(&[8u8; 32]);
        assert!(!other.check("b", "vol/f", m.iter(), &mac), "other volume");
        // Length prefixes: moving a byte between name and value changes the MAC.
        let a: BTreeMap<String, String> = [("ab".to_string(), "c".to_string())].into();
        let b: BTreeMap<String, String> = [("a".to_string(), "bc".to_string())].into();
        assert_ne!(k.mac("b", "k", a.iter()), k.mac("b", "k", b.iter()));
    }

    #[test]
    fn index_mac_binds_bucket_directory_and_body() {
        let k = AttributeKeys::derive(&[7u8; 32]);
        let mac = k.index_mac("b", "vol/d/", b"body");
        assert!(k.check_index("b", "vol/d/", b"body", &mac));
        assert!(!k.check_index("b", "vol/e/", b"body", &mac), "moved");
        assert!(!k.check_index("c", "vol/d/", b"body", &mac), "other bucket");
        assert!(!k.check_index("b", "vol/d/", b"bodY", &mac), "edited");
        assert!(!k.check_index("b", "vol/d/", b"body", &mac[..31]), "cut");
        let other = AttributeKeys::derive(&[8u8; 32]);
        assert!(
            !other.check_index("b", "vol/d/", b"body", &mac),
            "other volume"
        );
        // Its key is not the attribute MAC's.
        let m: BTreeMap<String, String> = BTreeMap::new();
        assert_ne!(k.mac("b", "vol/d/", m.iter()), mac);
    }

    #[test]
    fn xattrs_are_bound_to_their_object() {
        let k = AttributeKeys::derive(&[1u8; 32]);
        let x: BTreeMap<Vec<u8>, Vec<u8>> = [(b"color".to_vec(), b"blue".to_vec())].into();
        let blob = k.seal_xattrs("b", "vol/f", &x);
        assert!(!blob.windows(4).any(|w| w == b"blue"), "encrypted");
        assert_eq!(k.open_xattrs("b", "vol/f", &blob), Some(x));
        assert_eq!(k.open_xattrs("b", "vol/g", &blob), None);
        let mut bad = blob.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(k.open_xattrs("b", "vol/f", &bad), None);
        assert_eq!(k.open_xattrs("b", "vol/f", &blob[..5]), None);
    }

    proptest! {
        #[test]
        fn xattr_sets_round_trip(x in proptest::collection::btree_map(
            proptest::collection::vec(any::<u8>(), 1..20),
            proptest::collection::vec(any::<u8>(), 0..100), 0..10)) {
            let k = AttributeKeys::derive(&[3u8; 32]);
            let blob = k.seal_xattrs("b", "k", &x);
            prop_assert_eq!(k.open_xattrs("b", "k", &blob), Some(x));
        }

        #[test]
        fn any_blob_opens_or_is_refused(blob in proptest::collection::vec(any::<u8>(), 0..200)) {
            let k = AttributeKeys::derive(&[3u8; 32]);
            prop_assert_eq!(k.open_xattrs("b", "k", &blob), None);
        }
    }
}
