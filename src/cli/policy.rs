//! `sealfs policy owner|grantee`: the least-privilege IAM policies for the
//! two roles in sharing.

use crate::app::Wiring;
use crate::grants::POLICY_PATH;
use crate::url::S3Url;
use crate::volume;
use anyhow::{bail, Context};
use serde_json::{json, Value};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Mounts the volume, reads and writes it, and shares its files.
    Owner,
    /// Receives files: `sealfs shared` and `sealfs get`.
    Grantee,
}

/// The policy document for `role` on the volume at `bucket`/`prefix`,
/// whose data keys are under `key_arn`.
pub fn document(role: Role, bucket: &str, prefix: &str, key_arn: &str) -> anyhow::Result<Value> {
    let fields: Vec<&str> = key_arn.split(':').collect();
    if fields.len() < 6 || fields[0] != "arn" || fields[2] != "kms" {
        bail!("{key_arn:?} is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)");
    }
    let (partition, account) = (fields[1], fields[4]);
    let iam = |resource: &str| format!("arn:{partition}:iam::{account}:{resource}");
    let grant_policies = iam(&format!("policy{POLICY_PATH}*"));
    let doc = match role {
        Role::Owner => {
            let prefix = prefix.trim_end_matches('/');
            let (objects, listed) = if prefix.is_empty() {
                (format!("arn:{partition}:s3:::{bucket}/*"), None)
            } else {
                (
                    format!("arn:{partition}:s3:::{bucket}/{prefix}/*"),
                    Some(json!([prefix, format!("{prefix}/*")])),
                )
            };
            let mut list = json!({
                "Sid": "SealfsList",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": format!("arn:{partition}:s3:::{bucket}"),
            });
            if let Some(p) = listed {
                list["Condition"] = json!({"StringLike": {"s3:prefix": p}});
            }
            json!({
                "Version": "2012-10-17",
                "Statement": [
                    list,
                    {
                        "Sid": "SealfsObjects",
                        "Effect": "Allow",
                        "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                        "Resource": objects,
                    },
                    {
                        "Sid": "SealfsDataKeys",
                        "Effect": "Allow",
                        "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                        "Resource": key_arn,
                    },
                    {
                        "Sid": "SealfsFindGrantees",
                        "Effect": "Allow",
                        "Action": ["iam:GetUser", "iam:ListAttachedUserPolicies"],
                        "Resource": iam("user/*"),
                    },
                    {
                        "Sid": "SealfsAttachGrants",
                        "Effect": "Allow",
                        "Action": ["iam:AttachUserPolicy", "iam:DetachUserPolicy"],
                        "Resource": iam("user/*"),
                        "Condition": {"ArnLike": {"iam:PolicyARN": grant_policies}},
                    },
                    {
                        "Sid": "SealfsWriteGrants",
                        "Effect": "Allow",
                        "Action": [
                            "iam:CreatePolicy", "iam:CreatePolicyVersion", "iam:DeletePolicy",
                            "iam:DeletePolicyVersion", "iam:GetPolicy", "iam:GetPolicyVersion",
                            "iam:ListPolicyVersions"
                        ],
                        "Resource": grant_policies,
                    },
                    {
                        "Sid": "SealfsIndexGrants",
                        "Effect": "Allow",
                        "Action": "iam:ListPolicies",
                        "Resource": "*",
                    },
                ],
            })
        }
        Role::Grantee => json!({
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "SealfsFindMyGrants",
                    "Effect": "Allow",
                    "Action": "iam:ListAttachedUserPolicies",
                    "Resource": iam("user/${aws:username}"),
                },
                {
                    "Sid": "SealfsReadMyGrants",
                    "Effect": "Allow",
                    "Action": ["iam:GetPolicy", "iam:GetPolicyVersion"],
                    "Resource": iam(&format!("policy{POLICY_PATH}${{aws:username}}/*")),
                },
            ],
        }),
    };
    Ok(doc)
}

/// Prints the policy, reading the volume's KMS key from its config unless given.
pub async fn run(
    w: &Wiring,
    url: &S3Url,
    role: Role,
    kms_key: Option<String>,
) -> anyhow::Result<()> {
    let key_arn = match kms_key {
        Some(k) => k,
        None => {
            let cfg = volume::load(w.store.as_ref(), w.keys.service.as_ref(), url.prefix())
                .await
                .context("reading the volume's KMS key (or pass --kms-key ARN)")?;
            cfg.kms_key_arn
        }
    };
    let doc = document(role, &url.bucket, url.prefix(), &key_arn)?;
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "arn:aws:kms:eu-west-1:111122223333:key/abcd";

    #[test]
    fn owner_policy_is_scoped_to_the_volume_key_and_grant_policies() {
        let d = document(Role::Owner, "bkt", "team/vol", KEY).unwrap();
        let st = d["Statement"].as_array().unwrap();
        assert_eq!(
            st[0]["Condition"]["StringLike"]["s3:prefix"],
            json!(["team/vol", "team/vol/*"])
        );
        assert_eq!(st[1]["Resource"], "arn:aws:s3:::bkt/team/vol/*");
        assert_eq!(st[2]["Resource"], KEY);
        assert_eq!(
            st[4]["Condition"]["ArnLike"]["iam:PolicyARN"],
            "arn:aws:iam::111122223333:policy/sealfs/*"
        );
        assert!(d.to_string().len() < 6144);
    }

    #[test]
    fn grantee_policy_reads_only_its_own_grants() {
        let d = document(Role::Grantee, "bkt", "vol", KEY).unwrap();
        let text = d.to_string();
        assert!(text.contains("arn:aws:iam::111122223333:policy/sealfs/${aws:username}/*"));
        assert!(
            !text.contains("s3:"),
            "object access comes from the grants themselves"
        );
        assert!(document(Role::Owner, "b", "", "alias/x").is_err());
    }
}
