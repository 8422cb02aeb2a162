//! `sealfs verify s3://BUCKET/PREFIX`: checks every object of a volume the
//! way a read would (data key, key commitment, header MAC, file id, path
//! binding, every segment, the length), reports each failure, and exits
//! non-zero if there was any.

use crate::app::Wiring;
use crate::sealed::SealedStore;
use crate::store::{IndexUse, ListEntry};
use crate::url::S3Url;
use crate::volume;
use anyhow::bail;
use futures::StreamExt;
use std::io::IsTerminal;

/// How many objects are checked at once.
const CONCURRENCY: usize = 4;

/// Directory markers carry no content; everything else must be a sealed object.
fn is_marker(e: &ListEntry) -> bool {
    e.key.ends_with('/') && e.size == 0
}

async fn check(sealed: &SealedStore, key: &str) -> crate::Result<u64> {
    let obj = sealed.open(key).await?;
    let s = sealed.settings();
    // Every segment is opened and verified; the plaintext itself is dropped.
    obj.copy_to(
        sealed.store().as_ref(),
        &mut tokio::io::sink(),
        s.read_run,
        s.read_concurrency,
        &|_| {},
    )
    .await?;
    Ok(obj.plain_len())
}

pub async fn run(w: &Wiring, url: &S3Url) -> anyhow::Result<()> {
    let prefix = url.prefix().to_string();
    let keys = w.keys.service.clone();
    // The config first: a volume whose config fails is not worth reading on.
    let cfg = volume::load(w.store.as_ref(), keys.as_ref(), &prefix).await?;
    if let Some(pins) = volume::Pins::default_location() {
        pins.check(&format!("s3://{}/{prefix}", url.bucket), &cfg)?;
    }
    let list_prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let objects: Vec<ListEntry> = crate::store::list_all(w.store.as_ref(), &list_prefix)
        .await?
        .into_iter()
        .filter(|e| !is_marker(e) && !volume::is_internal(&e.key))
        .collect();
    let sealed = cfg
        .sealed_store(&prefix, w.store.clone(), keys, IndexUse::Read, None)
        .await?;
    let pb = if std::io::stderr().is_terminal() {
        let pb = indicatif::ProgressBar::new(objects.len() as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "verify [{bar:30}] {pos}/{len} objects, eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        Some(pb)
    } else {
        None
    };
    let mut results = futures::stream::iter(objects.iter())
        .map(|e| {
            let sealed = &sealed;
            async move { (e, check(sealed, &e.key).await) }
        })
        .buffer_unordered(CONCURRENCY);
    let (mut ok, mut bytes, mut failed) = (0u64, 0u64, 0u64);
    while let Some((e, r)) = results.next().await {
        match r {
            Ok(n) => {
                ok += 1;
                bytes += n;
            }
            Err(err) => {
                failed += 1;
                let line = format!("FAILED s3://{}/{}: {err}", url.bucket, e.key);
                match &pb {
                    Some(pb) => pb.println(line),
                    None => println!("{line}"),
                }
            }
        }
        if let Some(pb) = &pb {
            pb.inc(1);
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    println!(
        "{url}: {} object(s) checked, {ok} verified ({bytes} plaintext bytes), {failed} failed",
        objects.len()
    );
    if failed > 0 {
        bail!("{failed} object(s) failed verification");
    }
    Ok(())
}
