//! Key schedule: one data key (DK) per file, fresh subkeys per version.
//!
//! `PRK = HKDF-Extract-SHA-512(salt, DK)`, then for each purpose
//! `HKDF-Expand(PRK, label || file_id, 32)` with these labels:
//!
//! | label                      | use                                         |
//! |----------------------------|---------------------------------------------|
//! | `sealfs/v1/commitment`     | key commitment stored in the header         |
//! | `sealfs/v1/segment`        | AES-256-GCM key for the body segments       |
//! | `sealfs/v1/header-mac`     | HMAC-SHA-256 key for the header MAC         |
//! | `sealfs/v1/path-binding`   | HMAC-SHA-256 key for the bucket/key binding |
//!
//! The salt is drawn fresh for every version, so no (key, nonce) pair is ever
//! used twice even though the DK is reused across versions of one file.

use super::{BranchId, DataKey, FileId, TAG_LEN};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha512};
use std::sync::Arc;
use zeroize::Zeroizing;

const LABEL_COMMITMENT: &[u8] = b"sealfs/v1/commitment";
const LABEL_SEGMENT: &[u8] = b"sealfs/v1/segment";
const LABEL_HEADER_MAC: &[u8] = b"sealfs/v1/header-mac";
const LABEL_BINDING: &[u8] = b"sealfs/v1/path-binding";
const LABEL_FILE_KEY: &[u8] = b"sealfs/v2/file-key";

/// The data key of a file sealed under a branch key (sealing fields version
/// 2): `HKDF-SHA-512(salt = branch id, IKM = branch key, info =
/// "sealfs/v2/file-key" || file id, 32)`. One KMS call makes a branch key
/// for thousands of files, yet each file still has a key of its own: knowing
/// one file's key (a grantee's) tells nothing of the branch key or of any
/// other file's key.
pub fn file_key(branch_key: &DataKey, branch: &BranchId, file: &FileId) -> DataKey {
    let mut out = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha512>::new(Some(&branch.0), branch_key.expose())
        .expand_multi_info(&[LABEL_FILE_KEY, &file.0], out.as_mut())
        .expect("32 bytes is a valid HKDF-SHA-512 length");
    DataKey::from_bytes(*out)
}

/// AES-256-GCM under one key (cheap to clone). AWS-LC's assembly (AES-NI with
/// stitched GHASH) seals and opens about four times as fast as RustCrypto's
/// `aes-gcm` on the benchmark machine (`scripts/bench-format`), which is what
/// sequential reads and writes spend most of their CPU on. AWS-LC cleanses the
/// key schedule when the key is dropped.
#[derive(Clone)]
pub(crate) struct SegmentCipher(Arc<LessSafeKey>);

impl SegmentCipher {
    /// The cipher of `key` (also used for what sealfs keeps on local disk).
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        SegmentCipher(Arc::new(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key).expect("32-byte AES-256 key"),
        )))
    }

    /// Encrypts `buf` in place; returns the tag.
    pub(crate) fn seal_in_place(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        buf: &mut [u8],
    ) -> [u8; TAG_LEN] {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .expect("segment within AES-GCM limits");
        tag.as_ref().try_into().expect("16-byte GCM tag")
    }

    /// Verifies `ciphertext`/`tag` and decrypts into `out` (same length).
    /// Nothing in `out` may be used on failure.
    pub(crate) fn open_into(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        out: &mut [u8],
    ) -> Result<(), ()> {
        self.0
            .open_separate_gather(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                ciphertext,
                tag,
                out,
            )
            .map_err(|_| ())
    }
    /// Verifies and decrypts `in_out` (ciphertext || tag) in place; returns
    /// the plaintext's length (the front of `in_out`). Nothing in `in_out`
    /// may be used on failure.
    pub(crate) fn open_in_place(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<usize, ()> {
        self.0
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .map(|plain| plain.len())
            .map_err(|_| ())
    }
}

/// The subkeys of one version of one file.
pub struct VersionKeys {
    pub(crate) commitment: [u8; 32],
    pub(crate) segment: SegmentCipher,
    pub(crate) header_mac: Zeroizing<[u8; 32]>,
    pub(crate) binding: Zeroizing<[u8; 32]>,
}

impl VersionKeys {
    pub fn derive(dk: &DataKey, salt: &[u8; 32], file_id: &FileId) -> Self {
        let hk = Hkdf::<Sha512>::new(Some(salt), dk.expose());
        let expand = |label: &[u8]| {
            let mut info = Vec::with_capacity(label.len() + 16);
            info.extend_from_slice(label);
            info.extend_from_slice(&file_id.0);
            let mut out = Zeroizing::new([0u8; 32]);
            hk.expand(&info, out.as_mut())
                .expect("32 bytes is a valid HKDF-SHA-512 output length");
            out
        };
        let segment_key = expand(LABEL_SEGMENT);
        VersionKeys {
            commitment: *expand(LABEL_COMMITMENT),
            segment: SegmentCipher::new(&segment_key),
            header_mac: expand(LABEL_HEADER_MAC),
            binding: expand(LABEL_BINDING),
        }
    }

    pub(crate) fn header_mac(&self, input: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.header_mac, &[input])
    }
}

/// HMAC over (bucket, key, header digest), length-prefixed so that no two
/// different (bucket, key) pairs produce the same input.
pub fn binding_mac(
    keys: &VersionKeys,
    bucket: &str,
    key: &str,
    header_digest: &[u8; 32],
) -> [u8; 32] {
    let bl = (bucket.len() as u64).to_be_bytes();
    let kl = (key.len() as u64).to_be_bytes();
    hmac_sha256(
        &keys.binding,
        &[&bl, bucket.as_bytes(), &kl, key.as_bytes(), header_digest],
    )
}

fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subkeys_are_distinct_and_depend_on_every_input() {
        let dk = DataKey::from_bytes([9; 32]);
        let fid = FileId([1; 16]);
        let a = VersionKeys::derive(&dk, &[0; 32], &fid);
        assert_ne!(*a.header_mac, *a.binding);
        assert_ne!(a.commitment, *a.header_mac);
        let other_salt = VersionKeys::derive(&dk, &[1; 32], &fid);
        assert_ne!(a.commitment, other_salt.commitment);
        let other_file = VersionKeys::derive(&dk, &[0; 32], &FileId([2; 16]));
        assert_ne!(a.commitment, other_file.commitment);
        let other_dk = VersionKeys::derive(&DataKey::from_bytes([8; 32]), &[0; 32], &fid);
        assert_ne!(a.commitment, other_dk.commitment);
    }

    #[test]
    fn binding_is_unambiguous() {
        let keys = VersionKeys::derive(&DataKey::from_bytes([9; 32]), &[0; 32], &FileId([1; 16]));
        let d = [5; 32];
        assert_ne!(
            binding_mac(&keys, "ab", "c", &d),
            binding_mac(&keys, "a", "bc", &d)
        );
        assert_eq!(
            binding_mac(&keys, "a", "b", &d),
            binding_mac(&keys, "a", "b", &d)
        );
    }
}
