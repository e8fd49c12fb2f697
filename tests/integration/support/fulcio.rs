//! A private Sigstore instance for tests: a Fulcio-style CA issuing
//! short-lived certificates with an OIDC identity, a Rekor-style log whose
//! key signs entry timestamps (SETs), and the `trusted_root.json` naming
//! both. Cosign legacy `.sig` layers signed "keylessly" against it.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest as _, Sha256};
use time::{Duration, OffsetDateTime};

use super::cosign::{SignatureLayer, VendorKey, simple_signing};

pub const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";

pub struct Fulcio {
    root_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

pub struct TransparencyLog {
    key: EcdsaKeyPair,
    spki_der: Vec<u8>,
    next_index: std::sync::atomic::AtomicI64,
}

/// A keyless signer: a fresh key and the certificate Fulcio issued for it.
pub struct KeylessSigner {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key: VendorKey,
}

/// DER of a UTF8String.
fn utf8_string(s: &str) -> Vec<u8> {
    let mut out = vec![0x0c];
    let len = s.len();
    if len < 128 {
        out.push(len as u8);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(s.as_bytes());
    out
}

impl Fulcio {
    pub fn new() -> Fulcio {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "test");
        params
            .distinguished_name
            .push(DnType::CommonName, "test-fulcio");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(30);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
        let root = params.self_signed(&key).unwrap();
        Fulcio {
            root_der: root.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A ten-minute certificate for `identity` (a URI SAN) from `oidc_issuer`.
    pub fn issue(&self, identity: &str, oidc_issuer: &str) -> KeylessSigner {
        self.issue_at(identity, oidc_issuer, OffsetDateTime::now_utc())
    }

    /// A ten-minute certificate centred on `at`, as Fulcio issued it then.
    pub fn issue_at(&self, identity: &str, oidc_issuer: &str, at: OffsetDateTime) -> KeylessSigner {
        let leaf_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(identity.try_into().unwrap())];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.not_before = at - Duration::minutes(5);
        params.not_after = at + Duration::minutes(5);
        params.custom_extensions = vec![
            CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 57264, 1, 1],
                oidc_issuer.as_bytes().to_vec(),
            ),
            CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 57264, 1, 8],
                utf8_string(oidc_issuer),
            ),
        ];
        let cert = params.signed_by(&leaf_key, &self.issuer).unwrap();
        let pair =
            sigstore_verify::crypto::KeyPair::from_pkcs8_der(&leaf_key.serialize_der()).unwrap();
        KeylessSigner {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key: VendorKey { pair },
        }
    }
}

impl TransparencyLog {
    pub fn new() -> TransparencyLog {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
        // SPKI for a P-256 key: fixed algorithm prefix + the uncompressed point.
        let mut spki_der =
            hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
        spki_der.extend_from_slice(key.public_key().as_ref());
        TransparencyLog {
            key,
            spki_der,
            next_index: std::sync::atomic::AtomicI64::new(7),
        }
    }

    pub fn log_id(&self) -> Vec<u8> {
        Sha256::digest(&self.spki_der).to_vec()
    }

    /// cosign's `dev.sigstore.cosign/bundle` annotation for a hashedrekord
    /// entry of (`signature_b64`, `cert_pem`, `payload`), with its SET.
    pub fn entry(&self, signature_b64: &str, cert_pem: &str, payload: &[u8]) -> String {
        let body = serde_json::json!({
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(payload))}},
                "signature": {"content": signature_b64, "publicKey": {"content": STANDARD.encode(cert_pem)}},
            },
        });
        let body_b64 = STANDARD.encode(serde_json::to_vec(&body).unwrap());
        let integrated_time = OffsetDateTime::now_utc().unix_timestamp() - 60;
        let log_index = self
            .next_index
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log_id = hex::encode(self.log_id());
        // serde_json's map is sorted, so this is the RFC 8785 form for these keys.
        let signed = serde_json::json!({"body": body_b64, "integratedTime": integrated_time, "logID": log_id, "logIndex": log_index});
        let set = self
            .key
            .sign(&SystemRandom::new(), &serde_json::to_vec(&signed).unwrap())
            .unwrap();
        serde_json::json!({
            "SignedEntryTimestamp": STANDARD.encode(set.as_ref()),
            "Payload": {"body": body_b64, "integratedTime": integrated_time, "logIndex": log_index, "logID": log_id},
        })
        .to_string()
    }
}

impl TransparencyLog {
    /// A Rekor v1 `tlogEntries` item for `body` as a bundle carries it: the
    /// SET, and an inclusion proof in a one-leaf tree with a checkpoint
    /// signed by this log.
    pub fn bundle_entry(&self, body: &serde_json::Value) -> serde_json::Value {
        self.bundle_entry_at(body, OffsetDateTime::now_utc() - Duration::minutes(1))
    }

    /// [`Self::bundle_entry`] integrated at `at`.
    pub fn bundle_entry_at(
        &self,
        body: &serde_json::Value,
        at: OffsetDateTime,
    ) -> serde_json::Value {
        let body_bytes = serde_json::to_vec(body).unwrap();
        let body_b64 = STANDARD.encode(&body_bytes);
        let integrated_time = at.unix_timestamp();
        let log_id = self.log_id();
        let signed = serde_json::json!({"body": body_b64, "integratedTime": integrated_time, "logID": hex::encode(&log_id), "logIndex": 0});
        let rng = SystemRandom::new();
        let set = self
            .key
            .sign(&rng, &serde_json::to_vec(&signed).unwrap())
            .unwrap();
        let mut leaf = Sha256::new();
        leaf.update([0u8]);
        leaf.update(&body_bytes);
        let root = leaf.finalize();
        let note = format!("rekor.test - 1\n1\n{}\n", STANDARD.encode(root));
        let note_sig = self.key.sign(&rng, note.as_bytes()).unwrap();
        let mut hint_and_sig = log_id[..4].to_vec();
        hint_and_sig.extend_from_slice(note_sig.as_ref());
        let checkpoint = format!(
            "{note}\n\u{2014} rekor.test {}\n",
            STANDARD.encode(hint_and_sig)
        );
        let kind = body["kind"].as_str().unwrap();
        serde_json::json!({
            "logIndex": "0",
            "logId": {"keyId": STANDARD.encode(&log_id)},
            "kindVersion": {"kind": kind, "version": "0.0.1"},
            "integratedTime": integrated_time.to_string(),
            "inclusionPromise": {"signedEntryTimestamp": STANDARD.encode(set.as_ref())},
            "inclusionProof": {
                "logIndex": "0", "rootHash": STANDARD.encode(root), "treeSize": "1", "hashes": [],
                "checkpoint": {"envelope": checkpoint},
            },
            "canonicalizedBody": body_b64,
        })
    }
}

/// A trusted root naming `fulcio` as the only CA and `log` as the only log.
pub fn trusted_root(fulcio: &Fulcio, log: &TransparencyLog) -> String {
    serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [{
            "baseUrl": "https://rekor.test",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": STANDARD.encode(&log.spki_der), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": "2020-01-01T00:00:00Z"}},
            "logId": {"keyId": STANDARD.encode(log.log_id())},
        }],
        "certificateAuthorities": [{
            "subject": {"organization": "test", "commonName": "test-fulcio"},
            "uri": "https://fulcio.test",
            "certChain": {"certificates": [{"rawBytes": STANDARD.encode(&fulcio.root_der)}]},
            "validFor": {"start": "2020-01-01T00:00:00Z"},
        }],
        "ctlogs": [],
        "timestampAuthorities": [],
    })
    .to_string()
}

impl KeylessSigner {
    /// A `.sig` layer for `digest` with this certificate and a logged SET.
    pub fn sign(&self, digest: &str, log: &TransparencyLog) -> (SignatureLayer, String) {
        let mut layer = self
            .key
            .sign_payload(&simple_signing(digest, "registry/app"));
        layer.certificate = Some(self.cert_pem.clone());
        let bundle = log.entry(&layer.signature, &self.cert_pem, &layer.payload);
        (layer, bundle)
    }

    /// The certificate on a signature its key did not make, logged honestly.
    pub fn sign_with_foreign_key(
        &self,
        digest: &str,
        log: &TransparencyLog,
    ) -> (SignatureLayer, String) {
        let mut layer = VendorKey::generate().sign_payload(&simple_signing(digest, "registry/app"));
        layer.certificate = Some(self.cert_pem.clone());
        let bundle = log.entry(&layer.signature, &self.cert_pem, &layer.payload);
        (layer, bundle)
    }
}

/// What cosign v3 signs for an image: an in-toto statement about the
/// manifest digest with its signing predicate type.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// An in-toto v1 statement about `digest` (`sha256:<hex>`).
pub fn statement(
    digest: &str,
    predicate_type: &str,
    predicate: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "registry/app", "digest": {"sha256": digest.trim_start_matches("sha256:")}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    })
}

/// DSSE's pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

impl KeylessSigner {
    /// A Sigstore bundle v0.3 with a DSSE envelope over `statement`,
    /// logged as a `dsse` entry in `log`: cosign v3's format.
    pub fn dsse_bundle(&self, statement: &serde_json::Value, log: &TransparencyLog) -> String {
        self.dsse_bundle_as(statement, "application/vnd.in-toto+json", log)
    }

    pub fn dsse_bundle_as(
        &self,
        statement: &serde_json::Value,
        payload_type: &str,
        log: &TransparencyLog,
    ) -> String {
        let at = OffsetDateTime::now_utc() - Duration::minutes(1);
        self.dsse_bundle_logged_at(statement, payload_type, log, at)
    }

    /// [`Self::dsse_bundle_as`], logged at `at` (which must lie within this
    /// signer's certificate).
    pub fn dsse_bundle_logged_at(
        &self,
        statement: &serde_json::Value,
        payload_type: &str,
        log: &TransparencyLog,
        at: OffsetDateTime,
    ) -> String {
        let payload = serde_json::to_vec(statement).unwrap();
        let sig = self.key.pair.sign(&pae(payload_type, &payload)).unwrap();
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
                "signatures": [{"signature": sig_b64, "verifier": STANDARD.encode(&self.cert_pem)}],
            },
        });
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": STANDARD.encode(&self.cert_der)},
                "tlogEntries": [log.bundle_entry_at(&body, at)],
            },
            "dsseEnvelope": envelope,
        })
        .to_string()
    }
}
