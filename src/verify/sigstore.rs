//! Sigstore bundle verification through `sigstore-verify` (sigstore-rust),
//! the library chosen in docs/decisions/0004: it checks SETs, inclusion
//! proofs and checkpoints, SCTs, RFC 3161 timestamps, Rekor v1 and v2 and the
//! tlog body against the signature, and passes the Sigstore conformance suite.
//!
//! Bundles are verified here and nowhere else; callers see [`Expected`],
//! [`Verified`] and a [`Failure`] carrying a stable [`Reason`]. The trust
//! material verified against ([`SigstoreRoot`], keys, identities) is
//! parsed and checked in [`crate::material`].

use std::borrow::Cow;
use std::time::SystemTime;

use sigstore_verify::crypto::VerificationKey;
use sigstore_verify::types::{Artifact, Bundle, DerPublicKey, Sha256Hash, SignatureBytes};
use sigstore_verify::{
    CertificateError, Error as SigError, PublicKeyVerificationPolicy, VerificationPolicy,
    VerificationResult,
};

use super::Reason;
use super::x509;
use crate::material::{Identity, SigstoreRoot, VendorPki};
use crate::oci::Digest;

/// Who must have signed.
pub enum Expected<'a> {
    /// A public key (the bundle must carry public-key material).
    Key(&'a DerPublicKey),
    /// A Fulcio-style certificate with this identity.
    Keyless {
        identity: &'a Identity,
        require_sct: bool,
    },
    /// A certificate of any identity issued under the vendor PKI the root
    /// was built for ([`SigstoreRoot::for_vendor_pki`]), through the
    /// intermediates the bundle carries; no SCT. Refused on any other root.
    AnyCertificate,
    /// As [`Expected::AnyCertificate`], with these intermediates (DER) too:
    /// a legacy `.sig`'s chain annotation, which the converted bundle lacks.
    VendorChain(&'a [Vec<u8>]),
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
#[derive(Debug, Clone, Copy)]
pub enum Signed<'a> {
    Bytes(&'a [u8]),
    Digest(&'a Digest),
}

/// What a raw signature is over, when it is checked with a key directly.
#[derive(Debug, Clone)]
pub enum Message<'a> {
    /// The bytes themselves (a simple-signing payload, DSSE's PAE).
    Bytes(Cow<'a, [u8]>),
    /// A sha256 digest, signed as it is (a bundle's message signature).
    Sha256Digest(&'a [u8]),
}

/// Whether `key` made `signature` over `message`.
pub fn key_made(key: &VerificationKey, message: &Message<'_>, signature: &[u8]) -> bool {
    let signature = SignatureBytes::new(signature.to_vec());
    match message {
        Message::Bytes(bytes) => key.verify(bytes, &signature).is_ok(),
        Message::Sha256Digest(digest) => key.verify_prehashed(digest, &signature).is_ok(),
    }
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
            root.verifier().verify(artifact, bundle, &policy)
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
            root.verifier().verify(artifact, bundle, &policy)
        }
        Expected::AnyCertificate | Expected::VendorChain(_) => {
            // The chain is checked below against the vendor's CAs only.
            vendor_pki(root)?;
            root.verifier().verify(
                artifact,
                bundle,
                &VerificationPolicy::any_identity().skip_certificate_chain(),
            )
        }
    }
    .map_err(failure)?;
    if let Expected::AnyCertificate | Expected::VendorChain(_) = expected {
        let extra = match expected {
            Expected::VendorChain(extra) => extra,
            _ => &[],
        };
        verify_vendor_chain(vendor_pki(root)?, bundle, extra, &result)?;
    }
    if let Expected::Keyless { identity, .. } = expected {
        signed_by(identity, &result)?;
    }
    Ok(verified(&result))
}

/// The verified certificate's identity (SAN) is the one expected.
fn signed_by(identity: &Identity, result: &VerificationResult) -> Result<(), Failure> {
    let san = result.identity().map(|s| s.as_str().to_string());
    match &san {
        Some(s) if identity.subject.matches(s) => Ok(()),
        _ => Err(Failure::new(
            Reason::IdentityMismatch,
            format!(
                "certificate identity {} does not match",
                san.as_deref().unwrap_or("(none)")
            ),
        )),
    }
}

fn vendor_pki(root: &SigstoreRoot) -> Result<&VendorPki, Failure> {
    root.vendor().ok_or_else(|| {
        Failure::new(
            Reason::UntrustedSigner,
            "this trusted root was not built for a vendor PKI: it vouches for no certificate of unchecked identity",
        )
    })
}

/// The bundle's leaf chains to `pki` through the bundle's intermediates and
/// `extra` at every time the verification proved (never at none).
fn verify_vendor_chain(
    pki: &VendorPki,
    bundle: &Bundle,
    extra: &[Vec<u8>],
    result: &VerificationResult,
) -> Result<(), Failure> {
    use sigstore_verify::types::bundle::VerificationMaterialContent as Content;
    let (leaf, mut intermediates): (Vec<u8>, Vec<Vec<u8>>) =
        match &bundle.verification_material.content {
            Content::Certificate(c) => (c.raw_bytes.as_bytes().to_vec(), Vec::new()),
            Content::X509CertificateChain { certificates } => match certificates.split_first() {
                Some((leaf, rest)) => (
                    leaf.raw_bytes.as_bytes().to_vec(),
                    rest.iter()
                        .map(|c| c.raw_bytes.as_bytes().to_vec())
                        .collect(),
                ),
                None => return Err(no_certificate()),
            },
            _ => return Err(no_certificate()),
        };
    intermediates.extend(extra.iter().cloned());
    let times = result.verified_timestamps();
    if times.is_empty() {
        return Err(Failure::new(
            Reason::TlogInvalid,
            "no verified signing time to check the vendor certificate at",
        ));
    }
    for t in times {
        x509::verify_chain(&leaf, &intermediates, pki, SystemTime::from(*t))?;
    }
    Ok(())
}

fn no_certificate() -> Failure {
    Failure::new(
        Reason::UntrustedSigner,
        "no certificate: not signed under a vendor PKI",
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// A well-formed bundle whose certificate any Fulcio root would refuse.
    fn bundle() -> Bundle {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let json = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"certificate": {"rawBytes": b64(cert.der())}, "tlogEntries": []},
            "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": b64(&[0; 32])}, "signature": b64(b"sig")},
        });
        parse_bundle(&json.to_string()).unwrap()
    }

    #[test]
    fn any_certificate_is_refused_on_a_root_not_built_for_a_vendor_pki() {
        let root = SigstoreRoot::public_good().unwrap();
        let subject = Digest::sha256_of(b"m");
        let e = verify_bundle(
            &root,
            &bundle(),
            Signed::Digest(&subject),
            Expected::AnyCertificate,
        )
        .unwrap_err();
        assert_eq!(e.reason, Reason::UntrustedSigner);
        assert!(e.message.contains("not built for a vendor PKI"), "{e:?}");
        let e = verify_bundle(
            &root,
            &bundle(),
            Signed::Digest(&subject),
            Expected::VendorChain(&[]),
        )
        .unwrap_err();
        assert_eq!(e.reason, Reason::UntrustedSigner);
    }
}
