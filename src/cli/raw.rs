//! `sealfs raw …` (hidden): the raw-backend reference of `scripts/bench`.
//! The same bytes, PUT and GET with the same AWS SDK client sealfs uses,
//! without encryption or a filesystem in between, so that the benchmark's
//! ratios compare sealfs with what the backend itself delivers.

use crate::app::Wiring;
use crate::store::{Metadata, MultipartUpload, ObjectStore, PutCondition};
use anyhow::Context;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Subcommand, Debug)]
pub enum RawOp {
    /// Upload FILE to KEY (multipart, parts of --part-mib, --concurrency in flight).
    Put {
        file: PathBuf,
        key: String,
        #[arg(long, default_value_t = 8)]
        part_mib: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Download KEY with ranged GETs of --part-mib, --concurrency in flight (bytes are discarded).
    Get {
        key: String,
        #[arg(long, default_value_t = 8)]
        part_mib: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// PUT every file of DIR under PREFIX/, --concurrency at once.
    PutMany {
        dir: PathBuf,
        prefix: String,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// GET every object under PREFIX (one LIST), --concurrency at once, in
    /// key order (bytes are discarded).
    GetMany {
        prefix: String,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
    /// --count random ranged GETs of --size bytes of KEY, one at a time.
    RandomGet {
        key: String,
        #[arg(long, default_value_t = 4096)]
        size: u64,
        #[arg(long, default_value_t = 2000)]
        count: usize,
    },
    /// Count the objects under PREFIX and their bytes (LIST only).
    Count { prefix: String },
}

/// Runs one operation and prints `{"seconds": …, …}` on stdout.
pub async fn run(w: &Wiring, op: RawOp) -> anyhow::Result<()> {
    let store: Arc<dyn ObjectStore> = w.store.clone();
    let t = Instant::now();
    let out = match op {
        RawOp::Put {
            file,
            key,
            part_mib,
            concurrency,
        } => {
            let data =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let len = data.len();
            let data = Bytes::from(data);
            let t = Instant::now();
            let part = part_mib << 20;
            if len <= part {
                store
                    .put(&key, data, &Metadata::new(), &PutCondition::None)
                    .await?;
            } else {
                let mut up =
                    MultipartUpload::start(store.clone(), &key, &Metadata::new(), concurrency)
                        .await?;
                for at in (0..len).step_by(part) {
                    up.push(data.slice(at..(at + part).min(len))).await?;
                }
                up.finish(&PutCondition::None).await?;
            }
            serde_json::json!({"seconds": t.elapsed().as_secs_f64(), "bytes": len})
        }
        RawOp::Get {
            key,
            part_mib,
            concurrency,
        } => {
            let size = store.head(&key).await?.size;
            let part = (part_mib as u64) << 20;
            let ranges: Vec<_> = (0..size)
                .step_by(part as usize)
                .map(|a| a..(a + part).min(size))
                .collect();
            let store = store.as_ref();
            let key = key.as_str();
            let bytes: u64 = futures::stream::iter(ranges)
                .map(|r| async move {
                    store
                        .get(key, Some(r), None)
                        .await
                        .map(|g| g.body.len() as u64)
                })
                .buffered(concurrency)
                .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
                .await?;
            serde_json::json!({"seconds": t.elapsed().as_secs_f64(), "bytes": bytes})
        }
        RawOp::PutMany {
            dir,
            prefix,
            concurrency,
        } => {
            let mut files = Vec::new();
            for e in std::fs::read_dir(&dir)? {
                let p = e?.path();
                files.push((
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p)?,
                ));
            }
            let t = Instant::now();
            let n = files.len();
            let store = store.as_ref();
            let prefix = prefix.trim_end_matches('/');
            futures::stream::iter(files)
                .map(|(name, data)| async move {
                    store
                        .put(
                            &format!("{prefix}/{name}"),
                            Bytes::from(data),
                            &Metadata::new(),
                            &PutCondition::None,
                        )
                        .await
                })
                .buffer_unordered(concurrency)
                .try_collect::<Vec<_>>()
                .await?;
            serde_json::json!({"seconds": t.elapsed().as_secs_f64(), "files": n})
        }
        RawOp::GetMany {
            prefix,
            concurrency,
        } => {
            let all = crate::store::list_all(store.as_ref(), &prefix).await?;
            let store = store.as_ref();
            let bytes: u64 = futures::stream::iter(all.iter().map(|e| e.key.as_str()))
                .map(|key| async move {
                    store
                        .get(key, None, None)
                        .await
                        .map(|g| g.body.len() as u64)
                })
                .buffered(concurrency.max(1))
                .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
                .await?;
            serde_json::json!({"seconds": t.elapsed().as_secs_f64(), "objects": all.len(), "bytes": bytes})
        }
        RawOp::RandomGet { key, size, count } => {
            let len = store.head(&key).await?.size;
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let t = Instant::now();
            for _ in 0..count {
                let at = rng.gen_range(0..len / size) * size;
                store.get(&key, Some(at..at + size), None).await?;
            }
            let s = t.elapsed().as_secs_f64();
            serde_json::json!({"seconds": s, "iops": count as f64 / s})
        }
        RawOp::Count { prefix } => {
            let all = crate::store::list_all(store.as_ref(), &prefix).await?;
            let bytes: u64 = all.iter().map(|e| e.size).sum();
            serde_json::json!({"seconds": t.elapsed().as_secs_f64(), "objects": all.len(), "bytes": bytes})
        }
    };
    println!("{out}");
    Ok(())
}
