use super::*;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const SLSA: &str = "https://slsa.dev/provenance/v1";

fn digest() -> Digest {
    DIGEST.parse().unwrap()
}

fn not_met(reason: Reason, message: &str) -> NotMet {
    NotMet {
        reason,
        message: message.into(),
    }
}

fn report(verdict: Verdict) -> VerifyReport {
    VerifyReport {
        image: "hub/acme/app:v1".into(),
        verdict,
        authorities: vec![
            AuthorityFinding {
                authority: "acme".into(),
                outcome: AuthorityOutcome::Met,
            },
            AuthorityFinding {
                authority: "other".into(),
                outcome: AuthorityOutcome::NotMet(not_met(Reason::Unsigned, "no signature")),
            },
        ],
        attestations: vec![
            AttestationFinding {
                requirement: "sbom".into(),
                predicate_type: "https://spdx.dev/Document".into(),
                condition: None,
                outcome: AttestationOutcome::Met {
                    by: vec!["acme".into(), "other".into()],
                },
            },
            AttestationFinding {
                requirement: "provenance".into(),
                predicate_type: SLSA.into(),
                condition: Some("github-hosted-builder".into()),
                outcome: AttestationOutcome::NotMet(not_met(
                    Reason::PredicateFailed,
                    "builder is not GitHub-hosted",
                )),
            },
        ],
    }
}

const FINDINGS: &str = "  authority acme: met\n\
    \x20 authority other: not met (unsigned: no signature)\n\
    \x20 attestation sbom (https://spdx.dev/Document): met by acme, other\n\
    \x20 attestation provenance (https://slsa.dev/provenance/v1, condition github-hosted-builder): \
    not met (predicate_failed: builder is not GitHub-hosted)\n";

#[test]
fn an_allow_prints_digest_policy_verdict_then_each_finding_and_exits_0() {
    let r = report(Verdict::Allow {
        digest: digest(),
        policy: "acme".into(),
    });
    assert_eq!(
        r.to_string(),
        format!(
            "image: hub/acme/app:v1\ndigest: {DIGEST}\npolicy: acme\nverdict: allow\n{FINDINGS}"
        )
    );
    assert_eq!((r.exit(), r.diagnostic()), (Exit::Success, None));
}

#[test]
fn an_audit_mode_allow_says_what_enforce_would_have_denied_and_exits_0() {
    let r = report(Verdict::AuditAllow {
        digest: digest(),
        policy: "acme".into(),
        reason: Reason::PredicateFailed,
        message: "builder is not GitHub-hosted".into(),
    });
    assert_eq!(
        r.to_string(),
        format!(
            "image: hub/acme/app:v1\ndigest: {DIGEST}\npolicy: acme\n\
             verdict: allow (audit mode; enforce would deny: predicate_failed)\n{FINDINGS}"
        )
    );
    assert_eq!(r.exit(), Exit::Success);
}

#[test]
fn a_deny_with_findings_prints_reason_message_and_every_finding_and_exits_1() {
    let r = report(Verdict::Deny {
        policy: Some("acme".into()),
        digest: Some(digest()),
        reason: Reason::PredicateFailed,
        message: "attestation provenance not met".into(),
    });
    assert_eq!(
        r.to_string(),
        format!(
            "image: hub/acme/app:v1\ndigest: {DIGEST}\npolicy: acme\n\
             verdict: deny (predicate_failed): attestation provenance not met\n{FINDINGS}"
        )
    );
    assert_eq!((r.exit(), r.diagnostic()), (Exit::Failure, None));
}

#[test]
fn an_image_asked_by_digest_is_named_with_at_not_a_colon() {
    let d: crate::oci::Digest = DIGEST.parse().unwrap();
    let by_digest = super::image_name(&"hub", &"acme/app", &crate::oci::Reference::Digest(d));
    assert_eq!(by_digest, format!("hub/acme/app@{DIGEST}"));
    let tag = crate::oci::Reference::Tag("v1".parse().unwrap());
    assert_eq!(
        super::image_name(&"hub", &"acme/app", &tag),
        "hub/acme/app:v1"
    );
}

#[test]
fn a_deny_without_a_policy_names_none() {
    let r = VerifyReport {
        authorities: vec![],
        attestations: vec![],
        ..report(Verdict::Deny {
            policy: None,
            digest: None,
            reason: Reason::NoPolicy,
            message: "no policy matches hub/acme/app".into(),
        })
    };
    assert_eq!(
        r.to_string(),
        "image: hub/acme/app:v1\npolicy: (none)\n\
         verdict: deny (no_policy): no policy matches hub/acme/app\n"
    );
}

#[test]
fn no_decision_prints_only_the_image_says_why_on_stderr_and_exits_2() {
    let r = VerifyReport::undecided("hub/acme/app:v1".into(), "upstream timed out".into());
    assert_eq!(r.to_string(), "image: hub/acme/app:v1\n");
    assert_eq!(
        (r.exit(), r.diagnostic()),
        (
            Exit::NoDecision,
            Some("no decision: upstream timed out".into())
        )
    );
}

#[test]
fn the_report_serializes_verdict_reason_and_outcomes_in_snake_case() {
    let r = report(Verdict::AuditAllow {
        digest: digest(),
        policy: "acme".into(),
        reason: Reason::PredicateFailed,
        message: "builder is not GitHub-hosted".into(),
    });
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        serde_json::json!({
            "image": "hub/acme/app:v1",
            "verdict": "audit_allow",
            "digest": DIGEST,
            "policy": "acme",
            "reason": "predicate_failed",
            "message": "builder is not GitHub-hosted",
            "authorities": [
                {"authority": "acme", "outcome": "met"},
                {"authority": "other", "outcome": "not_met", "reason": "unsigned", "message": "no signature"},
            ],
            "attestations": [
                {"requirement": "sbom", "predicate_type": "https://spdx.dev/Document", "condition": null,
                 "outcome": "met", "by": ["acme", "other"]},
                {"requirement": "provenance", "predicate_type": SLSA, "condition": "github-hosted-builder",
                 "outcome": "not_met", "reason": "predicate_failed", "message": "builder is not GitHub-hosted"},
            ],
        })
    );
}
