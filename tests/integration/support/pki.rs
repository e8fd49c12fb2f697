//! A vendor's X.509 PKI for tests: a root CA (and intermediate CAs) issuing
//! code-signing leaf certificates whose keys sign cosign payloads, Sigstore
//! bundles (DSSE or message signature, logged or not) made with them or with
//! a plain key.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

use super::cosign::{SignatureLayer, VendorKey, simple_signing};
use super::fulcio::{TransparencyLog, pae};

pub struct VendorCa {
    pub root_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// For an intermediate CA: its certificate and those above it up to
    /// (not including) the root, PEM, nearest first.
    chain_pem: Option<String>,
    /// The CA's own certificate, DER.
    pub cert_der: Vec<u8>,
    chain_der: Vec<Vec<u8>>,
}

/// A leaf certificate and the key it certifies.
pub struct VendorSigner {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    /// The certificate's serial number, hex as `openssl x509 -serial` prints it.
    pub serial: String,
    /// Intermediate CA certificates (PEM), when an intermediate issued it.
    pub chain_pem: Option<String>,
    chain_der: Vec<Vec<u8>>,
    pub key: VendorKey,
}

fn serial_hex(der: &[u8]) -> String {
    use x509_cert::der::Decode;
    let parsed = x509_cert::Certificate::from_der(der).unwrap();
    hex::encode_upper(parsed.tbs_certificate.serial_number.as_bytes())
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
            chain_pem: None,
            cert_der: root.der().to_vec(),
            chain_der: Vec::new(),
        }
    }

    /// The CA's serial number, hex.
    pub fn serial(&self) -> String {
        serial_hex(&self.cert_der)
    }

    /// An intermediate CA under this one whose certificate carries these
    /// extended key usages (none: no EKU extension).
    pub fn intermediate(&self, name: &str, ekus: Vec<ExtendedKeyUsagePurpose>) -> VendorCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} intermediate CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.extended_key_usages = ekus;
        params.not_before = OffsetDateTime::now_utc() - Duration::days(300);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(3000);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let mut chain_der = vec![cert.der().to_vec()];
        chain_der.extend(self.chain_der.iter().cloned());
        VendorCa {
            root_pem: self.root_pem.clone(),
            issuer: Issuer::new(params, key),
            chain_pem: Some(format!(
                "{}{}",
                cert.pem(),
                self.chain_pem.clone().unwrap_or_default()
            )),
            cert_der: cert.der().to_vec(),
            chain_der,
        }
    }

    /// A code-signing leaf valid from `not_before` to `not_after`.
    pub fn issue(&self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> VendorSigner {
        self.issue_with(
            not_before,
            not_after,
            vec![ExtendedKeyUsagePurpose::CodeSigning],
        )
    }

    /// A leaf valid now for a year with these extended key usages (none:
    /// no EKU extension at all).
    pub fn issue_with_ekus(&self, ekus: Vec<ExtendedKeyUsagePurpose>) -> VendorSigner {
        let now = OffsetDateTime::now_utc();
        self.issue_with(now - Duration::days(1), now + Duration::days(365), ekus)
    }

    fn issue_with(
        &self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        ekus: Vec<ExtendedKeyUsagePurpose>,
    ) -> VendorSigner {
        let leaf_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "release signing");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = ekus;
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&leaf_key, &self.issuer).unwrap();
        let pair =
            sigstore_verify::crypto::KeyPair::from_pkcs8_der(&leaf_key.serialize_der()).unwrap();
        VendorSigner {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            serial: serial_hex(cert.der()),
            chain_pem: self.chain_pem.clone(),
            chain_der: self.chain_der.clone(),
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
    /// A cosign signature layer carrying this certificate (and its chain).
    pub fn sign(&self, digest: &str) -> SignatureLayer {
        let mut layer = self.key.sign_payload(&simple_signing(digest, "vendor/app"));
        layer.certificate = Some(self.cert_pem.clone());
        layer.chain = self.chain_pem.clone();
        layer
    }

    /// As [`VendorSigner::sign`], with a Rekor bundle annotation from `log`.
    pub fn sign_logged(&self, digest: &str, log: &TransparencyLog) -> SignatureLayer {
        let mut layer = self.sign(digest);
        layer.rekor_bundle = Some(log.entry(&layer.signature, &self.cert_pem, &layer.payload));
        layer
    }

    /// The bundle's verification material: the leaf alone (v0.3), or the
    /// leaf and its intermediates (v0.2 `x509CertificateChain`).
    fn material(&self) -> Material {
        if self.chain_der.is_empty() {
            Material {
                media_type: BUNDLE_V03,
                json: serde_json::json!({"certificate": {"rawBytes": STANDARD.encode(&self.cert_der)}}),
                verifier_pem: self.cert_pem.clone(),
            }
        } else {
            let certs: Vec<serde_json::Value> = std::iter::once(&self.cert_der)
                .chain(&self.chain_der)
                .map(|d| serde_json::json!({"rawBytes": STANDARD.encode(d)}))
                .collect();
            Material {
                media_type: BUNDLE_V02,
                json: serde_json::json!({"x509CertificateChain": {"certificates": certs}}),
                verifier_pem: self.cert_pem.clone(),
            }
        }
    }

    /// A bundle with a DSSE envelope over `statement`, logged in `log` if given.
    pub fn dsse_bundle(
        &self,
        statement: &serde_json::Value,
        log: Option<&TransparencyLog>,
    ) -> String {
        dsse_bundle(&self.key, self.material(), statement, log)
    }

    /// A message-signature bundle over the manifest bytes, logged in `log`
    /// if given.
    pub fn message_bundle(&self, manifest: &[u8], log: Option<&TransparencyLog>) -> String {
        message_bundle(&self.key, self.material(), manifest, log)
    }
}

pub const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const BUNDLE_V02: &str = "application/vnd.dev.sigstore.bundle+json;version=0.2";

struct Material {
    media_type: &'static str,
    json: serde_json::Value,
    /// What the log entry names as the verifier (certificate or key PEM).
    verifier_pem: String,
}

impl VendorKey {
    fn material(&self) -> Material {
        Material {
            media_type: BUNDLE_V03,
            json: serde_json::json!({"publicKey": {"hint": ""}}),
            verifier_pem: self.public_pem(),
        }
    }

    /// A keyed DSSE bundle over `statement`, logged in `log` if given.
    pub fn dsse_bundle(
        &self,
        statement: &serde_json::Value,
        log: Option<&TransparencyLog>,
    ) -> String {
        dsse_bundle(self, self.material(), statement, log)
    }

    /// A keyed message-signature bundle over the manifest bytes.
    pub fn message_bundle(&self, manifest: &[u8], log: Option<&TransparencyLog>) -> String {
        message_bundle(self, self.material(), manifest, log)
    }
}

fn dsse_bundle(
    key: &VendorKey,
    mut material: Material,
    statement: &serde_json::Value,
    log: Option<&TransparencyLog>,
) -> String {
    let payload_type = "application/vnd.in-toto+json";
    let payload = serde_json::to_vec(statement).unwrap();
    let sig = key.pair.sign(&pae(payload_type, &payload)).unwrap();
    let sig_b64 = STANDARD.encode(sig.as_bytes());
    let envelope = serde_json::json!({
        "payload": STANDARD.encode(&payload), "payloadType": payload_type,
        "signatures": [{"sig": sig_b64, "keyid": ""}],
    });
    let body = serde_json::json!({
        "apiVersion": "0.0.1", "kind": "dsse",
        "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(serde_json::to_vec(&envelope).unwrap()))},
            "payloadHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&payload))},
            "signatures": [{"signature": sig_b64, "verifier": STANDARD.encode(&material.verifier_pem)}],
        },
    });
    let entries: Vec<serde_json::Value> = log.map(|l| l.bundle_entry(&body)).into_iter().collect();
    material.json["tlogEntries"] = serde_json::json!(entries);
    serde_json::json!({
        "mediaType": material.media_type,
        "verificationMaterial": material.json,
        "dsseEnvelope": envelope,
    })
    .to_string()
}

fn message_bundle(
    key: &VendorKey,
    mut material: Material,
    manifest: &[u8],
    log: Option<&TransparencyLog>,
) -> String {
    let digest = Sha256::digest(manifest);
    let sig = key.pair.sign(manifest).unwrap();
    let sig_b64 = STANDARD.encode(sig.as_bytes());
    let body = serde_json::json!({
        "apiVersion": "0.0.1", "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hex::encode(digest)}},
            "signature": {"content": sig_b64, "publicKey": {"content": STANDARD.encode(&material.verifier_pem)}},
        },
    });
    let entries: Vec<serde_json::Value> = log.map(|l| l.bundle_entry(&body)).into_iter().collect();
    material.json["tlogEntries"] = serde_json::json!(entries);
    serde_json::json!({
        "mediaType": material.media_type,
        "verificationMaterial": material.json,
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": STANDARD.encode(digest)},
            "signature": sig_b64,
        },
    })
    .to_string()
}

impl VendorSigner {
    /// This certificate on a signature made by another key.
    pub fn sign_with_foreign_key(&self, digest: &str) -> SignatureLayer {
        let mut layer = VendorKey::generate().sign_payload(&simple_signing(digest, "vendor/app"));
        layer.certificate = Some(self.cert_pem.clone());
        layer
    }
}
