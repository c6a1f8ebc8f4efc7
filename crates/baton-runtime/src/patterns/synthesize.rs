//! Confidence × authority weighted synthesis (`synthesize:`): numeric findings of several
//! agents merged by seed 001's formula
//!
//! ```text
//! score = Σ(score_i × confidence_i × authority_i) / Σ(confidence_i × authority_i)
//! ```
//!
//! with an overall confidence, the coverage (missing findings lower both), the dissent between
//! the findings and each finding's share. The step becomes one generated function step with
//! the same id. See `docs/patterns/synthesize.md`.
//!
//! ```yaml
//! - id: risk
//!   needs: [aml, policy, general]
//!   synthesize:
//!     findings: [aml, policy, general]      # state keys, or steps with an `output`
//!     score: risk_score
//!     confidence: confidence
//!     authority: {aml: 1.0, policy: 0.8, general: 0.6}
//!   output: risk
//! ```

use super::Expansion;
use super::common::{self, Shape};
use super::vote::field;
use crate::registry::{StepFn, StepFuture, StepInput};
use crate::spec::{Entries, Loc, OneOrMany, StepSpec};
use serde::Deserialize;
use serde_json::{Value, json};

/// The `synthesize:` block of a step.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthesizeSpec {
    /// The findings: state keys, or ids of steps whose `output` key holds the finding.
    pub findings: OneOrMany<Loc<String>>,
    /// The numeric field of each finding (`risk_score`, `a.b` for a nested field).
    pub score: Loc<String>,
    /// The confidence field (0 to 1) of each finding (default `confidence`).
    #[serde(default)]
    pub confidence: Option<Loc<String>>,
    /// Authority weight per finding, by finding name or by the agent of the step producing it.
    #[serde(default)]
    pub authority: Entries<Loc<f64>>,
    /// The authority of findings `authority` does not name (default: none, each must be named).
    #[serde(default)]
    pub default_authority: Option<Loc<f64>>,
}

impl SynthesizeSpec {
    /// A synthesis of `findings` on the numeric field `score`, confidence in `confidence`.
    pub fn new<I, S>(findings: I, score: &str) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        SynthesizeSpec {
            findings: OneOrMany(findings.into_iter().map(|f| Loc::new(f.into())).collect()),
            score: Loc::new(score.to_string()),
            confidence: None,
            authority: Entries::default(),
            default_authority: None,
        }
    }

    /// The confidence field (default `confidence`).
    pub fn confidence(mut self, field: &str) -> Self {
        self.confidence = Some(Loc::new(field.to_string()));
        self
    }

    /// The authority weight of a finding (or of the agent producing it).
    pub fn authority(mut self, name: &str, weight: f64) -> Self {
        self.authority
            .0
            .push((Loc::new(name.to_string()), Loc::new(weight)));
        self
    }

    /// The authority of findings not named in `authority`.
    pub fn default_authority(mut self, weight: f64) -> Self {
        self.default_authority = Some(Loc::new(weight));
        self
    }
}

/// Expand the `synthesize:` block of `s` into one generated function step with its id.
pub fn expand_step(s: &StepSpec, x: &mut Expansion<'_>) {
    let Some(block) = &s.synthesize else { return };
    let b = &block.value;
    let pos = block.pos;
    let id = s.id.value.as_str();
    let shape = Shape::Fan { entry: None };
    let mut ok = common::check_fields(s, "synthesize", shape, x);
    let spec = x.spec;

    if b.findings.0.is_empty() {
        x.err(pos, id, "`findings` names no finding");
        ok = false;
    }
    let score = b.score.value.trim().to_string();
    let confidence = b
        .confidence
        .as_ref()
        .map_or_else(|| "confidence".to_string(), |c| c.value.trim().to_string());
    for (what, f, at) in [
        ("score", &score, b.score.pos),
        (
            "confidence",
            &confidence,
            b.confidence.as_ref().and_then(|c| c.pos),
        ),
    ] {
        if f.is_empty() || f.split('.').any(str::is_empty) {
            x.err(
                at.or(pos),
                id,
                format!("`{what}` must name a field of the findings, not `{f}`"),
            );
            ok = false;
        }
    }
    for (name, w) in &b.authority.0 {
        if !w.value.is_finite() || w.value < 0.0 {
            x.err(
                w.pos.or(name.pos).or(pos),
                id,
                format!(
                    "authority of `{}` must be a number ≥ 0, not {}",
                    name.value, w.value
                ),
            );
            ok = false;
        }
    }
    if let Some(d) = &b.default_authority
        && (!d.value.is_finite() || d.value < 0.0)
    {
        x.err(
            d.pos.or(pos),
            id,
            format!("`default_authority` must be a number ≥ 0, not {}", d.value),
        );
        ok = false;
    }

    // Each finding: its state key, the step producing it, its authority.
    let mut resolved: Vec<(String, String, f64)> = Vec::new();
    let mut producers: Vec<String> = Vec::new();
    let mut used = vec![false; b.authority.0.len()];
    for (i, f) in b.findings.0.iter().enumerate() {
        let name = f.value.as_str();
        let at = f.pos.or(pos);
        if b.findings.0[..i].iter().any(|o| o.value == name) {
            x.err(at, id, format!("finding `{name}` is listed twice"));
            ok = false;
            continue;
        }
        let is_key = spec.state.0.iter().any(|(k, _)| k.value == name);
        let (key, producer) = if is_key {
            let p = spec
                .steps
                .iter()
                .find(|o| o.output.as_ref().is_some_and(|k| k.value == name));
            (name.to_string(), p)
        } else {
            match spec.steps.iter().find(|o| o.id.value == name) {
                Some(o) => match &o.output {
                    Some(k) => (k.value.clone(), Some(o)),
                    None => {
                        x.err(
                            at,
                            id,
                            format!(
                                "finding `{name}` is a step without an `output` key: name the state key holding its finding"
                            ),
                        );
                        ok = false;
                        continue;
                    }
                },
                None => {
                    x.err(
                        at,
                        id,
                        format!(
                            "finding `{name}` is neither a state key nor a step with an `output`"
                        ),
                    );
                    ok = false;
                    continue;
                }
            }
        };
        if let Some(p) = producer
            && p.id.value != id
            && !producers.contains(&p.id.value)
        {
            producers.push(p.id.value.clone());
        }
        let agent = producer
            .and_then(|p| p.agent.as_ref())
            .map(|a| a.value.as_str());
        let by_name = b.authority.0.iter().position(|(n, _)| n.value == name);
        let by_agent = agent.and_then(|a| b.authority.0.iter().position(|(n, _)| n.value == a));
        let weight = match by_name.or(by_agent) {
            Some(j) => {
                used[j] = true;
                b.authority.0[j].1.value
            }
            None => match &b.default_authority {
                Some(d) => d.value,
                None => {
                    x.err(
                        at,
                        id,
                        format!(
                            "finding `{name}` has no authority: add `{name}: <weight>` to `authority` (or set `default_authority`)"
                        ),
                    );
                    ok = false;
                    continue;
                }
            },
        };
        // A name may match both a finding and the agent of another: mark both as used.
        if let Some(j) = by_agent {
            used[j] = true;
        }
        resolved.push((name.to_string(), key, weight));
    }
    for (j, (n, _)) in b.authority.0.iter().enumerate() {
        if !used[j] && ok {
            let names: Vec<&str> = b.findings.0.iter().map(|f| f.value.as_str()).collect();
            x.err(
                n.pos.or(pos),
                id,
                format!(
                    "`authority` names `{}`, which is neither a finding nor the agent of one (findings: {})",
                    n.value,
                    names.join(", ")
                ),
            );
            ok = false;
        }
    }
    if !ok {
        x.steps.push(common::placeholder(s, shape));
        return;
    }

    let mut st = common::exit_step(s, Some("weighted_synthesis"));
    st.needs = if s.needs.0.is_empty() {
        OneOrMany(
            producers
                .iter()
                .map(|p| Loc {
                    value: p.clone(),
                    pos,
                })
                .collect(),
        )
    } else {
        s.needs.clone()
    };
    st.join = s.join.clone();
    let mut reads: Vec<Loc<String>> = Vec::new();
    for (_, key, _) in &resolved {
        if !reads.iter().any(|r| &r.value == key) {
            reads.push(Loc {
                value: key.clone(),
                pos,
            });
        }
    }
    st.reads = OneOrMany(reads);
    st.builtin = Some(common::builtin(SynthesizeFn {
        findings: resolved,
        score,
        confidence,
    }));
    x.steps.push(st);
}

/// One finding given to [`synthesize`].
#[derive(Clone, Copy, Debug)]
pub struct Finding<'a> {
    /// Its name (a state key or a step id).
    pub name: &'a str,
    /// The finding; `null` when it is missing (its step failed or did not run).
    pub value: &'a Value,
    /// Its authority weight (≥ 0).
    pub authority: f64,
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// Merge numeric findings weighted by confidence × authority (seed 001):
///
/// - `score` = Σ(sᵢ·cᵢ·aᵢ) / Σ(cᵢ·aᵢ) over the findings present;
/// - `confidence` = Σ(cᵢ·aᵢ) / Σ(aᵢ) over all findings: the authority-weighted mean
///   confidence, a missing finding counting as confidence 0;
/// - `coverage` = Σ(aᵢ present) / Σ(aᵢ all);
/// - `dissent` = √(Σ wᵢ(sᵢ − score)² / Σ wᵢ) with wᵢ = cᵢ·aᵢ: the weighted standard deviation
///   of the scores around the synthesis; `spread` = max sᵢ − min sᵢ;
/// - `findings`: per finding present, `{name, score, confidence, authority, weight, share,
///   deviation}` (`weight` = cᵢ·aᵢ, `share` = its part of Σw, `deviation` = sᵢ − score);
/// - `missing`: the findings that are `null`.
///
/// Numbers are rounded to 4 decimals. Errors: a finding that is not an object, a score that
/// is not a number, a confidence that is not a number in [0, 1], no finding present, or a
/// total weight of 0.
pub fn synthesize(
    findings: &[Finding<'_>],
    score: &str,
    confidence: &str,
) -> Result<Value, String> {
    struct Row<'a> {
        name: &'a str,
        s: f64,
        c: f64,
        a: f64,
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut missing: Vec<&str> = Vec::new();
    for f in findings {
        if f.value.is_null() {
            missing.push(f.name);
            continue;
        }
        if !f.value.is_object() {
            return Err(format!(
                "finding `{}` is {}, not an object with `{score}` and `{confidence}`",
                f.name,
                crate::expr::type_name(f.value)
            ));
        }
        let s = field(f.value, score)
            .and_then(Value::as_f64)
            .ok_or_else(|| {
                format!(
                    "finding `{}`: `{score}` is missing or not a number (got {})",
                    f.name,
                    field(f.value, score).map_or("nothing".to_string(), Value::to_string)
                )
            })?;
        let c = field(f.value, confidence)
            .and_then(Value::as_f64)
            .filter(|c| (0.0..=1.0).contains(c))
            .ok_or_else(|| {
                format!(
                    "finding `{}`: `{confidence}` must be a number between 0 and 1 (got {})",
                    f.name,
                    field(f.value, confidence).map_or("nothing".to_string(), Value::to_string)
                )
            })?;
        rows.push(Row {
            name: f.name,
            s,
            c,
            a: f.authority,
        });
    }
    if rows.is_empty() {
        return Err(format!(
            "no finding to synthesise: {} missing",
            if missing.is_empty() {
                "none given, none".to_string()
            } else {
                missing.join(", ")
            }
        ));
    }
    let total_w: f64 = rows.iter().map(|r| r.c * r.a).sum();
    if total_w <= 0.0 {
        return Err(format!(
            "no weight to synthesise with: confidence × authority is 0 for every finding ({})",
            rows.iter()
                .map(|r| format!("{}: {} × {}", r.name, r.c, r.a))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let weighted = rows.iter().map(|r| r.s * r.c * r.a).sum::<f64>() / total_w;
    let all_a: f64 = findings.iter().map(|f| f.authority).sum();
    let present_a: f64 = rows.iter().map(|r| r.a).sum();
    let (conf, coverage) = if all_a > 0.0 {
        (total_w / all_a, present_a / all_a)
    } else {
        (0.0, 0.0)
    };
    let variance = rows
        .iter()
        .map(|r| r.c * r.a * (r.s - weighted).powi(2))
        .sum::<f64>()
        / total_w;
    let max = rows.iter().map(|r| r.s).fold(f64::MIN, f64::max);
    let min = rows.iter().map(|r| r.s).fold(f64::MAX, f64::min);
    Ok(json!({
        "score": round4(weighted),
        "confidence": round4(conf),
        "coverage": round4(coverage),
        "dissent": round4(variance.sqrt()),
        "spread": round4(max - min),
        "findings": rows.iter().map(|r| json!({
            "name": r.name,
            "score": r.s,
            "confidence": r.c,
            "authority": r.a,
            "weight": round4(r.c * r.a),
            "share": round4(r.c * r.a / total_w),
            "deviation": round4(r.s - weighted),
        })).collect::<Vec<_>>(),
        "missing": missing,
    }))
}

/// The generated step: reads each finding's key and synthesises.
struct SynthesizeFn {
    /// (name, state key, authority).
    findings: Vec<(String, String, f64)>,
    score: String,
    confidence: String,
}

impl StepFn for SynthesizeFn {
    fn call(&self, input: StepInput) -> StepFuture {
        let values: Vec<Value> = self
            .findings
            .iter()
            .map(|(_, k, _)| input.state.get(k).cloned().unwrap_or(Value::Null))
            .collect();
        let findings: Vec<Finding<'_>> = self
            .findings
            .iter()
            .zip(&values)
            .map(|((name, _, a), value)| Finding {
                name,
                value,
                authority: *a,
            })
            .collect();
        StepFuture::Ready(synthesize(&findings, &self.score, &self.confidence))
    }
}
