//! Condition compilation and strict evaluation.

use super::*;
use serde_json::json;

fn eval(src: &str, statement: serde_json::Value) -> Result<bool, String> {
    Condition::compile("t", src).unwrap().evaluate(&statement)
}

fn slsa(builder: &str) -> serde_json::Value {
    json!({
        "predicateType": "https://slsa.dev/provenance/v1",
        "subject": [{"name": "x", "digest": {"sha256": "ab"}}],
        "predicate": {
            "buildDefinition": {
                "buildType": "https://actions.github.io/buildtypes/workflow/v1",
                "externalParameters": {"workflow": {"repository": "https://github.com/acme/app", "ref": "refs/tags/v1"}},
            },
            "runDetails": {"builder": {"id": builder}},
        },
    })
}

const SLSA_GITHUB: &str = r#"predicate.runDetails.builder.id.startsWith("https://github.com/actions/runner") && predicate.buildDefinition.externalParameters.workflow.repository == "https://github.com/acme/app""#;

#[test]
fn slsa_builder_and_source_condition_holds_only_for_the_expected_builder() {
    assert_eq!(
        eval(
            SLSA_GITHUB,
            slsa("https://github.com/actions/runner/github-hosted")
        ),
        Ok(true)
    );
    assert_eq!(
        eval(SLSA_GITHUB, slsa("https://evil.example/builder")),
        Ok(false)
    );
}

#[test]
fn vulnerability_condition_fails_on_a_critical_finding() {
    let src = r#"!predicate.scanner.result.Results.exists(r, has(r.Vulnerabilities) && r.Vulnerabilities.exists(v, v.Severity in ["CRITICAL", "HIGH"]))"#;
    let report = |sev: &str| {
        json!({"predicate": {"scanner": {"result": {"Results": [
            {"Target": "os"},
            {"Target": "app", "Vulnerabilities": [{"VulnerabilityID": "CVE-1", "Severity": sev}]},
        ]}}}})
    };
    assert_eq!(eval(src, report("LOW")), Ok(true));
    assert_eq!(eval(src, report("CRITICAL")), Ok(false));
}

#[test]
fn a_missing_field_is_an_evaluation_error_never_a_pass() {
    assert!(eval(SLSA_GITHUB, json!({"predicate": {}})).is_err());
    assert!(eval(SLSA_GITHUB, json!({"predicate": null})).is_err());
}

#[test]
fn a_non_boolean_result_is_an_error() {
    assert!(eval("predicate.x", json!({"predicate": {"x": "yes"}})).is_err());
}

#[test]
fn comparing_values_of_different_types_is_an_error_even_when_negated() {
    let statement = json!({"predicate": {"n": 1, "l": [1], "m": {"a": 1}, "nested": [{"s": 2}]}});
    for src in [
        r#"!(predicate.n in ["a", "b"])"#,
        r#"predicate.n == "a""#,
        r#"!(predicate.n == "a")"#,
        r#"predicate.n != "a""#,
        r#"predicate.l == ["a"]"#,
        r#"predicate.l != ["a", "b"]"#,
        r#"predicate.m != {"a": "1"}"#,
        r#"!(1 in predicate.m)"#,
        r#"!predicate.nested.exists(x, x.s in ["CRITICAL"])"#,
        r#"predicate.n in "abc""#,
    ] {
        let e = eval(src, statement.clone()).unwrap_err();
        assert!(
            e.contains("cannot compare") || e.contains("needs a list"),
            "{src}: {e}"
        );
    }
}

#[test]
fn comparisons_of_values_of_one_type_numbers_and_null_still_work() {
    let statement =
        json!({"predicate": {"n": 1, "f": 1.5, "s": "a", "l": ["a"], "m": {"a": 1}, "x": null}});
    for (src, want) in [
        (r#"predicate.s in ["a", "b"]"#, true),
        (r#"!(predicate.s in ["b"])"#, true),
        (
            r#"predicate.n == 1.0 && predicate.n == 1 && predicate.f != 1"#,
            true,
        ),
        (r#"predicate.n in [2, 1.0]"#, true),
        (r#"predicate.s != null && predicate.x == null"#, true),
        (r#"predicate.l == ["a"] && predicate.l != ["a", "b"]"#, true),
        (r#""a" in predicate.m && !("b" in predicate.m)"#, true),
        (r#"predicate.m == {"a": 1}"#, true),
        (r#"predicate.l.exists_one(x, x == "a")"#, true),
        (r#"predicate.s == "b""#, false),
    ] {
        assert_eq!(eval(src, statement.clone()), Ok(want), "{src}");
    }
}

#[test]
fn evaluation_errors_escape_control_characters() {
    // The missing key, a string from the predicate, is quoted.
    let e = eval(
        "predicate[predicate.s] == 1",
        json!({"predicate": {"s": "x\nlevel=info msg=allowed"}}),
    )
    .unwrap_err();
    assert!(e.contains("x\\nlevel=info"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    assert_eq!(escape_controls("a\nb\u{7}c"), "a\\nb\\u{7}c");
}

#[test]
fn compile_errors_say_what_is_wrong() {
    for (src, want) in [
        ("predicate.(", "not valid CEL"),
        ("", "empty"),
        ("now > 1", "refers to `now`"),
        (
            "predicate.a.all(x, predicate.b.all(y, predicate.c.exists(z, z == x)))",
            "nests comprehensions 3 deep",
        ),
    ] {
        let e = Condition::compile("t", src).unwrap_err().to_string();
        assert!(e.contains(want), "{src}: {e}");
    }
    assert_eq!(
        Condition::compile("t", "now > 1").unwrap_err(),
        CompileError::UnknownVariable("now".into())
    );
    assert_eq!(
        Condition::compile("t", &"a".repeat(MAX_SOURCE + 1)).unwrap_err(),
        CompileError::TooLong
    );
    assert!(Condition::compile("t", "predicate.a.all(x, predicate.b.exists(y, y == x))").is_ok());
}
