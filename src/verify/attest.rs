//! In-toto attestations: DSSE envelopes from cosign `.att` layers or
//! Sigstore bundles, verified against one authority. The signature covers
//! DSSE's pre-authentication encoding, the payload must be an in-toto
//! statement (`application/vnd.in-toto+json`) naming this digest, and the
//! predicate type is read from that signed statement, never from an
//! annotation. The statement is parsed once, strictly: a member duplicated
//! at any depth makes it invalid, so no other parser can read a different
//! statement from the same bytes, and conditions see exactly what was
//! checked.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::Reason;
use super::check;
use super::evidence::{Attestation, LegacyAttestation};
use super::legacy::{self, Material as LegacyMaterial};
use super::signer::{self, Noun, SignedEvidence, Source};
use super::sigstore::{self, Failure, Message, Signed};
use crate::oci::Digest;
use crate::trust::Authority;

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

/// The parts of an in-toto statement Portcullis relies on, read from the
/// strictly parsed statement. Other fields are allowed (forward
/// compatibility).
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

/// JSON parsed like `serde_json::Value`, except that an object with a
/// member name twice, at any depth, is an error instead of "last one wins".
pub struct StrictJson(pub serde_json::Value);

impl<'de> Deserialize<'de> for StrictJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StrictJson, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value without duplicated object members")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(b.into())
    }

    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(n.into())
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(n.into())
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        serde_json::Number::from_f64(n)
            .map(serde_json::Value::Number)
            .ok_or_else(|| E::custom("a number is not finite"))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(s.into())
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(s.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.contains_key(&key) {
                return Err(de::Error::custom(format!("member {key:?} is duplicated")));
            }
            let StrictJson(value) = map.next_value()?;
            members.insert(key, value);
        }
        Ok(serde_json::Value::Object(members))
    }
}

/// Parses JSON strictly (see [`StrictJson`]).
pub fn parse_strict(bytes: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::from_slice::<StrictJson>(bytes).map(|StrictJson(v)| v)
}

/// Parses a signed in-toto statement and checks it is about `subject`;
/// returns its predicate type and the statement as JSON, exactly as parsed.
pub fn parse_statement(
    payload: &[u8],
    subject: &Digest,
) -> Result<(String, serde_json::Value), Failure> {
    let malformed = |e: serde_json::Error| {
        invalid(format!(
            "in-toto statement is malformed: {}",
            legacy::escaped(e)
        ))
    };
    let value = parse_strict(payload).map_err(malformed)?;
    let statement = Statement::deserialize(&value).map_err(malformed)?;
    if !STATEMENT_TYPES.contains(&statement.kind.as_str()) {
        return Err(invalid(format!(
            "{:?} is not an in-toto statement type",
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

fn wrong_payload_type(payload_type: &str) -> Failure {
    invalid(format!(
        "DSSE payloadType is {payload_type:?}, not {IN_TOTO_PAYLOAD_TYPE}"
    ))
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
                        return Err(wrong_payload_type(&env.payload_type));
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
    let env: Envelope = serde_json::from_slice(&l.envelope).map_err(|e| {
        invalid(format!(
            "DSSE envelope is malformed: {}",
            legacy::escaped(e)
        ))
    })?;
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(wrong_payload_type(&env.payload_type));
    }
    let payload = STANDARD
        .decode(&env.payload)
        .map_err(|_| invalid("DSSE payload is not base64"))?;
    let (predicate_type, statement) = parse_statement(&payload, subject)?;
    check::legacy_serials(authority, l.certificate.as_deref(), l.chain.as_deref())?;
    let signatures: Vec<Vec<u8>> = env
        .signatures
        .iter()
        .filter_map(|s| legacy::decode_base64_lines(&s.sig).ok())
        .collect();
    if signatures.is_empty() {
        return Err(invalid("DSSE envelope carries no signature"));
    }
    let to_bundle = |sig: &[u8], rekor: &str, material: LegacyMaterial<'_>| {
        envelope_bundle(&env, sig, rekor, material)
    };
    let evidence = SignedEvidence {
        message: Message::Bytes(Cow::Owned(pae(&env.payload_type, &payload))),
        signatures: signatures.iter().map(Vec::as_slice).collect(),
        logged: Signed::Digest(subject),
        source: Source::Legacy {
            noun: Noun::Attestation,
            certificate: l.certificate.as_deref(),
            chain: l.chain.as_deref(),
            rekor: l.rekor_bundle.as_deref(),
            to_bundle: &to_bundle,
        },
    };
    let signed_times = signer::match_signer(authority, &evidence, now)?;
    Ok(VerifiedAttestation {
        predicate_type,
        statement,
        signed_times,
    })
}

/// The envelope as a bundle's dsseEnvelope, with one signature `sig`, and
/// the tlog entry of the layer's Rekor bundle annotation.
fn envelope_bundle(
    env: &Envelope,
    sig: &[u8],
    rekor: &str,
    material: LegacyMaterial<'_>,
) -> Result<sigstore_verify::types::Bundle, Failure> {
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
}

/// How far past `now` a recorded time may lie before it is refused: clocks
/// of signers and of the proxy disagree by seconds, not by minutes.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// When the attested evidence was produced, for `max_age`: the earlier of
/// the predicate's own time (where well-known predicates record one:
/// vulnerability scans, SLSA builds, SBOMs) and the earliest proven signing
/// time, so evidence is never younger than its proven signature. `None`
/// when neither is known; an error when either lies more than
/// [`MAX_CLOCK_SKEW`] after `now`.
pub fn evidence_time(
    v: &VerifiedAttestation,
    now: SystemTime,
) -> Result<Option<SystemTime>, String> {
    const PATHS: [&[&str]; 6] = [
        &["metadata", "scanFinishedOn"],
        &["metadata", "scanStartedOn"],
        &["runDetails", "metadata", "finishedOn"],
        &["metadata", "buildFinishedOn"],
        &["metadata", "timestamp"],
        &["creationInfo", "created"],
    ];
    let predicate = &v.statement["predicate"];
    let claimed = PATHS.iter().find_map(|path| {
        let value = path.iter().fold(predicate, |v, k| &v[*k]);
        value
            .as_str()
            .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
    });
    let signed = v.signed_times.iter().min().copied();
    let latest = now.checked_add(MAX_CLOCK_SKEW).unwrap_or(now);
    let future = |what: &str, t: SystemTime| {
        format!(
            "the attestation's {what} {} is in the future (now {}, allowed clock skew {})",
            humantime::format_rfc3339_seconds(t),
            humantime::format_rfc3339_seconds(now),
            humantime::format_duration(MAX_CLOCK_SKEW)
        )
    };
    if let Some(t) = claimed.filter(|t| *t > latest) {
        return Err(future("recorded time", t));
    }
    if let Some(t) = v.signed_times.iter().copied().filter(|t| *t > latest).max() {
        return Err(future("signing time", t));
    }
    Ok(match (claimed, signed) {
        (Some(c), Some(s)) => Some(c.min(s)),
        (c, s) => c.or(s),
    })
}

#[cfg(test)]
mod tests;
