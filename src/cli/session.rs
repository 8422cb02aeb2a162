//! The FUSE session of a mount: the options it is mounted with, how it is
//! mounted (mount(2) as type `fuse.sealfs` when this process may, else
//! fusermount3), and the matching way to unmount it.

use super::mount::MountArgs;
use crate::fuse::kernel_mount::{self, KernelMount};
use crate::fuse::FuseAdapter;
use crate::url::S3Url;
use fuser::{Config, MountOption, SessionACL};
use std::path::{Path, PathBuf};

/// What the mount is asked to be: fuser's configuration and the same
/// choices as mount(2) flags.
pub(super) struct MountPlan {
    config: Config,
    kernel: KernelMount,
}

impl MountPlan {
    pub fn new(args: &MountArgs, url: &S3Url, read_only: bool) -> MountPlan {
        let asked = |o: &str| args.options.iter().any(|x| x == o);
        let mut options = vec![
            MountOption::FSName(format!("sealfs:{url}")),
            MountOption::Subtype("sealfs".into()),
            MountOption::DefaultPermissions,
            MountOption::NoAtime,
            if read_only {
                MountOption::RO
            } else {
                MountOption::RW
            },
        ];
        // Device nodes and setuid bits are stored faithfully (backups need
        // them), but honoured only when asked for: whoever can write the
        // bucket must not be able to hand local users a device or a setuid
        // program.
        if !asked("dev") {
            options.push(MountOption::NoDev);
        }
        if !asked("suid") {
            options.push(MountOption::NoSuid);
        }
        for o in &args.options {
            match o.as_str() {
                "dev" => options.push(MountOption::Dev),
                "suid" => options.push(MountOption::Suid),
                "noexec" => options.push(MountOption::NoExec),
                "exec" => options.push(MountOption::Exec),
                _ => {}
            }
        }
        let mut config = Config::default();
        config.mount_options = options;
        config.n_threads = Some(4);
        config.acl = if args.allow_other || asked("allow_other") {
            SessionACL::All
        } else if asked("allow_root") {
            SessionACL::RootAndOwner
        } else {
            SessionACL::Owner
        };
        let kernel = KernelMount {
            source: format!("sealfs:{url}"),
            read_only,
            allow_other: config.acl != SessionACL::Owner,
            dev: asked("dev"),
            suid: asked("suid"),
            noexec: asked("noexec") && !asked("exec"),
        };
        MountPlan { config, kernel }
    }
}

/// A mounted FUSE session, and how it was mounted.
pub(super) struct MountedSession {
    session: fuser::Session<FuseAdapter>,
    /// Mounted by this process's mount(2) (unmounted by umount2), rather
    /// than by fusermount3 (unmounted through fuser).
    by_kernel: bool,
    mountpoint: PathBuf,
}

impl MountedSession {
    /// Mounts `adapter` at `mountpoint` as `plan` says.
    pub fn mount(
        plan: MountPlan,
        adapter: FuseAdapter,
        mountpoint: &Path,
    ) -> std::io::Result<MountedSession> {
        let MountPlan { config, kernel } = plan;
        let (session, by_kernel) = match kernel.mount(mountpoint)? {
            Some(fd) => {
                let acl = config.acl;
                let session =
                    fuser::Session::from_fd(adapter, fd, acl, config).inspect_err(|_| {
                        let _ = kernel_mount::unmount(mountpoint);
                    })?;
                (session, true)
            }
            None => (fuser::Session::new(adapter, mountpoint, &config)?, false),
        };
        Ok(MountedSession {
            session,
            by_kernel,
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    pub fn notifier(&self) -> fuser::Notifier {
        self.session.notifier()
    }

    /// Unmounts the session from another thread (a signal handler), the
    /// way it was mounted.
    pub fn unmounter(&mut self) -> impl FnMut() -> std::io::Result<()> + Send + 'static {
        let mut fuser_unmount = self.session.unmount_callable();
        let by_kernel = self.by_kernel;
        let mountpoint = self.mountpoint.clone();
        move || {
            if by_kernel {
                kernel_mount::unmount(&mountpoint)
            } else {
                fuser_unmount.unmount()
            }
        }
    }

    /// Serves requests until the filesystem is unmounted.
    pub fn run(self) -> std::io::Result<()> {
        self.session.run()
    }
}
