//! Does one signature satisfy one authority? Each check ends in `Ok` or a
//! [`Failure`] with the most specific reason it found.

use sigstore_verify::crypto::VerificationKey;
use sigstore_verify::types::{Bundle, DerPublicKey, SignatureBytes, SignatureContent};

use super::Reason;
use super::evidence::{LegacySignature, Signature};
use super::legacy::{self, Material as LegacyMaterial};
use super::sigstore::{self, Expected, Failure, Signed};
use super::x509;
use crate::material::SigstoreRoot;
use crate::oci::Digest;
use crate::trust::{Authority, Material};

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

/// Every certificate a bundle carries (leaf first).
fn bundle_certificates(bundle: &Bundle) -> Vec<&[u8]> {
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

pub(super) fn untrusted(what: &str) -> Failure {
    Failure::new(Reason::UntrustedSigner, what.to_string())
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
    match &authority.material {
        Material::Keys(keys) => {
            let key = matching_key(keys, &l.payload, &sig, false)
                .ok_or_else(|| untrusted("not signed by any of the authority's keys"))?;
            match (&l.rekor_bundle, &authority.sigstore) {
                (Some(rekor), Some(root)) => {
                    let bundle = sigstore::parse_bundle(&legacy::to_bundle_json(
                        l,
                        rekor,
                        LegacyMaterial::PublicKey,
                        &sig,
                    )?)?;
                    sigstore::verify_bundle(
                        root,
                        &bundle,
                        Signed::Bytes(&l.payload),
                        Expected::Key(key),
                    )
                    .map(|_| ())
                }
                _ if authority.require_tlog => Err(Failure::new(
                    Reason::TlogInvalid,
                    "no transparency-log entry, and the authority requires one",
                )),
                _ => Ok(()),
            }
        }
        Material::Keyless(identity) => {
            let cert = l
                .certificate
                .as_deref()
                .ok_or_else(|| untrusted("no certificate: not a keyless signature"))?;
            let leaf = legacy::pem_certs(cert)?.swap_remove(0);
            let rekor = l.rekor_bundle.as_deref().ok_or_else(|| {
                Failure::new(
                    Reason::TlogInvalid,
                    "keyless signature without a transparency-log entry",
                )
            })?;
            let bundle = sigstore::parse_bundle(&legacy::to_bundle_json(
                l,
                rekor,
                LegacyMaterial::Certificate(&leaf),
                &sig,
            )?)?;
            let expected = Expected::Keyless {
                identity,
                require_sct: authority.require_sct,
            };
            sigstore::verify_bundle(
                root(authority)?,
                &bundle,
                Signed::Bytes(&l.payload),
                expected,
            )
            .map(|_| ())
        }
        Material::CaRoots(pki) => {
            let cert = l
                .certificate
                .as_deref()
                .ok_or_else(|| untrusted("no certificate: not signed under a vendor PKI"))?;
            let mut certs = legacy::pem_certs(cert)?;
            let leaf = certs.swap_remove(0);
            let intermediates = match &l.chain {
                Some(chain) => legacy::pem_certs(chain)?,
                None => Vec::new(),
            };
            x509::verify_with_certificate_key(&leaf, &l.payload, &sig, false)?;
            match (&l.rekor_bundle, &authority.sigstore) {
                (Some(rekor), Some(root)) => {
                    let bundle = sigstore::parse_bundle(&legacy::to_bundle_json(
                        l,
                        rekor,
                        LegacyMaterial::Certificate(&leaf),
                        &sig,
                    )?)?;
                    sigstore::verify_bundle(
                        root,
                        &bundle,
                        Signed::Bytes(&l.payload),
                        Expected::VendorChain(&intermediates),
                    )
                    .map(|_| ())
                }
                _ if authority.require_tlog => Err(Failure::new(
                    Reason::TlogInvalid,
                    "no transparency-log entry, and the authority requires one",
                )),
                _ => x509::verify_chain(&leaf, &intermediates, pki, now),
            }
        }
    }
}

/// Verifies a bundle for `subject` against `authority`; the times its
/// transparency-log or timestamp evidence proved, when it had some.
pub(super) fn check_bundle(
    authority: &Authority,
    bundle: &Bundle,
    subject: &Digest,
    now: std::time::SystemTime,
) -> Result<Vec<std::time::SystemTime>, Failure> {
    let (data, sig, prehashed) = signed_data(bundle, subject)?;
    x509::check_serials(&authority.revoked_serials, bundle_certificates(bundle))?;
    match &authority.material {
        Material::Keys(keys) => {
            let key = matching_key(keys, &data, &sig, prehashed)
                .ok_or_else(|| untrusted("not signed by any of the authority's keys"))?;
            sigstore::verify_bundle(
                root(authority)?,
                bundle,
                Signed::Digest(subject),
                Expected::Key(key),
            )
            .map(|v| v.signed_times)
        }
        Material::Keyless(identity) => {
            let expected = Expected::Keyless {
                identity,
                require_sct: authority.require_sct,
            };
            sigstore::verify_bundle(root(authority)?, bundle, Signed::Digest(subject), expected)
                .map(|v| v.signed_times)
        }
        Material::CaRoots(pki) => {
            let leaf = bundle
                .signing_certificate()
                .ok_or_else(|| untrusted("no certificate: not signed under a vendor PKI"))?
                .as_bytes()
                .to_vec();
            x509::verify_with_certificate_key(&leaf, &data, &sig, prehashed)?;
            if !bundle.verification_material.tlog_entries.is_empty() {
                if let Some(root) = &authority.sigstore {
                    return sigstore::verify_bundle(
                        root,
                        bundle,
                        Signed::Digest(subject),
                        Expected::AnyCertificate,
                    )
                    .map(|v| v.signed_times);
                }
            }
            if authority.require_tlog {
                return Err(Failure::new(
                    Reason::TlogInvalid,
                    "no verifiable transparency-log entry, and the authority requires one",
                ));
            }
            let intermediates: Vec<Vec<u8>> = bundle_certificates(bundle)
                .into_iter()
                .skip(1)
                .map(<[u8]>::to_vec)
                .collect();
            x509::verify_chain(&leaf, &intermediates, pki, now).map(|()| Vec::new())
        }
    }
}

/// What the bundle's signature covers, checked against `subject` where the
/// library is not involved: DSSE's PAE (statement about `subject`), or the
/// message digest (which must be `subject`).
pub(super) fn signed_data(
    bundle: &Bundle,
    subject: &Digest,
) -> Result<(Vec<u8>, Vec<u8>, bool), Failure> {
    match &bundle.content {
        SignatureContent::DsseEnvelope(env) => {
            if env.payload_type != "application/vnd.in-toto+json" {
                return Err(Failure::new(
                    Reason::InvalidSignature,
                    "DSSE payload is not an in-toto statement",
                ));
            }
            statement_names(env.payload.as_bytes(), subject)?;
            Ok((env.pae(), env.signature.sig.as_bytes().to_vec(), false))
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
                digest.digest.as_bytes().to_vec(),
                m.signature.as_bytes().to_vec(),
                true,
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

pub(super) fn matching_key<'a>(
    keys: &'a [(String, DerPublicKey)],
    data: &[u8],
    sig: &[u8],
    prehashed: bool,
) -> Option<&'a DerPublicKey> {
    let sig = SignatureBytes::new(sig.to_vec());
    keys.iter().map(|(_, k)| k).find(|k| {
        VerificationKey::from_spki(k).is_ok_and(|vk| {
            if prehashed {
                vk.verify_prehashed(data, &sig).is_ok()
            } else {
                vk.verify(data, &sig).is_ok()
            }
        })
    })
}
