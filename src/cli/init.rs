//! `sealfs init`: create (or deliberately rewrite) a volume config.

use crate::app::Wiring;
use crate::error::Error;
use crate::keys::KeyAdmin;
use crate::store::PutCondition;
use crate::url::S3Url;
use crate::volume::{self, Pins, VolumeConfig};
use anyhow::{bail, Context};
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, PublicAccessBlockConfiguration,
};

pub struct InitArgs {
    pub kms_key: Option<String>,
    pub create_key: bool,
    pub create_bucket: bool,
    pub segment_size: u32,
    pub force: bool,
}

pub async fn run(w: &Wiring, url: &S3Url, a: InitArgs) -> anyhow::Result<()> {
    let prefix = url.prefix();
    let volume_url = format!("s3://{}/{}", url.bucket, prefix);
    if volume::is_internal(prefix) {
        bail!(
            "{volume_url} lies inside a volume's internal {} area",
            volume::INTERNAL_DIR
        );
    }
    if a.create_bucket {
        ensure_bucket(w, &url.bucket).await?;
    }
    let keys = w.keys.service.as_ref();
    let existing = match volume::load(w.store.as_ref(), keys, prefix).await {
        Ok(cfg) if !a.force => bail!(
            "{volume_url} is already a sealfs volume (KMS key {}); nothing changed. \
             Use --force to rewrite its config (the KMS key stays the same)",
            cfg.kms_key_arn
        ),
        Ok(cfg) => Some(cfg),
        Err(Error::NoVolume { .. }) => None,
        Err(e @ Error::VolumeConfig { .. }) if a.force => {
            tracing::warn!(error = %e, "existing volume config is invalid; rewriting it");
            eprintln!("sealfs: warning: {e}; rewriting it");
            None
        }
        Err(e @ Error::VolumeConfig { .. }) => {
            return Err(anyhow::Error::new(e)
                .context("refusing to initialise over it (use --force to rewrite it)"))
        }
        Err(Error::Store(crate::store::StoreError::NoSuchBucket(b))) => {
            bail!("bucket {b} does not exist (pass --create-bucket to create it)")
        }
        Err(e) => return Err(e.into()),
    };

    let kms = &w.keys.kms;
    let key_arn = match (&existing, &a.kms_key, a.create_key) {
        (Some(cfg), Some(k), _) => {
            let arn = kms.resolve_key(k).await.map_err(Error::from)?;
            if arn != cfg.kms_key_arn {
                bail!(
                    "refusing to change the KMS key of an existing volume from {} to {arn}: \
                     its files stay wrapped under the old key",
                    cfg.kms_key_arn
                );
            }
            arn
        }
        (Some(cfg), None, false) => cfg.kms_key_arn.clone(),
        (Some(_), None, true) => bail!("--create-key cannot be used on an existing volume"),
        (None, Some(k), _) => kms
            .resolve_key(k)
            .await
            .map_err(Error::from)
            .with_context(|| format!("KMS key {k}"))?,
        (None, None, true) => kms
            .create_key(&format!("sealfs volume {volume_url}"))
            .await
            .map_err(Error::from)?,
        (None, None, false) => {
            bail!("choose the volume's KMS key: --kms-key ID|ARN|alias/NAME, or --create-key")
        }
    };

    let cfg = VolumeConfig::create(keys, &key_arn, a.segment_size).await?;
    let cond = if existing.is_some() || a.force {
        PutCondition::None
    } else {
        PutCondition::IfNoneMatch
    };
    match volume::save(w.store.as_ref(), prefix, &cfg, &cond).await {
        Err(Error::Store(crate::store::StoreError::NoSuchBucket(b))) => {
            bail!("bucket {b} does not exist (pass --create-bucket to create it)")
        }
        Err(Error::Store(crate::store::StoreError::PreconditionFailed { .. })) => {
            bail!("{volume_url} was initialised concurrently by someone else; nothing changed")
        }
        other => other?,
    }
    if let Some(pins) = Pins::default_location() {
        // The volume exists now; mounts will refuse unreadable pins anyway.
        if let Err(e) = pins.record(&volume_url, &cfg) {
            eprintln!("sealfs: warning: the volume was created but its pin was not recorded: {e}");
        }
    }
    println!("Initialised sealfs volume {volume_url}");
    println!("  KMS key:      {}", cfg.kms_key_arn);
    println!("  volume id:    {}", cfg.volume_id);
    println!("  segment size: {} bytes", cfg.segment_size);
    println!(
        "Next: sealfs put FILE {volume_url}/FILE   (or mount it: sealfs mount {volume_url} DIR)"
    );
    Ok(())
}

/// Creates the bucket if it does not exist, private, with all public access blocked.
async fn ensure_bucket(w: &Wiring, bucket: &str) -> anyhow::Result<()> {
    let s3 = w.s3.client();
    if s3.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    let region = s3
        .config()
        .region()
        .map(|r| r.to_string())
        .unwrap_or_default();
    let mut req = s3.create_bucket().bucket(bucket);
    if !region.is_empty() && region != "us-east-1" {
        req = req.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region.as_str()))
                .build(),
        );
    }
    req.send().await.map_err(|e| {
        let f = crate::aws_error::classify(&e);
        anyhow::anyhow!("creating bucket {bucket}: {}", f.message)
    })?;
    let blocked = s3
        .put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await;
    if let Err(e) = blocked {
        let f = crate::aws_error::classify(&e);
        // S3-compatible servers without public access (SeaweedFS, some
        // MinIO setups) answer NotImplemented: their buckets are private.
        if f.code.as_deref() == Some("NotImplemented") || f.status == Some(501) {
            eprintln!(
                "sealfs: created bucket {bucket} (private; this server has no public access block)"
            );
            return Ok(());
        }
        anyhow::bail!("blocking public access on {bucket}: {}", f.message);
    }
    eprintln!("sealfs: created bucket {bucket} (private, public access blocked)");
    Ok(())
}
