//! Vendor X.509 PKI: a signing certificate must chain to one of the vendor's
//! (unrevoked) roots through the intermediates the signature carries, be
//! valid at the time that counts (a signed time from a transparency log or
//! TSA, else now), and be usable for code signing.
//!
//! Extended Key Usage follows RFC 5280 §4.2.1.12 (as cosign and
//! containers/image do): a certificate without the extension is
//! unrestricted; one that carries it must list code signing. That applies to
//! the leaf and to every intermediate CA certificate that carries one. An
//! authority can demand the extension on the leaf
//! (`require_code_signing_eku`). An empty set of roots verifies nothing.

use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, UnixTime};
use sigstore_verify::crypto::{VerificationKey, WEBPKI_VERIFICATION_ALGS, parse_certificate_info};
use sigstore_verify::types::DerCertificate;

use super::Reason;
use super::sigstore::{self, Failure, Message};
use crate::material::{LeafEku, VendorPki, serial_of};

/// id-kp-codeSigning, 1.3.6.1.5.5.7.3.3, DER content bytes.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// id-ce-extKeyUsage, 2.5.29.37.
const EXT_KEY_USAGE: x509_cert::der::asn1::ObjectIdentifier =
    x509_cert::der::asn1::ObjectIdentifier::new_unwrap("2.5.29.37");

/// Verifies that `leaf` chains through `intermediates` to one of the
/// vendor's roots at `at`, with the EKU rules above.
pub fn verify_chain(
    leaf: &[u8],
    intermediates: &[Vec<u8>],
    pki: &VendorPki,
    at: SystemTime,
) -> Result<(), Failure> {
    if pki.roots().is_empty() {
        return Err(Failure::new(
            Reason::UntrustedSigner,
            "the authority has no unrevoked CA certificate: it verifies nothing",
        ));
    }
    let anchors = pki
        .roots()
        .iter()
        .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
        .collect::<Vec<_>>();
    let leaf = CertificateDer::from(leaf);
    let end_entity = webpki::EndEntityCert::try_from(&leaf).map_err(|e| {
        Failure::new(
            Reason::InvalidSignature,
            format!("signing certificate is malformed: {e:?}"),
        )
    })?;
    // Root certificates supplied in the signature are never trusted as such.
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let since_epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    end_entity
        .verify_for_usage(
            WEBPKI_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            UnixTime::since_unix_epoch(since_epoch),
            webpki::KeyUsage::required_if_present(CODE_SIGNING),
            None,
            None,
        )
        .map_err(|e| match e {
            webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
                Failure::new(
                    Reason::CertificateExpired,
                    format!("signing certificate is not valid at the signing time: {e:?}"),
                )
            }
            other => Failure::new(
                Reason::UntrustedSigner,
                format!("signing certificate does not chain to the vendor's roots: {other:?}"),
            ),
        })?;
    if pki.leaf_eku == LeafEku::CodeSigningRequired && !has_eku_extension(leaf.as_ref()) {
        return Err(Failure::new(
            Reason::UntrustedSigner,
            "signing certificate has no Extended Key Usage extension, and the authority requires code signing (require_code_signing_eku)",
        ));
    }
    Ok(())
}

/// Whether a (parseable) certificate carries the EKU extension.
fn has_eku_extension(der: &[u8]) -> bool {
    use x509_cert::der::Decode;
    x509_cert::Certificate::from_der(der).is_ok_and(|c| {
        c.tbs_certificate
            .extensions
            .iter()
            .flatten()
            .any(|e| e.extn_id == EXT_KEY_USAGE)
    })
}

/// Refuses a signature whose leaf or chain certificate carries a serial
/// number the authority revoked. With serials revoked, a certificate that
/// cannot be parsed is refused too (never waved through unchecked).
pub fn check_serials<'a>(
    revoked: &[String],
    certs: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), Failure> {
    if revoked.is_empty() {
        return Ok(());
    }
    for der in certs {
        let Some(serial) = serial_of(der) else {
            return Err(Failure::new(
                Reason::InvalidSignature,
                "a certificate cannot be read to check it against revoked serials",
            ));
        };
        if revoked.contains(&serial) {
            return Err(Failure::new(
                Reason::UntrustedSigner,
                format!("certificate serial {serial} is revoked by the authority"),
            ));
        }
    }
    Ok(())
}

/// Checks that the certificate's own key made `signature` over `message`.
pub fn verify_with_certificate_key(
    leaf: &[u8],
    message: &Message<'_>,
    signature: &[u8],
) -> Result<(), Failure> {
    let info = parse_certificate_info(&DerCertificate::new(leaf.to_vec())).map_err(|e| {
        Failure::new(
            Reason::InvalidSignature,
            format!("signing certificate is malformed: {e}"),
        )
    })?;
    let key = VerificationKey::from_spki(&info.public_key).map_err(|e| {
        Failure::new(
            Reason::InvalidSignature,
            format!("certificate key is unsupported: {e}"),
        )
    })?;
    if sigstore::key_made(&key, message, signature) {
        return Ok(());
    }
    Err(Failure::new(
        Reason::InvalidSignature,
        "the certificate's key did not make this signature",
    ))
}

#[cfg(test)]
#[path = "x509_tests.rs"]
mod tests;
