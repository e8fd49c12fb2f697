use super::*;
use crate::oci::{Digest, MediaType};
use crate::policy::{Glob, Policy};

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

mod signatures {
    use super::*;
    use crate::policy::Require;
    use crate::trust::{Authority, Material};
    use crate::verify::evidence::{LegacySignature, Signature};
    use base64::Engine;
    use sigstore_verify::crypto::KeyPair;

    struct Vendor {
        key: KeyPair,
        name: &'static str,
    }

    impl Vendor {
        fn new(name: &'static str) -> Vendor {
            Vendor {
                key: KeyPair::generate_ecdsa_p256().unwrap(),
                name,
            }
        }

        fn authority(&self, require_tlog: bool) -> Authority {
            let der = self.key.public_key_der().unwrap();
            Authority {
                name: self.name.into(),
                material: Material::Keys(vec![("fp".into(), der)]),
                sigstore: None,
                root_digest: None,
                require_tlog,
                require_sct: true,
                revoked_serials: Vec::new(),
                unavailable: None,
                stale_after: None,
                freshness: Vec::new(),
            }
        }

        fn sign_payload(&self, payload: &str) -> Signature {
            let sig = self.key.sign(payload.as_bytes()).unwrap();
            Signature::Legacy(LegacySignature {
                payload: bytes::Bytes::from(payload.to_string()),
                signature: base64::engine::general_purpose::STANDARD.encode(sig.as_bytes()),
                certificate: None,
                chain: None,
                rekor_bundle: None,
            })
        }

        fn sign(&self, digest: &Digest) -> Signature {
            self.sign_payload(&payload(digest))
        }
    }

    fn payload(digest: &Digest) -> String {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"hub/app"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
        )
    }

    fn signed_gate(
        authorities: Vec<Authority>,
        names: &[&str],
        require: Require,
        mode: Mode,
        children: bool,
    ) -> Gate {
        let rule = Rule::Signatures {
            authorities: names.iter().map(|s| s.to_string()).collect(),
            require,
            require_child_signatures: children,
        };
        Gate::new(
            PolicySet::new(vec![policy("vendor", "**", mode, rule)]),
            Arc::new(TrustSnapshot::new(authorities, 1)),
        )
    }

    fn judge(
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

    fn subject() -> Digest {
        content().digest().clone()
    }

    #[test]
    fn signature_by_a_trusted_key_allows_and_reports_the_authority_met() {
        let acme = Vendor::new("acme");
        let gate = signed_gate(
            vec![acme.authority(false)],
            &["acme"],
            Require::Any,
            Mode::Enforce,
            false,
        );
        let v = judge(&gate, vec![acme.sign(&subject())], Reached::Directly).unwrap();
        assert_eq!(v.findings().len(), 1);
        assert!(v.findings()[0].outcome.is_ok());
    }

    #[test]
    fn unsigned_image_is_denied_unsigned() {
        let acme = Vendor::new("acme");
        let gate = signed_gate(
            vec![acme.authority(false)],
            &["acme"],
            Require::Any,
            Mode::Enforce,
            false,
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
            vec![acme.authority(false)],
            &["acme"],
            Require::Any,
            Mode::Enforce,
            false,
        );
        let d = judge(&gate, vec![mallory.sign(&subject())], Reached::Directly).unwrap_err();
        assert_eq!(d.reason, Reason::UntrustedSigner);
    }

    #[test]
    fn valid_signature_replayed_from_another_image_is_invalid_signature() {
        let acme = Vendor::new("acme");
        let gate = signed_gate(
            vec![acme.authority(false)],
            &["acme"],
            Require::Any,
            Mode::Enforce,
            false,
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
            vec![acme.authority(false)],
            &["acme"],
            Require::Any,
            Mode::Enforce,
            false,
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
            vec![acme.authority(false)],
            &["acme"],
            Require::Any,
            Mode::Enforce,
            false,
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
            vec![a.authority(false), b.authority(false)],
            &["a", "b"],
            Require::All,
            Mode::Enforce,
            false,
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
            vec![a.authority(false), b.authority(false)],
            &["a", "b"],
            Require::AtLeast(2),
            Mode::Enforce,
            false,
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
        let mut same_key = a.authority(false);
        same_key.name = "b".into();
        let two = signed_gate(
            vec![a.authority(false), same_key],
            &["a", "b"],
            Require::AtLeast(2),
            Mode::Enforce,
            false,
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
            vec![a.authority(false)],
            &["a", "a"],
            Require::AtLeast(2),
            Mode::Enforce,
            false,
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
            vec![acme.authority(false)],
            &["acme"],
            Require::Any,
            Mode::Enforce,
            false,
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
            let none = signed_gate(vec![a.authority(false)], &[], require, Mode::Enforce, false);
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
            vec![acme.authority(true)],
            &["acme"],
            Require::Any,
            Mode::Enforce,
            false,
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
            vec![acme.authority(false)],
            &["acme"],
            Require::Any,
            Mode::Enforce,
            false,
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
            vec![acme.authority(false)],
            &["acme"],
            Require::Any,
            Mode::Enforce,
            false,
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
            vec![acme.authority(false)],
            &["acme"],
            Require::Any,
            Mode::Enforce,
            true,
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
            vec![acme.authority(false)],
            &["acme"],
            Require::Any,
            Mode::Audit,
            false,
        );
        assert_eq!(
            judge(&gate, vec![], Reached::Directly)
                .unwrap()
                .audit_denial(),
            Some(Reason::Unsigned)
        );
    }

    mod attestations {
        use super::*;
        use crate::policy::{AttestationRequirement, Condition};
        use crate::verify::attest::pae;
        use crate::verify::evidence::{Attestation, LegacyAttestation};
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
                Arc::new(TrustSnapshot::new(vec![acme.authority(false)], 1)),
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
            let mut stale = acme.authority(false);
            stale.stale_after = Some(now() - Duration::from_secs(3600));
            let gate = Gate::new(
                PolicySet::new(vec![p]),
                Arc::new(TrustSnapshot::new(vec![stale, scanner.authority(false)], 1)),
            );
            let d = judge_with(&gate, &acme, vec![]).unwrap_err();
            assert_eq!(d.reason, Reason::TrustUnavailable, "{}", d.message);
            let forged =
                Vendor::new("scanner").attest(&statement(&subject(), SCAN, serde_json::json!({})));
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
            let requirement =
                |name: &str, predicate_type: &str, authority: &str| AttestationRequirement {
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
            let mut stale = scanner.authority(false);
            stale.stale_after = Some(now() - Duration::from_secs(3600));
            let gate = Gate::new(
                PolicySet::new(vec![p]),
                Arc::new(TrustSnapshot::new(vec![acme.authority(false), stale], 1)),
            );
            let provenance = acme.attest(&statement(&subject(), SLSA, provenance(GITHUB)));
            let scan = scanner.attest(&statement(&subject(), SCAN, serde_json::json!({})));
            let v = judge_with(&gate, &acme, vec![provenance.clone(), scan]).unwrap();
            assert_eq!(
                v.audit_denial(),
                Some(Reason::TrustUnavailable),
                "met fresh, and met with the scanner's last good key"
            );
            let forged =
                Vendor::new("scanner").attest(&statement(&subject(), SCAN, serde_json::json!({})));
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
    }

    mod governance {
        use super::*;
        use crate::policy::Exception;

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

        fn gate_with(acme: &Vendor, exceptions: Vec<Exception>, allow_unavailable: bool) -> Gate {
            let rule = Rule::Signatures {
                authorities: vec!["acme".into()],
                require: Require::Any,
                require_child_signatures: false,
            };
            let mut p = policy("vendor", "**", Mode::Enforce, rule);
            p.trust_unavailable_allows = allow_unavailable;
            let mut authority = acme.authority(false);
            authority.stale_after = Some(t("2026-06-01T00:00:00Z"));
            Gate::new(
                PolicySet::new(vec![p]).with_exceptions(exceptions),
                Arc::new(TrustSnapshot::new(vec![authority], 1)),
            )
        }

        fn at(
            gate: &Gate,
            signatures: Vec<Signature>,
            now: &str,
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
                false,
            );
            let v = at(&gate, vec![], BEFORE).unwrap();
            assert_eq!(v.exception(), Some(("RISK-1", Reason::Unsigned)));
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
                let gate = gate_with(&acme, vec![e], false);
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
            let gate = gate_with(&acme, vec![exception(None, "2027-01-01T00:00:00Z")], false);
            let v = at(&gate, vec![mallory.sign(&subject())], BEFORE).unwrap();
            assert_eq!(v.exception(), Some(("RISK-1", Reason::UntrustedSigner)));
        }

        #[test]
        fn stale_trust_denies_trust_unavailable_unless_the_policy_relaxes_it() {
            let acme = Vendor::new("acme");
            let strict = gate_with(&acme, vec![], false);
            assert!(at(&strict, vec![acme.sign(&subject())], BEFORE).is_ok());
            let d = at(&strict, vec![acme.sign(&subject())], "2026-07-01T00:00:00Z").unwrap_err();
            assert_eq!(d.reason, Reason::TrustUnavailable);
            let relaxed = gate_with(&acme, vec![], true);
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
            let relaxed = gate_with(&acme, vec![], true);
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
            let mut waiting = acme.authority(false);
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
            let mut unavailable = down.authority(false);
            unavailable.material = Material::Keys(Vec::new());
            unavailable.unavailable = Some("its source has not been fetched".into());
            let gate = Gate::new(
                PolicySet::new(vec![p]),
                Arc::new(TrustSnapshot::new(
                    vec![good.authority(false), unavailable],
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
    }
}

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
