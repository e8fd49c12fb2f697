//! Cosign-style signing for tests: vendor keys generated here, legacy
//! `sha256-<hex>.sig` manifests with simple-signing layers pushed to a real
//! registry, exactly as `cosign sign --key` lays them out.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sigstore_verify::crypto::KeyPair;

use super::image::{Blob, OCI_MANIFEST, Pusher};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// A vendor's cosign key pair.
pub struct VendorKey {
    pub pair: KeyPair,
}

impl VendorKey {
    pub fn generate() -> VendorKey {
        VendorKey {
            pair: KeyPair::generate_ecdsa_p256().unwrap(),
        }
    }

    /// The public key as cosign writes it (`cosign.pub`).
    pub fn public_pem(&self) -> String {
        let der = self.pair.public_key_der().unwrap();
        let b64 = STANDARD.encode(der.as_bytes());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    /// Writes the public key into `dir` and returns the file name.
    pub fn write_public(&self, dir: &std::path::Path, name: &str) -> String {
        std::fs::write(dir.join(name), self.public_pem()).unwrap();
        name.to_string()
    }

    /// A signature layer over `payload`.
    pub fn sign_payload(&self, payload: &str) -> SignatureLayer {
        let sig = self.pair.sign(payload.as_bytes()).unwrap();
        SignatureLayer {
            payload: payload.as_bytes().to_vec(),
            signature: STANDARD.encode(sig.as_bytes()),
            certificate: None,
            chain: None,
            rekor_bundle: None,
        }
    }

    /// A signature layer for the manifest `digest`.
    pub fn sign(&self, digest: &str, reference: &str) -> SignatureLayer {
        self.sign_payload(&simple_signing(digest, reference))
    }
}

/// cosign's simple-signing payload.
pub fn simple_signing(digest: &str, reference: &str) -> String {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
}

pub struct SignatureLayer {
    pub payload: Vec<u8>,
    pub signature: String,
    /// `dev.sigstore.cosign/certificate` (PEM leaf).
    pub certificate: Option<String>,
    /// `dev.sigstore.cosign/chain` (PEM intermediates).
    pub chain: Option<String>,
    /// `dev.sigstore.cosign/bundle` (Rekor bundle JSON).
    pub rekor_bundle: Option<String>,
}

/// The `sha256-<hex>.sig` tag of a manifest digest.
pub fn sig_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

/// Pushes a cosign `.sig` manifest with these layers for `digest`.
pub async fn push_signatures(
    pusher: &Pusher,
    repo: &str,
    digest: &str,
    layers: &[SignatureLayer],
) -> Vec<u8> {
    let config = Blob::new(
        "application/vnd.oci.image.config.v1+json",
        br#"{"architecture":"","os":""}"#.to_vec(),
    );
    pusher.blob(repo, &config).await;
    let mut descriptors = Vec::new();
    for l in layers {
        let blob = Blob::new(SIMPLE_SIGNING, l.payload.clone());
        pusher.blob(repo, &blob).await;
        let mut d = blob.descriptor();
        let mut notes = serde_json::json!({"dev.cosignproject.cosign/signature": l.signature});
        if let Some(c) = &l.certificate {
            notes["dev.sigstore.cosign/certificate"] = serde_json::json!(c);
        }
        if let Some(c) = &l.chain {
            notes["dev.sigstore.cosign/chain"] = serde_json::json!(c);
        }
        if let Some(b) = &l.rekor_bundle {
            notes["dev.sigstore.cosign/bundle"] = serde_json::json!(b);
        }
        d["annotations"] = notes;
        descriptors.push(d);
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(), "layers": descriptors,
    }))
    .unwrap();
    pusher
        .manifest(repo, &sig_tag(digest), OCI_MANIFEST, &manifest)
        .await;
    manifest
}

pub const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// A Sigstore bundle to attach as an OCI 1.1 referrer, and the predicate
/// type cosign v3 writes in the referrer's (unsigned) annotation.
pub struct Referrer {
    pub bundle: String,
    pub predicate_type: String,
}

/// Attaches bundles to `subject` as cosign v3 does on a registry without a
/// referrers API: one artifact manifest per bundle (with `subject`), listed
/// in the `sha256-<hex>` fallback index tag. Returns the artifact digests.
pub async fn push_referrers(
    pusher: &Pusher,
    repo: &str,
    subject: &super::Image,
    referrers: &[Referrer],
) -> Vec<String> {
    let empty = Blob::new("application/vnd.oci.empty.v1+json", b"{}".to_vec());
    pusher.blob(repo, &empty).await;
    let mut listed = Vec::new();
    let mut digests = Vec::new();
    for r in referrers {
        let layer = Blob::new(BUNDLE_V03, r.bundle.clone().into_bytes());
        pusher.blob(repo, &layer).await;
        let annotations = serde_json::json!({
            "dev.sigstore.bundle.content": "dsse-envelope",
            "dev.sigstore.bundle.predicateType": r.predicate_type,
        });
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": BUNDLE_V03,
            "config": empty.descriptor(), "layers": [layer.descriptor()],
            "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.manifest.len()},
            "annotations": annotations,
        }))
        .unwrap();
        let digest = super::image::sha256(&manifest);
        pusher
            .manifest(repo, &digest, OCI_MANIFEST, &manifest)
            .await;
        listed.push(serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(),
            "artifactType": BUNDLE_V03, "annotations": annotations,
        }));
        digests.push(digest);
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": super::image::OCI_INDEX, "manifests": listed,
    }))
    .unwrap();
    pusher
        .manifest(
            repo,
            &subject.digest.replace(':', "-"),
            super::image::OCI_INDEX,
            &index,
        )
        .await;
    digests
}

/// One layer of a cosign `.att` manifest: a DSSE envelope, and the
/// (unsigned) `predicateType` annotation cosign writes beside it.
pub struct AttestationLayer {
    pub envelope: String,
    pub predicate_type: String,
    /// The signer's certificate (PEM), for a certificate-signed attestation.
    pub certificate: Option<String>,
}

impl VendorKey {
    /// A DSSE envelope over `statement` as `cosign attest --key` makes it.
    pub fn attest_as(&self, statement: &serde_json::Value, payload_type: &str) -> AttestationLayer {
        let payload = serde_json::to_vec(statement).unwrap();
        let predicate_type = statement["predicateType"].as_str().unwrap_or("");
        self.attest_payload(&payload, payload_type, predicate_type)
    }

    /// A DSSE envelope over exactly these payload bytes (which need not be
    /// JSON serde_json would write), annotated with `predicate_type`.
    pub fn attest_payload(
        &self,
        payload: &[u8],
        payload_type: &str,
        predicate_type: &str,
    ) -> AttestationLayer {
        let sig = self
            .pair
            .sign(&super::fulcio::pae(payload_type, payload))
            .unwrap();
        AttestationLayer {
            envelope: serde_json::json!({
                "payloadType": payload_type, "payload": STANDARD.encode(payload),
                "signatures": [{"keyid": "", "sig": STANDARD.encode(sig.as_bytes())}],
            })
            .to_string(),
            predicate_type: predicate_type.into(),
            certificate: None,
        }
    }

    pub fn attest(&self, statement: &serde_json::Value) -> AttestationLayer {
        self.attest_as(statement, "application/vnd.in-toto+json")
    }
}

/// Pushes a cosign `sha256-<hex>.att` manifest with these layers.
pub async fn push_attestations(
    pusher: &Pusher,
    repo: &str,
    digest: &str,
    layers: &[AttestationLayer],
) {
    let config = Blob::new(
        "application/vnd.oci.image.config.v1+json",
        br#"{"architecture":"","os":""}"#.to_vec(),
    );
    pusher.blob(repo, &config).await;
    let mut descriptors = Vec::new();
    for l in layers {
        let blob = Blob::new(
            "application/vnd.dsse.envelope.v1+json",
            l.envelope.clone().into_bytes(),
        );
        pusher.blob(repo, &blob).await;
        let mut d = blob.descriptor();
        d["annotations"] = serde_json::json!({"predicateType": l.predicate_type});
        if let Some(c) = &l.certificate {
            d["annotations"]["dev.sigstore.cosign/certificate"] = serde_json::json!(c);
        }
        descriptors.push(d);
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(), "layers": descriptors,
    }))
    .unwrap();
    let tag = format!("{}.att", digest.replace(':', "-"));
    pusher.manifest(repo, &tag, OCI_MANIFEST, &manifest).await;
}

/// Base64 text broken into lines of `width` columns, as Go's and OpenSSL's
/// encoders can write it.
pub fn wrap_lines(base64: &str, width: usize) -> String {
    base64
        .as_bytes()
        .chunks(width)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}
