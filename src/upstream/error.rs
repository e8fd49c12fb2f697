//! Upstream failures. Each knows its metric kind and is the upstream's
//! fault, so it maps to 502/503/504 (or 404 for an authoritative not-found).

use super::credentials::CredentialsError;
use crate::oci::Digest;

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream could not be reached: {0}")]
    Connect(String),
    #[error("upstream did not answer in time")]
    Timeout,
    #[error("upstream answered {0}")]
    Unavailable(u16),
    #[error("upstream rate limit reached")]
    RateLimited { retry_after: Option<u64> },
    #[error("upstream refused the proxy's credentials")]
    Unauthorized,
    #[error("upstream token realm is not an allowed host")]
    RealmRefused,
    #[error("upstream has no such content")]
    NotFound,
    #[error("upstream answered unexpected status {0}")]
    Status(u16),
    #[error("upstream body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error(
        "upstream sent content that does not match its digest (expected {expected}, got {actual})"
    )]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("upstream body ended after {received} of {expected} bytes")]
    Truncated { expected: u64, received: u64 },
    #[error("upstream sent a malformed answer: {0}")]
    BadResponse(String),
    #[error("upstream credentials unavailable: {0}")]
    Credentials(String),
    #[error("too many requests to the upstream are in flight")]
    Saturated,
}

impl UpstreamError {
    pub fn from_reqwest(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            UpstreamError::Timeout
        } else if e.is_connect() || e.is_body() || e.is_decode() || e.is_request() {
            UpstreamError::Connect(source_chain(e))
        } else {
            UpstreamError::BadResponse(source_chain(e))
        }
    }

    pub fn credentials(e: CredentialsError) -> Self {
        UpstreamError::Credentials(e.to_string())
    }

    /// Bounded metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Unavailable(_) => "unavailable",
            UpstreamError::RateLimited { .. } => "rate_limited",
            UpstreamError::Unauthorized => "unauthorized",
            UpstreamError::RealmRefused => "realm_refused",
            UpstreamError::NotFound => "not_found",
            UpstreamError::Status(_) => "status",
            UpstreamError::TooLarge { .. } => "too_large",
            UpstreamError::DigestMismatch { .. } => "digest_mismatch",
            UpstreamError::Truncated { .. } => "truncated",
            UpstreamError::BadResponse(_) => "bad_response",
            UpstreamError::Credentials(_) => "credentials",
            UpstreamError::Saturated => "saturated",
        }
    }

    /// Whether the upstream is down (so stale tag mappings may be served),
    /// as opposed to answering wrongly.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_)
                | UpstreamError::Truncated { .. }
                | UpstreamError::Timeout
                | UpstreamError::Unavailable(_)
                | UpstreamError::RateLimited { .. }
                | UpstreamError::Saturated
        )
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
