//! Progressive refinement (`refine:`): passes run one after the other (broad, focused,
//! detailed), each narrowing the scope from the previous pass's result; a pass whose
//! `stop_when` holds ends the refinement early, and the later passes never run. See
//! `docs/patterns/refine.md`.
//!
//! ```yaml
//! - id: review
//!   reads: [question]
//!   refine:
//!     passes:
//!       - name: broad
//!         agent: scout
//!         prompt: "Map the literature on {{ question }}."
//!         stop_when: "size(review_broad.promising) == 0"
//!       - name: focused
//!         agent: analyst
//!         prompt: "Narrow to the strongest threads: {{ previous.promising | tojson }}"
//!       - name: detailed
//!         agent: expert
//!         prompt: "Write the detailed review of {{ previous.selected | tojson }}"
//!   output: review
//! ```
//!
//! expands into `review.broad -> review.focused -> review.detailed -> review`, with a
//! transition `review.broad -> review` when `stop_when` holds. Each pass writes its result to
//! `<step>_<pass>` (`review_broad`, ...), and its prompt sees the results of the earlier passes
//! (by key, and the one just before as `previous`). `review` is a generated function whose
//! output is the result of the last pass that ran.

use super::Expansion;
use super::common::{self, Shape, SyncStep};
use crate::registry::StepInput;
use crate::spec::{Loc, MergeRule, NextSpec, StepSpec};
use serde::Deserialize;
use serde_json::Value;

/// The `refine:` block of a step.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RefineSpec {
    /// The passes, in order (at least one).
    pub passes: Vec<PassSpec>,
}

/// One pass of a refinement.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PassSpec {
    /// The pass's name (letters, digits, `_`, `-`): its step is `<step>.<name>`, its result
    /// key `<step>_<name>`. Default `pass1`, `pass2`, ...
    #[serde(default)]
    pub name: Option<Loc<String>>,
    /// The agent of this pass.
    pub agent: Loc<String>,
    /// Its prompt, a template over the step's `reads`, the earlier passes' result keys and
    /// `previous` (the result of the pass just before; `none` in the first).
    pub prompt: Loc<String>,
    /// A CEL condition over state checked after this pass: when it holds, the refinement ends
    /// here (not allowed on the last pass).
    #[serde(default)]
    pub stop_when: Option<Loc<String>>,
}

impl RefineSpec {
    /// A refinement with no passes yet.
    pub fn new() -> Self {
        RefineSpec::default()
    }

    /// Add a pass.
    pub fn pass(mut self, pass: PassSpec) -> Self {
        self.passes.push(pass);
        self
    }
}

impl PassSpec {
    /// A pass called `name`: `agent` on `prompt`.
    pub fn new(name: &str, agent: &str, prompt: &str) -> Self {
        PassSpec {
            name: Some(Loc::new(name.to_string())),
            agent: Loc::new(agent.to_string()),
            prompt: Loc::new(prompt.to_string()),
            stop_when: None,
        }
    }

    /// End the refinement after this pass when the CEL condition holds.
    pub fn stop_when(mut self, condition: &str) -> Self {
        self.stop_when = Some(Loc::new(condition.to_string()));
        self
    }
}

/// The name of pass `i` (from 0).
fn pass_name(p: &PassSpec, i: usize) -> String {
    p.name
        .as_ref()
        .map_or_else(|| format!("pass{}", i + 1), |n| n.value.clone())
}

/// The result key of pass `name` in a refinement on step `id`.
pub fn pass_key(id: &str, name: &str) -> String {
    format!("{}_{}", common::ident(id), common::ident(name))
}

/// Expand the `refine:` block of `s` into ordinary steps.
pub fn expand_step(s: &StepSpec, x: &mut Expansion<'_>) {
    let Some(block) = &s.refine else { return };
    let r = &block.value;
    let pos = block.pos;
    let id = s.id.value.as_str();
    let first = r.passes.first().map_or_else(
        || format!("{id}.pass1"),
        |p| format!("{id}.{}", pass_name(p, 0)),
    );
    let shape = Shape::Loop {
        entry: &first,
        bound: "its passes (each runs once)",
    };
    let mut ok = common::check_fields(s, "refine", shape, x);
    ok &= common::check_not_target(s, "refine", shape, x);
    if r.passes.is_empty() {
        x.err(
            pos,
            id,
            "a refinement needs at least one pass under `passes`",
        );
        ok = false;
    }
    let names: Vec<String> = r
        .passes
        .iter()
        .enumerate()
        .map(|(i, p)| pass_name(p, i))
        .collect();
    let keys: Vec<String> = names.iter().map(|n| pass_key(id, n)).collect();
    let reads: Vec<String> = s.reads.0.iter().map(|r| r.value.clone()).collect();
    for (i, p) in r.passes.iter().enumerate() {
        let at = p.name.as_ref().and_then(|n| n.pos).or(p.agent.pos).or(pos);
        let name = &names[i];
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            x.err(
                at,
                id,
                format!("pass name `{name}`: use letters, digits, `_` and `-` only"),
            );
            ok = false;
        } else if names[..i]
            .iter()
            .any(|n| common::ident(n) == common::ident(name))
        {
            x.err(at, id, format!("two passes are called `{name}`"));
            ok = false;
        }
        ok &= common::agent(x, s, Some("agent"), &p.agent, pos).is_some();
        let mut allowed = reads.clone();
        allowed.extend(keys[..i].iter().cloned());
        allowed.push("previous".into());
        ok &= common::check_template(x, s, &format!("passes[{i}].prompt"), &p.prompt, &allowed);
        if let Some(w) = &p.stop_when {
            if i + 1 == r.passes.len() {
                x.err(
                    w.pos.or(at),
                    id,
                    format!(
                        "`stop_when` on the last pass (`{name}`) has no later pass to skip: remove it"
                    ),
                );
                ok = false;
            } else {
                ok &= common::check_expr(x, s, "stop_when", w, &keys);
            }
        }
    }
    if ok {
        for (i, k) in keys.iter().enumerate() {
            ok &= common::gen_key(
                x,
                s,
                shape,
                k,
                MergeRule::Replace,
                &format!("The result of pass `{}` of refinement `{id}`.", names[i]),
                pos,
            );
            if let Some((k, ks)) = x.spec.state.0.iter().find(|(d, _)| &d.value == k)
                && ks.default.is_some()
            {
                x.err(
                    k.pos,
                    id,
                    format!(
                        "state key `{}` holds the result of a pass and starts empty: remove its `default`",
                        k.value
                    ),
                );
                ok = false;
            }
        }
    }
    if !ok {
        x.steps.push(common::placeholder(s, shape));
        return;
    }

    let last = r.passes.len() - 1;
    for (i, p) in r.passes.iter().enumerate() {
        let step_id = format!("{id}.{}", names[i]);
        let previous = if i == 0 { "none" } else { keys[i - 1].as_str() };
        // `previous` is set on the template's first line, so line numbers stay as written.
        let prompt = format!("{{% set previous = {previous} %}}{}", p.prompt.value);
        let mut st = common::agent_step(
            s,
            &step_id,
            pos,
            &p.agent,
            Loc {
                value: prompt,
                pos: p.prompt.pos,
            },
            format!(
                "Refinement `{id}`, pass {} of {} (`{}`).",
                i + 1,
                r.passes.len(),
                names[i]
            ),
        );
        let earlier: Vec<&str> = keys[..i].iter().map(String::as_str).collect();
        st.reads = common::reads_plus(s, &earlier, pos);
        st.output = Some(Loc {
            value: keys[i].clone(),
            pos,
        });
        if i == 0 {
            st.needs = s.needs.clone();
            st.join = s.join.clone();
        }
        let mut branches = Vec::new();
        if let Some(w) = &p.stop_when {
            branches.push(common::branch(Some(w.clone()), id, pos));
        }
        let to = if i == last {
            id.to_string()
        } else {
            format!("{id}.{}", names[i + 1])
        };
        branches.push(common::branch(None, &to, pos));
        st.next = Some(NextSpec(branches));
        x.steps.push(st);
    }

    // The way out: the result of the last pass that ran.
    let mut exit = common::exit_step(s, None);
    exit.function = Some(Loc {
        value: "refine_result".into(),
        pos,
    });
    exit.builtin = Some(common::builtin(SyncStep({
        let keys = keys.clone();
        move |input: StepInput| {
            Ok(keys
                .iter()
                .rev()
                .filter_map(|k| input.state.get(k))
                .find(|v| !v.is_null())
                .cloned()
                .unwrap_or(Value::Null))
        }
    })));
    let all: Vec<&str> = keys.iter().map(String::as_str).collect();
    exit.reads = common::keys(&all, pos);
    x.steps.push(exit);
}
