//! `sealfs mount` and `sealfs unmount`.
//!
//! Without `--foreground`, mount re-executes itself as a detached daemon and
//! waits on a pipe until the daemon reports that the mount is ready (exit 0)
//! or why it failed (the message, exit 1): no fork after threads exist.

use super::session::{MountPlan, MountedSession};
use crate::app::{AwsOptions, Wiring};
use crate::fs::{Defaults, FsSettings, SealFs};
use crate::fuse::FuseAdapter;
use crate::grants::{GrantSettings, Grants};
use crate::store::IndexUse;
use crate::url::S3Url;
use crate::volume::{self, Pins};
use anyhow::{bail, Context};
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often staged changes whose upload failed after close are retried.
const STAGED_RETRY: Duration = Duration::from_secs(20);

/// Set in the daemon's environment: its stdout is the readiness pipe.
const DAEMON_ENV: &str = "SEALFS_DAEMON";

#[derive(clap::Args, Debug, Clone)]
pub struct MountArgs {
    /// s3://BUCKET/PREFIX of an initialised volume
    pub url: String,
    pub mountpoint: PathBuf,
    /// Stay in the foreground, logging to stderr.
    #[arg(long)]
    pub foreground: bool,
    #[arg(long)]
    pub read_only: bool,
    /// Let other users access the mount (needs user_allow_other in /etc/fuse.conf unless root).
    #[arg(long)]
    pub allow_other: bool,
    /// Private directory for staged writes (default: ~/.cache/sealfs/<mount id>).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// How long metadata and listings are cached (e.g. 1s, 500ms, 2m).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub metadata_ttl: Duration,
    /// Log file of the daemon (default: <cache dir>/sealfs.log).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Managed policies IAM lets a grantee have attached (10 unless the
    /// account's quota was raised, up to 20); sharing past it fails with ENOSPC.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub iam_policy_limit: u16,
    /// The permissions boundary a grantee must carry: `standard` (the one
    /// `sealfs grantee setup` gives), an ARN, or `none` (for an IAM emulator
    /// that cannot keep user boundaries).
    #[arg(long, env = "SEALFS_GRANTEE_BOUNDARY", default_value = "standard")]
    pub grantee_boundary: crate::grants::BoundaryCheck,
    /// Close returns once the file is sealed (ciphertext only) into a local
    /// spool; uploads run in the background. fsync still waits for S3, and
    /// unmount waits until the spool is empty. Also `-o write_back`.
    #[arg(long)]
    pub write_back: bool,
    /// New files whose data keys derive from one branch key (one KMS
    /// GenerateDataKey) before the mount makes the next.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub branch_files: u64,
    /// Hours a branch key is used for new files before the next is made.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=8760))]
    pub branch_hours: u64,
    /// Per-directory attribute indexes: a cold `ls -l` reads one object
    /// beside its LIST instead of a HEAD per entry. `on`: read them, and
    /// write them when a listing had to HEAD; `read`: never write (what a
    /// read-only mount does); `off`: a HEAD per entry.
    #[arg(long, value_enum, default_value_t = IndexArg::On)]
    pub attribute_index: IndexArg,
    /// Uploads of the write-back spool in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub write_back_uploads: u16,
    /// The encrypted read cache on local disk, under the cache directory:
    /// segments read once are read again from there (after a remount too).
    /// A size such as 512M or 4G; 0 turns it off.
    #[arg(long, default_value = "2G", value_parser = parse_size)]
    pub cache_size: u64,
    /// Plaintext kept in memory for random reads (MiB).
    #[arg(long, default_value_t = 64)]
    pub read_cache_mib: usize,
    /// Memory for read-ahead shared by all readers of the mount (MiB, in 4 MiB
    /// chunks). A read never waits for it: only read-ahead beyond the
    /// chunks a read needs does.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(4..=65536))]
    pub read_ahead_mib: u64,
    /// Directory entries the kernel no longer references kept as a cache of
    /// S3's answers; beyond it the least recently used are dropped.
    #[arg(long, default_value_t = crate::fs::DEFAULT_CACHED_ENTRIES)]
    pub cached_entries: usize,
    /// Mount options, comma-separated: ro, rw, allow_other, allow_root, noexec,
    /// exec, write_back; dev and suid honour device nodes and setuid bits
    /// (the mount is nodev,nosuid otherwise).
    #[arg(short = 'o', value_delimiter = ',')]
    pub options: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (for example
    /// 127.0.0.1:9187): the counters of `sealfs status` and S3/KMS call
    /// latencies. Off by default; bind it to loopback.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// `--attribute-index`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexArg {
    On,
    Read,
    Off,
}

/// A byte size: a number with an optional K, M, G or T suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("invalid size {s:?} (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} too large"))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn mount_id(url: &str, mountpoint: &Path) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("{url}\0{}", mountpoint.display()));
    hex::encode(&h[..8])
}

/// The user's cache directory. Never a shared, predictable place such as
/// `/tmp/sealfs`, which another local user could create first and fill with
/// journals for recovery to upload with this user's credentials.
pub(super) fn default_cache_base() -> anyhow::Result<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("sealfs"))
        .context(
            "neither XDG_CACHE_HOME nor HOME is set: pass --cache-dir DIR (a private directory)",
        )
}

/// The cache directory must be this user's own: staging journals and spool
/// entries in it are uploaded with this user's credentials.
fn check_cache_owner(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    let me = unsafe { libc::geteuid() };
    if md.uid() != me {
        bail!(
            "cache directory {} belongs to uid {}, not to this user (uid {me}); pass a --cache-dir of your own",
            dir.display(),
            md.uid()
        );
    }
    Ok(())
}

/// Checks what can be checked before touching AWS.
fn preflight(args: &MountArgs) -> anyhow::Result<PathBuf> {
    let mp = std::fs::canonicalize(&args.mountpoint)
        .with_context(|| format!("mountpoint {} does not exist", args.mountpoint.display()))?;
    if !mp.is_dir() {
        bail!("mountpoint {} is not a directory", mp.display());
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse kernel module (modprobe fuse)");
    }
    let is_root = unsafe { libc::geteuid() } == 0;
    let has_fusermount =
        super::doctor::find_fusermount(std::env::var_os("PATH").as_deref()).is_some();
    if !is_root && !has_fusermount {
        bail!("fusermount3 not found: install fuse3 (apt install fuse3)");
    }
    for o in &args.options {
        if ![
            "ro",
            "rw",
            "allow_other",
            "allow_root",
            "nodev",
            "nosuid",
            "dev",
            "suid",
            "noexec",
            "exec",
            "write_back",
            "",
        ]
        .contains(&o.as_str())
        {
            bail!("unknown mount option {o:?} (supported: ro, rw, allow_other, allow_root, nodev, nosuid, dev, suid, noexec, exec, write_back)");
        }
    }
    Ok(mp)
}

pub fn mount(opts: &AwsOptions, args: MountArgs) -> anyhow::Result<()> {
    let url = S3Url::parse(&args.url)?;
    let mountpoint = preflight(&args)?;
    let id = mount_id(&args.url, &mountpoint);
    let cache_dir = match args.cache_dir.clone() {
        Some(d) => d,
        None => default_cache_base()?.join(&id),
    };
    std::fs::create_dir_all(&cache_dir)
        .with_context(|| format!("creating {}", cache_dir.display()))?;
    check_cache_owner(&cache_dir)?;
    let log_file = args
        .log_file
        .clone()
        .unwrap_or_else(|| cache_dir.join("sealfs.log"));
    if args.foreground || std::env::var_os(DAEMON_ENV).is_some() {
        return serve(opts, args, url, mountpoint, cache_dir);
    }
    // Re-execute as a detached daemon whose stdout is our readiness pipe.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file)
        .with_context(|| format!("opening log file {}", log_file.display()))?;
    let mut child =
        std::process::Command::new(std::env::current_exe().context("locating the sealfs binary")?);
    child
        .args(std::env::args_os().skip(1))
        .env(DAEMON_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log);
    unsafe {
        child.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = child.spawn().context("starting the mount daemon")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    match line.trim_end() {
        "ready" => Ok(()),
        "" => {
            let status = child.wait()?;
            bail!(
                "the mount daemon exited ({status}) before the mount was ready; see {}",
                log_file.display()
            )
        }
        msg => {
            let _ = child.wait();
            bail!("{}", msg.strip_prefix("error: ").unwrap_or(msg))
        }
    }
}

/// Runs the filesystem until it is unmounted (or SIGTERM/SIGINT).
fn serve(
    opts: &AwsOptions,
    args: MountArgs,
    url: S3Url,
    mountpoint: PathBuf,
    cache_dir: PathBuf,
) -> anyhow::Result<()> {
    let daemon = std::env::var_os(DAEMON_ENV).is_some();
    let report = |msg: &str| {
        if daemon {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{msg}");
            let _ = out.flush();
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sealfs")
        .build()?;
    // The metrics port is taken before anything is mounted, so that a port
    // in use fails the mount with its reason.
    let mut opts = opts.clone();
    let metrics = match args.metrics_addr {
        Some(addr) => match std::net::TcpListener::bind(addr) {
            Ok(l) => {
                let times = crate::metrics::CallTimes::default();
                opts.call_times = Some(times.clone());
                Some((l, times))
            }
            Err(e) => {
                let msg = format!("cannot serve metrics on {addr}: {e}");
                report(&format!("error: {msg}"));
                bail!(msg);
            }
        },
        None => None,
    };
    let opts = &opts;
    if let Err(e) = super::cache::record_mount(&cache_dir, &args.url, &mountpoint) {
        tracing::warn!("{e:#}");
    }
    let setup = rt.block_on(prepare(opts, &args, &url, cache_dir));
    let fs = match setup {
        Ok(fs) => fs,
        Err(e) => {
            report(&format!("error: {e:#}"));
            return Err(e);
        }
    };
    let read_only = args.read_only || args.options.iter().any(|o| o == "ro");
    if !read_only {
        // Changes a crashed mount left staged go up before anyone looks, and
        // those that cannot go up now are retried while this mount runs.
        rt.block_on(fs.recover_renames());
        rt.block_on(fs.recover_staged());
        rt.block_on(fs.recover_spool());
        let retry = fs.clone();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(STAGED_RETRY).await;
                retry.recover_renames().await;
                retry.recover_staged().await;
                retry.recover_spool().await;
            }
        });
    }
    let adapter = FuseAdapter::new(fs.clone(), rt.handle().clone());
    let plan = MountPlan::new(&args, &url, read_only);
    let mut session = match MountedSession::mount(plan, adapter, &mountpoint) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("mounting {} failed: {e}", mountpoint.display());
            report(&format!("error: {msg}"));
            bail!(msg);
        }
    };
    // Sequential reads in requests of up to the size sealfs offers, not
    // the kernel's default 128 KiB (needs root; the mount works without).
    match crate::fuse::read_ahead::set(&mountpoint, crate::fuse::KERNEL_READ_AHEAD_KIB) {
        Ok(file) => tracing::debug!(file = %file.display(), "kernel read-ahead raised"),
        Err(e) => tracing::info!(
            error = %e,
            "kernel read-ahead left at its default: sequential reads arrive in 128 KiB \
             requests (docs/PERFORMANCE.md, \"Kernel read-ahead\")"
        ),
    }
    // Pages of a file another mount changed are dropped from the kernel's
    // cache, by one thread (a notification must not wait inside a request).
    let notifier = session.notifier();
    let (stale_tx, stale_rx) = std::sync::mpsc::channel::<u64>();
    std::thread::spawn(move || {
        for ino in stale_rx {
            if let Err(e) = notifier.inval_inode(fuser::INodeNo(ino), 0, 0) {
                tracing::debug!(ino, error = %e, "page cache invalidation not delivered");
            }
        }
    });
    fs.set_page_invalidator(Arc::new(move |ino| {
        let _ = stale_tx.send(ino);
    }));
    if let Some((listener, times)) = metrics {
        let fs = fs.clone();
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let listener = rt.block_on(async { tokio::net::TcpListener::from_std(listener) })?;
        let scrape = move || crate::metrics::render(&fs.stats_json(), &times);
        rt.spawn(crate::metrics::serve(listener, Arc::new(scrape)));
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
    }
    tracing::info!(url = %url, mountpoint = %mountpoint.display(), "mounted");
    report("ready");
    if daemon {
        // The readiness pipe is done; keep stdout away from the parent.
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            use std::os::fd::AsRawFd;
            unsafe { libc::dup2(null.as_raw_fd(), 1) };
        }
    }
    let mut unmount = session.unmounter();
    let signal_fs = fs.clone();
    rt.spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("signal received: flushing and unmounting");
        if let Err(e) = signal_fs.flush_all().await {
            tracing::error!(error = %e, "flush before unmount failed");
        }
        if let Err(e) = unmount() {
            tracing::error!(error = %e, "unmount failed");
        }
    });
    let run = session.run();
    let flushed = rt.block_on(fs.flush_all());
    tracing::info!("unmounted");
    run.context("FUSE session")?;
    flushed.map_err(anyhow::Error::from)
}

async fn prepare(
    opts: &AwsOptions,
    args: &MountArgs,
    url: &S3Url,
    cache_dir: PathBuf,
) -> anyhow::Result<Arc<SealFs>> {
    let w = Wiring::new(opts, &url.bucket).await;
    let prefix = url.prefix().to_string();
    let keys = w.keys.service.clone();
    let cfg = match volume::load(w.store.as_ref(), keys.as_ref(), &prefix).await {
        Err(crate::Error::Store(crate::store::StoreError::NoSuchBucket(b))) => {
            bail!("bucket {b} does not exist")
        }
        other => other?,
    };
    if let Some(pins) = Pins::default_location() {
        pins.check(&format!("s3://{}/{prefix}", url.bucket), &cfg)?;
    }
    let read_only = args.read_only || args.options.iter().any(|o| o == "ro");
    let index = match args.attribute_index {
        IndexArg::Off => IndexUse::Off,
        IndexArg::Read => IndexUse::Read,
        IndexArg::On if read_only => IndexUse::Read,
        IndexArg::On => IndexUse::ReadWrite,
    };
    let sealed = cfg
        .sealed_store(
            &prefix,
            w.store.clone(),
            keys.clone(),
            index,
            Some(crate::sealed::BranchSettings {
                max_files: args.branch_files,
                max_age: Duration::from_secs(args.branch_hours * 3600),
            }),
        )
        .await?
        // Wrapped branch keys (KMS ciphertext, never a key) are kept beside
        // the read cache, which can then answer after a remount with no GET.
        .keep_branch_keys_in(cache_dir.join("branches"));
    // Everything the mount writes under its cache directory is encrypted
    // under this key, stored there wrapped by KMS under the volume's key.
    let local = crate::local::LocalKey::load_or_create(&cache_dir, keys.as_ref(), &cfg.kms_key_arn)
        .await
        .context("unwrapping the cache directory's local key")?;
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let settings = FsSettings {
        metadata_ttl: args.metadata_ttl,
        cache_dir,
        defaults: Defaults {
            uid,
            gid,
            file_mode: 0o644,
            dir_mode: 0o755,
        },
        read_only,
        read: crate::sealed::reader::ReadSettings::with_memory(
            args.read_cache_mib << 20,
            args.read_ahead_mib << 20,
        ),
        disk_cache_bytes: args.cache_size,
        write_back: args.write_back || args.options.iter().any(|o| o == "write_back"),
        write_back_uploads: args.write_back_uploads.into(),
        cached_entries: args.cached_entries,
    };
    // Every change of access made through this mount goes to the
    // volume's audit trail.
    let trail = crate::audit::AuditTrail::new(
        w.store.clone(),
        &prefix,
        cfg.audit_key(&prefix, &url.bucket, keys.as_ref()).await?,
    );
    let grants = Arc::new(
        Grants::new(
            w.grant_service.clone(),
            GrantSettings {
                attached_policy_limit: args.iam_policy_limit.into(),
                boundary: args.grantee_boundary.clone(),
                ..GrantSettings::default()
            },
        )
        .with_log(Arc::new(trail)),
    );
    let (s3, kms) = (w.s3.clone(), w.keys.kms.clone());
    let stats = move || {
        let k = kms.calls();
        let s3: serde_json::Map<String, serde_json::Value> = s3
            .counts()
            .nonzero()
            .into_iter()
            .map(|(n, c)| (n.to_string(), c.into()))
            .collect();
        serde_json::json!({
            "s3": s3,
            "kms": {"GenerateDataKey": k.generate_data_key, "Decrypt": k.decrypt, "Encrypt": k.encrypt},
        })
    };
    Ok(Arc::new(
        SealFs::new(sealed, &prefix, settings, Arc::new(local))?
            .with_grants(grants)
            .with_stats(Arc::new(stats)),
    ))
}

pub fn unmount(mountpoint: &Path) -> anyhow::Result<()> {
    let out = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(mountpoint)
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        other => {
            let fallback = std::process::Command::new("umount")
                .arg(mountpoint)
                .output();
            if fallback.as_ref().is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            bail!("unmounting {} failed: {why}", mountpoint.display())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("2X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn a_cache_dir_of_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        check_cache_owner(dir.path()).unwrap();
        if unsafe { libc::geteuid() } == 0 {
            // As root (CI), hand the directory to nobody and try again.
            let path = std::ffi::CString::new(dir.path().to_str().unwrap()).unwrap();
            assert_eq!(unsafe { libc::chown(path.as_ptr(), 65534, 65534) }, 0);
            let err = check_cache_owner(dir.path()).unwrap_err();
            assert!(err.to_string().contains("belongs to uid 65534"), "{err}");
        }
    }
}
