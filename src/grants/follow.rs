//! Grants that follow their file: a rename moves them to the new name, a
//! delete removes them, a re-key moves them to the new file id. Each change
//! of a grantee's access is recorded in the book's [`super::log::GrantLog`].

use super::book::Grants;
use super::grantee::Grantee;
use super::log::{GrantAction, GrantChange};
use super::policy::{object_arn, GrantDoc, SharedFile};
use crate::error::Result;

/// One object the grants follow: its ARN, and the change to record for
/// each grantee whose grants mention it (its grantee is filled in then).
struct Followed {
    arn: String,
    change: GrantChange,
}

impl Grants {
    /// Applies `edit` to the policies of every grantee whose policies
    /// mention one of `objects` (found in the cached index, then re-read
    /// before writing), and records, for each grantee whose policies the
    /// edit changed, the change of each object they mentioned.
    async fn edit_mentioning(
        &self,
        objects: &[Followed],
        what: &str,
        edit: impl Fn(&mut GrantDoc) -> bool,
    ) -> Result<()> {
        let idx = self.index(self.settings.index_ttl).await?;
        let mut who: Vec<(Grantee, Vec<usize>)> = Vec::new();
        for p in idx.iter() {
            let mentioned: Vec<usize> = (0..objects.len())
                .filter(|&i| p.doc.mentions_object(&objects[i].arn))
                .collect();
            if mentioned.is_empty() {
                continue;
            }
            match who.iter_mut().find(|(g, _)| *g == p.grantee) {
                Some((_, m)) => m.extend(mentioned),
                None => who.push((p.grantee.clone(), mentioned)),
            }
        }
        if who.is_empty() {
            return Ok(());
        }
        who.sort();
        let _w = self.write_lock.lock().await;
        let mut changes = Vec::new();
        for (g, mut mentioned) in who {
            let edited = match self.edit_grantee(&g, &edit).await {
                Ok(e) => e.edited,
                Err(e) => {
                    self.logged(changes).await;
                    return Err(e);
                }
            };
            tracing::info!(grantee = %g, "grants updated: {what}");
            if edited > 0 {
                mentioned.sort_unstable();
                mentioned.dedup();
                changes.extend(mentioned.into_iter().map(|i| {
                    let mut c = objects[i].change.clone();
                    c.grantee = g.clone();
                    c
                }));
            }
        }
        self.logged(changes).await;
        Ok(())
    }

    /// Moves the grants of objects renamed from `.0` to `.1` (keys in `bucket`).
    pub async fn moved(&self, bucket: &str, moves: &[(String, String)]) -> Result<()> {
        let anyone = Grantee::user("-");
        let objects: Vec<Followed> = moves
            .iter()
            .map(|(f, t)| Followed {
                arn: object_arn(bucket, f),
                change: GrantChange::new(GrantAction::Move, bucket, f, &anyone).to(t),
            })
            .collect();
        let arns: Vec<(String, String)> = moves
            .iter()
            .map(|(f, t)| (object_arn(bucket, f), object_arn(bucket, t)))
            .collect();
        let what = format!("{} object(s) renamed", moves.len());
        self.edit_mentioning(&objects, &what, |d| {
            arns.iter()
                .fold(false, |c, (f, t)| d.rename_object(f, t) | c)
        })
        .await
    }

    /// Removes the grants of deleted objects (with their file ids when known).
    pub async fn removed(&self, bucket: &str, gone: &[(String, Option<String>)]) -> Result<()> {
        let anyone = Grantee::user("-");
        let objects: Vec<Followed> = gone
            .iter()
            .map(|(k, f)| {
                let mut change = GrantChange::new(GrantAction::Remove, bucket, k, &anyone);
                change.file_id = f.clone();
                Followed {
                    arn: object_arn(bucket, k),
                    change,
                }
            })
            .collect();
        let what = format!("{} object(s) deleted", gone.len());
        self.edit_mentioning(&objects, &what, |d| {
            objects
                .iter()
                .zip(gone)
                .fold(false, |c, (o, (_, f))| d.remove(&o.arn, f.as_deref()) | c)
        })
        .await
    }

    /// After a re-key, the file's grants follow its new file id.
    pub async fn rekeyed(&self, file: &SharedFile, new_file_id: &str) -> Result<Vec<Grantee>> {
        let who = self.grantees(file).await?;
        self.edit_each(
            &who,
            |d| d.replace_file_id(&file.file_id, new_file_id),
            |g| {
                GrantChange::new(GrantAction::Rekey, &file.bucket, &file.key, g)
                    .file_id(&file.file_id)
                    .to(new_file_id)
            },
        )
        .await?;
        Ok(who)
    }
}
