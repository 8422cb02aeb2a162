//! The endpoint, the credentials, the bucket and whether it is private.

use super::{owner_policy, Finding};
use crate::app::Aws;
use crate::aws_error::{classify, Class};
use crate::grants::Caller;
use crate::url::S3Url;
use aws_sdk_s3::error::ProvideErrorMetadata;
use std::time::Duration;

/// How long the endpoint has to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `host:port` of an endpoint URL (`http://h:9000/x` -> `h:9000`).
pub(super) fn authority(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?.rsplit('@').next()?;
    if host.is_empty() {
        return None;
    }
    let has_port = match host.rfind(']') {
        Some(close) => host[close..].contains(':'),
        None => host.contains(':'),
    };
    if has_port {
        return Some(host.to_string());
    }
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Some(format!("{host}:80")),
        "https" => Some(format!("{host}:443")),
        _ => None,
    }
}

/// An AWS region name: lowercase words and a number (`eu-west-1`,
/// `us-gov-west-1`).
pub(super) fn looks_like_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

/// The region is sane, and the S3 endpoint accepts a connection.
pub(super) async fn endpoint(aws: &Aws) -> Finding {
    const CHECK: &str = "endpoint";
    let region = aws.region();
    let from = aws.region_source();
    let (url, target) = match aws.custom_s3_endpoint() {
        Some(url) => match authority(&url) {
            Some(a) => (url, a),
            None => {
                return Finding::fail(
                    CHECK,
                    format!("endpoint URL {url:?} is not an http(s) URL"),
                    "pass --endpoint-url http://HOST:PORT (or fix AWS_ENDPOINT_URL)",
                )
            }
        },
        None => {
            if !looks_like_region(&region) {
                return Finding::fail(
                    CHECK,
                    format!("region {region:?} (from {from}) is not an AWS region"),
                    "pass --region, or set AWS_REGION (for example eu-west-1)",
                );
            }
            let suffix = if region.starts_with("cn-") {
                "amazonaws.com.cn"
            } else {
                "amazonaws.com"
            };
            let host = format!("s3.{region}.{suffix}");
            (format!("https://{host}"), format!("{host}:443"))
        }
    };
    let connected =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&target)).await;
    match connected {
        Ok(Ok(_)) => Finding::pass(
            CHECK,
            format!("S3 at {url} answers (region {region}, from {from})"),
        ),
        Ok(Err(e)) => Finding::fail(
            CHECK,
            format!("cannot connect to S3 at {url}: {e}"),
            "check --endpoint-url / AWS_ENDPOINT_URL, --region, and the network (proxy, firewall)",
        ),
        Err(_) => Finding::fail(
            CHECK,
            format!(
                "S3 at {url} did not accept a connection within {}s",
                CONNECT_TIMEOUT.as_secs()
            ),
            "check --endpoint-url / AWS_ENDPOINT_URL, --region, and the network (proxy, firewall)",
        ),
    }
}

/// Who the credentials belong to (STS GetCallerIdentity).
pub(super) async fn credentials(aws: &Aws) -> (Finding, Option<Caller>) {
    const CHECK: &str = "credentials";
    let got = aws.sts_client().get_caller_identity().send().await;
    let e = match got {
        Ok(out) => {
            let caller = Caller {
                arn: out.arn().unwrap_or_default().to_string(),
                account: out.account().unwrap_or_default().to_string(),
            };
            let found = format!("{} (account {})", caller.arn, caller.account);
            return (Finding::pass(CHECK, found), Some(caller));
        }
        Err(e) => e,
    };
    let f = classify(&e);
    let fix = match (f.class, f.code.as_deref().unwrap_or_default()) {
        (Class::NoCredentials, _) => {
            "give sealfs credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             `aws configure`, `aws sso login --profile P` with --profile P, or an instance role"
        }
        (_, "InvalidClientTokenId") => {
            "the access key id is not known to AWS (deleted, mistyped, or of another \
             partition): make a new access key, or choose another --profile"
        }
        (_, "SignatureDoesNotMatch") => {
            "the secret access key does not belong to the access key id: copy it again"
        }
        (_, "ExpiredToken" | "ExpiredTokenException" | "RequestExpired") => {
            "the session credentials have expired: renew them (aws sso login, or assume \
             the role again); if they are fresh, check this machine's clock"
        }
        _ => "check the credentials and the STS endpoint (AWS_ENDPOINT_URL_STS)",
    };
    let what = match f.class {
        Class::NoCredentials => "no credentials found".to_string(),
        _ => format!(
            "STS GetCallerIdentity failed: {}{}",
            f.code.map(|c| format!("{c}: ")).unwrap_or_default(),
            f.message
        ),
    };
    (Finding::fail(CHECK, what, fix), None)
}

/// The bucket exists, these credentials may list the volume's prefix in
/// it, and it lives in the region requests are signed for.
///
/// The probe is a LIST of the prefix, which the owner policy allows (its
/// `s3:ListBucket` is limited to the volume's prefix, so a HeadBucket would
/// be denied); HeadBucket is asked only for the bucket's region, and its
/// denial is no finding.
pub(super) async fn bucket(s3: &aws_sdk_s3::Client, url: &S3Url, region: &str) -> Finding {
    const CHECK: &str = "bucket";
    let (bucket, prefix) = (&url.bucket, url.prefix());
    let wrong_region = |theirs: &str| {
        Finding::fail(
            CHECK,
            format!("{bucket} is in region {theirs}, but requests are signed for {region}"),
            format!("pass --region {theirs} (or set AWS_REGION={theirs})"),
        )
    };
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        })
        .max_keys(1)
        .send()
        .await;
    if let Err(e) = listed {
        let header = e
            .raw_response()
            .and_then(|r| r.headers().get("x-amz-bucket-region"))
            .map(str::to_string);
        if let Some(theirs) = header.filter(|t| t != region) {
            return wrong_region(&theirs);
        }
        let f = classify(&e);
        return match (f.class, f.code.as_deref()) {
            (Class::NotFound, _) | (_, Some("NoSuchBucket")) => Finding::fail(
                CHECK,
                format!("bucket {bucket} does not exist"),
                format!(
                    "check the name, or create it: sealfs init s3://{bucket}/PREFIX \
                     --create-bucket --kms-key KEY"
                ),
            ),
            (Class::Denied, _) => Finding::fail(
                CHECK,
                format!("s3:ListBucket of {bucket}/{prefix}/ is denied to these credentials"),
                format!(
                    "{} (or check that the bucket is this account's)",
                    owner_policy(Some(url))
                ),
            ),
            _ => Finding::fail(
                CHECK,
                format!("listing {bucket}/{prefix}/ failed: {}", f.message),
                "check the endpoint and the bucket name",
            ),
        };
    }
    match s3.head_bucket().bucket(bucket).send().await {
        Ok(out) => match out.bucket_region() {
            Some(theirs) if !theirs.is_empty() && theirs != region => wrong_region(theirs),
            _ => Finding::pass(CHECK, format!("{bucket} is reachable (region {region})")),
        },
        Err(_) => Finding::pass(CHECK, format!("{bucket}/{prefix}/ can be listed")),
    }
}

/// Grants of a bucket ACL that reach everyone, or every AWS account.
fn public_acl_grantees(acl: &aws_sdk_s3::operation::get_bucket_acl::GetBucketAclOutput) -> bool {
    acl.grants().iter().any(|g| {
        g.grantee()
            .and_then(|who| who.uri())
            .is_some_and(|uri| uri.ends_with("/AllUsers") || uri.ends_with("/AuthenticatedUsers"))
    })
}

/// The bucket is not public: no policy or ACL opens it, and the public
/// access block is on. File contents are encrypted either way; object
/// names, sizes and times are not, and a bucket anyone may write is a
/// bucket anyone may empty.
pub(super) async fn privacy(s3: &aws_sdk_s3::Client, bucket: &str) -> Finding {
    const CHECK: &str = "private";
    let block_fix = format!(
        "aws s3api put-public-access-block --bucket {bucket} --public-access-block-configuration \
         BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true"
    );
    let cannot_tell = |what: &str, f: crate::aws_error::Failure| {
        Finding::warn(
            CHECK,
            format!(
                "cannot tell whether {bucket} is public: {what} failed: {}",
                f.code.unwrap_or(f.message)
            ),
            format!("an administrator of {bucket} checks it, or runs: {block_fix}"),
        )
    };
    let block = match s3.get_public_access_block().bucket(bucket).send().await {
        Ok(out) => out.public_access_block_configuration().is_some_and(|c| {
            c.block_public_acls() == Some(true)
                && c.ignore_public_acls() == Some(true)
                && c.block_public_policy() == Some(true)
                && c.restrict_public_buckets() == Some(true)
        }),
        Err(e) if e.code() == Some("NoSuchPublicAccessBlockConfiguration") => false,
        Err(e) => {
            let f = classify(&e);
            if f.code.as_deref() == Some("NotImplemented") || f.status == Some(501) {
                return Finding::pass(
                    CHECK,
                    format!("this server has no public access for {bucket}"),
                );
            }
            return cannot_tell("GetPublicAccessBlock", f);
        }
    };
    if block {
        return Finding::pass(CHECK, format!("{bucket} blocks all public access"));
    }
    let policy_public = match s3.get_bucket_policy_status().bucket(bucket).send().await {
        Ok(out) => out.policy_status().and_then(|p| p.is_public()) == Some(true),
        Err(e) if e.code() == Some("NoSuchBucketPolicy") => false,
        Err(e) => return cannot_tell("GetBucketPolicyStatus", classify(&e)),
    };
    let acl_public = match s3.get_bucket_acl().bucket(bucket).send().await {
        Ok(acl) => public_acl_grantees(&acl),
        Err(e) => return cannot_tell("GetBucketAcl", classify(&e)),
    };
    let opened_by = match (policy_public, acl_public) {
        (true, true) => Some("its bucket policy and its ACL"),
        (true, false) => Some("its bucket policy"),
        (false, true) => Some("its ACL"),
        (false, false) => None,
    };
    match opened_by {
        Some(what) => Finding::fail(
            CHECK,
            format!(
                "{bucket} is public: {what} lets anyone in (file names, sizes and times are \
                 readable, and objects can be overwritten or deleted)"
            ),
            format!("remove the public statements or grants, then: {block_fix}"),
        ),
        None => Finding::warn(
            CHECK,
            format!("{bucket} is private now, but its public access block is not fully on"),
            block_fix,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_give_host_and_port() {
        assert_eq!(
            authority("http://127.0.0.1:9000").as_deref(),
            Some("127.0.0.1:9000")
        );
        assert_eq!(authority("http://minio/x?y").as_deref(), Some("minio:80"));
        assert_eq!(
            authority("https://s3.eu-west-1.amazonaws.com/").as_deref(),
            Some("s3.eu-west-1.amazonaws.com:443")
        );
        assert_eq!(
            authority("http://[::1]:9000/").as_deref(),
            Some("[::1]:9000")
        );
        assert_eq!(authority("https://[::1]/").as_deref(), Some("[::1]:443"));
        assert_eq!(authority("http://u:p@h:1/").as_deref(), Some("h:1"));
        assert_eq!(authority("127.0.0.1:9000"), None);
        assert_eq!(authority("ftp://h/"), None);
        assert_eq!(authority("http:///x"), None);
    }

    #[test]
    fn region_names_are_words_and_a_number() {
        for ok in ["us-east-1", "eu-central-2", "us-gov-west-1", "cn-north-1"] {
            assert!(looks_like_region(ok), "{ok}");
        }
        for bad in [
            "",
            "us-east",
            "US-EAST-1",
            "us east 1",
            "east-1",
            "us--1",
            "eu-west-1a",
        ] {
            assert!(!looks_like_region(bad), "{bad}");
        }
    }

    #[test]
    fn acls_that_reach_everyone_are_public() {
        use aws_sdk_s3::operation::get_bucket_acl::GetBucketAclOutput;
        use aws_sdk_s3::types::{Grant, Grantee, Permission, Type};
        let grant = |g: Grantee| {
            Grant::builder()
                .grantee(g)
                .permission(Permission::Read)
                .build()
        };
        let owner = Grantee::builder()
            .r#type(Type::CanonicalUser)
            .id("abc")
            .build()
            .unwrap();
        let group = |uri: &str| {
            Grantee::builder()
                .r#type(Type::Group)
                .uri(uri)
                .build()
                .unwrap()
        };
        let acl = |gs: Vec<Grant>| GetBucketAclOutput::builder().set_grants(Some(gs)).build();
        assert!(!public_acl_grantees(&acl(vec![grant(owner.clone())])));
        assert!(public_acl_grantees(&acl(vec![
            grant(owner.clone()),
            grant(group("http://acs.amazonaws.com/groups/global/AllUsers")),
        ])));
        assert!(public_acl_grantees(&acl(vec![grant(group(
            "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
        ))])));
        assert!(!public_acl_grantees(&acl(vec![grant(group(
            "http://acs.amazonaws.com/groups/s3/LogDelivery"
        ))])));
    }
}
