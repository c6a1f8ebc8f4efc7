//! The calculator: arithmetic, precedence, functions, and clear errors (never a panic) on bad
//! input.

#![allow(clippy::unwrap_used)]

use baton_core::{SideEffect, Tool, ToolContext, ToolError};
use baton_tools::builtin::CalculatorTool;
use baton_tools::builtin::calculator::{CalcValue, MAX_DEPTH, evaluate};
use proptest::prelude::*;
use serde_json::json;

fn num(expr: &str) -> f64 {
    match evaluate(expr) {
        Ok(CalcValue::Number(n)) => n,
        other => panic!("{expr}: {other:?}"),
    }
}

fn error(expr: &str) -> String {
    match evaluate(expr) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("{expr} should fail, got {v:?}"),
    }
}

#[test]
fn arithmetic() {
    assert_eq!(num("1 + 2 * 3"), 7.0);
    assert_eq!(num("(1 + 2) * 3"), 9.0);
    assert_eq!(num("7 / 2"), 3.5, "no integer division");
    assert_eq!(num("2 * 3.5"), 7.0, "mixed integers and floats");
    assert_eq!(num("10 % 4"), 2.0);
    assert_eq!(num("-3 + +5"), 2.0);
    assert_eq!(num("2 ^ 3 ^ 2"), 512.0, "power is right-associative");
    assert_eq!(num("2 ** 10"), 1024.0);
    assert_eq!(num("-2 ^ 2"), -4.0);
    assert_eq!(num("2 ^ -1"), 0.5);
    assert_eq!(num("1e3 + 1_000 + .5"), 2000.5);
    assert_eq!(num("sqrt(16) + abs(-2) + max(1, 4) + min(1, 4)"), 11.0);
    assert_eq!(
        num("round(2.5) + floor(2.7) + ceil(2.1) + trunc(-2.7)"),
        6.0
    );
    assert!((num("pi") - std::f64::consts::PI).abs() < 1e-12);
    assert!((num("ln(e)") - 1.0).abs() < 1e-12);
    assert_eq!(num("pow(2, 8)"), 256.0);
    assert_eq!(num("  ( ( 42 ) )  "), 42.0);
}

#[test]
fn comparisons_and_logic() {
    assert_eq!(evaluate("3 > 2").unwrap(), CalcValue::Bool(true));
    assert_eq!(
        evaluate("1 + 1 == 2 && !(2 < 1)").unwrap(),
        CalcValue::Bool(true)
    );
    assert_eq!(evaluate("1 >= 2 || false").unwrap(), CalcValue::Bool(false));
    assert!(error("1 < 2 < 3").contains("chained"));
    assert!(error("true + 1").contains("boolean"));
    assert!(error("1 && true").contains("boolean"));
}

#[test]
fn division_by_zero_and_non_finite_results() {
    assert!(error("1 / 0").contains("division by zero"));
    assert!(error("1 / (2 - 2)").contains("division by zero"));
    assert!(error("5 % 0").contains("remainder by zero"));
    assert!(error("0 ^ -1").contains("division by zero"));
    assert!(error("1e308 * 10").contains("finite"));
    assert!(error("sqrt(-1)").contains("undefined"));
    assert!(error("ln(0)").contains("undefined"));
}

#[test]
fn garbage_is_a_clear_error() {
    for (expr, expect) in [
        ("", "empty"),
        ("   ", "empty"),
        ("2 +", "ends too early"),
        ("(1 + 2", "not closed"),
        ("1 + 2)", "unexpected `)`"),
        ("2 3", "after the end"),
        ("2 $ 3", "unexpected character `$`"),
        ("x + 1", "unknown name `x`"),
        ("sqrt 4", "function"),
        ("max(1)", "takes 2 arguments"),
        ("1.2.3", "not a number"),
        ("system(1)", "unknown name `system`"),
        ("2 + ü", "unexpected character `ü`"),
    ] {
        let msg = error(expr);
        assert!(msg.contains(expect), "{expr:?}: {msg}");
    }
    // Positions are reported, 1-based.
    assert!(error("1 + 2 $").contains("at character 7"));
}

#[test]
fn nesting_and_length_are_bounded() {
    let deep = format!(
        "{}1{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    assert!(error(&deep).contains("nested too deeply"));
    let ok = format!(
        "{}1{}",
        "(".repeat(MAX_DEPTH - 1),
        ")".repeat(MAX_DEPTH - 1)
    );
    assert_eq!(num(&ok), 1.0);
    assert!(error(&"-".repeat(100_000)).contains("too long"));
    assert!(error(&format!("{}1", "-".repeat(MAX_DEPTH + 1))).contains("nested too deeply"));
}

#[tokio::test]
async fn the_tool() {
    let tool = CalculatorTool::new();
    assert_eq!(tool.spec().effect, SideEffect::ReadOnly);
    assert_eq!(tool.spec().parameters["additionalProperties"], json!(false));
    let out = tool
        .call(
            json!({"expression": "(12.5 * 4 + 3) / 2"}),
            ToolContext::default(),
        )
        .await
        .unwrap();
    assert_eq!(out, json!({"result": 26.5}));
    let out = tool
        .call(json!({"expression": "6 * 7"}), ToolContext::default())
        .await
        .unwrap();
    assert_eq!(out, json!({"result": 42}), "integral results are integers");
    let err = tool
        .call(json!({"expression": "1/0"}), ToolContext::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ToolError::Failed { message, .. } if message.contains("division by zero")),
        "{err}"
    );
    let err = tool
        .call(json!({"expression": 5}), ToolContext::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::InvalidArguments { .. }));
}

proptest! {
    #[test]
    fn never_panics_on_any_input(s in ".{0,200}") {
        let _ = evaluate(&s);
    }

    #[test]
    fn never_panics_on_operator_soup(s in "[0-9().,+*/%^!<>=&|e -]{0,200}") {
        let _ = evaluate(&s);
    }
}
