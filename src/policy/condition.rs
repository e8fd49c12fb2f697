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
//!
//! CEL's runtime answers `1 == "a"` and `1 in ["a"]` with `false`, so a
//! negated condition (`!(v.Severity in ["CRITICAL"])`) would pass for a
//! predicate whose field has another type than the condition expects. Here
//! `==`, `!=` and `in` are evaluated strictly instead: comparing values of
//! different types (at any depth of a list or map) is an evaluation error,
//! which fails the requirement. Numbers compare with numbers whatever their
//! kind (`1 == 1.0`), and `null` compares with anything (only `null` equals
//! it), so `x != null` still reads as a presence test.

use std::fmt;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, operators};
use cel::{ExecutionError, Value};

/// Longest condition source accepted.
pub const MAX_SOURCE: usize = 4096;
/// Deepest nesting of comprehensions (`all`, `exists`, `map`, `filter`, …).
pub const MAX_NESTING: usize = 2;

/// A named, compiled condition.
#[derive(Clone)]
pub struct Condition {
    pub name: String,
    pub source: String,
    /// The compiled expression with `==`, `!=` and `in` replaced by the
    /// strict comparisons below.
    strict: Arc<IdedExpr>,
}

/// Why a condition does not compile; each message completes "the condition …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_SOURCE} bytes")]
    TooLong,
    #[error("is not valid CEL: {0}")]
    NotCel(String),
    #[error(
        "nests comprehensions {0} deep (at most {MAX_NESTING}), which could make evaluation costly"
    )]
    TooDeep(usize),
    #[error("refers to `{0}`; a condition can use `predicate`, `predicateType` and `subject`")]
    UnknownVariable(String),
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
    pub fn compile(name: &str, source: &str) -> Result<Condition, CompileError> {
        if source.trim().is_empty() {
            return Err(CompileError::Empty);
        }
        if source.len() > MAX_SOURCE {
            return Err(CompileError::TooLong);
        }
        let program = cel::Program::compile(source)
            .map_err(|e| CompileError::NotCel(e.to_string().trim().to_string()))?;
        let nesting = comprehension_depth(program.expression());
        if nesting > MAX_NESTING {
            return Err(CompileError::TooDeep(nesting));
        }
        for var in program.references().variables() {
            if !["predicate", "predicateType", "subject"].contains(&var)
                && !is_comprehension_variable(program.expression(), var)
            {
                return Err(CompileError::UnknownVariable(var.to_string()));
            }
        }
        let mut strict = program.expression().clone();
        make_comparisons_strict(&mut strict);
        Ok(Condition {
            name: name.to_string(),
            source: source.to_string(),
            strict: Arc::new(strict),
        })
    }

    /// Evaluates against a statement: `Ok(true)` satisfied, `Ok(false)` not,
    /// `Err` when evaluation failed (a missing field, a type error, a
    /// comparison of values of different types), which never satisfies the
    /// condition. The error's text has its control characters escaped: it
    /// may quote the predicate.
    pub fn evaluate(&self, statement: &serde_json::Value) -> Result<bool, String> {
        self.run(statement).map_err(|e| escape_controls(&e))
    }

    fn run(&self, statement: &serde_json::Value) -> Result<bool, String> {
        let mut context = cel::Context::default();
        for (name, f) in [
            (STRICT_EQ, strict_eq_fn as StrictFn),
            (STRICT_NE, strict_ne_fn),
        ] {
            context
                .add_function(name, f)
                .map_err(|e| format!("cannot declare {name}: {e}"))?;
        }
        context
            .add_function(STRICT_IN, strict_in_fn)
            .map_err(|e| format!("cannot declare {STRICT_IN}: {e}"))?;
        for (var, field) in [
            ("predicate", "predicate"),
            ("predicateType", "predicateType"),
            ("subject", "subject"),
        ] {
            context
                .add_variable(var, &statement[field])
                .map_err(|e| format!("cannot read `{field}`: {e}"))?;
        }
        match context.resolve(&self.strict) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("evaluated to {other:?}, not a boolean")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Names the strict comparisons are called by in the rewritten expression;
/// `@` keeps them apart from anything a condition can spell.
const STRICT_EQ: &str = "@portcullis_strict_eq";
const STRICT_NE: &str = "@portcullis_strict_ne";
const STRICT_IN: &str = "@portcullis_strict_in";

type StrictFn = fn(Value, Value) -> Result<bool, ExecutionError>;

fn strict_eq_fn(a: Value, b: Value) -> Result<bool, ExecutionError> {
    strict_eq(&a, &b).map_err(|e| ExecutionError::function_error("==", e))
}

fn strict_ne_fn(a: Value, b: Value) -> Result<bool, ExecutionError> {
    strict_eq(&a, &b)
        .map(|eq| !eq)
        .map_err(|e| ExecutionError::function_error("!=", e))
}

fn strict_in_fn(a: Value, container: Value) -> Result<bool, ExecutionError> {
    strict_in(&a, &container).map_err(|e| ExecutionError::function_error("in", e))
}

/// Replaces every `==`, `!=` and `in` in `e` by its strict version.
fn make_comparisons_strict(e: &mut IdedExpr) {
    match &mut e.expr {
        Expr::Call(c) => {
            if c.target.is_none() && c.args.len() == 2 {
                let strict = match c.func_name.as_str() {
                    operators::EQUALS => Some(STRICT_EQ),
                    operators::NOT_EQUALS => Some(STRICT_NE),
                    operators::IN => Some(STRICT_IN),
                    _ => None,
                };
                if let Some(name) = strict {
                    c.func_name = name.to_string();
                }
            }
            if let Some(t) = c.target.as_deref_mut() {
                make_comparisons_strict(t);
            }
            c.args.iter_mut().for_each(make_comparisons_strict);
        }
        Expr::Comprehension(c) => {
            for part in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                make_comparisons_strict(part);
            }
        }
        Expr::List(l) => l.elements.iter_mut().for_each(make_comparisons_strict),
        Expr::Map(m) => m.entries.iter_mut().for_each(strict_entry),
        Expr::Struct(s) => s.entries.iter_mut().for_each(strict_entry),
        Expr::Select(s) => make_comparisons_strict(&mut s.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn strict_entry(e: &mut cel::common::ast::IdedEntryExpr) {
    match &mut e.expr {
        EntryExpr::StructField(f) => make_comparisons_strict(&mut f.value),
        EntryExpr::MapEntry(m) => {
            make_comparisons_strict(&mut m.key);
            make_comparisons_strict(&mut m.value);
        }
    }
}

/// Equality that refuses to compare values of different types: numbers of
/// any kind compare with each other, `null` with anything; lists and maps
/// compare element by element, every pair of elements strictly.
fn strict_eq(a: &Value, b: &Value) -> Result<bool, String> {
    let numeric = |v: &Value| matches!(v, Value::Int(_) | Value::UInt(_) | Value::Float(_));
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => Ok(a == b),
        (Value::List(x), Value::List(y)) => {
            let mut equal = x.len() == y.len();
            for (x, y) in x.iter().zip(y.iter()) {
                equal &= strict_eq(x, y)?;
            }
            Ok(equal)
        }
        (Value::Map(x), Value::Map(y)) => {
            let mut equal = x.map.len() == y.map.len();
            for (k, x) in x.map.iter() {
                match y.map.get(k) {
                    Some(y) => equal &= strict_eq(x, y)?,
                    None => equal = false,
                }
            }
            Ok(equal)
        }
        _ if numeric(a) && numeric(b) => Ok(a == b),
        _ if std::mem::discriminant(a) == std::mem::discriminant(b)
            && !matches!(a, Value::List(_) | Value::Map(_)) =>
        {
            Ok(a == b)
        }
        _ => Err(format!(
            "cannot compare a {} with a {}",
            a.type_of(),
            b.type_of()
        )),
    }
}

/// `a in container`: an element of a list, or a key of a map, compared
/// strictly with every element or key (so one of another type is an error,
/// whatever the others are).
fn strict_in(a: &Value, container: &Value) -> Result<bool, String> {
    let mut found = false;
    match container {
        Value::List(items) => {
            for item in items.iter() {
                found |= strict_eq(a, item)?;
            }
        }
        Value::Map(m) => {
            for key in m.map.keys() {
                found |= strict_eq(a, &Value::from(key.clone()))?;
            }
        }
        other => {
            return Err(format!(
                "`in` needs a list or a map, not a {}",
                other.type_of()
            ));
        }
    }
    Ok(found)
}

/// `s` with control characters (newlines included) escaped, for messages.
fn escape_controls(s: &str) -> String {
    crate::log::escape_control(s).into_owned()
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
mod tests;
