//! Object format v1: the pure, I/O-free heart of sealfs.
//!
//! One encrypted object is a fixed-size [`Header`] followed by fixed-size
//! AES-256-GCM segments (see `docs/FORMAT.md` for the byte layout). This module
//! knows nothing about S3 or KMS: it takes a data key and bytes, and gives
//! bytes back, or an [`IntegrityError`] that names the check that failed.
//! Nothing here ever releases plaintext from a segment whose tag did not verify.

pub mod attributes;
mod header;
mod layout;
pub mod local;
mod schedule;
mod seal;

pub use header::{segment_log2, Header, HEADER_LEN, MAGIC, VERSION};
pub use layout::Layout;
pub use schedule::{binding_mac, file_key, VersionKeys};
pub use seal::{Opener, RunOpener, Sealer};

use std::fmt;
use zeroize::Zeroizing;

/// Length of an AES-GCM tag, appended to every segment.
pub const TAG_LEN: usize = 16;
/// Length of a per-version salt.
pub const SALT_LEN: usize = 32;
/// Length of a file id (random, 128 bits).
pub const FILE_ID_LEN: usize = 16;
/// Default plaintext segment size: 64 KiB.
pub const DEFAULT_SEGMENT_SIZE: u32 = 64 * 1024;
/// Smallest segment size the format accepts (4 KiB).
pub const MIN_SEGMENT_LOG2: u8 = 12;
/// Largest segment size the format accepts (16 MiB).
pub const MAX_SEGMENT_LOG2: u8 = 24;

/// A 256-bit per-file data key in plaintext. Zeroized on drop and never printed.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DataKey(Zeroizing::new(bytes))
    }

    /// Builds a key from a slice, as returned by KMS; `None` unless it is 32 bytes.
    /// Copies a key straight into its zeroized home (no stray stack copy).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 32 {
            return None;
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(bytes);
        Some(DataKey(key))
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// A random 128-bit id, shown as hex.
macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; FILE_ID_LEN]);

        impl $name {
            pub fn random() -> Self {
                let mut id = [0u8; FILE_ID_LEN];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
                $name(id)
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            pub fn from_hex(s: &str) -> Option<Self> {
                let bytes = hex::decode(s).ok()?;
                Some($name(bytes.try_into().ok()?))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

random_id! {
    /// The random 128-bit id of a file. It names the file in the KMS encryption
    /// context (and so in CloudTrail and in sharing grants) without revealing its path.
    FileId
}

random_id! {
    /// The random 128-bit id of a branch key: names its wrapped form in the
    /// volume's internal area and its KMS encryption context.
    BranchId
}

/// Why an object failed verification. Every variant means "do not trust these
/// bytes"; the filesystem maps all of them to EIO. The message names the check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    #[error("not a sealfs object (bad magic)")]
    BadMagic,
    #[error("unsupported sealfs format version {0}")]
    UnsupportedVersion(u8),
    #[error("invalid segment size 2^{0} in header")]
    BadSegmentSize(u8),
    #[error("object length {0} is not a valid sealed length (truncated or extended)")]
    BadLength(u64),
    #[error("key commitment mismatch (wrong data key, or tampered header)")]
    KeyCommitment,
    #[error("header MAC mismatch (tampered header)")]
    HeaderMac,
    #[error("file id in header does not match the object metadata")]
    FileIdMismatch,
    #[error("path binding MAC mismatch (object moved or swapped from another key)")]
    PathBinding,
    #[error("segment {0} failed authentication (tampered, reordered, truncated or transplanted)")]
    Segment(u64),
    #[error("KMS rejected the wrapped data key (key or file id in the metadata tampered, or taken from another file)")]
    WrappedKey,
    #[error("data key is wrapped under KMS key {0:?}, not the key this volume is pinned to")]
    ForeignKey(String),
    #[error("{0} (the file's data key derives from it)")]
    BranchKey(String),
    #[error("the file's key derives from a branch key and has not been wrapped for sharing (the owner shares it again)")]
    NotPublished,
}
