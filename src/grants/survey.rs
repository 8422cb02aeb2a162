//! Every grant of a volume's files, account-wide (`sealfs shares --volume`):
//! which object, to whom, by whom, until when, under which file ids; and
//! dropping grants whose object is gone or was replaced by another file.

use super::book::Grants;
use super::expiry::Until;
use super::grantee::Grantee;
use super::log::{GrantAction, GrantChange};
use super::policy::{object_arn, parse_object_arn};
use crate::error::Result;
use std::collections::BTreeSet;
use std::time::Duration;

/// One sharer's grant of one object to one grantee.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VolumeGrant {
    pub key: String,
    pub grantee: Grantee,
    pub sharer: String,
    pub until: Option<Until>,
    /// The file ids the grant lets the grantee decrypt (for this object:
    /// the statement's ids; the current version's must be among them).
    pub file_ids: BTreeSet<String>,
}

impl VolumeGrant {
    /// Whether AWS no longer honours it.
    pub fn ended(&self, now: std::time::SystemTime) -> bool {
        self.until.is_some_and(|u| u.has_passed(now))
    }
}

impl Grants {
    /// Every grant of an object under `bucket`/`prefix`, read from IAM now,
    /// ended ones included (the caller shows them as ended).
    pub async fn in_volume(&self, bucket: &str, prefix: &str) -> Result<Vec<VolumeGrant>> {
        let idx = self.index(Duration::ZERO).await?;
        let mut out = Vec::new();
        for p in idx.iter() {
            for (k, g) in &p.doc.by_sharer {
                for arn in &g.objects {
                    let Some((b, key)) = parse_object_arn(arn) else {
                        continue;
                    };
                    if b == bucket && crate::volume::holds(prefix, &key) {
                        out.push(VolumeGrant {
                            key,
                            grantee: p.grantee.clone(),
                            sharer: k.sharer.clone(),
                            until: k.until,
                            file_ids: g.file_ids.clone(),
                        });
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Removes grants that grant nothing any more: `stale` names each
    /// grantee's object whose file is gone or was replaced by a file with
    /// another id. The object goes from the grantee's statements; file ids
    /// are not paired with objects in a statement, so the ids stay (an id
    /// whose file is gone opens nothing, and another file's id is still
    /// needed). Returns how many policies changed.
    pub async fn drop_stale(&self, bucket: &str, stale: &[(Grantee, String)]) -> Result<usize> {
        let mut changed = 0;
        for (grantee, key) in stale {
            let arn = object_arn(bucket, key);
            let e = self
                .edit_grantee_locked(grantee, |d| d.remove(&arn, None))
                .await?;
            changed += e.written;
            tracing::info!(%grantee, object = %arn, "stale grant removed");
            if e.edited > 0 {
                self.logged(vec![GrantChange::new(
                    GrantAction::DropStale,
                    bucket,
                    key,
                    grantee,
                )])
                .await;
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use crate::grants::tests::file;
    use crate::grants::{FakeIam, GrantSettings, Grants};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_volumes_grants_are_listed_and_stale_ones_dropped() {
        let iam = Arc::new(FakeIam::new("owner", &["alice"]));
        iam.add_role("x");
        let g = Grants::new(iam.clone(), GrantSettings::default());
        let (a, b) = (file("a", 1), file("b", 2));
        let mut elsewhere = file("c", 3);
        elsewhere.key = "volume2/c".into();
        g.share("alice", &a).await.unwrap();
        g.share("alice", &b).await.unwrap();
        g.share("role/x", &b).await.unwrap();
        g.share("alice", &elsewhere).await.unwrap();
        let listed: Vec<(String, String)> = g
            .in_volume("bucket", "vol")
            .await
            .unwrap()
            .into_iter()
            .map(|v| (v.key, v.grantee.to_string()))
            .collect();
        let want = [("vol/a", "alice"), ("vol/b", "alice"), ("vol/b", "role/x")];
        assert_eq!(
            listed,
            want.map(|(k, w)| (k.to_string(), w.to_string())).to_vec()
        );
        let alice = crate::grants::Grantee::user("alice");
        let changed = g
            .drop_stale("bucket", &[(alice, "vol/a".into())])
            .await
            .unwrap();
        assert_eq!(changed, 1);
        assert!(g.grantees(&a).await.unwrap().is_empty());
        assert_eq!(g.grantees(&b).await.unwrap(), vec!["alice", "role/x"]);
        assert_eq!(g.grantees(&elsewhere).await.unwrap(), vec!["alice"]);
    }
}
