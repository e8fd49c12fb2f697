//! Turning outcomes into HTTP responses, in one place: whose fault an error
//! is decides its status; bodies are OCI error JSON built from types, and
//! internal details are logged, not sent.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

use hyper::ext::ReasonPhrase;

use crate::audit::DecisionId;
use crate::oci::{ErrorCode, error_body};
use crate::pull::PullError;
use crate::upstream::UpstreamError;
use crate::verify::Denial;

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

/// A 403 `DENIED`. With the decision's id (a manifest decided and
/// audited), the body, the `Warning` header and the HTTP reason phrase all
/// name it: containerd, kubelet and Docker print only the status line, so
/// the reason and the id travel there too.
pub fn denied(d: &Denial, id: Option<DecisionId>) -> Response<Body> {
    let detail = serde_json::json!({
        "reason": d.reason.as_str(),
        "policy": d.policy.as_deref(),
        "decision_id": id.as_ref().map(DecisionId::as_str),
    });
    let said = match id {
        Some(id) => format!("{} (decision {id})", d.reason),
        None => d.reason.to_string(),
    };
    let mut r = oci_error(
        StatusCode::FORBIDDEN,
        ErrorCode::Denied,
        &format!("{}: {}", said, d.message),
        Some(&detail),
    );
    // HEAD answers have no body; containerd reports Warning headers.
    let warning = format!("299 - \"portcullis denied: {said}\"");
    if let Ok(v) = HeaderValue::from_str(&warning) {
        r.headers_mut().insert(header::WARNING, v);
    }
    // Policy names and reasons are plain words; anything a reason phrase
    // may not hold drops the phrase, never the answer.
    if let Ok(phrase) = ReasonPhrase::try_from(format!("Forbidden: denied by policy, {said}")) {
        r.extensions_mut().insert(phrase);
    }
    r
}

/// Maps a pull failure to its response.
pub fn pull_error(e: &PullError, missing: Missing) -> Response<Body> {
    match e {
        PullError::Denied(d) => denied(d, None),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Reason;

    #[test]
    fn a_decided_denial_names_reason_and_decision_in_body_warning_and_reason_phrase() {
        let id = DecisionId::new();
        let d = Denial::new(Reason::Unsigned, "no signature").by_policy(Some("prod".into()));
        let r = denied(&d, Some(id));
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let phrase = r
            .extensions()
            .get::<ReasonPhrase>()
            .map(|p| p.as_bytes().to_vec());
        assert_eq!(
            phrase,
            Some(format!("Forbidden: denied by policy, unsigned (decision {id})").into_bytes())
        );
        let warning = r.headers()[header::WARNING].to_str().unwrap_or_default();
        assert!(
            warning.contains(&format!("unsigned (decision {id})")),
            "{warning}"
        );
    }

    #[test]
    fn decision_ids_are_sixteen_hex_digits_and_differ() {
        let (a, b) = (DecisionId::new(), DecisionId::new());
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
