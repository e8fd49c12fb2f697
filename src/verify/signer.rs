//! Who signed: one authority's material (keys, a keyless identity or
//! vendor CA roots) matched against one piece of signed evidence and its
//! transparency-log entry. Signatures ([`super::check`]) and attestations
//! ([`super::attest`]), from cosign's legacy layers or from Sigstore
//! bundles, are all matched here, so each rule and each failure is written
//! once.

use std::borrow::Cow;
use std::time::SystemTime;

use sigstore_verify::crypto::VerificationKey;
use sigstore_verify::types::{Bundle, DerPublicKey};

use super::Reason;
use super::legacy::{self, Material as LegacyMaterial};
use super::sigstore::{self, Expected, Failure, Message, Signed};
use super::x509;
use crate::material::{Identity, SigstoreRoot, VendorPki};
use crate::trust::{Authority, Material};

/// What a legacy layer holds, for the wording of its failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noun {
    Signature,
    Attestation,
}

/// Builds the bundle a legacy layer's Rekor bundle annotation amounts to,
/// for one signature and the material that made it.
pub type ToBundle<'a> = &'a dyn Fn(&[u8], &str, LegacyMaterial<'_>) -> Result<Bundle, Failure>;

/// Where the evidence's certificates and log entry are.
pub enum Source<'a> {
    /// A Sigstore bundle: its certificates and log entries (or timestamps)
    /// are inside it, and the library verifies it whole.
    Bundle(&'a Bundle),
    /// A legacy cosign layer: PEM certificate and chain annotations, and a
    /// Rekor bundle annotation that `to_bundle` converts for the signature
    /// that matched.
    Legacy {
        noun: Noun,
        certificate: Option<&'a str>,
        chain: Option<&'a str>,
        rekor: Option<&'a str>,
        to_bundle: ToBundle<'a>,
    },
}

/// One piece of signed evidence, as matching needs it.
pub struct SignedEvidence<'a> {
    /// What the raw signatures are over.
    pub message: Message<'a>,
    /// The candidate signatures, in order: a DSSE envelope may carry
    /// several, and the first that matches counts.
    pub signatures: Vec<&'a [u8]>,
    /// What a log entry must prove was signed.
    pub logged: Signed<'a>,
    pub source: Source<'a>,
}

/// Matches `evidence` against `authority`'s material: the times its log
/// or timestamp evidence proved (none when no log entry was verified), or
/// the failure, with the most specific reason found.
pub fn match_signer(
    authority: &Authority,
    evidence: &SignedEvidence<'_>,
    now: SystemTime,
) -> Result<Vec<SystemTime>, Failure> {
    match &authority.material {
        Material::Keys(keys) => by_key(authority, keys, evidence),
        Material::Keyless(identity) => by_identity(authority, identity, evidence),
        Material::CaRoots(pki) => by_vendor_ca(authority, pki, evidence, now),
    }
}

/// Signed by one of the authority's keys. A bundle is verified whole (the
/// library insists on its log or timestamp evidence); a legacy layer's log
/// entry is verified when there is one and a root to check it against.
fn by_key(
    authority: &Authority,
    keys: &[(String, DerPublicKey)],
    evidence: &SignedEvidence<'_>,
) -> Result<Vec<SystemTime>, Failure> {
    let (key, sig) = evidence
        .signatures
        .iter()
        .find_map(|sig| matching_key(keys, &evidence.message, sig).map(|k| (k, *sig)))
        .ok_or_else(|| untrusted(evidence.source.not_signed_by_keys()))?;
    let expected = Expected::Key(key);
    if let Source::Bundle(bundle) = &evidence.source {
        return verified(root(authority)?, bundle, evidence.logged, expected);
    }
    match evidence.log_entry(authority, sig, LegacyMaterial::PublicKey)? {
        Some((root, bundle)) => verified(root, &bundle, evidence.logged, expected),
        None => evidence.source.unlogged(authority).map(|()| Vec::new()),
    }
}

/// Signed keylessly by the authority's identity: a log entry is required,
/// and the library checks the signature with the certificate's key.
fn by_identity(
    authority: &Authority,
    identity: &Identity,
    evidence: &SignedEvidence<'_>,
) -> Result<Vec<SystemTime>, Failure> {
    let bundle = match &evidence.source {
        Source::Bundle(bundle) => Cow::Borrowed(*bundle),
        Source::Legacy {
            noun,
            certificate,
            rekor,
            to_bundle,
            ..
        } => {
            let what = noun.as_str();
            let certificate = certificate
                .ok_or_else(|| untrusted(&format!("no certificate: not a keyless {what}")))?;
            let leaf = leaf_of(certificate)?;
            let rekor = rekor.ok_or_else(|| {
                Failure::new(
                    Reason::TlogInvalid,
                    format!("keyless {what} without a transparency-log entry"),
                )
            })?;
            let sig = evidence.signatures.first().copied().unwrap_or_default();
            Cow::Owned(to_bundle(sig, rekor, LegacyMaterial::Certificate(&leaf))?)
        }
    };
    let expected = Expected::Keyless {
        identity,
        require_sct: authority.require_sct,
    };
    verified(root(authority)?, &bundle, evidence.logged, expected)
}

/// Signed with a certificate issued under the authority's vendor PKI: its
/// key made the signature, and the chain holds at the times a verified log
/// entry proves, or (with no log entry, when the authority allows that) now.
fn by_vendor_ca(
    authority: &Authority,
    pki: &VendorPki,
    evidence: &SignedEvidence<'_>,
    now: SystemTime,
) -> Result<Vec<SystemTime>, Failure> {
    let (leaf, intermediates) = evidence.source.vendor_certificates()?;
    let sig = evidence.certificate_signature(&leaf)?;
    match evidence.log_entry(authority, sig, LegacyMaterial::Certificate(&leaf))? {
        Some((root, bundle)) => {
            let expected = match &evidence.source {
                // The bundle carries its intermediates itself.
                Source::Bundle(_) => Expected::AnyCertificate,
                // The converted bundle lacks the chain annotation's.
                Source::Legacy { .. } => Expected::VendorChain(&intermediates),
            };
            verified(root, &bundle, evidence.logged, expected)
        }
        None => {
            evidence.source.unlogged(authority)?;
            x509::verify_chain(&leaf, &intermediates, pki, now).map(|()| Vec::new())
        }
    }
}

impl SignedEvidence<'_> {
    /// The log entry to verify for `sig` made with `material`, and the
    /// root to verify it against; `None` when there is no entry or no root.
    fn log_entry<'r>(
        &self,
        authority: &'r Authority,
        sig: &[u8],
        material: LegacyMaterial<'_>,
    ) -> Result<Option<(&'r SigstoreRoot, Cow<'_, Bundle>)>, Failure> {
        let Some(root) = authority.sigstore.as_deref() else {
            return Ok(None);
        };
        match &self.source {
            Source::Bundle(bundle) if bundle.verification_material.tlog_entries.is_empty() => {
                Ok(None)
            }
            Source::Bundle(bundle) => Ok(Some((root, Cow::Borrowed(*bundle)))),
            Source::Legacy {
                rekor: Some(rekor),
                to_bundle,
                ..
            } => Ok(Some((root, Cow::Owned(to_bundle(sig, rekor, material)?)))),
            Source::Legacy { rekor: None, .. } => Ok(None),
        }
    }

    /// The first signature the leaf certificate's key made. A legacy
    /// attestation's envelope may carry several, so its failure names
    /// none of them; a single signature's failure says what was wrong.
    fn certificate_signature(&self, leaf: &[u8]) -> Result<&[u8], Failure> {
        let mut failure = None;
        for sig in &self.signatures {
            match x509::verify_with_certificate_key(leaf, &self.message, sig) {
                Ok(()) => return Ok(sig),
                Err(f) => failure = Some(f),
            }
        }
        Err(match (&self.source, failure) {
            (
                Source::Legacy {
                    noun: Noun::Attestation,
                    ..
                },
                _,
            )
            | (_, None) => Failure::new(
                Reason::InvalidSignature,
                "attestation not signed by its certificate's key",
            ),
            (_, Some(f)) => f,
        })
    }
}

impl Source<'_> {
    fn not_signed_by_keys(&self) -> &'static str {
        match self {
            Source::Legacy {
                noun: Noun::Attestation,
                ..
            } => "attestation not signed by any of the authority's keys",
            _ => "not signed by any of the authority's keys",
        }
    }

    /// The leaf certificate (DER) and the intermediates to chain it through.
    fn vendor_certificates(&self) -> Result<(Vec<u8>, Vec<Vec<u8>>), Failure> {
        let no_certificate = || untrusted("no certificate: not signed under a vendor PKI");
        match self {
            Source::Bundle(bundle) => {
                let leaf = bundle
                    .signing_certificate()
                    .ok_or_else(no_certificate)?
                    .as_bytes()
                    .to_vec();
                let intermediates = bundle_certificates(bundle)
                    .into_iter()
                    .skip(1)
                    .map(<[u8]>::to_vec)
                    .collect();
                Ok((leaf, intermediates))
            }
            Source::Legacy {
                certificate, chain, ..
            } => {
                let leaf = leaf_of(certificate.ok_or_else(no_certificate)?)?;
                let intermediates = match chain {
                    Some(chain) => legacy::pem_certs(chain)?,
                    None => Vec::new(),
                };
                Ok((leaf, intermediates))
            }
        }
    }

    /// With no log entry verified: refused when the authority requires one.
    fn unlogged(&self, authority: &Authority) -> Result<(), Failure> {
        if !authority.require_tlog {
            return Ok(());
        }
        Err(Failure::new(
            Reason::TlogInvalid,
            match self {
                Source::Bundle(_) => {
                    "no verifiable transparency-log entry, and the authority requires one"
                }
                Source::Legacy { .. } => {
                    "no transparency-log entry, and the authority requires one"
                }
            },
        ))
    }
}

impl Noun {
    fn as_str(self) -> &'static str {
        match self {
            Noun::Signature => "signature",
            Noun::Attestation => "attestation",
        }
    }
}

fn verified(
    root: &SigstoreRoot,
    bundle: &Bundle,
    logged: Signed<'_>,
    expected: Expected<'_>,
) -> Result<Vec<SystemTime>, Failure> {
    sigstore::verify_bundle(root, bundle, logged, expected).map(|v| v.signed_times)
}

/// The first certificate of a PEM annotation, as DER.
fn leaf_of(pem: &str) -> Result<Vec<u8>, Failure> {
    legacy::pem_certs(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| untrusted("no certificate"))
}

pub(super) fn root(authority: &Authority) -> Result<&SigstoreRoot, Failure> {
    authority.sigstore.as_deref().ok_or_else(|| {
        Failure::new(
            Reason::TrustUnavailable,
            format!(
                "authority {} has no trusted root for transparency-log evidence",
                authority.name
            ),
        )
    })
}

/// Every certificate a bundle carries (leaf first).
pub(super) fn bundle_certificates(bundle: &Bundle) -> Vec<&[u8]> {
    use sigstore_verify::types::bundle::VerificationMaterialContent as Content;
    match &bundle.verification_material.content {
        Content::Certificate(c) => vec![c.raw_bytes.as_bytes()],
        Content::X509CertificateChain { certificates } => certificates
            .iter()
            .map(|c| c.raw_bytes.as_bytes())
            .collect(),
        _ => Vec::new(),
    }
}

fn untrusted(what: &str) -> Failure {
    Failure::new(Reason::UntrustedSigner, what.to_string())
}

/// The first of `keys` that made `sig` over `message`.
fn matching_key<'k>(
    keys: &'k [(String, DerPublicKey)],
    message: &Message<'_>,
    sig: &[u8],
) -> Option<&'k DerPublicKey> {
    keys.iter().map(|(_, k)| k).find(|k| {
        VerificationKey::from_spki(k).is_ok_and(|vk| sigstore::key_made(&vk, message, sig))
    })
}
