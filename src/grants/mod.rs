//! Per-file sharing through IAM (docs/SHARING.md).
//!
//! A grant lets one IAM user, role or group read one file: `s3:GetObject` on
//! its object ARN and `kms:Decrypt` only under its file id's encryption
//! context. Grants live in sealfs-managed IAM policies, one set per grantee,
//! at the grantee's path (`/sealfs/<user>/`, `/sealfs/role/<role>/`,
//! `/sealfs/group/<group>/`), attached to the grantee.
//!
//! - [`policy`]: the policy document (pure);
//! - [`GrantService`]: the IAM operations sealfs needs, with the AWS
//!   implementation in [`iam`] and an in-memory one with IAM's limits in [`fake`];
//! - [`book`]: the grant logic (spill, versions, capacity, rename, delete, ends);
//! - [`admit`]: who a grantee is in IAM, and whether a grant may go to it;
//! - [`mine`]: what has been shared with the caller, read with its own rights;
//! - [`survey`]: every grant of a volume's files, and dropping stale ones;
//! - [`expiry`]: when a share ends, as people write it and as IAM compares it;
//! - [`grantee`]: grantees as people name them, and their policy paths.

pub mod admit;
pub mod book;
pub mod expiry;
pub mod fake;
mod follow;
pub mod grantee;
pub mod iam;
pub mod log;
pub mod mine;
pub mod policy;
pub mod survey;

pub use book::{GrantSettings, Grants};
pub use fake::FakeIam;
pub use grantee::{Grantee, GranteeKind};
pub use iam::IamGrantService;
pub use log::{GrantAction, GrantChange, GrantLog, MemoryGrantLog};
pub use policy::{GrantDoc, SharedFile};

use async_trait::async_trait;

/// Path under which every sealfs grant policy lives.
pub const POLICY_PATH: &str = "/sealfs/";
/// Path and name of the permissions boundary every grantee carries. Outside
/// [`POLICY_PATH`], so the owner policy's rights on grant policies never
/// reach it.
pub const BOUNDARY_PATH: &str = "/sealfs-boundary/";
pub const BOUNDARY_NAME: &str = "sealfs-grantee-boundary";
/// Path and name of the policy that lets a grantee read its own grants.
pub const GRANTEE_PATH: &str = "/sealfs-grantee/";
pub const GRANTEE_NAME: &str = "sealfs-grantee";

/// The ARN of a policy at `path` (`/x/`) named `name`, in the caller's
/// partition and account.
pub fn policy_arn(caller: &Caller, path: &str, name: &str) -> String {
    let partition = caller.arn.split(':').nth(1).unwrap_or("aws");
    format!("arn:{partition}:iam::{}:policy{path}{name}", caller.account)
}

/// Which permissions boundary a user must carry before anything is shared
/// with them.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum BoundaryCheck {
    /// [`BOUNDARY_NAME`] in the sharer's account.
    #[default]
    Standard,
    /// A boundary of the account's own making.
    Arn(String),
    /// No check (for an IAM emulator that cannot keep user boundaries; in
    /// AWS the owner policy's condition still refuses the attachment).
    Off,
}

impl std::str::FromStr for BoundaryCheck {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "" | "standard" => BoundaryCheck::Standard,
            "none" | "off" => BoundaryCheck::Off,
            arn => BoundaryCheck::Arn(arn.to_string()),
        })
    }
}

/// An IAM user or role, as IAM describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub arn: String,
    /// The ARN of its permissions boundary, if any.
    pub boundary: Option<String>,
}

/// An IAM group and the names of its members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub arn: String,
    pub members: Vec<String>,
}

/// Who is calling (from STS): the ARN and the account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub arn: String,
    pub account: String,
}

impl Caller {
    /// The name a grant records as its sharer: a user's name, or a role
    /// session's `role/session`.
    pub fn display_name(&self) -> String {
        let resource = self.arn.split(':').nth(5).unwrap_or(&self.arn);
        match resource.split_once('/') {
            Some(("user", rest)) => rest.rsplit('/').next().unwrap_or(rest).to_string(),
            Some((_, rest)) => rest.to_string(),
            None => resource.to_string(),
        }
    }

    /// The IAM user name, when the caller is an IAM user.
    pub fn user_name(&self) -> Option<String> {
        let resource = self.arn.split(':').nth(5)?;
        let rest = resource.strip_prefix("user/")?;
        Some(rest.rsplit('/').next().unwrap_or(rest).to_string())
    }

    /// The role, when the caller is a session of one
    /// (`arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`).
    pub fn role_name(&self) -> Option<String> {
        let resource = self.arn.split(':').nth(5)?;
        let rest = resource.strip_prefix("assumed-role/")?;
        Some(rest.split('/').next()?.to_string()).filter(|r| !r.is_empty())
    }
}

/// A customer-managed policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedPolicy {
    pub name: String,
    pub arn: String,
    pub path: String,
    pub default_version: String,
}

/// One version of a managed policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyVersion {
    pub id: String,
    pub is_default: bool,
    /// Seconds since the epoch (orders versions for pruning).
    pub created: i64,
}

/// What can go wrong talking to IAM, in the few kinds the grant logic acts on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GrantError {
    #[error("IAM denied {action}: {message}")]
    AccessDenied {
        action: &'static str,
        message: String,
    },
    #[error("{what} does not exist in IAM")]
    NoSuchEntity { what: String },
    #[error("IAM limit reached: {message}")]
    LimitExceeded { message: String },
    #[error("IAM entity exists: {message}")]
    AlreadyExists { message: String },
    #[error("IAM refused the request: {message}")]
    Invalid { message: String },
    #[error("IAM unavailable for {action}: {message}")]
    Unavailable {
        action: &'static str,
        message: String,
    },
}

pub type GrantResult<T> = std::result::Result<T, GrantError>;

/// The IAM (and STS) operations sealfs's grants are made of.
#[async_trait]
pub trait GrantService: Send + Sync {
    async fn caller(&self) -> GrantResult<Caller>;
    async fn get_user(&self, name: &str) -> GrantResult<Identity>;
    async fn get_role(&self, name: &str) -> GrantResult<Identity>;
    /// The group with every member.
    async fn get_group(&self, name: &str) -> GrantResult<Group>;
    /// The groups `user` is a member of: (name, ARN).
    async fn groups_of_user(&self, user: &str) -> GrantResult<Vec<(String, String)>>;
    /// Every managed policy attached to the user, role or group (any path):
    /// (name, ARN).
    async fn list_attached(&self, who: &Grantee) -> GrantResult<Vec<(String, String)>>;
    /// Customer-managed policies whose path starts with `path_prefix`.
    async fn list_policies(&self, path_prefix: &str) -> GrantResult<Vec<ManagedPolicy>>;
    async fn get_policy(&self, arn: &str) -> GrantResult<ManagedPolicy>;
    async fn policy_document(&self, arn: &str, version: &str) -> GrantResult<String>;
    async fn list_versions(&self, arn: &str) -> GrantResult<Vec<PolicyVersion>>;
    async fn create_policy(
        &self,
        name: &str,
        path: &str,
        document: &str,
        description: &str,
    ) -> GrantResult<ManagedPolicy>;
    /// Creates a version and makes it the default; returns its id.
    async fn create_version(&self, arn: &str, document: &str) -> GrantResult<String>;
    async fn delete_version(&self, arn: &str, version: &str) -> GrantResult<()>;
    async fn delete_policy(&self, arn: &str) -> GrantResult<()>;
    async fn attach(&self, who: &Grantee, arn: &str) -> GrantResult<()>;
    async fn detach(&self, who: &Grantee, arn: &str) -> GrantResult<()>;
    /// Sets a user's or role's permissions boundary (administrators,
    /// `sealfs grantee setup`); groups have none.
    async fn put_boundary(&self, who: &Grantee, arn: &str) -> GrantResult<()>;
}

/// Makes `document` the default version of the policy `arn`, deleting the
/// oldest non-default version first when the policy has `version_limit`.
pub async fn replace_default_version(
    iam: &dyn GrantService,
    arn: &str,
    document: &str,
    version_limit: usize,
) -> GrantResult<()> {
    let versions = iam.list_versions(arn).await?;
    if versions.len() >= version_limit {
        if let Some(oldest) = versions
            .iter()
            .filter(|v| !v.is_default)
            .min_by_key(|v| (v.created, v.id.clone()))
        {
            iam.delete_version(arn, &oldest.id).await?;
        }
    }
    iam.create_version(arn, document).await?;
    Ok(())
}

#[cfg(test)]
mod kinds_tests;
#[cfg(test)]
mod tests;
