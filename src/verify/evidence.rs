//! What `pull` found about a manifest's signatures; `verify` judges it.

use bytes::Bytes;

/// At most this many signatures are considered per image (cosign's limit).
pub const MAX_SIGNATURES: usize = 100;
/// Largest signature payload, Sigstore bundle or signature manifest read.
pub const MAX_SIGNATURE_BYTES: u64 = 1 << 20;

/// Everything discovered for one manifest digest.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub signatures: Vec<Signature>,
    /// Set when discovery hit a bound (too many signatures, an oversized
    /// layer): the image is denied `limit_exceeded`.
    pub limit_exceeded: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Signature {
    Legacy(LegacySignature),
    /// A Sigstore bundle (JSON) found through the referrers API or its tag.
    Bundle(Bytes),
}

/// One layer of a cosign `.sig` manifest.
#[derive(Debug, Clone)]
pub struct LegacySignature {
    /// The simple-signing payload blob (its digest already checked).
    pub payload: Bytes,
    /// `dev.cosignproject.cosign/signature` (base64).
    pub signature: String,
    /// `dev.sigstore.cosign/certificate` (PEM).
    pub certificate: Option<String>,
    /// `dev.sigstore.cosign/chain` (PEM).
    pub chain: Option<String>,
    /// `dev.sigstore.cosign/bundle` (Rekor bundle JSON).
    pub rekor_bundle: Option<String>,
}
