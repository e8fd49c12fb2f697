use super::*;
use crate::policy::Require;
use crate::trust::{Authority, Material};
use crate::verify::evidence::{LegacySignature, Signature};
use crate::verify::judge::signatures::distinct_signers;
use base64::Engine;
use sigstore_verify::crypto::KeyPair;

/// Whether an authority requires a transparency-log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tlog {
    Optional,
    Required,
}

/// Whether a policy judges the children of an index it allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChildSignatures {
    NotRequired,
    Required,
}

pub(super) struct Vendor {
    pub(super) key: KeyPair,
    pub(super) name: &'static str,
}

impl Vendor {
    pub(super) fn new(name: &'static str) -> Vendor {
        Vendor {
            key: KeyPair::generate_ecdsa_p256().unwrap(),
            name,
        }
    }

    pub(super) fn authority(&self, tlog: Tlog) -> Authority {
        let der = self.key.public_key_der().unwrap();
        Authority {
            name: self.name.into(),
            material: Material::Keys(vec![("fp".into(), der)]),
            sigstore: None,
            root_digest: None,
            require_tlog: tlog == Tlog::Required,
            require_sct: true,
            revoked_serials: Vec::new(),
            unavailable: None,
            stale_after: None,
            freshness: Vec::new(),
        }
    }

    pub(super) fn sign_payload(&self, payload: &str) -> Signature {
        let sig = self.key.sign(payload.as_bytes()).unwrap();
        Signature::Legacy(LegacySignature {
            payload: bytes::Bytes::from(payload.to_string()),
            signature: base64::engine::general_purpose::STANDARD.encode(sig.as_bytes()),
            certificate: None,
            chain: None,
            rekor_bundle: None,
        })
    }

    pub(super) fn sign(&self, digest: &Digest) -> Signature {
        self.sign_payload(&payload(digest))
    }
}

pub(super) fn payload(digest: &Digest) -> String {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"hub/app"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
}

pub(super) fn signed_gate(
    authorities: Vec<Authority>,
    names: &[&str],
    require: Require,
    mode: Mode,
    children: ChildSignatures,
) -> Gate {
    let rule = Rule::Signatures {
        authorities: names.iter().map(|s| s.to_string()).collect(),
        require,
        require_child_signatures: children == ChildSignatures::Required,
    };
    Gate::new(
        PolicySet::new(vec![policy("vendor", "**", mode, rule)]),
        Arc::new(TrustSnapshot::new(authorities, 1)),
    )
}

pub(super) fn judge(
    gate: &Gate,
    signatures: Vec<Signature>,
    reached: Reached,
) -> Result<VerifiedManifest, Denial> {
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
        reached,
        SystemTime::now(),
    )
}

pub(super) fn subject() -> Digest {
    content().digest().clone()
}

#[test]
fn signature_by_a_trusted_key_allows_and_reports_the_authority_met() {
    let acme = Vendor::new("acme");
    let gate = signed_gate(
        vec![acme.authority(Tlog::Optional)],
        &["acme"],
        Require::Any,
        Mode::Enforce,
        ChildSignatures::NotRequired,
    );
    let v = judge(&gate, vec![acme.sign(&subject())], Reached::Directly).unwrap();
    assert_eq!(v.findings().len(), 1);
    assert!(v.findings()[0].outcome.is_ok());
}

#[test]
fn unsigned_image_is_denied_unsigned() {
    let acme = Vendor::new("acme");
    let gate = signed_gate(
        vec![acme.authority(Tlog::Optional)],
        &["acme"],
        Require::Any,
        Mode::Enforce,
        ChildSignatures::NotRequired,
    );
    assert_eq!(
        judge(&gate, vec![], Reached::Directly).unwrap_err().reason,
        Reason::Unsigned
    );
}

#[test]
fn signature_by_an_unknown_key_is_untrusted_signer() {
    let acme = Vendor::new("acme");
    let mallory = Vendor::new("mallory");
    let gate = signed_gate(
        vec![acme.authority(Tlog::Optional)],
        &["acme"],
        Require::Any,
        Mode::Enforce,
        ChildSignatures::NotRequired,
    );
    let d = judge(&gate, vec![mallory.sign(&subject())], Reached::Directly).unwrap_err();
    assert_eq!(d.reason, Reason::UntrustedSigner);
}

#[test]
fn valid_signature_replayed_from_another_image_is_invalid_signature() {
    let acme = Vendor::new("acme");
    let gate = signed_gate(
        vec![acme.authority(Tlog::Optional)],
        &["acme"],
        Require::Any,
        Mode::Enforce,
        ChildSignatures::NotRequired,
    );
    let other = Digest::sha256_of(b"another image");
    let d = judge(&gate, vec![acme.sign(&other)], Reached::Directly).unwrap_err();
    assert_eq!(d.reason, Reason::InvalidSignature);
    assert!(d.message.contains("replayed"), "{}", d.message);
}

#[test]
fn payload_with_a_duplicated_manifest_digest_is_invalid_signature() {
    let acme = Vendor::new("acme");
    let gate = signed_gate(
        vec![acme.authority(Tlog::Optional)],
        &["acme"],
        Require::Any,
        Mode::Enforce,
        ChildSignatures::NotRequired,
    );
    let other = Digest::sha256_of(b"x");
    let p = format!(
        r#"{{"critical":{{"image":{{"docker-manifest-digest":"{}","docker-manifest-digest":"{other}"}},"type":"cosign container image signature"}}}}"#,
        subject()
    );
    let d = judge(&gate, vec![acme.sign_payload(&p)], Reached::Directly).unwrap_err();
    assert_eq!(d.reason, Reason::InvalidSignature);
}

#[test]
fn tampered_signature_is_not_accepted() {
    let acme = Vendor::new("acme");
    let gate = signed_gate(
        vec![acme.authority(Tlog::Optional)],
        &["acme"],
        Require::Any,
        Mode::Enforce,
        ChildSignatures::NotRequired,
    );
    let Signature::Legacy(mut l) = acme.sign(&subject()) else {
        unreachable!()
    };
    l.payload = bytes::Bytes::from(payload(&subject()).replace("hub/app", "hub/evil"));
    assert!(judge(&gate, vec![Signature::Legacy(l)], Reached::Directly).is_err());
}

#[test]
fn require_all_needs_every_authority_and_a_number_counts_distinct_authorities() {
    let (a, b) = (Vendor::new("a"), Vendor::new("b"));
    let all = signed_gate(
        vec![a.authority(Tlog::Optional), b.authority(Tlog::Optional)],
        &["a", "b"],
        Require::All,
        Mode::Enforce,
        ChildSignatures::NotRequired,
    );
    assert!(judge(&all, vec![a.sign(&subject())], Reached::Directly).is_err());
    assert!(
        judge(
            &all,
            vec![a.sign(&subject()), b.sign(&subject())],
            Reached::Directly
        )
        .is_ok()
    );
    let two = signed_gate(
        vec![a.authority(Tlog::Optional), b.authority(Tlog::Optional)],
        &["a", "b"],
        Require::AtLeast(2),
        Mode::Enforce,
        ChildSignatures::NotRequired,
    );
    let twice_by_a = vec![a.sign(&subject()), a.sign(&subject())];
    assert!(
        judge(&two, twice_by_a, Reached::Directly).is_err(),
        "two signatures by one authority count once"
    );
}

#[test]
fn one_signature_never_counts_for_two_authorities_sharing_a_key() {
    let a = Vendor::new("a");
    let mut same_key = a.authority(Tlog::Optional);
    same_key.name = "b".into();
    let two = signed_gate(
        vec![a.authority(Tlog::Optional), same_key],
        &["a", "b"],
        Require::AtLeast(2),
        Mode::Enforce,
        ChildSignatures::NotRequired,
    );
    assert!(
        judge(&two, vec![a.sign(&subject())], Reached::Directly).is_err(),
        "one signer, two names"
    );
    let once = a.sign(&subject());
    assert!(
        judge(&two, vec![once.clone(), once], Reached::Directly).is_err(),
        "the same signature found twice is one"
    );
    assert!(
        judge(
            &two,
            vec![a.sign(&subject()), a.sign(&subject())],
            Reached::Directly
        )
        .is_ok(),
        "two signatures, one for each authority"
    );
    let listed_twice = signed_gate(
        vec![a.authority(Tlog::Optional)],
        &["a", "a"],
        Require::AtLeast(2),
        Mode::Enforce,
        ChildSignatures::NotRequired,
    );
    assert!(
        judge(&listed_twice, vec![a.sign(&subject())], Reached::Directly).is_err(),
        "a name listed twice counts once"
    );
}

#[test]
fn the_most_specific_failure_among_signatures_is_the_reason() {
    let acme = Vendor::new("acme");
    let mallory = Vendor::new("acme");
    let gate = signed_gate(
        vec![acme.authority(Tlog::Optional)],
        &["acme"],
        Require::Any,
        Mode::Enforce,
        ChildSignatures::NotRequired,
    );
    let replayed = acme.sign(&Digest::sha256_of(b"another image"));
    for signatures in [
        vec![mallory.sign(&subject()), replayed.clone()],
        vec![replayed, mallory.sign(&subject())],
    ] {
        let d = judge(&gate, signatures, Reached::Directly).unwrap_err();
        assert_eq!(
            d.reason,
            Reason::InvalidSignature,
            "a replayed signature says more than an unknown signer"
        );
    }
}

#[test]
fn blobs_are_gated_everywhere_but_under_allow_unverified() {
    let open = policy("open", "hub/open/**", Mode::Enforce, Rule::AllowUnverified);
    let closed = policy("closed", "hub/closed/**", Mode::Enforce, Rule::Deny);
    let gate = gate(vec![open, closed]);
    let hub: UpstreamName = "hub".parse().unwrap();
    assert!(!gate.gates_blobs(&hub, &"open/x".parse().unwrap()));
    assert!(gate.gates_blobs(&hub, &"closed/x".parse().unwrap()));
    assert!(
        gate.gates_blobs(&hub, &"nowhere/x".parse().unwrap()),
        "no policy: only what an exception admits"
    );
}

#[test]
fn a_policy_listing_no_authorities_verifies_nothing() {
    let a = Vendor::new("a");
    for require in [Require::All, Require::Any] {
        let none = signed_gate(
            vec![a.authority(Tlog::Optional)],
            &[],
            require,
            Mode::Enforce,
            ChildSignatures::NotRequired,
        );
        assert!(
            judge(&none, vec![a.sign(&subject())], Reached::Directly).is_err(),
            "{require:?}"
        );
    }
}

#[test]
fn distinct_signers_is_a_maximum_matching() {
    assert_eq!(distinct_signers(&[]), 0);
    assert_eq!(distinct_signers(&[vec![0], vec![0]]), 1);
    assert_eq!(distinct_signers(&[vec![0, 1], vec![0]]), 2);
    assert_eq!(distinct_signers(&[vec![], vec![3]]), 1);
    assert_eq!(distinct_signers(&[vec![0, 1], vec![1, 2], vec![0]]), 3);
}

#[test]
fn missing_log_entry_is_tlog_invalid_when_the_authority_requires_one() {
    let acme = Vendor::new("acme");
    let gate = signed_gate(
        vec![acme.authority(Tlog::Required)],
        &["acme"],
        Require::Any,
        Mode::Enforce,
        ChildSignatures::NotRequired,
    );
    assert_eq!(
        judge(&gate, vec![acme.sign(&subject())], Reached::Directly)
            .unwrap_err()
            .reason,
        Reason::TlogInvalid
    );
}

#[test]
fn a_bound_hit_during_discovery_is_limit_exceeded() {
    let acme = Vendor::new("acme");
    let gate = signed_gate(
        vec![acme.authority(Tlog::Optional)],
        &["acme"],
        Require::Any,
        Mode::Enforce,
        ChildSignatures::NotRequired,
    );
    let evidence = Evidence {
        signatures: vec![acme.sign(&subject())],
        attestations: Vec::new(),
        limit_exceeded: Some("1000 signature layers".into()),
    };
    let d = gate
        .decide(
            &"hub".parse().unwrap(),
            &"app".parse().unwrap(),
            content(),
            &evidence,
            Reached::Directly,
            SystemTime::now(),
        )
        .unwrap_err();
    assert_eq!(d.reason, Reason::LimitExceeded);
}

#[test]
fn children_of_an_allowed_index_pass_unless_child_signatures_are_required() {
    let acme = Vendor::new("acme");
    let lenient = signed_gate(
        vec![acme.authority(Tlog::Optional)],
        &["acme"],
        Require::Any,
        Mode::Enforce,
        ChildSignatures::NotRequired,
    );
    assert!(judge(&lenient, vec![], Reached::ThroughAllowedIndex).is_ok());
    assert!(
        !lenient
            .needs(
                &"hub".parse().unwrap(),
                &"app".parse().unwrap(),
                Reached::ThroughAllowedIndex
            )
            .signatures
    );
    let strict = signed_gate(
        vec![acme.authority(Tlog::Optional)],
        &["acme"],
        Require::Any,
        Mode::Enforce,
        ChildSignatures::Required,
    );
    assert_eq!(
        judge(&strict, vec![], Reached::ThroughAllowedIndex)
            .unwrap_err()
            .reason,
        Reason::Unsigned
    );
}

#[test]
fn audit_mode_serves_an_unsigned_image_and_records_why() {
    let acme = Vendor::new("acme");
    let gate = signed_gate(
        vec![acme.authority(Tlog::Optional)],
        &["acme"],
        Require::Any,
        Mode::Audit,
        ChildSignatures::NotRequired,
    );
    assert_eq!(
        judge(&gate, vec![], Reached::Directly)
            .unwrap()
            .audit_denial(),
        Some(Reason::Unsigned)
    );
}
