//! Size arithmetic between plaintext and sealed objects.
//!
//! A file of `n` plaintext bytes is sealed as `s = max(1, ceil(n / P))`
//! segments, each `P` bytes except the last (0..=P bytes; 0 only when n = 0),
//! and every segment carries a 16-byte tag:
//!
//! `object_len(n) = HEADER_LEN + n + 16 * s`
//!
//! The inverse exists for every valid length, which is what lets `st_size`
//! come straight from a LIST response.

use super::{IntegrityError, HEADER_LEN, TAG_LEN};
use std::ops::Range;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    segment_size: u64,
}

impl Layout {
    pub fn new(segment_size: u32) -> Self {
        assert!(segment_size.is_power_of_two() && segment_size >= 4096);
        Layout {
            segment_size: segment_size as u64,
        }
    }

    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// Sealed segment length on the wire (plaintext + tag) for a full segment.
    fn stride(&self) -> u64 {
        self.segment_size + TAG_LEN as u64
    }

    pub fn segment_count(&self, plain_len: u64) -> u64 {
        plain_len.div_ceil(self.segment_size).max(1)
    }

    pub fn object_len(&self, plain_len: u64) -> u64 {
        HEADER_LEN as u64 + plain_len + TAG_LEN as u64 * self.segment_count(plain_len)
    }

    /// Inverse of [`Layout::object_len`]; an error for lengths no plaintext seals to.
    pub fn plain_len(&self, object_len: u64) -> Result<u64, IntegrityError> {
        let bad = || IntegrityError::BadLength(object_len);
        let body = object_len.checked_sub(HEADER_LEN as u64).ok_or_else(bad)?;
        if body < TAG_LEN as u64 {
            return Err(bad());
        }
        let segments = body.div_ceil(self.stride());
        let rem = body % self.stride();
        // A trailing partial segment must hold at least one byte beyond its tag,
        // except for the single empty segment of an empty file.
        if rem != 0 && rem <= TAG_LEN as u64 && !(segments == 1 && rem == TAG_LEN as u64) {
            return Err(bad());
        }
        Ok(body - TAG_LEN as u64 * segments)
    }

    /// Plaintext length of segment `index` in a file of `plain_len` bytes.
    pub fn segment_plain_len(&self, index: u64, plain_len: u64) -> u64 {
        let start = index * self.segment_size;
        plain_len.saturating_sub(start).min(self.segment_size)
    }

    /// Segments that hold plaintext bytes `offset..offset+len` (clamped to the file).
    pub fn segments_for(&self, offset: u64, len: u64, plain_len: u64) -> Range<u64> {
        let end = offset.saturating_add(len).min(plain_len);
        if offset >= end {
            return 0..0;
        }
        offset / self.segment_size..end.div_ceil(self.segment_size)
    }

    /// Byte range in the sealed object that holds segments `segments`.
    pub fn sealed_range(&self, segments: Range<u64>, plain_len: u64) -> Range<u64> {
        let start = HEADER_LEN as u64 + segments.start * self.stride();
        let last = segments.end.saturating_sub(1);
        let end = HEADER_LEN as u64
            + last * self.stride()
            + self.segment_plain_len(last, plain_len)
            + TAG_LEN as u64;
        start..end.max(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_invert() {
        let l = Layout::new(4096);
        for n in [0u64, 1, 4095, 4096, 4097, 8192, 8193, 100_000] {
            assert_eq!(l.plain_len(l.object_len(n)).unwrap(), n, "n={n}");
        }
        assert_eq!(l.object_len(0), 120 + 16);
        assert_eq!(l.object_len(4096), 120 + 4096 + 16);
        assert_eq!(l.object_len(4097), 120 + 4097 + 32);
    }

    #[test]
    fn invalid_lengths_rejected() {
        let l = Layout::new(4096);
        for bad in [0u64, 119, 120, 135, 120 + 4112 + 1, 120 + 4112 + 16] {
            assert!(l.plain_len(bad).is_err(), "len {bad}");
        }
        // every object length maps back to itself exactly when valid
        for len in 120..(120 + 3 * 4112 + 40) {
            if let Ok(n) = l.plain_len(len) {
                assert_eq!(l.object_len(n), len);
            }
        }
    }

    #[test]
    fn ranges() {
        let l = Layout::new(4096);
        assert_eq!(l.segments_for(0, 1, 10_000), 0..1);
        assert_eq!(l.segments_for(4095, 2, 10_000), 0..2);
        assert_eq!(l.segments_for(9_000, 5_000, 10_000), 2..3);
        assert_eq!(l.segments_for(10_000, 5, 10_000), 0..0);
        assert_eq!(l.sealed_range(0..1, 10), 120..146);
        assert_eq!(
            l.sealed_range(1..3, 10_000),
            (120 + 4112)..l.object_len(10_000)
        );
    }
}
