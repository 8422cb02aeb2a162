//! `sealfs share`, `unshare`, `shares`, `shared` and `rekey`.
//!
//! A file is named by an s3:// URL or by its path on a sealfs mount. On a
//! mount, sharing goes through the mount's `user.share` attributes (so the
//! mount's view stays current); with a URL, it talks to S3 and IAM directly.

use super::owned::OwnedVolume;
use super::target::Target;
use crate::app::{Aws, AwsOptions, Wiring};
use crate::crypto::{Header, Layout, HEADER_LEN};
use crate::error::Error;
use crate::fs::{SHARE, UNSHARE};
use crate::grants::grantee::Request;
use crate::grants::policy::Listed;
use crate::grants::{GrantSettings, Grants, SharedFile};
use crate::sealed::SealMeta;
use crate::store::{ObjectStore, PutCondition};
use crate::url::S3Url;
use anyhow::{bail, Context};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

/// The grantees with the end given by `--for` or `--until`, in the form the
/// `user.share` attribute takes (`alice;until=…`), checked now so that a
/// bad end is refused before anything is granted.
pub fn with_end(
    users: &[String],
    for_: Option<&str>,
    until: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let option = match (for_, until) {
        (Some(d), _) => format!(";for={d}"),
        (None, Some(t)) => format!(";until={t}"),
        (None, None) => String::new(),
    };
    let now = std::time::SystemTime::now();
    let mut out = Vec::new();
    for u in users {
        let item = format!("{u}{option}");
        let r = Request::parse(&item, now).map_err(|e| anyhow::anyhow!(e))?;
        // Resolved to an instant here, so that every grantee of the
        // command gets the same end.
        let who = u.split(';').next().unwrap_or_default();
        out.push(Request::show(&who, r.until));
    }
    Ok(out)
}

/// What to do with a file's grants.
pub enum Change {
    Share,
    Unshare,
    UnshareAll,
}

/// Grant settings from the command line.
pub fn settings(policy_limit: u16, boundary: crate::grants::BoundaryCheck) -> GrantSettings {
    GrantSettings {
        attached_policy_limit: policy_limit.into(),
        boundary,
        ..GrantSettings::default()
    }
}

fn grants(w: &Wiring, settings: GrantSettings) -> Grants {
    Grants::new(w.grant_service.clone(), settings)
}

pub async fn change(
    opts: &AwsOptions,
    target: &Target,
    who: &[String],
    change: Change,
    settings: GrantSettings,
) -> anyhow::Result<()> {
    let url = match target {
        Target::Mounted { path, .. } => {
            return match change {
                Change::Share => set_attr(path, SHARE, &who.join(",")),
                Change::Unshare => set_attr(path, UNSHARE, &who.join(",")),
                Change::UnshareAll => remove_attr(path, SHARE),
            }
        }
        Target::S3(url) => url,
    };
    let w = Wiring::new(opts, &url.bucket).await;
    let v = OwnedVolume::holding(&w, &url.bucket, &url.key).await?;
    let sealed = &v.sealed;
    let g = grants(&w, settings).with_log(v.trail(&w).await?);
    // Only a file that verifies is shared, and its grant names the file id
    // it verified with; a grant first has the file's key wrapped for
    // grantees (a file whose key derives from a branch key).
    let file = match change {
        Change::Share => {
            let (v, _) = sealed.publish_key(&url.key).await?;
            SharedFile::of(&url.bucket, &url.key, &v)
        }
        _ => SharedFile::verified(sealed, &url.key).await?,
    };
    match change {
        Change::Share => {
            let now = std::time::SystemTime::now();
            let requests = who
                .iter()
                .map(|item| Request::parse(item, now).map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<Vec<_>>>()?;
            for r in &requests {
                g.share_until(&r.named, &file, r.until).await?;
            }
        }
        Change::Unshare => {
            for name in who {
                g.unshare(name, &file).await?;
            }
        }
        Change::UnshareAll => {
            let gone = g.unshare_all(&file).await?;
            if gone.is_empty() {
                eprintln!("{url} was not shared");
            }
        }
    }
    Ok(())
}

/// The file at `url`, verified under its volume's pinned key: only a file
/// that verifies is shared, and its grant names the file id it verified with.
async fn verified_file(w: &Wiring, url: &S3Url) -> anyhow::Result<SharedFile> {
    let v = OwnedVolume::holding(w, &url.bucket, &url.key).await?;
    Ok(SharedFile::verified(&v.sealed, &url.key).await?)
}

/// Prints the users a file is shared with, one per line, each with its end
/// if it has one (`alice;until=2027-02-01T00:00:00Z`).
pub async fn list(opts: &AwsOptions, target: &Target) -> anyhow::Result<()> {
    let who: Vec<String> = match target {
        Target::Mounted { path, .. } => match get_attr(path, SHARE)? {
            Some(v) => v.split(',').map(str::to_string).collect(),
            None => Vec::new(),
        },
        Target::S3(url) => {
            let w = Wiring::new(opts, &url.bucket).await;
            let file = verified_file(&w, url).await?;
            grants(&w, GrantSettings::default())
                .grants_of(&file)
                .await?
                .iter()
                .map(|(name, until)| Request::show(name, *until))
                .collect()
        }
    };
    for name in who {
        println!("{name}");
    }
    Ok(())
}

/// `sealfs shares --prune-ended`: every ended statement out of the
/// account's sealfs grant policies.
pub async fn prune_ended(opts: &AwsOptions) -> anyhow::Result<()> {
    let aws = Aws::load(opts).await;
    let g = Grants::new(aws.grant_service(), GrantSettings::default());
    let n = g.prune_ended().await?;
    eprintln!(
        "{n} grant {} pruned",
        if n == 1 { "policy" } else { "policies" }
    );
    Ok(())
}

/// A grant's end as the listings' UNTIL column shows it (`-`: no end).
fn until_column(until: Option<crate::grants::expiry::Until>) -> String {
    until.map(|u| u.iso8601()).unwrap_or_else(|| "-".into())
}

/// What became of a granted object since it was shared.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Found {
    /// It verifies, with this file id.
    Current(String),
    /// No object at that key.
    Missing,
    /// It does not verify (tampered, or not a sealfs file).
    Unverifiable,
}

/// `sealfs shares --volume s3://BUCKET/VOLUME`: every grant of the volume's
/// files across the account, each with its state: `ok`, `ended`, `missing`
/// (the object is gone), `replaced` (another file is at that name now: the
/// grant's file ids do not open it), `unverifiable`. `--prune-stale` removes
/// the missing and replaced ones.
pub async fn volume(
    opts: &AwsOptions,
    url: &S3Url,
    json: bool,
    prune_stale: bool,
) -> anyhow::Result<()> {
    let w = Wiring::new(opts, &url.bucket).await;
    let v = OwnedVolume::at(&w, &url.bucket, &url.key).await?;
    let (prefix, sealed) = (&v.prefix, &v.sealed);
    let mut g = grants(&w, GrantSettings::default());
    if prune_stale {
        g = g.with_log(v.trail(&w).await?);
    }
    let all = g.in_volume(&url.bucket, prefix).await?;
    let mut found: std::collections::BTreeMap<String, Found> = Default::default();
    for vg in &all {
        if found.contains_key(&vg.key) {
            continue;
        }
        let state = match SharedFile::verified(sealed, &vg.key).await {
            Ok(f) => Found::Current(f.file_id),
            Err(e) if e.errno() == libc::ENOENT => Found::Missing,
            Err(e) => {
                tracing::warn!("s3://{}/{}: {e}", url.bucket, vg.key);
                Found::Unverifiable
            }
        };
        found.insert(vg.key.clone(), state);
    }
    let now = std::time::SystemTime::now();
    let mut rows = Vec::new();
    let mut stale = Vec::new();
    for vg in &all {
        let status = match &found[&vg.key] {
            _ if vg.ended(now) => "ended",
            Found::Missing => {
                stale.push((vg.grantee.clone(), vg.key.clone()));
                "missing"
            }
            Found::Current(id) if vg.file_ids.contains(id) => "ok",
            Found::Current(_) => {
                stale.push((vg.grantee.clone(), vg.key.clone()));
                "replaced"
            }
            Found::Unverifiable => "unverifiable",
        };
        rows.push((vg, status));
    }
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(vg, status)| {
                serde_json::json!({
                    "file": format!("s3://{}/{}", url.bucket, vg.key),
                    "grantee": vg.grantee.to_string(),
                    "kind": vg.grantee.kind.as_str(),
                    "sharer": vg.sharer,
                    "until": vg.until.map(|u| u.iso8601()),
                    "status": status,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if rows.is_empty() {
        eprintln!("nothing in {url} is shared");
    } else {
        println!(
            "{:<12}  {:<24}  {:<16}  {:<20}  FILE",
            "STATUS", "GRANTEE", "SHARED BY", "UNTIL"
        );
        for (vg, status) in &rows {
            let until = until_column(vg.until);
            println!(
                "{status:<12}  {:<24}  {:<16}  {until:<20}  s3://{}/{}",
                vg.grantee.to_string(),
                vg.sharer,
                url.bucket,
                vg.key
            );
        }
    }
    if prune_stale {
        stale.sort();
        stale.dedup();
        let n = g.drop_stale(&url.bucket, &stale).await?;
        eprintln!(
            "{} stale grant(s) removed ({n} grant {} rewritten)",
            stale.len(),
            if n == 1 { "policy" } else { "policies" }
        );
    }
    Ok(())
}

/// `sealfs shared`: what has been shared with the caller, with sizes.
pub async fn shared_with_me(opts: &AwsOptions) -> anyhow::Result<()> {
    let aws = Aws::load(opts).await;
    let g = Grants::new(aws.grant_service(), GrantSettings::default());
    let files = g.shared_with_me().await?;
    if files.is_empty() {
        eprintln!("nothing has been shared with you");
        return Ok(());
    }
    println!("{:>12}  {:<16}  {:<20}  FILE", "SIZE", "SHARED BY", "UNTIL");
    let mut stores: std::collections::HashMap<String, Arc<dyn ObjectStore>> = Default::default();
    for Listed {
        bucket,
        key,
        sharer,
        until,
    } in files
    {
        let until = until_column(until);
        let store = stores
            .entry(bucket.clone())
            .or_insert_with(|| aws.store(&bucket))
            .clone();
        let size = match plain_size(store.as_ref(), &key).await {
            Ok(n) => n.to_string(),
            Err(e) => {
                tracing::warn!("s3://{bucket}/{key}: {e}");
                "unavailable".into()
            }
        };
        println!("{size:>12}  {sharer:<16}  {until:<20}  s3://{bucket}/{key}");
    }
    Ok(())
}

/// The plaintext size of a sealed object, from its header and length.
async fn plain_size(store: &dyn ObjectStore, key: &str) -> crate::Result<u64> {
    let got = store.get(key, Some(0..HEADER_LEN as u64), None).await?;
    let integrity = |check| Error::Integrity {
        bucket: store.bucket().to_string(),
        key: key.to_string(),
        check,
    };
    let header = Header::parse(&got.body).map_err(integrity)?;
    Layout::new(header.segment_size())
        .plain_len(got.info.size)
        .map_err(integrity)
}

/// `sealfs rekey`: re-encrypts a file under a fresh data key and file id,
/// so that a data key a former grantee kept opens no later version, and
/// moves the file's grants to the new file id.
pub async fn rekey(opts: &AwsOptions, url: &S3Url) -> anyhow::Result<()> {
    let w = Wiring::new(opts, &url.bucket).await;
    let v = OwnedVolume::holding(&w, &url.bucket, &url.key).await?;
    let sealed = &v.sealed;
    let obj = sealed.open(&url.key).await?;
    let old = SharedFile {
        bucket: url.bucket.clone(),
        key: url.key.clone(),
        file_id: obj.seal().key.file_id.to_hex(),
        key_arn: obj.seal().key.key_id.clone(),
    };
    // A key of the file's own from KMS: no branch key derives it, so
    // neither a key a former grantee kept nor any branch opens the new version.
    let mut wk = sealed.own_key().await?;
    // Replace exactly the version read, never a newer one.
    wk.condition = PutCondition::IfMatch(obj.info().etag.clone());
    let mut extra = obj.info().metadata.clone();
    for k in SealMeta::NAMES {
        extra.remove(k);
    }
    let settings = sealed.settings().clone();
    let (mut tx, mut rx) = tokio::io::duplex(1 << 20);
    let store = w.store.clone();
    let read = async {
        obj.copy_to(
            store.as_ref(),
            &mut tx,
            settings.read_run,
            settings.read_concurrency,
            &|_| {},
        )
        .await?;
        drop(tx);
        Ok::<_, Error>(())
    };
    let write = sealed.write(&url.key, &mut rx, obj.plain_len(), &extra, &wk, &|_| {});
    match tokio::try_join!(read, write) {
        Ok(_) => {}
        Err(Error::Store(crate::store::StoreError::PreconditionFailed { .. })) => {
            bail!("{url} changed while it was being re-keyed; nothing was replaced, try again")
        }
        Err(e) => return Err(e.into()),
    }
    let new_id = wk.key_ref.file_id.to_hex();
    let moved = grants(&w, GrantSettings::default())
        .with_log(v.trail(&w).await?)
        .rekeyed(&old, &new_id)
        .await
        .with_context(|| {
            format!(
                "{url} was re-keyed, but its grants still name the old file id {}; share it again",
                old.file_id
            )
        })?;
    eprintln!(
        "{url}: new data key, file id {} -> {new_id}{}",
        old.file_id,
        if moved.is_empty() {
            String::new()
        } else {
            let moved: Vec<String> = moved.iter().map(|g| g.to_string()).collect();
            format!("; grants kept for {}", moved.join(", "))
        }
    );
    Ok(())
}

fn c_path(path: &Path) -> anyhow::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).context("path contains a NUL byte")
}

/// What a failed xattr call on a mount means, with the hint a user needs.
fn attr_error(path: &Path, what: &str) -> anyhow::Error {
    let err = std::io::Error::last_os_error();
    let hint = match err.raw_os_error() {
        Some(libc::EINVAL) => "no such IAM user, or not a valid name",
        Some(libc::EPERM) => {
            "the user is not set up as a grantee: an IAM administrator runs `sealfs grantee setup USER s3://BUCKET/VOLUME`"
        }
        Some(libc::EACCES) => {
            "the mount's AWS credentials lack the IAM rights to share (see `sealfs policy owner`)"
        }
        Some(libc::ENOSPC) => "the grantee has no room for more grants in IAM",
        Some(libc::EISDIR) => "sharing works on regular files",
        Some(libc::ENOTSUP) => "sharing is not available on this mount",
        Some(libc::ENODATA) => "not shared",
        _ => "see the mount's log",
    };
    anyhow::anyhow!(
        "{what} {}: {err} ({hint}; the mount's log names the cause)",
        path.display()
    )
}

fn set_attr(path: &Path, name: &str, value: &str) -> anyhow::Result<()> {
    let (p, n) = (c_path(path)?, CString::new(name)?);
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(attr_error(
            path,
            if name == SHARE {
                "cannot share"
            } else {
                "cannot unshare"
            },
        ));
    }
    Ok(())
}

fn remove_attr(path: &Path, name: &str) -> anyhow::Result<()> {
    let (p, n) = (c_path(path)?, CString::new(name)?);
    if unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) } != 0 {
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENODATA) {
            eprintln!("{} was not shared", path.display());
            return Ok(());
        }
        return Err(attr_error(path, "cannot unshare"));
    }
    Ok(())
}

/// The attribute's value, `None` when it is absent.
fn get_attr(path: &Path, name: &str) -> anyhow::Result<Option<String>> {
    let (p, n) = (c_path(path)?, CString::new(name)?);
    let mut buf = vec![0u8; 4096];
    loop {
        let r =
            unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            _ => return Err(attr_error(path, "cannot list the grantees of")),
        }
    }
}
