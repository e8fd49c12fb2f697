//! A vendor's X.509 certificate authorities and certificate serials.
//! The chain itself is checked by [`crate::verify::x509`].

use rustls::pki_types::CertificateDer;

/// Whether a leaf certificate must carry the EKU extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeafEku {
    /// RFC 5280: an absent extension is unrestricted; a present one must
    /// list code signing.
    #[default]
    CodeSigningIfPresent,
    /// The leaf must carry the extension and it must list code signing.
    CodeSigningRequired,
}

/// A vendor's certificate authorities (its unrevoked roots, DER) and how
/// the certificates they issue are checked.
#[derive(Debug, Clone, Default)]
pub struct VendorPki {
    roots: Vec<CertificateDer<'static>>,
    pub leaf_eku: LeafEku,
}

impl VendorPki {
    pub fn new(roots: Vec<CertificateDer<'static>>, leaf_eku: LeafEku) -> VendorPki {
        VendorPki { roots, leaf_eku }
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The same PKI without the roots `keep` refuses.
    pub fn retain(self, keep: impl Fn(&CertificateDer<'static>) -> bool) -> VendorPki {
        VendorPki {
            roots: self.roots.into_iter().filter(|c| keep(c)).collect(),
            leaf_eku: self.leaf_eku,
        }
    }
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
