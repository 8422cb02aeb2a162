//! `sealfs put`, `get`, `cat` and `inspect`.

use super::owned::OwnedVolume;
use super::progress_bar;
use crate::app::Wiring;
use crate::crypto::{Header, Layout, HEADER_LEN};
use crate::grants::{GrantSettings, Grants};
use crate::sealed::{IoSettings, KeySource, SealMeta, SealedStore};
use crate::store::Metadata;
use crate::url::S3Url;
use crate::volume::{self, Pins};
use anyhow::{bail, Context};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A store for reading `url`, pinned to a KMS key an owner vouched for: the
/// volume's, from its authenticated and pinned config, when the caller can
/// read that; otherwise the key the caller's own grants name for this file
/// (grant documents are written by owners, never by whoever can write the
/// bucket). The object's own key id is never trusted.
pub(super) async fn reading_store(w: &Wiring, url: &S3Url) -> anyhow::Result<SealedStore> {
    // A volume this machine has pinned: its key (and its branch keys), with
    // no request at all.
    if let Some(pins) = Pins::default_location() {
        if let Some(v) = pins.enclosing(&format!("s3://{}/{}", url.bucket, url.key))? {
            let prefix = crate::url::S3Url::parse(&v.url)?.key;
            let branches = crate::sealed::Branches::new(
                w.store.clone(),
                w.keys.service.clone(),
                &v.kms_key_arn,
                &v.volume_id,
                &prefix,
                None,
            );
            return Ok(SealedStore::new(
                w.store.clone(),
                w.keys.service.clone(),
                IoSettings::default(),
                v.kms_key_arn,
            )
            .with_branches(branches));
        }
    }
    let volume_err = match OwnedVolume::holding(w, &url.bucket, &url.key).await {
        Ok(v) => return Ok(v.sealed),
        Err(e) => e,
    };
    let info = w.store.head(&url.key).await?;
    let sm = SealMeta::read_from(&info.metadata)
        .map_err(|r| anyhow::anyhow!("{url} is not a sealfs object: {r}"))?;
    let grants = Grants::new(w.grant_service.clone(), GrantSettings::default());
    let keys = grants
        .keys_granted_to_me(&url.bucket, &url.key, &sm.key.file_id.to_hex())
        .await
        .unwrap_or_default();
    // The object's key id only picks among the keys the grants name.
    let pinned = if keys.contains(&sm.key.key_id) {
        Some(sm.key.key_id.clone())
    } else {
        keys.into_iter().next()
    };
    let Some(pinned) = pinned else {
        bail!(
            "cannot read {url}: its volume's config could not be used ({volume_err:#}), \
             and none of your grants names this file with its KMS key \
             (a grant made before sealfs named keys: ask the owner to share it again)"
        );
    };
    Ok(SealedStore::new(
        w.store.clone(),
        w.keys.service.clone(),
        IoSettings::default(),
        pinned,
    ))
}

pub async fn put(w: &Wiring, local: &Path, url: &S3Url) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(local).with_context(|| format!("cannot read {}", local.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", local.display());
    }
    let mut key = url.key.clone();
    if key.is_empty() || key.ends_with('/') {
        let name = local
            .file_name()
            .and_then(|n| n.to_str())
            .context("local file has no UTF-8 name")?;
        key.push_str(name);
    }
    if volume::is_internal(&key) {
        bail!(
            "s3://{}/{key} lies inside a volume's internal {} area",
            url.bucket,
            volume::INTERNAL_DIR
        );
    }
    let sealed = OwnedVolume::holding(w, &url.bucket, &key).await?.sealed;
    let wk = sealed.key_for_write(&key).await?;
    let mut file = tokio::fs::File::open(local)
        .await
        .with_context(|| format!("cannot open {}", local.display()))?;
    let pb = progress_bar(meta.len(), "put");
    sealed
        .write(&key, &mut file, meta.len(), &Metadata::new(), &wk, &|n| {
            if let Some(pb) = &pb {
                pb.set_position(n)
            }
        })
        .await?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    Ok(())
}

pub async fn get(w: &Wiring, url: &S3Url, local: Option<&Path>) -> anyhow::Result<()> {
    let name = url
        .file_name()
        .with_context(|| format!("{url} names a prefix, not a file"))?
        .to_string();
    let sealed = reading_store(w, url).await?;
    let settings = sealed.settings().clone();
    // Open (fetch, unwrap, verify header and binding) before touching the local side.
    let obj = sealed.open(&url.key).await?;
    let store = w.store.as_ref();
    if local == Some(Path::new("-")) {
        let mut out = tokio::io::stdout();
        obj.copy_to(
            store,
            &mut out,
            settings.read_run,
            settings.read_concurrency,
            &|_| {},
        )
        .await?;
        return Ok(());
    }
    let target: PathBuf = match local {
        None => PathBuf::from(&name),
        Some(p) if p.is_dir() => p.join(&name),
        Some(p) => p.to_path_buf(),
    };
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let tmp = dir.join(format!(".{name}.sealfs-{}.part", std::process::id()));
    // Decrypted data: created 0600, renamed into place only once all of it verified.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut file = tokio::fs::File::from_std(file);
    let pb = progress_bar(obj.plain_len(), "get");
    let copied = obj
        .copy_to(
            store,
            &mut file,
            settings.read_run,
            settings.read_concurrency,
            &|n| {
                if let Some(pb) = &pb {
                    pb.set_position(n)
                }
            },
        )
        .await;
    let synced = match copied {
        Ok(()) => file.sync_all().await.context("syncing output"),
        Err(e) => Err(e.into()),
    };
    drop(file);
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    if let Err(e) = synced.and_then(|_| {
        std::fs::rename(&tmp, &target)
            .with_context(|| format!("cannot move output into {}", target.display()))
    }) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

pub async fn inspect(w: &Wiring, url: &S3Url, verify: bool) -> anyhow::Result<()> {
    let got = w
        .store
        .get(&url.key, Some(0..HEADER_LEN as u64), None)
        .await?;
    println!("object:        {url}");
    println!("object size:   {} bytes", got.info.size);
    println!("etag:          {}", got.info.etag);
    let header = Header::parse(&got.body);
    match &header {
        Ok(h) => {
            let layout = Layout::new(h.segment_size());
            println!("format:        sealfs v{}", crate::crypto::VERSION);
            match layout.plain_len(got.info.size) {
                Ok(n) => println!(
                    "plaintext:     {n} bytes in {} segment(s) of {} bytes",
                    layout.segment_count(n),
                    h.segment_size()
                ),
                Err(e) => println!("plaintext:     invalid ({e})"),
            }
            println!("file id:       {}", h.file_id);
            println!("salt:          {} (per version)", hex::encode(h.salt));
        }
        Err(e) => println!("header:        invalid ({e})"),
    }
    match SealMeta::read_from(&got.info.metadata) {
        Ok(sm) => {
            println!("KMS key:       {}", sm.key.key_id);
            match &sm.key.source {
                KeySource::Wrapped(w) => println!(
                    "wrapped key:   {} bytes (KMS ciphertext blob, context sealfs:v=1, sealfs:file={})",
                    w.len(),
                    sm.key.file_id
                ),
                KeySource::Branch { id, shared } => {
                    println!("branch key:    {id} (the file's key derives from it and the file id)");
                    match shared {
                        Some(w) => println!(
                            "shared key:    {} bytes (KMS ciphertext blob, context sealfs:v=1, sealfs:file={})",
                            w.len(),
                            sm.key.file_id
                        ),
                        None => println!("shared key:    none (never shared)"),
                    }
                }
            }
            println!("file id:       {}", sm.key.file_id);
        }
        Err(reason) => println!("sealing meta:  invalid ({reason})"),
    }
    if !verify {
        return Ok(());
    }
    let sealed = reading_store(w, url).await?;
    match sealed.open(&url.key).await {
        Ok(_) => {
            println!("verified:      data key unwrapped; key commitment, header MAC, file id and path binding OK");
            Ok(())
        }
        Err(e) => {
            println!("verified:      FAILED");
            Err(e.into())
        }
    }
}
