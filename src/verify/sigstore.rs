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
use super::x509::{self, VendorPki};
use crate::oci::Digest;

/// A Sigstore trusted root (Fulcio CAs, Rekor and CT log keys, TSAs), parsed
/// and checked once.
pub struct SigstoreRoot {
    verifier: Verifier,
    /// Set for a root built for a vendor PKI: the only CAs a certificate may
    /// chain to under [`Expected::AnyCertificate`]. A root without it (a
    /// Fulcio root) never verifies a certificate of unchecked identity.
    vendor: Option<VendorPki>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RootError(String);

impl SigstoreRoot {
    /// Parses a `trusted_root.json`.
    pub fn from_json(json: &str) -> Result<SigstoreRoot, RootError> {
        let root = sigstore_verify::trust_root::TrustedRoot::from_json(json)
            .map_err(|e| RootError(format!("trusted root is not valid: {e}")))?;
        usable_root(&root).map_err(|e| RootError(format!("trusted root is not usable: {e}")))?;
        let verifier = Verifier::new(&root)
            .map_err(|e| RootError(format!("trusted root is not usable: {e}")))?;
        Ok(SigstoreRoot {
            verifier,
            vendor: None,
        })
    }

    /// A root for a vendor PKI that logs to a transparency log: `base`'s
    /// logs and TSAs, and `pki`'s roots as its only certificate authorities
    /// (none when all are revoked: then it verifies no certificate). The
    /// certificate chain is checked by [`x509::verify_chain`] at every time
    /// the log or a TSA proves, with the vendor's EKU rules and the
    /// intermediates the signature carries.
    pub fn for_vendor_pki(base_json: &str, pki: &VendorPki) -> Result<SigstoreRoot, RootError> {
        use base64::Engine;
        let mut root: serde_json::Value = serde_json::from_str(base_json)
            .map_err(|e| RootError(format!("trusted root is not JSON: {e}")))?;
        let cas: Vec<serde_json::Value> = pki
            .roots()
            .iter()
            .map(|der| {
                serde_json::json!({
                    "subject": {"organization": "vendor", "commonName": "vendor"},
                    "uri": "urn:portcullis:vendor-ca",
                    "certChain": {"certificates": [{"rawBytes": base64::engine::general_purpose::STANDARD.encode(der)}]},
                    "validFor": {"start": "1970-01-01T00:00:00Z"},
                })
            })
            .collect();
        root["certificateAuthorities"] = serde_json::Value::Array(cas);
        root["ctlogs"] = serde_json::json!([]);
        let mut built = SigstoreRoot::from_json(&root.to_string())?;
        built.vendor = Some(pki.clone());
        Ok(built)
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
        Expected::AnyCertificate | Expected::VendorChain(_) => {
            // The chain is checked below against the vendor's CAs only.
            vendor_pki(root)?;
            root.verifier.verify(
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

fn vendor_pki(root: &SigstoreRoot) -> Result<&VendorPki, Failure> {
    root.vendor.as_ref().ok_or_else(|| {
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

/// Parses a PEM `PUBLIC KEY` (SPKI): ECDSA P-256/P-384, Ed25519 or RSA.
/// The error never quotes the text (the PEM library's would quote its label
/// or bytes of it): a key path may name a private key or another secret.
pub fn public_key_from_pem(pem: &str) -> Result<DerPublicKey, String> {
    DerPublicKey::from_pem(pem)
        .map_err(|_| "not a PEM public key (one `PUBLIC KEY` block of SPKI)".to_string())
}

/// Whether verification could ever accept a signature by `key`, by the
/// rules `sigstore-verify` applies when it verifies (not only when it
/// parses): ECDSA P-256 or P-384 with an uncompressed point, RSA of
/// 2048–8192 bits, Ed25519 or ML-DSA. Trust material is checked with it
/// where it enters (config files, URL sources, trusted roots), so a key that
/// would verify nothing is refused instead of replacing one that works.
pub fn usable_key(key: &DerPublicKey) -> Result<(), String> {
    use sigstore_verify::crypto::{VerificationKey, validate_raw_public_key};
    let vk = VerificationKey::from_spki(key).map_err(|e| format!("unsupported key: {e}"))?;
    validate_raw_public_key(vk.scheme(), vk.as_bytes()).map_err(|e| format!("unusable key: {e}"))
}

/// As [`usable_key`], for the key of a CA (or TSA) certificate (DER): the
/// key certificates it issues are checked with.
pub fn usable_certificate_key(der: &[u8]) -> Result<(), String> {
    use x509_cert::der::{Decode as _, Encode as _};
    let spki = x509_cert::Certificate::from_der(der)
        .and_then(|c| c.tbs_certificate.subject_public_key_info.to_der())
        .map_err(|e| format!("certificate is malformed: {e}"))?;
    usable_key(&DerPublicKey::new(spki)).map_err(|e| format!("certificate key: {e}"))
}

/// Every key and certificate in a trusted root is one verification can use:
/// its transparency and CT logs' keys (a CT log's RSA key may be bare
/// PKCS#1) and its CA and TSA certificates.
fn usable_root(root: &sigstore_verify::trust_root::TrustedRoot) -> Result<(), String> {
    use sigstore_verify::crypto::{SigningScheme, VerificationKey, validate_raw_public_key};
    for (i, log) in root.tlogs.iter().enumerate() {
        usable_key(&log.public_key.raw_bytes).map_err(|e| format!("tlogs[{i}]: {e}"))?;
    }
    for (i, log) in root.ctlogs.iter().enumerate() {
        let key = &log.public_key.raw_bytes;
        usable_key(key)
            .or_else(|e| {
                let pkcs1 = VerificationKey::from_der(key, SigningScheme::RsaPkcs1Sha256)
                    .map_err(|_| e.clone())?;
                validate_raw_public_key(pkcs1.scheme(), pkcs1.as_bytes())
                    .map_err(|e| format!("unusable key: {e}"))
            })
            .map_err(|e| format!("ctlogs[{i}]: {e}"))?;
    }
    let cas = root.certificate_authorities.iter().map(|ca| &ca.cert_chain);
    let tsas = root.timestamp_authorities.iter().map(|tsa| &tsa.cert_chain);
    for (what, chains) in [
        ("certificateAuthorities", cas.collect::<Vec<_>>()),
        ("timestampAuthorities", tsas.collect()),
    ] {
        for (i, chain) in chains.into_iter().enumerate() {
            for c in &chain.certificates {
                usable_certificate_key(c.raw_bytes.as_bytes())
                    .map_err(|e| format!("{what}[{i}]: {e}"))?;
            }
        }
    }
    Ok(())
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

    #[test]
    fn a_trusted_root_whose_log_key_verification_never_accepts_is_refused() {
        // RSA-1024 (SPKI, DER): it parses, but verification needs 2048–8192 bits.
        const RSA_1024: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDFqQ2LY++OJf0Mem3JdFaGBajewCwsfvARQd5TkikfkHZqgSNcCH7UhPSe5WSwxT10tWVqno6naqCcDxXe754ymNep6qtDzfNN7+Lg3fu6NOI6Mm1qA8syO0W+rxJey+wtcWas8lkXcP4QsU0owdxme71lAmcVu86fk4aia6NuAwIDAQAB";
        let json = sigstore_verify::trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT;
        assert!(SigstoreRoot::from_json(json).is_ok());
        let mut root: serde_json::Value = serde_json::from_str(json).unwrap();
        root["tlogs"][0]["publicKey"]["rawBytes"] = RSA_1024.into();
        root["tlogs"][0]["publicKey"]["keyDetails"] = "PKIX_RSA_PKCS1V15_2048_SHA256".into();
        let e = SigstoreRoot::from_json(&root.to_string()).err().unwrap();
        assert!(e.to_string().contains("tlogs[0]"), "{e}");
        assert!(e.to_string().contains("1024"), "{e}");
    }

    #[test]
    fn a_vendor_root_with_every_ca_revoked_still_loads_and_trusts_no_ca() {
        let json = sigstore_verify::trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT;
        let root = SigstoreRoot::for_vendor_pki(json, &VendorPki::default()).unwrap();
        assert!(root.vendor.as_ref().is_some_and(|p| p.roots().is_empty()));
    }
}
