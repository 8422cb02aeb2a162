//! `sealfs grantee setup WHO s3://BUCKET/VOLUME`: what an IAM administrator
//! runs once per grantee and volume, so that owners can share with WHO and
//! nothing an owner writes into a grant can give it more than read access
//! to shared files. WHO is a user, `role/NAME` or `group/NAME`.
//!
//! 1. The account's sealfs permissions boundary (`/sealfs-boundary/`) is
//!    created, or extended to this volume's objects and KMS key.
//! 2. It becomes the user's or role's permissions boundary; for a group,
//!    every member's (a group has none: its policies reach every member).
//! 3. The user or role gets the policy to find and read its own grants
//!    (`/sealfs-grantee/`), which `sealfs shared` and `sealfs get` use; for
//!    a group, every member.

use super::policy::{boundary_document, boundary_resources, document, Role};
use crate::app::{AwsOptions, Wiring};
use crate::grants::grantee::group_may_hold_grants;
use crate::grants::policy::parse_document;
use crate::grants::{
    policy_arn, replace_default_version, GrantError, GrantService, Grantee, GranteeKind,
    BOUNDARY_NAME, BOUNDARY_PATH, GRANTEE_NAME, GRANTEE_PATH, POLICY_PATH,
};
use crate::url::S3Url;
use crate::volume;
use anyhow::Context;
use serde_json::Value;

/// Versions IAM keeps per managed policy.
const IAM_VERSION_LIMIT: usize = 5;

#[derive(clap::Subcommand, Clone, Debug)]
pub enum Action {
    /// Set WHO up to receive files of the volume at URL.
    Setup {
        /// An IAM user name, role/NAME, group/NAME, or an ARN of one.
        who: String,
        /// s3://BUCKET/PREFIX of the volume.
        url: String,
        /// The volume's KMS key ARN (default: read from the volume config).
        #[arg(long)]
        kms_key: Option<String>,
    },
}

pub async fn run(opts: &AwsOptions, action: &Action) -> anyhow::Result<()> {
    let Action::Setup { who, url, kms_key } = action;
    let url = S3Url::parse(url)?;
    let w = Wiring::new(opts, &url.bucket).await;
    let key_arn = match kms_key {
        Some(k) => k.clone(),
        None => {
            volume::load(w.store.as_ref(), w.keys.service.as_ref(), url.prefix())
                .await
                .context("reading the volume's KMS key (or pass --kms-key ARN)")?
                .kms_key_arn
        }
    };
    setup(w.grant_service.as_ref(), who, &url, &key_arn).await
}

/// Sets `who` up for the volume at `url` whose data keys are under `key_arn`.
pub async fn setup(
    iam: &dyn GrantService,
    who: &str,
    url: &S3Url,
    key_arn: &str,
) -> anyhow::Result<()> {
    let caller = iam.caller().await?;
    let boundary = policy_arn(&caller, BOUNDARY_PATH, BOUNDARY_NAME);
    let wanted = document(Role::Boundary, &url.bucket, url.prefix(), key_arn)?;
    let (objects, keys) = boundary_resources(&wanted);
    let partition = caller.arn.split(':').nth(1).unwrap_or("aws");
    match iam.get_policy(&boundary).await {
        Ok(p) => {
            let current = parse(&iam.policy_document(&boundary, &p.default_version).await?)?;
            let (mut have_objects, mut have_keys) = boundary_resources(&current);
            let before = (have_objects.len(), have_keys.len());
            have_objects.extend(objects);
            have_keys.extend(keys);
            if before != (have_objects.len(), have_keys.len()) {
                let doc = boundary_document(partition, &caller.account, &have_objects, &have_keys);
                replace_default_version(iam, &boundary, &doc.to_string(), IAM_VERSION_LIMIT)
                    .await?;
                eprintln!("extended the permissions boundary {boundary} to {url}");
            }
        }
        Err(GrantError::NoSuchEntity { .. }) => {
            iam.create_policy(
                BOUNDARY_NAME,
                BOUNDARY_PATH,
                &wanted.to_string(),
                "sealfs: the most a grantee may do (read shared files)",
            )
            .await?;
            eprintln!("created the permissions boundary {boundary}");
        }
        Err(e) => return Err(e.into()),
    }
    let grantee = Grantee::parse(who).map_err(anyhow::Error::msg)?.grantee;
    let holders = match grantee.kind {
        GranteeKind::Group => {
            let group = iam.get_group(&grantee.name).await?;
            if !group_may_hold_grants(&group.arn) {
                anyhow::bail!(
                    "{} is not at the IAM path {POLICY_PATH}: owners may attach grants only to \
                     groups there (make one with `aws iam create-group --path {POLICY_PATH} \
                     --group-name NAME`)",
                    group.arn
                );
            }
            group.members.iter().map(|m| Grantee::user(m)).collect()
        }
        _ => vec![grantee.clone()],
    };
    let reader = policy_arn(&caller, GRANTEE_PATH, GRANTEE_NAME);
    if let Err(GrantError::NoSuchEntity { .. }) = iam.get_policy(&reader).await {
        let doc = document(Role::Grantee, &url.bucket, url.prefix(), key_arn)?;
        iam.create_policy(
            GRANTEE_NAME,
            GRANTEE_PATH,
            &doc.to_string(),
            "sealfs: find and read one's own grants",
        )
        .await?;
    }
    for h in &holders {
        iam.put_boundary(h, &boundary)
            .await
            .with_context(|| format!("setting {h}'s permissions boundary"))?;
        iam.attach(h, &reader).await?;
    }
    if grantee.kind == GranteeKind::Group {
        let names: Vec<String> = holders.iter().map(|h| h.to_string()).collect();
        eprintln!(
            "{grantee} can now receive files of {url}: its members {} carry the boundary \
             {boundary} (run this again after adding members)",
            names.join(", ")
        );
    } else {
        eprintln!("{grantee} can now receive files of {url} (boundary {boundary})");
    }
    Ok(())
}

/// A policy document as IAM returns it, as JSON.
fn parse(document: &str) -> anyhow::Result<Value> {
    parse_document(document).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::FakeIam;

    #[tokio::test]
    async fn setup_creates_then_extends_the_boundary_and_sets_the_user_up() {
        let iam = FakeIam::new("admin", &["carol"]);
        iam.clear_boundary("carol");
        let key = "arn:aws:kms:us-east-1:123456789012:key/k";
        for v in ["s3://b/v1", "s3://b/v2", "s3://b/v2"] {
            setup(&iam, "carol", &S3Url::parse(v).unwrap(), key)
                .await
                .unwrap();
        }
        let boundary = "arn:aws:iam::123456789012:policy/sealfs-boundary/sealfs-grantee-boundary";
        let p = iam.get_policy(boundary).await.unwrap();
        let doc = parse(
            &iam.policy_document(boundary, &p.default_version)
                .await
                .unwrap(),
        )
        .unwrap();
        let (objects, keys) = boundary_resources(&doc);
        assert_eq!(
            objects.into_iter().collect::<Vec<_>>(),
            vec!["arn:aws:s3:::b/v1/*", "arn:aws:s3:::b/v2/*"]
        );
        assert_eq!(keys.len(), 1);
        assert_eq!(
            iam.get_user("carol").await.unwrap().boundary.as_deref(),
            Some(boundary)
        );
        assert_eq!(
            iam.attached_to("carol"),
            vec!["arn:aws:iam::123456789012:policy/sealfs-grantee/sealfs-grantee"]
        );
    }

    #[tokio::test]
    async fn setup_gives_a_role_and_every_member_of_a_group_the_boundary() {
        let iam = FakeIam::new("admin", &["dora", "eve"]);
        iam.clear_boundary("dora");
        iam.clear_boundary("eve");
        iam.add_role("reader");
        iam.clear_role_boundary("reader");
        iam.add_group("finance", "/sealfs/", &["dora", "eve"]);
        iam.add_group("all", "/", &["dora"]);
        let url = S3Url::parse("s3://b/v").unwrap();
        let key = "arn:aws:kms:us-east-1:123456789012:key/k";
        let boundary = "arn:aws:iam::123456789012:policy/sealfs-boundary/sealfs-grantee-boundary";
        let reader = "arn:aws:iam::123456789012:policy/sealfs-grantee/sealfs-grantee";
        setup(&iam, "role/reader", &url, key).await.unwrap();
        assert_eq!(
            iam.get_role("reader").await.unwrap().boundary.as_deref(),
            Some(boundary)
        );
        let role = Grantee::parse("role/reader").unwrap().grantee;
        assert_eq!(iam.attached_to_grantee(&role), vec![reader]);
        setup(&iam, "group/finance", &url, key).await.unwrap();
        for member in ["dora", "eve"] {
            assert_eq!(
                iam.get_user(member).await.unwrap().boundary.as_deref(),
                Some(boundary)
            );
            assert_eq!(iam.attached_to(member), vec![reader]);
        }
        let err = setup(&iam, "group/all", &url, key).await.unwrap_err();
        assert!(
            err.to_string().contains("create-group --path /sealfs/"),
            "{err}"
        );
    }
}
