//! Debate (`debate:`): a pro and a contra agent argue for a bounded number of rounds; an
//! arbitrator reads the whole transcript, decides and explains. See `docs/patterns/debate.md`.
//!
//! ```yaml
//! - id: decide
//!   reads: [target]
//!   debate:
//!     topic: "Should we acquire {{ target.company }}?"
//!     pro: bull
//!     contra: bear
//!     arbitrator: judge
//!     rounds: 3                                  # default 2
//!     stop_when: "decide_round.contra.concedes"  # optional CEL, checked after each round
//!   output: decision
//! ```
//!
//! expands into
//!
//! ```text
//! decide.begin -> decide.pro -> decide.contra -> decide.round --(round < 3)--> decide.pro
//!   (needs)                                            \--(stop_when, or round 3)--> decide.arbitrator
//! decide.arbitrator ==needs==> decide
//! ```
//!
//! - `decide.begin`: a no-op with the step's `needs` and `join` (the way in);
//! - `decide.pro`, `decide.contra`: the two sides' turns (agent steps, `max_visits: rounds`,
//!   times `retries + 1`),
//!   appending their arguments to `decide_pro` and `decide_contra`;
//! - `decide.round`: a generated function that appends the round's two arguments, tagged with
//!   side, agent and round, to `decide_transcript`, and writes `decide_round`
//!   (`{round, of, pro, contra}`); its transitions end the debate when `stop_when` holds or the
//!   last round is done, and start the next round otherwise;
//! - `decide.arbitrator`: the arbitrator's turn over the transcript; writes the step's
//!   `output`/`writes`;
//! - `decide`: a no-op that needs the arbitrator (the way out: `needs: [decide]` waits for the
//!   decision; the step's `next` leaves from here).

use super::Expansion;
use super::common::{self, Shape, SyncStep};
use crate::registry::StepInput;
use crate::spec::{Loc, MergeRule, NextSpec, StepSpec};
use serde::Deserialize;
use serde_json::json;

/// Rounds when the block gives none.
pub const DEFAULT_ROUNDS: u32 = 2;

/// The `debate:` block of a step.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DebateSpec {
    /// The question, a prompt template over the step's `reads`.
    pub topic: Loc<String>,
    /// The agent arguing for.
    pub pro: Loc<String>,
    /// The agent arguing against.
    pub contra: Loc<String>,
    /// The agent that reads the transcript, decides and explains.
    pub arbitrator: Loc<String>,
    /// Rounds (each: one pro turn, then one contra turn); at least 1, default 2. The debate
    /// never runs more.
    #[serde(default)]
    pub rounds: Option<Loc<u32>>,
    /// A CEL condition over state checked after each round; when it holds, the debate ends
    /// early and the arbitrator decides. It may use `<step>_round`, `<step>_transcript`,
    /// `<step>_pro` and `<step>_contra`.
    #[serde(default)]
    pub stop_when: Option<Loc<String>>,
}

impl DebateSpec {
    /// A debate on `topic` between `pro` and `contra`, decided by `arbitrator`, with the
    /// default number of rounds.
    pub fn new(topic: &str, pro: &str, contra: &str, arbitrator: &str) -> Self {
        DebateSpec {
            topic: Loc::new(topic.to_string()),
            pro: Loc::new(pro.to_string()),
            contra: Loc::new(contra.to_string()),
            arbitrator: Loc::new(arbitrator.to_string()),
            rounds: None,
            stop_when: None,
        }
    }

    /// Argue for `n` rounds.
    pub fn rounds(mut self, n: u32) -> Self {
        self.rounds = Some(Loc::new(n));
        self
    }

    /// End early, after a round, when the CEL condition holds.
    pub fn stop_when(mut self, condition: &str) -> Self {
        self.stop_when = Some(Loc::new(condition.to_string()));
        self
    }
}

/// The state keys a debate on step `id` generates: `(pro, contra, transcript, round)`.
pub fn keys(id: &str) -> (String, String, String, String) {
    let p = common::ident(id);
    (
        format!("{p}_pro"),
        format!("{p}_contra"),
        format!("{p}_transcript"),
        format!("{p}_round"),
    )
}

/// Expand the `debate:` block of `s` into ordinary steps.
pub fn expand_step(s: &StepSpec, x: &mut Expansion<'_>) {
    let Some(block) = &s.debate else { return };
    let d = &block.value;
    let pos = block.pos;
    let id = s.id.value.as_str();
    let begin = format!("{id}.begin");
    let shape = Shape::Loop {
        entry: &begin,
        bound: "rounds",
    };
    let mut ok = common::check_fields(s, "debate", shape, x);
    ok &= common::check_not_target(s, "debate", shape, x);
    for (role, name) in [
        ("pro", &d.pro),
        ("contra", &d.contra),
        ("arbitrator", &d.arbitrator),
    ] {
        ok &= common::agent(x, s, Some(role), name, pos).is_some();
    }
    let rounds = match &d.rounds {
        Some(r) if r.value == 0 => {
            x.err(
                r.pos.or(pos),
                id,
                "`rounds` must be at least 1 (each round is one pro and one contra turn)",
            );
            ok = false;
            1
        }
        Some(r) => r.value,
        None => DEFAULT_ROUNDS,
    };
    let (pro_key, contra_key, transcript, round_key) = keys(id);
    let generated = [
        pro_key.clone(),
        contra_key.clone(),
        transcript.clone(),
        round_key.clone(),
    ];
    let reads: Vec<String> = s.reads.0.iter().map(|r| r.value.clone()).collect();
    let topic_ok = common::check_template(x, s, "topic", &d.topic, &reads);
    ok &= topic_ok;
    if let Some(w) = &d.stop_when {
        ok &= common::check_expr(x, s, "stop_when", w, &generated);
    }
    let described = [
        (
            &pro_key,
            MergeRule::Append,
            format!(
                "The arguments of `{}` (pro) in debate `{id}`, one per round.",
                d.pro.value
            ),
        ),
        (
            &contra_key,
            MergeRule::Append,
            format!(
                "The arguments of `{}` (contra) in debate `{id}`, one per round.",
                d.contra.value
            ),
        ),
        (
            &transcript,
            MergeRule::Append,
            format!("The transcript of debate `{id}`: {{round, side, agent, argument}} in order."),
        ),
        (
            &round_key,
            MergeRule::Replace,
            format!("The latest round of debate `{id}`: {{round, of, pro, contra}}."),
        ),
    ];
    for (k, rule, desc) in &described {
        ok &= common::gen_key(x, s, shape, k, *rule, desc, pos);
    }
    if !ok {
        x.steps.push(common::placeholder(s, shape));
        return;
    }

    // The rounds are counted by `decide.round`'s transitions; `max_visits` is a backstop that
    // leaves room for the step's `retries` (a retried turn is another visit).
    let visits = rounds.saturating_mul(s.retries.unwrap_or(0).saturating_add(1));
    let pro_id = format!("{id}.pro");
    let contra_id = format!("{id}.contra");
    let round_id = format!("{id}.round");
    let arb_id = format!("{id}.arbitrator");
    // Trailing blank lines of a block scalar would only widen the gap before the instructions.
    let topic = Loc {
        value: d.topic.value.trim_end().to_string(),
        pos: d.topic.pos,
    };
    let show_arg = common::show("a.argument");
    let so_far = format!(
        "{{% if {t} %}}\nThe debate so far:\n{{% for a in {t} %}}[round {{{{ a.round }}}}, {{{{ a.side }}}}] {show_arg}\n{{% endfor %}}{{% endif %}}",
        t = transcript
    );
    let round_no = format!("{{{{ ({transcript} | length) // 2 + 1 }}}}");
    let prompt = |body: String| Loc {
        value: body,
        pos: topic.pos,
    };

    // The way in.
    let mut entry = common::entry_step(s, begin.clone(), pos, format!("Debate `{id}` begins."));
    entry.next = Some(NextSpec(vec![common::branch(None, &pro_id, pos)]));
    x.steps.push(entry);

    // Pro.
    let pro_prompt = format!(
        "{topic}\n\nYou argue FOR (the pro side) in a debate of {rounds} round(s) that an arbitrator decides. This is round {round_no} of {rounds}.\n{so_far}\nMake your strongest case for, and answer the contra side's latest points.",
        topic = topic.value
    );
    let mut pro = common::agent_step(
        s,
        &pro_id,
        pos,
        &d.pro,
        prompt(pro_prompt),
        format!("Debate `{id}`: `{}` argues for.", d.pro.value),
    );
    pro.reads = common::reads_plus(s, &[&transcript], pos);
    pro.output = Some(Loc {
        value: pro_key.clone(),
        pos,
    });
    pro.max_visits = Some(visits);
    pro.next = Some(NextSpec(vec![common::branch(None, &contra_id, pos)]));
    x.steps.push(pro);

    // Contra.
    let show_pro = common::show(&format!("({pro_key} | last)"));
    let contra_prompt = format!(
        "{topic}\n\nYou argue AGAINST (the contra side) in a debate of {rounds} round(s) that an arbitrator decides. This is round {round_no} of {rounds}.\n{so_far}\nThis round, the pro side argued:\n{show_pro}\n\nMake your strongest case against, and answer the pro side's points.",
        topic = topic.value
    );
    let mut contra = common::agent_step(
        s,
        &contra_id,
        pos,
        &d.contra,
        prompt(contra_prompt),
        format!("Debate `{id}`: `{}` argues against.", d.contra.value),
    );
    contra.reads = common::reads_plus(s, &[&transcript, &pro_key], pos);
    contra.output = Some(Loc {
        value: contra_key.clone(),
        pos,
    });
    contra.max_visits = Some(visits);
    contra.next = Some(NextSpec(vec![common::branch(None, &round_id, pos)]));
    x.steps.push(contra);

    // The round: tag both arguments into the transcript, then go on or stop.
    let mut round = common::step(
        round_id.clone(),
        pos,
        format!("Debate `{id}`: record the round; another round or the arbitrator."),
    );
    round.function = Some(Loc {
        value: "debate_round".into(),
        pos,
    });
    round.builtin = Some(common::builtin(SyncStep({
        let (pro_key, contra_key, transcript, round_key) = (
            pro_key.clone(),
            contra_key.clone(),
            transcript.clone(),
            round_key.clone(),
        );
        let (pro_agent, contra_agent) = (d.pro.value.clone(), d.contra.value.clone());
        move |input: StepInput| {
            let n = common::len_of(&input, &transcript) / 2 + 1;
            let p = common::last_of(&input, &pro_key)?;
            let c = common::last_of(&input, &contra_key)?;
            let mut out = serde_json::Map::new();
            out.insert(
                transcript.clone(),
                json!([
                    {"round": n, "side": "pro", "agent": pro_agent, "argument": p},
                    {"round": n, "side": "contra", "agent": contra_agent, "argument": c},
                ]),
            );
            out.insert(
                round_key.clone(),
                json!({"round": n, "of": rounds, "pro": p, "contra": c}),
            );
            Ok(serde_json::Value::Object(out))
        }
    })));
    round.reads = common::keys(&[&pro_key, &contra_key, &transcript], pos);
    round.writes = common::keys(&[&transcript, &round_key], pos);
    round.max_visits = Some(rounds);
    round.on_error = s.on_error.clone();
    round.impact = s.impact.clone();
    let mut branches = Vec::new();
    if let Some(w) = &d.stop_when {
        branches.push(common::branch(Some(w.clone()), &arb_id, pos));
    }
    branches.push(common::branch(
        Some(Loc {
            value: format!("{round_key}.round < {rounds}"),
            pos,
        }),
        &pro_id,
        pos,
    ));
    branches.push(common::branch(
        Some(Loc {
            value: format!("{round_key}.round >= {rounds}"),
            pos,
        }),
        &arb_id,
        pos,
    ));
    round.next = Some(NextSpec(branches));
    x.steps.push(round);

    // The arbitrator.
    let arb_prompt = format!(
        "{topic}\n\nYou are the arbitrator. `{pro}` argued for and `{contra}` argued against, over {{{{ {transcript} | length // 2 }}}} round(s).\n\nThe full transcript:\n{{% for a in {transcript} %}}[round {{{{ a.round }}}}, {{{{ a.side }}}}, {{{{ a.agent }}}}] {show_arg}\n{{% endfor %}}\nWeigh both sides, decide, and explain your decision.",
        topic = topic.value,
        pro = d.pro.value,
        contra = d.contra.value,
    );
    let mut arb = common::agent_step(
        s,
        &arb_id,
        pos,
        &d.arbitrator,
        prompt(arb_prompt),
        format!("Debate `{id}`: `{}` decides.", d.arbitrator.value),
    );
    arb.reads = common::reads_plus(s, &[&transcript], pos);
    arb.output = s.output.clone();
    arb.writes = s.writes.clone();
    x.steps.push(arb);

    // The way out.
    let mut exit = common::exit_step(s, None);
    exit.output = None;
    exit.writes = Default::default();
    exit.needs = common::keys(&[&arb_id], pos);
    x.steps.push(exit);
}
