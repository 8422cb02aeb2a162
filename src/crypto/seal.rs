//! Sealing and opening of segments.
//!
//! Segment `i` is `AES-256-GCM(segment key, nonce(i, last), AAD = SHA-256(header))`
//! with `nonce(i, last) = 0x000000 || u64_be(i) || u8(last)`. The last-segment
//! flag makes truncation at a segment boundary and extension detectable; the
//! index makes reordering and duplication detectable; the header digest as AAD
//! makes a segment from another version or file fail.

use super::header::{segment_log2, MAC_INPUT_LEN};
use super::{
    binding_mac, DataKey, FileId, Header, IntegrityError, Layout, VersionKeys, HEADER_LEN,
    SALT_LEN, TAG_LEN,
};
use subtle::ConstantTimeEq;

fn nonce(index: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = last as u8;
    n
}

/// Seals one new version of a file.
pub struct Sealer {
    keys: VersionKeys,
    header: Header,
    header_bytes: [u8; HEADER_LEN],
    aad: [u8; 32],
    layout: Layout,
}

impl Sealer {
    /// A new version with a fresh random salt.
    pub fn new(dk: &DataKey, file_id: FileId, segment_size: u32) -> Self {
        let mut salt = [0u8; SALT_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
        Self::with_salt(dk, file_id, segment_size, salt)
    }

    /// Deterministic constructor for golden vectors and tests. Never reuse a salt
    /// for two versions of one file: that would reuse nonces.
    pub fn with_salt(
        dk: &DataKey,
        file_id: FileId,
        segment_size: u32,
        salt: [u8; SALT_LEN],
    ) -> Self {
        let log2 = segment_log2(segment_size).expect("segment size validated by the caller");
        let keys = VersionKeys::derive(dk, &salt, &file_id);
        let mut header = Header {
            segment_log2: log2,
            file_id,
            salt,
            commitment: keys.commitment,
            mac: [0; 32],
        };
        header.mac = keys.header_mac(&header.mac_input());
        let header_bytes = header.encode();
        Sealer {
            aad: header.digest(),
            keys,
            header,
            header_bytes,
            layout: Layout::new(segment_size),
        }
    }

    pub fn header_bytes(&self) -> &[u8; HEADER_LEN] {
        &self.header_bytes
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Appends the sealed form (ciphertext || tag) of one segment to `out`.
    pub fn seal_segment_into(&self, index: u64, plaintext: &[u8], last: bool, out: &mut Vec<u8>) {
        debug_assert!(plaintext.len() as u64 <= self.layout.segment_size());
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .keys
            .segment
            .seal_in_place(nonce(index, last), &self.aad, &mut out[start..]);
        out.extend_from_slice(&tag);
    }

    /// Seals `plain`, the plaintext of segments `first..`, as one run of an
    /// object (with the header in front when `first` is 0). `ends` says
    /// whether the run's last segment is the object's last one.
    pub fn seal_run(&self, first: u64, plain: &[u8], ends: bool) -> Vec<u8> {
        let seg = self.layout.segment_size() as usize;
        let count = plain.len().div_ceil(seg).max(1);
        let mut out = Vec::with_capacity(plain.len() + count * TAG_LEN + HEADER_LEN);
        if first == 0 {
            out.extend_from_slice(&self.header_bytes);
        }
        for i in 0..count {
            let a = (i * seg).min(plain.len());
            let b = (a + seg).min(plain.len());
            let index = first + i as u64;
            self.seal_segment_into(index, &plain[a..b], ends && i + 1 == count, &mut out);
        }
        out
    }

    /// Seals a whole plaintext into a complete object (header + segments).
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let n = plaintext.len() as u64;
        let mut out = Vec::with_capacity(self.layout.object_len(n) as usize);
        out.extend_from_slice(&self.header_bytes);
        let count = self.layout.segment_count(n);
        let seg = self.layout.segment_size() as usize;
        for i in 0..count {
            let start = (i as usize) * seg;
            let end = (start + seg).min(plaintext.len());
            self.seal_segment_into(i, &plaintext[start..end], i + 1 == count, &mut out);
        }
        out
    }

    /// The MAC that binds this version to `bucket`/`key`; stored in object metadata.
    pub fn binding(&self, bucket: &str, key: &str) -> [u8; 32] {
        binding_mac(&self.keys, bucket, key, &self.aad)
    }
}

/// Verifies and opens one version of a file. Construction checks the header;
/// every segment is checked before its plaintext is returned.
pub struct Opener {
    keys: VersionKeys,
    header: Header,
    aad: [u8; 32],
    layout: Layout,
}

impl Opener {
    /// Checks, in order: structure, key commitment (wrong DK is caught here,
    /// before any decryption), header MAC, and that the header's file id is the
    /// one the object metadata (and so the KMS encryption context) named.
    pub fn new(
        dk: &DataKey,
        header_bytes: &[u8],
        expected_file_id: &FileId,
    ) -> Result<Self, IntegrityError> {
        let header = Header::parse(header_bytes)?;
        let keys = VersionKeys::derive(dk, &header.salt, &header.file_id);
        if !bool::from(keys.commitment.ct_eq(&header.commitment)) {
            return Err(IntegrityError::KeyCommitment);
        }
        let mac_input: [u8; MAC_INPUT_LEN] = header.mac_input();
        if !bool::from(keys.header_mac(&mac_input).ct_eq(&header.mac)) {
            return Err(IntegrityError::HeaderMac);
        }
        if header.file_id != *expected_file_id {
            return Err(IntegrityError::FileIdMismatch);
        }
        Ok(Opener {
            aad: header.digest(),
            layout: Layout::new(header.segment_size()),
            keys,
            header,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The binding MAC of this version at `bucket`/`key` (for a rename).
    pub fn binding(&self, bucket: &str, key: &str) -> [u8; 32] {
        binding_mac(&self.keys, bucket, key, &self.aad)
    }

    pub fn check_binding(&self, bucket: &str, key: &str, mac: &[u8]) -> Result<(), IntegrityError> {
        let expected = binding_mac(&self.keys, bucket, key, &self.aad);
        if bool::from(expected.as_slice().ct_eq(mac)) {
            Ok(())
        } else {
            Err(IntegrityError::PathBinding)
        }
    }

    /// Opens a contiguous run of sealed segments starting at `first`, as fetched
    /// by one ranged GET of [`Layout::sealed_range`], for a file of `plain_len` bytes.
    pub fn open_run(
        &self,
        first: u64,
        sealed: &[u8],
        plain_len: u64,
    ) -> Result<Vec<u8>, IntegrityError> {
        let mut run = RunOpener::new(self, first, sealed.len() as u64, plain_len);
        run.feed(sealed)?;
        run.finish()
    }

    /// Opens a complete object (header included). The length is checked first,
    /// then every segment; nothing is returned unless all of it verified.
    pub fn open(&self, object: &[u8]) -> Result<Vec<u8>, IntegrityError> {
        let plain_len = self.layout.plain_len(object.len() as u64)?;
        if object[..HEADER_LEN] != self.header.encode() {
            return Err(IntegrityError::HeaderMac);
        }
        self.open_run(0, &object[HEADER_LEN..], plain_len)
    }
}

/// Opens a run of sealed segments as its bytes arrive, each segment as soon
/// as it is complete: the ciphertext is copied once, into the place its
/// plaintext will occupy, and decrypted there while it is still in cache.
/// This is what lets a ranged GET be decrypted on the task that receives it,
/// with no second pass over the body and no buffer but the one returned.
///
/// Nothing unverified escapes: the buffer is returned by
/// [`finish`](Self::finish) only when every segment verified and the run has
/// exactly the length asked for; on any error it is dropped.
pub struct RunOpener<'a> {
    opener: &'a Opener,
    /// Verified plaintext of the segments before `index`, then the sealed
    /// bytes received so far of segment `index`.
    out: Vec<u8>,
    /// Where segment `index` starts in `out`.
    segment_start: usize,
    index: u64,
    count: u64,
    plain_len: u64,
    /// Sealed bytes still expected.
    remaining: u64,
}

impl<'a> RunOpener<'a> {
    /// A run of `sealed_len` sealed bytes starting at segment `first`, of a
    /// file of `plain_len` bytes.
    pub fn new(opener: &'a Opener, first: u64, sealed_len: u64, plain_len: u64) -> Self {
        RunOpener {
            opener,
            // The plaintext is shorter than the sealed run by a tag per
            // segment, so the buffer never grows past this (a hostile
            // length is refused by `feed` before it is allocated for).
            out: Vec::with_capacity(sealed_len.min(MAX_RUN) as usize),
            segment_start: 0,
            index: first,
            count: opener.layout.segment_count(plain_len),
            plain_len,
            remaining: sealed_len,
        }
    }

    /// The next `bytes` of the run, in order.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), IntegrityError> {
        if bytes.len() as u64 > self.remaining {
            return Err(IntegrityError::Segment(self.index));
        }
        self.remaining -= bytes.len() as u64;
        while !bytes.is_empty() {
            if self.index >= self.count {
                return Err(IntegrityError::Segment(self.index));
            }
            let sealed_len =
                self.opener
                    .layout
                    .segment_plain_len(self.index, self.plain_len) as usize
                    + TAG_LEN;
            let have = self.out.len() - self.segment_start;
            let take = (sealed_len - have).min(bytes.len());
            self.out.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if have + take == sealed_len {
                self.open_segment()?;
            }
        }
        Ok(())
    }

    /// The run's plaintext: every segment verified, nothing missing.
    pub fn finish(self) -> Result<Vec<u8>, IntegrityError> {
        if self.remaining != 0 || self.out.len() != self.segment_start {
            return Err(IntegrityError::Segment(self.index));
        }
        Ok(self.out)
    }

    /// Decrypts the complete segment at the end of `out` in place; its
    /// tag's bytes are dropped (the next segment's plaintext goes there).
    fn open_segment(&mut self) -> Result<(), IntegrityError> {
        let last = self.index + 1 == self.count;
        let nonce = nonce(self.index, last);
        let sealed = &mut self.out[self.segment_start..];
        let plain = self
            .opener
            .keys
            .segment
            .open_in_place(nonce, &self.opener.aad, sealed)
            .map_err(|_| IntegrityError::Segment(self.index))?;
        self.out.truncate(self.segment_start + plain);
        self.segment_start = self.out.len();
        self.index += 1;
        Ok(())
    }
}

/// The most a run's buffer is allocated for ahead of its bytes (a ranged
/// GET is at most a read-ahead chunk; a larger run grows as it arrives).
const MAX_RUN: u64 = 64 << 20;
