//! Attestation conditions: CEL expressions over a verified in-toto
//! statement, compiled once when the config is loaded and evaluated with a
//! bounded cost.
//!
//! A condition sees `predicate` (the statement's predicate), `predicateType`
//! and `subject` (the statement's subjects). CEL has no unbounded loops; its
//! only iteration is a comprehension over a list or map the input already
//! holds, and conditions may nest those at most [`MAX_NESTING`] deep, so
//! evaluation is at most quadratic in a predicate whose size is itself
//! bounded by the attestation limits.

use std::fmt;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr};

/// Longest condition source accepted.
pub const MAX_SOURCE: usize = 4096;
/// Deepest nesting of comprehensions (`all`, `exists`, `map`, `filter`, …).
pub const MAX_NESTING: usize = 2;

/// A named, compiled condition.
#[derive(Clone)]
pub struct Condition {
    pub name: String,
    pub source: String,
    program: Arc<cel::Program>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("name", &self.name)
            .field("source", &self.source)
            .finish()
    }
}

impl Condition {
    /// Compiles `source`; the error says what is wrong, for the config key.
    pub fn compile(name: &str, source: &str) -> Result<Condition, String> {
        if source.trim().is_empty() {
            return Err("is empty".into());
        }
        if source.len() > MAX_SOURCE {
            return Err(format!("is longer than {MAX_SOURCE} bytes"));
        }
        let program = cel::Program::compile(source)
            .map_err(|e| format!("is not valid CEL: {}", e.to_string().trim()))?;
        let nesting = comprehension_depth(program.expression());
        if nesting > MAX_NESTING {
            return Err(format!(
                "nests comprehensions {nesting} deep (at most {MAX_NESTING}), which could make evaluation costly"
            ));
        }
        for var in program.references().variables() {
            if !["predicate", "predicateType", "subject"].contains(&var)
                && !is_comprehension_variable(program.expression(), var)
            {
                return Err(format!(
                    "refers to `{var}`; a condition can use `predicate`, `predicateType` and `subject`"
                ));
            }
        }
        Ok(Condition {
            name: name.to_string(),
            source: source.to_string(),
            program: Arc::new(program),
        })
    }

    /// Evaluates against a statement: `Ok(true)` satisfied, `Ok(false)` not,
    /// `Err` when evaluation failed (a missing field, a type error), which
    /// never satisfies the condition.
    pub fn evaluate(&self, statement: &serde_json::Value) -> Result<bool, String> {
        let mut context = cel::Context::default();
        for (var, field) in [
            ("predicate", "predicate"),
            ("predicateType", "predicateType"),
            ("subject", "subject"),
        ] {
            context
                .add_variable(var, &statement[field])
                .map_err(|e| format!("cannot read `{field}`: {e}"))?;
        }
        match self.program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("evaluated to {other:?}, not a boolean")),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn children(e: &IdedExpr) -> Vec<&IdedExpr> {
    match &e.expr {
        Expr::Call(c) => c
            .target
            .as_deref()
            .into_iter()
            .chain(c.args.iter())
            .collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(m) => entries(&m.entries),
        Expr::Struct(s) => entries(&s.entries),
        Expr::Select(s) => vec![&s.operand],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

fn entries(entries: &[cel::common::ast::IdedEntryExpr]) -> Vec<&IdedExpr> {
    entries
        .iter()
        .flat_map(|e| match &e.expr {
            EntryExpr::StructField(f) => vec![&f.value],
            EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
        })
        .collect()
}

/// How deeply comprehensions nest inside one another.
fn comprehension_depth(e: &IdedExpr) -> usize {
    let inner = children(e)
        .into_iter()
        .map(comprehension_depth)
        .max()
        .unwrap_or(0);
    match &e.expr {
        // The range is evaluated once, outside the loop.
        Expr::Comprehension(c) => {
            let body = [&c.loop_cond, &c.loop_step, &c.result]
                .into_iter()
                .map(comprehension_depth)
                .max()
                .unwrap_or(0);
            (body + 1).max(comprehension_depth(&c.iter_range))
        }
        _ => inner,
    }
}

/// Whether `name` is bound by some comprehension in `e` (its iteration or
/// accumulator variable).
fn is_comprehension_variable(e: &IdedExpr, name: &str) -> bool {
    if let Expr::Comprehension(c) = &e.expr {
        if c.iter_var == name || c.accu_var == name || c.iter_var2.as_deref() == Some(name) {
            return true;
        }
    }
    children(e)
        .into_iter()
        .any(|c| is_comprehension_variable(c, name))
}

#[cfg(test)]
mod tests {
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
            let e = Condition::compile("t", src).unwrap_err();
            assert!(e.contains(want), "{src}: {e}");
        }
        assert!(Condition::compile("t", &"a".repeat(MAX_SOURCE + 1)).is_err());
        assert!(
            Condition::compile("t", "predicate.a.all(x, predicate.b.exists(y, y == x))").is_ok()
        );
    }
}
