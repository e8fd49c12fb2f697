//! The gate's verdicts: policies and modes here; signatures, attestations
//! and governance (exceptions, stale trust) in their own files.

use std::sync::Arc;
use std::time::SystemTime;

use super::evidence::Evidence;
use super::{Denial, Gate, Reached, Reason, VerifiedManifest, x509};
use crate::oci::{Digest, ManifestContent, MediaType, UpstreamName};
use crate::policy::{Glob, Mode, Policy, PolicySet, Rule};
use crate::trust::TrustSnapshot;

fn content() -> Arc<ManifestContent> {
    let bytes = bytes::Bytes::from_static(b"{}");
    let media = MediaType::parse(crate::oci::media::OCI_MANIFEST).unwrap();
    Arc::new(ManifestContent::new(Digest::sha256_of(&bytes), media, bytes).unwrap())
}

fn gate(policies: Vec<Policy>) -> Gate {
    Gate::new(PolicySet::new(policies), Arc::new(TrustSnapshot::empty()))
}

fn decide(gate: &Gate, upstream: &UpstreamName, repo: &str) -> Result<VerifiedManifest, Denial> {
    gate.decide(
        upstream,
        &repo.parse().unwrap(),
        content(),
        &Evidence::default(),
        Reached::Directly,
        SystemTime::now(),
    )
}

fn policy(name: &str, pattern: &str, mode: Mode, rule: Rule) -> Policy {
    Policy {
        name: name.into(),
        patterns: vec![pattern.parse::<Glob>().unwrap()],
        mode,
        rule,
        attestations: Vec::new(),
        trust_unavailable_allows: false,
    }
}

#[test]
fn first_matching_policy_decides_and_no_match_is_no_policy() {
    let gate = gate(vec![
        policy(
            "open",
            "hub/library/**",
            Mode::Enforce,
            Rule::AllowUnverified,
        ),
        policy("closed", "hub/**", Mode::Enforce, Rule::Deny),
    ]);
    let hub: UpstreamName = "hub".parse().unwrap();
    let ok = decide(&gate, &hub, "library/nginx").unwrap();
    assert_eq!(ok.policy(), "open");
    let denied = decide(&gate, &hub, "acme/app").unwrap_err();
    assert_eq!(denied.policy.as_deref(), Some("closed"));
    let other: UpstreamName = "other".parse().unwrap();
    let none = decide(&gate, &other, "x").unwrap_err();
    assert_eq!(none.reason, Reason::NoPolicy);
    assert!(none.policy.is_none());
}

#[test]
fn audit_mode_allows_and_records_what_enforce_would_deny() {
    let gate = gate(vec![policy("watch", "**", Mode::Audit, Rule::Deny)]);
    let v = decide(&gate, &"hub".parse().unwrap(), "a").unwrap();
    assert_eq!(v.audit_denial(), Some(Reason::NoPolicy));
}

mod attestations;
mod governance;
mod signatures;

#[test]
fn with_revoked_serials_an_unreadable_certificate_is_refused_not_skipped() {
    let revoked = vec!["1fa0".to_string()];
    let garbage: &[u8] = b"not a certificate";
    let refused = x509::check_serials(&revoked, [garbage]).unwrap_err();
    assert_eq!(refused.reason, Reason::InvalidSignature);
    assert!(
        x509::check_serials(&[], [garbage]).is_ok(),
        "nothing revoked"
    );
}
