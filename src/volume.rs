//! The volume config at `<prefix>/.sealfs/volume.json`, and the local pin.
//!
//! The config names the KMS key that wraps every new file's data key, so it
//! is authenticated: its fields are MACed under a volume key that KMS wraps
//! under that same KMS key (encryption context `sealfs:volume=<id>`), and
//! `Decrypt` is called with the config's key ARN as `KeyId`, so KMS refuses a
//! wrapped volume key made under any other key. An attacker who can write the
//! bucket but cannot use the KMS key can therefore not edit the config.
//!
//! A full replacement (their own key, their own volume key, their own MAC)
//! verifies on its own terms; the local pin (first key seen for a volume URL,
//! kept in `$SEALFS_CONFIG_DIR` or `~/.config/sealfs/pins.json`) catches it on
//! every machine that has used the volume before.

use crate::crypto::attributes::AttributeKeys;
use crate::error::{Error, Result};
use crate::keys::{EncryptionContext, KeyService};
use crate::store::{
    AttestedStore, AttributeRule, IndexUse, Metadata, ObjectStore, PutCondition, StoreError,
};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The format new volumes get. Format 2 authenticates every object's
/// attributes (see [`crate::store::attested`]); format 1 volumes, made
/// before, read MAC-less objects under the legacy rule.
pub const FORMAT: u32 = 2;
pub const INTERNAL_DIR: &str = ".sealfs";
const CONFIG_NAME: &str = "volume.json";

/// Joins a volume prefix and a relative path into an object key.
pub fn join(prefix: &str, rel: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        rel.to_string()
    } else {
        format!("{prefix}/{rel}")
    }
}

pub fn config_key(prefix: &str) -> String {
    join(prefix, &format!("{INTERNAL_DIR}/{CONFIG_NAME}"))
}

/// Whether the object `key` lies in the volume at `prefix` ("" for a
/// bucket's root): below it by whole path components.
pub fn holds(prefix: &str, key: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty() || key.strip_prefix(prefix).is_some_and(|r| r.starts_with('/'))
}

/// True when `key` lies in a volume's internal area (never a user file).
pub fn is_internal(key: &str) -> bool {
    key.split('/').any(|c| c == INTERNAL_DIR)
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VolumeConfig {
    pub format: u32,
    pub volume_id: String,
    pub kms_key_arn: String,
    pub segment_size: u32,
    pub wrapped_volume_key: String,
    pub created_unix: u64,
    pub mac: String,
}

/// The MACed fields, in a fixed order.
#[derive(Serialize)]
struct Signed<'a> {
    format: u32,
    volume_id: &'a str,
    kms_key_arn: &'a str,
    segment_size: u32,
    wrapped_volume_key: &'a str,
    created_unix: u64,
}

impl VolumeConfig {
    /// The I/O settings that write this volume's format (its segment size).
    pub fn io_settings(&self) -> crate::sealed::IoSettings {
        crate::sealed::IoSettings {
            segment_size: self.segment_size,
            ..crate::sealed::IoSettings::default()
        }
    }
    /// The sealed-object store of the volume at `prefix` over `inner`: its
    /// segment size, every data key pinned to its KMS key, and every
    /// object's attributes checked and written through [`AttestedStore`]:
    /// what every owner path (mount, put, share, rekey, verify) uses.
    ///
    /// Files sealed under the volume's branch keys open through it; with
    /// `branches` (a mount), new files take keys derived from a branch key
    /// of this store's own, else one KMS call each (one-shot commands).
    pub async fn sealed_store(
        &self,
        prefix: &str,
        inner: Arc<dyn ObjectStore>,
        keys: Arc<dyn KeyService>,
        index: IndexUse,
        branches: Option<crate::sealed::BranchSettings>,
    ) -> Result<crate::sealed::SealedStore> {
        let store = self
            .attested_store(prefix, inner, keys.as_ref(), index)
            .await?;
        let branch_keys = crate::sealed::Branches::new(
            store.clone(),
            keys.clone(),
            &self.kms_key_arn,
            &self.volume_id,
            prefix,
            branches,
        );
        Ok(crate::sealed::SealedStore::new(
            store,
            keys,
            self.io_settings(),
            self.kms_key_arn.clone(),
        )
        .with_branches(branch_keys))
    }

    fn signed_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&Signed {
            format: self.format,
            volume_id: &self.volume_id,
            kms_key_arn: &self.kms_key_arn,
            segment_size: self.segment_size,
            wrapped_volume_key: &self.wrapped_volume_key,
            created_unix: self.created_unix,
        })
        .expect("serializable")
    }

    fn mac_with(&self, volume_key: &[u8]) -> [u8; 32] {
        let mut mk = zeroize::Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, volume_key)
            .expand(b"sealfs/v1/volume-config", mk.as_mut())
            .expect("valid length");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(mk.as_ref()).expect("any key length");
        mac.update(&self.signed_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A new config for a volume whose files are wrapped under `kms_key_arn`.
    pub async fn create(
        keys: &dyn KeyService,
        kms_key_arn: &str,
        segment_size: u32,
    ) -> Result<Self> {
        if crate::crypto::segment_log2(segment_size).is_none() {
            return Err(Error::InvalidArgument(format!(
                "segment size {segment_size} must be a power of two between 4 KiB and 16 MiB"
            )));
        }
        let volume_id = crate::crypto::FileId::random().to_hex();
        let g = keys
            .generate_data_key(kms_key_arn, &EncryptionContext::for_volume(&volume_id))
            .await?;
        let mut cfg = VolumeConfig {
            format: FORMAT,
            volume_id,
            kms_key_arn: g.key_id.clone(),
            segment_size,
            wrapped_volume_key: B64.encode(&g.wrapped),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            mac: String::new(),
        };
        cfg.mac = hex::encode(cfg.mac_with(g.key.expose()));
        Ok(cfg)
    }

    /// The volume key, unwrapped under the config's KMS key (from the
    /// decrypt cache after the first time); `Ok(Err(reason))` when KMS
    /// refuses it as not this volume's.
    async fn volume_key(
        &self,
        keys: &dyn KeyService,
    ) -> Result<std::result::Result<crate::crypto::DataKey, String>> {
        let Ok(wrapped) = B64.decode(&self.wrapped_volume_key) else {
            return Ok(Err("wrapped volume key is not base64".into()));
        };
        let ctx = EncryptionContext::for_volume(&self.volume_id);
        match keys.decrypt(&self.kms_key_arn, &wrapped, &ctx).await {
            Ok(vk) => Ok(Ok(vk)),
            Err(crate::keys::KeyError::InvalidCiphertext) => Ok(Err(format!(
                "the volume key was not wrapped under {} for this volume (config tampered)",
                self.kms_key_arn
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// `inner` with this volume's attributes authenticated and its xattrs
    /// encrypted ([`AttestedStore`]).
    async fn attested_store(
        &self,
        prefix: &str,
        inner: Arc<dyn ObjectStore>,
        keys: &dyn KeyService,
        index: IndexUse,
    ) -> Result<Arc<dyn ObjectStore>> {
        let vk = self
            .volume_key(keys)
            .await?
            .map_err(|reason| Error::VolumeConfig {
                bucket: inner.bucket().to_string(),
                key: config_key(prefix),
                reason,
            })?;
        let rule = if self.format >= 2 {
            AttributeRule::Strict
        } else {
            AttributeRule::Legacy
        };
        Ok(Arc::new(
            AttestedStore::new(inner, AttributeKeys::derive(vk.expose()), prefix, rule)
                .with_index(index),
        ))
    }

    /// The key of the volume's audit trail, from the volume key: only those
    /// who can unwrap it (the owners, never a grantee) can write entries.
    pub async fn audit_key(
        &self,
        prefix: &str,
        bucket: &str,
        keys: &dyn KeyService,
    ) -> Result<crate::audit::entry::AuditKey> {
        let vk = self
            .volume_key(keys)
            .await?
            .map_err(|reason| Error::VolumeConfig {
                bucket: bucket.to_string(),
                key: config_key(prefix),
                reason,
            })?;
        Ok(crate::audit::entry::AuditKey::derive(vk.expose()))
    }

    /// Checks the MAC under the KMS-unwrapped volume key; `Ok(Err(reason))` when
    /// the config does not verify, `Err` when KMS could not be asked.
    pub async fn verify(&self, keys: &dyn KeyService) -> Result<std::result::Result<(), String>> {
        if !(1..=FORMAT).contains(&self.format) {
            return Ok(Err(format!("unsupported volume format {}", self.format)));
        }
        let vk = match self.volume_key(keys).await? {
            Ok(vk) => vk,
            Err(reason) => return Ok(Err(reason)),
        };
        let expected = hex::encode(self.mac_with(vk.expose()));
        if subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), self.mac.as_bytes()).into() {
            Ok(Ok(()))
        } else {
            Ok(Err("config MAC does not verify (config tampered)".into()))
        }
    }
}

/// Loads and verifies the config of the volume at `prefix`.
pub async fn load(
    store: &dyn ObjectStore,
    keys: &dyn KeyService,
    prefix: &str,
) -> Result<VolumeConfig> {
    let key = config_key(prefix);
    let bad = |reason: String| Error::VolumeConfig {
        bucket: store.bucket().to_string(),
        key: key.clone(),
        reason,
    };
    let got = match store.get(&key, None, None).await {
        Ok(g) => g,
        Err(StoreError::NotFound { .. }) => {
            return Err(Error::NoVolume {
                bucket: store.bucket().to_string(),
                prefix: prefix.to_string(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let cfg: VolumeConfig =
        serde_json::from_slice(&got.body).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    cfg.verify(keys).await?.map_err(bad)?;
    Ok(cfg)
}

/// Loads the volume that contains `object_key`: the nearest enclosing prefix
/// with a config. Returns that prefix and its config.
pub async fn find(
    store: &dyn ObjectStore,
    keys: &dyn KeyService,
    object_key: &str,
) -> Result<(String, VolumeConfig)> {
    let mut prefix = object_key;
    loop {
        prefix = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        match load(store, keys, prefix).await {
            Err(Error::NoVolume { .. }) if !prefix.is_empty() => continue,
            Err(Error::NoVolume { bucket, .. }) => {
                let parent = object_key.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                return Err(Error::NoVolume {
                    bucket,
                    prefix: parent.to_string(),
                });
            }
            other => return other.map(|cfg| (prefix.to_string(), cfg)),
        }
    }
}

/// Writes the config; `cond` is `IfNoneMatch` for a new volume.
pub async fn save(
    store: &dyn ObjectStore,
    prefix: &str,
    cfg: &VolumeConfig,
    cond: &PutCondition,
) -> Result<()> {
    let body = serde_json::to_vec_pretty(cfg).expect("serializable");
    store
        .put(
            &config_key(prefix),
            Bytes::from(body),
            &Metadata::new(),
            cond,
        )
        .await?;
    Ok(())
}

/// True when `url` lies below the volume URL `volume` (`s3://b/p` holds
/// `s3://b/p/x`; `s3://b/` holds everything in the bucket).
fn encloses(volume: &str, url: &str) -> bool {
    url.starts_with(&format!("{}/", volume.trim_end_matches('/')))
}

/// Trust-on-first-use record of each volume's key, on this machine.
pub struct Pins {
    path: PathBuf,
}

/// A volume config held against this machine's pins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinState {
    /// The same volume id and KMS key were recorded.
    Matches,
    /// Nothing recorded: the first use records it.
    Unknown,
    /// Another volume or key was recorded, or the config lies inside a
    /// pinned volume: what, and what to do if it is genuine.
    Differs { what: String, remedy: String },
}

/// A volume this machine has pinned: its URL, id and KMS key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedVolume {
    pub url: String,
    pub volume_id: String,
    pub kms_key_arn: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct Pin {
    volume_id: String,
    kms_key_arn: String,
}

impl Pin {
    fn of(cfg: &VolumeConfig) -> Pin {
        Pin {
            volume_id: cfg.volume_id.clone(),
            kms_key_arn: cfg.kms_key_arn.clone(),
        }
    }
}

impl Pins {
    pub fn default_location() -> Option<Self> {
        let dir = std::env::var_os("SEALFS_CONFIG_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CONFIG_HOME").map(|d| PathBuf::from(d).join("sealfs"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".config/sealfs"))
            })?;
        Some(Pins {
            path: dir.join("pins.json"),
        })
    }

    #[cfg(test)]
    pub fn at(path: PathBuf) -> Self {
        Pins { path }
    }

    /// The recorded pins: none when the file does not exist yet. A file
    /// that cannot be read or parsed is an error, never an empty set: that
    /// would silently trust whatever config the bucket holds now.
    fn read(&self) -> Result<BTreeMap<String, Pin>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => {
                return Err(Error::InvalidArgument(format!(
                    "cannot read the volume pins in {}: {e}; fix or remove the file (removing it trusts every volume's config afresh)",
                    self.path.display()
                )))
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::InvalidArgument(format!(
                "the volume pins in {} are not valid JSON ({e}); fix or remove the file (removing it trusts every volume's config afresh)",
                self.path.display()
            ))
        })
    }

    /// What this machine knows of the volume at `url`, compared with `cfg`;
    /// records nothing.
    pub fn compare(&self, url: &str, cfg: &VolumeConfig) -> Result<PinState> {
        let pins = self.read()?;
        let pin = Pin::of(cfg);
        Ok(match pins.get(url) {
            Some(p) if *p == pin => PinState::Matches,
            Some(p) => PinState::Differs {
                what: format!(
                    "the volume at {url} is not the one this machine knows: key {} (volume {}) was recorded, the bucket now says key {} (volume {})",
                    p.kms_key_arn, p.volume_id, pin.kms_key_arn, pin.volume_id,
                ),
                remedy: format!(
                    "If the volume was deliberately re-created, remove its entry from {}",
                    self.path.display()
                ),
            },
            // A config inside a volume this machine already knows is not
            // trusted on first use: whoever can write the bucket can plant
            // one (with a KMS key of their own) below any prefix.
            None => match pins.keys().find(|u| encloses(u, url)) {
                Some(outer) => PinState::Differs {
                    what: format!(
                        "{url} has a volume config of its own inside the volume {outer} this machine knows; \
                         it is not trusted on first use (a config planted in the bucket looks the same)"
                    ),
                    remedy: format!(
                        "If it is genuine, add {url} to {} by hand",
                        self.path.display()
                    ),
                },
                None => PinState::Unknown,
            },
        })
    }

    /// Records `cfg` for `url` on first use; errors if a different volume or key was recorded.
    pub fn check(&self, url: &str, cfg: &VolumeConfig) -> Result<()> {
        match self.compare(url, cfg)? {
            PinState::Matches => Ok(()),
            PinState::Differs { what, remedy } => {
                Err(Error::InvalidArgument(format!("{what}. {remedy}")))
            }
            PinState::Unknown => self.record(url, cfg),
        }
    }

    /// The pinned volume that encloses `object_url` (the nearest pinned
    /// volume URL above it), if this machine knows one.
    pub fn enclosing(&self, object_url: &str) -> Result<Option<PinnedVolume>> {
        Ok(self
            .read()?
            .into_iter()
            .filter(|(u, _)| encloses(u, object_url))
            .max_by_key(|(u, _)| u.len())
            .map(|(url, p)| PinnedVolume {
                url,
                volume_id: p.volume_id,
                kms_key_arn: p.kms_key_arn,
            }))
    }

    /// Replaces the record for `url` (after `sealfs init`).
    pub fn record(&self, url: &str, cfg: &VolumeConfig) -> Result<()> {
        let mut pins = self.read()?;
        pins.insert(url.to_string(), Pin::of(cfg));
        self.write(&pins);
        Ok(())
    }

    fn write(&self, pins: &BTreeMap<String, Pin>) {
        let res = (|| {
            if let Some(d) = self.path.parent() {
                std::fs::create_dir_all(d)?;
            }
            let tmp = self.path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(pins).expect("serializable"))?;
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = res {
            tracing::warn!(path = %self.path.display(), error = %e, "could not record the volume pin");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::FakeKms;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn config_round_trip_and_tamper_detection() {
        let store = MemoryStore::new("b");
        let kms = FakeKms::new();
        let arn = kms.add_key();
        let cfg = VolumeConfig::create(&kms, &arn, 65536).await.unwrap();
        save(&store, "team/vol", &cfg, &PutCondition::IfNoneMatch)
            .await
            .unwrap();
        assert_eq!(load(&store, &kms, "team/vol").await.unwrap(), cfg);
        let (found_prefix, _) = find(&store, &kms, "team/vol/a/b/c.txt").await.unwrap();
        assert_eq!(found_prefix, "team/vol");

        // Swap in another key ARN, keeping everything else: KMS refuses the blob.
        let evil = kms.add_key();
        let mut edited = cfg.clone();
        edited.kms_key_arn = evil.clone();
        save(&store, "team/vol", &edited, &PutCondition::None)
            .await
            .unwrap();
        assert!(matches!(
            load(&store, &kms, "team/vol").await,
            Err(Error::VolumeConfig { .. })
        ));

        // Edit the segment size only: the MAC fails.
        let mut edited = cfg.clone();
        edited.segment_size = 4096;
        save(&store, "team/vol", &edited, &PutCondition::None)
            .await
            .unwrap();
        let err = load(&store, &kms, "team/vol").await.unwrap_err();
        assert!(err.to_string().contains("MAC"), "{err}");

        // Full replacement under another key verifies alone, but the pin catches it.
        let dir = tempfile::tempdir().unwrap();
        let pins = Pins::at(dir.path().join("pins.json"));
        pins.check("s3://b/team/vol", &cfg).unwrap();
        let replaced = VolumeConfig::create(&kms, &evil, 65536).await.unwrap();
        assert!(replaced.verify(&kms).await.unwrap().is_ok());
        assert!(pins.check("s3://b/team/vol", &replaced).is_err());
        pins.check("s3://b/team/vol", &cfg).unwrap();

        // A config below a pinned volume is not trusted on first use.
        let planted = VolumeConfig::create(&kms, &evil, 65536).await.unwrap();
        let err = pins.check("s3://b/team/vol/sub", &planted).unwrap_err();
        assert!(
            err.to_string().contains("not trusted on first use"),
            "{err}"
        );
        pins.check("s3://b/team/volume2", &planted).unwrap();
        assert_eq!(
            pins.enclosing("s3://b/team/vol/a/b.txt").unwrap(),
            Some(PinnedVolume {
                url: "s3://b/team/vol".into(),
                volume_id: cfg.volume_id.clone(),
                kms_key_arn: cfg.kms_key_arn.clone()
            })
        );
        assert_eq!(pins.enclosing("s3://b/team/volx").unwrap(), None);

        // Unreadable pins are an error, never a reset that trusts the bucket.
        std::fs::write(dir.path().join("pins.json"), b"{garbage").unwrap();
        let err = pins.check("s3://b/team/vol", &replaced).unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        assert!(pins.record("s3://b/team/vol", &replaced).is_err());
        assert_eq!(
            std::fs::read(dir.path().join("pins.json")).unwrap(),
            b"{garbage"
        );
    }

    #[tokio::test]
    async fn missing_and_garbage_configs() {
        let store = MemoryStore::new("b");
        let kms = FakeKms::new();
        assert!(matches!(
            find(&store, &kms, "x/y/z").await,
            Err(Error::NoVolume { .. })
        ));
        store
            .put(
                &config_key("v"),
                Bytes::from_static(b"{nope"),
                &Metadata::new(),
                &PutCondition::None,
            )
            .await
            .unwrap();
        assert!(matches!(
            load(&store, &kms, "v").await,
            Err(Error::VolumeConfig { .. })
        ));
        assert!(VolumeConfig::create(&kms, "k", 1000).await.is_err());
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        /// Any bytes at the config's key load as an error, never a panic.
        #[test]
        fn any_config_bytes_are_refused_or_verified(
            body in proptest::prop_oneof![
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                "\\{\"format\":[0-9]{1,12},\"volume_id\":\"[a-z]{0,5}\",\"kms_key_arn\":\"k\",\"segment_size\":[0-9]{1,12},\"wrapped_volume_key\":\"[A-Za-z0-9+/=]{0,12}\",\"created_unix\":[0-9]{1,20},\"mac\":\"\"\\}"
                    .prop_map(String::into_bytes),
            ]
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let store = MemoryStore::new("b");
                let kms = FakeKms::new();
                store
                    .put(&config_key("v"), Bytes::from(body), &Metadata::new(), &PutCondition::None)
                    .await
                    .unwrap();
                assert!(load(&store, &kms, "v").await.is_err());
            });
        }
    }

    #[test]
    fn paths() {
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("p/", "a"), "p/a");
        assert_eq!(config_key("p"), "p/.sealfs/volume.json");
        assert!(is_internal("p/.sealfs/volume.json"));
        assert!(!is_internal("p/.sealfsx"));
    }

    #[test]
    fn volumes_hold_whole_path_components() {
        assert!(holds("vol", "vol/a"));
        assert!(holds("vol/", "vol/d/a"));
        assert!(!holds("vol", "volume/a"));
        assert!(!holds("vol", "vol"));
        assert!(holds("", "anything"));
    }
}
