//! Turning outcomes into HTTP responses, in one place: whose fault an error
//! is decides its status; bodies are OCI error JSON built from types, and
//! internal details are logged, not sent.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

use crate::oci::{ErrorCode, error_body};
use crate::pull::PullError;
use crate::upstream::UpstreamError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// An OCI error response.
pub fn oci_error(
    status: StatusCode,
    code: ErrorCode,
    message: &str,
    detail: Option<&serde_json::Value>,
) -> Response<Body> {
    let mut r = Response::new(full(error_body(code, message, detail)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// What was not found, for the 404 code.
#[derive(Clone, Copy)]
pub enum Missing {
    Manifest,
    Blob,
    Name,
}

/// Maps a pull failure to its response.
pub fn pull_error(e: &PullError, missing: Missing) -> Response<Body> {
    match e {
        PullError::Denied(d) => {
            let detail = serde_json::json!({
                "reason": d.reason.as_str(),
                "policy": d.policy.as_deref(),
            });
            let mut r = oci_error(
                StatusCode::FORBIDDEN,
                ErrorCode::Denied,
                &format!("{}: {}", d.reason, d.message),
                Some(&detail),
            );
            // HEAD answers have no body; containerd reports Warning headers.
            let warning = format!("299 - \"portcullis denied: {}\"", d.reason);
            if let Ok(v) = HeaderValue::from_str(&warning) {
                r.headers_mut().insert(header::WARNING, v);
            }
            r
        }
        PullError::Upstream(u) => upstream_error(u, missing),
        PullError::ManifestInvalid { .. } => {
            tracing::warn!(error = %e, "upstream manifest refused");
            oci_error(
                StatusCode::BAD_GATEWAY,
                ErrorCode::ManifestInvalid,
                "upstream sent an invalid manifest",
                None,
            )
        }
        PullError::RangeNotSatisfiable { size } => {
            let mut r = oci_error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::SizeInvalid,
                "range not satisfiable",
                None,
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            r
        }
        PullError::Busy(why) => {
            let mut r = oci_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                why,
                None,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        PullError::Internal(_) => {
            tracing::error!(error = %e, "request failed inside the proxy");
            oci_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Unavailable,
                "internal error",
                None,
            )
        }
    }
}

fn upstream_error(e: &UpstreamError, missing: Missing) -> Response<Body> {
    let (status, code, message) = match e {
        UpstreamError::NotFound => {
            let code = match missing {
                Missing::Manifest => ErrorCode::ManifestUnknown,
                Missing::Blob => ErrorCode::BlobUnknown,
                Missing::Name => ErrorCode::NameUnknown,
            };
            return oci_error(StatusCode::NOT_FOUND, code, "not found upstream", None);
        }
        UpstreamError::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Unavailable,
            "upstream timed out",
        ),
        UpstreamError::Connect(_)
        | UpstreamError::Truncated { .. }
        | UpstreamError::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "upstream unavailable",
        ),
        UpstreamError::RateLimited { retry_after } => {
            let mut r = oci_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "upstream rate limit reached",
                None,
            );
            if let Some(v) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
        UpstreamError::Saturated => {
            let mut r = oci_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "too many requests to the upstream are in flight; retry shortly",
                None,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        UpstreamError::Unauthorized
        | UpstreamError::RealmRefused
        | UpstreamError::Credentials(_) => (
            StatusCode::BAD_GATEWAY,
            ErrorCode::Unavailable,
            "upstream refused the proxy's credentials",
        ),
        UpstreamError::DigestMismatch { .. } => (
            StatusCode::BAD_GATEWAY,
            ErrorCode::Unavailable,
            "upstream content does not match its digest",
        ),
        UpstreamError::TooLarge { .. } => (
            StatusCode::BAD_GATEWAY,
            ErrorCode::Unavailable,
            "upstream content exceeds the size limit",
        ),
        UpstreamError::Status(_) | UpstreamError::BadResponse(_) => (
            StatusCode::BAD_GATEWAY,
            ErrorCode::Unavailable,
            "upstream sent an unusable answer",
        ),
    };
    tracing::warn!(error = %e, status = status.as_u16(), "upstream fault");
    oci_error(status, code, message, None)
}
