//! Statement parsing, strict JSON and evidence times.

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

fn verified(predicate: serde_json::Value, signed: Vec<SystemTime>) -> VerifiedAttestation {
    VerifiedAttestation {
        predicate_type: String::new(),
        statement: serde_json::json!({ "predicate": predicate }),
        signed_times: signed,
    }
}

fn at(rfc3339: &str) -> SystemTime {
    humantime::parse_rfc3339(rfc3339).unwrap()
}

fn scan_finished(t: &str) -> serde_json::Value {
    serde_json::json!({"metadata": {"scanFinishedOn": t}})
}

#[test]
fn evidence_time_is_the_earlier_of_the_predicate_and_the_signing_time() {
    let now = at("2026-06-01T00:00:00Z");
    let signed = at("2026-01-01T00:00:00Z");
    // An old signature over a scan that claims a later finish is as old
    // as its signature.
    assert_eq!(
        evidence_time(
            &verified(scan_finished("2026-05-31T00:00:00Z"), vec![signed]),
            now
        ),
        Ok(Some(signed))
    );
    // A predicate time before the signature is the evidence's time.
    assert_eq!(
        evidence_time(
            &verified(scan_finished("2025-12-01T00:00:00Z"), vec![signed]),
            now
        ),
        Ok(Some(at("2025-12-01T00:00:00Z")))
    );
    assert_eq!(
        evidence_time(
            &verified(scan_finished("2026-05-31T00:00:00Z"), vec![]),
            now
        ),
        Ok(Some(at("2026-05-31T00:00:00Z")))
    );
    assert_eq!(
        evidence_time(
            &verified(serde_json::json!({"other": 1}), vec![signed]),
            now
        ),
        Ok(Some(signed))
    );
    assert_eq!(
        evidence_time(&verified(serde_json::Value::Null, vec![]), now),
        Ok(None)
    );
}

#[test]
fn evidence_time_in_the_future_beyond_the_clock_skew_is_refused() {
    let now = at("2026-06-01T00:00:00Z");
    let within = now + MAX_CLOCK_SKEW;
    assert_eq!(
        evidence_time(
            &verified(scan_finished("2026-06-01T00:05:00Z"), vec![]),
            now
        ),
        Ok(Some(within)),
        "a clock a little ahead is tolerated"
    );
    for v in [
        verified(scan_finished("2099-01-01T00:00:00Z"), vec![]),
        verified(scan_finished("2026-06-01T00:05:01Z"), vec![]),
        // A past signature does not excuse a future claim.
        verified(
            scan_finished("2099-01-01T00:00:00Z"),
            vec![at("2026-01-01T00:00:00Z")],
        ),
        verified(serde_json::Value::Null, vec![at("2099-01-01T00:00:00Z")]),
    ] {
        let e = evidence_time(&v, now).unwrap_err();
        assert!(e.contains("in the future"), "{e}");
    }
}

#[test]
fn strict_json_refuses_a_duplicated_member_at_any_depth() {
    for json in [
        r#"{"a":1,"a":1}"#,
        r#"{"a":{"b":1,"c":2,"b":3}}"#,
        r#"[{"x":[{"y":1,"y":2}]}]"#,
        r#"{"predicate":{"scanner":{"result":{"Results":[{},{"Target":"a","Target":"b"}]}}}}"#,
    ] {
        let e = parse_strict(json.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("duplicated"), "{json}: {e}");
    }
}

#[test]
fn strict_json_reads_what_serde_json_reads_otherwise() {
    let json = r#"{"a":[1,-2,3.5,18446744073709551615,true,null,"s\u00e9"],"b":{"a":{}},"c":[]}"#;
    let lax: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(parse_strict(json.as_bytes()).unwrap(), lax);
    for bad in ["", "{", "[1,]", "nan", "\u{0}"] {
        assert!(parse_strict(bad.as_bytes()).is_err(), "{bad:?}");
    }
    let deep = "[".repeat(10_000);
    assert!(
        parse_strict(deep.as_bytes()).is_err(),
        "recursion is bounded"
    );
}

#[test]
fn a_statement_with_two_predicate_members_is_invalid() {
    let hex = subject().hex().to_string();
    let payload = format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"{hex}"}}}}],"predicateType":"x","predicate":{{"ok":false}},"predicate":{{"ok":true}}}}"#
    );
    let e = parse_statement(payload.as_bytes(), &subject()).unwrap_err();
    assert_eq!(e.reason, Reason::AttestationInvalid);
    assert!(e.message.contains("duplicated"), "{}", e.message);
}

#[test]
fn messages_quote_attacker_strings_escaped() {
    let hex = subject().hex().to_string();
    let forged = "evil\nlevel=info msg=allowed";
    let payload = serde_json::json!({
        "_type": forged, "subject": [{"digest": {"sha256": hex}}], "predicateType": "x",
    })
    .to_string();
    let e = parse_statement(payload.as_bytes(), &subject()).unwrap_err();
    assert!(!e.message.contains('\n'), "{}", e.message);
    assert!(e.message.contains(r"evil\nlevel"), "{}", e.message);
    let e = wrong_payload_type("application/json\r\nX: y");
    assert!(!e.message.contains(['\r', '\n']), "{}", e.message);
    // Malformed statements: the parser's error may quote the input.
    for payload in [
        serde_json::json!({"_type": STATEMENT_TYPES[1], "subject": forged, "predicateType": "x"}),
        serde_json::json!({"_type": STATEMENT_TYPES[1], "subject": [], "predicateType": "x", forged: 1, "a": {forged: 1, forged: 2}}),
    ] {
        let e = parse_statement(payload.to_string().as_bytes(), &subject()).unwrap_err();
        assert!(!e.message.contains('\n'), "{}", e.message);
    }
    let duplicated = format!(r#"{{"a":{{"{0}":1,"{0}":2}}}}"#, "x\\ny");
    let e = parse_statement(duplicated.as_bytes(), &subject()).unwrap_err();
    assert!(e.message.contains("duplicated"), "{}", e.message);
    assert!(!e.message.contains('\n'), "{}", e.message);
}
