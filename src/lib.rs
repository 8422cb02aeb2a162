//! sealfs: an S3 bucket as an encrypted folder, with per-file sharing.
//!
//! Layers (see `docs/FORMAT.md` and the README):
//! - [`crypto`]: the object format, pure and I/O-free;
//! - [`keys`]: data keys from KMS, with retry and a decrypt cache;
//! - [`store`]: the object store (S3, in-memory) and multipart uploads;
//! - [`sealed`]: sealed objects in a store (write a stream, verified reads);
//! - [`volume`]: the authenticated volume config;
//! - [`grants`]: per-file sharing through IAM policies;
//! - [`audit`]: the volume's MAC'd record of every change of access;
//! - [`app`] and [`cli`]: where concrete types are wired together.

// Public only what the binary, the integration tests and the benches use:
// the command line, the format and the grant documents. Everything else is
// crate-private, so the compiler reports what nothing uses.
pub(crate) mod app;
pub(crate) mod audit;
pub(crate) mod aws_error;
pub mod cli;
pub mod crypto;
pub(crate) mod error;
pub(crate) mod fs;
pub(crate) mod fuse;
pub mod grants;
pub(crate) mod keys;
pub(crate) mod local;
pub(crate) mod metrics;
pub(crate) mod sealed;
pub(crate) mod store;
pub(crate) mod url;
pub(crate) mod volume;

pub use error::{Error, Result};
