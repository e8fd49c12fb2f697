//! Sigstore bundle verification through `sigstore-verify` (sigstore-rust),
//! the library chosen in docs/decisions/0004: it checks SETs, inclusion
//! proofs and checkpoints, SCTs, RFC 3161 timestamps, Rekor v1 and v2 and the
//! tlog body against the signature, and passes the Sigstore conformance suite.
//!
//! This module is the only place that names that crate's types; the rest of
//! Portcullis sees [`SigstoreRoot`], [`Expected`], [`Verified`] and a
//! [`Failure`] carrying a stable [`Reason`].

use std::time::SystemTime;

use sigstore_verify::types::{Artifact, Bundle, DerPublicKey, Sha256Hash};
use sigstore_verify::{
    CertificateError, Error as SigError, PublicKeyVerificationPolicy, VerificationPolicy,
    VerificationResult, Verifier,
};

use super::Reason;
use crate::oci::Digest;

/// A Sigstore trusted root (Fulcio CAs, Rekor and CT log keys, TSAs), parsed
/// and checked once.
pub struct SigstoreRoot {
    verifier: Verifier,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RootError(String);

impl SigstoreRoot {
    /// Parses a `trusted_root.json`.
    pub fn from_json(json: &str) -> Result<SigstoreRoot, RootError> {
        let root = sigstore_verify::trust_root::TrustedRoot::from_json(json)
            .map_err(|e| RootError(format!("trusted root is not valid: {e}")))?;
        let verifier = Verifier::new(&root)
            .map_err(|e| RootError(format!("trusted root is not usable: {e}")))?;
        Ok(SigstoreRoot { verifier })
    }

    /// A root that trusts `ca_roots` (DER) as its only certificate
    /// authorities and keeps `base`'s transparency logs and TSAs: how a
    /// vendor PKI that logs to Rekor is verified at the logged time.
    pub fn with_certificate_authorities(
        base_json: &str,
        ca_roots: &[Vec<u8>],
    ) -> Result<SigstoreRoot, RootError> {
        use base64::Engine;
        let mut root: serde_json::Value = serde_json::from_str(base_json)
            .map_err(|e| RootError(format!("trusted root is not JSON: {e}")))?;
        let cas: Vec<serde_json::Value> = ca_roots
            .iter()
            .map(|der| {
                serde_json::json!({
                    "subject": {"organization": "vendor", "commonName": "vendor"},
                    "certChain": {"certificates": [{"rawBytes": base64::engine::general_purpose::STANDARD.encode(der)}]},
                    "validFor": {"start": "1970-01-01T00:00:00Z"},
                })
            })
            .collect();
        root["certificateAuthorities"] = serde_json::Value::Array(cas);
        root["ctlogs"] = serde_json::json!([]);
        SigstoreRoot::from_json(&root.to_string())
    }

    /// The public-good instance's root as embedded in the library. It is a
    /// snapshot; deployments that need current material point an authority
    /// at a `trusted_root.json` they refresh.
    pub fn public_good() -> Result<SigstoreRoot, RootError> {
        SigstoreRoot::from_json(sigstore_verify::trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT)
    }
}

/// A certificate identity: the SAN, exactly or by a regex that must match it
/// whole, and the OIDC issuer, exactly.
#[derive(Debug, Clone)]
pub struct Identity {
    pub issuer: String,
    pub subject: SubjectMatch,
}

#[derive(Debug, Clone)]
pub enum SubjectMatch {
    Exact(String),
    /// Compiled from `^(?:…)$`, so it always matches the whole SAN.
    Regex(regex::Regex),
}

impl SubjectMatch {
    /// A full-match regex; an invalid or oversized pattern is an error.
    pub fn regex(pattern: &str) -> Result<SubjectMatch, String> {
        regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(1 << 20)
            .build()
            .map(SubjectMatch::Regex)
            .map_err(|e| format!("invalid regex: {e}"))
    }

    pub fn matches(&self, san: &str) -> bool {
        match self {
            SubjectMatch::Exact(s) => s == san,
            SubjectMatch::Regex(r) => r.is_match(san),
        }
    }
}

/// Who must have signed.
pub enum Expected<'a> {
    /// A public key (the bundle must carry public-key material).
    Key(&'a DerPublicKey),
    /// A Fulcio-style certificate with this identity.
    Keyless {
        identity: &'a Identity,
        require_sct: bool,
    },
    /// Any certificate chaining to the root's certificate authorities (a
    /// vendor PKI expressed as a private trusted root); no SCT.
    AnyCertificate,
}

/// What a successful verification established.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The signer's identity (certificate SAN), when a certificate signed.
    pub identity: Option<String>,
    /// Every time proven by a verified SET or timestamp.
    pub signed_times: Vec<SystemTime>,
}

/// A refusal with its stable reason.
#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

/// Parses a bundle (v0.1–v0.3) from JSON.
pub fn parse_bundle(json: &str) -> Result<Bundle, Failure> {
    Bundle::from_json(json).map_err(|e| {
        Failure::new(
            Reason::InvalidSignature,
            format!("bundle is malformed: {e}"),
        )
    })
}

/// What was signed: bytes, or a sha256 digest of them.
pub enum Signed<'a> {
    Bytes(&'a [u8]),
    Digest(&'a Digest),
}

/// Verifies `bundle` over `signed` for `expected` against `root`.
pub fn verify_bundle(
    root: &SigstoreRoot,
    bundle: &Bundle,
    signed: Signed<'_>,
    expected: Expected<'_>,
) -> Result<Verified, Failure> {
    let artifact: Artifact<'_> = match signed {
        Signed::Bytes(b) => Artifact::from(b),
        Signed::Digest(d) => {
            let hash = Sha256Hash::from_hex(d.hex()).map_err(|_| {
                Failure::new(
                    Reason::InvalidSignature,
                    "only sha256 artifacts can be verified",
                )
            })?;
            Artifact::from(hash)
        }
    };
    let result = match expected {
        Expected::Key(key) => {
            let policy = PublicKeyVerificationPolicy::new(key.clone());
            root.verifier.verify(artifact, bundle, &policy)
        }
        Expected::Keyless {
            identity,
            require_sct,
        } => {
            let mut policy =
                VerificationPolicy::any_identity().require_issuer(identity.issuer.clone());
            if !require_sct {
                policy = policy.skip_sct();
            }
            root.verifier.verify(artifact, bundle, &policy)
        }
        Expected::AnyCertificate => root.verifier.verify(
            artifact,
            bundle,
            &VerificationPolicy::any_identity().skip_sct(),
        ),
    }
    .map_err(failure)?;
    if let Expected::Keyless { identity, .. } = expected {
        let san = result.identity().map(|s| s.as_str().to_string());
        match &san {
            Some(s) if identity.subject.matches(s) => {}
            _ => {
                return Err(Failure::new(
                    Reason::IdentityMismatch,
                    format!(
                        "certificate identity {} does not match",
                        san.as_deref().unwrap_or("(none)")
                    ),
                ));
            }
        }
    }
    Ok(verified(&result))
}

fn verified(result: &VerificationResult) -> Verified {
    Verified {
        identity: result.identity().map(|s| s.as_str().to_string()),
        signed_times: result
            .verified_timestamps()
            .iter()
            .map(|t| SystemTime::from(*t))
            .collect(),
    }
}

/// Maps the library's error categories (never its strings) to reasons.
fn failure(e: SigError) -> Failure {
    let reason = match &e {
        SigError::IdentityMismatch { .. } | SigError::IssuerMismatch { .. } => {
            Reason::IdentityMismatch
        }
        SigError::Certificate(
            CertificateError::Expired { .. } | CertificateError::NotYetValid { .. },
        ) => Reason::CertificateExpired,
        SigError::Certificate(CertificateError::Sct(_)) => Reason::TlogInvalid,
        SigError::Certificate(_) => Reason::UntrustedSigner,
        SigError::TransparencyLog(_) | SigError::Timestamp(_) => Reason::TlogInvalid,
        SigError::InvalidTrustRoot(_)
        | SigError::TrustRoot(_)
        | SigError::TrustedCertificate(_) => Reason::TrustUnavailable,
        _ => Reason::InvalidSignature,
    };
    Failure::new(reason, e.to_string())
}

/// Parses a PEM `PUBLIC KEY` (SPKI): ECDSA P-256/P-384, Ed25519 or RSA.
pub fn public_key_from_pem(pem: &str) -> Result<DerPublicKey, String> {
    DerPublicKey::from_pem(pem).map_err(|e| format!("not a PEM public key: {e}"))
}

/// What a bundle's signature is about, read without verifying anything.
pub enum BundleSubject {
    /// A DSSE envelope's in-toto payload (its statement names the subjects).
    Statement(Vec<u8>),
    /// A message signature over this digest.
    Digest(Digest),
    None,
}

pub fn bundle_subject(bundle: &Bundle) -> BundleSubject {
    use sigstore_verify::types::SignatureContent;
    match &bundle.content {
        SignatureContent::DsseEnvelope(env)
            if env.payload_type == "application/vnd.in-toto+json" =>
        {
            BundleSubject::Statement(env.payload.as_bytes().to_vec())
        }
        SignatureContent::MessageSignature(m) => m
            .message_digest
            .as_ref()
            .and_then(|d| {
                format!("sha256:{}", hex::encode(d.digest.as_bytes()))
                    .parse()
                    .ok()
            })
            .map_or(BundleSubject::None, BundleSubject::Digest),
        _ => BundleSubject::None,
    }
}
