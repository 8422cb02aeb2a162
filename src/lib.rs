//! sealfs: an S3 bucket as an encrypted folder, with per-file sharing.
//!
//! Layers (see `docs/FORMAT.md` and the README):
//! - [`crypto`]: the object format, pure and I/O-free;
//! - [`keys`]: data keys from KMS, with retry, a decrypt cache and a key pool;
//! - [`store`]: the object store (S3, in-memory) and multipart uploads;
//! - [`sealed`]: sealed objects in a store (write a stream, verified reads);
//! - [`volume`]: the authenticated volume config;
//! - [`grants`]: per-file sharing through IAM policies;
//! - [`app`] and [`cli`]: where concrete types are wired together.

pub mod app;
pub mod aws_error;
pub mod cli;
pub mod crypto;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod grants;
pub mod keys;
pub mod sealed;
pub mod store;
pub mod url;
pub mod volume;

pub use error::{Error, Result};
