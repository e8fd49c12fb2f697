//! What `pull` found about a manifest's signatures; `verify` judges it.

use bytes::Bytes;

/// At most this many signatures are considered per image (cosign's limit).
pub const MAX_SIGNATURES: usize = 100;
/// Largest signature payload, Sigstore bundle or signature manifest read.
pub const MAX_SIGNATURE_BYTES: u64 = 1 << 20;

/// At most this many attestations are considered per image.
pub const MAX_ATTESTATIONS: usize = 100;
/// Largest attestation envelope or bundle read (SBOMs can be large).
pub const MAX_ATTESTATION_BYTES: u64 = 16 << 20;
/// Largest sum of attestation sizes read for one image.
pub const MAX_ATTESTATION_TOTAL: u64 = 64 << 20;

/// Everything discovered for one manifest digest.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub signatures: Vec<Signature>,
    /// Gathered only when the policy requires attestations.
    pub attestations: Vec<Attestation>,
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

#[derive(Debug, Clone)]
pub enum Attestation {
    /// One layer of a cosign `.att` manifest: a DSSE envelope.
    Legacy(LegacyAttestation),
    /// A Sigstore bundle with DSSE content, from the referrers.
    Bundle(Bytes),
}

/// One layer of a cosign `sha256-<hex>.att` manifest.
#[derive(Debug, Clone)]
pub struct LegacyAttestation {
    /// The DSSE envelope (JSON; its digest already checked).
    pub envelope: Bytes,
    /// `dev.sigstore.cosign/certificate` (PEM).
    pub certificate: Option<String>,
    /// `dev.sigstore.cosign/chain` (PEM).
    pub chain: Option<String>,
    /// `dev.sigstore.cosign/bundle` (Rekor bundle JSON).
    pub rekor_bundle: Option<String>,
}
