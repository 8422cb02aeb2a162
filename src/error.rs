//! The crate's error type and its one errno table.
//!
//! Layers keep their own small error enums (crypto, keys, store); this type
//! carries them up with the object they concern, and [`Error::errno`] is the
//! single place where a failure becomes a syscall error.

use crate::crypto::IntegrityError;
use crate::grants::GrantError;
use crate::keys::KeyError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("s3://{bucket}/{key} failed verification: {check}")]
    Integrity {
        bucket: String,
        key: String,
        check: IntegrityError,
    },
    #[error("s3://{bucket}/{key} is not a sealfs object: {reason}")]
    NotSealfs {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("no sealfs volume at s3://{bucket}/{prefix} (run `sealfs init s3://{bucket}/{prefix}` first)")]
    NoVolume { bucket: String, prefix: String },
    #[error("volume config at s3://{bucket}/{key} is invalid: {reason}")]
    VolumeConfig {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("{0}")]
    InvalidArgument(String),
    /// A filesystem-level refusal with its errno (ENOENT, EEXIST, ENOTEMPTY, ...).
    #[error("{what}")]
    Posix { errno: i32, what: String },
    /// A failure whose cause was logged once where it happened (say, the
    /// write that filled the disk): later calls it fails answer its errno
    /// without logging it again.
    #[error("{what}")]
    Reported { errno: i32, what: String },
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The level an error is logged at by the adapter ([`Error::log_level`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Warn,
    Error,
}

impl Error {
    pub fn io(context: impl Into<String>, cause: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            cause,
        }
    }

    pub fn posix(errno: i32, what: impl Into<String>) -> Self {
        Error::Posix {
            errno,
            what: what.into(),
        }
    }

    /// How loudly the adapter logs this error when it answers a call with
    /// it: each failure is logged once, here or (for [`Error::Reported`])
    /// at its source. Ordinary answers (ENOENT, EEXIST, ENOTEMPTY…) are not
    /// failures of sealfs and stay at debug level.
    /// Whether this is a failure (counted in `sealfs status`), not an
    /// ordinary answer such as ENOENT from a lookup: what is logged at warn
    /// or error, here or (for [`Error::Reported`]) where it happened.
    pub fn is_failure(&self) -> bool {
        matches!(self, Error::Reported { .. }) || self.log_level() != LogLevel::Debug
    }

    pub fn log_level(&self) -> LogLevel {
        use libc::*;
        match self {
            Error::Reported { .. } => LogLevel::Debug,
            Error::Posix { errno, .. } => match *errno {
                EIO => LogLevel::Error,
                ENOSPC => LogLevel::Warn,
                _ => LogLevel::Debug,
            },
            Error::Store(_)
            | Error::Key(_)
            | Error::Grant(_)
            | Error::Integrity { .. }
            | Error::NotSealfs { .. }
            | Error::NoVolume { .. }
            | Error::VolumeConfig { .. }
            | Error::InvalidArgument(_)
            | Error::Io { .. } => match self.errno() {
                // The caller's rights or room, not a fault of the mount.
                EACCES | ENOSPC => LogLevel::Warn,
                _ => LogLevel::Error,
            },
        }
    }

    /// The errno a filesystem call returns for this error. Exhaustive on purpose:
    /// a new failure kind must be given its errno here, not defaulted.
    pub fn errno(&self) -> i32 {
        use libc::*;
        match self {
            Error::Store(e) => match e {
                StoreError::NotFound { .. } | StoreError::NoSuchBucket(_) => ENOENT,
                StoreError::AccessDenied { .. } | StoreError::NoCredentials => EACCES,
                StoreError::PreconditionFailed { .. } => EIO,
                StoreError::Throttled { .. } | StoreError::Unavailable { .. } => EIO,
                StoreError::InvalidRange { .. } => EIO,
                StoreError::Other { .. } => EIO,
                StoreError::Tampered { .. } => EIO,
                StoreError::MetadataTooLarge { .. } => libc::ENOSPC,
            },
            Error::Key(e) => match e {
                KeyError::AccessDenied { .. } => EACCES,
                KeyError::Throttled { .. } | KeyError::Unavailable { .. } => EIO,
                KeyError::InvalidCiphertext | KeyError::KeyNotFound(_) | KeyError::Other { .. } => {
                    EIO
                }
            },
            Error::Grant(e) => match e {
                GrantError::AccessDenied { .. } => EACCES,
                GrantError::NoSuchEntity { .. } | GrantError::Invalid { .. } => EINVAL,
                GrantError::LimitExceeded { .. } => ENOSPC,
                GrantError::AlreadyExists { .. } => EEXIST,
                GrantError::Unavailable { .. } => EIO,
            },
            Error::Integrity { .. } | Error::NotSealfs { .. } => EIO,
            Error::NoVolume { .. } | Error::VolumeConfig { .. } => EIO,
            Error::InvalidArgument(_) => EINVAL,
            Error::Posix { errno, .. } => *errno,
            Error::Io { cause, .. } => cause.raw_os_error().unwrap_or(EIO),
            Error::Reported { errno, .. } => *errno,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_table() {
        let denied = Error::Store(StoreError::AccessDenied {
            action: "s3:GetObject",
            bucket: "b".into(),
            key: "k".into(),
        });
        assert_eq!(denied.errno(), libc::EACCES);
        let tamper = Error::Integrity {
            bucket: "b".into(),
            key: "k".into(),
            check: IntegrityError::Segment(3),
        };
        assert_eq!(tamper.errno(), libc::EIO);
        assert_eq!(tamper.log_level(), LogLevel::Error);
        assert_eq!(denied.log_level(), LogLevel::Warn);
        assert_eq!(Error::posix(libc::ENOENT, "x").log_level(), LogLevel::Debug);
        assert_eq!(Error::posix(libc::EIO, "x").log_level(), LogLevel::Error);
        let reported = Error::Reported {
            errno: libc::EPERM,
            what: "logged at its source".into(),
        };
        assert_eq!(reported.log_level(), LogLevel::Debug);
        assert!(tamper.to_string().contains("segment 3"));
        let kms_denied = Error::Key(KeyError::AccessDenied {
            action: "kms:Decrypt",
            message: "x".into(),
        });
        assert_eq!(kms_denied.errno(), libc::EACCES);
        assert_eq!(Error::InvalidArgument("x".into()).errno(), libc::EINVAL);
        let iam_denied = Error::Grant(GrantError::AccessDenied {
            action: "iam:CreatePolicy",
            message: "x".into(),
        });
        assert_eq!(iam_denied.errno(), libc::EACCES);
        let full = Error::Grant(GrantError::LimitExceeded {
            message: "PoliciesPerUser".into(),
        });
        assert_eq!(full.errno(), libc::ENOSPC);
        let missing = Error::Store(StoreError::NotFound {
            bucket: "b".into(),
            key: "k".into(),
        });
        assert_eq!(missing.errno(), libc::ENOENT);
    }
}
