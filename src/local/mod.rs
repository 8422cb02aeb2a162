//! What sealfs keeps on local disk, and the key it is kept under.
//!
//! Nothing sealfs writes under its cache directory is plaintext: staged
//! content is an [`EncryptedFile`], journals and spool entries are sealed
//! records. All of it is under the cache directory's local key, a random
//! 256-bit key stored only wrapped by KMS under the volume's key
//! (`local-key.json`, one `GenerateDataKey` when the directory is first
//! used, one `Decrypt` per mount after). A disk read without AWS
//! credentials (a stolen laptop, a backup of the home directory) reveals
//! file contents to no one; crash recovery unwraps the same key.

pub mod cache;
pub mod file;

pub use file::EncryptedFile;

use crate::crypto::local::{LocalSecret, RecordCipher};
use crate::error::{Error, Result};
use crate::keys::{EncryptionContext, KeyService};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The file in a cache directory that holds its wrapped local key.
pub const KEY_FILE: &str = "local-key.json";

#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    /// The KMS key it is wrapped under (the volume's).
    kms_key: String,
    /// The id in its encryption context (`sealfs:local`).
    id: String,
    wrapped: String,
}

/// The local key of one cache directory, unwrapped.
pub struct LocalKey {
    secret: LocalSecret,
    records: RecordCipher,
}

impl LocalKey {
    fn from_secret(secret: LocalSecret) -> LocalKey {
        let records = secret.record_cipher();
        LocalKey { secret, records }
    }

    /// A key that lives only in memory (tests).
    #[cfg(test)]
    pub fn ephemeral() -> LocalKey {
        let mut k = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
        LocalKey::from_secret(LocalSecret::from_bytes(k))
    }

    pub(crate) fn secret(&self) -> &LocalSecret {
        &self.secret
    }

    /// The local key of `dir`: unwrapped from its key file with KMS under
    /// `kms_key` (the volume's, never one the file names), or created and
    /// wrapped there on first use. A key file that does not unwrap stops the
    /// mount rather than orphaning the staged data it protects.
    pub async fn load_or_create(
        dir: &Path,
        keys: &dyn KeyService,
        kms_key: &str,
    ) -> Result<LocalKey> {
        let path = dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let kf: KeyFile = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::InvalidArgument(format!(
                        "{}: unreadable local key file: {e}",
                        path.display()
                    ))
                })?;
                if kf.version != 1 || kf.kms_key != kms_key {
                    return Err(Error::InvalidArgument(format!(
                        "{}: the local key is wrapped under {} but this volume's key is {kms_key}; use another --cache-dir (the data in this one belongs to another volume)",
                        path.display(),
                        kf.kms_key
                    )));
                }
                let wrapped = B64.decode(&kf.wrapped).map_err(|e| {
                    Error::InvalidArgument(format!(
                        "{}: unreadable local key file: {e}",
                        path.display()
                    ))
                })?;
                let key = keys
                    .decrypt(kms_key, &wrapped, &EncryptionContext::for_local(&kf.id))
                    .await?;
                Ok(LocalKey::from_secret(LocalSecret::from_bytes(
                    *key.expose(),
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut id = [0u8; 16];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
                let id = hex::encode(id);
                let generated = keys
                    .generate_data_key(kms_key, &EncryptionContext::for_local(&id))
                    .await?;
                let kf = KeyFile {
                    version: 1,
                    kms_key: kms_key.to_string(),
                    id,
                    wrapped: B64.encode(&generated.wrapped),
                };
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .and_then(|mut f| {
                        f.write_all(&serde_json::to_vec(&kf).expect("plain data"))?;
                        f.sync_all()
                    });
                match written {
                    Ok(()) => Ok(LocalKey::from_secret(LocalSecret::from_bytes(
                        *generated.key.expose(),
                    ))),
                    // Another mount of this directory made it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Box::pin(Self::load_or_create(dir, keys, kms_key)).await
                    }
                    Err(e) => Err(Error::io(format!("writing {}", path.display()), e)),
                }
            }
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Writes `value` sealed for `purpose` to `path`, atomically (a
    /// temporary file renamed into place), mode 0600, fsynced first when `sync`.
    pub fn write_record(
        &self,
        path: &Path,
        purpose: &str,
        value: &impl Serialize,
        sync: bool,
    ) -> std::io::Result<()> {
        let body = zeroize::Zeroizing::new(serde_json::to_vec(value).expect("plain data"));
        let sealed = self.records.seal(purpose, &body);
        write_private(path, &path.with_extension("tmp"), &sealed, sync)
    }

    /// The record sealed for `purpose` at `path`; `None` when it is
    /// missing, or does not authenticate under this key.
    pub fn read_record<T: DeserializeOwned>(&self, path: &Path, purpose: &str) -> Option<T> {
        let sealed = std::fs::read(path).ok()?;
        let body = self.records.open(purpose, &sealed)?;
        serde_json::from_slice(&body).ok()
    }
}

/// Writes `bytes` to `path` atomically: into `tmp` (mode 0600, fsynced
/// first when `sync`), renamed into place; `tmp` is removed if that fails.
pub(crate) fn write_private(
    path: &Path,
    tmp: &Path,
    bytes: &[u8],
    sync: bool,
) -> std::io::Result<()> {
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            if sync {
                f.sync_all()?;
            }
            Ok(())
        })
        .and_then(|()| std::fs::rename(tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    written
}

#[cfg(test)]
mod tests;
