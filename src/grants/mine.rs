//! What has been shared with the caller, read with the caller's own rights
//! (`sealfs shared`, `sealfs get`): the grant policies attached to the
//! caller as a user, to the groups it is a member of, or to the role its
//! session runs as.

use super::book::Grants;
use super::grantee::{group_may_hold_grants, Grantee, GranteeKind};
use super::policy::{GrantDoc, Listed};
use super::GrantError;
use crate::error::{Error, Result};

impl Grants {
    /// What has been shared with the caller (object, sharer, end).
    /// Grants that have ended are left out.
    pub async fn shared_with_me(&self) -> Result<Vec<Listed>> {
        let now = (self.clock)();
        let mut out: Vec<Listed> = self
            .my_documents()
            .await?
            .iter()
            .flat_map(|d| d.listed())
            .filter(|l| !l.until.is_some_and(|u| u.has_passed(now)))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The KMS keys the caller's grants name for the object `bucket`/`key`
    /// with file id `file_id`: the keys a grantee pins that file to. The
    /// grant documents are written by owners only, never by whoever can
    /// write the bucket.
    pub async fn keys_granted_to_me(
        &self,
        bucket: &str,
        key: &str,
        file_id: &str,
    ) -> Result<std::collections::BTreeSet<String>> {
        let arn = super::policy::object_arn(bucket, key);
        Ok(self
            .my_documents()
            .await?
            .iter()
            .flat_map(|d| d.keys_for(&arn, file_id))
            .collect())
    }

    /// Who holds grants on the caller's behalf: the user and its groups, or
    /// the role of the session.
    async fn my_holders(&self) -> Result<Vec<Grantee>> {
        let caller = self.iam.caller().await?;
        if let Some(role) = caller.role_name() {
            return Ok(vec![Grantee {
                kind: GranteeKind::Role,
                name: role,
            }]);
        }
        let me = caller.user_name().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "grants are made to IAM users, roles and groups, and {} is none of them",
                caller.arn
            ))
        })?;
        let mut holders = vec![Grantee::user(&me)];
        match self.iam.groups_of_user(&me).await {
            // Only groups at /sealfs/ can hold grants (the owner policy
            // attaches to no other), and the grantee policy lets a user list
            // the policies of those alone: asking about any other group
            // would be denied.
            Ok(groups) => holders.extend(
                groups
                    .into_iter()
                    .filter(|(_, arn)| group_may_hold_grants(arn))
                    .map(|(name, _)| Grantee {
                        kind: GranteeKind::Group,
                        name,
                    }),
            ),
            // A grantee set up before groups could receive files: its own
            // grants still show, and the log says what to run.
            Err(GrantError::AccessDenied { message, .. }) => tracing::warn!(
                "cannot see which groups {me} is in, so files shared with them are not shown \
                 (an IAM administrator runs `sealfs grantee setup {me} s3://BUCKET/VOLUME` \
                 again): {message}"
            ),
            Err(e) => return Err(e.into()),
        }
        Ok(holders)
    }

    /// The documents of the grant policies attached to the caller's holders.
    async fn my_documents(&self) -> Result<Vec<GrantDoc>> {
        let mut policies = Vec::new();
        for holder in self.my_holders().await? {
            let theirs = holder.policy_path();
            for (_, arn) in self.iam.list_attached(&holder).await? {
                if path_of_policy(&arn) == Some(theirs.as_str()) {
                    policies.push(self.iam.get_policy(&arn).await?);
                }
            }
        }
        Ok(self
            .read_all(policies)
            .await?
            .into_iter()
            .map(|p| p.doc)
            .collect())
    }
}

/// The IAM path of the policy `arn` (`arn:aws:iam::1:policy/sealfs/a/x` →
/// `/sealfs/a/`), compared whole: a user named `role` has the path
/// `/sealfs/role/`, a prefix of every role's.
fn path_of_policy(arn: &str) -> Option<&str> {
    let (_, rest) = arn.split_once(":policy")?;
    let end = rest.rfind('/')?;
    Some(&rest[..=end])
}

#[cfg(test)]
mod tests {
    #[test]
    fn policy_paths_are_compared_whole() {
        use super::path_of_policy;
        assert_eq!(
            path_of_policy("arn:aws:iam::123456789012:policy/sealfs/role/x/sealfs-role-x-1"),
            Some("/sealfs/role/x/")
        );
        assert_eq!(
            path_of_policy("arn:aws:iam::123456789012:policy/sealfs/role/sealfs-role-1"),
            Some("/sealfs/role/")
        );
        assert_eq!(path_of_policy("arn:aws:iam::123456789012:user/x"), None);
    }
}
