//! Who a grantee is in IAM, and whether a grant may be attached to it.
//!
//! A grant policy is written by the sharer, so what keeps it from carrying
//! more than read access to shared files is the permissions boundary of
//! whoever it reaches:
//!
//! - a user or a role must carry the sealfs boundary itself;
//! - a group has no boundary, and its policies reach every member: every
//!   member must carry the boundary, the group must sit at the IAM path
//!   `/sealfs/` (the only groups `sealfs policy owner` lets an owner attach
//!   grants to, so that an administrator decides which groups can receive
//!   files), and the sharer must not be a member (a grant on one's own group
//!   is a grant on oneself, past the owner policy's deny).
//!
//! The owner policy makes IAM enforce the first and the path rule; sealfs
//! checks all of them first, to refuse with a reason and a remedy rather
//! than IAM's AccessDenied, and because IAM cannot express the other two.

use super::book::Grants;
use super::grantee::{group_may_hold_grants, Grantee, GranteeKind, Named};
use super::{BoundaryCheck, GrantError, Identity, BOUNDARY_NAME, BOUNDARY_PATH, POLICY_PATH};
use crate::error::{Error, Result};
use futures::{StreamExt, TryStreamExt};

/// A grantee that exists in IAM, with its ARN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub grantee: Grantee,
    pub arn: String,
}

/// What IAM says about a grantee.
enum Found {
    Identity(Identity),
    Group { arn: String, members: Vec<String> },
}

/// A refusal the sharer must act on: logged here, at warning level, and
/// not again by the adapter.
fn refused(what: String) -> Error {
    tracing::warn!("{what}");
    Error::Reported {
        errno: libc::EPERM,
        what,
    }
}

impl Grants {
    /// `who` as IAM knows it: it exists, and, when named by ARN, is the one
    /// the ARN names (same account and path).
    async fn find(&self, who: &Named) -> Result<(Principal, Found)> {
        let g = &who.grantee;
        let looked_up = match g.kind {
            GranteeKind::User => self.iam.get_user(&g.name).await.map(Found::Identity),
            GranteeKind::Role => self.iam.get_role(&g.name).await.map(Found::Identity),
            GranteeKind::Group => self.iam.get_group(&g.name).await.map(|grp| Found::Group {
                arn: grp.arn,
                members: grp.members,
            }),
        };
        let found = match looked_up {
            Err(GrantError::NoSuchEntity { .. }) => {
                return Err(Error::InvalidArgument(format!(
                    "cannot share with {g}: no such IAM {}",
                    g.kind.as_str()
                )))
            }
            other => other?,
        };
        let arn = match &found {
            Found::Identity(i) => i.arn.clone(),
            Found::Group { arn, .. } => arn.clone(),
        };
        if let Some(named) = &who.arn {
            if *named != arn {
                return Err(Error::InvalidArgument(format!(
                    "{named:?} does not match IAM {} {} ({arn})",
                    g.kind.as_str(),
                    g.name
                )));
            }
        }
        let principal = Principal {
            grantee: g.clone(),
            arn,
        };
        Ok((principal, found))
    }

    /// `who`, once it may receive grants (module docs); EPERM with the
    /// reason and what to run otherwise. With the boundary check off (an
    /// IAM emulator that cannot keep boundaries), the rules that do not
    /// depend on boundaries still hold.
    pub(super) async fn admit(&self, who: &Named) -> Result<Principal> {
        let (principal, found) = self.find(who).await?;
        let required = match &self.settings.boundary {
            BoundaryCheck::Off => None,
            BoundaryCheck::Arn(arn) => Some(arn.clone()),
            BoundaryCheck::Standard => Some(super::policy_arn(
                self.caller().await?,
                BOUNDARY_PATH,
                BOUNDARY_NAME,
            )),
        };
        let caller = self.caller().await?;
        let g = &principal.grantee;
        match found {
            Found::Identity(identity) => {
                if g.kind == GranteeKind::Role && caller.role_name().as_deref() == Some(&g.name) {
                    return Err(refused(format!(
                        "cannot share with {g}: it is the role this session runs as"
                    )));
                }
                if let Some(required) = required.filter(|r| identity.boundary.as_ref() != Some(r)) {
                    return Err(refused(format!(
                        "cannot share with {g}: the {} does not carry the sealfs permissions \
                         boundary {required} (an IAM administrator runs `sealfs grantee setup {g} \
                         s3://BUCKET/VOLUME` once)",
                        g.kind.as_str()
                    )));
                }
            }
            Found::Group { arn, members } => {
                if !group_may_hold_grants(&arn) {
                    return Err(refused(format!(
                        "cannot share with {g}: only groups at the IAM path {POLICY_PATH} receive \
                         files ({arn} is not; an IAM administrator makes one with `aws iam \
                         create-group --path {POLICY_PATH} --group-name NAME` and adds only \
                         users set up with `sealfs grantee setup`)"
                    )));
                }
                if let Some(me) = caller.user_name().filter(|me| members.contains(me)) {
                    return Err(refused(format!(
                        "cannot share with {g}: {me}, who is sharing, is a member of it"
                    )));
                }
                if let Some(required) = required {
                    self.check_members(g, members, &required).await?;
                }
            }
        }
        Ok(principal)
    }

    /// Every member of group `g` carries the boundary `required`.
    async fn check_members(&self, g: &Grantee, members: Vec<String>, required: &str) -> Result<()> {
        let unbounded: Vec<String> = futures::stream::iter(members)
            .map(|m| async move {
                let u = self.iam.get_user(&m).await?;
                Ok::<_, GrantError>((u.boundary.as_deref() != Some(required)).then_some(m))
            })
            .buffered(8)
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .flatten()
            .collect();
        if unbounded.is_empty() {
            return Ok(());
        }
        Err(refused(format!(
            "cannot share with {g}: {} of its members {} not carry the sealfs permissions \
             boundary {required}: {} (an IAM administrator runs `sealfs grantee setup {g} \
             s3://BUCKET/VOLUME`, which sets up every member, or removes them)",
            unbounded.len(),
            if unbounded.len() == 1 { "does" } else { "do" },
            unbounded.join(", ")
        )))
    }
}
