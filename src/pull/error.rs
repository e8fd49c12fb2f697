//! Why a pull did not produce a manifest or blob.

use crate::oci::Digest;
use crate::upstream::UpstreamError;
use crate::verify::Denial;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("denied: {}", .0.message)]
    Denied(Denial),
    #[error("upstream sent an invalid manifest: {error}")]
    ManifestInvalid {
        error: crate::oci::media::ManifestError,
        /// The digest of the refused bytes, once known.
        digest: Option<Digest>,
    },
    #[error("requested range cannot be satisfied")]
    RangeNotSatisfiable { size: u64 },
    #[error("the proxy failed: {0}")]
    Internal(String),
    /// A bound on decisions in flight was exhausted; retry shortly.
    #[error("{0}")]
    Busy(String),
}

impl PullError {
    /// Names the manifest a denial or refusal was about, if it does not yet.
    pub(super) fn about(self, digest: Option<&Digest>) -> PullError {
        match self {
            PullError::Denied(mut d) => {
                d.digest = d.digest.or_else(|| digest.cloned());
                PullError::Denied(d)
            }
            PullError::ManifestInvalid { error, digest: d } => PullError::ManifestInvalid {
                error,
                digest: d.or_else(|| digest.cloned()),
            },
            other => other,
        }
    }
}
