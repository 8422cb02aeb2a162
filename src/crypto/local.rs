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
//! entry key = HKDF-SHA-256(local key, "sealfs/local/v1/entry")
//! entry     = piece 0 || piece 1 || ... (ENTRY_PIECE plaintext bytes each,
//!             the last 0..=ENTRY_PIECE; an empty entry is one empty piece)
//! piece i   = nonce(12, random) || AES-256-GCM(entry key, nonce,
//!                 AAD = u32_be(len name) || name || u64_be(entry length)
//!                       || u64_be(i), data) || tag(16)
//! ```
//!
//! A block is rewritten whole with a fresh nonce; `used` is how many of its
//! bytes belong to the file when it is the last block, so the file's length
//! survives a crash without any other record.
//!
//! A read cache entry is sealed in 4 KiB pieces so that a small random read
//! opens one piece, not the whole segment (the difference between ~10 µs and
//! ~100 µs a read). Every piece is bound to the entry's name and length, so
//! a piece moved between entries or positions, or an entry cut short or
//! extended, fails to open. Pure: bytes in, bytes out.

use super::schedule::SegmentCipher as Gcm;
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
const ENTRY_LABEL: &[u8] = b"sealfs/local/v1/entry";

/// Plaintext bytes per piece of a read cache entry.
pub const ENTRY_PIECE: u64 = 4 << 10;
/// Bytes a piece's nonce and tag add.
const PIECE_OVERHEAD: u64 = (NONCE_LEN + TAG_LEN) as u64;
const SEALED_PIECE: u64 = ENTRY_PIECE + PIECE_OVERHEAD;

/// The mount's local key (32 bytes), zeroed on drop.
pub struct LocalSecret(Zeroizing<[u8; 32]>);

impl LocalSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        LocalSecret(Zeroizing::new(bytes))
    }

    fn derive(&self, salt: Option<&[u8]>, label: &[u8]) -> Gcm {
        let hk = Hkdf::<Sha256>::new(salt, self.0.as_ref());
        let mut k = Zeroizing::new([0u8; 32]);
        hk.expand(label, k.as_mut())
            .expect("32 bytes is a valid length");
        Gcm::new(&k)
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

    /// The cipher of read cache entries.
    pub fn entry_cipher(&self) -> EntryCipher {
        EntryCipher(self.derive(None, ENTRY_LABEL))
    }
}

/// A fresh random nonce, from the thread's CSPRNG (seeded and reseeded
/// from the OS): a system call per nonce cost a third of the CPU of filling
/// the read cache, which seals a nonce per 4 KiB.
fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut n);
    n
}

/// Seals and opens the blocks of one staged file.
#[derive(Clone)]
pub struct BlockCipher(Gcm);

impl BlockCipher {
    /// Block `index`: `data` (at most [`BLOCK`] bytes, zero-filled to it)
    /// of which `used` bytes belong to the file if it is the last block.
    pub fn seal(&self, index: u64, data: &[u8], used: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(SEALED_BLOCK);
        self.seal_into(index, data, used, &mut out);
        out
    }

    /// [`BlockCipher::seal`], appended to `out` (runs of blocks are sealed
    /// into one buffer and written with one call).
    pub fn seal_into(&self, index: u64, data: &[u8], used: u32, out: &mut Vec<u8>) {
        debug_assert!(data.len() <= BLOCK && used as usize <= BLOCK);
        let nonce = random_nonce();
        let at = out.len();
        out.resize(at + SEALED_BLOCK, 0);
        let block = &mut out[at..];
        block[..NONCE_LEN].copy_from_slice(&nonce);
        let body = &mut block[NONCE_LEN..NONCE_LEN + BLOCK + 4];
        body[..data.len()].copy_from_slice(data);
        body[BLOCK..].copy_from_slice(&used.to_be_bytes());
        let tag = self.0.seal_in_place(nonce, &index.to_be_bytes(), body);
        block[NONCE_LEN + BLOCK + 4..].copy_from_slice(&tag);
    }

    /// Opens block `index`: its data ([`BLOCK`] bytes) and `used`. `None`
    /// when it does not authenticate (corrupt, or moved from elsewhere).
    pub fn open(&self, index: u64, sealed: &[u8]) -> Option<(Zeroizing<Vec<u8>>, u32)> {
        if sealed.len() != SEALED_BLOCK {
            return None;
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(BLOCK + 4);
        let mut plain = Zeroizing::new(vec![0u8; BLOCK + 4]);
        let nonce = nonce.try_into().expect("12 bytes");
        self.0
            .open_into(nonce, &index.to_be_bytes(), ct, tag, &mut plain)
            .ok()?;
        let used = u32::from_be_bytes(plain[BLOCK..].try_into().expect("4 bytes"));
        if used as usize > BLOCK {
            return None;
        }
        plain.truncate(BLOCK);
        Some((plain, used))
    }
}

/// Seals and opens small records, each bound to its purpose.
pub struct RecordCipher(Gcm);

impl RecordCipher {
    pub fn seal(&self, purpose: &str, body: &[u8]) -> Vec<u8> {
        let nonce = random_nonce();
        let mut out = RECORD_MAGIC.to_vec();
        out.extend_from_slice(&nonce);
        let at = out.len();
        out.extend_from_slice(body);
        let tag = self
            .0
            .seal_in_place(nonce, purpose.as_bytes(), &mut out[at..]);
        out.extend_from_slice(&tag);
        out
    }

    /// The body of a record sealed for `purpose`; `None` when it does not
    /// authenticate.
    pub fn open(&self, purpose: &str, record: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let rest = record.strip_prefix(RECORD_MAGIC)?;
        if rest.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut body = Zeroizing::new(vec![0u8; ct.len()]);
        let nonce = nonce.try_into().expect("12 bytes");
        self.0
            .open_into(nonce, purpose.as_bytes(), ct, tag, &mut body)
            .ok()?;
        Some(body)
    }
}

/// Seals read cache entries, and opens any run of an entry's pieces.
pub struct EntryCipher(Gcm);

/// Where the pieces holding a plaintext range lie in an entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Pieces {
    /// Index of the first piece.
    pub first: u64,
    /// Their bytes in the sealed entry.
    pub sealed: std::ops::Range<u64>,
}

fn piece_aad(name: &str, len: u64, index: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(4 + name.len() + 16);
    aad.extend_from_slice(&(name.len() as u32).to_be_bytes());
    aad.extend_from_slice(name.as_bytes());
    aad.extend_from_slice(&len.to_be_bytes());
    aad.extend_from_slice(&index.to_be_bytes());
    aad
}

impl EntryCipher {
    /// The entry `name` holding `plain`.
    pub fn seal(&self, name: &str, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.seal_into(name, plain, &mut out);
        out
    }

    /// [`EntryCipher::seal`] into `out` (cleared first): a writer that
    /// reuses one buffer maps and faults in no new memory per entry.
    pub fn seal_into(&self, name: &str, plain: &[u8], out: &mut Vec<u8>) {
        let len = plain.len() as u64;
        let pieces = plain.len().div_ceil(ENTRY_PIECE as usize).max(1);
        out.clear();
        out.reserve(plain.len() + pieces * PIECE_OVERHEAD as usize);
        for i in 0..pieces {
            let a = (i * ENTRY_PIECE as usize).min(plain.len());
            let b = (a + ENTRY_PIECE as usize).min(plain.len());
            let nonce = random_nonce();
            out.extend_from_slice(&nonce);
            let at = out.len();
            out.extend_from_slice(&plain[a..b]);
            let aad = piece_aad(name, len, i as u64);
            let tag = self.0.seal_in_place(nonce, &aad, &mut out[at..]);
            out.extend_from_slice(&tag);
        }
    }

    /// The plaintext length of an entry of `sealed_len` bytes; `None` when
    /// no entry is that long.
    pub fn plain_len(sealed_len: u64) -> Option<u64> {
        let pieces = sealed_len.div_ceil(SEALED_PIECE).max(1);
        let last = sealed_len.checked_sub((pieces - 1) * SEALED_PIECE)?;
        let last_plain = last.checked_sub(PIECE_OVERHEAD)?;
        Some((pieces - 1) * ENTRY_PIECE + last_plain)
    }

    /// The pieces of an entry of plaintext length `len` that hold `range`
    /// (clamped to `len`; an empty range still names one piece, so that
    /// even an empty read authenticates the entry).
    pub fn locate(len: u64, range: std::ops::Range<u64>) -> Pieces {
        let end = range.end.min(len);
        let start = range.start.min(end);
        let last_piece = len.saturating_sub(1) / ENTRY_PIECE;
        let first = (start / ENTRY_PIECE).min(last_piece);
        let past = end.div_ceil(ENTRY_PIECE).clamp(first + 1, last_piece + 1);
        let sealed_len =
            (last_piece * SEALED_PIECE) + (len - last_piece * ENTRY_PIECE) + PIECE_OVERHEAD;
        Pieces {
            first,
            sealed: first * SEALED_PIECE..(past * SEALED_PIECE).min(sealed_len),
        }
    }

    /// Opens `sealed`, the pieces from `first` on of the entry `name` whose
    /// plaintext is `len` bytes: their plaintext, or `None` when any piece
    /// does not authenticate.
    pub fn open(&self, name: &str, len: u64, first: u64, sealed: &[u8]) -> Option<Vec<u8>> {
        let pieces = sealed.chunks(SEALED_PIECE as usize);
        let plain_len = sealed
            .len()
            .checked_sub(pieces.len() * PIECE_OVERHEAD as usize)?;
        let mut out = vec![0u8; plain_len];
        let mut at = 0;
        for (n, piece) in sealed.chunks(SEALED_PIECE as usize).enumerate() {
            if piece.len() < PIECE_OVERHEAD as usize {
                return None;
            }
            let (nonce, rest) = piece.split_at(NONCE_LEN);
            let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
            let aad = piece_aad(name, len, first + n as u64);
            let nonce = nonce.try_into().expect("12 bytes");
            self.0
                .open_into(nonce, &aad, ct, tag, &mut out[at..at + ct.len()])
                .ok()?;
            at += ct.len();
        }
        Some(out)
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

    #[test]
    fn entries_open_piece_by_piece_and_only_where_they_were_sealed() {
        let c = secret().entry_cipher();
        let plain: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let sealed = c.seal("e1", &plain);
        let len = EntryCipher::plain_len(sealed.len() as u64).unwrap();
        assert_eq!(len, plain.len() as u64);
        // Every range opens to its bytes, reading only its pieces.
        for (a, b) in [
            (0, 10_000),
            (5000, 5001),
            (4095, 4097),
            (8192, 10_000),
            (0, 1),
        ] {
            let p = EntryCipher::locate(len, a..b);
            let got = c
                .open(
                    "e1",
                    len,
                    p.first,
                    &sealed[p.sealed.start as usize..p.sealed.end as usize],
                )
                .unwrap();
            let from = (p.first * ENTRY_PIECE) as usize;
            assert_eq!(
                &got[a as usize - from..b as usize - from],
                &plain[a as usize..b as usize]
            );
            // Only the pieces the range touches are read.
            let pieces = b.div_ceil(ENTRY_PIECE) - a / ENTRY_PIECE;
            assert!(p.sealed.end - p.sealed.start <= pieces * SEALED_PIECE);
            assert!(p.sealed.end - p.sealed.start > (pieces - 1) * SEALED_PIECE);
        }
        let whole = EntryCipher::locate(len, 0..u64::MAX);
        assert_eq!(whole.sealed, 0..sealed.len() as u64);
        // Bound to the name, the length and the position.
        assert!(c.open("e2", len, 0, &sealed).is_none(), "another entry");
        assert!(
            c.open("e1", len + 1, 0, &sealed).is_none(),
            "another length"
        );
        let second = &sealed[SEALED_PIECE as usize..2 * SEALED_PIECE as usize];
        assert!(c.open("e1", len, 0, second).is_none(), "another position");
        let cut = &sealed[..sealed.len() - 1];
        let cut_len = EntryCipher::plain_len(cut.len() as u64).unwrap();
        let p = EntryCipher::locate(cut_len, 0..u64::MAX);
        assert!(c.open("e1", cut_len, p.first, cut).is_none(), "cut short");
        let mut flipped = sealed.clone();
        flipped[9000] ^= 1;
        assert!(c.open("e1", len, 0, &flipped).is_none(), "a flipped bit");
        assert!(c
            .open("e1", len, 0, &sealed[..SEALED_PIECE as usize])
            .is_some());
        assert!(!sealed
            .windows(64)
            .any(|w| plain.windows(64).any(|p| p == w)));
    }

    #[test]
    fn entry_lengths_round_trip_and_impossible_lengths_are_refused() {
        let c = secret().entry_cipher();
        for n in [0usize, 1, 4095, 4096, 4097, 65_536] {
            let sealed = c.seal("x", &vec![1; n]);
            assert_eq!(EntryCipher::plain_len(sealed.len() as u64), Some(n as u64));
            let p = EntryCipher::locate(n as u64, 0..0);
            let got = c.open(
                "x",
                n as u64,
                p.first,
                &sealed[p.sealed.start as usize..p.sealed.end as usize],
            );
            assert!(got.is_some(), "an empty read still authenticates ({n})");
        }
        assert_eq!(EntryCipher::plain_len(0), None);
        assert_eq!(EntryCipher::plain_len(PIECE_OVERHEAD - 1), None);
        assert_eq!(EntryCipher::plain_len(SEALED_PIECE + 5), None);
    }
}
