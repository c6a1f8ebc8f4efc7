//! Conditions and computed values: CEL expressions over state.
//!
//! Expressions are compiled once, with the workflow; the variables an expression names must be
//! declared state keys (or names the context adds, such as a map's item), which compile checks.

use cel::{Context, Program};
use serde_json::Value;
use std::sync::Arc;

/// A compiled CEL expression.
pub struct Expr {
    src: Arc<str>,
    program: Program,
    vars: Vec<String>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?})", self.src)
    }
}

/// A compile error in an expression: message and 1-based (line, column) within the expression.
#[derive(Debug)]
pub struct ExprError {
    /// What is wrong.
    pub message: String,
    /// Where, within the expression text.
    pub at: Option<(u32, u32)>,
}

impl Expr {
    /// Compile `src`. Returns the variables it references so callers can check them.
    pub fn compile(src: &str) -> Result<Expr, ExprError> {
        if src.trim().is_empty() {
            return Err(ExprError {
                message: "empty expression".into(),
                at: None,
            });
        }
        // The parser is third-party code; a panic inside it must not take the process down.
        let parsed = std::panic::catch_unwind(|| Program::compile(src)).map_err(|_| ExprError {
            message: "the expression could not be parsed".into(),
            at: None,
        })?;
        let program = parsed.map_err(|errs| {
            let first = errs.errors.first();
            ExprError {
                message: first
                    .map(|e| e.msg.clone())
                    .unwrap_or_else(|| errs.to_string()),
                // cel-parser positions are 1-based (line, column).
                at: first.map(|e| (e.pos.0.max(1) as u32, e.pos.1.max(1) as u32)),
            }
        })?;
        let mut vars: Vec<String> = program
            .references()
            .variables()
            .into_iter()
            .map(|s| s.to_string())
            .collect();
        vars.sort();
        vars.dedup();
        Ok(Expr {
            src: src.into(),
            program,
            vars,
        })
    }

    /// The expression's text.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// Variables the expression references.
    pub fn variables(&self) -> &[String] {
        &self.vars
    }

    /// Evaluate with variables looked up by name (missing ones are `null`).
    pub fn eval<'a>(&self, lookup: impl Fn(&str) -> Option<&'a Value>) -> Result<Value, String> {
        let mut ctx = Context::default();
        for v in &self.vars {
            let val = lookup(v).unwrap_or(&Value::Null);
            ctx.add_variable_from_value(v.as_str(), to_cel(val));
        }
        let out = self
            .program
            .execute(&ctx)
            .map_err(|e| format!("expression `{}`: {e}", self.src))?;
        out.json()
            .map_err(|e| format!("expression `{}`: result not representable: {e:?}", self.src))
    }

    /// Evaluate a condition: the result must be a boolean.
    pub fn eval_bool<'a>(
        &self,
        lookup: impl Fn(&str) -> Option<&'a Value>,
    ) -> Result<bool, String> {
        match self.eval(lookup)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!(
                "condition `{}` gave {}, not a boolean",
                self.src,
                type_name(&other)
            )),
        }
    }
}

/// JSON to CEL. Integers become CEL `int` whenever they fit, so that `count + 1` works on a
/// JSON number (serde's conversion would make non-negative numbers `uint`, which CEL refuses
/// to add to an `int` literal).
fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(o) => cel::Value::Map(cel::objects::Map {
            map: Arc::new(
                o.iter()
                    .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect(),
            ),
        }),
    }
}

/// The JSON type name of a value, for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_over_json() {
        let e = Expr::compile("score >= 70 && lead.region == 'EU'").unwrap();
        assert_eq!(e.variables(), ["lead", "score"]);
        let score = json!(80);
        let lead = json!({"region": "EU"});
        let ok = e
            .eval_bool(|n| match n {
                "score" => Some(&score),
                "lead" => Some(&lead),
                _ => None,
            })
            .unwrap();
        assert!(ok);
    }

    #[test]
    fn reports_position_of_syntax_error() {
        let err = Expr::compile("score >= ").unwrap_err();
        assert!(err.at.is_some(), "{err:?}");
    }

    proptest::proptest! {
        #[test]
        fn compile_never_panics(src in "\\PC{0,40}") {
            let _ = Expr::compile(&src);
        }

        #[test]
        fn compile_never_panics_on_operator_soup(src in "[a-z0-9 .()<>=!&|+*'\\[\\]-]{0,30}") {
            let _ = Expr::compile(&src);
        }
    }

    #[test]
    fn json_integers_add_to_literals() {
        let e = Expr::compile("x + 1 == 21 && m.k * 2 == 4 && size(l) == 2").unwrap();
        let (x, m, l) = (json!(20), json!({"k": 2}), json!([1, "a"]));
        assert!(
            e.eval_bool(|n| match n {
                "x" => Some(&x),
                "m" => Some(&m),
                "l" => Some(&l),
                _ => None,
            })
            .unwrap()
        );
    }

    #[test]
    fn non_boolean_condition_is_an_error() {
        let e = Expr::compile("1 + 2").unwrap();
        let err = e.eval_bool(|_| None).unwrap_err();
        assert!(err.contains("not a boolean"), "{err}");
    }
}
