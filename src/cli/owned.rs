//! A volume opened by an owner's command: its config checked against the
//! local pin, its sealed store, and its audit trail.

use crate::app::Wiring;
use crate::audit::AuditTrail;
use crate::sealed::SealedStore;
use crate::store::IndexUse;
use crate::volume::{self, Pins, VolumeConfig};
use std::sync::Arc;

pub(super) struct OwnedVolume {
    pub bucket: String,
    pub prefix: String,
    pub cfg: VolumeConfig,
    /// Data keys pinned to the volume's KMS key, attributes authenticated.
    pub sealed: SealedStore,
}

impl OwnedVolume {
    /// The volume holding the object `key`: the nearest enclosing config.
    pub async fn holding(w: &Wiring, bucket: &str, key: &str) -> anyhow::Result<Self> {
        let (prefix, cfg) = volume::find(w.store.as_ref(), w.keys.service.as_ref(), key).await?;
        Self::open(w, bucket, prefix, cfg).await
    }

    /// The volume whose config is at `prefix` exactly.
    pub async fn at(w: &Wiring, bucket: &str, prefix: &str) -> anyhow::Result<Self> {
        let prefix = prefix.trim_end_matches('/').to_string();
        let cfg = volume::load(w.store.as_ref(), w.keys.service.as_ref(), &prefix).await?;
        Self::open(w, bucket, prefix, cfg).await
    }

    async fn open(
        w: &Wiring,
        bucket: &str,
        prefix: String,
        cfg: VolumeConfig,
    ) -> anyhow::Result<Self> {
        if let Some(pins) = Pins::default_location() {
            pins.check(&format!("s3://{bucket}/{prefix}"), &cfg)?;
        }
        let sealed = cfg
            .sealed_store(
                &prefix,
                w.store.clone(),
                w.keys.service.clone(),
                IndexUse::Read,
                None,
            )
            .await?;
        Ok(OwnedVolume {
            bucket: bucket.to_string(),
            prefix,
            cfg,
            sealed,
        })
    }

    /// The volume's audit trail (its key comes from the volume key, which
    /// the decrypt cache holds after opening the volume: no KMS call).
    pub async fn trail(&self, w: &Wiring) -> anyhow::Result<Arc<AuditTrail>> {
        let key = self
            .cfg
            .audit_key(&self.prefix, &self.bucket, w.keys.service.as_ref())
            .await?;
        Ok(Arc::new(AuditTrail::new(
            w.store.clone(),
            &self.prefix,
            key,
        )))
    }
}
