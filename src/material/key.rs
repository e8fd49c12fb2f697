//! Public keys: parsed from PEM, and refused where they enter when
//! verification could never accept a signature by them.

use sigstore_verify::types::DerPublicKey;

/// Why a key (or a certificate's key) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not one PEM `PUBLIC KEY` block (the text is never quoted).
    #[error("not a PEM public key (one `PUBLIC KEY` block of SPKI)")]
    NotPem,
    /// An algorithm verification does not support.
    #[error("unsupported key: {0}")]
    Unsupported(String),
    /// A supported algorithm with parameters verification never accepts
    /// (RSA outside 2048–8192 bits, a compressed point, ...).
    #[error("unusable key: {0}")]
    Unusable(String),
    #[error("certificate is malformed: {0}")]
    MalformedCertificate(String),
    /// A certificate whose key is refused.
    #[error("certificate key: {0}")]
    CertificateKey(Box<KeyError>),
}

/// Parses a PEM `PUBLIC KEY` (SPKI): ECDSA P-256/P-384, Ed25519 or RSA.
/// The error never quotes the text (the PEM library's would quote its label
/// or bytes of it): a key path may name a private key or another secret.
pub fn public_key_from_pem(pem: &str) -> Result<DerPublicKey, KeyError> {
    DerPublicKey::from_pem(pem).map_err(|_| KeyError::NotPem)
}

/// Whether verification could ever accept a signature by `key`, by the
/// rules `sigstore-verify` applies when it verifies (not only when it
/// parses): ECDSA P-256 or P-384 with an uncompressed point, RSA of
/// 2048–8192 bits, Ed25519 or ML-DSA. Trust material is checked with it
/// where it enters (config files, URL sources, trusted roots), so a key that
/// would verify nothing is refused instead of replacing one that works.
pub fn usable_key(key: &DerPublicKey) -> Result<(), KeyError> {
    use sigstore_verify::crypto::{VerificationKey, validate_raw_public_key};
    let vk = VerificationKey::from_spki(key).map_err(|e| KeyError::Unsupported(e.to_string()))?;
    validate_raw_public_key(vk.scheme(), vk.as_bytes())
        .map_err(|e| KeyError::Unusable(e.to_string()))
}

/// As [`usable_key`], for the key of a CA (or TSA) certificate (DER): the
/// key certificates it issues are checked with.
pub fn usable_certificate_key(der: &[u8]) -> Result<(), KeyError> {
    use x509_cert::der::{Decode as _, Encode as _};
    let spki = x509_cert::Certificate::from_der(der)
        .and_then(|c| c.tbs_certificate.subject_public_key_info.to_der())
        .map_err(|e| KeyError::MalformedCertificate(e.to_string()))?;
    usable_key(&DerPublicKey::new(spki)).map_err(|e| KeyError::CertificateKey(Box::new(e)))
}
