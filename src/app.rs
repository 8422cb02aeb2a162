//! The one place where concrete types meet: AWS configuration, clients, and
//! the key-service stack. Everything else takes traits.

use crate::grants::{GrantService, IamGrantService};
use crate::keys::{CachingKeyService, KeyService, KmsCalls, KmsKeyService, RetryPolicy, Retrying};
use crate::store::{ObjectStore, S3Store};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use std::sync::Arc;
use std::time::Duration;

/// How to reach AWS, beyond the standard credential chain.
#[derive(Clone, Debug, Default)]
pub struct AwsOptions {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    /// Times every S3, KMS and IAM call attempt (a mount's --metrics-addr).
    pub call_times: Option<crate::metrics::CallTimes>,
}

/// Settings of the data-key stack.
#[derive(Clone, Debug)]
pub struct KeySettings {
    pub cache_capacity: usize,
    pub cache_max_age: Duration,
    pub retry: RetryPolicy,
}

impl Default for KeySettings {
    fn default() -> Self {
        KeySettings {
            cache_capacity: 4096,
            cache_max_age: Duration::from_secs(600),
            retry: RetryPolicy::default(),
        }
    }
}

pub struct Aws {
    sdk: SdkConfig,
    call_times: Option<crate::metrics::CallTimes>,
    path_style: bool,
    /// An endpoint other than AWS's (an emulator or S3-compatible server).
    custom_endpoint: bool,
    /// Where the region came from, for `sealfs doctor`.
    region_source: &'static str,
}

/// Attempts per S3 request unless `AWS_MAX_ATTEMPTS` says otherwise.
///
/// Ten, as mountpoint-s3 and rclone use: a request that fails 10 % of the
/// time (S3 under SlowDown, a flaky link) then fails for good once in 10^10,
/// where five attempts failed once in 10^5, about one `cp -r` of a thousand
/// files in a hundred. The backoff is full-jitter exponential from 0.2 s,
/// capped at 5 s, so when S3 is unreachable `close` and `fsync` still answer
/// EIO within about 26 s (13 s on average) rather than the minute the SDK's
/// 20 s cap would take.
pub const S3_MAX_ATTEMPTS: u32 = 10;

/// The S3 retry policy: [`S3_MAX_ATTEMPTS`] (or `AWS_MAX_ATTEMPTS` when it
/// is a number from 1 up) with the backoff above.
fn s3_retry_config(max_attempts_env: Option<String>) -> RetryConfig {
    let attempts = max_attempts_env
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(S3_MAX_ATTEMPTS);
    RetryConfig::standard()
        .with_max_attempts(attempts)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(5))
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

impl Aws {
    pub async fn load(opts: &AwsOptions) -> Aws {
        // SEALFS_READ_TIMEOUT (seconds): how long a response may stall before
        // the attempt is abandoned and retried (default 30).
        let read_timeout = std::env::var("SEALFS_READ_TIMEOUT")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| *v > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(30));
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(read_timeout)
                .build(),
        );
        if let Some(url) = &opts.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(p) = &opts.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &opts.region {
            loader = loader.region(Region::new(r.clone()));
        }
        let mut sdk = loader.load().await;
        let mut region_source = if opts.region.is_some() {
            "--region"
        } else {
            "the AWS config chain"
        };
        if sdk.region().is_none() {
            region_source = "the default";
            sdk = sdk
                .into_builder()
                .region(Region::from_static("us-east-1"))
                .build();
        }
        // S3-compatible servers and emulators at a custom endpoint want path-style
        // addressing (no bucket-name DNS); SEALFS_S3_PATH_STYLE=0/1 overrides.
        let custom = opts.endpoint_url.is_some()
            || env_set("AWS_ENDPOINT_URL")
            || env_set("AWS_ENDPOINT_URL_S3");
        let path_style = match std::env::var("SEALFS_S3_PATH_STYLE").as_deref() {
            Ok("1") | Ok("true") => true,
            Ok("0") | Ok("false") => false,
            _ => custom,
        };
        Aws {
            sdk,
            call_times: opts.call_times.clone(),
            path_style,
            custom_endpoint: custom,
            region_source,
        }
    }

    /// The region requests are signed for.
    pub fn region(&self) -> String {
        self.sdk.region().map(|r| r.to_string()).unwrap_or_default()
    }

    /// Where [`Aws::region`] came from: `--region`, the AWS config chain
    /// (AWS_REGION, the profile), or the default (us-east-1).
    pub fn region_source(&self) -> &'static str {
        self.region_source
    }

    /// The S3 endpoint when it is not AWS's own (`--endpoint-url`,
    /// `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`).
    pub fn custom_s3_endpoint(&self) -> Option<String> {
        if !self.custom_endpoint {
            return None;
        }
        let from_env = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        from_env("AWS_ENDPOINT_URL_S3")
            .or_else(|| self.sdk.endpoint_url().map(str::to_string))
            .or_else(|| from_env("AWS_ENDPOINT_URL"))
    }

    /// STS, for who the credentials belong to.
    pub fn sts_client(&self) -> aws_sdk_sts::Client {
        aws_sdk_sts::Client::from_conf(aws_sdk_sts::config::Builder::from(&self.sdk).build())
    }

    /// IAM with SDK retries (and, at an emulator, `+` kept for spaces).
    pub fn iam_client(&self) -> aws_sdk_iam::Client {
        let mut iam = aws_sdk_iam::config::Builder::from(&self.sdk)
            .retry_config(RetryConfig::standard().with_max_attempts(5));
        if self.custom_endpoint {
            iam = iam.interceptor(crate::grants::iam::PlusForSpace);
        }
        if let Some(t) = &self.call_times {
            iam = iam.interceptor(t.clone());
        }
        aws_sdk_iam::Client::from_conf(iam.build())
    }

    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        let mut conf = aws_sdk_s3::config::Builder::from(&self.sdk)
            .force_path_style(self.path_style)
            .retry_config(s3_retry_config(std::env::var("AWS_MAX_ATTEMPTS").ok()));
        if let Some(t) = &self.call_times {
            conf = conf.interceptor(t.clone());
        }
        let conf = conf.build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    pub fn store(&self, bucket: &str) -> Arc<S3Store> {
        Arc::new(S3Store::new(self.s3_client(), bucket))
    }

    /// IAM (for grants) and STS (for the caller's identity), with SDK retries.
    pub fn grant_service(&self) -> Arc<dyn GrantService> {
        Arc::new(IamGrantService::new(self.iam_client(), self.sts_client()))
    }

    /// The KMS client with SDK retries off: [`Retrying`] owns the policy.
    pub fn kms(&self) -> KmsKeyService {
        let mut conf = aws_sdk_kms::config::Builder::from(&self.sdk)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .build(),
            );
        if let Some(t) = &self.call_times {
            conf = conf.interceptor(t.clone());
        }
        KmsKeyService::new(aws_sdk_kms::Client::from_conf(conf.build()))
    }
}

/// The read/write key stack over KMS, with the KMS handle kept for counting.
pub struct KeyStack {
    pub kms: KmsKeyService,
    pub service: Arc<dyn KeyService>,
}

impl KeyStack {
    pub fn new(kms: KmsKeyService, settings: &KeySettings) -> Self {
        let service = Arc::new(CachingKeyService::new(
            Retrying::new(kms.clone(), settings.retry),
            settings.cache_capacity,
            settings.cache_max_age,
        ));
        KeyStack { kms, service }
    }

    pub fn calls(&self) -> KmsCalls {
        self.kms.calls()
    }
}

/// Store, keys and grants for one bucket.
pub struct Wiring {
    pub s3: Arc<S3Store>,
    pub store: Arc<dyn ObjectStore>,
    pub keys: KeyStack,
    pub grant_service: Arc<dyn GrantService>,
}

impl Wiring {
    pub async fn new(opts: &AwsOptions, bucket: &str) -> Wiring {
        let aws = Aws::load(opts).await;
        let s3 = aws.store(bucket);
        Wiring {
            store: s3.clone(),
            s3,
            keys: KeyStack::new(aws.kms(), &KeySettings::default()),
            grant_service: aws.grant_service(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_requests_get_ten_attempts_unless_aws_max_attempts_says_otherwise() {
        let default = s3_retry_config(None);
        assert_eq!(default.max_attempts(), S3_MAX_ATTEMPTS);
        assert_eq!(default.initial_backoff(), Duration::from_millis(200));
        assert_eq!(default.max_backoff(), Duration::from_secs(5));
        assert_eq!(s3_retry_config(Some(" 3 ".into())).max_attempts(), 3);
        for junk in ["0", "-2", "ten", ""] {
            assert_eq!(
                s3_retry_config(Some(junk.into())).max_attempts(),
                S3_MAX_ATTEMPTS,
                "{junk:?}"
            );
        }
    }
}
