//! IAM rights for sharing, and the permissions boundary grantees carry.

use super::{owner_policy, Finding};
use crate::cli::policy::{boundary_resources, document, Role};
use crate::grants::policy::parse_document;
use crate::grants::{
    policy_arn, BoundaryCheck, Caller, GrantError, GrantService, BOUNDARY_NAME, BOUNDARY_PATH,
    POLICY_PATH,
};
use crate::url::S3Url;

/// Writing grant policies: what `SealfsWriteGrants` of the owner policy
/// allows, unconditionally, on policies under `/sealfs/`. (Attaching them
/// is allowed only to grantees that carry the boundary, so IAM itself
/// checks that right when a file is shared.)
const WRITE_ACTIONS: [&str; 5] = [
    "iam:CreatePolicy",
    "iam:CreatePolicyVersion",
    "iam:DeletePolicyVersion",
    "iam:GetPolicy",
    "iam:ListPolicyVersions",
];

/// The caller can find grant policies, and (where IAM's policy simulator
/// is open to it) write them.
pub(super) async fn rights(
    iam: &dyn GrantService,
    client: &aws_sdk_iam::Client,
    caller: &Caller,
    url: Option<&S3Url>,
) -> Finding {
    const CHECK: &str = "sharing rights";
    match iam.list_policies(POLICY_PATH).await {
        Ok(_) => {}
        Err(GrantError::AccessDenied { action, .. }) => {
            return Finding::fail(
                CHECK,
                format!(
                    "IAM denies {action} to {}: files cannot be shared \
                     (setfattr -n user.share, sealfs share)",
                    caller.arn
                ),
                owner_policy(url),
            )
        }
        Err(e) => {
            return Finding::fail(
                CHECK,
                format!("listing grant policies failed: {e}"),
                "check the IAM endpoint (AWS_ENDPOINT_URL_IAM) and the network",
            )
        }
    }
    let principal = match principal_arn(iam, caller).await {
        Ok(arn) => arn,
        Err(why) => {
            return Finding::warn(
                CHECK,
                format!("grant policies can be listed; writing them was not checked: {why}"),
                "sharing will tell; or compare your policy with `sealfs policy owner`",
            )
        }
    };
    let probe = policy_arn(caller, POLICY_PATH, "sealfs-doctor-probe");
    let simulated = client
        .simulate_principal_policy()
        .policy_source_arn(&principal)
        .set_action_names(Some(WRITE_ACTIONS.iter().map(|a| a.to_string()).collect()))
        .resource_arns(&probe)
        .customize()
        // One attempt: a simulator that is not there will not appear on retry.
        .config_override(
            aws_sdk_iam::config::Config::builder()
                .retry_config(aws_sdk_iam::config::retry::RetryConfig::disabled()),
        )
        .send()
        .await;
    match simulated {
        Ok(out) => {
            let denied: Vec<String> = out
                .evaluation_results()
                .iter()
                .filter(|r| r.eval_decision().as_str() != "allowed")
                .map(|r| r.eval_action_name().to_string())
                .collect();
            if denied.is_empty() {
                Finding::pass(
                    CHECK,
                    "grant policies can be listed and written (IAM's policy simulator)",
                )
            } else {
                Finding::fail(
                    CHECK,
                    format!(
                        "IAM would deny {} on grant policies ({POLICY_PATH}): files cannot be shared",
                        denied.join(", ")
                    ),
                    owner_policy(url),
                )
            }
        }
        Err(e) => {
            let f = crate::aws_error::classify(&e);
            Finding::warn(
                CHECK,
                format!(
                    "grant policies can be listed; writing them was not checked \
                     (iam:SimulatePrincipalPolicy: {})",
                    match (f.code, f.status) {
                        (Some(code), _) => code,
                        (None, Some(status)) => format!("HTTP {status}"),
                        (None, None) => f.message,
                    }
                ),
                "attach the owner policy `sealfs policy owner` prints now (it allows the \
                 simulator on yourself) for a full check, or compare yours with it",
            )
        }
    }
}

/// The IAM principal behind the caller: the user, or the role of a session.
async fn principal_arn(iam: &dyn GrantService, caller: &Caller) -> Result<String, String> {
    if caller.user_name().is_some() {
        return Ok(caller.arn.clone());
    }
    match caller.role_name() {
        Some(role) => iam
            .get_role(&role)
            .await
            .map(|r| r.arn)
            .map_err(|e| e.to_string()),
        None => Err(format!(
            "{} is neither a user nor a role session",
            caller.arn
        )),
    }
}

/// The boundary grantees must carry exists and, for a volume, covers it
/// (its objects and KMS key), so that a grant on one of its files can be
/// read by whoever receives it.
pub(super) async fn boundary(
    iam: &dyn GrantService,
    caller: &Caller,
    check: &BoundaryCheck,
    volume: Option<(&S3Url, &String)>,
) -> Finding {
    const CHECK: &str = "grantee boundary";
    let setup = match volume {
        Some((u, _)) => format!(
            "an IAM administrator runs `sealfs grantee setup WHO s3://{}/{}` once per grantee",
            u.bucket,
            u.prefix()
        ),
        None => "an IAM administrator runs `sealfs grantee setup WHO s3://BUCKET/PREFIX` \
                 once per grantee"
            .to_string(),
    };
    let (arn, standard) = match check {
        BoundaryCheck::Off => {
            return Finding::skip(
                CHECK,
                "not checked (--grantee-boundary none / SEALFS_GRANTEE_BOUNDARY=none)",
            )
        }
        BoundaryCheck::Arn(arn) => (arn.clone(), false),
        BoundaryCheck::Standard => (policy_arn(caller, BOUNDARY_PATH, BOUNDARY_NAME), true),
    };
    let policy = match iam.get_policy(&arn).await {
        Ok(p) => p,
        Err(GrantError::NoSuchEntity { .. }) => {
            let fix = if standard {
                setup
            } else {
                format!("create the policy {arn}, or pass the ARN of the boundary grantees carry")
            };
            return Finding::fail(
                CHECK,
                format!("the boundary {arn} does not exist: nothing can be shared with anyone"),
                fix,
            );
        }
        Err(e) => {
            return Finding::warn(
                CHECK,
                format!("cannot read the boundary {arn}: {e}"),
                "sharing will tell; the owner policy allows iam:GetPolicy on it",
            )
        }
    };
    let Some((url, key_arn)) = volume.filter(|_| standard) else {
        return Finding::pass(CHECK, format!("{arn} exists"));
    };
    let covered = async {
        let doc = iam
            .policy_document(&arn, &policy.default_version)
            .await
            .map_err(|e| e.to_string())?;
        let have = boundary_resources(&parse_document(&doc).map_err(|e| e.to_string())?);
        let want = boundary_resources(
            &document(Role::Boundary, &url.bucket, url.prefix(), key_arn)
                .map_err(|e| e.to_string())?,
        );
        Ok::<bool, String>(want.0.is_subset(&have.0) && want.1.is_subset(&have.1))
    };
    match covered.await {
        Ok(true) => Finding::pass(CHECK, format!("{arn} covers this volume")),
        Ok(false) => Finding::fail(
            CHECK,
            format!(
                "{arn} does not cover s3://{}/{}: grantees could not read what is shared from it",
                url.bucket,
                url.prefix()
            ),
            setup,
        ),
        Err(e) => Finding::warn(CHECK, format!("cannot read {arn}: {e}"), setup),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;
    use crate::grants::FakeIam;

    const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/k";

    #[tokio::test]
    async fn sharing_needs_the_right_to_list_grant_policies() {
        let iam = FakeIam::new("alice", &[]);
        let caller = iam.caller().await.unwrap();
        iam.deny("iam:ListPolicies");
        // Never reached: the denial ends the check first.
        let client = aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::Config::builder()
                .behavior_version_latest()
                .endpoint_url("http://127.0.0.1:1")
                .build(),
        );
        let url = S3Url::parse("s3://b/v").unwrap();
        let f = rights(&iam, &client, &caller, Some(&url)).await;
        assert_eq!(f.status, Status::Fail, "{f:?}");
        assert!(f.found.contains("iam:ListPolicies"), "{}", f.found);
        assert!(f.fix.unwrap().contains("sealfs policy owner s3://b/v"));
    }

    #[tokio::test]
    async fn the_boundary_must_exist_and_cover_the_volume() {
        let iam = FakeIam::new("admin", &["carol"]);
        let caller = iam.caller().await.unwrap();
        let url = S3Url::parse("s3://b/v1").unwrap();
        let key = KEY.to_string();
        let f = boundary(&iam, &caller, &BoundaryCheck::Standard, Some((&url, &key))).await;
        assert_eq!(f.status, Status::Fail, "{f:?}");
        assert!(f.found.contains("does not exist"), "{}", f.found);
        assert!(f
            .fix
            .unwrap()
            .contains("sealfs grantee setup WHO s3://b/v1"));

        crate::cli::grantee::setup(&iam, "carol", &S3Url::parse("s3://b/v0").unwrap(), KEY)
            .await
            .unwrap();
        let f = boundary(&iam, &caller, &BoundaryCheck::Standard, Some((&url, &key))).await;
        assert_eq!(f.status, Status::Fail, "{f:?}");
        assert!(f.found.contains("does not cover s3://b/v1"), "{}", f.found);
        // Without a volume, that it exists is all there is to check.
        let f = boundary(&iam, &caller, &BoundaryCheck::Standard, None).await;
        assert_eq!(f.status, Status::Pass, "{f:?}");

        crate::cli::grantee::setup(&iam, "carol", &url, KEY)
            .await
            .unwrap();
        let f = boundary(&iam, &caller, &BoundaryCheck::Standard, Some((&url, &key))).await;
        assert_eq!(f.status, Status::Pass, "{f:?}");

        let f = boundary(&iam, &caller, &BoundaryCheck::Off, Some((&url, &key))).await;
        assert_eq!(f.status, Status::Skip);
        let missing = BoundaryCheck::Arn("arn:aws:iam::123456789012:policy/mine".into());
        let f = boundary(&iam, &caller, &missing, Some((&url, &key))).await;
        assert_eq!(f.status, Status::Fail);
        assert!(f.fix.unwrap().contains("create the policy"));
    }
}
