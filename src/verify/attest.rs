//! In-toto attestations: DSSE envelopes from cosign `.att` layers or
//! Sigstore bundles, verified against one authority. The signature covers
//! DSSE's pre-authentication encoding, the payload must be an in-toto
//! statement (`application/vnd.in-toto+json`) naming this digest, and the
//! predicate type is read from that signed statement, never from an
//! annotation.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::Reason;
use super::check::{self, matching_key, root, untrusted};
use super::evidence::{Attestation, LegacyAttestation};
use super::legacy::{self, Material as LegacyMaterial};
use super::sigstore::{self, Expected, Failure, Signed};
use super::x509;
use crate::oci::Digest;
use crate::trust::{Authority, Material};

pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
const STATEMENT_TYPES: [&str; 2] = [
    "https://in-toto.io/Statement/v0.1",
    "https://in-toto.io/Statement/v1",
];

/// A statement whose signature verified for one authority.
#[derive(Debug, Clone)]
pub struct VerifiedAttestation {
    pub predicate_type: String,
    /// The whole statement, for conditions.
    pub statement: serde_json::Value,
    /// Times proven by a verified SET or timestamp.
    pub signed_times: Vec<SystemTime>,
}

/// A DSSE envelope as cosign writes it. Duplicated fields are refused.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload_type: String,
    payload: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

/// The parts of an in-toto statement Portcullis relies on. Other fields are
/// allowed (forward compatibility); a duplicated field is an error, so two
/// parsers can never read two different statements from one payload.
#[derive(Deserialize)]
struct Statement {
    #[serde(rename = "_type")]
    kind: String,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
}

#[derive(Deserialize)]
struct Subject {
    digest: SubjectDigest,
}

#[derive(Deserialize)]
struct SubjectDigest {
    sha256: Option<String>,
    sha512: Option<String>,
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure::new(Reason::AttestationInvalid, message)
}

/// Parses a signed in-toto statement and checks it is about `subject`;
/// returns its predicate type and the statement as JSON.
pub fn parse_statement(
    payload: &[u8],
    subject: &Digest,
) -> Result<(String, serde_json::Value), Failure> {
    let statement: Statement = serde_json::from_slice(payload)
        .map_err(|e| invalid(format!("in-toto statement is malformed: {e}")))?;
    if !STATEMENT_TYPES.contains(&statement.kind.as_str()) {
        return Err(invalid(format!(
            "`{}` is not an in-toto statement type",
            statement.kind
        )));
    }
    let names_subject = statement.subject.iter().any(|s| {
        let claimed = match subject.algorithm() {
            crate::oci::digest::Algorithm::Sha256 => s.digest.sha256.as_deref(),
            crate::oci::digest::Algorithm::Sha512 => s.digest.sha512.as_deref(),
        };
        claimed.is_some_and(|hex| hex.eq_ignore_ascii_case(subject.hex()))
    });
    if !names_subject {
        return Err(invalid(format!(
            "statement is about another artifact, not {subject}"
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| invalid(format!("in-toto statement is malformed: {e}")))?;
    Ok((statement.predicate_type, value))
}

/// The predicate type an attestation *claims*, without verifying anything:
/// used only to choose the reason for a denial, never to allow.
pub fn claimed_predicate_type(attestation: &Attestation) -> Option<String> {
    let payload = match attestation {
        Attestation::Legacy(l) => {
            let env: Envelope = serde_json::from_slice(&l.envelope).ok()?;
            STANDARD.decode(env.payload).ok()?
        }
        Attestation::Bundle(json) => {
            let v: serde_json::Value = serde_json::from_slice(json).ok()?;
            STANDARD
                .decode(v["dsseEnvelope"]["payload"].as_str()?)
                .ok()?
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    v["predicateType"].as_str().map(String::from)
}

/// DSSE's pre-authentication encoding of a payload.
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

/// Verifies one attestation against one authority for `subject`.
pub fn verify(
    authority: &Authority,
    attestation: &Attestation,
    subject: &Digest,
    now: SystemTime,
) -> Result<VerifiedAttestation, Failure> {
    match attestation {
        Attestation::Legacy(l) => verify_legacy(authority, l, subject, now),
        Attestation::Bundle(json) => {
            let text = std::str::from_utf8(json).map_err(|_| invalid("bundle is not UTF-8"))?;
            let bundle = sigstore::parse_bundle(text)?;
            let payload = match &bundle.content {
                sigstore_verify::types::SignatureContent::DsseEnvelope(env) => {
                    if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
                        return Err(invalid(format!(
                            "DSSE payloadType is `{}`, not {IN_TOTO_PAYLOAD_TYPE}",
                            env.payload_type
                        )));
                    }
                    env.payload.as_bytes().to_vec()
                }
                _ => return Err(invalid("bundle holds no DSSE envelope")),
            };
            let (predicate_type, statement) = parse_statement(&payload, subject)?;
            let signed_times = check::check_bundle(authority, &bundle, subject, now)?;
            Ok(VerifiedAttestation {
                predicate_type,
                statement,
                signed_times,
            })
        }
    }
}

fn verify_legacy(
    authority: &Authority,
    l: &LegacyAttestation,
    subject: &Digest,
    now: SystemTime,
) -> Result<VerifiedAttestation, Failure> {
    let env: Envelope = serde_json::from_slice(&l.envelope)
        .map_err(|e| invalid(format!("DSSE envelope is malformed: {e}")))?;
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(invalid(format!(
            "DSSE payloadType is `{}`, not {IN_TOTO_PAYLOAD_TYPE}",
            env.payload_type
        )));
    }
    let payload = STANDARD
        .decode(&env.payload)
        .map_err(|_| invalid("DSSE payload is not base64"))?;
    let (predicate_type, statement) = parse_statement(&payload, subject)?;
    let signed = pae(&env.payload_type, &payload);
    check::legacy_serials(authority, l.certificate.as_deref(), l.chain.as_deref())?;
    let signatures: Vec<Vec<u8>> = env
        .signatures
        .iter()
        .filter_map(|s| STANDARD.decode(&s.sig).ok())
        .collect();
    if signatures.is_empty() {
        return Err(invalid("DSSE envelope carries no signature"));
    }
    // The envelope as a bundle's dsseEnvelope, with one signature.
    let as_bundle = |sig: &[u8], rekor: &str, material| {
        let content = serde_json::json!({
            "payload": env.payload, "payloadType": env.payload_type,
            "signatures": [{"sig": STANDARD.encode(sig), "keyid": ""}],
        });
        sigstore::parse_bundle(&legacy::bundle_json(
            rekor,
            material,
            "dsseEnvelope",
            content,
        )?)
    };
    let signed_times = match &authority.material {
        Material::Keys(keys) => {
            let (key, sig) = signatures
                .iter()
                .find_map(|sig| matching_key(keys, &signed, sig, false).map(|k| (k, sig)))
                .ok_or_else(|| {
                    untrusted("attestation not signed by any of the authority's keys")
                })?;
            match (&l.rekor_bundle, &authority.sigstore) {
                (Some(rekor), Some(root)) => {
                    let bundle = as_bundle(sig, rekor, LegacyMaterial::PublicKey)?;
                    sigstore::verify_bundle(
                        root,
                        &bundle,
                        Signed::Digest(subject),
                        Expected::Key(key),
                    )?
                    .signed_times
                }
                _ if authority.require_tlog => {
                    return Err(Failure::new(
                        Reason::TlogInvalid,
                        "no transparency-log entry, and the authority requires one",
                    ));
                }
                _ => Vec::new(),
            }
        }
        Material::Keyless(identity) => {
            let cert = l
                .certificate
                .as_deref()
                .ok_or_else(|| untrusted("no certificate: not a keyless attestation"))?;
            let leaf = legacy::pem_certs(cert)?.swap_remove(0);
            let rekor = l.rekor_bundle.as_deref().ok_or_else(|| {
                Failure::new(
                    Reason::TlogInvalid,
                    "keyless attestation without a transparency-log entry",
                )
            })?;
            let expected = Expected::Keyless {
                identity,
                require_sct: authority.require_sct,
            };
            // The library checks the signature with the certificate's key.
            let bundle = as_bundle(&signatures[0], rekor, LegacyMaterial::Certificate(&leaf))?;
            sigstore::verify_bundle(root(authority)?, &bundle, Signed::Digest(subject), expected)?
                .signed_times
        }
        Material::CaRoots(roots) => {
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
            let sig = signatures
                .iter()
                .find(|sig| x509::verify_with_certificate_key(&leaf, &signed, sig, false).is_ok())
                .ok_or_else(|| {
                    Failure::new(
                        Reason::InvalidSignature,
                        "attestation not signed by its certificate's key",
                    )
                })?;
            match (&l.rekor_bundle, &authority.sigstore) {
                (Some(rekor), Some(root)) => {
                    let bundle = as_bundle(sig, rekor, LegacyMaterial::Certificate(&leaf))?;
                    sigstore::verify_bundle(
                        root,
                        &bundle,
                        Signed::Digest(subject),
                        Expected::AnyCertificate,
                    )?
                    .signed_times
                }
                _ if authority.require_tlog => {
                    return Err(Failure::new(
                        Reason::TlogInvalid,
                        "no transparency-log entry, and the authority requires one",
                    ));
                }
                _ => {
                    x509::verify_chain(&leaf, &intermediates, roots, now)?;
                    Vec::new()
                }
            }
        }
    };
    Ok(VerifiedAttestation {
        predicate_type,
        statement,
        signed_times,
    })
}

/// When the attested evidence was produced: the predicate's own time where
/// well-known predicates record one (vulnerability scans, SLSA builds,
/// SBOMs), else the earliest proven signing time.
pub fn evidence_time(v: &VerifiedAttestation) -> Option<SystemTime> {
    const PATHS: [&[&str]; 6] = [
        &["metadata", "scanFinishedOn"],
        &["metadata", "scanStartedOn"],
        &["runDetails", "metadata", "finishedOn"],
        &["metadata", "buildFinishedOn"],
        &["metadata", "timestamp"],
        &["creationInfo", "created"],
    ];
    let predicate = &v.statement["predicate"];
    PATHS
        .iter()
        .find_map(|path| {
            let value = path.iter().fold(predicate, |v, k| &v[*k]);
            value
                .as_str()
                .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
        })
        .or_else(|| v.signed_times.iter().min().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Digest {
        Digest::sha256_of(b"manifest")
    }

    fn statement(kind: &str, hex: &str) -> String {
        format!(
            r#"{{"_type":"{kind}","subject":[{{"name":"x","digest":{{"sha256":"{hex}"}}}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{{}}}}"#
        )
    }

    #[test]
    fn statements_v01_and_v1_about_this_digest_parse() {
        for kind in STATEMENT_TYPES {
            let (t, v) =
                parse_statement(statement(kind, subject().hex()).as_bytes(), &subject()).unwrap();
            assert_eq!(t, "https://slsa.dev/provenance/v1");
            assert_eq!(v["predicate"], serde_json::json!({}));
        }
    }

    #[test]
    fn statement_about_another_digest_is_invalid() {
        let other = Digest::sha256_of(b"other");
        let e = parse_statement(
            statement(STATEMENT_TYPES[1], other.hex()).as_bytes(),
            &subject(),
        )
        .unwrap_err();
        assert_eq!(e.reason, Reason::AttestationInvalid);
    }

    #[test]
    fn hostile_statements_are_refused_without_panicking() {
        let hex = subject().hex().to_string();
        for payload in [
            r#"{"_type":"https://in-toto.io/Statement/v1","subject":null,"predicateType":"x"}"#.to_string(),
            r#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":null}],"predicateType":"x"}"#.to_string(),
            r#"{"_type":"https://in-toto.io/Statement/v1","predicateType":"x"}"#.to_string(),
            r#"{"_type":"other","subject":[],"predicateType":"x"}"#.to_string(),
            "[]".to_string(),
            "\u{0}".to_string(),
            // Two predicate types: one parser would read the first, another the last.
            format!(
                r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"{hex}"}}}}],"predicateType":"a","predicateType":"b"}}"#
            ),
            // Two subject digests: the same trick on the subject.
            format!(
                r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"00","sha256":"{hex}"}}}}],"predicateType":"a"}}"#
            ),
        ] {
            assert!(
                parse_statement(payload.as_bytes(), &subject()).is_err(),
                "{payload}"
            );
        }
    }

    #[test]
    fn claimed_type_reads_unsigned_envelopes_and_never_panics() {
        let payload = STANDARD.encode(statement(STATEMENT_TYPES[1], subject().hex()));
        let env = format!(
            r#"{{"payloadType":"application/vnd.in-toto+json","payload":"{payload}","signatures":[]}}"#
        );
        let l = |e: &str| {
            Attestation::Legacy(LegacyAttestation {
                envelope: bytes::Bytes::from(e.to_string()),
                certificate: None,
                chain: None,
                rekor_bundle: None,
            })
        };
        assert_eq!(
            claimed_predicate_type(&l(&env)).as_deref(),
            Some("https://slsa.dev/provenance/v1")
        );
        assert_eq!(claimed_predicate_type(&l("{")), None);
        assert_eq!(
            claimed_predicate_type(&Attestation::Bundle(bytes::Bytes::from_static(b"{}"))),
            None
        );
    }

    #[test]
    fn pae_matches_the_dsse_specification_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn evidence_time_prefers_the_predicate_then_the_signing_time() {
        let at = |predicate: serde_json::Value, signed: Vec<SystemTime>| VerifiedAttestation {
            predicate_type: String::new(),
            statement: serde_json::json!({ "predicate": predicate }),
            signed_times: signed,
        };
        let t = humantime::parse_rfc3339("2026-01-02T03:04:05Z").unwrap();
        let signed = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1);
        assert_eq!(
            evidence_time(&at(
                serde_json::json!({"metadata": {"scanFinishedOn": "2026-01-02T03:04:05Z"}}),
                vec![signed]
            )),
            Some(t)
        );
        assert_eq!(
            evidence_time(&at(serde_json::json!({"other": 1}), vec![signed])),
            Some(signed)
        );
        assert_eq!(evidence_time(&at(serde_json::Value::Null, vec![])), None);
    }
}
