//! Helpers shared by every pattern expansion.
//!
//! The patterns come in two shapes ([`Shape`]). The looping blocks (`debate:`, `reflect:`,
//! `refine:`) expand into a chain or a loop of generated steps with one way in and one way out:
//! the way out is a step that keeps the pattern step's id (so `needs: [decide]` waits for the
//! whole block, and the block's `output`, `writes` and `next` live there); the way in is the
//! first generated step, which carries the pattern step's `needs` and `join`. The fan-out blocks
//! (`vote:`, `synthesize:`, `best_of:`, `swarm:`) start their first steps together (each with
//! the pattern step's `needs`) and end in a step that keeps the pattern step's id.

use super::Expansion;
use crate::expr::Expr;
use crate::registry::{StepFn, StepFuture, StepInput};
use crate::spec::{AgentSpec, BranchSpec, BuiltinFn, Loc, MergeRule, OneOrMany, Pos, StepSpec};
use crate::template::Templates;
use serde_json::Value;
use std::sync::Arc;

/// The shape of a pattern block. The two shapes refuse different things and word their errors
/// differently (see [`check_fields`], [`check_not_target`], [`gen_key`] and [`placeholder`]).
#[derive(Clone, Copy, Debug)]
pub enum Shape<'a> {
    /// A chain or loop (`debate:`, `reflect:`, `refine:`) entered at its first step `entry`
    /// and bounded by `bound` (suggested instead of `max_visits`, which the step may not set).
    Loop {
        /// The first generated step.
        entry: &'a str,
        /// What bounds the loop, as the block writes it.
        bound: &'a str,
    },
    /// Steps that start together (`vote:`, `synthesize:`, `best_of:`, `swarm:`), or at `entry`
    /// when one step starts the block; the generated steps take the step's `max_visits`.
    Fan {
        /// The generated step that starts the block, if one does.
        entry: Option<&'a str>,
    },
}

/// Whether `s` is usable as a state key in CEL conditions and templates.
pub fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `s` made usable as (part of) a state key in CEL and templates: other characters become `_`.
pub fn ident(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Refuse the fields a pattern block replaces. A looping block also refuses `max_visits`
/// (suggesting its bound instead); a fan-out block also refuses a second pattern block. True
/// when all is well.
pub fn check_fields(s: &StepSpec, block: &str, shape: Shape<'_>, x: &mut Expansion<'_>) -> bool {
    let id = s.id.value.as_str();
    let hint = match shape {
        Shape::Loop { .. } => "agents and prompts go inside",
        Shape::Fan { .. } => "put the prompt and agents inside",
    };
    let mut ok = true;
    let mut refuse = |x: &mut Expansion<'_>, field: &str, pos: Option<Pos>| {
        x.err(
            pos.or(s.id.pos),
            id,
            format!(
                "a `{block}:` step does its work through the block: remove `{field}` ({hint} `{block}:`)"
            ),
        );
        ok = false;
    };
    if let Some(a) = &s.agent {
        refuse(x, "agent", a.pos);
    }
    if let Some(p) = &s.prompt {
        refuse(x, "prompt", p.pos);
    }
    if let Some(r) = &s.run {
        refuse(x, "run", r.pos);
    }
    if s.builtin.is_none()
        && let Some(f) = &s.function
    {
        refuse(x, "function", f.pos);
    }
    if let Some(w) = &s.workflow {
        refuse(x, "workflow", w.pos);
    }
    if let Some((k, _)) = s.input.0.first() {
        refuse(x, "input", k.pos);
    }
    if s.router.is_some() {
        refuse(x, "router", None);
    }
    if let Some(m) = &s.map {
        refuse(x, "map", m.over.pos);
    }
    if let Some(a) = &s.approval {
        refuse(x, "approval", a.pos);
    }
    match shape {
        Shape::Loop { bound, .. } => {
            if s.max_visits.is_some() {
                x.err(
                    s.id.pos,
                    id,
                    format!(
                        "`max_visits` does not apply to a `{block}:` step: its loop is bounded by `{bound}`"
                    ),
                );
                ok = false;
            }
        }
        Shape::Fan { .. } => {
            // `expand` dispatches the looping blocks first, so only fan-out blocks are found.
            let all = super::blocks(s);
            if all.len() > 1 {
                let names: Vec<String> = all.iter().map(|(n, _)| format!("`{n}:`")).collect();
                let at = all.iter().find(|(n, _)| *n != block).and_then(|(_, p)| *p);
                x.err(
                    at.or(s.id.pos),
                    id,
                    format!(
                        "a step carries one pattern block, but this one has {}",
                        names.join(" and ")
                    ),
                );
                ok = false;
            }
        }
    }
    ok
}

/// Where a reference to a step stands.
enum Ref {
    /// In a `next` or router branch (`what` names which).
    Branch(&'static str),
    /// In `on_error`.
    OnError,
    /// In `start:`.
    Start,
}

/// Nothing may route to the pattern step itself: its id is the block's way *out* (it completes
/// when the block is done), so a transition, `on_error` or `start:` naming it would skip the
/// block. Such a reference is an error naming the block's way in, if it has one. A looping
/// block reports it on the step holding the reference, a fan-out block on the pattern step.
/// True when there is none.
pub fn check_not_target(
    s: &StepSpec,
    block: &str,
    shape: Shape<'_>,
    x: &mut Expansion<'_>,
) -> bool {
    let id = s.id.value.as_str();
    // (where, what refers, the step holding the reference)
    let mut refs: Vec<(Option<Pos>, Ref, String)> = Vec::new();
    for o in &x.spec.steps {
        let from = &o.id.value;
        let branches = o
            .next
            .iter()
            .flat_map(|n| n.0.iter())
            .map(|b| ("`next`", b))
            .chain(o.router.iter().flatten().map(|b| ("the router", b)));
        for (what, b) in branches {
            for t in b.to.0.iter().filter(|t| t.value == id) {
                refs.push((t.pos, Ref::Branch(what), from.clone()));
            }
        }
        if let Some(e) = o.on_error.as_ref().filter(|e| e.value == id) {
            refs.push((e.pos, Ref::OnError, from.clone()));
        }
    }
    for t in x.spec.start.0.iter().filter(|t| t.value == id) {
        refs.push((t.pos, Ref::Start, id.to_string()));
    }
    let ok = refs.is_empty();
    let end = format!("`{id}`, the end of a `{block}:` block");
    let done = format!("{end} (it completes when the block is done)");
    for (pos, r, from) in refs {
        let message = match shape {
            Shape::Loop { entry, .. } => match r {
                Ref::Branch(what) => format!(
                    "{what} goes to {done}: lead to its first step `{entry}` instead, or reach `{id}` through `needs`"
                ),
                Ref::OnError => {
                    format!("`on_error` goes to {done}: lead to its first step `{entry}` instead")
                }
                Ref::Start => {
                    format!("`start:` names {done}: name its first step `{entry}` instead")
                }
            },
            Shape::Fan { entry } => {
                let what = match r {
                    Ref::Branch(what) => format!("{what} of step `{from}`"),
                    Ref::OnError => format!("`on_error` of step `{from}`"),
                    Ref::Start => "`start:`".to_string(),
                };
                match entry {
                    Some(e) => format!(
                        "{what} goes to {done}: lead to its first step `{e}` instead, or reach `{id}` through `needs`"
                    ),
                    None => format!(
                        "{what} goes to {end} whose steps start in parallel: reach it through `needs` (route to a step that `{id}` needs)"
                    ),
                }
            }
        };
        let at = match shape {
            Shape::Loop { .. } => from.as_str(),
            Shape::Fan { .. } => id,
        };
        x.err(pos, at, message);
    }
    ok
}

/// The agent named by `name` (an error at its position if it is not declared). The error names
/// the agent's `role` in the block when given (`contra`, `producer`), else says `unknown agent`.
pub fn agent<'a>(
    x: &mut Expansion<'a>,
    s: &StepSpec,
    role: Option<&str>,
    name: &Loc<String>,
    pos: Option<Pos>,
) -> Option<&'a AgentSpec> {
    let spec = x.spec;
    let found = spec
        .agents
        .0
        .iter()
        .find(|(n, _)| n.value == name.value)
        .map(|(_, a)| a);
    if found.is_none() {
        let known: Vec<&str> = spec
            .agents
            .0
            .iter()
            .map(|(n, _)| n.value.as_str())
            .collect();
        let what = match role {
            Some(role) if name.value.trim().is_empty() => format!("`{role}` names no agent"),
            Some(role) => format!("{role} `{}` is not a declared agent", name.value),
            None => format!("unknown agent `{}`", name.value),
        };
        x.err(
            name.pos.or(pos),
            &s.id.value,
            format!(
                "{what} (agents: {})",
                if known.is_empty() {
                    "none declared".to_string()
                } else {
                    known.join(", ")
                }
            ),
        );
    }
    found
}

/// Whether a JSON Schema declares `properties` without `field` (so answers cannot have it).
pub fn schema_lacks(schema: &Value, field: &str) -> bool {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.contains_key(field))
}

/// Declare a generated state key. A key of that name declared by the user must have the same
/// merge rule (declaring it gives it a description, or lists it in `outputs`). For a looping
/// block, a key another block already generated is an error; fan-out blocks share it. True
/// when all is well.
pub fn gen_key(
    x: &mut Expansion<'_>,
    s: &StepSpec,
    shape: Shape<'_>,
    name: &str,
    merge: MergeRule,
    description: &str,
    pos: Option<Pos>,
) -> bool {
    let spec = x.spec;
    if let Some((k, ks)) = spec.state.0.iter().find(|(k, _)| k.value == name) {
        if ks.merge != merge {
            x.err(
                k.pos,
                &s.id.value,
                format!(
                    "state key `{name}` is generated by this step's pattern block with merge rule `{}`, but is declared with `{}`: rename it or declare it `{}`",
                    merge.as_str(),
                    ks.merge.as_str(),
                    merge.as_str()
                ),
            );
            return false;
        }
        return true;
    }
    if matches!(shape, Shape::Loop { .. }) && x.keys.iter().any(|(k, _)| k.value == name) {
        x.err(
            pos,
            &s.id.value,
            format!(
                "state key `{name}` is already generated by another pattern block (step ids that differ only in `-`, `.` or `_` map to the same keys): rename the step"
            ),
        );
        return false;
    }
    x.key(name, merge, description, pos);
    true
}

/// The position of line `line` (from 1) of a value written at `base`.
fn at_line(base: Option<Pos>, line: Option<u32>) -> Option<Pos> {
    match (base, line) {
        (Some(b), Some(l)) if l > 1 => Some(Pos {
            line: b.line + l - 1,
            col: 1,
        }),
        _ => base,
    }
}

/// Check a prompt template written in a block: it compiles and uses only `allowed` names (the
/// step's `reads`, plus what the block adds). True when all is well.
pub fn check_template(
    x: &mut Expansion<'_>,
    s: &StepSpec,
    what: &str,
    t: &Loc<String>,
    allowed: &[String],
) -> bool {
    let id = s.id.value.as_str();
    if t.value.trim().is_empty() {
        x.err(t.pos, id, format!("`{what}` is empty"));
        return false;
    }
    let mut env = Templates::new();
    match env.add("t".into(), t.value.clone()) {
        Ok(vars) => {
            let mut ok = true;
            for v in vars {
                if !allowed.contains(&v) {
                    x.err(
                        t.pos,
                        id,
                        format!(
                            "`{what}` uses `{v}`, which the step does not read (add it to `reads`; the step reads: {})",
                            if allowed.is_empty() {
                                "nothing".to_string()
                            } else {
                                allowed.join(", ")
                            }
                        ),
                    );
                    ok = false;
                }
            }
            ok
        }
        Err(e) => {
            x.err(
                at_line(t.pos, e.line),
                id,
                format!("bad `{what}` template: {}", e.message),
            );
            false
        }
    }
}

/// Check a CEL condition written in a block: it parses and names only state keys (declared,
/// generated so far, or `extra`). True when all is well.
pub fn check_expr(
    x: &mut Expansion<'_>,
    s: &StepSpec,
    what: &str,
    e: &Loc<String>,
    extra: &[String],
) -> bool {
    let id = s.id.value.as_str();
    match Expr::compile(&e.value) {
        Ok(expr) => {
            let mut ok = true;
            for v in expr.variables() {
                let known = x.spec.state.0.iter().any(|(k, _)| &k.value == v)
                    || x.keys.iter().any(|(k, _)| &k.value == v)
                    || extra.contains(v);
                if !known {
                    x.err(
                        e.pos,
                        id,
                        format!(
                            "`{what}` expression `{}` uses `{v}`, which is not a state key (the block adds: {})",
                            e.value,
                            extra.join(", ")
                        ),
                    );
                    ok = false;
                }
            }
            ok
        }
        Err(err) => {
            x.err(
                e.pos,
                id,
                format!("bad `{what}` expression `{}`: {}", e.value, err.message),
            );
            false
        }
    }
}

/// A generated no-op step with an id and a description, at the block's position.
pub fn step(id: String, pos: Option<Pos>, description: String) -> StepSpec {
    StepSpec {
        id: Loc { value: id, pos },
        description,
        ..StepSpec::default()
    }
}

/// `st` waiting like the pattern step: its `needs` and `join` (for a block's first steps).
pub fn waits(s: &StepSpec, st: StepSpec) -> StepSpec {
    StepSpec {
        needs: s.needs.clone(),
        join: s.join.clone(),
        ..st
    }
}

/// `st` as a first step of a fan-out block: it waits like the pattern step ([`waits`]), reads
/// what it reads, and writes its result to `output`.
pub fn first_step(s: &StepSpec, st: StepSpec, output: &str, pos: Option<Pos>) -> StepSpec {
    StepSpec {
        reads: s.reads.clone(),
        output: Some(Loc {
            value: output.to_string(),
            pos,
        }),
        ..waits(s, st)
    }
}

/// `st` under the pattern step's limits and failure policy: its timeout, retries, deadline,
/// budget, `max_visits`, `on_error` and impact.
pub fn limited(s: &StepSpec, st: StepSpec) -> StepSpec {
    StepSpec {
        on_error: s.on_error.clone(),
        impact: s.impact.clone(),
        timeout: s.timeout,
        budget: s.budget,
        retries: s.retries,
        deadline: s.deadline,
        max_visits: s.max_visits,
        ..st
    }
}

/// The first generated step of a looping block: a no-op carrying the pattern step's `needs`,
/// `join` and failure policy.
pub fn entry_step(s: &StepSpec, id: String, pos: Option<Pos>, description: String) -> StepSpec {
    waits(
        s,
        StepSpec {
            on_error: s.on_error.clone(),
            impact: s.impact.clone(),
            ..step(id, pos, description)
        },
    )
}

/// The step that keeps the pattern step's id: its description, output, writes, transitions,
/// `max_visits` and failure policy, running the generated `function` (named at the step's
/// position) if given. The caller adds the work (`builtin`, or `needs` for a no-op).
pub fn exit_step(s: &StepSpec, function: Option<&str>) -> StepSpec {
    StepSpec {
        id: s.id.clone(),
        description: s.description.clone(),
        function: function.map(|f| Loc {
            value: f.to_string(),
            pos: s.id.pos,
        }),
        output: s.output.clone(),
        writes: s.writes.clone(),
        next: s.next.clone(),
        on_error: s.on_error.clone(),
        impact: s.impact.clone(),
        max_visits: s.max_visits,
        ..StepSpec::default()
    }
}

/// What stands for a pattern step whose block has errors: a no-op with its id, needs and
/// transitions, so that references to it add no errors of their own. A looping block's keeps
/// the step's `output`, `writes` and impact too.
pub fn placeholder(s: &StepSpec, shape: Shape<'_>) -> StepSpec {
    let st = StepSpec {
        id: s.id.clone(),
        description: s.description.clone(),
        next: s.next.clone(),
        on_error: s.on_error.clone(),
        ..waits(s, StepSpec::default())
    };
    match shape {
        Shape::Loop { .. } => StepSpec {
            output: s.output.clone(),
            writes: s.writes.clone(),
            impact: s.impact.clone(),
            ..st
        },
        Shape::Fan { .. } => st,
    }
}

/// An agent step generated from the pattern step `s`: its timeout, retries, deadline, budget,
/// `max_visits`, failure policy and impact apply to each such step.
pub fn agent_step(
    s: &StepSpec,
    id: &str,
    pos: Option<Pos>,
    agent: &Loc<String>,
    prompt: Loc<String>,
    description: String,
) -> StepSpec {
    limited(
        s,
        StepSpec {
            agent: Some(Loc {
                value: agent.value.clone(),
                pos: agent.pos.or(pos),
            }),
            prompt: Some(prompt),
            ..step(id.to_string(), pos, description)
        },
    )
}

/// The pattern step's `reads` and the generated keys `extra` (once each).
pub fn reads_plus(s: &StepSpec, extra: &[&str], pos: Option<Pos>) -> OneOrMany<Loc<String>> {
    let mut out = s.reads.0.clone();
    for k in extra {
        if !out.iter().any(|r| r.value == *k) {
            out.push(Loc {
                value: (*k).to_string(),
                pos,
            });
        }
    }
    OneOrMany(out)
}

/// Keys (or step ids) as a `reads` (or `needs`) list.
pub fn keys(list: &[&str], pos: Option<Pos>) -> OneOrMany<Loc<String>> {
    OneOrMany(
        list.iter()
            .map(|k| Loc {
                value: (*k).to_string(),
                pos,
            })
            .collect(),
    )
}

/// One transition branch.
pub fn branch(when: Option<Loc<String>>, to: &str, pos: Option<Pos>) -> BranchSpec {
    BranchSpec {
        when,
        to: OneOrMany(vec![Loc {
            value: to.to_string(),
            pos,
        }]),
    }
}

/// A value in a prompt: strings as they are, anything else as JSON (minijinja).
pub fn show(expr: &str) -> String {
    format!(
        "{{% if {expr} is string %}}{{{{ {expr} }}}}{{% else %}}{{{{ {expr} | tojson }}}}{{% endif %}}"
    )
}

/// The last item of a list key of the view (`Err` naming the key when there is none).
pub fn last_of(input: &StepInput, key: &str) -> Result<Value, String> {
    input
        .state
        .get(key)
        .and_then(Value::as_array)
        .and_then(|a| a.last())
        .cloned()
        .ok_or_else(|| format!("state key `{key}` holds no item yet"))
}

/// The number of items of a list key of the view.
pub fn len_of(input: &StepInput, key: &str) -> usize {
    input
        .state
        .get(key)
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

/// A synchronous generated step function: a closure made a [`StepFn`] (for [`builtin`]).
pub struct SyncStep<F>(pub F);

impl<F> StepFn for SyncStep<F>
where
    F: Fn(StepInput) -> Result<Value, String> + Send + Sync,
{
    fn call(&self, input: StepInput) -> StepFuture {
        StepFuture::Ready((self.0)(input))
    }
}

/// Wrap a step function (or a closure, in [`SyncStep`]) for `StepSpec::builtin`.
pub fn builtin(f: impl StepFn + 'static) -> BuiltinFn {
    BuiltinFn(Arc::new(f))
}

/// The text of a value: a string as it is, anything else as compact JSON.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// How alike two texts are, from 0 (nothing shared) to 1 (the same words in the same order):
/// the cosine of their word and word-pair counts (lower-cased, letters and digits only). A
/// cheap, deterministic stand-in for embedding similarity: it sees rewording, not meaning.
pub fn similarity(a: &str, b: &str) -> f64 {
    use std::collections::HashMap;
    fn counts(t: &str) -> HashMap<String, f64> {
        let words: Vec<String> = t
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let mut m: HashMap<String, f64> = HashMap::new();
        for w in &words {
            *m.entry(w.clone()).or_default() += 1.0;
        }
        for p in words.windows(2) {
            *m.entry(format!("{} {}", p[0], p[1])).or_default() += 1.0;
        }
        m
    }
    let (x, y) = (counts(a), counts(b));
    if x.is_empty() && y.is_empty() {
        return 1.0;
    }
    let dot: f64 = x
        .iter()
        .map(|(k, v)| v * y.get(k).copied().unwrap_or(0.0))
        .sum();
    let norm = |m: &HashMap<String, f64>| m.values().map(|v| v * v).sum::<f64>().sqrt();
    let (nx, ny) = (norm(&x), norm(&y));
    if nx == 0.0 || ny == 0.0 {
        return 0.0;
    }
    (dot / (nx * ny)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_is_one_for_the_same_words_and_low_for_others() {
        assert!((similarity("The cat sat.", "the cat sat") - 1.0).abs() < 1e-9);
        assert!(similarity("revenue grew 12%", "the weather is fine") < 0.01);
        let s = similarity(
            "Revenue grew 12% in 2024, driven by cloud.",
            "Revenue grew 12% in 2024, driven by the cloud unit.",
        );
        assert!(s > 0.8 && s < 1.0, "{s}");
        assert_eq!(similarity("", ""), 1.0);
        assert_eq!(similarity("words", ""), 0.0);
    }

    #[test]
    fn ident_makes_keys_usable_in_cel() {
        assert_eq!(ident("decide"), "decide");
        assert_eq!(ident("verify-report.v2"), "verify_report_v2");
        assert_eq!(ident("3rd"), "_3rd");
    }
}
