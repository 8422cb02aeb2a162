//! [`GrantService`] over AWS IAM (and STS for the caller's identity).

use super::grantee::{Grantee, GranteeKind};
use super::{
    Caller, GrantError, GrantResult, GrantService, Group, Identity, ManagedPolicy, PolicyVersion,
};
use crate::aws_error::{classify, Class};
use async_trait::async_trait;
use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_iam::types::PolicyScopeType;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;

/// Writes spaces in a query-protocol form body as `+` instead of `%20`.
///
/// Both mean a space in `application/x-www-form-urlencoded`, and AWS takes
/// either; emulators that verify signatures by re-encoding the parsed form
/// with Python's `urlencode` (moto) only match `+`. Installed for custom
/// endpoints only, so requests to AWS are exactly what the SDK sends.
#[derive(Debug)]
pub struct PlusForSpace;

impl Intercept for PlusForSpace {
    fn name(&self) -> &'static str {
        "PlusForSpace"
    }

    fn modify_before_signing(
        &self,
        ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let req = ctx.request_mut();
        let Some(body) = req.body().bytes() else {
            return Ok(());
        };
        if !body.windows(3).any(|w| w == b"%20") {
            return Ok(());
        }
        let text = String::from_utf8_lossy(body).replace("%20", "+");
        let len = text.len();
        *req.body_mut() = SdkBody::from(text);
        req.headers_mut().insert("content-length", len.to_string());
        Ok(())
    }
}

#[derive(Clone)]
pub struct IamGrantService {
    iam: aws_sdk_iam::Client,
    sts: aws_sdk_sts::Client,
}

impl IamGrantService {
    pub fn new(iam: aws_sdk_iam::Client, sts: aws_sdk_sts::Client) -> Self {
        IamGrantService { iam, sts }
    }
}

fn fail<E>(action: &'static str, err: SdkError<E, HttpResponse>) -> GrantError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let f = classify(&err);
    let message = f.message.clone();
    match (f.code.as_deref(), f.class) {
        (Some("NoSuchEntity"), _) | (_, Class::NotFound) => {
            GrantError::NoSuchEntity { what: message }
        }
        (Some("LimitExceeded"), _) => GrantError::LimitExceeded { message },
        (Some("EntityAlreadyExists"), _) => GrantError::AlreadyExists { message },
        (Some("MalformedPolicyDocument" | "InvalidInput" | "DeleteConflict"), _) => {
            GrantError::Invalid { message }
        }
        (_, Class::Denied | Class::NoCredentials) => GrantError::AccessDenied { action, message },
        _ => GrantError::Unavailable { action, message },
    }
}

fn managed(p: &aws_sdk_iam::types::Policy) -> ManagedPolicy {
    ManagedPolicy {
        name: p.policy_name().unwrap_or_default().to_string(),
        arn: p.arn().unwrap_or_default().to_string(),
        path: p.path().unwrap_or("/").to_string(),
        default_version: p.default_version_id().unwrap_or("v1").to_string(),
    }
}

#[async_trait]
impl GrantService for IamGrantService {
    async fn caller(&self) -> GrantResult<Caller> {
        let out = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| fail("sts:GetCallerIdentity", e))?;
        Ok(Caller {
            arn: out.arn().unwrap_or_default().to_string(),
            account: out.account().unwrap_or_default().to_string(),
        })
    }

    async fn get_user(&self, name: &str) -> GrantResult<Identity> {
        let out = self
            .iam
            .get_user()
            .user_name(name)
            .send()
            .await
            .map_err(|e| fail("iam:GetUser", e))?;
        let u = out.user().ok_or_else(|| GrantError::NoSuchEntity {
            what: format!("user {name}"),
        })?;
        Ok(Identity {
            name: u.user_name().to_string(),
            arn: u.arn().to_string(),
            boundary: u
                .permissions_boundary()
                .and_then(|b| b.permissions_boundary_arn())
                .map(str::to_string),
        })
    }

    async fn get_role(&self, name: &str) -> GrantResult<Identity> {
        let out = self
            .iam
            .get_role()
            .role_name(name)
            .send()
            .await
            .map_err(|e| fail("iam:GetRole", e))?;
        let r = out.role().ok_or_else(|| GrantError::NoSuchEntity {
            what: format!("role {name}"),
        })?;
        Ok(Identity {
            name: r.role_name().to_string(),
            arn: r.arn().to_string(),
            boundary: r
                .permissions_boundary()
                .and_then(|b| b.permissions_boundary_arn())
                .map(str::to_string),
        })
    }

    async fn get_group(&self, name: &str) -> GrantResult<Group> {
        let mut members = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .iam
                .get_group()
                .group_name(name)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| fail("iam:GetGroup", e))?;
            members.extend(page.users().iter().map(|u| u.user_name().to_string()));
            if let (true, Some(m)) = (page.is_truncated(), page.marker()) {
                marker = Some(m.to_string());
                continue;
            }
            let g = page.group().ok_or_else(|| GrantError::NoSuchEntity {
                what: format!("group {name}"),
            })?;
            return Ok(Group {
                name: g.group_name().to_string(),
                arn: g.arn().to_string(),
                members,
            });
        }
    }

    async fn groups_of_user(&self, user: &str) -> GrantResult<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .iam
                .list_groups_for_user()
                .user_name(user)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| fail("iam:ListGroupsForUser", e))?;
            out.extend(
                page.groups()
                    .iter()
                    .map(|g| (g.group_name().to_string(), g.arn().to_string())),
            );
            match (page.is_truncated(), page.marker()) {
                (true, Some(m)) => marker = Some(m.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn list_attached(&self, who: &Grantee) -> GrantResult<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut marker = None;
        let name = who.name.as_str();
        loop {
            let (policies, truncated, next) = match who.kind {
                GranteeKind::User => {
                    let page = self
                        .iam
                        .list_attached_user_policies()
                        .user_name(name)
                        .set_marker(marker.take())
                        .send()
                        .await
                        .map_err(|e| fail("iam:ListAttachedUserPolicies", e))?;
                    (
                        page.attached_policies().to_vec(),
                        page.is_truncated(),
                        page.marker().map(str::to_string),
                    )
                }
                GranteeKind::Role => {
                    let page = self
                        .iam
                        .list_attached_role_policies()
                        .role_name(name)
                        .set_marker(marker.take())
                        .send()
                        .await
                        .map_err(|e| fail("iam:ListAttachedRolePolicies", e))?;
                    (
                        page.attached_policies().to_vec(),
                        page.is_truncated(),
                        page.marker().map(str::to_string),
                    )
                }
                GranteeKind::Group => {
                    let page = self
                        .iam
                        .list_attached_group_policies()
                        .group_name(name)
                        .set_marker(marker.take())
                        .send()
                        .await
                        .map_err(|e| fail("iam:ListAttachedGroupPolicies", e))?;
                    (
                        page.attached_policies().to_vec(),
                        page.is_truncated(),
                        page.marker().map(str::to_string),
                    )
                }
            };
            for p in &policies {
                out.push((
                    p.policy_name().unwrap_or_default().to_string(),
                    p.policy_arn().unwrap_or_default().to_string(),
                ));
            }
            match (truncated, next) {
                (true, Some(m)) => marker = Some(m),
                _ => return Ok(out),
            }
        }
    }

    async fn list_policies(&self, path_prefix: &str) -> GrantResult<Vec<ManagedPolicy>> {
        let mut out = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .iam
                .list_policies()
                .scope(PolicyScopeType::Local)
                .path_prefix(path_prefix)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| fail("iam:ListPolicies", e))?;
            // Some implementations ignore PathPrefix; filter again.
            out.extend(
                page.policies()
                    .iter()
                    .map(managed)
                    .filter(|p| p.path.starts_with(path_prefix)),
            );
            match (page.is_truncated(), page.marker()) {
                (true, Some(m)) => marker = Some(m.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn get_policy(&self, arn: &str) -> GrantResult<ManagedPolicy> {
        let out = self
            .iam
            .get_policy()
            .policy_arn(arn)
            .send()
            .await
            .map_err(|e| fail("iam:GetPolicy", e))?;
        out.policy()
            .map(managed)
            .ok_or_else(|| GrantError::NoSuchEntity { what: arn.into() })
    }

    async fn policy_document(&self, arn: &str, version: &str) -> GrantResult<String> {
        let out = self
            .iam
            .get_policy_version()
            .policy_arn(arn)
            .version_id(version)
            .send()
            .await
            .map_err(|e| fail("iam:GetPolicyVersion", e))?;
        out.policy_version()
            .and_then(|v| v.document())
            .map(str::to_string)
            .ok_or_else(|| GrantError::NoSuchEntity {
                what: format!("{arn} version {version}"),
            })
    }

    async fn list_versions(&self, arn: &str) -> GrantResult<Vec<PolicyVersion>> {
        let out = self
            .iam
            .list_policy_versions()
            .policy_arn(arn)
            .send()
            .await
            .map_err(|e| fail("iam:ListPolicyVersions", e))?;
        Ok(out
            .versions()
            .iter()
            .map(|v| PolicyVersion {
                id: v.version_id().unwrap_or_default().to_string(),
                is_default: v.is_default_version(),
                created: v.create_date().map(|d| d.secs()).unwrap_or_default(),
            })
            .collect())
    }

    async fn create_policy(
        &self,
        name: &str,
        path: &str,
        document: &str,
        description: &str,
    ) -> GrantResult<ManagedPolicy> {
        let out = self
            .iam
            .create_policy()
            .policy_name(name)
            .path(path)
            .policy_document(document)
            .description(description)
            .send()
            .await
            .map_err(|e| fail("iam:CreatePolicy", e))?;
        out.policy()
            .map(managed)
            .ok_or_else(|| GrantError::Invalid {
                message: format!("CreatePolicy {name} returned no policy"),
            })
    }

    async fn create_version(&self, arn: &str, document: &str) -> GrantResult<String> {
        let out = self
            .iam
            .create_policy_version()
            .policy_arn(arn)
            .policy_document(document)
            .set_as_default(true)
            .send()
            .await
            .map_err(|e| fail("iam:CreatePolicyVersion", e))?;
        Ok(out
            .policy_version()
            .and_then(|v| v.version_id())
            .unwrap_or_default()
            .to_string())
    }

    async fn delete_version(&self, arn: &str, version: &str) -> GrantResult<()> {
        self.iam
            .delete_policy_version()
            .policy_arn(arn)
            .version_id(version)
            .send()
            .await
            .map_err(|e| fail("iam:DeletePolicyVersion", e))?;
        Ok(())
    }

    async fn delete_policy(&self, arn: &str) -> GrantResult<()> {
        self.iam
            .delete_policy()
            .policy_arn(arn)
            .send()
            .await
            .map_err(|e| fail("iam:DeletePolicy", e))?;
        Ok(())
    }

    async fn attach(&self, who: &Grantee, arn: &str) -> GrantResult<()> {
        let name = who.name.as_str();
        match who.kind {
            GranteeKind::User => self
                .iam
                .attach_user_policy()
                .user_name(name)
                .policy_arn(arn)
                .send()
                .await
                .map(drop)
                .map_err(|e| fail("iam:AttachUserPolicy", e)),
            GranteeKind::Role => self
                .iam
                .attach_role_policy()
                .role_name(name)
                .policy_arn(arn)
                .send()
                .await
                .map(drop)
                .map_err(|e| fail("iam:AttachRolePolicy", e)),
            GranteeKind::Group => self
                .iam
                .attach_group_policy()
                .group_name(name)
                .policy_arn(arn)
                .send()
                .await
                .map(drop)
                .map_err(|e| fail("iam:AttachGroupPolicy", e)),
        }
    }

    async fn detach(&self, who: &Grantee, arn: &str) -> GrantResult<()> {
        let name = who.name.as_str();
        match who.kind {
            GranteeKind::User => self
                .iam
                .detach_user_policy()
                .user_name(name)
                .policy_arn(arn)
                .send()
                .await
                .map(drop)
                .map_err(|e| fail("iam:DetachUserPolicy", e)),
            GranteeKind::Role => self
                .iam
                .detach_role_policy()
                .role_name(name)
                .policy_arn(arn)
                .send()
                .await
                .map(drop)
                .map_err(|e| fail("iam:DetachRolePolicy", e)),
            GranteeKind::Group => self
                .iam
                .detach_group_policy()
                .group_name(name)
                .policy_arn(arn)
                .send()
                .await
                .map(drop)
                .map_err(|e| fail("iam:DetachGroupPolicy", e)),
        }
    }

    async fn put_boundary(&self, who: &Grantee, arn: &str) -> GrantResult<()> {
        let name = who.name.as_str();
        match who.kind {
            GranteeKind::User => self
                .iam
                .put_user_permissions_boundary()
                .user_name(name)
                .permissions_boundary(arn)
                .send()
                .await
                .map(drop)
                .map_err(|e| fail("iam:PutUserPermissionsBoundary", e)),
            GranteeKind::Role => self
                .iam
                .put_role_permissions_boundary()
                .role_name(name)
                .permissions_boundary(arn)
                .send()
                .await
                .map(drop)
                .map_err(|e| fail("iam:PutRolePermissionsBoundary", e)),
            GranteeKind::Group => Err(GrantError::Invalid {
                message: format!("group {name}: IAM groups have no permissions boundary"),
            }),
        }
    }
}
