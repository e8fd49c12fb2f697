//! Does one signature satisfy one authority? Each check ends in `Ok` or a
//! [`Failure`] with the most specific reason it found.

use std::borrow::Cow;

use sigstore_verify::types::{Bundle, SignatureContent};

use super::Reason;
use super::evidence::{LegacySignature, Signature};
use super::legacy::{self, Material as LegacyMaterial};
use super::signer::{self, Noun, SignedEvidence, Source};
use super::sigstore::{self, Failure, Message, Signed};
use super::x509;
use crate::oci::Digest;
use crate::trust::Authority;

/// The predicate type cosign (v3) signs images with; other DSSE statements
/// are attestations and never count as signatures.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

pub fn check(
    authority: &Authority,
    signature: &Signature,
    subject: &Digest,
    now: std::time::SystemTime,
) -> Result<(), Failure> {
    match signature {
        Signature::Legacy(l) => check_legacy(authority, l, subject, now),
        Signature::Bundle(json) => {
            let text = std::str::from_utf8(json)
                .map_err(|_| Failure::new(Reason::InvalidSignature, "bundle is not UTF-8"))?;
            let bundle = sigstore::parse_bundle(text)?;
            check_bundle(authority, &bundle, subject, now)?;
            require_signature_predicate(&bundle)
        }
    }
}

/// Refuses legacy certificate annotations that carry a revoked serial.
pub(super) fn legacy_serials(
    authority: &Authority,
    certificate: Option<&str>,
    chain: Option<&str>,
) -> Result<(), Failure> {
    if authority.revoked_serials.is_empty() {
        return Ok(());
    }
    let mut certs = Vec::new();
    for pem in [certificate, chain].into_iter().flatten() {
        certs.extend(legacy::pem_certs(pem)?);
    }
    x509::check_serials(&authority.revoked_serials, certs.iter().map(Vec::as_slice))
}

fn check_legacy(
    authority: &Authority,
    l: &LegacySignature,
    subject: &Digest,
    now: std::time::SystemTime,
) -> Result<(), Failure> {
    legacy::check_payload(&l.payload, subject)?;
    let sig = legacy::signature_bytes(l)?;
    legacy_serials(authority, l.certificate.as_deref(), l.chain.as_deref())?;
    let to_bundle = |sig: &[u8], rekor: &str, material: LegacyMaterial<'_>| {
        sigstore::parse_bundle(&legacy::to_bundle_json(l, rekor, material, sig)?)
    };
    let evidence = SignedEvidence {
        message: Message::Bytes(Cow::Borrowed(&l.payload)),
        signatures: vec![&sig],
        logged: Signed::Bytes(&l.payload),
        source: Source::Legacy {
            noun: Noun::Signature,
            certificate: l.certificate.as_deref(),
            chain: l.chain.as_deref(),
            rekor: l.rekor_bundle.as_deref(),
            to_bundle: &to_bundle,
        },
    };
    signer::match_signer(authority, &evidence, now).map(|_| ())
}

/// Verifies a bundle for `subject` against `authority`; the times its
/// transparency-log or timestamp evidence proved, when it had some.
pub(super) fn check_bundle(
    authority: &Authority,
    bundle: &Bundle,
    subject: &Digest,
    now: std::time::SystemTime,
) -> Result<Vec<std::time::SystemTime>, Failure> {
    let (message, sig) = signed_data(bundle, subject)?;
    x509::check_serials(
        &authority.revoked_serials,
        signer::bundle_certificates(bundle),
    )?;
    let evidence = SignedEvidence {
        message,
        signatures: vec![sig],
        logged: Signed::Digest(subject),
        source: Source::Bundle(bundle),
    };
    signer::match_signer(authority, &evidence, now)
}

/// What the bundle's signature covers, checked against `subject` where the
/// library is not involved: DSSE's PAE (statement about `subject`), or the
/// message digest (which must be `subject`).
pub(super) fn signed_data<'b>(
    bundle: &'b Bundle,
    subject: &Digest,
) -> Result<(Message<'b>, &'b [u8]), Failure> {
    match &bundle.content {
        SignatureContent::DsseEnvelope(env) => {
            if env.payload_type != "application/vnd.in-toto+json" {
                return Err(Failure::new(
                    Reason::InvalidSignature,
                    "DSSE payload is not an in-toto statement",
                ));
            }
            statement_names(env.payload.as_bytes(), subject)?;
            Ok((
                Message::Bytes(Cow::Owned(env.pae())),
                env.signature.sig.as_bytes(),
            ))
        }
        SignatureContent::MessageSignature(m) => {
            let digest = m.message_digest.as_ref().ok_or_else(|| {
                Failure::new(Reason::InvalidSignature, "message signature has no digest")
            })?;
            if hex::encode(digest.digest.as_bytes()) != subject.hex() {
                return Err(Failure::new(
                    Reason::InvalidSignature,
                    "signature is for another artifact (replayed signature)",
                ));
            }
            Ok((
                Message::Sha256Digest(digest.digest.as_bytes()),
                m.signature.as_bytes(),
            ))
        }
        _ => Err(Failure::new(
            Reason::InvalidSignature,
            "unsupported bundle content",
        )),
    }
}

/// The statement must name `subject` by its sha256.
fn statement_names(payload: &[u8], subject: &Digest) -> Result<serde_json::Value, Failure> {
    let statement: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|_| Failure::new(Reason::InvalidSignature, "in-toto statement is malformed"))?;
    let names = statement["subject"].as_array().is_some_and(|subjects| {
        subjects
            .iter()
            .any(|s| s["digest"]["sha256"].as_str() == Some(subject.hex()))
    });
    if !names {
        return Err(Failure::new(
            Reason::InvalidSignature,
            "statement is about another artifact (replayed signature)",
        ));
    }
    Ok(statement)
}

fn require_signature_predicate(bundle: &Bundle) -> Result<(), Failure> {
    if let SignatureContent::DsseEnvelope(env) = &bundle.content {
        let statement: serde_json::Value =
            serde_json::from_slice(env.payload.as_bytes()).unwrap_or_default();
        if statement["predicateType"].as_str() != Some(COSIGN_SIGN_PREDICATE) {
            return Err(Failure::new(
                Reason::Unsigned,
                "an attestation, not an image signature",
            ));
        }
    }
    Ok(())
}
