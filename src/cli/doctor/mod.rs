//! `sealfs doctor [s3://BUCKET/PREFIX]`: everything a mount, a copy or a
//! share needs, checked at once, each with what was found and, when it is
//! wrong, what to do about it. Non-zero exit when any check fails.
//!
//! The checks run in the order a mount depends on them: the endpoint, the
//! credentials, the bucket and whether it is private, the volume config and
//! this machine's pin of it, the KMS key, IAM rights for sharing and the
//! grantee boundary, then FUSE on this machine. A check whose ground failed
//! is skipped (no bucket, no volume to read) rather than failing again.
//!
//! Nothing is written anywhere: the only KMS call that makes something is a
//! GenerateDataKey under a context of its own (`sealfs:probe`), which no
//! file or grant ever uses, and whose key is dropped at once.

mod aws;
mod local;
mod sharing;
mod volume;

pub(super) use local::find_fusermount;

use crate::app::{Aws, AwsOptions};
use crate::grants::BoundaryCheck;
use crate::url::S3Url;
use serde::Serialize;

#[derive(clap::Args, Debug, Clone)]
pub struct DoctorArgs {
    /// s3://BUCKET/PREFIX of the volume to check (without it: the endpoint,
    /// credentials, IAM rights and FUSE only).
    pub url: Option<String>,
    /// Also check what `sealfs mount --allow-other` needs (user_allow_other
    /// in /etc/fuse.conf unless root).
    #[arg(long)]
    pub allow_other: bool,
    /// The permissions boundary grantees must carry, as for `sealfs share`:
    /// `standard`, an ARN, or `none`.
    #[arg(long, env = "SEALFS_GRANTEE_BOUNDARY", default_value = "standard")]
    pub grantee_boundary: BoundaryCheck,
    /// One JSON object: every check with its status, finding and fix.
    #[arg(long)]
    pub json: bool,
}

/// The checks of a volume, in order; each needs the one before it.
const VOLUME_CHECKS: [&str; 5] = ["bucket", "private", "volume", "pin", "kms key"];

/// How one check came out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Works, but something is worth fixing or could not be verified.
    Warn,
    Fail,
    /// Not checked, because something it needs failed or was not asked for.
    Skip,
}

/// One line of the report: what was checked, what was found, and the fix.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    pub found: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub fn pass(check: &'static str, found: impl Into<String>) -> Self {
        Finding {
            check,
            status: Status::Pass,
            found: found.into(),
            fix: None,
        }
    }
    pub fn warn(check: &'static str, found: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            check,
            status: Status::Warn,
            found: found.into(),
            fix: Some(fix.into()),
        }
    }
    pub fn fail(check: &'static str, found: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            check,
            status: Status::Fail,
            found: found.into(),
            fix: Some(fix.into()),
        }
    }
    pub fn skip(check: &'static str, why: impl Into<String>) -> Self {
        Finding {
            check,
            status: Status::Skip,
            found: why.into(),
            fix: None,
        }
    }
    fn ok(&self) -> bool {
        self.status != Status::Fail
    }
}

/// The findings in the order they were made.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Finding>,
}

impl Report {
    /// Adds `f` and says whether what depends on it may run.
    fn add(&mut self, f: Finding) -> bool {
        let ok = f.ok();
        self.checks.push(f);
        ok
    }

    /// Each of `checks` skipped, for `why`.
    fn skip(&mut self, checks: &[&'static str], why: &str) {
        for check in checks {
            self.add(Finding::skip(check, why));
        }
    }

    fn count(&self, s: Status) -> usize {
        self.checks.iter().filter(|f| f.status == s).count()
    }

    pub fn failures(&self) -> usize {
        self.count(Status::Fail)
    }

    /// The text report: one line per check, the fix indented below it.
    pub fn render(&self) -> String {
        let width = self.checks.iter().map(|f| f.check.len()).max().unwrap_or(0);
        let mut out = String::new();
        for f in &self.checks {
            let tag = match f.status {
                Status::Pass => "ok",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            };
            out += &format!("{tag:<5} {:<width$}  {}\n", f.check, f.found);
            if let Some(fix) = &f.fix {
                out += &format!("{:<5} {:<width$}  fix: {fix}\n", "", "");
            }
        }
        let (fails, warns) = (self.failures(), self.count(Status::Warn));
        out += &match (fails, warns) {
            (0, 0) => "All checks passed.\n".to_string(),
            (0, w) => format!("No check failed; {w} warning{}.\n", plural(w)),
            (n, w) => format!("{n} check{} failed, {w} warning{}.\n", plural(n), plural(w)),
        };
        out
    }
}

/// The fix for a right an owner lacks: the owner policy names every right
/// a volume's owner needs.
fn owner_policy(url: Option<&S3Url>) -> String {
    match url {
        Some(u) => format!(
            "attach the policy `sealfs policy owner s3://{}/{}` prints",
            u.bucket,
            u.prefix()
        ),
        None => "attach the policy `sealfs policy owner s3://BUCKET/PREFIX` prints".to_string(),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Runs every check and prints the report; an error when any check failed.
pub async fn run(opts: &AwsOptions, args: &DoctorArgs) -> anyhow::Result<()> {
    let url = args.url.as_deref().map(S3Url::parse).transpose()?;
    let report = examine(opts, args, url.as_ref()).await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serializable")
        );
    } else {
        print!("{}", report.render());
    }
    match report.failures() {
        0 => Ok(()),
        n => anyhow::bail!("{n} check{} failed", plural(n)),
    }
}

async fn examine(opts: &AwsOptions, args: &DoctorArgs, url: Option<&S3Url>) -> Report {
    let mut r = Report::default();
    let aws = Aws::load(opts).await;
    let reachable = r.add(aws::endpoint(&aws).await);
    let caller = if reachable {
        let (finding, caller) = aws::credentials(&aws).await;
        r.add(finding);
        caller
    } else {
        r.add(Finding::skip("credentials", "needs the endpoint"));
        None
    };
    let needs_caller = "needs working credentials";
    let mut volume = None;
    match (url, &caller) {
        (None, _) => r.skip(
            &VOLUME_CHECKS,
            "no volume given (sealfs doctor s3://BUCKET/PREFIX)",
        ),
        (Some(_), None) => r.skip(&VOLUME_CHECKS, needs_caller),
        (Some(url), Some(_)) => volume = volume_checks(&mut r, &aws, url).await,
    }
    match &caller {
        Some(caller) => {
            let iam = aws.grant_service();
            r.add(sharing::rights(iam.as_ref(), &aws.iam_client(), caller, url).await);
            r.add(
                sharing::boundary(
                    iam.as_ref(),
                    caller,
                    &args.grantee_boundary,
                    url.zip(volume.as_ref()),
                )
                .await,
            );
        }
        None => {
            r.add(Finding::skip("sharing rights", needs_caller));
            r.add(Finding::skip("grantee boundary", needs_caller));
        }
    }
    let is_root = unsafe { libc::geteuid() } == 0;
    r.add(local::fuse_device(std::path::Path::new("/dev/fuse")));
    r.add(local::fusermount(
        std::env::var_os("PATH").as_deref(),
        is_root,
    ));
    r.add(local::allow_other(
        args.allow_other,
        is_root,
        std::path::Path::new("/etc/fuse.conf"),
    ));
    r
}

/// The bucket, its privacy, the volume, its pin and its KMS key; the
/// volume's KMS key ARN when the config was read.
async fn volume_checks(r: &mut Report, aws: &Aws, url: &S3Url) -> Option<String> {
    let s3 = aws.s3_client();
    if !r.add(aws::bucket(&s3, url, &aws.region()).await) {
        r.skip(&VOLUME_CHECKS[1..], "needs the bucket");
        return None;
    }
    r.add(aws::privacy(&s3, &url.bucket).await);
    let store = crate::store::S3Store::new(s3, &url.bucket);
    let kms = aws.kms();
    let (finding, cfg) = volume::config(&store, &kms, url).await;
    r.add(finding);
    let Some(cfg) = cfg else {
        r.skip(&VOLUME_CHECKS[3..], "needs the volume config");
        return None;
    };
    r.add(volume::pin(
        crate::volume::Pins::default_location().as_ref(),
        url,
        &cfg,
    ));
    r.add(volume::kms_key(&kms, &cfg.kms_key_arn).await);
    Some(cfg.kms_key_arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_shows_each_fix_under_its_check_and_counts_failures() {
        let mut r = Report::default();
        assert!(r.add(Finding::pass("endpoint", "http://127.0.0.1:1")));
        assert!(r.add(Finding::warn(
            "private",
            "no public access block",
            "block it"
        )));
        assert!(!r.add(Finding::fail("volume", "no volume", "sealfs init")));
        assert!(r.add(Finding::skip("pin", "needs the volume config")));
        let text = r.render();
        assert_eq!(
            text,
            "ok    endpoint  http://127.0.0.1:1\n\
             warn  private   no public access block\n\
             \x20               fix: block it\n\
             FAIL  volume    no volume\n\
             \x20               fix: sealfs init\n\
             skip  pin       needs the volume config\n\
             1 check failed, 1 warning.\n"
        );
        assert_eq!(r.failures(), 1);
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["checks"][2]["status"], "fail");
        assert_eq!(json["checks"][2]["fix"], "sealfs init");
        assert!(json["checks"][0].get("fix").is_none());
    }

    #[test]
    fn a_clean_report_says_so() {
        let mut r = Report::default();
        r.add(Finding::pass("endpoint", "x"));
        assert!(r.render().ends_with("All checks passed.\n"));
        r.add(Finding::warn("private", "y", "z"));
        assert!(r.render().ends_with("No check failed; 1 warning.\n"));
    }
}
