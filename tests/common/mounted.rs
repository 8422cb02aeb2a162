//! A volume mounted through FUSE for a test: unmounted on drop (lazy
//! unmount as the fallback) so a failing test cannot wedge the machine.

use super::*;
use std::path::PathBuf;
use std::process::Command;

pub struct Mounted {
    pub stack: Stack,
    pub prefix: String,
    pub tmp: tempfile::TempDir,
    pub mounted: bool,
    /// The IAM user whose credentials init and mount use.
    pub owner: String,
    /// Extra arguments of `sealfs mount`.
    pub mount_args: Vec<String>,
    /// Extra environment of `sealfs mount`.
    pub mount_env: Vec<(String, String)>,
    /// Leave the log file at its default place (inside the cache directory).
    pub log_in_cache: bool,
}

impl Mounted {
    pub fn new(name: &str) -> Mounted {
        Self::new_as(name, "admin")
    }

    /// A fresh volume initialised (and later mounted) with `owner`'s credentials.
    pub fn new_as(name: &str, owner: &str) -> Mounted {
        Self::create(name, owner, &[])
    }

    /// A fresh volume initialised with extra `sealfs init` arguments.
    pub fn new_with_init(name: &str, init_args: &[&str]) -> Mounted {
        Self::create(name, "admin", init_args)
    }

    fn create(name: &str, owner: &str, init_args: &[&str]) -> Mounted {
        let stack = Stack::get();
        let prefix = unique(name);
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("mnt")).unwrap();
        let m = Mounted {
            stack,
            prefix,
            tmp,
            mounted: false,
            owner: owner.to_string(),
            mount_args: Vec::new(),
            mount_env: Vec::new(),
            log_in_cache: false,
        };
        ok(m.sealfs()
            .args(["init", &m.url(), "--kms-key", "alias/sealfs-test"])
            .args(init_args));
        m
    }

    /// A second mount of the same volume (own mountpoint, staging area and
    /// config dir, as on another machine), not yet mounted.
    pub fn another(&self) -> Mounted {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("mnt")).unwrap();
        Mounted {
            stack: Stack::get(),
            prefix: self.prefix.clone(),
            tmp,
            mounted: false,
            owner: self.owner.clone(),
            mount_args: self.mount_args.clone(),
            mount_env: self.mount_env.clone(),
            log_in_cache: self.log_in_cache,
        }
    }

    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.stack.bucket(), self.prefix)
    }

    pub fn sealfs(&self) -> Command {
        self.stack
            .sealfs(&self.owner, &self.tmp.path().join("config"))
    }

    pub fn mnt(&self) -> PathBuf {
        self.tmp.path().join("mnt")
    }

    pub fn cache(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    pub fn local(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn mount(mut self) -> Self {
        self.remount();
        self
    }

    pub fn remount(&mut self) {
        if self.mounted {
            self.unmount();
        }
        let log: Vec<std::ffi::OsString> = if self.log_in_cache {
            Vec::new()
        } else {
            vec!["--log-file".into(), self.local("sealfs.log").into()]
        };
        ok(self
            .sealfs()
            .env("SEALFS_LOG", "info")
            .args(["mount", &self.url()])
            .arg(self.mnt())
            .arg("--cache-dir")
            .arg(self.cache())
            .args(log)
            .args(&self.mount_args)
            .envs(self.mount_env.iter().map(|(k, v)| (k, v))));
        self.mounted = true;
    }

    pub fn unmount(&mut self) {
        if !self.mounted {
            return;
        }
        self.mounted = false;
        let daemon = self.find_daemon();
        let out = run(Command::new("fusermount3").arg("-u").arg(self.mnt()));
        if !out.status.success() {
            let _ = Command::new("umount").arg("-l").arg(self.mnt()).status();
            panic!("unmount failed: {}", stderr(&out));
        }
        // The daemon exits once the kernel has released the mount.
        for _ in 0..100 {
            let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
            if !mounts.contains(self.mnt().to_str().unwrap()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // ... and after it has uploaded what it holds (the write-back spool).
        if let Some(pid) = daemon {
            for _ in 0..1200 {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if cmd.is_empty() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }

    /// For a daemon that may already be gone: detach the mount whatever state it is in.
    pub fn unmount_lazily(&mut self) {
        self.mounted = false;
        let quiet = |c: &mut Command| {
            let _ = c.stderr(std::process::Stdio::null()).status();
        };
        quiet(Command::new("fusermount3").arg("-uz").arg(self.mnt()));
        quiet(Command::new("umount").arg("-l").arg(self.mnt()));
    }

    pub fn sh(&self, script: &str) -> String {
        let out = run(Command::new("bash")
            .arg("-euo")
            .arg("pipefail")
            .arg("-c")
            .arg(script)
            .current_dir(self.tmp.path())
            .env("M", self.mnt()));
        assert!(
            out.status.success(),
            "script failed: {script}\nstdout: {}\nstderr: {}\nlog: {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out),
            std::fs::read_to_string(self.local("sealfs.log"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Runs a bash script in the mount's directory (`$M` is the mountpoint);
    /// returns the output whatever the status.
    pub fn sh_any(&self, script: &str) -> std::process::Output {
        run(Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(self.tmp.path())
            .env("M", self.mnt()))
    }

    /// The raw object at `rel` under the volume (body, user metadata), read as admin.
    pub async fn object(&self, rel: &str) -> (Vec<u8>, std::collections::HashMap<String, String>) {
        self.object_at(&format!("{}/{rel}", self.prefix)).await
    }

    pub async fn object_at(
        &self,
        key: &str,
    ) -> (Vec<u8>, std::collections::HashMap<String, String>) {
        let o = self
            .stack
            .s3("admin")
            .get_object()
            .bucket(self.stack.bucket())
            .key(key)
            .send()
            .await
            .unwrap();
        let meta = o.metadata().cloned().unwrap_or_default();
        (o.body.collect().await.unwrap().to_vec(), meta)
    }

    /// Every key under the volume (a listing only: objects may go meanwhile).
    pub async fn keys(&self) -> Vec<String> {
        let s3 = self.stack.s3("admin");
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = s3
                .list_objects_v2()
                .bucket(self.stack.bucket())
                .prefix(format!("{}/", self.prefix))
                .set_continuation_token(token)
                .encoding_type(aws_sdk_s3::types::EncodingType::Url)
                .send()
                .await
                .unwrap();
            for o in page.contents() {
                // URL-encoded in the listing (keys may hold non-XML characters).
                let key = percent_encoding::percent_decode_str(&o.key().unwrap().replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned();
                out.push(key);
            }
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() {
                out.sort();
                return out;
            }
        }
    }

    /// Every raw object under the volume, by key.
    pub async fn objects(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for key in self.keys().await {
            let (body, _) = self.object_at(&key).await;
            out.push((key, body));
        }
        out
    }

    /// The checks every test ends with: no plaintext marker in any object, and
    /// an empty staging area once unmounted (what stays is the local key, the
    /// mount record, the log, the encrypted read cache and the KMS-wrapped
    /// branch keys).
    pub async fn finish(mut self) {
        self.unmount();
        for (key, body) in self.objects().await {
            assert!(
                !body.windows(MARKER.len()).any(|w| w == MARKER),
                "plaintext marker in {key}"
            );
        }
        let staged: Vec<_> = std::fs::read_dir(self.cache())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            staged.iter().all(|n| n.to_string_lossy().ends_with(".log")
                || [
                    "spool",
                    "renames",
                    "read-cache",
                    "branches",
                    "local-key.json",
                    "mount.json"
                ]
                .iter()
                .any(|k| n == k)),
            "staging area not empty: {staged:?}"
        );
        let renames: Vec<_> = std::fs::read_dir(self.cache().join("renames"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(renames.is_empty(), "rename journals left: {renames:?}");
        let spooled: Vec<_> = std::fs::read_dir(self.cache().join("spool"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            spooled.is_empty(),
            "write-back spool not drained: {spooled:?}"
        );
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let ok = Command::new("fusermount3")
                .arg("-u")
                .arg(self.mnt())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(self.mnt()).status();
            }
        }
    }
}

impl Mounted {
    /// The pid of this mount's daemon (its command line names the mountpoint).
    pub fn daemon_pid(&self) -> u32 {
        self.find_daemon()
            .unwrap_or_else(|| panic!("no daemon for {}", self.mnt().display()))
    }

    fn find_daemon(&self) -> Option<u32> {
        let mnt = self.mnt();
        let mnt = mnt.to_str().unwrap();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            // A zombie (killed, not reaped) has an empty command line.
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.iter().any(|a| a == "mount") && args.iter().any(|a| a == mnt) {
                return Some(pid);
            }
        }
        None
    }

    /// kill -9 of the daemon (if it still runs), then a lazy unmount of what it left.
    pub fn crash(&mut self) {
        if let Some(pid) = self.find_daemon() {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for _ in 0..100 {
            if self.find_daemon().is_none() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.unmount_lazily();
    }
}
