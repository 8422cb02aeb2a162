//! The grant logic over a [`GrantService`]: which policy a new grant goes
//! into, when a new policy is needed, IAM's limits, and keeping grants in
//! step with renames, deletes and re-keys.
//!
//! IAM has no compare-and-swap, so every change re-reads the grantee's
//! policies just before writing them, and changes made by this process are
//! serialised. Two processes granting to one grantee in the same instant can
//! still lose one update (docs/SHARING.md says so, and `sealfs shares` shows
//! the truth).

use super::admit::Principal;
use super::expiry::Until;
use super::grantee::{Grantee, GranteeKind, Named};
use super::log::{GrantAction, GrantChange, GrantLog};
use super::policy::{GrantDoc, SharedFile, POLICY_SIZE_LIMIT};
use super::BoundaryCheck;
use super::{GrantError, GrantService, ManagedPolicy, POLICY_PATH};
use crate::error::{Error, Result};
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

#[derive(Clone, Debug)]
pub struct GrantSettings {
    /// Managed policies IAM lets one user or role have attached: 10 by
    /// default, up to 20 when the account's quota has been raised. (A
    /// group's 10 cannot be raised.)
    pub attached_policy_limit: usize,
    pub policy_size_limit: usize,
    /// Versions IAM keeps per managed policy.
    pub version_limit: usize,
    /// How long rename and delete trust their index of every grant.
    pub index_ttl: Duration,
    /// How long `getfattr -n user.share` and revoke-all trust it.
    pub query_ttl: Duration,
    /// The permissions boundary a grantee must carry.
    pub boundary: BoundaryCheck,
}

impl Default for GrantSettings {
    fn default() -> Self {
        GrantSettings {
            attached_policy_limit: 10,
            policy_size_limit: POLICY_SIZE_LIMIT,
            version_limit: 5,
            index_ttl: Duration::from_secs(10),
            query_ttl: Duration::from_secs(1),
            boundary: BoundaryCheck::Standard,
        }
    }
}

/// IAM's limit on managed policies attached to a group, not raisable.
pub const GROUP_POLICY_LIMIT: usize = 10;

/// One sealfs grant policy and what it grants.
#[derive(Clone, Debug)]
pub(super) struct GrantPolicy {
    pub policy: ManagedPolicy,
    pub grantee: Grantee,
    pub doc: GrantDoc,
}

type Index = Arc<Vec<GrantPolicy>>;

pub struct Grants {
    pub(super) iam: Arc<dyn GrantService>,
    pub(super) settings: GrantSettings,
    /// Who calls IAM (from STS, asked once).
    caller: tokio::sync::OnceCell<super::Caller>,
    pub(super) write_lock: tokio::sync::Mutex<()>,
    index: Mutex<Option<(Instant, Index)>>,
    /// What time it is, for grants' ends (a test turns it forward).
    pub(super) clock: Clock,
    /// Where each change of access is recorded once IAM has it.
    log: Option<Arc<dyn GrantLog>>,
}

/// What [`Grants::edit_grantee`] did to a grantee's policies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Edited {
    /// Policies the edit changed.
    pub edited: usize,
    /// Policies written (edited, or holding ended statements, pruned).
    pub written: usize,
}

/// The wall clock the ends of grants are compared with.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

impl Grants {
    pub fn new(iam: Arc<dyn GrantService>, settings: GrantSettings) -> Self {
        Grants {
            iam,
            settings,
            caller: tokio::sync::OnceCell::new(),
            write_lock: tokio::sync::Mutex::new(()),
            index: Mutex::new(None),
            clock: Arc::new(SystemTime::now),
            log: None,
        }
    }

    /// The same grants, recording every change of access in `log`.
    pub fn with_log(mut self, log: Arc<dyn GrantLog>) -> Self {
        self.log = Some(log);
        self
    }

    /// Records changes IAM now has. A failure to record does not undo them
    /// (the access changed; saying otherwise would mislead): it is logged,
    /// with the changes, so that the record survives in the log.
    pub(super) async fn logged(&self, changes: Vec<GrantChange>) {
        let Some(log) = &self.log else { return };
        if changes.is_empty() {
            return;
        }
        let actor = match self.caller().await {
            Ok(c) => c.arn.clone(),
            Err(_) => "unknown".to_string(),
        };
        if let Err(e) = log.record(&actor, &changes).await {
            tracing::error!(
                error = %e,
                changes = ?changes,
                "grants changed, but their audit entries could not be written"
            );
        }
    }

    /// The same grants judged by another clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn service(&self) -> &Arc<dyn GrantService> {
        &self.iam
    }

    /// `who` as written: `alice`, `role/NAME`, `group/NAME`, or an ARN.
    fn parse(who: &str) -> Result<Named> {
        Grantee::parse(who).map_err(Error::InvalidArgument)
    }

    pub(super) async fn caller(&self) -> Result<&super::Caller> {
        Ok(self
            .caller
            .get_or_try_init(|| async { self.iam.caller().await })
            .await?)
    }

    async fn sharer(&self) -> Result<String> {
        Ok(self.caller().await?.display_name())
    }

    /// Reads one policy's default document; `None` when it is not a sealfs grant policy.
    async fn read(&self, policy: ManagedPolicy) -> Result<Option<GrantPolicy>> {
        let Some(grantee) = Grantee::of_policy_path(&policy.path) else {
            return Ok(None);
        };
        let text = self
            .iam
            .policy_document(&policy.arn, &policy.default_version)
            .await?;
        match GrantDoc::parse(&text) {
            Ok(doc) => Ok(Some(GrantPolicy {
                policy,
                grantee,
                doc,
            })),
            Err(reason) => {
                tracing::debug!(policy = %policy.arn, "not a sealfs grant policy, left alone: {reason}");
                Ok(None)
            }
        }
    }

    pub(super) async fn read_all(&self, policies: Vec<ManagedPolicy>) -> Result<Vec<GrantPolicy>> {
        let read: Vec<Option<GrantPolicy>> = futures::stream::iter(policies)
            .map(|p| self.read(p))
            .buffered(8)
            .try_collect()
            .await?;
        Ok(read.into_iter().flatten().collect())
    }

    /// The grantee's policies, read now (listing by path prefix also
    /// returns those of longer paths: `/sealfs/role/` lists every role's).
    async fn policies_of(&self, grantee: &Grantee) -> Result<Vec<GrantPolicy>> {
        let listed = self.iam.list_policies(&grantee.policy_path()).await?;
        Ok(self
            .read_all(listed)
            .await?
            .into_iter()
            .filter(|p| p.grantee == *grantee)
            .collect())
    }

    /// Every sealfs grant in the account, at most `max_age` old.
    pub(super) async fn index(&self, max_age: Duration) -> Result<Index> {
        if let Some((at, idx)) = self.index.lock().as_ref() {
            if at.elapsed() < max_age {
                return Ok(idx.clone());
            }
        }
        let listed = self.iam.list_policies(POLICY_PATH).await?;
        let idx = Arc::new(self.read_all(listed).await?);
        *self.index.lock() = Some((Instant::now(), idx.clone()));
        Ok(idx)
    }

    /// Records a policy this process just wrote (`None`: deleted) in the
    /// cached index, so that its own changes never cost a full re-read.
    fn note(&self, grantee: &Grantee, policy: &ManagedPolicy, doc: Option<&GrantDoc>) {
        let mut slot = self.index.lock();
        let Some((at, idx)) = slot.as_ref() else {
            return;
        };
        let mut v: Vec<GrantPolicy> = idx
            .iter()
            .filter(|p| p.policy.arn != policy.arn)
            .cloned()
            .collect();
        if let Some(doc) = doc {
            v.push(GrantPolicy {
                policy: policy.clone(),
                grantee: grantee.clone(),
                doc: doc.clone(),
            });
        }
        *slot = Some((*at, Arc::new(v)));
    }

    /// Writes `doc` as the policy's new default version, pruning the oldest
    /// version when IAM's limit is reached; an empty document deletes the policy.
    async fn write(&self, p: &GrantPolicy, doc: &GrantDoc) -> Result<()> {
        let arn = &p.policy.arn;
        if doc.is_empty() {
            let versions = self.iam.list_versions(arn).await?;
            match self.iam.detach(&p.grantee, arn).await {
                Ok(()) | Err(GrantError::NoSuchEntity { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            for v in versions.iter().filter(|v| !v.is_default) {
                self.iam.delete_version(arn, &v.id).await?;
            }
            self.iam.delete_policy(arn).await?;
            self.note(&p.grantee, &p.policy, None);
            tracing::info!(policy = %arn, grantee = %p.grantee, "grant policy emptied and deleted");
            return Ok(());
        }
        super::replace_default_version(
            self.iam.as_ref(),
            arn,
            &doc.render(),
            self.settings.version_limit,
        )
        .await?;
        self.note(&p.grantee, &p.policy, Some(doc));
        Ok(())
    }

    /// Grants `who` (as written) read access to `file`, without an end.
    /// Idempotent.
    pub async fn share(&self, who: &str, file: &SharedFile) -> Result<Principal> {
        self.share_until(&Self::parse(who)?, file, None).await
    }

    /// How many managed policies IAM lets `grantee` have attached.
    fn attach_limit(&self, grantee: &Grantee) -> usize {
        match grantee.kind {
            GranteeKind::Group => GROUP_POLICY_LIMIT,
            _ => self.settings.attached_policy_limit,
        }
    }

    /// Grants `who` read access to `file` until `until` (`None`: no end).
    /// Sharing again replaces the end this sharer gave; the same grant
    /// again writes nothing. Statements of this grantee that have ended are
    /// pruned whenever its policies are written.
    pub async fn share_until(
        &self,
        who: &Named,
        file: &SharedFile,
        until: Option<Until>,
    ) -> Result<Principal> {
        let principal = self.admit(who).await?;
        let grantee = &principal.grantee;
        let sharer = self.sharer().await?;
        let _w = self.write_lock.lock().await;
        let policies = self.policies_of(grantee).await?;
        let attached: Vec<String> = self
            .iam
            .list_attached(grantee)
            .await?
            .into_iter()
            .map(|(_, arn)| arn)
            .collect();
        if let Some(p) = policies
            .iter()
            .find(|p| p.doc.has_grant(&sharer, file, until))
        {
            if !attached.contains(&p.policy.arn) {
                self.iam.attach(grantee, &p.policy.arn).await?;
            }
            return Ok(principal);
        }
        // This sharer's other grants of the file (another end) and ended
        // statements go; the new grant goes into the first policy with room.
        let now = (self.clock)();
        let mut docs: Vec<GrantDoc> = policies
            .iter()
            .map(|p| {
                let mut d = p.doc.clone();
                d.prune_ended(now);
                d.withdraw(&sharer, file);
                d
            })
            .collect();
        let placed = docs.iter_mut().position(|d| {
            let mut t = d.clone();
            t.add_until(&sharer, file, until);
            let fits = t.size() <= self.settings.policy_size_limit;
            if fits {
                *d = t;
            }
            fits
        });
        // The policy that gains the grant is written first, so that moving
        // a grant never leaves a moment without it.
        let mut order: Vec<usize> = (0..policies.len()).collect();
        if let Some(i) = placed {
            order.retain(|&j| j != i);
            order.insert(0, i);
        }
        let mut freed = 0;
        for i in order {
            if docs[i] != policies[i].doc {
                self.write(&policies[i], &docs[i]).await?;
                if docs[i].is_empty() && attached.contains(&policies[i].policy.arn) {
                    freed += 1;
                }
            }
        }
        let shared = || {
            vec![
                GrantChange::new(GrantAction::Share, &file.bucket, &file.key, grantee)
                    .file_id(&file.file_id)
                    .until(until),
            ]
        };
        if let Some(i) = placed {
            if !attached.contains(&policies[i].policy.arn) {
                self.iam.attach(grantee, &policies[i].policy.arn).await?;
            }
            self.logged(shared()).await;
            return Ok(principal);
        }
        let in_use = attached.len() - freed;
        let limit = self.attach_limit(grantee);
        if in_use >= limit {
            let remedy = match grantee.kind {
                GranteeKind::Group => "unshare files (IAM's limit for groups cannot be raised)",
                _ => "unshare files, or raise the account's quota and pass --iam-policy-limit",
            };
            return Err(Error::posix(
                libc::ENOSPC,
                format!(
                    "cannot share {} with {}: IAM limit reached: it has {} of the {} managed \
                     policies IAM allows per {} attached, and its {} sealfs grant \
                     {} full ({} characters each); {remedy}",
                    file.arn(),
                    grantee,
                    in_use,
                    limit,
                    grantee.kind.as_str(),
                    policies.len(),
                    if policies.len() == 1 {
                        "policy is"
                    } else {
                        "policies are"
                    },
                    self.settings.policy_size_limit,
                ),
            ));
        }
        let mut doc = GrantDoc::default();
        doc.add_until(&sharer, file, until);
        let live: Vec<GrantPolicy> = policies
            .iter()
            .zip(&docs)
            .filter(|(_, d)| !d.is_empty())
            .map(|(p, _)| p.clone())
            .collect();
        let created = self.create_policy(grantee, &live, &doc).await?;
        if let Err(e) = self.iam.attach(grantee, &created.arn).await {
            // Leave nothing half-made behind.
            if let Err(d) = self.iam.delete_policy(&created.arn).await {
                tracing::warn!(policy = %created.arn, "could not delete an unattached grant policy: {d}");
            }
            return Err(e.into());
        }
        self.note(grantee, &created, Some(&doc));
        tracing::info!(policy = %created.arn, %grantee, "new grant policy");
        self.logged(shared()).await;
        Ok(principal)
    }

    /// Creates the grantee's next policy, named `sealfs-<grantee>-<n>`
    /// (`sealfs-role-<role>-<n>`, `sealfs-group-<group>-<n>`) with the
    /// smallest free n (names are unique in the whole account, so a taken
    /// one is skipped).
    async fn create_policy(
        &self,
        grantee: &Grantee,
        existing: &[GrantPolicy],
        doc: &GrantDoc,
    ) -> Result<ManagedPolicy> {
        let taken: Vec<&str> = existing.iter().map(|p| p.policy.name.as_str()).collect();
        let mut names = (1..)
            .map(|n| grantee.policy_name(n))
            .filter(|n| !taken.contains(&n.as_str()));
        let mut attempts = 0;
        loop {
            let name = names.next().expect("endless names");
            match self
                .iam
                .create_policy(
                    &name,
                    &grantee.policy_path(),
                    &doc.render(),
                    &format!("Files shared with {grantee} through sealfs, managed by sealfs"),
                )
                .await
            {
                Err(GrantError::AlreadyExists { .. }) if attempts < 32 => attempts += 1,
                other => return Ok(other?),
            }
        }
    }

    /// Revokes `who`'s (as written) access to `file`. Idempotent.
    pub async fn unshare(&self, who: &str, file: &SharedFile) -> Result<Grantee> {
        self.unshare_named(&Self::parse(who)?, file).await
    }

    /// Revokes `who`'s access to `file` (by object and by file id).
    /// Idempotent, and works for a grantee IAM no longer has: its grant
    /// policies are found by their path.
    pub async fn unshare_named(&self, who: &Named, file: &SharedFile) -> Result<Grantee> {
        let _w = self.write_lock.lock().await;
        let e = self
            .edit_grantee(&who.grantee, |d| d.remove(&file.arn(), Some(&file.file_id)))
            .await?;
        if e.edited > 0 {
            self.logged(vec![Self::revoked(file, &who.grantee)]).await;
        }
        Ok(who.grantee.clone())
    }

    fn revoked(file: &SharedFile, grantee: &Grantee) -> GrantChange {
        GrantChange::new(GrantAction::Unshare, &file.bucket, &file.key, grantee)
            .file_id(&file.file_id)
    }

    /// Revokes every grant of `file`; returns who lost access.
    pub async fn unshare_all(&self, file: &SharedFile) -> Result<Vec<Grantee>> {
        let who = self.grantees(file).await?;
        self.edit_each(
            &who,
            |d| d.remove(&file.arn(), Some(&file.file_id)),
            |g| Self::revoked(file, g),
        )
        .await?;
        Ok(who)
    }

    /// Applies `edit` to each of `who`'s policies under the write lock, and
    /// records `change` for each grantee the edit changed: on success, and
    /// on a failure for those done before it.
    pub(super) async fn edit_each(
        &self,
        who: &[Grantee],
        edit: impl Fn(&mut GrantDoc) -> bool,
        change: impl Fn(&Grantee) -> GrantChange,
    ) -> Result<()> {
        let _w = self.write_lock.lock().await;
        let mut changes = Vec::new();
        for g in who {
            match self.edit_grantee(g, &edit).await {
                Ok(e) if e.edited > 0 => changes.push(change(g)),
                Ok(_) => {}
                Err(e) => {
                    self.logged(changes).await;
                    return Err(e);
                }
            }
        }
        self.logged(changes).await;
        Ok(())
    }

    /// Applies `edit` to each of the grantee's policies (read fresh) and
    /// writes those it changed, or that held ended statements (pruned).
    /// Callers hold the write lock.
    pub(super) async fn edit_grantee(
        &self,
        grantee: &Grantee,
        edit: impl Fn(&mut GrantDoc) -> bool,
    ) -> Result<Edited> {
        let now = (self.clock)();
        let mut done = Edited::default();
        for p in self.policies_of(grantee).await? {
            let mut doc = p.doc.clone();
            let pruned = doc.prune_ended(now);
            let edited = edit(&mut doc);
            if edited | pruned {
                self.write(&p, &doc).await?;
                done.written += 1;
                done.edited += usize::from(edited);
            }
        }
        Ok(done)
    }

    /// [`Grants::edit_grantee`] under the write lock.
    pub(super) async fn edit_grantee_locked(
        &self,
        grantee: &Grantee,
        edit: impl Fn(&mut GrantDoc) -> bool,
    ) -> Result<Edited> {
        let _w = self.write_lock.lock().await;
        self.edit_grantee(grantee, edit).await
    }

    /// Prunes every ended statement of every sealfs grant policy in the
    /// account (`sealfs shares --prune-ended`); returns how many policies
    /// changed. AWS stopped honouring them at their end: this frees their
    /// room and keeps `sealfs shares` short.
    pub async fn prune_ended(&self) -> Result<usize> {
        let _w = self.write_lock.lock().await;
        let listed = self.iam.list_policies(POLICY_PATH).await?;
        let now = (self.clock)();
        let mut changed = 0;
        for p in self.read_all(listed).await? {
            let mut doc = p.doc.clone();
            if doc.prune_ended(now) {
                self.write(&p, &doc).await?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Who `file` is shared with, read from IAM (at most `query_ttl` ago,
    /// so a getfattr's size probe and read cost one look).
    pub async fn grantees(&self, file: &SharedFile) -> Result<Vec<Grantee>> {
        let idx = self.index(self.settings.query_ttl).await?;
        let mut who: Vec<Grantee> = idx
            .iter()
            .filter(|p| p.doc.grants(file))
            .map(|p| p.grantee.clone())
            .collect();
        who.sort();
        who.dedup();
        Ok(who)
    }

    /// Who can read `file` now and until when (`None`: no end), read from
    /// IAM at most `query_ttl` ago: what `getfattr -n user.share` shows.
    /// Ended grants are left out (AWS no longer honours them).
    pub async fn grants_of(&self, file: &SharedFile) -> Result<Vec<(Grantee, Option<Until>)>> {
        let idx = self.index(self.settings.query_ttl).await?;
        let now = (self.clock)();
        let mut ends: std::collections::BTreeMap<Grantee, Option<Until>> = Default::default();
        for p in idx.iter() {
            if let Some(until) = p.doc.granted_until(file, now) {
                let e = ends.entry(p.grantee.clone()).or_insert(until);
                // No end beats any end; else the later end.
                if e.is_some() && (until.is_none() || until > *e) {
                    *e = until;
                }
            }
        }
        Ok(ends.into_iter().collect())
    }

    /// The documents of the grantee's grant policies (for tests and `sealfs shares -v`).
    pub async fn documents_of(&self, grantee: &str) -> Result<Vec<(String, GrantDoc)>> {
        Ok(self
            .policies_of(&Self::parse(grantee)?.grantee)
            .await?
            .into_iter()
            .map(|p| (p.policy.name, p.doc))
            .collect())
    }
}
