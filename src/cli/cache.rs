//! `sealfs cache status`: what sealfs keeps on this machine's disk, per
//! cache directory, and which of it no running mount looks after: staged
//! changes and spooled uploads left by a mount that crashed and was never
//! mounted again (all of it ciphertext, recoverable only with the volume's
//! KMS key), and read caches. It reads no secrets and needs no credentials.

use crate::local::KEY_FILE;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Written into each cache directory at mount: which volume and mountpoint
/// it serves (names only, no content), so its leftovers can be told apart.
pub const MOUNT_FILE: &str = "mount.json";

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct MountRecord {
    pub url: String,
    pub mountpoint: String,
    pub pid: u32,
}

/// What one cache directory holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CacheReport {
    pub dir: PathBuf,
    pub mount: Option<MountRecord>,
    /// The mount that last used it is running.
    pub live: bool,
    /// Staged changes with a journal (not yet in S3): count, bytes.
    pub staged: (usize, u64),
    /// Spooled uploads waiting: count, bytes.
    pub spooled: (usize, u64),
    /// Interrupted directory renames.
    pub renames: usize,
    /// Read cache bytes.
    pub read_cache: u64,
}

impl CacheReport {
    /// Data not in S3 that no running mount will upload.
    pub fn orphaned(&self) -> bool {
        !self.live && (self.staged.0 > 0 || self.spooled.0 > 0 || self.renames > 0)
    }
}

fn pid_alive(pid: u32) -> bool {
    pid != 0 && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

fn files(dir: &Path, keep: impl Fn(&str) -> bool) -> (usize, u64) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    rd.flatten()
        .filter(|e| keep(&e.file_name().to_string_lossy()))
        .fold((0, 0), |(n, b), e| {
            (n + 1, b + e.metadata().map(|m| m.len()).unwrap_or(0))
        })
}

/// Reads what `dir` holds (no secrets are needed: only names and sizes).
pub fn inspect(dir: &Path) -> CacheReport {
    let mount: Option<MountRecord> = std::fs::read(dir.join(MOUNT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let live = mount.as_ref().is_some_and(|m| pid_alive(m.pid));
    // A staging file with unsaved changes has its journal beside it.
    let staged = {
        let journals = files(dir, |n| n.starts_with("staged-") && n.ends_with(".json"));
        let bytes = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("staged-")
                    && !n.contains('.')
                    && dir.join(format!("{n}.json")).exists()
            })
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum();
        (journals.0, bytes)
    };
    CacheReport {
        dir: dir.to_path_buf(),
        mount,
        live,
        staged,
        spooled: files(&dir.join("spool"), |n| n.ends_with(".obj")),
        renames: files(&dir.join("renames"), |n| n.ends_with(".json")).0,
        read_cache: files(&dir.join(crate::local::cache::DIR), |_| true).1,
    }
}

/// Every sealfs cache directory under `base` (those holding a local key).
pub fn scan(base: &Path) -> Vec<CacheReport> {
    let mut out: Vec<CacheReport> = std::fs::read_dir(base)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(KEY_FILE).exists())
        .map(|p| inspect(&p))
        .collect();
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    out
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// `sealfs cache status [--cache-base DIR]`: prints one block per cache
/// directory; the exit status is 2 when something is orphaned.
pub fn status(base: Option<PathBuf>) -> anyhow::Result<bool> {
    let base = match base {
        Some(b) => b,
        None => super::mount::default_cache_base()?,
    };
    let reports = scan(&base);
    if reports.is_empty() {
        println!("no sealfs cache directories under {}", base.display());
        return Ok(false);
    }
    let mut orphans = false;
    for r in &reports {
        let (url, mp) = r
            .mount
            .as_ref()
            .map(|m| (m.url.as_str(), m.mountpoint.as_str()))
            .unwrap_or(("(unknown volume)", "(unknown mountpoint)"));
        let state = if r.live {
            "mounted"
        } else if r.orphaned() {
            orphans = true;
            "ORPHANED"
        } else {
            "not mounted"
        };
        println!("{}  {state}", r.dir.display());
        println!("  volume {url} at {mp}");
        println!(
            "  staged changes not in S3: {} ({}); spooled uploads: {} ({}); interrupted renames: {}",
            r.staged.0,
            mib(r.staged.1),
            r.spooled.0,
            mib(r.spooled.1),
            r.renames
        );
        println!("  read cache: {} (encrypted)", mib(r.read_cache));
        if r.orphaned() {
            println!(
                "  to upload it: sealfs mount {url} {mp} --cache-dir {} (all of it is encrypted; without the volume's KMS key it is unreadable)",
                r.dir.display()
            );
        }
    }
    Ok(orphans)
}

/// Records which volume and mountpoint `dir` serves (at mount).
pub fn record_mount(dir: &Path, url: &str, mountpoint: &Path) -> anyhow::Result<()> {
    let rec = MountRecord {
        url: url.to_string(),
        mountpoint: mountpoint.display().to_string(),
        pid: std::process::id(),
    };
    let path = dir.join(MOUNT_FILE);
    std::fs::write(&path, serde_json::to_vec(&rec)?)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_of_a_dead_mount_are_orphaned_and_a_live_ones_are_not() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("abc");
        std::fs::create_dir_all(dir.join("spool")).unwrap();
        std::fs::write(dir.join(KEY_FILE), b"{}").unwrap();
        std::fs::write(dir.join("staged-1-00"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.join("staged-1-00.json"), b"sealed").unwrap();
        std::fs::write(dir.join("staged-1-01"), vec![0u8; 50]).unwrap(); // clean: no journal
        std::fs::write(dir.join("spool/1-00.obj"), vec![0u8; 300]).unwrap();
        let dead = MountRecord {
            url: "s3://b/p".into(),
            mountpoint: "/m".into(),
            pid: 1 << 30,
        };
        std::fs::write(dir.join(MOUNT_FILE), serde_json::to_vec(&dead).unwrap()).unwrap();
        std::fs::create_dir_all(base.path().join("not-sealfs")).unwrap();
        let reports = scan(base.path());
        assert_eq!(reports.len(), 1, "only directories with a local key");
        let r = &reports[0];
        assert_eq!((r.staged, r.spooled, r.live), ((1, 1000), (1, 300), false));
        assert!(r.orphaned());
        record_mount(&dir, "s3://b/p", Path::new("/m")).unwrap();
        let r = inspect(&dir);
        assert!(r.live && !r.orphaned(), "this process is alive");
        assert_eq!(r.mount.unwrap().url, "s3://b/p");
    }
}
