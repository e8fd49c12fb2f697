//! Vendor X.509 PKI: a signing certificate must chain to one of the vendor's
//! roots, carry the code-signing EKU, and be valid at the time that counts
//! (a signed time from a transparency log or TSA, else now).

use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, UnixTime};
use sigstore_verify::crypto::{VerificationKey, WEBPKI_VERIFICATION_ALGS, parse_certificate_info};
use sigstore_verify::types::{DerCertificate, SignatureBytes};

use super::Reason;
use super::sigstore::Failure;

/// id-kp-codeSigning, 1.3.6.1.5.5.7.3.3, DER content bytes.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// Verifies that `leaf` chains through `intermediates` to one of `roots` at `at`.
pub fn verify_chain(
    leaf: &[u8],
    intermediates: &[Vec<u8>],
    roots: &[CertificateDer<'static>],
    at: SystemTime,
) -> Result<(), Failure> {
    let anchors = roots
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
            webpki::KeyUsage::required(CODE_SIGNING),
            None,
            None,
        )
        .map(|_| ())
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
        })
}

/// Normalises a certificate serial number for comparison: lowercase hex of
/// the integer's magnitude, without separators or leading zeros.
pub fn normalize_serial(text: &str) -> Option<String> {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.is_empty() || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = hex.trim_start_matches('0');
    Some(if trimmed.is_empty() { "0" } else { trimmed }.to_string())
}

/// The normalised serial number of a DER certificate.
pub fn serial_of(der: &[u8]) -> Option<String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    normalize_serial(&hex::encode(cert.tbs_certificate.serial_number.as_bytes()))
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

/// Checks that the certificate's own key made `signature` over `data`
/// (or, when `prehashed`, over the sha256 digest `data`).
pub fn verify_with_certificate_key(
    leaf: &[u8],
    data: &[u8],
    signature: &[u8],
    prehashed: bool,
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
    let sig = SignatureBytes::new(signature.to_vec());
    let result = if prehashed {
        key.verify_prehashed(data, &sig)
    } else {
        key.verify(data, &sig)
    };
    result.map_err(|_| {
        Failure::new(
            Reason::InvalidSignature,
            "the certificate's key did not make this signature",
        )
    })
}
