//! Competitive best-of-n (`best_of:`): several agents (or one agent n times, or prompt
//! variants) produce candidates in parallel; a judge agent picks one with a structured verdict
//! `{winner, reasons}`; the winner's output is the step's output, and every candidate stays in
//! the state and the events. See `docs/patterns/best-of.md`.
//!
//! ```yaml
//! - id: message
//!   reads: [product]
//!   best_of:
//!     prompt: "Write the launch message for {{ product.name }}."
//!     candidates: [data_writer, emotion_writer, benefit_writer]
//!     judge: judge
//!   output: message
//! ```
//!
//! expands into `message.<candidate>` (agent steps, in parallel), `message.judge` (agent) and
//! `message` (function: the winner's output).

use super::Expansion;
use super::common::{self, Shape};
use crate::registry::{StepFn, StepFuture, StepInput};
use crate::spec::{Loc, MergeRule, OneOrMany, StepSpec};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// The `best_of:` block of a step.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BestOfSpec {
    /// The candidates: agent names, or `{id, agent, prompt}` (prompt variants of one agent).
    #[serde(default)]
    pub candidates: Vec<Loc<CandidateSpec>>,
    /// Instead of `candidates`: one agent asked `n` times (candidates `<agent>_1` ...).
    #[serde(default)]
    pub agent: Option<Loc<String>>,
    /// With `agent`: how many candidates.
    #[serde(default)]
    pub n: Option<Loc<u32>>,
    /// The task, a prompt template over the step's `reads` (a candidate's own prompt wins).
    #[serde(default)]
    pub prompt: Option<Loc<String>>,
    /// The judging agent; its `output_schema` has a `winner` property (a candidate id).
    pub judge: Loc<String>,
    /// What the judge is told before the candidates (default: pick the best one).
    #[serde(default)]
    pub judge_prompt: Option<Loc<String>>,
}

/// One candidate of a `best_of:` block.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CandidateSpec {
    /// Its id (default: the agent's name).
    pub id: Option<Loc<String>>,
    /// The agent producing it.
    pub agent: Loc<String>,
    /// Its own prompt template (default: the block's `prompt`).
    pub prompt: Option<Loc<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateFull {
    #[serde(default)]
    id: Option<Loc<String>>,
    agent: Loc<String>,
    #[serde(default)]
    prompt: Option<Loc<String>>,
}

impl<'de> Deserialize<'de> for CandidateSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CandidateSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an agent name or {id, agent, prompt}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CandidateSpec {
                    id: None,
                    agent: Loc::new(v.to_string()),
                    prompt: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let f = CandidateFull::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(CandidateSpec {
                    id: f.id,
                    agent: f.agent,
                    prompt: f.prompt,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl BestOfSpec {
    /// Candidates from these agents, judged by `judge`, all on `prompt`.
    pub fn new<I, S>(candidates: I, prompt: &str, judge: &str) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        BestOfSpec {
            candidates: candidates
                .into_iter()
                .map(|a| {
                    Loc::new(CandidateSpec {
                        agent: Loc::new(a.into()),
                        ..CandidateSpec::default()
                    })
                })
                .collect(),
            agent: None,
            n: None,
            prompt: Some(Loc::new(prompt.to_string())),
            judge: Loc::new(judge.to_string()),
            judge_prompt: None,
        }
    }

    /// `n` candidates from one agent, judged by `judge`.
    pub fn sampled(agent: &str, n: u32, prompt: &str, judge: &str) -> Self {
        BestOfSpec {
            candidates: Vec::new(),
            agent: Some(Loc::new(agent.to_string())),
            n: Some(Loc::new(n)),
            prompt: Some(Loc::new(prompt.to_string())),
            judge: Loc::new(judge.to_string()),
            judge_prompt: None,
        }
    }

    /// What the judge is told before the candidates.
    pub fn judge_prompt(mut self, prompt: &str) -> Self {
        self.judge_prompt = Some(Loc::new(prompt.to_string()));
        self
    }
}

/// A resolved candidate: (id, agent, its own prompt, position).
type Candidate = (
    String,
    Loc<String>,
    Option<Loc<String>>,
    Option<crate::spec::Pos>,
);

/// Expand the `best_of:` block of `s` into ordinary steps.
pub fn expand_step(s: &StepSpec, x: &mut Expansion<'_>) {
    let Some(block) = &s.best_of else { return };
    let b = &block.value;
    let pos = block.pos;
    let id = s.id.value.as_str();
    let shape = Shape::Fan { entry: None };
    let mut ok = common::check_fields(s, "best_of", shape, x);
    ok &= common::check_not_target(s, "best_of", shape, x);

    let mut cands: Vec<Candidate> = Vec::new();
    match (&b.agent, b.candidates.is_empty()) {
        (Some(a), true) => {
            let n = b.n.as_ref().map_or(0, |n| n.value);
            if n < 2 {
                x.err(
                    b.n.as_ref().and_then(|n| n.pos).or(a.pos).or(pos),
                    id,
                    format!("`agent` needs `n`: two or more candidates, not {n}"),
                );
                ok = false;
            }
            for i in 1..=n {
                cands.push((format!("{}_{i}", a.value), a.clone(), None, a.pos));
            }
        }
        (None, false) => {
            if let Some(n) = &b.n {
                x.err(
                    n.pos.or(pos),
                    id,
                    "`n` goes with `agent` (one agent asked n times), not with `candidates`",
                );
                ok = false;
            }
            for c in &b.candidates {
                let cid = c
                    .value
                    .id
                    .as_ref()
                    .map_or_else(|| c.value.agent.value.clone(), |i| i.value.clone());
                let agent = Loc {
                    value: c.value.agent.value.clone(),
                    pos: c.value.agent.pos.or(c.pos),
                };
                cands.push((cid, agent, c.value.prompt.clone(), c.pos));
            }
            if cands.len() < 2 {
                x.err(
                    pos,
                    id,
                    format!(
                        "best-of-n needs at least two candidates, this one has {}",
                        cands.len()
                    ),
                );
                ok = false;
            }
        }
        (Some(a), false) => {
            x.err(
                a.pos.or(pos),
                id,
                "give either `candidates` or `agent` with `n`, not both",
            );
            ok = false;
        }
        (None, true) => {
            x.err(
                pos,
                id,
                "best-of-n needs `candidates` (agents, or {id, agent, prompt}) or `agent` with `n`",
            );
            ok = false;
        }
    }
    for (i, (cid, agent, prompt, at)) in cands.iter().enumerate() {
        let at = at.or(pos);
        if cid.trim().is_empty() {
            x.err(at, id, "a candidate id cannot be empty");
            ok = false;
        } else if cid == "judge" {
            x.err(
                at,
                id,
                "a candidate cannot be called `judge` (the judge's step is `<step>.judge`): give it an `id`",
            );
            ok = false;
        } else if cands[..i]
            .iter()
            .any(|(o, ..)| common::ident(o) == common::ident(cid))
        {
            x.err(
                at,
                id,
                format!(
                    "candidate id `{cid}` is used twice: give each candidate of the same agent its own `id`"
                ),
            );
            ok = false;
        }
        if prompt.is_none() && b.prompt.is_none() {
            x.err(
                at,
                id,
                format!("candidate `{cid}` has no prompt: set the block's `prompt` or its own"),
            );
            ok = false;
        }
        if (i == 0 || b.agent.is_none()) && common::agent(x, s, None, agent, pos).is_none() {
            ok = false;
        }
    }
    match common::agent(x, s, None, &b.judge, pos) {
        None => ok = false,
        Some(j) => match &j.output_schema {
            None => {
                x.err(
                    b.judge.pos.or(pos),
                    id,
                    format!(
                        "judge `{}` has no `output_schema`: give it one with a `winner` property (the id of the chosen candidate) and `reasons`",
                        b.judge.value
                    ),
                );
                ok = false;
            }
            Some(schema) if common::schema_lacks(&schema.value, "winner") => {
                x.err(
                    b.judge.pos.or(pos),
                    id,
                    format!(
                        "judge `{}`: its `output_schema` has no `winner` property (the id of the chosen candidate)",
                        b.judge.value
                    ),
                );
                ok = false;
            }
            Some(_) => {}
        },
    }

    let sid = common::ident(id);
    let verdict_key = format!("{sid}_verdict");
    let keys: Vec<String> = cands
        .iter()
        .map(|(cid, ..)| format!("{sid}_cand_{}", common::ident(cid)))
        .collect();
    for ((cid, ..), key) in cands.iter().zip(&keys) {
        common::gen_key(
            x,
            s,
            shape,
            key,
            MergeRule::Replace,
            &format!("Candidate `{cid}` of best-of `{id}`."),
            pos,
        );
    }
    common::gen_key(
        x,
        s,
        shape,
        &verdict_key,
        MergeRule::Replace,
        &format!("The judge's verdict in best-of `{id}`: winner and reasons."),
        pos,
    );

    // Declared even when the block is wrong, so that readers of the keys add no errors.
    if !ok {
        x.steps.push(common::placeholder(s, shape));
        return;
    }

    let mut cand_ids = Vec::new();
    for ((cid, agent, prompt, _), key) in cands.iter().zip(&keys) {
        let step_id = format!("{id}.{cid}");
        let prompt = prompt
            .clone()
            .or_else(|| b.prompt.clone())
            .unwrap_or_default();
        let st = common::agent_step(
            s,
            &step_id,
            pos,
            agent,
            prompt,
            format!("Candidate `{cid}` (agent `{}`).", agent.value),
        );
        x.steps.push(common::first_step(s, st, key, pos));
        cand_ids.push(step_id);
    }

    // The judge sees the task and every candidate, by id.
    let mut text = String::new();
    match &b.judge_prompt {
        Some(p) => text.push_str(p.value.trim_end()),
        None => text.push_str("Pick the best candidate for the task below."),
    }
    if let Some(p) = &b.prompt {
        text.push_str("\n\nTask given to the candidates:\n");
        text.push_str(p.value.trim_end());
    }
    text.push_str("\n\nCandidates:\n");
    for ((cid, ..), key) in cands.iter().zip(&keys) {
        text.push_str(&format!("\n### Candidate `{cid}`\n{}\n", common::show(key)));
    }
    let ids: Vec<&str> = cands.iter().map(|(c, ..)| c.as_str()).collect();
    text.push_str(&format!(
        "\nReply with `winner`: the id of the best candidate (one of: {}), and your `reasons`.",
        ids.join(", ")
    ));
    let judge_prompt = Loc {
        value: text,
        pos: b.judge_prompt.as_ref().and_then(|p| p.pos).or(pos),
    };
    let judge_id = format!("{id}.judge");
    let mut judge = common::agent_step(
        s,
        &judge_id,
        pos,
        &b.judge,
        judge_prompt,
        format!("Judge of best-of `{id}`."),
    );
    judge.needs = OneOrMany(cand_ids.iter().map(|c| Loc::from(c.as_str())).collect());
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    judge.reads = s.reads.clone();
    judge.reads.0.extend(common::keys(&key_refs, pos).0);
    judge.output = Some(Loc {
        value: verdict_key.clone(),
        pos,
    });
    x.steps.push(judge);

    let mut pick = common::exit_step(s, Some("best_of_winner"));
    pick.needs = common::keys(&[&judge_id], pos);
    pick.reads = common::keys(&[&[verdict_key.as_str()], &key_refs[..]].concat(), pos);
    pick.builtin = Some(common::builtin(PickFn {
        candidates: cands
            .iter()
            .map(|(c, ..)| c.clone())
            .zip(keys.iter().cloned())
            .collect(),
        verdict_key,
    }));
    x.steps.push(pick);
}

/// The candidate the judge picked: the id in `verdict.winner`, matched exactly, else trimmed
/// and case-insensitively, against `candidates`.
pub fn winner<'a>(verdict: &Value, candidates: &'a [String]) -> Result<&'a str, String> {
    let list = candidates.join(", ");
    let Some(w) = verdict.get("winner").and_then(Value::as_str) else {
        return Err(format!(
            "the judge's verdict has no `winner` string naming a candidate ({list}): {verdict}"
        ));
    };
    candidates
        .iter()
        .find(|c| c.as_str() == w)
        .or_else(|| candidates.iter().find(|c| c.eq_ignore_ascii_case(w.trim())))
        .map(String::as_str)
        .ok_or_else(|| format!("the judge picked `{w}`, which is not a candidate ({list})"))
}

/// The generated exit step: the winner's output.
struct PickFn {
    /// (candidate id, state key).
    candidates: Vec<(String, String)>,
    verdict_key: String,
}

impl StepFn for PickFn {
    fn call(&self, input: StepInput) -> StepFuture {
        let verdict = input
            .state
            .get(&self.verdict_key)
            .cloned()
            .unwrap_or(Value::Null);
        let ids: Vec<String> = self.candidates.iter().map(|(c, _)| c.clone()).collect();
        let out = winner(&verdict, &ids).map(|w| {
            self.candidates
                .iter()
                .find(|(c, _)| c == w)
                .and_then(|(_, k)| input.state.get(k).cloned())
                .unwrap_or(Value::Null)
        });
        StepFuture::Ready(out)
    }
}
