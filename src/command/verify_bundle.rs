//! `portcullis verify-bundle`: verify one Sigstore bundle, as the
//! sigstore-conformance CLI protocol asks.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Exit, Failure, Report};
use crate::material::{Identity, RootError, SigstoreRoot, SubjectMatch, public_key_from_pem};
use crate::oci::Digest;
use crate::oci::digest::DigestError;
use crate::verify::sigstore::{self as sig, Expected, Signed};

/// What to verify, and against what.
#[derive(Debug, Clone, Default)]
pub struct BundleRequest {
    /// The bundle (`*.sigstore.json`, v0.1 to v0.3).
    pub bundle: PathBuf,
    /// Expected certificate SAN (exact), with `certificate_oidc_issuer`.
    pub certificate_identity: Option<String>,
    pub certificate_oidc_issuer: Option<String>,
    /// PEM public key that must have signed (instead of an identity).
    pub key: Option<PathBuf>,
    /// `trusted_root.json`; `None`: the public-good root embedded at build time.
    pub trusted_root: Option<PathBuf>,
    /// The signed file, or `sha256:<hex>` of it.
    pub file_or_digest: String,
}

/// The bundle verified.
#[derive(Debug, Clone, Serialize)]
pub struct BundleVerified {
    /// The signer's certificate SAN, when a certificate signed.
    pub identity: Option<String>,
}

/// The bundle did not verify, or could not be checked (a file that cannot
/// be read, nothing to expect: no decision, exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", if .0.decided() { "rejected" } else { "error" }, .0)]
pub struct BundleRejected(#[from] Rejection);

#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    TrustedRoot(#[from] RootError),
    #[error("{0}")]
    Bundle(String),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(transparent)]
    Key(#[from] crate::material::KeyError),
    #[error("give --key, or --certificate-identity with --certificate-oidc-issuer")]
    NothingExpected,
    #[error("{}: {}", .0.reason, .0.message)]
    Signature(sig::Failure),
}

impl Rejection {
    /// Whether the bundle was judged (and rejected), rather than the
    /// request unable to be checked at all.
    fn decided(&self) -> bool {
        !matches!(self, Rejection::Read { .. } | Rejection::NothingExpected)
    }
}

impl Failure for BundleRejected {
    fn exit(&self) -> Exit {
        match self.0.decided() {
            true => Exit::Failure,
            false => Exit::NoDecision,
        }
    }
}

/// Verifies `req.bundle` over the file or digest, signed by the key or
/// identity the request expects.
pub fn verify_bundle(req: &BundleRequest) -> Result<BundleVerified, BundleRejected> {
    let root = match &req.trusted_root {
        Some(p) => SigstoreRoot::from_json(&read(p)?),
        None => SigstoreRoot::public_good(),
    }
    .map_err(Rejection::from)?;
    let bundle =
        sig::parse_bundle(&read(&req.bundle)?).map_err(|f| Rejection::Bundle(f.message))?;
    let (digest, bytes);
    let signed = match req.file_or_digest.strip_prefix("sha256:") {
        Some(_) => {
            digest = req
                .file_or_digest
                .parse::<Digest>()
                .map_err(Rejection::from)?;
            Signed::Digest(&digest)
        }
        None => {
            let path = Path::new(&req.file_or_digest);
            bytes = std::fs::read(path).map_err(|source| Rejection::Read {
                path: path.to_path_buf(),
                source,
            })?;
            Signed::Bytes(&bytes)
        }
    };
    let (key, identity);
    let expected = match (
        &req.key,
        &req.certificate_identity,
        &req.certificate_oidc_issuer,
    ) {
        (Some(path), _, _) => {
            key = public_key_from_pem(&read(path)?).map_err(Rejection::Key)?;
            Expected::Key(&key)
        }
        (None, Some(subject), Some(issuer)) => {
            identity = Identity {
                issuer: issuer.clone(),
                subject: SubjectMatch::Exact(subject.clone()),
            };
            Expected::Keyless {
                identity: &identity,
                require_sct: true,
            }
        }
        _ => return Err(Rejection::NothingExpected.into()),
    };
    let verified =
        sig::verify_bundle(&root, &bundle, signed, expected).map_err(Rejection::Signature)?;
    Ok(BundleVerified {
        identity: verified.identity,
    })
}

fn read(path: &Path) -> Result<String, Rejection> {
    std::fs::read_to_string(path).map_err(|source| Rejection::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl Report for BundleVerified {
    fn exit(&self) -> Exit {
        Exit::Success
    }
}

impl fmt::Display for BundleVerified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.identity {
            Some(i) => writeln!(f, "verified: signed by {i}"),
            None => writeln!(f, "verified"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Reason;

    #[test]
    fn a_verified_bundle_names_its_signer_when_a_certificate_signed() {
        let keyless = BundleVerified {
            identity: Some(
                "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1".into(),
            ),
        };
        assert_eq!(
            keyless.to_string(),
            "verified: signed by https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1\n"
        );
        assert_eq!(BundleVerified { identity: None }.to_string(), "verified\n");
        assert_eq!(keyless.exit(), Exit::Success);
    }

    #[test]
    fn a_rejection_says_rejected_with_the_reason_code_and_exits_1() {
        let rejected = BundleRejected(Rejection::Signature(sig::Failure {
            reason: Reason::IdentityMismatch,
            message: "certificate SAN is not the expected identity".into(),
        }));
        assert_eq!(
            rejected.to_string(),
            "rejected: identity_mismatch: certificate SAN is not the expected identity"
        );
        assert_eq!(rejected.exit(), Exit::Failure);
    }

    #[test]
    fn a_bundle_that_cannot_be_read_is_an_error_naming_its_path_and_exits_2() {
        let dir = tempfile::tempdir().unwrap();
        let req = BundleRequest {
            bundle: dir.path().join("missing.sigstore.json"),
            file_or_digest: format!("sha256:{}", "0".repeat(64)),
            ..BundleRequest::default()
        };
        let e = verify_bundle(&req).map(|_| ()).unwrap_err();
        assert!(e.to_string().starts_with("error: "), "{e}");
        assert!(e.to_string().contains("missing.sigstore.json: "), "{e}");
        assert_eq!(e.exit(), Exit::NoDecision);
    }
}
