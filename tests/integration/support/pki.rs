//! A vendor's X.509 PKI for tests: a root CA issuing code-signing leaf
//! certificates whose keys sign cosign payloads.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use super::cosign::{SignatureLayer, VendorKey, simple_signing};

pub struct VendorCa {
    pub root_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and the key it certifies.
pub struct VendorSigner {
    pub cert_pem: String,
    /// The certificate's serial number, hex as `openssl x509 -serial` prints it.
    pub serial: String,
    key: VendorKey,
}

impl VendorCa {
    pub fn new(name: &str) -> VendorCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} root CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(365);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
        let root = params.self_signed(&key).unwrap();
        VendorCa {
            root_pem: root.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A code-signing leaf valid from `not_before` to `not_after`.
    pub fn issue(&self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> VendorSigner {
        let leaf_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "release signing");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&leaf_key, &self.issuer).unwrap();
        let pair =
            sigstore_verify::crypto::KeyPair::from_pkcs8_der(&leaf_key.serialize_der()).unwrap();
        let serial = {
            use x509_cert::der::Decode;
            let parsed = x509_cert::Certificate::from_der(cert.der()).unwrap();
            hex::encode_upper(parsed.tbs_certificate.serial_number.as_bytes())
        };
        VendorSigner {
            cert_pem: cert.pem(),
            serial,
            key: VendorKey { pair },
        }
    }

    /// A leaf valid now for a year.
    pub fn issue_current(&self) -> VendorSigner {
        let now = OffsetDateTime::now_utc();
        self.issue(now - Duration::days(1), now + Duration::days(365))
    }
}

impl VendorSigner {
    /// A cosign signature layer carrying this certificate.
    pub fn sign(&self, digest: &str) -> SignatureLayer {
        let mut layer = self.key.sign_payload(&simple_signing(digest, "vendor/app"));
        layer.certificate = Some(self.cert_pem.clone());
        layer
    }

    /// This certificate on a signature made by another key.
    pub fn sign_with_foreign_key(&self, digest: &str) -> SignatureLayer {
        let mut layer = VendorKey::generate().sign_payload(&simple_signing(digest, "vendor/app"));
        layer.certificate = Some(self.cert_pem.clone());
        layer
    }
}
