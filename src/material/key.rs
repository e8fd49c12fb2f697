//! Public keys: parsed from PEM, and refused where they enter when
//! verification could never accept a signature by them.

use sigstore_verify::types::DerPublicKey;

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
