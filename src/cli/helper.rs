//! sealfs as a mount helper, so that `mount -t fuse.sealfs`, `/etc/fstab`
//! and systemd `.mount` units mount a volume like any filesystem.
//!
//! mount(8) runs a helper for type `fuse.sealfs` in one of two ways:
//! `/sbin/mount.fuse.sealfs SOURCE DIR -o OPTIONS` (a symlink to sealfs),
//! or, through fuse3's `mount.fuse`, `sealfs SOURCE DIR -o OPTIONS` (sealfs
//! on the PATH). Both are rewritten here into `sealfs mount SOURCE DIR ...`;
//! every option is either understood, or refused with its name (or, with
//! `-s`, the helper's sloppy flag, ignored).

/// Options mount(8), systemd or fuse3's helper act on, and sealfs's
/// defaults already (nodev, nosuid, noatime). `dev` and `suid` are among
/// them: fuse3's mount.fuse adds both to every mount root makes, so through
/// a helper they cannot mean a choice, and a helper mount stays nodev and
/// nosuid (whoever can write the bucket must not hand local users a device
/// or a setuid program); `sealfs mount -o dev,suid` is the way to ask.
const IGNORED: &[&str] = &[
    "rw",
    "defaults",
    "_netdev",
    "auto",
    "noauto",
    "nofail",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "nodev",
    "nosuid",
    "dev",
    "suid",
    "async",
    "noatime",
    "nodiratime",
    "relatime",
    "lazytime",
];

/// Flags `sealfs mount -o` takes as they are.
const PASSED: &[&str] = &[
    "ro",
    "allow_other",
    "allow_root",
    "exec",
    "noexec",
    "write_back",
];

/// `name=value` options that are the command's global flags.
const GLOBAL: &[&str] = &["profile", "region", "endpoint_url"];

/// `name=value` options that are `sealfs mount` flags (`--name-with-dashes`).
const MOUNT_FLAGS: &[&str] = &[
    "cache_dir",
    "cache_size",
    "metadata_ttl",
    "log_file",
    "read_cache_mib",
    "read_ahead_mib",
    "write_back_uploads",
    "cached_entries",
    "attribute_index",
    "iam_policy_limit",
    "grantee_boundary",
    "branch_files",
    "branch_hours",
    "metrics_addr",
];

/// Whether `args` (with the program name) is a mount helper's call.
pub fn is_helper_call(args: &[String]) -> bool {
    let program = args
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p))
        .unwrap_or("");
    program.starts_with("mount.")
        || args
            .get(1)
            .is_some_and(|a| a.starts_with("s3://") || a.starts_with("sealfs#s3://"))
}

/// The `sealfs ... mount SOURCE DIR ...` arguments a helper call means.
pub fn rewrite(args: &[String]) -> Result<Vec<String>, String> {
    let mut positional = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let mut sloppy = false;
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        match a.as_str() {
            "-o" => options.extend(
                rest.next()
                    .ok_or("-o needs a value")?
                    .split(',')
                    .map(str::to_string),
            ),
            o if o.starts_with("-o") => options.extend(o[2..].split(',').map(str::to_string)),
            // -t TYPE and -N NAMESPACE carry a value sealfs does not need.
            "-t" | "-N" => {
                rest.next();
            }
            "-s" => sloppy = true,
            // Fake, no mtab, verbose: nothing for sealfs to do differently.
            "-f" | "-n" | "-v" => {}
            f if f.starts_with('-') => return Err(format!("unknown mount helper flag {f}")),
            p => positional.push(p.to_string()),
        }
    }
    let [source, dir] = &positional[..] else {
        return Err(format!(
            "a mount helper takes SOURCE and DIRECTORY, got {positional:?}"
        ));
    };
    let source = source.strip_prefix("sealfs#").unwrap_or(source);
    let mut global = Vec::new();
    let mut flags = Vec::new();
    let mut passed = Vec::new();
    for o in options.iter().filter(|o| !o.is_empty()) {
        let (name, value) = match o.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (o.as_str(), None),
        };
        let dashed = || format!("--{}", name.replace('_', "-"));
        match value {
            _ if IGNORED.contains(&name) || name.starts_with("x-") || name == "comment" => {}
            None if PASSED.contains(&name) => passed.push(name.to_string()),
            Some(v) if GLOBAL.contains(&name) => global.extend([dashed(), v.to_string()]),
            Some(v) if MOUNT_FLAGS.contains(&name) => flags.extend([dashed(), v.to_string()]),
            _ if sloppy => {}
            _ => {
                return Err(format!(
                    "unknown mount option {o:?}; sealfs takes {}, and {}=VALUE",
                    PASSED.join(", "),
                    GLOBAL
                        .iter()
                        .chain(MOUNT_FLAGS)
                        .copied()
                        .collect::<Vec<_>>()
                        .join("=, ")
                ))
            }
        }
    }
    let mut out = vec!["sealfs".to_string()];
    out.extend(global);
    out.extend(["mount".to_string(), source.to_string(), dir.clone()]);
    out.extend(flags);
    if !passed.is_empty() {
        out.extend(["-o".to_string(), passed.join(",")]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn helper_calls_are_told_from_commands() {
        assert!(is_helper_call(&v("/sbin/mount.fuse.sealfs s3://b/p /mnt")));
        assert!(is_helper_call(&v("sealfs s3://b/p /mnt -o ro")));
        assert!(is_helper_call(&v("sealfs sealfs#s3://b/p /mnt")));
        assert!(!is_helper_call(&v("sealfs mount s3://b/p /mnt")));
        assert!(!is_helper_call(&v("sealfs cat s3://b/p")));
        assert!(!is_helper_call(&v("sealfs")));
    }

    #[test]
    fn an_fstab_line_becomes_a_mount_command() {
        let got = rewrite(&v("/sbin/mount.fuse.sealfs s3://b/team /mnt/team -o \
             rw,_netdev,nofail,x-systemd.automount,allow_other,ro,profile=backup,\
             cache_dir=/var/cache/sealfs,cache_size=10G,write_back,comment=x"))
        .unwrap();
        assert_eq!(
            got,
            v(
                "sealfs --profile backup mount s3://b/team /mnt/team --cache-dir \
               /var/cache/sealfs --cache-size 10G -o allow_other,ro,write_back"
            )
        );
        // fuse3's mount.fuse form, options glued to -o, and old-style sources.
        assert_eq!(
            rewrite(&v("sealfs sealfs#s3://b/p /m -oro,region=eu-west-1 -n")).unwrap(),
            v("sealfs --region eu-west-1 mount s3://b/p /m -o ro")
        );
        assert_eq!(
            rewrite(&v("sealfs s3://b/p /m")).unwrap(),
            v("sealfs mount s3://b/p /m")
        );
        // What fuse3's mount.fuse adds for root never turns devices or
        // setuid bits on.
        assert_eq!(
            rewrite(&v("sealfs s3://b/p /m -o rw,allow_other,dev,suid")).unwrap(),
            v("sealfs mount s3://b/p /m -o allow_other")
        );
    }

    #[test]
    fn unknown_options_are_refused_by_name_unless_sloppy() {
        let e = rewrite(&v("sealfs s3://b/p /m -o allow_other,bogus=1")).unwrap_err();
        assert!(e.contains("\"bogus=1\"") && e.contains("cache_dir="), "{e}");
        // A flag that needs a value given none is unknown too.
        assert!(rewrite(&v("sealfs s3://b/p /m -o profile")).is_err());
        assert_eq!(
            rewrite(&v("sealfs s3://b/p /m -s -o bogus")).unwrap(),
            v("sealfs mount s3://b/p /m")
        );
        assert!(rewrite(&v("sealfs s3://b/p")).is_err());
        assert!(rewrite(&v("sealfs s3://b/p /m -x")).is_err());
    }
}
