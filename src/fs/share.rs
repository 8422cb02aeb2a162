//! Sharing on the mount: the virtual attributes `user.share` and
//! `user.unshare` (docs/SHARING.md), and keeping grants in step with renames and
//! deletes.
//!
//! The virtual attributes are not stored in the object and not listed by
//! listxattr, so `cp -a` or `rsync -X` never copy a grant to a new file.

use super::attr::Kind;
use super::SealFs;
use crate::error::{Error, Result};
use crate::grants::grantee::Request;
use crate::grants::{Grants, SharedFile};
use libc::{EACCES, EISDIR, ENODATA, ENOTSUP};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// `getfattr -n user.share` lists grantees; `setfattr -n user.share -v NAME` grants.
pub const SHARE: &str = "user.share";
/// `setfattr -n user.unshare -v NAME` revokes one grantee.
pub const UNSHARE: &str = "user.unshare";

pub(super) fn is_virtual(name: &str) -> bool {
    name == SHARE || name == UNSHARE
}

/// With `allow_other`, any local user reaches this mount; a grant is made
/// with the mount owner's IAM credentials, so only the owner (or root) may
/// change one. `None` when `uid` may; the refusal otherwise.
pub fn share_refused(name: &str, uid: u32, owner_uid: u32) -> Option<Error> {
    let changes_grants = is_virtual(name);
    (changes_grants && uid != owner_uid && uid != 0).then(|| {
        Error::posix(
            libc::EPERM,
            format!("uid {uid} may not change {name}: only the mount's owner (uid {owner_uid}) or root shares through this mount"),
        )
    })
}

/// The names in an attribute value: comma- or whitespace-separated.
fn names(value: &[u8]) -> Result<Vec<String>> {
    let text = std::str::from_utf8(value)
        .map_err(|_| Error::InvalidArgument("grantee names must be UTF-8".into()))?;
    let names: Vec<String> = text
        .split(|c: char| c == ',' || c.is_whitespace() || c == '\0')
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(Error::InvalidArgument(
            "no grantee given (setfattr -n user.share -v NAME FILE)".into(),
        ));
    }
    Ok(names)
}

impl SealFs {
    fn grants(&self) -> Result<&Arc<Grants>> {
        self.grants
            .as_ref()
            .ok_or_else(|| Error::posix(ENOTSUP, "sharing is not available on this mount"))
    }

    /// The object and file id of a regular file, uploading staged changes
    /// first so that what is shared is what the user sees. With `publish`
    /// (a grant is being made), a file whose key derives from a branch key
    /// first gets that one key wrapped for grantees
    /// ([`crate::sealed::SealedStore::publish_key`]); the namespace and an
    /// open writer learn the new ETag of that metadata-only change.
    async fn shared_file(&self, ino: u64, publish: bool) -> Result<SharedFile> {
        let entry = self.getattr(ino).await?;
        if entry.attr.kind != Kind::File {
            return Err(Error::posix(
                EISDIR,
                "sharing works on regular files, one at a time",
            ));
        }
        let staged = self.ns.staged(ino);
        if let Some(s) = &staged {
            self.commit(ino, s).await?;
        }
        let key = self.key_of(&self.path_of(ino)?);
        if !publish {
            return SharedFile::verified(&self.sealed, &key).await;
        }
        // No upload of this file runs while its metadata changes.
        let mut writer = match &staged {
            Some(s) => Some(s.lock().await),
            None => None,
        };
        let (verified, changed) = self.sealed.publish_key(&key).await?;
        if changed {
            self.ns.attributes_persisted(ino, verified.etag.clone());
            if let Some(w) = writer.as_mut() {
                w.rebased(verified.etag.clone());
            }
        }
        Ok(SharedFile::of(self.store.bucket(), &key, &verified))
    }

    /// The grantees of a file, comma-separated, each with its end when it
    /// has one (`alice,bob;until=2027-02-01T00:00:00Z`: what `setfattr`
    /// reads back), read from IAM. Ended grants are not shown.
    pub(super) async fn get_share(&self, ino: u64) -> Result<Vec<u8>> {
        let entry = self.getattr(ino).await?;
        if entry.attr.kind != Kind::File {
            return Err(Error::posix(ENODATA, format!("{SHARE}: no such attribute")));
        }
        let grants = self.grants()?;
        let who = grants
            .grants_of(&self.shared_file(ino, false).await?)
            .await?;
        if who.is_empty() {
            return Err(Error::posix(ENODATA, format!("{SHARE}: not shared")));
        }
        let shown: Vec<String> = who
            .iter()
            .map(|(name, until)| Request::show(name, *until))
            .collect();
        Ok(shown.join(",").into_bytes())
    }

    /// `setfattr -n user.share|user.unshare -v NAMES`.
    ///
    /// Each name may carry an end: `alice;for=7d`, `alice;until=2027-01-31`
    /// (the whole request is checked before anything is granted). An end
    /// on `user.unshare` is ignored: the grant goes, whatever its end.
    pub(super) async fn set_share(&self, ino: u64, name: &str, value: &[u8]) -> Result<()> {
        self.check_writable()?;
        let now = std::time::SystemTime::now();
        let requests = names(value)?
            .iter()
            .map(|item| Request::parse(item, now).map_err(Error::InvalidArgument))
            .collect::<Result<Vec<_>>>()?;
        let grants = self.grants()?;
        let file = self.shared_file(ino, name == SHARE).await?;
        for r in &requests {
            if name == SHARE {
                let p = grants.share_until(&r.named, &file, r.until).await?;
                match r.until {
                    Some(u) => {
                        tracing::info!(object = %file.arn(), grantee = %p.arn, until = %u, "shared")
                    }
                    None => tracing::info!(object = %file.arn(), grantee = %p.arn, "shared"),
                }
            } else {
                let g = grants.unshare_named(&r.named, &file).await?;
                tracing::info!(object = %file.arn(), grantee = %g, "unshared");
            }
        }
        Ok(())
    }

    /// `setfattr -x user.share`: revoke every grant of the file.
    pub(super) async fn remove_share(&self, ino: u64) -> Result<()> {
        self.check_writable()?;
        let grants = self.grants()?;
        let file = self.shared_file(ino, false).await?;
        let who = grants.unshare_all(&file).await?;
        if who.is_empty() {
            return Err(Error::posix(ENODATA, format!("{SHARE}: not shared")));
        }
        let who: Vec<String> = who.iter().map(|g| g.to_string()).collect();
        tracing::info!(object = %file.arn(), grantees = %who.join(","), "all grants revoked");
        Ok(())
    }

    /// After objects moved (rename), their grants follow. The rename has
    /// happened whatever this returns, so failures are logged, not returned.
    pub(super) async fn grants_moved(&self, moves: &[(String, String)]) {
        if let Some(g) = &self.grants {
            let r = g.moved(self.store.bucket(), moves).await;
            self.grant_upkeep_failed("rename", r);
        }
    }

    /// After objects were deleted, their grants go too (best effort, logged).
    pub(super) async fn grants_removed(&self, gone: &[(String, Option<String>)]) {
        if let Some(g) = &self.grants {
            let r = g.removed(self.store.bucket(), gone).await;
            self.grant_upkeep_failed("delete", r);
        }
    }

    fn grant_upkeep_failed(&self, op: &str, r: Result<()>) {
        let Err(e) = r else { return };
        if e.errno() == EACCES {
            // An owner who never shares may well have no IAM rights: say it once.
            if !self.grants_denied.swap(true, Ordering::Relaxed) {
                tracing::warn!("cannot read sealfs grants, so grants do not follow renames and deletes on this mount: {e}");
            }
        } else {
            tracing::warn!("grants not updated after {op}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::tests::rig;
    use crate::fs::ROOT;
    use crate::grants::{FakeIam, GrantSettings};

    #[test]
    fn only_the_owner_or_root_changes_grants() {
        assert!(share_refused(SHARE, 1000, 1000).is_none());
        assert!(share_refused(UNSHARE, 0, 1000).is_none());
        let e = share_refused(SHARE, 1001, 1000).unwrap();
        assert_eq!(e.errno(), libc::EPERM);
        assert!(share_refused(UNSHARE, 1001, 1000).is_some());
        // Other attributes are the file's own business (its mode decides).
        assert!(share_refused("user.color", 1001, 1000).is_none());
    }

    fn shared_rig() -> (crate::fs::tests::Rig, Arc<FakeIam>) {
        let mut r = rig();
        let iam = Arc::new(FakeIam::new("owner", &["alice", "bob"]));
        let grants = Arc::new(Grants::new(iam.clone(), GrantSettings::default()));
        r.fs = r.fs.with_grants(grants);
        (r, iam)
    }

    async fn grantees(r: &crate::fs::tests::Rig, ino: u64) -> std::result::Result<String, i32> {
        r.fs.getxattr(ino, SHARE)
            .await
            .map(|v| String::from_utf8(v).unwrap())
            .map_err(|e| e.errno())
    }

    #[tokio::test]
    async fn share_list_unshare_through_attributes() {
        let (r, iam) = shared_rig();
        let a = r.write_file(ROOT, "a.txt", b"hello").await;
        assert_eq!(grantees(&r, a).await, Err(ENODATA));
        r.fs.setxattr(a, SHARE, b"alice", 0).await.unwrap();
        r.fs.setxattr(a, SHARE, b"alice,bob", 0).await.unwrap();
        assert_eq!(grantees(&r, a).await.unwrap(), "alice,bob");
        // Virtual: not listed (cp -a must not copy grants) and not stored.
        let listed = r.fs.listxattr(a).await.unwrap();
        assert!(!String::from_utf8_lossy(&listed).contains("share"));
        let obj = r.mem.raw("vol/a.txt").unwrap();
        assert!(obj.1.keys().all(|k| !k.contains("share")));
        r.fs.setxattr(a, UNSHARE, b"bob", 0).await.unwrap();
        assert_eq!(grantees(&r, a).await.unwrap(), "alice");
        r.fs.removexattr(a, SHARE).await.unwrap();
        assert_eq!(grantees(&r, a).await, Err(ENODATA));
        assert_eq!(
            r.fs.removexattr(a, SHARE).await.unwrap_err().errno(),
            ENODATA
        );
        assert!(iam.policies().is_empty());
    }

    #[tokio::test]
    async fn shares_with_an_end_through_attributes() {
        let (r, iam) = shared_rig();
        let a = r.write_file(ROOT, "a.txt", b"hello").await;
        r.fs.setxattr(a, SHARE, b"alice;until=2099-01-31,bob", 0)
            .await
            .unwrap();
        let shown = grantees(&r, a).await.unwrap();
        assert_eq!(shown, "alice;until=2099-02-01T00:00:00Z,bob");
        // What getfattr shows, setfattr takes back: nothing changes.
        r.fs.setxattr(a, SHARE, shown.as_bytes(), 0).await.unwrap();
        assert!(iam.policies().iter().all(|(_, v)| *v == 1));
        r.fs.setxattr(a, SHARE, b"alice;for=1d", 0).await.unwrap();
        let shown = grantees(&r, a).await.unwrap();
        assert!(
            shown.starts_with("alice;until=") && !shown.contains("2099"),
            "{shown}"
        );
        for bad in [
            &b"alice;until=2001-01-01"[..],
            b"alice;for=soon",
            b"alice;ttl=1d",
            b"bob,alice;for=0d",
        ] {
            let e = r.fs.setxattr(a, SHARE, bad, 0).await.unwrap_err();
            assert_eq!(e.errno(), libc::EINVAL, "{}", String::from_utf8_lossy(bad));
        }
        // A refused request granted nothing, not even its valid names.
        assert_eq!(grantees(&r, a).await.unwrap(), shown);
        r.fs.setxattr(a, UNSHARE, b"alice;until=2099-01-31", 0)
            .await
            .unwrap();
        assert_eq!(grantees(&r, a).await.unwrap(), "bob");
    }

    #[tokio::test]
    async fn bad_requests_have_clear_errnos() {
        let (r, iam) = shared_rig();
        let a = r.write_file(ROOT, "a", b"x").await;
        let e = r.fs.setxattr(a, SHARE, b"mallory", 0).await.unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL);
        assert!(e.to_string().contains("no such IAM user"), "{e}");
        assert_eq!(
            r.fs.setxattr(a, SHARE, b"", 0).await.unwrap_err().errno(),
            libc::EINVAL
        );
        let d = r.fs.mkdir(ROOT, "d", 0o755, 0, 0).await.unwrap();
        assert_eq!(
            r.fs.setxattr(d.ino, SHARE, b"alice", 0)
                .await
                .unwrap_err()
                .errno(),
            EISDIR
        );
        assert_eq!(grantees(&r, d.ino).await, Err(ENODATA));
        iam.deny("iam:CreatePolicy");
        assert_eq!(
            r.fs.setxattr(a, SHARE, b"alice", 0)
                .await
                .unwrap_err()
                .errno(),
            EACCES
        );
        assert!(iam.policies().is_empty());
        // The file itself is untouched by a failed share.
        assert_eq!(r.read_file(a).await, b"x");
        let plain = rig();
        let b = plain.write_file(ROOT, "b", b"y").await;
        assert_eq!(
            plain
                .fs
                .setxattr(b, SHARE, b"alice", 0)
                .await
                .unwrap_err()
                .errno(),
            ENOTSUP
        );
    }

    #[tokio::test]
    async fn grants_follow_renames_and_deletes() {
        let (r, _) = shared_rig();
        let d = r.fs.mkdir(ROOT, "d", 0o755, 0, 0).await.unwrap();
        let a = r.write_file(d.ino, "a", b"1").await;
        r.fs.setxattr(a, SHARE, b"alice", 0).await.unwrap();
        r.fs.rename(d.ino, "a", ROOT, "b", false).await.unwrap();
        assert_eq!(grantees(&r, a).await.unwrap(), "alice");
        // A directory rename moves the grants of everything below it.
        let d2 = r.fs.mkdir(ROOT, "e", 0o755, 0, 0).await.unwrap();
        r.fs.rename(ROOT, "b", d2.ino, "b", false).await.unwrap();
        r.fs.rename(ROOT, "e", ROOT, "f", false).await.unwrap();
        let f = r.fs.lookup(ROOT, "f").await.unwrap();
        let b = r.fs.lookup(f.ino, "b").await.unwrap();
        assert_eq!(grantees(&r, b.ino).await.unwrap(), "alice");
        // A file renamed over a shared one takes its name, not its grants.
        let c = r.write_file(ROOT, "c", b"2").await;
        r.fs.setxattr(c, SHARE, b"bob", 0).await.unwrap();
        r.fs.rename(f.ino, "b", ROOT, "c", false).await.unwrap();
        let c = r.fs.lookup(ROOT, "c").await.unwrap();
        assert_eq!(grantees(&r, c.ino).await.unwrap(), "alice");
        let grants = r.fs.grants.clone().unwrap();
        assert!(grants.documents_of("bob").await.unwrap().is_empty());
        r.fs.unlink(ROOT, "c").await.unwrap();
        assert!(grants.documents_of("alice").await.unwrap().is_empty());
    }
}
