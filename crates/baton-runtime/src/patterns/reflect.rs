//! Reflection / verification (`reflect:`): a producer drafts from the sources, a verifier
//! checks the draft against them and answers `{passed, reasons}`; a rejected draft goes back to
//! the producer with the reasons, until one passes or `max_rounds` drafts were made. What
//! happens at the bound is explicit (`on_bound`). See `docs/patterns/reflect.md`.
//!
//! ```yaml
//! - id: report
//!   reads: [question, sources]
//!   reflect:
//!     producer: writer
//!     prompt: "Answer {{ question }} from these sources only: {{ sources | tojson }}"
//!     verifier: checker          # its output_schema has a required boolean `passed`
//!     check: "..."               # optional: the verifier's task (default: the producer's)
//!     max_rounds: 3              # drafts at most; default 3
//!     on_bound: fail             # or accept_last
//!     converge: 0.98             # optional: stop when two drafts in a row are this alike
//!   output: report
//! ```
//!
//! expands into
//!
//! ```text
//! report.begin -> report.producer -> report.verifier -> report.review --(revise)--> report.producer
//!                                                                     \--> report
//! ```
//!
//! - `report.begin`: a no-op with the step's `needs` and `join`;
//! - `report.producer`: the producer's turn (its prompt, plus the rejected draft and the
//!   verifier's reasons after the first round); appends to `report_drafts`;
//! - `report.verifier`: the verifier's turn on the latest draft; appends its verdict to
//!   `report_verdicts`;
//! - `report.review`: a generated function that reads the verdict and decides: `passed`,
//!   `revise` (back to the producer), or, at the bound or when the drafts stopped changing,
//!   `rejected` (`on_bound: fail`) or `bound`/`converged` (`accept_last`); it writes
//!   `report_review` (`{round, of, passed, reasons, outcome, similarity, stopped}`);
//! - `report`: a generated function whose output is the accepted draft (the step's `output`,
//!   `writes` and `next` live here); after a `rejected` review it fails, with the verifier's
//!   last reasons, under the step's `on_error`.

use super::Expansion;
use super::common::{self, Shape, SyncStep};
use crate::registry::StepInput;
use crate::spec::{Loc, MergeRule, NextSpec, StepSpec};
use serde::Deserialize;
use serde_json::{Value, json};

/// Drafts at most when the block gives no `max_rounds`.
pub const DEFAULT_MAX_ROUNDS: u32 = 3;

/// What happens when the verifier has not passed a draft by the bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBound {
    /// The step fails with the verifier's last reasons (handled by its `on_error`).
    #[default]
    Fail,
    /// The last draft is accepted unverified; `<step>_review.outcome` says so.
    AcceptLast,
}

impl OnBound {
    /// The value as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            OnBound::Fail => "fail",
            OnBound::AcceptLast => "accept_last",
        }
    }
}

/// The `reflect:` block of a step.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReflectSpec {
    /// The agent that writes the drafts.
    pub producer: Loc<String>,
    /// The producer's task, a prompt template over the step's `reads` (put the sources in it).
    pub prompt: Loc<String>,
    /// The agent that checks each draft. Its `output_schema` must have a required boolean
    /// `passed` (and should have `reasons`, a list of strings).
    pub verifier: Loc<String>,
    /// The verifier's task, a prompt template over the step's `reads` (default: the producer's
    /// task, so the verifier sees the same sources). The draft is appended to it.
    #[serde(default)]
    pub check: Option<Loc<String>>,
    /// Drafts at most (producer turns; each is verified); at least 1, default 3.
    #[serde(default)]
    pub max_rounds: Option<Loc<u32>>,
    /// At the bound: `fail` (default) or `accept_last`.
    #[serde(default)]
    pub on_bound: Option<Loc<OnBound>>,
    /// Stop before the bound when two successive drafts are at least this alike (0 < x <= 1;
    /// word and word-pair cosine similarity, see `docs/patterns/reflect.md`): the producer has
    /// stopped changing its draft, so more rounds will not help. Then `on_bound` applies.
    #[serde(default)]
    pub converge: Option<Loc<f64>>,
}

impl ReflectSpec {
    /// `producer` drafts from `prompt`; `verifier` checks; the defaults otherwise.
    pub fn new(producer: &str, prompt: &str, verifier: &str) -> Self {
        ReflectSpec {
            producer: Loc::new(producer.to_string()),
            prompt: Loc::new(prompt.to_string()),
            verifier: Loc::new(verifier.to_string()),
            ..ReflectSpec::default()
        }
    }

    /// The verifier's own task (a prompt template over the step's reads).
    pub fn check(mut self, prompt: &str) -> Self {
        self.check = Some(Loc::new(prompt.to_string()));
        self
    }

    /// At most `n` drafts.
    pub fn max_rounds(mut self, n: u32) -> Self {
        self.max_rounds = Some(Loc::new(n));
        self
    }

    /// What happens at the bound.
    pub fn on_bound(mut self, b: OnBound) -> Self {
        self.on_bound = Some(Loc::new(b));
        self
    }

    /// Stop when two successive drafts are at least `threshold` alike.
    pub fn converge(mut self, threshold: f64) -> Self {
        self.converge = Some(Loc::new(threshold));
        self
    }
}

/// The state keys a reflection on step `id` generates: `(drafts, verdicts, review)`.
pub fn keys(id: &str) -> (String, String, String) {
    let p = common::ident(id);
    (
        format!("{p}_drafts"),
        format!("{p}_verdicts"),
        format!("{p}_review"),
    )
}

/// Whether an agent's output schema promises a boolean `passed`.
fn has_passed(schema: &Value) -> bool {
    let typed = schema
        .pointer("/properties/passed/type")
        .is_some_and(|t| t == "boolean");
    let required = schema
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|f| f == "passed"));
    typed && required
}

/// Decide after the verifier's verdict on the latest of `drafts` (the generated review step):
/// the review record written to `<step>_review`, with its `outcome`:
///
/// - `passed`: the verifier passed the draft;
/// - `revise`: it did not, and there is room for another draft (back to the producer);
/// - at the bound, or when the last two drafts are `converge` alike: `rejected` with
///   `on_bound: fail` (the pattern step then fails, see [`accept`]), else `bound` or
///   `converged` (the last draft is accepted unverified). `stopped` says why it stopped.
///
/// `Err` only for a verdict without a boolean `passed`.
pub fn review(
    verdict: &Value,
    drafts: &[Value],
    max_rounds: u32,
    on_bound: OnBound,
    converge: Option<f64>,
) -> Result<Value, String> {
    let round = drafts.len();
    let passed = verdict
        .get("passed")
        .and_then(Value::as_bool)
        .ok_or_else(|| format!("the verifier's answer has no boolean `passed`: {verdict}"))?;
    let reasons = match verdict.get("reasons") {
        Some(Value::Array(a)) => a.clone(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other.clone()],
    };
    let similarity = match (converge, drafts) {
        (Some(_), [.., a, b]) => Some(common::similarity(&common::text_of(a), &common::text_of(b))),
        _ => None,
    };
    let converged = matches!((converge, similarity), (Some(t), Some(s)) if s >= t);
    let at_bound = round as u32 >= max_rounds;
    let mut stopped = None;
    let outcome = if passed {
        "passed"
    } else if !at_bound && !converged {
        "revise"
    } else {
        stopped = Some(if converged {
            format!(
                "drafts {} and {round} are {:.3} alike (converge {}): the producer stopped changing its draft",
                round.saturating_sub(1),
                similarity.unwrap_or(1.0),
                converge.unwrap_or(1.0)
            )
        } else {
            format!("{round} draft(s) made, the bound (max_rounds {max_rounds})")
        });
        match (on_bound, converged) {
            (OnBound::Fail, _) => "rejected",
            (OnBound::AcceptLast, true) => "converged",
            (OnBound::AcceptLast, false) => "bound",
        }
    };
    let mut out = json!({
        "round": round,
        "of": max_rounds,
        "passed": passed,
        "reasons": reasons,
        "outcome": outcome,
    });
    if let Some(o) = out.as_object_mut() {
        if let Some(s) = similarity {
            o.insert("similarity".into(), json!((s * 1000.0).round() / 1000.0));
        }
        if let Some(why) = stopped {
            o.insert("stopped".into(), json!(why));
        }
    }
    Ok(out)
}

/// The pattern step's output (the generated `<step>` function): the last draft, unless the
/// review `rejected` it, in which case the step fails with the verifier's last reasons.
pub fn accept(review: &Value, drafts: &[Value], verifier: &str) -> Result<Value, String> {
    if review["outcome"] == "rejected" {
        let reasons: Vec<String> = review["reasons"]
            .as_array()
            .map(|a| a.iter().map(common::text_of).collect())
            .unwrap_or_default();
        return Err(format!(
            "verifier `{verifier}` did not pass the draft: {}; its last reasons: {}",
            review["stopped"]
                .as_str()
                .unwrap_or("the bound was reached"),
            if reasons.is_empty() {
                "none given".to_string()
            } else {
                reasons.join("; ")
            }
        ));
    }
    drafts
        .last()
        .cloned()
        .ok_or_else(|| "no draft was made".to_string())
}

/// Expand the `reflect:` block of `s` into ordinary steps.
pub fn expand_step(s: &StepSpec, x: &mut Expansion<'_>) {
    let Some(block) = &s.reflect else { return };
    let r = &block.value;
    let pos = block.pos;
    let id = s.id.value.as_str();
    let begin = format!("{id}.begin");
    let shape = Shape::Loop {
        entry: &begin,
        bound: "max_rounds",
    };
    let mut ok = common::check_fields(s, "reflect", shape, x);
    ok &= common::check_not_target(s, "reflect", shape, x);
    ok &= common::agent(x, s, Some("producer"), &r.producer, pos).is_some();
    match common::agent(x, s, Some("verifier"), &r.verifier, pos) {
        None => ok = false,
        Some(a)
            if !a
                .output_schema
                .as_ref()
                .is_some_and(|sc| has_passed(&sc.value)) =>
        {
            x.err(
                r.verifier.pos.or(pos),
                id,
                format!(
                    "verifier `{}` must answer with a verdict: give the agent an `output_schema` with a required boolean `passed` (and `reasons`, a list of strings)",
                    r.verifier.value
                ),
            );
            ok = false;
        }
        Some(_) => {}
    }
    let max_rounds = match &r.max_rounds {
        Some(m) if m.value == 0 => {
            x.err(
                m.pos.or(pos),
                id,
                "`max_rounds` must be at least 1 (each round is one draft and its check)",
            );
            ok = false;
            1
        }
        Some(m) => m.value,
        None => DEFAULT_MAX_ROUNDS,
    };
    let on_bound = r.on_bound.as_ref().map(|b| b.value).unwrap_or_default();
    let converge = match &r.converge {
        Some(c) if !(c.value > 0.0 && c.value <= 1.0) => {
            x.err(
                c.pos.or(pos),
                id,
                format!(
                    "`converge` is a similarity between 0 (exclusive) and 1, not {}",
                    c.value
                ),
            );
            ok = false;
            None
        }
        Some(c) => Some(c.value),
        None => None,
    };
    let reads: Vec<String> = s.reads.0.iter().map(|r| r.value.clone()).collect();
    let prompt_ok = common::check_template(x, s, "prompt", &r.prompt, &reads);
    ok &= prompt_ok;
    if let Some(c) = &r.check {
        ok &= common::check_template(x, s, "check", c, &reads);
    }
    let (drafts, verdicts, review_key) = keys(id);
    ok &= common::gen_key(
        x,
        s,
        shape,
        &drafts,
        MergeRule::Append,
        &format!(
            "The drafts of `{}` in reflection `{id}`, in order.",
            r.producer.value
        ),
        pos,
    );
    ok &= common::gen_key(
        x,
        s,
        shape,
        &verdicts,
        MergeRule::Append,
        &format!(
            "The verdicts of `{}` in reflection `{id}`, one per draft.",
            r.verifier.value
        ),
        pos,
    );
    ok &= common::gen_key(
        x,
        s,
        shape,
        &review_key,
        MergeRule::Replace,
        &format!(
            "The latest review of reflection `{id}`: {{round, of, passed, reasons, outcome, similarity}}."
        ),
        pos,
    );
    if !ok {
        x.steps.push(common::placeholder(s, shape));
        return;
    }

    // The rounds are counted by the review; `max_visits` is a backstop that leaves room for
    // the step's `retries` (a retried turn is another visit).
    let visits = max_rounds.saturating_mul(s.retries.unwrap_or(0).saturating_add(1));
    let producer_id = format!("{id}.producer");
    let verifier_id = format!("{id}.verifier");
    let review_id = format!("{id}.review");
    let show_last = common::show(&format!("({drafts} | last)"));

    // The way in.
    let mut entry = common::entry_step(s, begin, pos, format!("Reflection `{id}` begins."));
    entry.next = Some(NextSpec(vec![common::branch(None, &producer_id, pos)]));
    x.steps.push(entry);

    // The producer: its task, and after a rejection the draft and the reasons.
    let producer_prompt = format!(
        "{task}{{% if {review_key} %}}\n\nYour previous draft (round {{{{ {review_key}.round }}}} of {max_rounds}) did not pass verification. The verifier's reasons:\n{{% for r in {review_key}.reasons %}}- {{{{ r }}}}\n{{% endfor %}}\nYour previous draft:\n{show_last}\n\nWrite a new draft that fixes every reason, using only the sources.{{% endif %}}",
        task = r.prompt.value.trim_end()
    );
    let mut producer = common::agent_step(
        s,
        &producer_id,
        pos,
        &r.producer,
        Loc {
            value: producer_prompt,
            pos: r.prompt.pos,
        },
        format!("Reflection `{id}`: `{}` drafts.", r.producer.value),
    );
    producer.reads = common::reads_plus(s, &[&drafts, &review_key], pos);
    producer.output = Some(Loc {
        value: drafts.clone(),
        pos,
    });
    producer.max_visits = Some(visits);
    producer.next = Some(NextSpec(vec![common::branch(None, &verifier_id, pos)]));
    x.steps.push(producer);

    // The verifier: its task (or the producer's), then the draft.
    let (task, task_pos) = match &r.check {
        Some(c) => (c.value.trim_end().to_string(), c.pos),
        None => (
            format!(
                "A producer was given this task:\n\n{}\n\nCheck its draft against the sources in the task: every claim must be supported by them.",
                r.prompt.value.trim_end()
            ),
            r.prompt.pos,
        ),
    };
    let verifier_prompt = format!(
        "{task}\n\nThe draft to verify (round {{{{ {drafts} | length }}}} of {max_rounds}):\n{show_last}\n\nAnswer with `passed` (true only if the draft holds up against the sources) and `reasons` (each problem found, one item each; empty when it passes)."
    );
    let mut verifier = common::agent_step(
        s,
        &verifier_id,
        pos,
        &r.verifier,
        Loc {
            value: verifier_prompt,
            pos: task_pos,
        },
        format!(
            "Reflection `{id}`: `{}` checks the draft.",
            r.verifier.value
        ),
    );
    verifier.reads = common::reads_plus(s, &[&drafts], pos);
    verifier.output = Some(Loc {
        value: verdicts.clone(),
        pos,
    });
    verifier.max_visits = Some(visits);
    verifier.next = Some(NextSpec(vec![common::branch(None, &review_id, pos)]));
    x.steps.push(verifier);

    // The review: passed, revise, or the bound.
    let mut rev = common::step(
        review_id,
        pos,
        format!(
            "Reflection `{id}`: passed, back to the producer, or the bound (on_bound: {}).",
            on_bound.as_str()
        ),
    );
    rev.function = Some(Loc {
        value: "reflect_review".into(),
        pos,
    });
    rev.builtin = Some(common::builtin(SyncStep({
        let (drafts, verdicts) = (drafts.clone(), verdicts.clone());
        move |input: StepInput| {
            let verdict = common::last_of(&input, &verdicts)?;
            let list = input
                .state
                .get(&drafts)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            review(&verdict, &list, max_rounds, on_bound, converge)
        }
    })));
    rev.reads = common::keys(&[&drafts, &verdicts], pos);
    rev.output = Some(Loc {
        value: review_key.clone(),
        pos,
    });
    rev.max_visits = Some(max_rounds);
    rev.on_error = s.on_error.clone();
    rev.impact = s.impact.clone();
    rev.next = Some(NextSpec(vec![
        common::branch(
            Some(Loc {
                value: format!("{review_key}.outcome == 'revise'"),
                pos,
            }),
            &producer_id,
            pos,
        ),
        common::branch(None, id, pos),
    ]));
    x.steps.push(rev);

    // The way out: the accepted draft.
    let mut exit = common::exit_step(s, None);
    exit.function = Some(Loc {
        value: "reflect_accept".into(),
        pos,
    });
    exit.builtin = Some(common::builtin(SyncStep({
        let (drafts, review_key) = (drafts.clone(), review_key.clone());
        let verifier = r.verifier.value.clone();
        move |input: StepInput| {
            let list = input
                .state
                .get(&drafts)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let review = input.state.get(&review_key).cloned().unwrap_or(Value::Null);
            accept(&review, &list, &verifier)
        }
    })));
    exit.reads = common::keys(&[&drafts, &review_key], pos);
    x.steps.push(exit);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(passed: bool, reasons: &[&str]) -> Value {
        json!({"passed": passed, "reasons": reasons})
    }

    #[test]
    fn review_passes_revises_and_bounds() {
        let one = [json!("draft one")];
        let two = [json!("draft one"), json!("draft two, different words")];
        let r = review(&v(true, &[]), &one, 3, OnBound::Fail, None).unwrap();
        assert_eq!(r["outcome"], "passed");
        assert_eq!(accept(&r, &one, "checker").unwrap(), "draft one");
        let r = review(&v(false, &["x"]), &one, 3, OnBound::Fail, None).unwrap();
        assert_eq!(
            (r["outcome"].as_str(), r["round"].as_u64()),
            (Some("revise"), Some(1))
        );
        let r = review(
            &v(false, &["unsupported figure"]),
            &two,
            2,
            OnBound::Fail,
            None,
        )
        .unwrap();
        assert_eq!(r["outcome"], "rejected");
        let e = accept(&r, &two, "checker").unwrap_err();
        assert_eq!(
            e,
            "verifier `checker` did not pass the draft: 2 draft(s) made, the bound (max_rounds 2); its last reasons: unsupported figure"
        );
        let r = review(&v(false, &["x"]), &two, 2, OnBound::AcceptLast, None).unwrap();
        assert_eq!(r["outcome"], "bound");
        assert_eq!(
            accept(&r, &two, "checker").unwrap(),
            "draft two, different words"
        );
    }

    #[test]
    fn review_stops_when_drafts_converge() {
        let same = [json!("Revenue was 10M."), json!("Revenue was 10M.")];
        let r = review(&v(false, &["x"]), &same, 5, OnBound::Fail, Some(0.9)).unwrap();
        assert_eq!(r["outcome"], "rejected");
        let e = accept(&r, &same, "checker").unwrap_err();
        assert!(
            e.contains("drafts 1 and 2 are 1.000 alike (converge 0.9)"),
            "{e}"
        );
        let r = review(&v(false, &["x"]), &same, 5, OnBound::AcceptLast, Some(0.9)).unwrap();
        assert_eq!(
            (r["outcome"].as_str(), r["similarity"].as_f64()),
            (Some("converged"), Some(1.0))
        );
        let other = [
            json!("Revenue was 10M."),
            json!("Costs fell by a third in Q2."),
        ];
        let r = review(&v(false, &["x"]), &other, 5, OnBound::Fail, Some(0.9)).unwrap();
        assert_eq!(r["outcome"], "revise");
    }

    #[test]
    fn a_verdict_without_passed_fails() {
        let e = review(&json!({"ok": true}), &[json!("d")], 3, OnBound::Fail, None).unwrap_err();
        assert!(e.contains("no boolean `passed`"), "{e}");
    }
}
