//! `sealfs policy owner|grantee|boundary`: the least-privilege IAM policies
//! for the two roles in sharing, and the permissions boundary that keeps an
//! owner's grants from carrying anything but read access to shared files.
//!
//! The owner may write policies under `/sealfs/` (grants), but may attach
//! them only to users and roles whose permissions boundary is the sealfs
//! boundary (`iam:PermissionsBoundary` condition), and to groups at the IAM
//! path `/sealfs/` (which an administrator fills with boundary-carrying
//! users only: a group has no boundary), never to itself or its own role,
//! and may neither change boundaries nor edit the boundary policy. Whatever
//! a grant policy says, a grantee can at most read objects and decrypt with
//! the keys the boundary names.

use crate::app::Wiring;
use crate::grants::{BOUNDARY_NAME, BOUNDARY_PATH, GRANTEE_NAME, GRANTEE_PATH, POLICY_PATH};
use crate::url::S3Url;
use crate::volume;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::collections::BTreeSet;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Mounts the volume, reads and writes it, and shares its files.
    Owner,
    /// Receives files: `sealfs shared` and `sealfs get`.
    Grantee,
    /// The permissions boundary every grantee carries (for this volume).
    Boundary,
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
    let boundary = iam(&format!("policy{BOUNDARY_PATH}{BOUNDARY_NAME}"));
    let grantee_policy = iam(&format!("policy{GRANTEE_PATH}{GRANTEE_NAME}"));
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
                        "Action": ["kms:GenerateDataKey", "kms:Decrypt", "kms:Encrypt"],
                        "Resource": key_arn,
                    },
                    {
                        "Sid": "SealfsFindGrantees",
                        "Effect": "Allow",
                        "Action": [
                            "iam:GetUser", "iam:ListAttachedUserPolicies", "iam:GetRole",
                            "iam:ListAttachedRolePolicies", "iam:GetGroup",
                            "iam:ListAttachedGroupPolicies"
                        ],
                        "Resource": [iam("user/*"), iam("role/*"), iam("group/*")],
                    },
                    {
                        "Sid": "SealfsAttachGrants",
                        "Effect": "Allow",
                        "Action": [
                            "iam:AttachUserPolicy", "iam:DetachUserPolicy",
                            "iam:AttachRolePolicy", "iam:DetachRolePolicy"
                        ],
                        "Resource": [iam("user/*"), iam("role/*")],
                        "Condition": {
                            "ArnLike": {"iam:PolicyARN": grant_policies},
                            "StringEquals": {"iam:PermissionsBoundary": boundary},
                        },
                    },
                    {
                        "Sid": "SealfsAttachGroupGrants",
                        "Effect": "Allow",
                        "Action": ["iam:AttachGroupPolicy", "iam:DetachGroupPolicy"],
                        "Resource": iam(&format!("group{POLICY_PATH}*")),
                        "Condition": {"ArnLike": {"iam:PolicyARN": grant_policies}},
                    },
                    {
                        "Sid": "SealfsNoGrantsOnMyself",
                        "Effect": "Deny",
                        "Action": ["iam:AttachUserPolicy", "iam:AttachRolePolicy"],
                        "Resource": [iam("user/${aws:username}"), "${aws:PrincipalArn}"],
                    },
                    {
                        "Sid": "SealfsBoundariesAreFixed",
                        "Effect": "Deny",
                        "Action": [
                            "iam:PutUserPermissionsBoundary", "iam:DeleteUserPermissionsBoundary",
                            "iam:PutRolePermissionsBoundary", "iam:DeleteRolePermissionsBoundary"
                        ],
                        "Resource": "*",
                    },
                    {
                        "Sid": "SealfsBoundaryIsFixed",
                        "Effect": "Deny",
                        "Action": [
                            "iam:CreatePolicyVersion", "iam:DeletePolicy", "iam:DeletePolicyVersion",
                            "iam:SetDefaultPolicyVersion"
                        ],
                        "Resource": [boundary, grantee_policy],
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
                    {
                        // `sealfs doctor` asks IAM's policy simulator
                        // whether this owner may write grant policies:
                        // about itself only.
                        "Sid": "SealfsDoctorChecksMe",
                        "Effect": "Allow",
                        "Action": "iam:SimulatePrincipalPolicy",
                        "Resource": [iam("user/${aws:username}"), "${aws:PrincipalArn}"],
                    },
                ],
            })
        }
        Role::Boundary => {
            let prefix = prefix.trim_end_matches('/');
            let objects = if prefix.is_empty() {
                format!("arn:{partition}:s3:::{bucket}/*")
            } else {
                format!("arn:{partition}:s3:::{bucket}/{prefix}/*")
            };
            boundary_document(
                partition,
                account,
                &[objects].into(),
                &[key_arn.to_string()].into(),
            )
        }
        Role::Grantee => json!({
            "Version": "2012-10-17",
            "Statement": own_grants(partition, account),
        }),
    };
    Ok(doc)
}

/// Sids of the boundary's two resource statements (read back to extend it).
const BOUNDARY_OBJECTS: &str = "SealfsReadShared";
const BOUNDARY_KEYS: &str = "SealfsDecryptShared";

/// The boundary allowing at most: reading `objects`, decrypting with `keys`,
/// and reading the user's own grants.
pub fn boundary_document(
    partition: &str,
    account: &str,
    objects: &BTreeSet<String>,
    keys: &BTreeSet<String>,
) -> Value {
    let mut statements = vec![
        json!({"Sid": BOUNDARY_OBJECTS, "Effect": "Allow", "Action": "s3:GetObject", "Resource": objects}),
        json!({"Sid": BOUNDARY_KEYS, "Effect": "Allow", "Action": "kms:Decrypt", "Resource": keys}),
    ];
    statements.extend(own_grants(partition, account));
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// Finding and reading one's own grant policies: a user's, its groups', or
/// the role's of a session (and nothing else in IAM). IAM has no variable
/// for a role's name or a user's groups, so a role session can read the
/// grant policies of every role, and a user those of every group: object
/// names and file ids, never a key (docs/SHARING.md).
fn own_grants(partition: &str, account: &str) -> Vec<Value> {
    let iam = |resource: &str| format!("arn:{partition}:iam::{account}:{resource}");
    vec![
        json!({
            "Sid": "SealfsFindMyGrants",
            "Effect": "Allow",
            "Action": [
                "iam:ListAttachedUserPolicies", "iam:ListGroupsForUser",
                "iam:ListAttachedRolePolicies"
            ],
            "Resource": [iam("user/${aws:username}"), "${aws:PrincipalArn}"],
        }),
        json!({
            "Sid": "SealfsFindMyGroupGrants",
            "Effect": "Allow",
            "Action": "iam:ListAttachedGroupPolicies",
            "Resource": iam(&format!("group{POLICY_PATH}*")),
        }),
        json!({
            "Sid": "SealfsReadMyGrants",
            "Effect": "Allow",
            "Action": ["iam:GetPolicy", "iam:GetPolicyVersion"],
            "Resource": [
                iam(&format!("policy{POLICY_PATH}${{aws:username}}/*")),
                iam(&format!("policy{POLICY_PATH}role/*")),
                iam(&format!("policy{POLICY_PATH}group/*")),
            ],
        }),
    ]
}

/// The volumes (object ARNs) and keys an existing boundary document names.
pub fn boundary_resources(doc: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut objects = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for s in doc["Statement"].as_array().into_iter().flatten() {
        let into = match s["Sid"].as_str() {
            Some(BOUNDARY_OBJECTS) => &mut objects,
            Some(BOUNDARY_KEYS) => &mut keys,
            _ => continue,
        };
        match &s["Resource"] {
            Value::String(r) => {
                into.insert(r.clone());
            }
            Value::Array(a) => into.extend(a.iter().filter_map(|r| r.as_str().map(str::to_string))),
            _ => {}
        }
    }
    (objects, keys)
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
    fn owner_attaches_only_to_boundary_carriers_and_never_to_itself() {
        let d = document(Role::Owner, "bkt", "team/vol", KEY).unwrap();
        let st = d["Statement"].as_array().unwrap();
        let by_sid = |sid: &str| st.iter().find(|s| s["Sid"] == sid).unwrap().clone();
        let attach = by_sid("SealfsAttachGrants");
        assert_eq!(
            attach["Condition"]["StringEquals"]["iam:PermissionsBoundary"],
            "arn:aws:iam::111122223333:policy/sealfs-boundary/sealfs-grantee-boundary"
        );
        let me = by_sid("SealfsNoGrantsOnMyself");
        assert_eq!(me["Effect"], "Deny");
        assert_eq!(
            me["Resource"],
            json!([
                "arn:aws:iam::111122223333:user/${aws:username}",
                "${aws:PrincipalArn}"
            ])
        );
        assert_eq!(
            me["Action"],
            json!(["iam:AttachUserPolicy", "iam:AttachRolePolicy"])
        );
        // Groups: only those an administrator put at /sealfs/, and no
        // boundary condition (groups have none).
        let groups = by_sid("SealfsAttachGroupGrants");
        assert_eq!(
            groups["Resource"],
            "arn:aws:iam::111122223333:group/sealfs/*"
        );
        assert!(groups["Condition"].get("StringEquals").is_none());
        assert_eq!(
            attach["Resource"],
            json!([
                "arn:aws:iam::111122223333:user/*",
                "arn:aws:iam::111122223333:role/*"
            ])
        );
        assert_eq!(by_sid("SealfsBoundariesAreFixed")["Effect"], "Deny");
        let fixed = by_sid("SealfsBoundaryIsFixed");
        assert!(fixed["Resource"]
            .to_string()
            .contains("sealfs-boundary/sealfs-grantee-boundary"));
        // The policies the owner may write are under /sealfs/ only, and the
        // boundary is not among them ("policy/sealfs/*" does not match
        // "policy/sealfs-boundary/...").
        assert_eq!(
            by_sid("SealfsWriteGrants")["Resource"],
            "arn:aws:iam::111122223333:policy/sealfs/*"
        );
        // The doctor may simulate the owner's own rights, nobody else's.
        let doctor = by_sid("SealfsDoctorChecksMe");
        assert_eq!(doctor["Action"], "iam:SimulatePrincipalPolicy");
        assert_eq!(doctor["Resource"], me["Resource"]);
        // No Allow anywhere grants a wildcard action.
        for s in st {
            if s["Effect"] == "Allow" {
                assert!(!s["Action"].to_string().contains('*'), "{s}");
            }
        }
    }

    #[test]
    fn the_boundary_allows_reading_the_volume_and_nothing_else() {
        let d = document(Role::Boundary, "bkt", "vol", KEY).unwrap();
        let mut actions = BTreeSet::new();
        for s in d["Statement"].as_array().unwrap() {
            assert_eq!(s["Effect"], "Allow");
            match &s["Action"] {
                Value::String(a) => {
                    actions.insert(a.clone());
                }
                Value::Array(a) => {
                    actions.extend(a.iter().map(|x| x.as_str().unwrap().to_string()))
                }
                _ => panic!(),
            }
        }
        let expected: BTreeSet<String> = [
            "s3:GetObject",
            "kms:Decrypt",
            "iam:ListAttachedUserPolicies",
            "iam:ListGroupsForUser",
            "iam:ListAttachedRolePolicies",
            "iam:ListAttachedGroupPolicies",
            "iam:GetPolicy",
            "iam:GetPolicyVersion",
        ]
        .into_iter()
        .map(str::to_string)
        .collect();
        assert_eq!(actions, expected);
        let (objects, keys) = boundary_resources(&d);
        assert_eq!(objects, ["arn:aws:s3:::bkt/vol/*".to_string()].into());
        assert_eq!(keys, [KEY.to_string()].into());
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
