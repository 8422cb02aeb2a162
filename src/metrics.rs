//! A mount's Prometheus endpoint (`sealfs mount --metrics-addr
//! 127.0.0.1:9187`): `GET /metrics` answers, in the OpenMetrics text format
//! of the `prometheus-client` crate, the counters `sealfs status` shows and
//! a latency histogram of every S3 and KMS call attempt.
//!
//! Latencies are measured by [`CallTimes`], an interceptor on the AWS SDK
//! clients (one place for every operation, retries counted per attempt);
//! the counters are read at each scrape from the mount's stats, the same
//! JSON as its `user.sealfs.stats` attribute, so there is one source.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::Value;
use std::time::Instant;

/// Labels of one call's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `S3`, `KMS`, `IAM`, `STS`
    pub service: String,
    /// The API operation: `GetObject`, `Decrypt`...
    pub operation: String,
    /// `ok`, or `error` (any failed attempt: a status of 4xx/5xx, a reset)
    pub outcome: String,
}

type Latencies = Family<CallLabels, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    // 1 ms .. about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The SDK interceptor that times each attempt of each call.
#[derive(Clone, Debug)]
pub struct CallTimes {
    latencies: Latencies,
}

impl Default for CallTimes {
    fn default() -> Self {
        CallTimes {
            latencies: Family::new_with_constructor(histogram),
        }
    }
}

#[derive(Debug)]
struct AttemptStart(Instant);

impl Storable for AttemptStart {
    type Storer = StoreReplace<Self>;
}

impl CallTimes {
    pub fn observe(&self, labels: CallLabels, seconds: f64) {
        self.latencies.get_or_create(&labels).observe(seconds);
    }
}

impl Intercept for CallTimes {
    fn name(&self) -> &'static str {
        "CallTimes"
    }

    fn read_before_attempt(
        &self,
        _ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(AttemptStart(Instant::now()));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        ctx: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(start) = cfg.load::<AttemptStart>() else {
            return Ok(());
        };
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_string(), m.name().to_string()))
            .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
        let failed = match ctx.response() {
            Some(r) => !r.status().is_success(),
            None => true,
        };
        self.observe(
            CallLabels {
                service,
                operation,
                outcome: if failed { "error" } else { "ok" }.into(),
            },
            start.0.elapsed().as_secs_f64(),
        );
        Ok(())
    }
}

/// One scrape: the stats as counters and gauges, and the latencies.
pub fn render(stats: &Value, times: &CallTimes) -> String {
    let mut reg = Registry::with_prefix("sealfs");
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let counter = |v: u64| {
        let c: Counter = Counter::default();
        c.inc_by(v);
        c
    };
    let gauge = |v: u64| {
        let g: Gauge = Gauge::default();
        g.set(v as i64);
        g
    };
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Op {
        operation: String,
    }
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Errno {
        errno: String,
    }
    let per = |v: &Value| -> Vec<(String, u64)> {
        v.as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), n(v))).collect())
            .unwrap_or_default()
    };
    let s3: Family<Op, Counter> = Family::default();
    for (op, c) in per(&stats["s3"]) {
        s3.get_or_create(&Op { operation: op }).inc_by(c);
    }
    reg.register(
        "s3_requests",
        "S3 requests sent (an SDK retry counts once)",
        s3,
    );
    let kms: Family<Op, Counter> = Family::default();
    for (op, c) in per(&stats["kms"]) {
        kms.get_or_create(&Op { operation: op }).inc_by(c);
    }
    reg.register("kms_calls", "KMS calls made", kms);
    let a = &stats["activity"];
    let errors: Family<Errno, Counter> = Family::default();
    for (e, c) in per(&a["errors"]) {
        errors.get_or_create(&Errno { errno: e }).inc_by(c);
    }
    reg.register(
        "errors",
        "Failures answered to applications, by errno",
        errors,
    );
    reg.register(
        "conflict_copies",
        "Conflict copies made since the mount began",
        counter(n(&a["conflict_copies"])),
    );
    reg.register(
        "recovered_files",
        "Staged or spooled changes of a crashed mount uploaded",
        counter(n(&a["recovered"])),
    );
    reg.register(
        "uptime_seconds",
        "Seconds since the mount began",
        gauge(n(&a["uptime_s"])),
    );
    let spool = &stats["spool"];
    reg.register(
        "pending_uploads",
        "Uploads waiting in the write-back spool",
        gauge(n(&spool["pending_uploads"])),
    );
    reg.register(
        "failed_uploads",
        "Spooled uploads that failed and are retried",
        gauge(n(&spool["failed_uploads"])),
    );
    reg.register(
        "spool_bytes",
        "Bytes in the write-back spool",
        gauge(n(&spool["bytes"])),
    );
    let cache = &stats["read_cache"];
    reg.register(
        "read_cache_bytes",
        "Bytes in the encrypted read cache on disk",
        gauge(n(&cache["bytes"])),
    );
    reg.register(
        "read_cache_entries",
        "Entries in the encrypted read cache on disk",
        gauge(n(&cache["entries"])),
    );
    reg.register(
        "cached_inodes",
        "Entries the mount holds (the kernel's and the bounded cache)",
        gauge(n(&stats["inodes"])),
    );
    reg.register(
        "call_duration_seconds",
        "Latency of each attempt of each S3, KMS and IAM call",
        times.latencies.clone(),
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg).expect("writing to a String");
    out
}

/// Serves `GET /metrics` on `listener` until the runtime ends; anything
/// else is answered 404. `scrape` gives the text of one scrape.
pub async fn serve(
    listener: tokio::net::TcpListener,
    scrape: std::sync::Arc<dyn Fn() -> String + Send + Sync>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let scrape = scrape.clone();
        tokio::spawn(async move {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            // The request line and headers, at most 8 KiB, within 5 s.
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let line = String::from_utf8_lossy(req.split(|b| *b == b'\r').next().unwrap_or(&[]))
                .to_string();
            let (status, kind, body) = if line.starts_with("GET /metrics ") {
                (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    scrape(),
                )
            } else {
                ("404 Not Found", "text/plain", "GET /metrics\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_has_the_counters_and_the_latencies() {
        let times = CallTimes::default();
        let call = |op: &str, outcome: &str| CallLabels {
            service: "S3".into(),
            operation: op.into(),
            outcome: outcome.into(),
        };
        times.observe(call("GetObject", "ok"), 0.004);
        times.observe(call("GetObject", "ok"), 0.030);
        times.observe(call("PutObject", "error"), 2.0);
        let stats = serde_json::json!({
            "s3": {"GET": 5, "PUT": 7},
            "kms": {"Decrypt": 1},
            "activity": {"uptime_s": 60, "conflict_copies": 1, "recovered": 0, "errors": {"EIO": 2}},
            "spool": {"pending_uploads": 3, "failed_uploads": 0, "bytes": 4096},
            "read_cache": {"entries": 2, "bytes": 2048},
            "inodes": 9,
        });
        let text = render(&stats, &times);
        for want in [
            "sealfs_s3_requests_total{operation=\"PUT\"} 7",
            "sealfs_kms_calls_total{operation=\"Decrypt\"} 1",
            "sealfs_errors_total{errno=\"EIO\"} 2",
            "sealfs_conflict_copies_total 1",
            "sealfs_pending_uploads 3",
            "sealfs_spool_bytes 4096",
            "sealfs_read_cache_bytes 2048",
            "sealfs_call_duration_seconds_count{service=\"S3\",operation=\"GetObject\",outcome=\"ok\"} 2",
            "sealfs_call_duration_seconds_bucket{le=\"0.008\",service=\"S3\",operation=\"GetObject\",outcome=\"ok\"} 1",
            "sealfs_call_duration_seconds_count{service=\"S3\",operation=\"PutObject\",outcome=\"error\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
    }
}
