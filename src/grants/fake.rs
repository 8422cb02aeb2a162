//! An in-memory IAM with the limits that shape the grant logic: 6,144
//! characters per policy, 5 versions, 10 attached managed policies per user,
//! role or group, unique policy names, and denial of chosen actions; users,
//! roles (callable as a session of one) and groups with members.

use super::grantee::{Grantee, GranteeKind};
use super::{
    Caller, GrantError, GrantResult, GrantService, Group, Identity, ManagedPolicy, PolicyVersion,
};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashSet};

const ACCOUNT: &str = "123456789012";

#[derive(Default)]
struct Policy {
    name: String,
    path: String,
    versions: Vec<(String, String, i64)>,
    default: String,
    next_version: u32,
}

#[derive(Default)]
struct State {
    users: BTreeSet<String>,
    roles: BTreeSet<String>,
    /// Groups by name: their IAM path and members.
    groups: BTreeMap<String, (String, BTreeSet<String>)>,
    boundaries: BTreeMap<Grantee, String>,
    /// The owner policy's rules, when enforced: /sealfs/ policies attach
    /// only to users and roles carrying this boundary, and to groups at the
    /// IAM path /sealfs/, and never to the caller (or the caller's role).
    required_boundary: Option<String>,
    policies: BTreeMap<String, Policy>,
    attached: BTreeMap<Grantee, Vec<String>>,
    denied: HashSet<&'static str>,
    clock: i64,
    calls: u64,
}

pub struct FakeIam {
    /// Who calls: a user, or a session of a role.
    caller: Mutex<Grantee>,
    attach_limit: usize,
    state: Mutex<State>,
}

impl FakeIam {
    /// An IAM where `caller` (a user name) makes the calls and `users` exist.
    pub fn new(caller: &str, users: &[&str]) -> Self {
        let mut st = State::default();
        st.users.insert(caller.to_string());
        st.users.extend(users.iter().map(|u| u.to_string()));
        // A correctly set-up account: every grantee carries the boundary.
        let boundary = standard_boundary();
        st.boundaries = users
            .iter()
            .map(|u| (Grantee::user(u), boundary.clone()))
            .collect();
        FakeIam {
            caller: Mutex::new(Grantee::user(caller)),
            attach_limit: 10,
            state: Mutex::new(st),
        }
    }

    /// Who makes the calls from now on (another user's credentials).
    pub fn set_caller(&self, name: &str) {
        *self.caller.lock() = Grantee::user(name);
    }

    /// The calls from now on come from a session of `role`.
    pub fn assume_role(&self, role: &str) {
        *self.caller.lock() = Grantee {
            kind: GranteeKind::Role,
            name: role.to_string(),
        };
    }

    /// A role carrying the sealfs boundary.
    pub fn add_role(&self, name: &str) {
        let mut st = self.state.lock();
        st.roles.insert(name.to_string());
        st.boundaries
            .insert(role_grantee(name), standard_boundary());
    }

    /// A group at IAM path `path` (`/sealfs/` for groups meant for sharing)
    /// with existing users as members.
    pub fn add_group(&self, name: &str, path: &str, members: &[&str]) {
        let mut st = self.state.lock();
        let members = members.iter().map(|m| m.to_string()).collect();
        st.groups
            .insert(name.to_string(), (path.to_string(), members));
    }

    /// Enforces what `sealfs policy owner` asks of IAM: grant policies are
    /// attached only to users whose permissions boundary is `boundary`, and
    /// never to the caller.
    pub fn enforce_owner_policy(&self, boundary: &str) {
        self.state.lock().required_boundary = Some(boundary.to_string());
    }

    /// Removes a user's permissions boundary (a user never set up as a grantee).
    pub fn clear_boundary(&self, user: &str) {
        self.state.lock().boundaries.remove(&Grantee::user(user));
    }

    /// Removes a role's permissions boundary.
    pub fn clear_role_boundary(&self, role: &str) {
        self.state.lock().boundaries.remove(&role_grantee(role));
    }

    /// Makes every call of `action` (e.g. "iam:CreatePolicy") fail with AccessDenied.
    pub fn deny(&self, action: &'static str) {
        self.state.lock().denied.insert(action);
    }

    /// Attaches a policy that is not sealfs's (to use up a user's quota).
    pub fn attach_foreign(&self, user: &str, name: &str) {
        self.attach_foreign_to(&Grantee::user(user), name);
    }

    /// Attaches a policy that is not sealfs's to a user, role or group.
    pub fn attach_foreign_to(&self, who: &Grantee, name: &str) {
        let arn = format!("arn:aws:iam::{ACCOUNT}:policy/{name}");
        let mut st = self.state.lock();
        st.attached.entry(who.clone()).or_default().push(arn);
    }

    /// Every policy name with its version count.
    pub fn policies(&self) -> Vec<(String, usize)> {
        let st = self.state.lock();
        st.policies
            .values()
            .map(|p| (p.name.clone(), p.versions.len()))
            .collect()
    }

    pub fn attached_to(&self, user: &str) -> Vec<String> {
        self.attached_to_grantee(&Grantee::user(user))
    }

    pub fn attached_to_grantee(&self, who: &Grantee) -> Vec<String> {
        let st = self.state.lock();
        st.attached.get(who).cloned().unwrap_or_default()
    }

    pub fn calls(&self) -> u64 {
        self.state.lock().calls
    }

    fn begin(&self, action: &'static str) -> GrantResult<parking_lot::MutexGuard<'_, State>> {
        let mut st = self.state.lock();
        st.calls += 1;
        st.clock += 1;
        if st.denied.contains(action) {
            return Err(GrantError::AccessDenied {
                action,
                message: format!(
                    "{} is not authorized to perform {action}",
                    self.caller.lock()
                ),
            });
        }
        Ok(st)
    }
}

fn user_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/{name}")
}

fn standard_boundary() -> String {
    format!(
        "arn:aws:iam::{ACCOUNT}:policy{}{}",
        super::BOUNDARY_PATH,
        super::BOUNDARY_NAME
    )
}

fn role_grantee(name: &str) -> Grantee {
    Grantee {
        kind: GranteeKind::Role,
        name: name.to_string(),
    }
}

impl State {
    fn exists(&self, who: &Grantee) -> bool {
        match who.kind {
            GranteeKind::User => self.users.contains(&who.name),
            GranteeKind::Role => self.roles.contains(&who.name),
            GranteeKind::Group => self.groups.contains_key(&who.name),
        }
    }
}

/// IAM's action names for attaching, detaching and listing per kind.
fn actions(kind: GranteeKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        GranteeKind::User => (
            "iam:AttachUserPolicy",
            "iam:DetachUserPolicy",
            "iam:ListAttachedUserPolicies",
        ),
        GranteeKind::Role => (
            "iam:AttachRolePolicy",
            "iam:DetachRolePolicy",
            "iam:ListAttachedRolePolicies",
        ),
        GranteeKind::Group => (
            "iam:AttachGroupPolicy",
            "iam:DetachGroupPolicy",
            "iam:ListAttachedGroupPolicies",
        ),
    }
}

fn missing(what: impl Into<String>) -> GrantError {
    GrantError::NoSuchEntity { what: what.into() }
}

fn check_size(document: &str) -> GrantResult<()> {
    let size = document.chars().filter(|c| !c.is_whitespace()).count();
    if size > super::policy::POLICY_SIZE_LIMIT {
        return Err(GrantError::LimitExceeded {
            message: "Cannot exceed quota for PolicySize: 6144".into(),
        });
    }
    Ok(())
}

fn managed(arn: &str, p: &Policy) -> ManagedPolicy {
    ManagedPolicy {
        name: p.name.clone(),
        arn: arn.to_string(),
        path: p.path.clone(),
        default_version: p.default.clone(),
    }
}

#[async_trait]
impl GrantService for FakeIam {
    async fn caller(&self) -> GrantResult<Caller> {
        let who = self.caller.lock().clone();
        let arn = match who.kind {
            GranteeKind::Role => {
                format!("arn:aws:sts::{ACCOUNT}:assumed-role/{}/session", who.name)
            }
            _ => user_arn(&who.name),
        };
        Ok(Caller {
            arn,
            account: ACCOUNT.into(),
        })
    }

    async fn get_user(&self, name: &str) -> GrantResult<Identity> {
        let st = self.begin("iam:GetUser")?;
        if !st.users.contains(name) {
            return Err(missing(format!("user {name}")));
        }
        Ok(Identity {
            name: name.into(),
            arn: user_arn(name),
            boundary: st.boundaries.get(&Grantee::user(name)).cloned(),
        })
    }

    async fn get_role(&self, name: &str) -> GrantResult<Identity> {
        let st = self.begin("iam:GetRole")?;
        if !st.roles.contains(name) {
            return Err(missing(format!("role {name}")));
        }
        Ok(Identity {
            name: name.into(),
            arn: format!("arn:aws:iam::{ACCOUNT}:role/{name}"),
            boundary: st.boundaries.get(&role_grantee(name)).cloned(),
        })
    }

    async fn get_group(&self, name: &str) -> GrantResult<Group> {
        let st = self.begin("iam:GetGroup")?;
        let (path, members) = st
            .groups
            .get(name)
            .ok_or_else(|| missing(format!("group {name}")))?;
        Ok(Group {
            name: name.into(),
            arn: format!("arn:aws:iam::{ACCOUNT}:group{path}{name}"),
            members: members.iter().cloned().collect(),
        })
    }

    async fn groups_of_user(&self, user: &str) -> GrantResult<Vec<(String, String)>> {
        let st = self.begin("iam:ListGroupsForUser")?;
        if !st.users.contains(user) {
            return Err(missing(format!("user {user}")));
        }
        Ok(st
            .groups
            .iter()
            .filter(|(_, (_, members))| members.contains(user))
            .map(|(g, (path, _))| (g.clone(), format!("arn:aws:iam::{ACCOUNT}:group{path}{g}")))
            .collect())
    }

    async fn list_attached(&self, who: &Grantee) -> GrantResult<Vec<(String, String)>> {
        let action = actions(who.kind).2;
        let st = self.begin(action)?;
        if !st.exists(who) {
            return Err(missing(who.to_string()));
        }
        // The printed policies let owners and grantees list the policies
        // of groups at /sealfs/ only.
        if who.kind == GranteeKind::Group
            && st.required_boundary.is_some()
            && st.groups[&who.name].0 != super::POLICY_PATH
        {
            return Err(GrantError::AccessDenied {
                action,
                message: format!("{who} is not at {}", super::POLICY_PATH),
            });
        }
        Ok(st
            .attached
            .get(who)
            .into_iter()
            .flatten()
            .map(|arn| {
                (
                    arn.rsplit('/').next().unwrap_or(arn).to_string(),
                    arn.clone(),
                )
            })
            .collect())
    }

    async fn list_policies(&self, path_prefix: &str) -> GrantResult<Vec<ManagedPolicy>> {
        let st = self.begin("iam:ListPolicies")?;
        Ok(st
            .policies
            .iter()
            .filter(|(_, p)| p.path.starts_with(path_prefix))
            .map(|(arn, p)| managed(arn, p))
            .collect())
    }

    async fn get_policy(&self, arn: &str) -> GrantResult<ManagedPolicy> {
        let st = self.begin("iam:GetPolicy")?;
        st.policies
            .get(arn)
            .map(|p| managed(arn, p))
            .ok_or_else(|| missing(arn))
    }

    async fn policy_document(&self, arn: &str, version: &str) -> GrantResult<String> {
        let st = self.begin("iam:GetPolicyVersion")?;
        let p = st.policies.get(arn).ok_or_else(|| missing(arn))?;
        p.versions
            .iter()
            .find(|(id, _, _)| id == version)
            .map(|(_, d, _)| d.clone())
            .ok_or_else(|| missing(format!("{arn} version {version}")))
    }

    async fn list_versions(&self, arn: &str) -> GrantResult<Vec<PolicyVersion>> {
        let st = self.begin("iam:ListPolicyVersions")?;
        let p = st.policies.get(arn).ok_or_else(|| missing(arn))?;
        Ok(p.versions
            .iter()
            .map(|(id, _, created)| PolicyVersion {
                id: id.clone(),
                is_default: *id == p.default,
                created: *created,
            })
            .collect())
    }

    async fn create_policy(
        &self,
        name: &str,
        path: &str,
        document: &str,
        _description: &str,
    ) -> GrantResult<ManagedPolicy> {
        let mut st = self.begin("iam:CreatePolicy")?;
        check_size(document)?;
        if st.policies.values().any(|p| p.name == name) {
            return Err(GrantError::AlreadyExists {
                message: format!("A policy called {name} already exists"),
            });
        }
        let arn = format!("arn:aws:iam::{ACCOUNT}:policy{path}{name}");
        let now = st.clock;
        let p = Policy {
            name: name.into(),
            path: path.into(),
            versions: vec![("v1".into(), document.into(), now)],
            default: "v1".into(),
            next_version: 2,
        };
        let m = managed(&arn, &p);
        st.policies.insert(arn, p);
        Ok(m)
    }

    async fn create_version(&self, arn: &str, document: &str) -> GrantResult<String> {
        let mut st = self.begin("iam:CreatePolicyVersion")?;
        check_size(document)?;
        let now = st.clock;
        let p = st.policies.get_mut(arn).ok_or_else(|| missing(arn))?;
        if p.versions.len() >= 5 {
            return Err(GrantError::LimitExceeded {
                message: "A managed policy can have up to 5 versions".into(),
            });
        }
        let id = format!("v{}", p.next_version);
        p.next_version += 1;
        p.versions.push((id.clone(), document.into(), now));
        p.default = id.clone();
        Ok(id)
    }

    async fn delete_version(&self, arn: &str, version: &str) -> GrantResult<()> {
        let mut st = self.begin("iam:DeletePolicyVersion")?;
        let p = st.policies.get_mut(arn).ok_or_else(|| missing(arn))?;
        if p.default == version {
            return Err(GrantError::Invalid {
                message: "Cannot delete the default version of a policy".into(),
            });
        }
        p.versions.retain(|(id, _, _)| id != version);
        Ok(())
    }

    async fn delete_policy(&self, arn: &str) -> GrantResult<()> {
        let mut st = self.begin("iam:DeletePolicy")?;
        if st.attached.values().any(|a| a.iter().any(|x| x == arn)) {
            return Err(GrantError::Invalid {
                message: "Cannot delete a policy attached to entities".into(),
            });
        }
        let p = st.policies.get(arn).ok_or_else(|| missing(arn))?;
        if p.versions.len() > 1 {
            return Err(GrantError::Invalid {
                message: "Cannot delete a policy with non-default versions".into(),
            });
        }
        st.policies.remove(arn);
        Ok(())
    }

    async fn put_boundary(&self, who: &Grantee, arn: &str) -> GrantResult<()> {
        let action = match who.kind {
            GranteeKind::User => "iam:PutUserPermissionsBoundary",
            GranteeKind::Role => "iam:PutRolePermissionsBoundary",
            GranteeKind::Group => {
                return Err(GrantError::Invalid {
                    message: "groups have no permissions boundary".into(),
                })
            }
        };
        let mut st = self.begin(action)?;
        if !st.exists(who) {
            return Err(missing(who.to_string()));
        }
        if st.required_boundary.is_some() {
            return Err(GrantError::AccessDenied {
                action,
                message: "explicit deny: owners do not change boundaries".into(),
            });
        }
        st.boundaries.insert(who.clone(), arn.into());
        Ok(())
    }

    async fn attach(&self, who: &Grantee, arn: &str) -> GrantResult<()> {
        let action = actions(who.kind).0;
        let mut st = self.begin(action)?;
        if !st.exists(who) {
            return Err(missing(who.to_string()));
        }
        if !st.policies.contains_key(arn) {
            return Err(missing(arn));
        }
        if let Some(required) = &st.required_boundary {
            let grant = arn.contains(&format!(":policy{}", super::POLICY_PATH));
            let denied = |message: String| GrantError::AccessDenied { action, message };
            if grant && *who == *self.caller.lock() {
                return Err(denied(
                    "explicit deny: a grant policy on the caller itself".into(),
                ));
            }
            match who.kind {
                GranteeKind::Group => {
                    let path = &st.groups[&who.name].0;
                    if grant && path != super::POLICY_PATH {
                        return Err(denied(format!(
                            "{who} is not at the IAM path {}",
                            super::POLICY_PATH
                        )));
                    }
                }
                _ => {
                    if grant && st.boundaries.get(who) != Some(required) {
                        return Err(denied(format!(
                            "{who} does not carry the permissions boundary {required}"
                        )));
                    }
                }
            }
        }
        let limit = self.attach_limit;
        let list = st.attached.entry(who.clone()).or_default();
        if list.iter().any(|a| a == arn) {
            return Ok(());
        }
        if list.len() >= limit {
            let quota = match who.kind {
                GranteeKind::User => "PoliciesPerUser",
                GranteeKind::Role => "PoliciesPerRole",
                GranteeKind::Group => "PoliciesPerGroup",
            };
            return Err(GrantError::LimitExceeded {
                message: format!("Cannot exceed quota for {quota}: {limit}"),
            });
        }
        list.push(arn.into());
        Ok(())
    }

    async fn detach(&self, who: &Grantee, arn: &str) -> GrantResult<()> {
        let mut st = self.begin(actions(who.kind).1)?;
        let list = st.attached.entry(who.clone()).or_default();
        let before = list.len();
        list.retain(|a| a != arn);
        if list.len() == before {
            return Err(missing(format!("{arn} attached to {who}")));
        }
        Ok(())
    }
}
