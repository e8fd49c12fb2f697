//! Cosign's legacy `sha256-<hex>.sig` signatures: one simple-signing payload
//! per layer, with the signature, certificate, chain and Rekor bundle in
//! layer annotations. The payload is parsed strictly (a duplicated key is an
//! error, never "last one wins"), and a layer converts into an in-memory
//! Sigstore v0.1 bundle so the same verifier checks SET, body and signature.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::Reason;
use super::evidence::LegacySignature;
use super::sigstore::Failure;
use crate::oci::Digest;

pub const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest", alias = "Docker-manifest-digest")]
    digest: String,
}

/// Checks that the payload is a cosign image signature about `subject`.
/// serde refuses duplicated fields, so a payload naming two digests fails.
pub fn check_payload(payload: &[u8], subject: &Digest) -> Result<(), Failure> {
    let parsed: Payload = serde_json::from_slice(payload).map_err(|e| {
        Failure::new(
            Reason::InvalidSignature,
            format!("signature payload is malformed: {}", escaped(e)),
        )
    })?;
    if !parsed
        .critical
        .kind
        .eq_ignore_ascii_case(SIMPLE_SIGNING_TYPE)
    {
        return Err(Failure::new(
            Reason::InvalidSignature,
            "signature payload is not a cosign image signature",
        ));
    }
    let claimed: Digest = parsed.critical.image.digest.parse().map_err(|_| {
        Failure::new(
            Reason::InvalidSignature,
            "signature payload digest is malformed",
        )
    })?;
    if claimed != *subject {
        return Err(Failure::new(
            Reason::InvalidSignature,
            format!("signature is for {claimed}, not this manifest (replayed signature)"),
        ));
    }
    Ok(())
}

/// `s` with control characters (newlines included) escaped, as
/// [`crate::log::escape_control`] does: parser errors can quote the signed
/// bytes, and denial messages end up in logs.
pub fn escaped(s: impl fmt::Display) -> String {
    crate::log::escape_control(&s.to_string()).into_owned()
}

/// Standard base64 as Go's decoder reads it, which cosign and
/// containers/image use: line breaks (CR, LF) anywhere are ignored, so a
/// signature wrapped at 76 columns decodes. Nothing else is tolerated
/// inside; the decoded bytes are what gets verified.
pub fn decode_base64_lines(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    if text.contains(['\r', '\n']) {
        let joined: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        STANDARD.decode(joined)
    } else {
        STANDARD.decode(text)
    }
}

/// The decoded signature bytes.
pub fn signature_bytes(sig: &LegacySignature) -> Result<Vec<u8>, Failure> {
    decode_base64_lines(sig.signature.trim()).map_err(|_| {
        Failure::new(
            Reason::InvalidSignature,
            "signature annotation is not base64",
        )
    })
}

/// PEM certificates in an annotation, as DER.
pub fn pem_certs(pem: &str) -> Result<Vec<Vec<u8>>, Failure> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|_| {
            Failure::new(
                Reason::InvalidSignature,
                "certificate annotation is not PEM",
            )
        })?;
    if certs.is_empty() {
        return Err(Failure::new(
            Reason::InvalidSignature,
            "certificate annotation holds no certificate",
        ));
    }
    Ok(certs)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RekorBundle {
    signed_entry_timestamp: String,
    payload: RekorPayload,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RekorPayload {
    body: String,
    integrated_time: i64,
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryKind {
    kind: String,
    api_version: String,
}

/// What signed: a certificate (leaf DER) or a public key.
pub enum Material<'a> {
    Certificate(&'a [u8]),
    PublicKey,
}

/// Builds the v0.1 bundle JSON equivalent to a legacy layer that carries a
/// Rekor bundle annotation: a message signature over sha256(payload), the
/// leaf certificate alone (or a public-key hint), and the tlog entry with its
/// SET as inclusion promise.
pub fn to_bundle_json(
    sig: &LegacySignature,
    rekor: &str,
    material: Material<'_>,
    signature: &[u8],
) -> Result<String, Failure> {
    let content = serde_json::json!({
        "messageDigest": {"algorithm": "SHA2_256", "digest": STANDARD.encode(Sha256::digest(&sig.payload))},
        "signature": STANDARD.encode(signature),
    });
    bundle_json(rekor, material, "messageSignature", content)
}

/// The v0.1 bundle JSON for `content` (under `content_key`:
/// `messageSignature` or `dsseEnvelope`) with the tlog entry of a cosign
/// Rekor bundle annotation.
pub fn bundle_json(
    rekor: &str,
    material: Material<'_>,
    content_key: &str,
    content: serde_json::Value,
) -> Result<String, Failure> {
    let bad = |what: &str| {
        Failure::new(
            Reason::TlogInvalid,
            format!("Rekor bundle annotation: {what}"),
        )
    };
    let rekor: RekorBundle = serde_json::from_str(rekor).map_err(|_| bad("malformed"))?;
    let body = STANDARD
        .decode(&rekor.payload.body)
        .map_err(|_| bad("body is not base64"))?;
    let kind: EntryKind =
        serde_json::from_slice(&body).map_err(|_| bad("body is not a Rekor entry"))?;
    let log_id = hex::decode(&rekor.payload.log_id).map_err(|_| bad("logID is not hex"))?;
    let material = match material {
        Material::Certificate(leaf) => serde_json::json!({
            "x509CertificateChain": {"certificates": [{"rawBytes": STANDARD.encode(leaf)}]}
        }),
        Material::PublicKey => serde_json::json!({"publicKey": {"hint": ""}}),
    };
    let mut verification = material;
    verification["tlogEntries"] = serde_json::json!([{
        "logIndex": rekor.payload.log_index.to_string(),
        "logId": {"keyId": STANDARD.encode(log_id)},
        "kindVersion": {"kind": kind.kind, "version": kind.api_version},
        "integratedTime": rekor.payload.integrated_time.to_string(),
        "inclusionPromise": {"signedEntryTimestamp": rekor.signed_entry_timestamp},
        "canonicalizedBody": rekor.payload.body,
    }]);
    let mut bundle = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "verificationMaterial": verification,
    });
    bundle[content_key] = content;
    serde_json::to_string(&bundle).map_err(|e| bad(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Digest {
        Digest::sha256_of(b"manifest")
    }

    fn payload(digest: &str) -> String {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"r/a"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
        )
    }

    #[test]
    fn payload_for_this_digest_passes() {
        assert!(check_payload(payload(&subject().to_string()).as_bytes(), &subject()).is_ok());
    }

    #[test]
    fn payload_for_another_digest_is_a_replay() {
        let other = Digest::sha256_of(b"other").to_string();
        let e = check_payload(payload(&other).as_bytes(), &subject()).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidSignature);
        assert!(e.message.contains("replayed"));
    }

    #[test]
    fn duplicated_manifest_digest_is_refused_in_either_order() {
        let (good, bad) = (subject().to_string(), Digest::sha256_of(b"x").to_string());
        for (a, b) in [(&good, &bad), (&bad, &good)] {
            let p = format!(
                r#"{{"critical":{{"image":{{"docker-manifest-digest":"{a}","docker-manifest-digest":"{b}"}},"type":"cosign container image signature"}}}}"#
            );
            assert!(check_payload(p.as_bytes(), &subject()).is_err());
        }
    }

    #[test]
    fn base64_wrapped_with_line_breaks_decodes_to_the_same_bytes() {
        let bytes: Vec<u8> = (0..=255).collect();
        let flat = STANDARD.encode(&bytes);
        let wrapped: Vec<&str> = flat
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        for text in [flat.clone(), wrapped.join("\n"), wrapped.join("\r\n")] {
            assert_eq!(decode_base64_lines(&text).unwrap(), bytes, "{text}");
        }
        for other in [" ", "\t", "*"] {
            assert!(
                decode_base64_lines(&wrapped.join(other)).is_err(),
                "{other:?}"
            );
        }
    }

    #[test]
    fn wrong_type_and_garbage_are_refused() {
        let p = payload(&subject().to_string())
            .replace("cosign container image signature", "something else");
        assert!(check_payload(p.as_bytes(), &subject()).is_err());
        assert!(check_payload(b"\xff{", &subject()).is_err());
        assert!(check_payload(br#"{"critical":null}"#, &subject()).is_err());
    }
}
