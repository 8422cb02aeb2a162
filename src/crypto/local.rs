//! Encryption of what sealfs keeps on local disk: staged file content in
//! random-access blocks, and small records (journals, spool entries, cache
//! entries) as single blobs. Everything is under the mount's local key,
//! which is stored only wrapped by KMS (see `crate::local`).
//!
//! ```text
//! file key  = HKDF-SHA-256(local key, salt = file salt, "sealfs/local/v1/file")
//! block i   = nonce(12, random) || AES-256-GCM(file key, nonce,
//!                 AAD = u64_be(i), data(BLOCK) || u32_be(used)) [|| tag(16)]
//! record key = HKDF-SHA-256(local key, "sealfs/local/v1/record")
//! record    = "SFLR1" || nonce(12, random) || AES-256-GCM(record key, nonce,
//!                 AAD = purpose, body)
//! ```
//!
//! A block is rewritten whole with a fresh nonce; `used` is how many of its
//! bytes belong to the file when it is the last block, so the file's length
//! survives a crash without any other record. Pure: bytes in, bytes out.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Plaintext bytes per block of a staged file.
pub const BLOCK: usize = 16 << 10;
/// Bytes one block takes on disk.
pub const SEALED_BLOCK: usize = NONCE_LEN + BLOCK + 4 + TAG_LEN;
/// Salt bytes of a staged file.
pub const SALT_LEN: usize = 16;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const FILE_LABEL: &[u8] = b"sealfs/local/v1/file";
const RECORD_LABEL: &[u8] = b"sealfs/local/v1/record";
const RECORD_MAGIC: &[u8] = b"SFLR1";

/// The mount's local key (32 bytes), zeroed on drop.
pub struct LocalSecret(Zeroizing<[u8; 32]>);

impl LocalSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        LocalSecret(Zeroizing::new(bytes))
    }

    fn derive(&self, salt: Option<&[u8]>, label: &[u8]) -> Aes256Gcm {
        let hk = Hkdf::<Sha256>::new(salt, self.0.as_ref());
        let mut k = Zeroizing::new([0u8; 32]);
        hk.expand(label, k.as_mut())
            .expect("32 bytes is a valid length");
        Aes256Gcm::new_from_slice(k.as_ref()).expect("32-byte key")
    }

    /// The cipher of one staged file, from its salt.
    pub fn file_cipher(&self, salt: &[u8; SALT_LEN]) -> BlockCipher {
        BlockCipher(self.derive(Some(salt), FILE_LABEL))
    }

    /// Bytes that would reveal the key if they were stored (tests check
    /// that files never contain them).
    #[cfg(test)]
    pub fn record_cipher_probe(&self) -> [u8; 32] {
        *self.0
    }

    /// The cipher of small records.
    pub fn record_cipher(&self) -> RecordCipher {
        RecordCipher(self.derive(None, RECORD_LABEL))
    }
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut n);
    n
}

/// Seals and opens the blocks of one staged file.
#[derive(Clone)]
pub struct BlockCipher(Aes256Gcm);

impl BlockCipher {
    /// Block `index`: `data` (at most [`BLOCK`] bytes, zero-filled to it)
    /// of which `used` bytes belong to the file if it is the last block.
    pub fn seal(&self, index: u64, data: &[u8], used: u32) -> Vec<u8> {
        debug_assert!(data.len() <= BLOCK && used as usize <= BLOCK);
        let mut plain = Zeroizing::new(vec![0u8; BLOCK + 4]);
        plain[..data.len()].copy_from_slice(data);
        plain[BLOCK..].copy_from_slice(&used.to_be_bytes());
        let nonce = random_nonce();
        let aad = index.to_be_bytes();
        let ct = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption cannot fail");
        let mut out = Vec::with_capacity(SEALED_BLOCK);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens block `index`: its data ([`BLOCK`] bytes) and `used`. `None`
    /// when it does not authenticate (corrupt, or moved from elsewhere).
    pub fn open(&self, index: u64, sealed: &[u8]) -> Option<(Zeroizing<Vec<u8>>, u32)> {
        if sealed.len() != SEALED_BLOCK {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let aad = index.to_be_bytes();
        let mut plain = Zeroizing::new(
            self.0
                .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
                .ok()?,
        );
        let used = u32::from_be_bytes(plain[BLOCK..].try_into().expect("4 bytes"));
        if used as usize > BLOCK {
            return None;
        }
        plain.truncate(BLOCK);
        Some((plain, used))
    }
}

/// Seals and opens small records, each bound to its purpose.
pub struct RecordCipher(Aes256Gcm);

impl RecordCipher {
    pub fn seal(&self, purpose: &str, body: &[u8]) -> Vec<u8> {
        let nonce = random_nonce();
        let ct = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: body,
                    aad: purpose.as_bytes(),
                },
            )
            .expect("AES-GCM encryption cannot fail");
        let mut out = RECORD_MAGIC.to_vec();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// The body of a record sealed for `purpose`; `None` when it does not
    /// authenticate.
    pub fn open(&self, purpose: &str, record: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let rest = record.strip_prefix(RECORD_MAGIC)?;
        if rest.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        self.0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: purpose.as_bytes(),
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> LocalSecret {
        LocalSecret::from_bytes([7; 32])
    }

    #[test]
    fn blocks_round_trip_and_are_bound_to_their_file_and_index() {
        let c = secret().file_cipher(&[1; SALT_LEN]);
        let sealed = c.seal(3, b"hello", 5);
        assert_eq!(sealed.len(), SEALED_BLOCK);
        let (data, used) = c.open(3, &sealed).unwrap();
        assert_eq!((&data[..5], used), (&b"hello"[..], 5));
        assert!(data[5..].iter().all(|&b| b == 0), "zero-filled");
        assert!(c.open(4, &sealed).is_none(), "another index");
        let other = secret().file_cipher(&[2; SALT_LEN]);
        assert!(other.open(3, &sealed).is_none(), "another file");
        let mut flipped = sealed.clone();
        flipped[100] ^= 1;
        assert!(c.open(3, &flipped).is_none(), "a flipped bit");
        assert_ne!(c.seal(3, b"hello", 5), sealed, "a fresh nonce each time");
    }

    #[test]
    fn records_round_trip_only_for_their_purpose() {
        let c = secret().record_cipher();
        let r = c.seal("journal", b"{\"key\":\"a\"}");
        assert_eq!(&c.open("journal", &r).unwrap()[..], b"{\"key\":\"a\"}");
        assert!(c.open("spool", &r).is_none());
        assert!(LocalSecret::from_bytes([8; 32])
            .record_cipher()
            .open("journal", &r)
            .is_none());
        assert!(c.open("journal", b"SFLR1short").is_none());
        assert!(!r.windows(3).any(|w| w == b"key"), "no plaintext");
    }
}
