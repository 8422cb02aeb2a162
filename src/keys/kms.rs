//! `KeyService` over AWS KMS (aws-sdk-kms). The SDK's own retries are turned
//! off for this client by the app, so that [`super::Retrying`] owns the retry
//! policy and every attempt is counted here.

use super::{
    CallCounter, EncryptionContext, GeneratedKey, KeyAdmin, KeyError, KeyService, KmsCalls,
};
use crate::aws_error::{classify, Class};
use crate::crypto::DataKey;
use async_trait::async_trait;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone)]
pub struct KmsKeyService {
    client: aws_sdk_kms::Client,
    counter: Arc<CallCounter>,
}

impl KmsKeyService {
    pub fn new(client: aws_sdk_kms::Client) -> Self {
        KmsKeyService {
            client,
            counter: Arc::default(),
        }
    }

    pub fn calls(&self) -> KmsCalls {
        self.counter.snapshot()
    }
}

fn context_map(ctx: &EncryptionContext) -> Option<HashMap<String, String>> {
    Some(
        ctx.pairs()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

fn map_err<E>(action: &'static str, key_id: &str, err: SdkError<E, HttpResponse>) -> KeyError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let f = classify(&err);
    match (f.class, f.code.as_deref()) {
        (_, Some("InvalidCiphertextException" | "IncorrectKeyException")) => {
            KeyError::InvalidCiphertext
        }
        (
            _,
            Some(
                "NotFoundException"
                | "DisabledException"
                | "KMSInvalidStateException"
                | "InvalidKeyUsageException",
            ),
        ) => KeyError::KeyNotFound(key_id.to_string()),
        (Class::Denied | Class::NoCredentials, _) => KeyError::AccessDenied {
            action,
            message: f.code.unwrap_or_else(|| f.message.clone()),
        },
        (Class::Throttled, _) => KeyError::Throttled { action },
        (Class::NotFound, _) => KeyError::KeyNotFound(key_id.to_string()),
        (Class::Unreachable, _) => KeyError::Unavailable {
            action,
            message: f.message,
        },
        _ => KeyError::Other {
            action,
            message: f.message,
        },
    }
}

/// Moves a plaintext key out of a KMS response into a [`DataKey`], and
/// zeroizes the response's buffer (which would otherwise be freed with the
/// key still in it).
fn take_key(plaintext: &mut Option<aws_smithy_types::Blob>) -> Option<DataKey> {
    let buf = zeroize::Zeroizing::new(plaintext.take()?.into_inner());
    DataKey::from_slice(&buf)
}

#[async_trait]
impl KeyService for KmsKeyService {
    async fn generate_data_key(
        &self,
        key_id: &str,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedKey, KeyError> {
        self.counter.count_generate();
        let mut out = self
            .client
            .generate_data_key()
            .key_id(key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(context_map(ctx))
            .send()
            .await
            .map_err(|e| map_err("kms:GenerateDataKey", key_id, e))?;
        let other = |m: &str| KeyError::Other {
            action: "kms:GenerateDataKey",
            message: m.to_string(),
        };
        let key = take_key(&mut out.plaintext)
            .ok_or_else(|| other("response has no 32-byte plaintext key"))?;
        let wrapped = out
            .ciphertext_blob()
            .map(|b| b.as_ref().to_vec())
            .ok_or_else(|| other("response has no ciphertext blob"))?;
        Ok(GeneratedKey {
            key,
            wrapped,
            key_id: out.key_id().unwrap_or(key_id).to_string(),
        })
    }

    async fn decrypt(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KeyError> {
        self.counter.count_decrypt();
        let mut out = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(context_map(ctx))
            .send()
            .await
            .map_err(|e| map_err("kms:Decrypt", key_id, e))?;
        take_key(&mut out.plaintext).ok_or(KeyError::InvalidCiphertext)
    }

    async fn wrap(
        &self,
        key_id: &str,
        key: &DataKey,
        ctx: &EncryptionContext,
    ) -> Result<Vec<u8>, KeyError> {
        self.counter.count_encrypt();
        let out = self
            .client
            .encrypt()
            .key_id(key_id)
            .plaintext(Blob::new(key.expose().to_vec()))
            .set_encryption_context(context_map(ctx))
            .send()
            .await
            .map_err(|e| map_err("kms:Encrypt", key_id, e))?;
        out.ciphertext_blob()
            .map(|b| b.as_ref().to_vec())
            .ok_or_else(|| KeyError::Other {
                action: "kms:Encrypt",
                message: "response has no ciphertext blob".into(),
            })
    }
}

#[async_trait]
impl KeyAdmin for KmsKeyService {
    async fn resolve_key(&self, id: &str) -> Result<String, KeyError> {
        let out = self
            .client
            .describe_key()
            .key_id(id)
            .send()
            .await
            .map_err(|e| map_err("kms:DescribeKey", id, e))?;
        let meta = out
            .key_metadata()
            .ok_or_else(|| KeyError::KeyNotFound(id.to_string()))?;
        if !meta.enabled() {
            return Err(KeyError::KeyNotFound(id.to_string()));
        }
        meta.arn()
            .map(str::to_string)
            .ok_or_else(|| KeyError::KeyNotFound(id.to_string()))
    }

    async fn create_key(&self, description: &str) -> Result<String, KeyError> {
        let out = self
            .client
            .create_key()
            .description(description)
            .send()
            .await
            .map_err(|e| map_err("kms:CreateKey", "(new key)", e))?;
        out.key_metadata()
            .and_then(|m| m.arn())
            .map(str::to_string)
            .ok_or_else(|| KeyError::Other {
                action: "kms:CreateKey",
                message: "response has no key ARN".into(),
            })
    }
}
