//! The `sealfs` command line: argument parsing, logging, and dispatch.

mod audit;
mod cache;
mod doctor;
mod grantee;
mod helper;
mod init;
mod manual;
mod mount;
mod owned;
mod policy;
mod raw;
mod session;
mod share;
mod status;
mod target;
mod transfer;
mod verify;

use crate::app::{AwsOptions, Wiring};
use crate::grants::GrantSettings;
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "sealfs",
    version,
    about = "Client-side encrypted S3 volumes with per-file sharing"
)]
pub struct Cli {
    /// S3/KMS endpoint (for S3-compatible servers and emulators); also AWS_ENDPOINT_URL.
    #[arg(long, global = true, env = "SEALFS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// AWS region (default: from the AWS config chain, else us-east-1).
    #[arg(long, global = true)]
    region: Option<String>,
    /// AWS profile to use.
    #[arg(long, global = true)]
    profile: Option<String>,
    /// Print the KMS calls and S3 requests made, to stderr, at exit.
    #[arg(long, global = true)]
    stats: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum CacheAction {
    /// Per cache directory: its volume, whether it is mounted, and what it
    /// holds; staged changes or spooled uploads that no running mount will
    /// upload are reported as ORPHANED (exit status 2).
    Status {
        /// Where the cache directories are (default: $XDG_CACHE_HOME/sealfs).
        #[arg(long)]
        cache_base: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Initialise a volume: write its authenticated config under PREFIX/.sealfs/.
    Init {
        /// s3://BUCKET/PREFIX
        url: String,
        /// KMS key id, ARN or alias (alias/NAME) that wraps the data keys.
        #[arg(long, conflicts_with = "create_key")]
        kms_key: Option<String>,
        /// Create a new KMS key for this volume.
        #[arg(long)]
        create_key: bool,
        /// Create the bucket (private, public access blocked) if it does not exist.
        #[arg(long)]
        create_bucket: bool,
        /// Plaintext segment size in bytes (power of two, 4 KiB..16 MiB).
        #[arg(long, default_value_t = crate::crypto::DEFAULT_SEGMENT_SIZE)]
        segment_size: u32,
        /// Rewrite the config of an initialised volume (same KMS key only).
        #[arg(long)]
        force: bool,
    },
    /// Encrypt a local file into the volume.
    Put {
        local: PathBuf,
        /// s3://BUCKET/PREFIX/PATH (a trailing / appends the local file name)
        url: String,
    },
    /// Fetch, verify and decrypt a file (to LOCAL, a directory, or - for stdout).
    Get { url: String, local: Option<PathBuf> },
    /// Fetch, verify and decrypt a file to stdout.
    Cat { url: String },
    /// Show an object's format fields, sizes and key ids (never secrets), and verify its header.
    Inspect {
        url: String,
        /// Only parse; do not ask KMS for the data key to verify.
        #[arg(long)]
        no_verify: bool,
    },
    /// Share a file with IAM users, roles or groups (read access to exactly that file).
    Share {
        /// The file: s3://BUCKET/PATH, or its path on a sealfs mount.
        file: String,
        /// Who: IAM user names, role/NAME, group/NAME, or ARNs of any of them.
        #[arg(required = true)]
        users: Vec<String>,
        /// The share ends after this long: 7d, 12h, 1w2d (s, m, h, d, w).
        /// AWS enforces the end (aws:CurrentTime), whether or not sealfs runs.
        #[arg(long = "for", value_name = "DURATION", conflicts_with = "until")]
        for_: Option<String>,
        /// The share ends at this time: 2027-01-31 (through that day, UTC)
        /// or 2027-01-31T18:00:00Z.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Managed policies IAM lets a user or role have attached (10, or up
        /// to 20 if raised; a group's 10 cannot be raised).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=20))]
        iam_policy_limit: u16,
        /// The permissions boundary a grantee must carry: `standard` (the one
        /// `sealfs grantee setup` gives), an ARN, or `none` (for an IAM emulator
        /// that cannot keep user boundaries).
        #[arg(long, env = "SEALFS_GRANTEE_BOUNDARY", default_value = "standard")]
        grantee_boundary: crate::grants::BoundaryCheck,
    },
    /// Set an IAM user, role or group up to receive files (administrators,
    /// once per grantee and volume).
    ///
    /// Gives the user or role (for a group: every member) the sealfs
    /// permissions boundary, extended to the volume, and the policy that
    /// lets it read its own grants.
    Grantee {
        #[command(subcommand)]
        action: grantee::Action,
    },
    /// Revoke a file's grants: from the users, roles or groups named, or from everyone with --all.
    Unshare {
        /// The file: s3://BUCKET/PATH, or its path on a sealfs mount.
        file: String,
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        users: Vec<String>,
        #[arg(long)]
        all: bool,
    },
    /// List who a file is shared with (read from IAM), each with its
    /// end if it has one; or, with --prune-ended, remove every grant
    /// statement whose end has passed from the account's sealfs policies.
    Shares {
        /// The file: s3://BUCKET/PATH, or its path on a sealfs mount.
        #[arg(
            required_unless_present_any = ["prune_ended", "volume"],
            conflicts_with_all = ["prune_ended", "volume"]
        )]
        file: Option<String>,
        #[arg(long, conflicts_with = "volume")]
        prune_ended: bool,
        /// Every grant of the volume's files (s3://BUCKET/VOLUME), with
        /// each file's state: ok, ended, missing, replaced, unverifiable.
        #[arg(long, value_name = "URL")]
        volume: Option<String>,
        /// With --volume: print JSON.
        #[arg(long, requires = "volume")]
        json: bool,
        /// With --volume: remove the grants of missing and replaced files.
        #[arg(long, requires = "volume")]
        prune_stale: bool,
    },
    /// List the files shared with you (with your own credentials).
    Shared,
    /// Print the least-privilege IAM policy for a volume's owner or a grantee, or the grantee boundary.
    Policy {
        #[arg(value_enum)]
        role: policy::Role,
        /// s3://BUCKET/PREFIX of the volume
        url: String,
        /// The volume's KMS key ARN (default: read from the volume config).
        #[arg(long)]
        kms_key: Option<String>,
    },
    /// Re-encrypt a file under a fresh data key (after revoking a grant).
    Rekey {
        /// The file: s3://BUCKET/PATH, or its path on a sealfs mount.
        file: String,
    },
    /// The volume's audit trail: every share, unshare, re-key and grant
    /// change made through sealfs, oldest first, each entry verified;
    /// non-zero exit if any does not verify.
    Audit {
        /// s3://BUCKET/PREFIX of the volume
        url: String,
        /// Only entries from this day (2026-12-01, from its start, UTC) or
        /// instant (2026-12-01T09:00:00Z) on.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Check what sealfs needs, all at once, each with its fix: endpoint and
    /// region, credentials, the bucket (reachable, private), the volume
    /// config and its pin, the KMS key, IAM rights for sharing and the
    /// grantee boundary, FUSE. Non-zero exit if any check fails.
    Doctor(doctor::DoctorArgs),
    /// Check every object of a volume (keys, header, binding, every segment); non-zero exit on any failure.
    Verify {
        /// s3://BUCKET/PREFIX of the volume
        url: String,
    },
    /// Mount a volume as a directory; returns once the mount is ready.
    Mount(mount::MountArgs),
    /// The manual pages: sealfs(1) on stdout, or every page
    /// (sealfs-mount.1, ...) into a directory: `sealfs man --dir /usr/local/share/man/man1`.
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Shell completions on stdout: `sealfs completions bash > /etc/bash_completion.d/sealfs`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The sealfs mounts of this machine and what each has been doing:
    /// volume, uptime, pending and failed uploads, spool size, conflict
    /// copies and recovered files, read cache, requests, errors by kind.
    Status {
        /// One mount only.
        mountpoint: Option<PathBuf>,
        /// JSON: each mount's full counters.
        #[arg(long)]
        json: bool,
    },
    /// Unmount a sealfs mount (its daemon flushes every file first).
    Unmount { mountpoint: std::path::PathBuf },
    /// What sealfs keeps on this machine's disk (all of it encrypted).
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// The raw-backend reference for scripts/bench: plain PUT/GET, no encryption.
    #[command(hide = true)]
    Raw {
        /// The bucket (keys and prefixes are given to the operation).
        bucket: String,
        #[command(subcommand)]
        op: raw::RawOp,
    },
}

/// Every sealfs process holds plaintext data keys: it makes itself
/// non-dumpable, so it leaves no core file and other processes of the same
/// user cannot ptrace it or read its memory through /proc.
fn harden_process() {
    // SAFETY: prctl with PR_SET_DUMPABLE takes plain integers.
    let r = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if r != 0 {
        eprintln!(
            "sealfs: warning: could not make the process non-dumpable: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Entry point of the binary; returns the process exit code.
pub fn main() -> i32 {
    harden_process();
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cli = if helper::is_helper_call(&args) {
        // Run by mount(8) for fstab, `mount -t fuse.sealfs` or a systemd unit.
        match helper::rewrite(&args) {
            Ok(a) => Cli::parse_from(a),
            Err(e) => {
                eprintln!("sealfs: error: {e}");
                return 1;
            }
        }
    } else {
        Cli::parse()
    };
    init_logging();
    let opts = AwsOptions {
        endpoint_url: cli.endpoint_url.clone(),
        region: cli.region.clone(),
        profile: cli.profile.clone(),
        call_times: None,
    };
    // Mounting manages its own runtime (and may re-execute itself as a daemon).
    let direct = match &cli.command {
        Command::Mount(args) => Some(mount::mount(&opts, args.clone())),
        Command::Unmount { mountpoint } => Some(mount::unmount(mountpoint)),
        Command::Man { dir } => Some(manual::run(dir.as_deref())),
        Command::Status { mountpoint, json } => Some(status::run(mountpoint.as_deref(), *json)),
        Command::Completions { shell } => Some(manual::completions(*shell)),
        Command::Cache {
            action: CacheAction::Status { cache_base },
        } => {
            // Exit 2 when a dead mount left data that is not in S3.
            return match cache::status(cache_base.clone()) {
                Ok(false) => 0,
                Ok(true) => 2,
                Err(e) => {
                    eprintln!("sealfs: error: {e:#}");
                    1
                }
            };
        }
        _ => None,
    };
    if let Some(r) = direct {
        return match r {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("sealfs: error: {e:#}");
                1
            }
        };
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sealfs: error: {e:#}");
            1
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SEALFS_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,aws_runtime::env_config=error")
    });
    // The daemon's stderr is its log file, often on the disk that holds the
    // cache. When that disk is full a log line is lost, never the mount: the
    // subscriber must not report its own write errors (on stderr, which
    // panics when stderr cannot be written, inside a reply's drop: an abort).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let opts = AwsOptions {
        endpoint_url: cli.endpoint_url.clone(),
        region: cli.region.clone(),
        profile: cli.profile.clone(),
        call_times: None,
    };
    match &cli.command {
        Command::Share {
            file,
            users,
            for_,
            until,
            iam_policy_limit,
            grantee_boundary,
        } => {
            let t = target::Target::parse(file)?;
            let settings = share::settings(*iam_policy_limit, grantee_boundary.clone());
            let users = share::with_end(users, for_.as_deref(), until.as_deref())?;
            return share::change(&opts, &t, &users, share::Change::Share, settings).await;
        }
        Command::Grantee { action } => return grantee::run(&opts, action).await,
        Command::Doctor(args) => return doctor::run(&opts, args).await,
        Command::Unshare { file, users, all } => {
            let t = target::Target::parse(file)?;
            let change = if *all {
                share::Change::UnshareAll
            } else {
                share::Change::Unshare
            };
            return share::change(&opts, &t, users, change, GrantSettings::default()).await;
        }
        Command::Shares {
            file: Some(file), ..
        } => return share::list(&opts, &target::Target::parse(file)?).await,
        Command::Shares {
            volume: Some(v),
            json,
            prune_stale,
            ..
        } => {
            let url = crate::url::S3Url::parse(v)?;
            return share::volume(&opts, &url, *json, *prune_stale).await;
        }
        Command::Shares { file: None, .. } => return share::prune_ended(&opts).await,
        Command::Shared => return share::shared_with_me(&opts).await,
        Command::Rekey { file } => {
            return share::rekey(&opts, target::Target::parse(file)?.url()).await
        }
        Command::Raw { bucket, .. } => {
            let w = Wiring::new(&opts, bucket).await;
            let Command::Raw { op, .. } = cli.command else {
                unreachable!()
            };
            return raw::run(&w, op).await;
        }
        _ => {}
    }
    let url = match &cli.command {
        Command::Init { url, .. }
        | Command::Put { url, .. }
        | Command::Get { url, .. }
        | Command::Cat { url }
        | Command::Inspect { url, .. }
        | Command::Policy { url, .. }
        | Command::Audit { url, .. }
        | Command::Verify { url } => crate::url::S3Url::parse(url)?,
        _ => unreachable!("handled above"),
    };
    let w = Wiring::new(&opts, &url.bucket).await;
    let result = match cli.command {
        Command::Init {
            kms_key,
            create_key,
            create_bucket,
            segment_size,
            force,
            ..
        } => {
            let args = init::InitArgs {
                kms_key,
                create_key,
                create_bucket,
                segment_size,
                force,
            };
            init::run(&w, &url, args).await
        }
        Command::Put { local, .. } => transfer::put(&w, &local, &url).await,
        Command::Get { local, .. } => transfer::get(&w, &url, local.as_deref()).await,
        Command::Cat { .. } => transfer::get(&w, &url, Some(std::path::Path::new("-"))).await,
        Command::Inspect { no_verify, .. } => transfer::inspect(&w, &url, !no_verify).await,
        Command::Policy { role, kms_key, .. } => policy::run(&w, &url, role, kms_key).await,
        Command::Verify { .. } => verify::run(&w, &url).await,
        Command::Audit {
            ref since, json, ..
        } => audit::run(&w, &url, since.as_deref(), json).await,
        _ => unreachable!("handled above"),
    };
    if cli.stats {
        let k = w.keys.calls();
        eprintln!(
            "sealfs: stats: kms GenerateDataKey={} Decrypt={} Encrypt={}; s3 {}",
            k.generate_data_key,
            k.decrypt,
            k.encrypt,
            w.s3.counts()
                .nonzero()
                .iter()
                .map(|(n, c)| format!("{n}={c}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    result
}

/// A progress bar on stderr for transfers of `total` bytes, when stderr is a terminal.
fn progress_bar(total: u64, verb: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || total < (8 << 20) {
        return None;
    }
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(verb.to_string());
    Some(pb)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_is_not_dumpable() {
        super::harden_process();
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 0);
    }
}
