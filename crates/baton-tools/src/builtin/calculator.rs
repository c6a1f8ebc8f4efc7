//! `calculator`: arithmetic on numbers, nothing else.
//!
//! A small recursive-descent evaluator rather than a general expression language: CEL (used for
//! workflow conditions) has no mixed integer/float arithmetic (`2 * 3.5` is a type error) and
//! divides integers with truncation (`7 / 2` is `3`), which is not what anyone asking a
//! calculator means. Here every number is an `f64`; the grammar has no variables, no strings, no
//! loops and no calls other than a fixed list of pure functions, and its input length and
//! nesting depth are bounded, so evaluation cannot run away or overflow the stack.

use super::{failed, invalid};
use baton_core::{SideEffect, Tool, ToolContext, ToolError, ToolSpec};
use serde_json::{Value, json};

/// The tool's name.
pub const CALCULATOR: &str = "calculator";

/// Longest expression accepted, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 2048;

/// Deepest nesting of parentheses, unary operators and calls accepted.
pub const MAX_DEPTH: usize = 64;

/// The functions an expression may call, with their arity.
const FUNCTIONS: &[(&str, usize)] = &[
    ("abs", 1),
    ("sqrt", 1),
    ("cbrt", 1),
    ("floor", 1),
    ("ceil", 1),
    ("round", 1),
    ("trunc", 1),
    ("ln", 1),
    ("log10", 1),
    ("log2", 1),
    ("exp", 1),
    ("sin", 1),
    ("cos", 1),
    ("tan", 1),
    ("min", 2),
    ("max", 2),
    ("pow", 2),
];

/// The result of an expression.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CalcValue {
    /// A finite number.
    Number(f64),
    /// The result of a comparison or logical operator.
    Bool(bool),
}

impl CalcValue {
    /// As JSON: an integer when the number is integral and exactly representable, a float
    /// otherwise, or a boolean.
    pub fn to_json(self) -> Value {
        match self {
            CalcValue::Bool(b) => json!(b),
            CalcValue::Number(n) => {
                const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
                if n.fract() == 0.0 && n.abs() <= EXACT {
                    // In range and integral, so the cast is exact.
                    json!(n as i64)
                } else {
                    json!(n)
                }
            }
        }
    }
}

/// A calculation error, with the byte offset where it was found when there is one.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}{}", at.map(|a| format!(" (at character {})", a + 1)).unwrap_or_default())]
pub struct CalcError {
    /// What went wrong.
    pub message: String,
    /// Byte offset in the expression.
    pub at: Option<usize>,
}

fn err<T>(message: impl Into<String>, at: Option<usize>) -> Result<T, CalcError> {
    Err(CalcError {
        message: message.into(),
        at,
    })
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, CalcError> {
    const OPS: &[&str] = &[
        "**", "<=", ">=", "==", "!=", "&&", "||", "+", "-", "*", "/", "%", "^", "<", ">", "!",
    ];
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    'outer: while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || c == b'.' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_digit() || bytes[i] == b'.' || bytes[i] == b'_')
            {
                i += 1;
            }
            if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                let mut j = i + 1;
                if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
                    j += 1;
                }
                if j < bytes.len() && bytes[j].is_ascii_digit() {
                    i = j;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let text: String = src[start..i].chars().filter(|&c| c != '_').collect();
            let n: f64 = text
                .parse()
                .or_else(|_| err(format!("`{}` is not a number", &src[start..i]), Some(start)))?;
            out.push((Tok::Num(n), start));
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Ident(src[start..i].to_ascii_lowercase()), start));
            continue;
        }
        match c {
            b'(' => out.push((Tok::LParen, i)),
            b')' => out.push((Tok::RParen, i)),
            b',' => out.push((Tok::Comma, i)),
            _ => {
                for op in OPS {
                    if src[i..].starts_with(op) {
                        out.push((Tok::Op(op), i));
                        i += op.len();
                        continue 'outer;
                    }
                }
                let ch = src[i..].chars().next().unwrap_or('?');
                return err(format!("unexpected character `{ch}`"), Some(i));
            }
        }
        i += 1;
    }
    Ok(out)
}

struct Parser<'a> {
    toks: &'a [(Tok, usize)],
    pos: usize,
    depth: usize,
    end: usize,
}

type Res = Result<CalcValue, CalcError>;

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn at(&self) -> usize {
        self.toks.get(self.pos).map(|(_, a)| *a).unwrap_or(self.end)
    }

    fn eat_op(&mut self, ops: &[&str]) -> Option<(&'static str, usize)> {
        if let Some((Tok::Op(op), at)) = self.toks.get(self.pos)
            && ops.contains(op)
        {
            self.pos += 1;
            return Some((op, *at));
        }
        None
    }

    fn enter(&mut self) -> Result<(), CalcError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(
                format!("the expression is nested too deeply (more than {MAX_DEPTH} levels)"),
                Some(self.at()),
            );
        }
        Ok(())
    }

    fn num(v: CalcValue, at: usize, what: &str) -> Result<f64, CalcError> {
        match v {
            CalcValue::Number(n) => Ok(n),
            CalcValue::Bool(_) => err(format!("{what} needs a number, not a boolean"), Some(at)),
        }
    }

    fn boolean(v: CalcValue, at: usize, what: &str) -> Result<bool, CalcError> {
        match v {
            CalcValue::Bool(b) => Ok(b),
            CalcValue::Number(_) => err(format!("{what} needs a boolean, not a number"), Some(at)),
        }
    }

    fn finite(n: f64, at: usize, what: &str) -> Res {
        if n.is_finite() {
            Ok(CalcValue::Number(n))
        } else {
            err(
                format!("{what} does not give a finite number (overflow or undefined)"),
                Some(at),
            )
        }
    }

    // or := and ("||" and)*
    fn or(&mut self) -> Res {
        let at = self.at();
        let mut left = self.and()?;
        while let Some((_, op_at)) = self.eat_op(&["||"]) {
            let right = self.and()?;
            let l = Self::boolean(left, at, "`||`")?;
            let r = Self::boolean(right, op_at, "`||`")?;
            left = CalcValue::Bool(l || r);
        }
        Ok(left)
    }

    // and := cmp ("&&" cmp)*
    fn and(&mut self) -> Res {
        let at = self.at();
        let mut left = self.cmp()?;
        while let Some((_, op_at)) = self.eat_op(&["&&"]) {
            let right = self.cmp()?;
            let l = Self::boolean(left, at, "`&&`")?;
            let r = Self::boolean(right, op_at, "`&&`")?;
            left = CalcValue::Bool(l && r);
        }
        Ok(left)
    }

    // cmp := sum (("<"|"<="|">"|">="|"=="|"!=") sum)?
    fn cmp(&mut self) -> Res {
        let left = self.sum()?;
        let Some((op, at)) = self.eat_op(&["<", "<=", ">", ">=", "==", "!="]) else {
            return Ok(left);
        };
        let right = self.sum()?;
        let result = match (left, right) {
            (CalcValue::Number(l), CalcValue::Number(r)) => match op {
                "<" => l < r,
                "<=" => l <= r,
                ">" => l > r,
                ">=" => l >= r,
                "==" => l == r,
                _ => l != r,
            },
            (CalcValue::Bool(l), CalcValue::Bool(r)) if op == "==" => l == r,
            (CalcValue::Bool(l), CalcValue::Bool(r)) if op == "!=" => l != r,
            _ => {
                return err(
                    format!("`{op}` cannot compare a number with a boolean"),
                    Some(at),
                );
            }
        };
        if matches!(
            self.peek(),
            Some(Tok::Op("<" | "<=" | ">" | ">=" | "==" | "!="))
        ) {
            return err(
                "comparisons cannot be chained; use `&&` (as in `a < b && b < c`)",
                Some(self.at()),
            );
        }
        Ok(CalcValue::Bool(result))
    }

    // sum := product (("+"|"-") product)*
    fn sum(&mut self) -> Res {
        let at = self.at();
        let mut left = self.product()?;
        while let Some((op, op_at)) = self.eat_op(&["+", "-"]) {
            let right = self.product()?;
            let l = Self::num(left, at, &format!("`{op}`"))?;
            let r = Self::num(right, op_at, &format!("`{op}`"))?;
            left = Self::finite(
                if op == "+" { l + r } else { l - r },
                op_at,
                &format!("`{op}`"),
            )?;
        }
        Ok(left)
    }

    // product := unary (("*"|"/"|"%") unary)*
    fn product(&mut self) -> Res {
        let at = self.at();
        let mut left = self.unary()?;
        while let Some((op, op_at)) = self.eat_op(&["*", "/", "%"]) {
            let right = self.unary()?;
            let l = Self::num(left, at, &format!("`{op}`"))?;
            let r = Self::num(right, op_at, &format!("`{op}`"))?;
            let v = match op {
                "*" => l * r,
                _ if r == 0.0 => {
                    return err(
                        if op == "/" {
                            "division by zero"
                        } else {
                            "remainder by zero"
                        },
                        Some(op_at),
                    );
                }
                "/" => l / r,
                _ => l % r,
            };
            left = Self::finite(v, op_at, &format!("`{op}`"))?;
        }
        Ok(left)
    }

    // unary := ("-"|"+"|"!") unary | power
    fn unary(&mut self) -> Res {
        if let Some((op, at)) = self.eat_op(&["-", "+", "!"]) {
            self.enter()?;
            let v = self.unary()?;
            self.depth -= 1;
            return match op {
                "-" => Ok(CalcValue::Number(-Self::num(v, at, "`-`")?)),
                "+" => Ok(CalcValue::Number(Self::num(v, at, "`+`")?)),
                _ => Ok(CalcValue::Bool(!Self::boolean(v, at, "`!`")?)),
            };
        }
        self.power()
    }

    // power := primary (("^"|"**") unary)?   (right-associative, binds tighter than unary minus
    // on its left: -2^2 is -4)
    fn power(&mut self) -> Res {
        let base = self.primary()?;
        if let Some((op, at)) = self.eat_op(&["^", "**"]) {
            self.enter()?;
            let exp = self.unary()?;
            self.depth -= 1;
            let b = Self::num(base, at, &format!("`{op}`"))?;
            let e = Self::num(exp, at, &format!("`{op}`"))?;
            if b == 0.0 && e < 0.0 {
                return err("division by zero (zero to a negative power)", Some(at));
            }
            return Self::finite(b.powf(e), at, &format!("`{op}`"));
        }
        Ok(base)
    }

    fn primary(&mut self) -> Res {
        let at = self.at();
        let Some((tok, _)) = self.toks.get(self.pos).cloned() else {
            return err("the expression ends too early", Some(at));
        };
        self.pos += 1;
        match tok {
            Tok::Num(n) => Self::finite(n, at, "the number"),
            Tok::LParen => {
                self.enter()?;
                let v = self.or()?;
                self.depth -= 1;
                match self.peek() {
                    Some(Tok::RParen) => {
                        self.pos += 1;
                        Ok(v)
                    }
                    _ => err("`(` is not closed", Some(at)),
                }
            }
            Tok::Ident(name) => self.ident(&name, at),
            Tok::RParen => err("unexpected `)`", Some(at)),
            Tok::Comma => err("unexpected `,`", Some(at)),
            Tok::Op(op) => err(format!("unexpected `{op}`"), Some(at)),
        }
    }

    fn ident(&mut self, name: &str, at: usize) -> Res {
        match name {
            "pi" => return Ok(CalcValue::Number(std::f64::consts::PI)),
            "e" => return Ok(CalcValue::Number(std::f64::consts::E)),
            "true" => return Ok(CalcValue::Bool(true)),
            "false" => return Ok(CalcValue::Bool(false)),
            _ => {}
        }
        let Some(&(_, arity)) = FUNCTIONS.iter().find(|(f, _)| *f == name) else {
            let known: Vec<&str> = FUNCTIONS.iter().map(|(f, _)| *f).collect();
            return err(
                format!(
                    "unknown name `{name}`: there are no variables; functions are {}, constants pi and e",
                    known.join(", ")
                ),
                Some(at),
            );
        };
        if self.peek() != Some(&Tok::LParen) {
            return err(
                format!("`{name}` is a function: write `{name}(…)`"),
                Some(at),
            );
        }
        self.pos += 1;
        self.enter()?;
        let mut args = Vec::new();
        if self.peek() != Some(&Tok::RParen) {
            loop {
                let arg_at = self.at();
                let v = self.or()?;
                args.push(Self::num(v, arg_at, &format!("`{name}`"))?);
                if self.peek() == Some(&Tok::Comma) {
                    self.pos += 1;
                } else {
                    break;
                }
            }
        }
        self.depth -= 1;
        if self.peek() != Some(&Tok::RParen) {
            return err(format!("`{name}(` is not closed"), Some(self.at()));
        }
        self.pos += 1;
        if args.len() != arity {
            return err(
                format!(
                    "`{name}` takes {arity} argument{}, got {}",
                    if arity == 1 { "" } else { "s" },
                    args.len()
                ),
                Some(at),
            );
        }
        let x = args[0];
        let y = args.get(1).copied().unwrap_or(0.0);
        let domain = |ok: bool, what: &str| -> Result<(), CalcError> {
            if ok {
                Ok(())
            } else {
                err(format!("`{name}` is undefined for {what}"), Some(at))
            }
        };
        let v = match name {
            "abs" => x.abs(),
            "sqrt" => {
                domain(x >= 0.0, "negative numbers")?;
                x.sqrt()
            }
            "cbrt" => x.cbrt(),
            "floor" => x.floor(),
            "ceil" => x.ceil(),
            "round" => x.round(),
            "trunc" => x.trunc(),
            "ln" | "log10" | "log2" => {
                domain(x > 0.0, "zero and negative numbers")?;
                match name {
                    "ln" => x.ln(),
                    "log10" => x.log10(),
                    _ => x.log2(),
                }
            }
            "exp" => x.exp(),
            "sin" => x.sin(),
            "cos" => x.cos(),
            "tan" => x.tan(),
            "min" => x.min(y),
            "max" => x.max(y),
            _ => {
                if x == 0.0 && y < 0.0 {
                    return err("division by zero (zero to a negative power)", Some(at));
                }
                x.powf(y)
            }
        };
        Self::finite(v, at, &format!("`{name}`"))
    }
}

/// Evaluate an arithmetic expression.
///
/// Numbers (`2`, `3.5`, `1e3`, `1_000`), `+ - * / %`, `^` or `**` (power, right-associative),
/// parentheses, comparisons `< <= > >= == !=`, `&& || !` on their results, the constants `pi`
/// and `e`, and the functions abs, sqrt, cbrt, floor, ceil, round, trunc, ln, log10, log2, exp,
/// sin, cos, tan (one argument) and min, max, pow (two). Division or remainder by zero, a result
/// that is not finite and anything else the grammar does not know are errors.
pub fn evaluate(expression: &str) -> Result<CalcValue, CalcError> {
    if expression.len() > MAX_EXPRESSION_LEN {
        return err(
            format!(
                "the expression is too long ({} bytes; at most {MAX_EXPRESSION_LEN})",
                expression.len()
            ),
            None,
        );
    }
    let toks = tokenize(expression)?;
    if toks.is_empty() {
        return err("the expression is empty", None);
    }
    let mut parser = Parser {
        toks: &toks,
        pos: 0,
        depth: 0,
        end: expression.len(),
    };
    let value = parser.or()?;
    if parser.pos < toks.len() {
        let at = parser.at();
        return err(
            match &toks[parser.pos].0 {
                Tok::RParen => "unexpected `)`".to_string(),
                _ => "unexpected text after the end of the expression".to_string(),
            },
            Some(at),
        );
    }
    Ok(value)
}

/// The `calculator` tool: `{"expression": "…"}` → `{"result": number | boolean}`.
#[derive(Clone, Debug)]
pub struct CalculatorTool {
    spec: ToolSpec,
}

impl Default for CalculatorTool {
    fn default() -> Self {
        Self::new()
    }
}

impl CalculatorTool {
    /// The tool.
    pub fn new() -> Self {
        CalculatorTool {
            spec: ToolSpec::new(
                CALCULATOR,
                "Evaluate an arithmetic expression exactly as written and return the number. \
                 Supports + - * / % ^ (power), parentheses, comparisons (< <= > >= == !=), \
                 && || !, pi, e and abs, sqrt, cbrt, floor, ceil, round, trunc, ln, log10, \
                 log2, exp, sin, cos, tan, min(a,b), max(a,b), pow(a,b). No variables.",
                json!({
                    "type": "object",
                    "properties": {
                        "expression": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_EXPRESSION_LEN,
                            "description": "For example `(12.5 * 4 + 3) / 2` or `sqrt(2) * 10`."
                        }
                    },
                    "required": ["expression"],
                    "additionalProperties": false
                }),
            )
            .with_effect(SideEffect::ReadOnly),
        }
    }
}

impl Tool for CalculatorTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Value, _ctx: ToolContext) -> Result<Value, ToolError> {
        let Some(expression) = args.get("expression").and_then(Value::as_str) else {
            return Err(invalid(&self.spec.name, "`expression` must be a string"));
        };
        match evaluate(expression) {
            Ok(v) => Ok(json!({"result": v.to_json()})),
            Err(e) => Err(failed(
                &self.spec.name,
                format!("cannot evaluate `{expression}`: {e}"),
            )),
        }
    }
}
