use super::signatures::*;
use super::*;
use crate::policy::{AttestationRequirement, Condition, Require};
use crate::verify::attest::pae;
use crate::verify::evidence::{Attestation, LegacyAttestation};
use base64::Engine;
use std::time::Duration;

const SLSA: &str = "https://slsa.dev/provenance/v1";

impl Vendor {
    fn attest_as(&self, payload_type: &str, statement: &serde_json::Value) -> Attestation {
        let payload = serde_json::to_vec(statement).unwrap();
        let sig = self.key.sign(&pae(payload_type, &payload)).unwrap();
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let envelope = serde_json::json!({
            "payloadType": payload_type, "payload": b64(&payload),
            "signatures": [{"keyid": "", "sig": b64(sig.as_bytes())}],
        });
        Attestation::Legacy(LegacyAttestation {
            envelope: bytes::Bytes::from(envelope.to_string()),
            certificate: None,
            chain: None,
            rekor_bundle: None,
        })
    }

    fn attest(&self, statement: &serde_json::Value) -> Attestation {
        self.attest_as("application/vnd.in-toto+json", statement)
    }
}

fn statement(
    digest: &Digest,
    predicate_type: &str,
    predicate: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "hub/app", "digest": {"sha256": digest.hex()}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    })
}

fn provenance(builder: &str) -> serde_json::Value {
    serde_json::json!({"runDetails": {"builder": {"id": builder}, "metadata": {"finishedOn": "2026-11-20T00:00:00Z"}}})
}

fn gate_requiring(acme: &Vendor, mode: Mode, max_age: Option<Duration>) -> Gate {
    let rule = Rule::Signatures {
        authorities: vec!["acme".into()],
        require: Require::Any,
        require_child_signatures: false,
    };
    let mut p = policy("vendor", "**", mode, rule);
    p.attestations = vec![AttestationRequirement {
        name: "provenance".into(),
        predicate_type: SLSA.into(),
        authorities: vec!["acme".into()],
        require: Require::Any,
        condition: Some(
            Condition::compile(
                "github-builder",
                r#"predicate.runDetails.builder.id == "https://github.com/actions/runner""#,
            )
            .unwrap(),
        ),
        max_age,
    }];
    Gate::new(
        PolicySet::new(vec![p]),
        Arc::new(TrustSnapshot::new(vec![acme.authority(Tlog::Optional)], 1)),
    )
}

fn now() -> SystemTime {
    humantime::parse_rfc3339("2026-11-22T00:00:00Z").unwrap()
}

fn judge_with(
    gate: &Gate,
    signer: &Vendor,
    attestations: Vec<Attestation>,
) -> Result<VerifiedManifest, Denial> {
    let evidence = Evidence {
        signatures: vec![signer.sign(&subject())],
        attestations,
        limit_exceeded: None,
    };
    gate.decide(
        &"hub".parse().unwrap(),
        &"app".parse().unwrap(),
        content(),
        &evidence,
        Reached::Directly,
        now(),
    )
}

fn reason(r: Result<VerifiedManifest, Denial>) -> Reason {
    r.unwrap_err().reason
}

#[test]
fn stale_signing_trust_is_relaxed_only_when_the_required_attestations_hold_too() {
    let (acme, scanner) = (Vendor::new("acme"), Vendor::new("scanner"));
    let rule = Rule::Signatures {
        authorities: vec!["acme".into()],
        require: Require::Any,
        require_child_signatures: false,
    };
    let mut p = policy("vendor", "**", Mode::Enforce, rule);
    p.trust_unavailable_allows = true;
    const SCAN: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";
    p.attestations = vec![AttestationRequirement {
        name: "scan".into(),
        predicate_type: SCAN.into(),
        authorities: vec!["scanner".into()],
        require: Require::Any,
        condition: None,
        max_age: None,
    }];
    let mut stale = acme.authority(Tlog::Optional);
    stale.stale_after = Some(now() - Duration::from_secs(3600));
    let gate = Gate::new(
        PolicySet::new(vec![p]),
        Arc::new(TrustSnapshot::new(
            vec![stale, scanner.authority(Tlog::Optional)],
            1,
        )),
    );
    let d = judge_with(&gate, &acme, vec![]).unwrap_err();
    assert_eq!(d.reason, Reason::TrustUnavailable, "{}", d.message);
    let forged = Vendor::new("scanner").attest(&statement(&subject(), SCAN, serde_json::json!({})));
    assert!(
        judge_with(&gate, &acme, vec![forged]).is_err(),
        "a refuted attestation is not relaxed"
    );
    let scan = scanner.attest(&statement(&subject(), SCAN, serde_json::json!({})));
    let v = judge_with(&gate, &acme, vec![scan]).unwrap();
    assert_eq!(v.audit_denial(), Some(Reason::TrustUnavailable));
}

#[test]
fn stale_trust_for_one_requirement_is_relaxed_only_when_its_attestation_verifies() {
    let (acme, scanner) = (Vendor::new("acme"), Vendor::new("scanner"));
    let rule = Rule::Signatures {
        authorities: vec!["acme".into()],
        require: Require::Any,
        require_child_signatures: false,
    };
    let mut p = policy("vendor", "**", Mode::Enforce, rule);
    p.trust_unavailable_allows = true;
    let requirement = |name: &str, predicate_type: &str, authority: &str| AttestationRequirement {
        name: name.into(),
        predicate_type: predicate_type.into(),
        authorities: vec![authority.into()],
        require: Require::Any,
        condition: None,
        max_age: None,
    };
    const SCAN: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";
    p.attestations = vec![
        requirement("provenance", SLSA, "acme"),
        requirement("scan", SCAN, "scanner"),
    ];
    let mut stale = scanner.authority(Tlog::Optional);
    stale.stale_after = Some(now() - Duration::from_secs(3600));
    let gate = Gate::new(
        PolicySet::new(vec![p]),
        Arc::new(TrustSnapshot::new(
            vec![acme.authority(Tlog::Optional), stale],
            1,
        )),
    );
    let provenance = acme.attest(&statement(&subject(), SLSA, provenance(GITHUB)));
    let scan = scanner.attest(&statement(&subject(), SCAN, serde_json::json!({})));
    let v = judge_with(&gate, &acme, vec![provenance.clone(), scan]).unwrap();
    assert_eq!(
        v.audit_denial(),
        Some(Reason::TrustUnavailable),
        "met fresh, and met with the scanner's last good key"
    );
    let forged = Vendor::new("scanner").attest(&statement(&subject(), SCAN, serde_json::json!({})));
    assert!(
        judge_with(&gate, &acme, vec![provenance, forged]).is_err(),
        "the scanner's last good key refutes the forged scan"
    );
}

const GITHUB: &str = "https://github.com/actions/runner";

#[test]
fn signed_provenance_meeting_the_condition_allows() {
    let acme = Vendor::new("acme");
    let gate = gate_requiring(&acme, Mode::Enforce, None);
    let att = acme.attest(&statement(&subject(), SLSA, provenance(GITHUB)));
    let v = judge_with(&gate, &acme, vec![att]).unwrap();
    assert_eq!(v.attestations().len(), 1);
    assert_eq!(
        v.attestations()[0].outcome.as_ref().unwrap(),
        &vec!["acme".to_string()]
    );
}

#[test]
fn each_broken_attestation_is_denied_with_its_reason() {
    let acme = Vendor::new("acme");
    let mallory = Vendor::new("acme");
    let gate = gate_requiring(&acme, Mode::Enforce, None);
    let other = Digest::sha256_of(b"other image");
    let vuln = "https://cosign.sigstore.dev/attestation/vuln/v1";
    let cases: Vec<(&str, Vec<Attestation>, Reason)> = vec![
        ("none", vec![], Reason::AttestationMissing),
        (
            "another digest",
            vec![acme.attest(&statement(&other, SLSA, provenance(GITHUB)))],
            Reason::AttestationInvalid,
        ),
        (
            "untrusted key",
            vec![mallory.attest(&statement(&subject(), SLSA, provenance(GITHUB)))],
            Reason::AttestationInvalid,
        ),
        (
            "payloadType",
            vec![acme.attest_as(
                "text/plain",
                &statement(&subject(), SLSA, provenance(GITHUB)),
            )],
            Reason::AttestationInvalid,
        ),
        (
            "other builder",
            vec![acme.attest(&statement(
                &subject(),
                SLSA,
                provenance("https://evil.example"),
            ))],
            Reason::PredicateFailed,
        ),
        (
            "no builder",
            vec![acme.attest(&statement(&subject(), SLSA, serde_json::json!(null)))],
            Reason::PredicateFailed,
        ),
        (
            "another type",
            vec![acme.attest(&statement(&subject(), vuln, provenance(GITHUB)))],
            Reason::AttestationMissing,
        ),
    ];
    for (what, atts, want) in cases {
        assert_eq!(reason(judge_with(&gate, &acme, atts)), want, "{what}");
    }
}

#[test]
fn an_invalid_signature_is_not_reported_when_the_signature_itself_fails() {
    let acme = Vendor::new("acme");
    let mallory = Vendor::new("acme");
    let gate = gate_requiring(&acme, Mode::Enforce, None);
    let att = acme.attest(&statement(&subject(), SLSA, provenance(GITHUB)));
    assert_eq!(
        reason(judge_with(&gate, &mallory, vec![att])),
        Reason::UntrustedSigner
    );
}

#[test]
fn max_age_bounds_the_attested_time() {
    let acme = Vendor::new("acme");
    let att = || acme.attest(&statement(&subject(), SLSA, provenance(GITHUB)));
    // finishedOn is two days before now().
    let fresh = gate_requiring(&acme, Mode::Enforce, Some(Duration::from_secs(3 * 86400)));
    assert!(judge_with(&fresh, &acme, vec![att()]).is_ok());
    let strict = gate_requiring(&acme, Mode::Enforce, Some(Duration::from_secs(86400)));
    let d = judge_with(&strict, &acme, vec![att()]).unwrap_err();
    assert_eq!(d.reason, Reason::PredicateFailed);
    assert!(d.message.contains("max_age"), "{}", d.message);
    let exact = gate_requiring(&acme, Mode::Enforce, Some(Duration::from_secs(2 * 86400)));
    assert!(
        judge_with(&exact, &acme, vec![att()]).is_ok(),
        "exactly max_age old is still within it"
    );
}

#[test]
fn audit_mode_records_an_attestation_failure_and_allows() {
    let acme = Vendor::new("acme");
    let gate = gate_requiring(&acme, Mode::Audit, None);
    let v = judge_with(&gate, &acme, vec![]).unwrap();
    assert_eq!(v.audit_denial(), Some(Reason::AttestationMissing));
}

#[test]
fn denial_names_the_requirement_predicate_type_and_condition() {
    let acme = Vendor::new("acme");
    let gate = gate_requiring(&acme, Mode::Enforce, None);
    let att = acme.attest(&statement(
        &subject(),
        SLSA,
        provenance("https://evil.example"),
    ));
    let d = judge_with(&gate, &acme, vec![att]).unwrap_err();
    for part in ["provenance", SLSA, "github-builder"] {
        assert!(d.message.contains(part), "{part} in {}", d.message);
    }
    assert_eq!(
        d.attestations[0].condition.as_deref(),
        Some("github-builder")
    );
}

#[test]
fn an_attestation_by_a_key_the_authority_does_not_hold_is_named_as_an_attestation() {
    let (acme, mallory) = (Vendor::new("acme"), Vendor::new("acme"));
    let gate = gate_requiring(&acme, Mode::Enforce, None);
    let att = mallory.attest(&statement(&subject(), SLSA, provenance(GITHUB)));
    let d = judge_with(&gate, &acme, vec![att]).unwrap_err();
    assert!(
        d.message
            .contains("attestation not signed by any of the authority's keys"),
        "{}",
        d.message
    );
}

#[test]
fn audit_mode_records_the_attestations_of_an_image_whose_signature_fails() {
    let (acme, mallory) = (Vendor::new("acme"), Vendor::new("acme"));
    let gate = gate_requiring(&acme, Mode::Audit, None);
    let att = acme.attest(&statement(&subject(), SLSA, provenance(GITHUB)));
    // Signed by a key acme does not hold, with a good attestation: served
    // in audit mode, and what is served records the attestation's result.
    let v = judge_with(&gate, &mallory, vec![att]).unwrap();
    assert_eq!(v.audit_denial(), Some(Reason::UntrustedSigner));
    assert_eq!(v.attestations().len(), 1);
    assert_eq!(
        v.attestations()[0].outcome.as_ref().unwrap(),
        &vec!["acme".to_string()]
    );
}
