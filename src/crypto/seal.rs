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

    /// Opens one sealed segment (ciphertext || tag), appending its plaintext to `out`.
    /// On failure `out` is left as it was.
    pub fn open_segment_into(
        &self,
        index: u64,
        sealed: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), IntegrityError> {
        if sealed.len() < TAG_LEN || sealed.len() - TAG_LEN > self.layout.segment_size() as usize {
            return Err(IntegrityError::Segment(index));
        }
        let (ct, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let start = out.len();
        out.resize(start + ct.len(), 0);
        let res =
            self.keys
                .segment
                .open_into(nonce(index, last), &self.aad, ct, tag, &mut out[start..]);
        if res.is_err() {
            out.truncate(start);
            return Err(IntegrityError::Segment(index));
        }
        Ok(())
    }

    /// Opens a contiguous run of sealed segments starting at `first`, as fetched
    /// by one ranged GET of [`Layout::sealed_range`], for a file of `plain_len` bytes.
    pub fn open_run(
        &self,
        first: u64,
        sealed: &[u8],
        plain_len: u64,
    ) -> Result<Vec<u8>, IntegrityError> {
        let count = self.layout.segment_count(plain_len);
        let mut out = Vec::with_capacity(sealed.len());
        let mut pos = 0usize;
        let mut index = first;
        while pos < sealed.len() {
            if index >= count {
                return Err(IntegrityError::Segment(index));
            }
            let len = self.layout.segment_plain_len(index, plain_len) as usize + TAG_LEN;
            let end = pos
                .checked_add(len)
                .filter(|e| *e <= sealed.len())
                .ok_or(IntegrityError::Segment(index))?;
            self.open_segment_into(index, &sealed[pos..end], index + 1 == count, &mut out)?;
            pos = end;
            index += 1;
        }
        Ok(out)
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
