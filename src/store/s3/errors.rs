//! Every SDK error turned into our classified error: what the server said (status, code),
//! whether repeating the request can help, and one line a DBA can act on. What no retry can
//! fix (untrusted certificate, missing credentials) becomes a configuration error at once.

use std::time::SystemTime;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::result::DispatchFailure;

use crate::error::{Error, StoreFailure, one_line};

/// The chain of causes of an error as one line (`a: b: c`), without the debug dump that the
/// SDK's context display appends, and without repeating a cause already included.
pub(super) fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    one_line(&parts.join(": "))
}

pub(super) fn to_system_time(t: Option<&aws_smithy_types::DateTime>) -> Option<SystemTime> {
    t.and_then(|d| SystemTime::try_from(*d).ok())
}

pub(super) fn strip_quotes(s: &str) -> String {
    s.trim_matches('"').to_string()
}

/// S3 error codes that mean "try again later".
const RETRYABLE_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeTooSkewed",
];

/// Turns any SDK error into our classified error. A 404 becomes [`Error::NotFound`] unless the
/// bucket itself is missing.
pub(super) fn map_err<E>(
    op: &'static str,
    key: &str,
    endpoint: &str,
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_string);
    let (retryable, message) = match &err {
        SdkError::TimeoutError(_) => (true, format!("timed out talking to {endpoint}")),
        SdkError::DispatchFailure(d) => match dispatch(op, endpoint, d, causes(&err)) {
            Ok(classified) => classified,
            Err(permanent) => return permanent,
        },
        SdkError::ResponseError(_) => (
            true,
            format!("incomplete or invalid response from {endpoint}"),
        ),
        SdkError::ConstructionFailure(_) => (false, causes(&err)),
        _ => {
            let retryable = matches!(status, Some(408 | 429 | 500..=599))
                || code
                    .as_deref()
                    .is_some_and(|c| RETRYABLE_CODES.contains(&c));
            let msg = err
                .message()
                .map(one_line)
                .unwrap_or_else(|| "request refused".to_string());
            (retryable, msg)
        }
    };
    if status == Some(404) && !matches!(code.as_deref(), Some("NoSuchBucket" | "NoSuchUpload")) {
        return Error::NotFound {
            key: key.to_string(),
        };
    }
    if code.as_deref() == Some("NoSuchUpload") {
        return Error::NotFound {
            key: format!("{key} (multipart upload)"),
        };
    }
    Error::Store(StoreFailure {
        op,
        key: key.to_string(),
        status,
        code,
        message,
        retryable,
    })
}

/// A request that never got an answer: (retryable, message), or a configuration error that no
/// retry can fix.
fn dispatch(
    op: &str,
    endpoint: &str,
    d: &DispatchFailure,
    chain: String,
) -> std::result::Result<(bool, String), Error> {
    if chain.contains("no providers in chain provided credentials")
        || chain.contains("failed to load credentials")
    {
        return Err(Error::Config(format!(
            "{op}: no credentials found: set s3.access_key_id and s3.secret_access_key, or s3.profile / AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where a web identity or instance role provides them"
        )));
    }
    if let Some(i) = chain.find("invalid peer certificate") {
        // Not transient: retrying cannot make the certificate trusted.
        let reason = chain[i + "invalid peer certificate".len()..]
            .trim_start_matches(':')
            .trim();
        return Err(Error::Config(format!(
            "{op}: the TLS certificate of {endpoint} is not trusted ({reason}): name the PEM file of the CA that signed it in s3.ca_bundle, or add that CA to the system's trust store"
        )));
    }
    let why = if d.is_timeout() && chain.contains("read timeout") {
        // Connected, then no answer: a stalled server, not an unreachable one.
        "no answer within s3.read_timeout from"
    } else if d.is_timeout() {
        "timed out connecting (s3.connect_timeout) to"
    } else if d.is_io() {
        "connection failed to"
    } else {
        "request could not be sent to"
    };
    // A user error (a request we built wrong) will fail the same way again.
    Ok((!d.is_user(), format!("{why} {endpoint}: {chain}")))
}
