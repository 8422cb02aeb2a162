//! `sealfs status [MOUNTPOINT] [--json]`: the sealfs mounts of this machine
//! and what each has been doing, read from its `user.sealfs.stats`
//! attribute (the mount answers it from memory: no S3 request).

use super::target::sealfs_mounts;
use anyhow::{bail, Context};
use serde_json::Value;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The mount's stats, or why they could not be read (a dead mount answers
/// ENOTCONN).
fn stats(mountpoint: &Path) -> Result<Value, String> {
    let p = CString::new(mountpoint.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let n = CString::new(crate::fs::STATS).expect("no NUL");
    let mut buf = vec![0u8; 64 * 1024];
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    buf.truncate(r as usize);
    serde_json::from_slice(&buf).map_err(|e| format!("unreadable stats: {e}"))
}

/// 1536 -> "1.5 KiB"
fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// 3725 -> "1h02m"
fn uptime(s: u64) -> String {
    match s {
        s if s >= 86_400 => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3_600),
        s if s >= 3_600 => format!("{}h{:02}m", s / 3_600, s % 3_600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

fn sum(v: &Value) -> u64 {
    v.as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

/// The lines `sealfs status` prints for one mount.
fn describe(mountpoint: &Path, s: &Value) -> String {
    let a = &s["activity"];
    let errors = a["errors"]
        .as_object()
        .filter(|m| !m.is_empty())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "none".into());
    let spool = &s["spool"];
    let cache = &s["read_cache"];
    let cache = if cache.is_object() {
        format!(
            "{} of {} in {} entries",
            bytes(cache["bytes"].as_u64().unwrap_or(0)),
            bytes(cache["limit"].as_u64().unwrap_or(0)),
            cache["entries"].as_u64().unwrap_or(0)
        )
    } else {
        "off".into()
    };
    format!(
        "{mp}\n  volume:         {vol}\n  up:             {up}\n  \
         uploads:        {pending} pending, {failed} failed (retried), spool {spool_bytes}\n  \
         conflict copies {conflicts}, recovered files {recovered}\n  \
         read cache:     {cache}\n  \
         requests:       {s3} S3, {kms} KMS\n  \
         errors:         {errors}\n",
        mp = mountpoint.display(),
        vol = s["volume"].as_str().unwrap_or("?"),
        up = uptime(a["uptime_s"].as_u64().unwrap_or(0)),
        pending = spool["pending_uploads"].as_u64().unwrap_or(0),
        failed = spool["failed_uploads"].as_u64().unwrap_or(0),
        spool_bytes = bytes(spool["bytes"].as_u64().unwrap_or(0)),
        conflicts = a["conflict_copies"].as_u64().unwrap_or(0),
        recovered = a["recovered"].as_u64().unwrap_or(0),
        s3 = sum(&s["s3"]),
        kms = sum(&s["kms"]),
    )
}

pub fn run(mountpoint: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .context("cannot read /proc/self/mountinfo")?;
    let mut mounts: Vec<PathBuf> = sealfs_mounts(&info).into_iter().map(|(m, _)| m).collect();
    if let Some(want) = mountpoint {
        let want = std::fs::canonicalize(want)
            .with_context(|| format!("cannot find {}", want.display()))?;
        if !mounts.contains(&want) {
            bail!("{} is not a sealfs mount", want.display());
        }
        mounts = vec![want];
    }
    let mut out = Vec::new();
    let mut unreachable = 0;
    for m in &mounts {
        match stats(m) {
            Ok(s) => out.push((m.clone(), Ok(s))),
            Err(e) => {
                unreachable += 1;
                out.push((m.clone(), Err(e)))
            }
        }
    }
    if json {
        let v: Vec<Value> = out
            .iter()
            .map(|(m, s)| match s {
                Ok(s) => serde_json::json!({"mountpoint": m, "stats": s}),
                Err(e) => serde_json::json!({"mountpoint": m, "error": e}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if out.is_empty() {
        eprintln!("no sealfs mounts");
    } else {
        for (m, s) in &out {
            match s {
                Ok(s) => print!("{}", describe(m, s)),
                Err(e) => println!("{}\n  unreachable: {e} (a dead mount: fusermount3 -uz it, then `sealfs cache status`)", m.display()),
            }
        }
    }
    if unreachable > 0 {
        bail!("{unreachable} mount(s) did not answer");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mounts_stats_read_as_lines() {
        let s = serde_json::json!({
            "volume": "s3://b/v",
            "activity": {"uptime_s": 3725, "conflict_copies": 1, "recovered": 2,
                         "errors": {"EIO": 3}},
            "spool": {"pending_uploads": 4, "failed_uploads": 0, "bytes": 1536},
            "read_cache": {"entries": 2, "bytes": 2048, "limit": 2147483648u64},
            "s3": {"GET": 5, "PUT": 7},
            "kms": {"Decrypt": 1, "GenerateDataKey": 1, "Encrypt": 0},
        });
        let text = describe(Path::new("/mnt/v"), &s);
        for want in [
            "/mnt/v\n",
            "volume:         s3://b/v",
            "up:             1h02m",
            "4 pending, 0 failed (retried), spool 1.5 KiB",
            "conflict copies 1, recovered files 2",
            "2.0 KiB of 2.0 GiB in 2 entries",
            "12 S3, 2 KMS",
            "errors:         EIO 3",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
    }
}
