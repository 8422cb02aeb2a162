//! One place that turns an AWS SDK error into a small set of classes.
//!
//! Emulators and real AWS disagree on the shape of a denial (moto sends S3
//! denials as an unmodelled `AccessDenied`, a bare 403 on HEAD, and an XML 403
//! from KMS), so classification looks at the error code first and the HTTP
//! status second, never at the Rust error type alone.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Denied,
    NoCredentials,
    Throttled,
    NotFound,
    PreconditionFailed,
    Unreachable,
    Other,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub class: Class,
    pub code: Option<String>,
    pub status: Option<u16>,
    pub message: String,
}

pub fn classify<E>(err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let body = err
        .raw_response()
        .and_then(|r| r.body().bytes())
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    // Emulators answer some errors in an XML shape the SDK does not model;
    // the code and message are still in the body.
    let code = err
        .code()
        .map(str::to_string)
        .or_else(|| xml_field(&body, "Code"));
    let status = err.raw_response().map(|r| r.status().as_u16());
    let message = err
        .message()
        .map(str::to_string)
        .or_else(|| xml_field(&body, "Message"))
        .unwrap_or_else(|| DisplayErrorContext(err).to_string());
    let class = match err {
        SdkError::TimeoutError(_) => Class::Unreachable,
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => Class::Unreachable,
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_)
            if message.to_ascii_lowercase().contains("credentials") =>
        {
            Class::NoCredentials
        }
        SdkError::DispatchFailure(_) => Class::Unreachable,
        _ => classify_code(code.as_deref(), status),
    };
    Failure {
        class,
        code,
        status,
        message,
    }
}

/// The text of the first `<name>` element of an XML error body.
fn xml_field(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("<{name}>"))? + name.len() + 2;
    let len = body[start..].find(&format!("</{name}>"))?;
    Some(body[start..start + len].to_string()).filter(|s| !s.is_empty())
}

fn classify_code(code: Option<&str>, status: Option<u16>) -> Class {
    match code {
        Some(
            "AccessDenied"
            | "AccessDeniedException"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "UnrecognizedClientException"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "InvalidClientTokenId"
            | "AllAccessDisabled",
        ) => Class::Denied,
        Some(
            "ThrottlingException"
            | "Throttling"
            | "ThrottledException"
            | "SlowDown"
            | "RequestLimitExceeded"
            | "TooManyRequestsException"
            | "RequestThrottled",
        ) => Class::Throttled,
        Some("NoSuchKey" | "NotFound" | "NoSuchBucket" | "NotFoundException" | "NoSuchUpload") => {
            Class::NotFound
        }
        Some("PreconditionFailed" | "ConditionalRequestConflict") => Class::PreconditionFailed,
        _ => match status {
            Some(401 | 403) => Class::Denied,
            Some(404) => Class::NotFound,
            Some(409 | 412) => Class::PreconditionFailed,
            Some(429) => Class::Throttled,
            Some(500..=599) => Class::Unreachable,
            _ => Class::Other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_fields() {
        let body = "<ErrorResponse><Errors><Error><Code>NoSuchEntity</Code><Message>no user</Message></Error></Errors></ErrorResponse>";
        assert_eq!(xml_field(body, "Code").as_deref(), Some("NoSuchEntity"));
        assert_eq!(xml_field(body, "Message").as_deref(), Some("no user"));
        assert_eq!(xml_field(body, "Other"), None);
    }

    #[test]
    fn codes_win_over_status() {
        assert_eq!(
            classify_code(Some("AccessDenied"), Some(400)),
            Class::Denied
        );
        assert_eq!(classify_code(Some("SlowDown"), Some(503)), Class::Throttled);
        assert_eq!(
            classify_code(Some("PreconditionFailed"), None),
            Class::PreconditionFailed
        );
        assert_eq!(classify_code(None, Some(403)), Class::Denied);
        assert_eq!(classify_code(None, Some(404)), Class::NotFound);
        assert_eq!(classify_code(None, Some(412)), Class::PreconditionFailed);
        assert_eq!(classify_code(None, Some(502)), Class::Unreachable);
        assert_eq!(classify_code(Some("Weird"), Some(400)), Class::Other);
    }
}
