//! An in-memory IAM with the limits that shape the grant logic: 6,144
//! characters per policy, 5 versions, 10 attached managed policies per user,
//! unique policy names, and denial of chosen actions.

use super::{Caller, GrantError, GrantResult, GrantService, ManagedPolicy, PolicyVersion, User};
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
    boundaries: BTreeMap<String, String>,
    /// The owner policy's rules, when enforced: /sealfs/ policies attach
    /// only to users carrying this boundary, and never to the caller.
    required_boundary: Option<String>,
    policies: BTreeMap<String, Policy>,
    attached: BTreeMap<String, Vec<String>>,
    denied: HashSet<&'static str>,
    clock: i64,
    calls: u64,
}

pub struct FakeIam {
    caller: Mutex<String>,
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
        let boundary = format!(
            "arn:aws:iam::{ACCOUNT}:policy{}{}",
            super::BOUNDARY_PATH,
            super::BOUNDARY_NAME
        );
        st.boundaries = users
            .iter()
            .map(|u| (u.to_string(), boundary.clone()))
            .collect();
        FakeIam {
            caller: Mutex::new(caller.to_string()),
            attach_limit: 10,
            state: Mutex::new(st),
        }
    }

    /// Who makes the calls from now on (another user's credentials).
    pub fn set_caller(&self, name: &str) {
        *self.caller.lock() = name.to_string();
    }

    /// Enforces what `sealfs policy owner` asks of IAM: grant policies are
    /// attached only to users whose permissions boundary is `boundary`, and
    /// never to the caller.
    pub fn enforce_owner_policy(&self, boundary: &str) {
        self.state.lock().required_boundary = Some(boundary.to_string());
    }

    /// Removes a user's permissions boundary (a user never set up as a grantee).
    pub fn clear_boundary(&self, user: &str) {
        self.state.lock().boundaries.remove(user);
    }

    /// Makes every call of `action` (e.g. "iam:CreatePolicy") fail with AccessDenied.
    pub fn deny(&self, action: &'static str) {
        self.state.lock().denied.insert(action);
    }

    /// Attaches a policy that is not sealfs's (to use up a user's quota).
    pub fn attach_foreign(&self, user: &str, name: &str) {
        let arn = format!("arn:aws:iam::{ACCOUNT}:policy/{name}");
        let mut st = self.state.lock();
        st.attached.entry(user.into()).or_default().push(arn);
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
        let st = self.state.lock();
        st.attached.get(user).cloned().unwrap_or_default()
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
        Ok(Caller {
            arn: user_arn(&self.caller.lock()),
            account: ACCOUNT.into(),
        })
    }

    async fn get_user(&self, name: &str) -> GrantResult<User> {
        let st = self.begin("iam:GetUser")?;
        if !st.users.contains(name) {
            return Err(missing(format!("user {name}")));
        }
        Ok(User {
            name: name.into(),
            arn: user_arn(name),
            boundary: st.boundaries.get(name).cloned(),
        })
    }

    async fn list_attached(&self, user: &str) -> GrantResult<Vec<(String, String)>> {
        let st = self.begin("iam:ListAttachedUserPolicies")?;
        Ok(st
            .attached
            .get(user)
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

    async fn put_user_boundary(&self, user: &str, arn: &str) -> GrantResult<()> {
        let mut st = self.begin("iam:PutUserPermissionsBoundary")?;
        if !st.users.contains(user) {
            return Err(missing(format!("user {user}")));
        }
        if st.required_boundary.is_some() {
            return Err(GrantError::AccessDenied {
                action: "iam:PutUserPermissionsBoundary",
                message: "explicit deny: owners do not change boundaries".into(),
            });
        }
        st.boundaries.insert(user.into(), arn.into());
        Ok(())
    }

    async fn attach(&self, user: &str, arn: &str) -> GrantResult<()> {
        let mut st = self.begin("iam:AttachUserPolicy")?;
        if !st.users.contains(user) {
            return Err(missing(format!("user {user}")));
        }
        if !st.policies.contains_key(arn) {
            return Err(missing(arn));
        }
        if let Some(required) = &st.required_boundary {
            let grant = arn.contains(&format!(":policy{}", super::POLICY_PATH));
            if grant && *user == *self.caller.lock() {
                return Err(GrantError::AccessDenied {
                    action: "iam:AttachUserPolicy",
                    message: "explicit deny: a grant policy on the caller itself".into(),
                });
            }
            if grant && st.boundaries.get(user) != Some(required) {
                return Err(GrantError::AccessDenied {
                    action: "iam:AttachUserPolicy",
                    message: format!("{user} does not carry the permissions boundary {required}"),
                });
            }
        }
        let limit = self.attach_limit;
        let list = st.attached.entry(user.into()).or_default();
        if list.iter().any(|a| a == arn) {
            return Ok(());
        }
        if list.len() >= limit {
            return Err(GrantError::LimitExceeded {
                message: format!("Cannot exceed quota for PoliciesPerUser: {limit}"),
            });
        }
        list.push(arn.into());
        Ok(())
    }

    async fn detach(&self, user: &str, arn: &str) -> GrantResult<()> {
        let mut st = self.begin("iam:DetachUserPolicy")?;
        let list = st.attached.entry(user.into()).or_default();
        let before = list.len();
        list.retain(|a| a != arn);
        if list.len() == before {
            return Err(missing(format!("{arn} attached to {user}")));
        }
        Ok(())
    }
}
