//! The volume config (it exists and verifies), this machine's pin of it,
//! and the volume's KMS key (a data key can be made and unwrapped).

use super::{owner_policy, Finding};
use crate::error::Error;
use crate::keys::{EncryptionContext, KeyError, KeyService};
use crate::store::{ObjectStore, StoreError};
use crate::url::S3Url;
use crate::volume::{self, PinState, Pins, VolumeConfig};

/// The volume config at the URL's prefix, read and verified under its KMS
/// key (one Decrypt of the volume key).
pub(super) async fn config(
    store: &dyn ObjectStore,
    keys: &dyn KeyService,
    url: &S3Url,
) -> (Finding, Option<VolumeConfig>) {
    const CHECK: &str = "volume";
    let at = format!("s3://{}/{}", url.bucket, url.prefix());
    let e = match volume::load(store, keys, url.prefix()).await {
        Ok(cfg) => {
            let found = format!(
                "{at}: volume {} verifies under KMS key {} (segments of {} bytes)",
                cfg.volume_id, cfg.kms_key_arn, cfg.segment_size
            );
            return (Finding::pass(CHECK, found), Some(cfg));
        }
        Err(e) => e,
    };
    let finding = match e {
        Error::NoVolume { .. } => Finding::fail(
            CHECK,
            format!("no sealfs volume at {at}"),
            format!("check the prefix, or make one: sealfs init {at} --kms-key KEY"),
        ),
        Error::VolumeConfig { key, reason, .. } => Finding::fail(
            CHECK,
            format!(
                "the volume config s3://{}/{key} is invalid: {reason}",
                url.bucket
            ),
            format!(
                "if you rewrote it, run `sealfs init --force {at}`; if not, someone who can write \
                 the bucket changed it: do not mount it, and restore the object from a backup or \
                 an earlier version"
            ),
        ),
        Error::Store(StoreError::AccessDenied { action, key, .. }) => Finding::fail(
            CHECK,
            format!("S3 denied {action} on s3://{}/{key}", url.bucket),
            owner_policy(Some(url)),
        ),
        Error::Key(KeyError::AccessDenied { action, message }) => Finding::fail(
            CHECK,
            format!("KMS denied {action} of the volume key: {message}"),
            owner_policy(Some(url)),
        ),
        Error::Key(k @ (KeyError::KeyNotFound(_) | KeyError::InvalidCiphertext)) => Finding::fail(
            CHECK,
            format!("the volume key cannot be unwrapped: {k}"),
            "the KMS key must exist, be enabled and not pending deletion \
                 (aws kms describe-key; aws kms enable-key / cancel-key-deletion), \
                 in the region of the volume",
        ),
        other => Finding::fail(
            CHECK,
            format!("reading the volume config failed: {other}"),
            "check the endpoint and the network, then run sealfs doctor again",
        ),
    };
    (finding, None)
}

/// The config against this machine's pin of the volume (nothing recorded).
pub(super) fn pin(pins: Option<&Pins>, url: &S3Url, cfg: &VolumeConfig) -> Finding {
    const CHECK: &str = "pin";
    let at = format!("s3://{}/{}", url.bucket, url.prefix());
    let Some(pins) = pins else {
        return Finding::warn(
            CHECK,
            "no place to keep pins: neither SEALFS_CONFIG_DIR, XDG_CONFIG_HOME nor HOME is set",
            "set HOME (or SEALFS_CONFIG_DIR) so that a changed volume config is noticed",
        );
    };
    match pins.compare(&at, cfg) {
        Ok(PinState::Matches) => Finding::pass(CHECK, "the volume is the one this machine knows"),
        Ok(PinState::Unknown) => Finding::pass(
            CHECK,
            "not pinned on this machine yet: the first mount or command records its id and key",
        ),
        Ok(PinState::Differs { what, remedy }) => Finding::fail(CHECK, what, remedy),
        Err(e) => Finding::fail(CHECK, e.to_string(), "fix or remove the pins file"),
    }
}

/// One GenerateDataKey under the volume's key and one Decrypt of what it
/// wrapped, under a context no file uses; the two keys must agree.
pub(super) async fn kms_key(keys: &dyn KeyService, key_arn: &str) -> Finding {
    const CHECK: &str = "kms key";
    let ctx = EncryptionContext::for_probe();
    let failed = |what: &str, e: KeyError| {
        let fix = match e {
            KeyError::AccessDenied { .. } => format!(
                "allow kms:GenerateDataKey and kms:Decrypt on {key_arn} (the owner policy of \
                 `sealfs policy owner` does), and check the key policy lets the account's IAM \
                 policies grant it"
            ),
            KeyError::KeyNotFound(_) => "the key must exist, be enabled and not pending deletion \
                 (aws kms describe-key; enable-key / cancel-key-deletion), in this region"
                .to_string(),
            _ => "check the endpoint and the network, then run sealfs doctor again".to_string(),
        };
        Finding::fail(CHECK, format!("{what} under {key_arn}: {e}"), fix)
    };
    let made = match keys.generate_data_key(key_arn, &ctx).await {
        Ok(made) => made,
        Err(e) => return failed("GenerateDataKey failed", e),
    };
    match keys.decrypt(key_arn, &made.wrapped, &ctx).await {
        Ok(k) if k.expose() == made.key.expose() => Finding::pass(
            CHECK,
            format!("GenerateDataKey and Decrypt work under {key_arn}"),
        ),
        Ok(_) => Finding::fail(
            CHECK,
            format!("Decrypt under {key_arn} returned another key than GenerateDataKey made"),
            "check the KMS endpoint: it is not behaving as KMS does",
        ),
        Err(e) => failed("Decrypt failed", e),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;
    use crate::keys::FakeKms;
    use crate::store::MemoryStore;

    async fn volume_at(prefix: &str) -> (MemoryStore, FakeKms, S3Url) {
        let store = MemoryStore::new("b");
        let kms = FakeKms::new();
        let key = kms.add_key();
        let cfg = VolumeConfig::create(&kms, &key, 65536).await.unwrap();
        volume::save(&store, prefix, &cfg, &crate::store::PutCondition::None)
            .await
            .unwrap();
        (
            store,
            kms,
            S3Url::parse(&format!("s3://b/{prefix}")).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_volume_that_verifies_passes_and_a_missing_or_changed_one_fails() {
        let (store, kms, url) = volume_at("vol").await;
        let (f, cfg) = config(&store, &kms, &url).await;
        assert_eq!(f.status, Status::Pass, "{f:?}");
        assert!(cfg.unwrap().kms_key_arn.starts_with("arn:aws:kms:"));

        let (f, cfg) = config(&store, &kms, &S3Url::parse("s3://b/other").unwrap()).await;
        assert_eq!(f.status, Status::Fail);
        assert!(f.fix.unwrap().contains("sealfs init s3://b/other"));
        assert!(cfg.is_none());

        // One byte of the config changed: it no longer verifies.
        let k = volume::config_key("vol");
        let body = store.get(&k, None, None).await.unwrap().body;
        let text = String::from_utf8(body.to_vec()).unwrap();
        let changed = text.replace("\"segment_size\": 65536", "\"segment_size\": 4096");
        assert_ne!(text, changed);
        store
            .put(
                &k,
                changed.into_bytes().into(),
                &Default::default(),
                &crate::store::PutCondition::None,
            )
            .await
            .unwrap();
        let (f, _) = config(&store, &kms, &url).await;
        assert_eq!(f.status, Status::Fail);
        assert!(f.found.contains("invalid"), "{}", f.found);
        assert!(f.fix.unwrap().contains("do not mount"));
    }

    #[tokio::test]
    async fn the_pin_is_compared_and_never_recorded() {
        let (store, kms, url) = volume_at("vol").await;
        let (_, cfg) = config(&store, &kms, &url).await;
        let cfg = cfg.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pins = Pins::at(dir.path().join("pins.json"));
        assert_eq!(pin(Some(&pins), &url, &cfg).status, Status::Pass);
        assert!(!dir.path().join("pins.json").exists(), "doctor wrote a pin");
        pins.check("s3://b/vol", &cfg).unwrap();
        assert_eq!(pin(Some(&pins), &url, &cfg).status, Status::Pass);
        let other = VolumeConfig::create(&kms, &cfg.kms_key_arn, 65536)
            .await
            .unwrap();
        let f = pin(Some(&pins), &url, &other);
        assert_eq!(f.status, Status::Fail);
        assert!(
            f.found.contains("not the one this machine knows"),
            "{}",
            f.found
        );
        assert!(f.fix.unwrap().contains("remove its entry"));
        assert_eq!(pin(None, &url, &cfg).status, Status::Warn);
    }

    #[tokio::test]
    async fn the_kms_key_must_make_and_unwrap_a_data_key() {
        let kms = FakeKms::new();
        let key = kms.add_key();
        assert_eq!(kms_key(&kms, &key).await.status, Status::Pass);
        let f = kms_key(&kms, "arn:aws:kms:us-east-1:000000000000:key/gone").await;
        assert_eq!(f.status, Status::Fail);
        assert!(f.fix.unwrap().contains("pending deletion"));
        kms.deny(&key);
        let f = kms_key(&kms, &key).await;
        assert_eq!(f.status, Status::Fail);
        assert!(f.found.contains("GenerateDataKey"), "{}", f.found);
        assert!(f.fix.unwrap().contains("kms:GenerateDataKey"));
    }
}
