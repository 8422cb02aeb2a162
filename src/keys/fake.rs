//! An in-memory KMS with the same contract as the real one: data keys are
//! wrapped under a per-key master secret with the encryption context as AAD,
//! so a wrong context or a foreign blob fails just as it does on AWS.
//! It can inject failures, add latency and deny keys, and counts every call.

use super::{
    CallCounter, EncryptionContext, GeneratedKey, KeyAdmin, KeyError, KeyService, KmsCalls,
};
use crate::crypto::DataKey;
use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use async_trait::async_trait;
use parking_lot::Mutex;
use rand::RngCore;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct State {
    masters: HashMap<String, [u8; 32]>,
    aliases: HashMap<String, String>,
    denied: HashSet<String>,
    injected: VecDeque<KeyError>,
}

#[derive(Clone, Default)]
pub struct FakeKms {
    state: Arc<Mutex<State>>,
    counter: Arc<CallCounter>,
    latency: Arc<Mutex<Option<Duration>>>,
}

impl FakeKms {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a key and returns its ARN.
    pub fn add_key(&self) -> String {
        let mut master = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut master);
        let arn = format!(
            "arn:aws:kms:us-east-1:000000000000:key/{}",
            hex::encode(&master[..8])
        );
        self.state.lock().masters.insert(arn.clone(), master);
        arn
    }

    pub fn add_alias(&self, alias: &str, arn: &str) {
        self.state
            .lock()
            .aliases
            .insert(alias.to_string(), arn.to_string());
    }

    /// Every later call naming this key (or unwrapping a blob made under it) is denied.
    pub fn deny(&self, key_arn: &str) {
        self.state.lock().denied.insert(key_arn.to_string());
    }

    /// The next calls fail with these errors, in order, before any real work.
    pub fn inject(&self, errors: impl IntoIterator<Item = KeyError>) {
        self.state.lock().injected.extend(errors);
    }

    pub fn set_latency(&self, latency: Option<Duration>) {
        *self.latency.lock() = latency;
    }

    pub fn calls(&self) -> KmsCalls {
        self.counter.snapshot()
    }

    async fn enter(&self) -> Result<(), KeyError> {
        let latency = *self.latency.lock();
        if let Some(d) = latency {
            tokio::time::sleep(d).await;
        }
        match self.state.lock().injected.pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn master(&self, key_id: &str, action: &'static str) -> Result<(String, [u8; 32]), KeyError> {
        let st = self.state.lock();
        let arn = st
            .aliases
            .get(key_id)
            .cloned()
            .unwrap_or_else(|| key_id.to_string());
        if st.denied.contains(&arn) {
            return Err(KeyError::AccessDenied {
                action,
                message: format!("not authorized to use {arn}"),
            });
        }
        let master = *st
            .masters
            .get(&arn)
            .ok_or_else(|| KeyError::KeyNotFound(arn.clone()))?;
        Ok((arn, master))
    }
}

fn seal_blob(arn: &str, master: &[u8; 32], key: &DataKey, ctx: &EncryptionContext) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let aad = ctx.canonical_bytes();
    let ct = Aes256Gcm::new_from_slice(master)
        .unwrap()
        .encrypt(
            Nonce::from_slice(&nonce),
            aes_gcm::aead::Payload {
                msg: key.expose(),
                aad: &aad,
            },
        )
        .unwrap();
    let mut wrapped = Vec::new();
    wrapped.extend_from_slice(&(arn.len() as u16).to_be_bytes());
    wrapped.extend_from_slice(arn.as_bytes());
    wrapped.extend_from_slice(&nonce);
    wrapped.extend_from_slice(&ct);
    wrapped
}

/// Blob layout: u16 arn length || arn || 12-byte nonce || AES-GCM(master, dk, aad = context).
fn parse_blob(blob: &[u8]) -> Option<(&str, &[u8], &[u8])> {
    let n = u16::from_be_bytes(blob.get(..2)?.try_into().ok()?) as usize;
    let arn = std::str::from_utf8(blob.get(2..2 + n)?).ok()?;
    let nonce = blob.get(2 + n..14 + n)?;
    Some((arn, nonce, blob.get(14 + n..)?))
}

#[async_trait]
impl KeyService for FakeKms {
    async fn generate_data_key(
        &self,
        key_id: &str,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedKey, KeyError> {
        self.counter.count_generate();
        self.enter().await?;
        let (arn, master) = self.master(key_id, "kms:GenerateDataKey")?;
        let mut dk = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut dk);
        let key = DataKey::from_bytes(dk);
        Ok(GeneratedKey {
            wrapped: seal_blob(&arn, &master, &key, ctx),
            key,
            key_id: arn,
        })
    }

    async fn decrypt(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KeyError> {
        self.counter.count_decrypt();
        self.enter().await?;
        let (arn, nonce, ct) = parse_blob(wrapped).ok_or(KeyError::InvalidCiphertext)?;
        let (blob_arn, master) = self.master(arn, "kms:Decrypt")?;
        let (want_arn, _) = self.master(key_id, "kms:Decrypt")?;
        if blob_arn != want_arn {
            return Err(KeyError::InvalidCiphertext);
        }
        let aad = ctx.canonical_bytes();
        let dk = Aes256Gcm::new_from_slice(&master)
            .unwrap()
            .decrypt(
                Nonce::from_slice(nonce),
                aes_gcm::aead::Payload { msg: ct, aad: &aad },
            )
            .map_err(|_| KeyError::InvalidCiphertext)?;
        DataKey::from_slice(&dk).ok_or(KeyError::InvalidCiphertext)
    }

    async fn wrap(
        &self,
        key_id: &str,
        key: &DataKey,
        ctx: &EncryptionContext,
    ) -> Result<Vec<u8>, KeyError> {
        self.counter.count_encrypt();
        self.enter().await?;
        let (arn, master) = self.master(key_id, "kms:Encrypt")?;
        Ok(seal_blob(&arn, &master, key, ctx))
    }
}

#[async_trait]
impl KeyAdmin for FakeKms {
    async fn resolve_key(&self, id: &str) -> Result<String, KeyError> {
        self.master(id, "kms:DescribeKey").map(|(arn, _)| arn)
    }

    async fn create_key(&self, _description: &str) -> Result<String, KeyError> {
        Ok(self.add_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::FileId;

    #[tokio::test]
    async fn aliases_and_created_keys_resolve_to_their_arn() {
        let kms = FakeKms::new();
        let arn = kms.create_key("test").await.unwrap();
        kms.add_alias("alias/team", &arn);
        assert_eq!(kms.resolve_key("alias/team").await.unwrap(), arn);
        assert_eq!(kms.resolve_key(&arn).await.unwrap(), arn);
        assert!(kms.resolve_key("alias/none").await.is_err());
    }

    #[tokio::test]
    async fn wraps_under_context() {
        let kms = FakeKms::new();
        let arn = kms.add_key();
        let ctx = EncryptionContext::for_file(&FileId([1; 16]));
        let g = kms.generate_data_key(&arn, &ctx).await.unwrap();
        let dk = kms.decrypt(&arn, &g.wrapped, &ctx).await.unwrap();
        assert_eq!(dk.expose(), g.key.expose());
        let other = EncryptionContext::for_file(&FileId([2; 16]));
        assert_eq!(
            kms.decrypt(&arn, &g.wrapped, &other).await.unwrap_err(),
            KeyError::InvalidCiphertext
        );
        let arn2 = kms.add_key();
        assert_eq!(
            kms.decrypt(&arn2, &g.wrapped, &ctx).await.unwrap_err(),
            KeyError::InvalidCiphertext
        );
        kms.deny(&arn);
        assert!(matches!(
            kms.decrypt(&arn, &g.wrapped, &ctx).await.unwrap_err(),
            KeyError::AccessDenied { .. }
        ));
        assert_eq!(kms.calls().generate_data_key, 1);
        assert_eq!(kms.calls().decrypt, 4);
    }

    #[tokio::test]
    async fn a_wrapped_key_opens_only_under_its_context() {
        let kms = FakeKms::new();
        let arn = kms.add_key();
        let key = DataKey::from_bytes([7; 32]);
        let ctx = EncryptionContext::for_file(&FileId([1; 16]));
        let blob = kms.wrap(&arn, &key, &ctx).await.unwrap();
        assert_eq!(
            kms.decrypt(&arn, &blob, &ctx).await.unwrap().expose(),
            &[7; 32]
        );
        let other = EncryptionContext::for_file(&FileId([2; 16]));
        assert_eq!(
            kms.decrypt(&arn, &blob, &other).await.unwrap_err(),
            KeyError::InvalidCiphertext
        );
        assert_eq!(kms.calls().encrypt, 1);
    }
}
