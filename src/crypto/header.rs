//! The fixed-size object header.
//!
//! ```text
//! offset len  field
//!  0      6   magic "SEALFS"
//!  6      1   format version (1)
//!  7      1   log2 of the plaintext segment size (12..=24)
//!  8     16   file id
//! 24     32   salt (fresh per version)
//! 56     32   key commitment
//! 88     32   header MAC = HMAC-SHA-256(header-mac key, bytes 0..88)
//! ```
//! The header is the same length for every object, so the plaintext size is a
//! pure function of the object size (see [`super::Layout`]).

use super::{FileId, IntegrityError, FILE_ID_LEN, MAX_SEGMENT_LOG2, MIN_SEGMENT_LOG2, SALT_LEN};
use sha2::{Digest, Sha256};

pub const MAGIC: &[u8; 6] = b"SEALFS";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 120;
/// Bytes covered by the header MAC.
pub(crate) const MAC_INPUT_LEN: usize = 88;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub segment_log2: u8,
    pub file_id: FileId,
    pub salt: [u8; SALT_LEN],
    pub commitment: [u8; 32],
    pub mac: [u8; 32],
}

impl Header {
    pub fn segment_size(&self) -> u32 {
        1u32 << self.segment_log2
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..MAC_INPUT_LEN].copy_from_slice(&self.mac_input());
        out[88..120].copy_from_slice(&self.mac);
        out
    }

    /// The bytes the header MAC covers: everything but the MAC itself.
    pub(crate) fn mac_input(&self) -> [u8; MAC_INPUT_LEN] {
        let mut out = [0u8; MAC_INPUT_LEN];
        out[0..6].copy_from_slice(MAGIC);
        out[6] = VERSION;
        out[7] = self.segment_log2;
        out[8..24].copy_from_slice(&self.file_id.0);
        out[24..56].copy_from_slice(&self.salt);
        out[56..88].copy_from_slice(&self.commitment);
        out
    }

    /// Structural parse only: no key is involved, so nothing here is trusted yet.
    /// [`super::Opener::new`] checks the commitment and MAC.
    pub fn parse(bytes: &[u8]) -> Result<Header, IntegrityError> {
        if bytes.len() < HEADER_LEN {
            return Err(IntegrityError::BadLength(bytes.len() as u64));
        }
        if &bytes[0..6] != MAGIC {
            return Err(IntegrityError::BadMagic);
        }
        if bytes[6] != VERSION {
            return Err(IntegrityError::UnsupportedVersion(bytes[6]));
        }
        let segment_log2 = bytes[7];
        if !(MIN_SEGMENT_LOG2..=MAX_SEGMENT_LOG2).contains(&segment_log2) {
            return Err(IntegrityError::BadSegmentSize(segment_log2));
        }
        let mut file_id = [0u8; FILE_ID_LEN];
        file_id.copy_from_slice(&bytes[8..24]);
        Ok(Header {
            segment_log2,
            file_id: FileId(file_id),
            salt: bytes[24..56].try_into().expect("32 bytes"),
            commitment: bytes[56..88].try_into().expect("32 bytes"),
            mac: bytes[88..120].try_into().expect("32 bytes"),
        })
    }

    /// SHA-256 of the encoded header: the AAD of every segment, so a segment
    /// only opens under the exact header (and so version) it was sealed with.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }
}

/// Returns the log2 of a segment size, if it is a power of two the format accepts.
pub fn segment_log2(segment_size: u32) -> Option<u8> {
    if !segment_size.is_power_of_two() {
        return None;
    }
    let log2 = segment_size.trailing_zeros() as u8;
    (MIN_SEGMENT_LOG2..=MAX_SEGMENT_LOG2)
        .contains(&log2)
        .then_some(log2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            segment_log2: 16,
            file_id: FileId([7; 16]),
            salt: [1; 32],
            commitment: [2; 32],
            mac: [3; 32],
        }
    }

    #[test]
    fn encode_parse_round_trip() {
        let h = sample();
        let bytes = h.encode();
        assert_eq!(&bytes[..6], b"SEALFS");
        assert_eq!(Header::parse(&bytes).unwrap(), h);
    }

    #[test]
    fn parse_rejects_structural_damage() {
        let bytes = sample().encode();
        let mut b = bytes;
        b[0] ^= 1;
        assert_eq!(Header::parse(&b), Err(IntegrityError::BadMagic));
        let mut b = bytes;
        b[6] = 2;
        assert_eq!(
            Header::parse(&b),
            Err(IntegrityError::UnsupportedVersion(2))
        );
        let mut b = bytes;
        b[7] = 40;
        assert_eq!(Header::parse(&b), Err(IntegrityError::BadSegmentSize(40)));
        assert_eq!(
            Header::parse(&bytes[..100]),
            Err(IntegrityError::BadLength(100))
        );
    }

    #[test]
    fn segment_sizes() {
        assert_eq!(segment_log2(65536), Some(16));
        assert_eq!(segment_log2(4096), Some(12));
        assert_eq!(segment_log2(2048), None);
        assert_eq!(segment_log2(65537), None);
        assert_eq!(segment_log2(1 << 25), None);
    }
}
