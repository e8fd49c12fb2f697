use super::signatures::*;
use super::*;
use crate::policy::{Exception, Require};
use crate::trust::Material;
use crate::verify::evidence::Signature;

fn t(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap()
}

fn exception(digest: Option<Digest>, expires: &str) -> Exception {
    Exception {
        name: "RISK-1".into(),
        pattern: "hub/app".parse().unwrap(),
        digest,
        expires: t(expires),
        ticket: "RISK-1".into(),
        reason: "vendor signs next release".into(),
    }
}

/// What a policy does when trust is stale (`on_trust_unavailable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnStale {
    Deny,
    Allow,
}

fn gate_with(acme: &Vendor, exceptions: Vec<Exception>, on_stale: OnStale) -> Gate {
    let rule = Rule::Signatures {
        authorities: vec!["acme".into()],
        require: Require::Any,
        require_child_signatures: false,
    };
    let mut p = policy("vendor", "**", Mode::Enforce, rule);
    p.trust_unavailable_allows = on_stale == OnStale::Allow;
    let mut authority = acme.authority(Tlog::Optional);
    authority.stale_after = Some(t("2026-06-01T00:00:00Z"));
    Gate::new(
        PolicySet::new(vec![p]).with_exceptions(exceptions),
        Arc::new(TrustSnapshot::new(vec![authority], 1)),
    )
}

fn at(gate: &Gate, signatures: Vec<Signature>, now: &str) -> Result<VerifiedManifest, Denial> {
    let evidence = Evidence {
        signatures,
        attestations: Vec::new(),
        limit_exceeded: None,
    };
    gate.decide(
        &"hub".parse().unwrap(),
        &"app".parse().unwrap(),
        content(),
        &evidence,
        Reached::Directly,
        t(now),
    )
}

const BEFORE: &str = "2026-05-01T00:00:00Z";

#[test]
fn pinned_exception_admits_an_unsigned_image_until_it_expires() {
    let acme = Vendor::new("acme");
    let gate = gate_with(
        &acme,
        vec![exception(Some(subject()), "2026-05-02T00:00:00Z")],
        OnStale::Deny,
    );
    let v = at(&gate, vec![], BEFORE).unwrap();
    assert_eq!(v.exception(), Some(("RISK-1", Reason::Unsigned)));
    assert!(
        at(&gate, vec![], "2026-05-01T23:59:59Z").is_ok(),
        "a second before it expires"
    );
    assert_eq!(
        at(&gate, vec![], "2026-05-02T00:00:00Z")
            .unwrap_err()
            .reason,
        Reason::ExceptionExpired,
        "at its expiry it no longer admits"
    );
    let d = at(&gate, vec![], "2026-05-03T00:00:00Z").unwrap_err();
    assert_eq!(d.reason, Reason::ExceptionExpired);
    assert!(
        d.message.contains("RISK-1") && d.message.contains("unsigned"),
        "{}",
        d.message
    );
}

#[test]
fn exception_pinned_to_another_digest_or_unpinned_does_not_admit_unsigned_content() {
    let acme = Vendor::new("acme");
    let other = Digest::sha256_of(b"other");
    for e in [
        exception(Some(other), "2027-01-01T00:00:00Z"),
        exception(None, "2027-01-01T00:00:00Z"),
    ] {
        let gate = gate_with(&acme, vec![e], OnStale::Deny);
        assert_eq!(
            at(&gate, vec![], BEFORE).unwrap_err().reason,
            Reason::Unsigned
        );
    }
}

#[test]
fn unpinned_exception_relaxes_a_failing_check_of_signed_content() {
    let acme = Vendor::new("acme");
    let mallory = Vendor::new("acme");
    let gate = gate_with(
        &acme,
        vec![exception(None, "2027-01-01T00:00:00Z")],
        OnStale::Deny,
    );
    let v = at(&gate, vec![mallory.sign(&subject())], BEFORE).unwrap();
    assert_eq!(v.exception(), Some(("RISK-1", Reason::UntrustedSigner)));
}

#[test]
fn stale_trust_denies_trust_unavailable_unless_the_policy_relaxes_it() {
    let acme = Vendor::new("acme");
    let strict = gate_with(&acme, vec![], OnStale::Deny);
    assert!(at(&strict, vec![acme.sign(&subject())], BEFORE).is_ok());
    let d = at(&strict, vec![acme.sign(&subject())], "2026-07-01T00:00:00Z").unwrap_err();
    assert_eq!(d.reason, Reason::TrustUnavailable);
    let relaxed = gate_with(&acme, vec![], OnStale::Allow);
    let v = at(
        &relaxed,
        vec![acme.sign(&subject())],
        "2026-07-01T00:00:00Z",
    )
    .unwrap();
    assert_eq!(v.audit_denial(), Some(Reason::TrustUnavailable));
    assert!(v.audit_message().unwrap().contains("stale trust"));
}

#[test]
fn relaxed_stale_trust_never_admits_a_refuted_or_garbage_signature() {
    let acme = Vendor::new("acme");
    let mallory = Vendor::new("acme");
    let relaxed = gate_with(&acme, vec![], OnStale::Allow);
    const STALE: &str = "2026-07-01T00:00:00Z";
    let d = at(&relaxed, vec![mallory.sign(&subject())], STALE).unwrap_err();
    assert_eq!(d.reason, Reason::TrustUnavailable);
    assert!(d.message.contains("refutes"), "{}", d.message);
    let garbage = acme.sign_payload("not a payload");
    assert!(at(&relaxed, vec![garbage], STALE).is_err());
    assert!(at(&relaxed, vec![], STALE).is_err(), "unsigned");
}

#[test]
fn an_authority_never_made_available_is_not_relaxed_even_when_its_keys_would_verify() {
    let acme = Vendor::new("acme");
    let rule = Rule::Signatures {
        authorities: vec!["acme".into()],
        require: Require::Any,
        require_child_signatures: false,
    };
    let mut p = policy("vendor", "**", Mode::Enforce, rule);
    p.trust_unavailable_allows = true;
    // Its keys are loaded, but the trusted root it relies on was never verified.
    let mut waiting = acme.authority(Tlog::Optional);
    waiting.unavailable = Some("its TUF repository has not been verified yet".into());
    let gate = Gate::new(
        PolicySet::new(vec![p]),
        Arc::new(TrustSnapshot::new(vec![waiting], 1)),
    );
    let d = at(&gate, vec![acme.sign(&subject())], BEFORE).unwrap_err();
    assert_eq!(d.reason, Reason::TrustUnavailable);
}

#[test]
fn relaxation_needs_the_working_authority_not_to_refute_when_another_is_unavailable() {
    let (good, down) = (Vendor::new("good"), Vendor::new("down"));
    let mallory = Vendor::new("m");
    let rule = Rule::Signatures {
        authorities: vec!["good".into(), "down".into()],
        require: Require::Any,
        require_child_signatures: false,
    };
    let mut p = policy("vendor", "**", Mode::Enforce, rule);
    p.trust_unavailable_allows = true;
    let mut unavailable = down.authority(Tlog::Optional);
    unavailable.material = Material::Keys(Vec::new());
    unavailable.unavailable = Some("its source has not been fetched".into());
    let gate = Gate::new(
        PolicySet::new(vec![p]),
        Arc::new(TrustSnapshot::new(
            vec![good.authority(Tlog::Optional), unavailable],
            1,
        )),
    );
    assert!(at(&gate, vec![good.sign(&subject())], BEFORE).is_ok());
    assert!(
        at(&gate, vec![mallory.sign(&subject())], BEFORE).is_err(),
        "refuted by the working authority; nothing to check against on the other"
    );
    assert!(at(&gate, vec![down.sign(&subject())], BEFORE).is_err());
}
