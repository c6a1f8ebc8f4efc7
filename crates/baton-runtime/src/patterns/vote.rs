//! Consensus vote (`vote:`): N voters answer the same task with structured answers; a tally
//! (a generated Rust function step) compares them on one field, accepts the majority, rejects
//! the dissenters and sends each dissenter back once for self-correction with the majority's
//! answers in its prompt; a second tally decides. Ties and missing quorums have defined outcomes.
//! See `docs/patterns/vote.md`.
//!
//! ```yaml
//! - id: triage
//!   reads: [case]
//!   vote:
//!     voters: [gp, er, nurse]
//!     prompt: "Triage this case: {{ case }}"
//!     compare: triage_level
//!     quorum: 2
//!     on_tie: senior_review
//!   output: triage
//! ```
//!
//! expands into `triage.vote_<voter>` (agent steps, in parallel), `triage.tally` (function),
//! per voter `triage.check_<voter>` (router), `triage.revote_<voter>` (agent, once) and
//! `triage.voted_<voter>` (join), `triage.retally` (function), and `triage` (function: the
//! accepted answer, or a failure on a tie or a missing quorum).

use super::Expansion;
use crate::registry::{StepFn, StepFuture, StepInput};
use crate::spec::{
    AgentSpec, BranchSpec, BuiltinFn, Loc, MergeRule, NextSpec, OneOrMany, Pos, StepSpec,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The `vote:` block of a step.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteSpec {
    /// The voting agents (at least two, distinct); each answers the same prompt once.
    pub voters: Vec<Loc<String>>,
    /// The task, a prompt template over the step's `reads`.
    pub prompt: Loc<String>,
    /// The field of the structured answers that is compared (`triage_level`, `a.b` for a
    /// nested field). Strings compare trimmed and case-insensitively.
    pub compare: Loc<String>,
    /// Minimum number of agreeing votes to accept an answer (default: a strict majority).
    #[serde(default)]
    pub quorum: Option<Loc<u32>>,
    /// Self-correction rounds for dissenters: 1 (default) or 0.
    #[serde(default)]
    pub retry_dissenters: Option<Loc<u32>>,
    /// On a tie: `fail` (default; the step fails, handled by its `on_error`) or a step to
    /// route to.
    #[serde(default)]
    pub on_tie: Option<Loc<String>>,
    /// The state key receiving the tally (default `<step>_tally`).
    #[serde(default)]
    pub tally: Option<Loc<String>>,
}

impl VoteSpec {
    /// A vote of `voters` on `prompt`, compared on `compare`, with the defaults.
    pub fn new<I, S>(voters: I, prompt: &str, compare: &str) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        VoteSpec {
            voters: voters.into_iter().map(|v| Loc::new(v.into())).collect(),
            prompt: Loc::new(prompt.to_string()),
            compare: Loc::new(compare.to_string()),
            quorum: None,
            retry_dissenters: None,
            on_tie: None,
            tally: None,
        }
    }

    /// Minimum number of agreeing votes.
    pub fn quorum(mut self, n: u32) -> Self {
        self.quorum = Some(Loc::new(n));
        self
    }

    /// Self-correction rounds for dissenters (0 or 1).
    pub fn retry_dissenters(mut self, n: u32) -> Self {
        self.retry_dissenters = Some(Loc::new(n));
        self
    }

    /// `fail`, or the step a tie routes to.
    pub fn on_tie(mut self, target: &str) -> Self {
        self.on_tie = Some(Loc::new(target.to_string()));
        self
    }

    /// The state key receiving the tally.
    pub fn tally_key(mut self, key: &str) -> Self {
        self.tally = Some(Loc::new(key.to_string()));
        self
    }
}

/// Expand the `vote:` block of `s` into ordinary steps.
pub fn expand_step(s: &StepSpec, x: &mut Expansion<'_>) {
    let Some(block) = &s.vote else { return };
    let v = &block.value;
    let pos = block.pos;
    let id = s.id.value.as_str();
    let mut ok = common::check_fields(s, "vote", x);
    ok &= common::check_not_target(s, "vote", None, x);

    if v.voters.len() < 2 {
        x.err(
            pos,
            id,
            format!(
                "a vote needs at least two voters, this one has {}",
                v.voters.len()
            ),
        );
        ok = false;
    }
    let compare = v.compare.value.trim();
    if compare.is_empty() || compare.split('.').any(str::is_empty) {
        x.err(
            v.compare.pos.or(pos),
            id,
            format!(
                "`compare` must name a field of the voters' answers (`triage_level`, `a.b`), not `{}`",
                v.compare.value
            ),
        );
        ok = false;
    }
    for (i, voter) in v.voters.iter().enumerate() {
        if v.voters[..i].iter().any(|o| o.value == voter.value) {
            x.err(
                voter.pos.or(pos),
                id,
                format!("voter `{}` is listed twice", voter.value),
            );
            ok = false;
            continue;
        }
        match common::agent(x, s, voter, pos) {
            None => ok = false,
            Some(a) => match &a.output_schema {
                None => {
                    x.err(
                        voter.pos.or(pos),
                        id,
                        format!(
                            "voter `{}` has no `output_schema`: a vote compares structured answers, give the agent a schema with a `{compare}` property",
                            voter.value
                        ),
                    );
                    ok = false;
                }
                Some(schema) if !compare.is_empty() => {
                    let first = compare.split('.').next().unwrap_or(compare);
                    if common::schema_lacks(&schema.value, first) {
                        x.err(
                            voter.pos.or(pos),
                            id,
                            format!(
                                "voter `{}`: its `output_schema` has no property `{first}` to compare",
                                voter.value
                            ),
                        );
                        ok = false;
                    }
                }
                Some(_) => {}
            },
        }
    }
    let n = v.voters.len() as u32;
    let quorum = match &v.quorum {
        Some(q) if q.value < 1 || q.value > n.max(1) => {
            x.err(
                q.pos.or(pos),
                id,
                format!(
                    "`quorum` must be between 1 and the number of voters ({n}), not {}",
                    q.value
                ),
            );
            ok = false;
            1
        }
        Some(q) => q.value,
        None => n / 2 + 1,
    };
    let retry = match &v.retry_dissenters {
        Some(r) if r.value > 1 => {
            x.err(
                r.pos.or(pos),
                id,
                format!(
                    "`retry_dissenters` is 0 or 1 (each dissenter is sent back at most once), not {}",
                    r.value
                ),
            );
            ok = false;
            false
        }
        Some(r) => r.value == 1,
        None => true,
    };
    let on_tie = match &v.on_tie {
        None => None,
        Some(t) if t.value == "fail" => None,
        Some(t) => {
            let target = x.spec.steps.iter().find(|o| o.id.value == t.value);
            if let Some(o) = target
                && (o.vote.is_some() || o.best_of.is_some() || o.swarm.is_some())
            {
                x.err(
                    t.pos.or(pos),
                    id,
                    format!(
                        "`on_tie` goes to `{}`, which carries a pattern block of several steps: route to a step it `needs`",
                        t.value
                    ),
                );
                ok = false;
            } else if t.value == id || target.is_none() {
                x.err(
                    t.pos.or(pos),
                    id,
                    format!(
                        "`on_tie` is `fail` or another step of the workflow, not `{}`",
                        t.value
                    ),
                );
                ok = false;
            }
            Some(t.clone())
        }
    };
    let tally_key = match &v.tally {
        Some(k) => {
            if !common::is_ident(&k.value) {
                x.err(
                    k.pos.or(pos),
                    id,
                    format!(
                        "`tally` names a state key used in conditions: letters, digits and `_`, not `{}`",
                        k.value
                    ),
                );
                ok = false;
            }
            k.value.clone()
        }
        None => format!("{}_tally", common::ident(id)),
    };

    let sid = common::ident(id);
    let voters: Vec<(String, String)> = v
        .voters
        .iter()
        .map(|a| {
            (
                a.value.clone(),
                format!("{sid}_vote_{}", common::ident(&a.value)),
            )
        })
        .collect();
    for (voter, key) in &voters {
        common::gen_key(
            x,
            s,
            key,
            MergeRule::Replace,
            &format!("The answer of voter `{voter}` in vote `{id}`."),
            pos,
        );
    }
    common::gen_key(
        x,
        s,
        &tally_key,
        MergeRule::Replace,
        &format!("The tally of vote `{id}`: status, votes, majority, dissenters."),
        pos,
    );

    // Declared even when the block is wrong, so that readers of the keys add no errors.
    if !ok {
        x.steps.push(common::placeholder(s));
        return;
    }

    // Round 1: every voter in parallel.
    let mut vote_ids = Vec::new();
    for (loc, (voter, key)) in v.voters.iter().zip(&voters) {
        let sid_v = format!("{id}.vote_{}", common::ident(voter));
        let mut st = common::agent_step(
            s,
            &sid_v,
            pos,
            loc,
            v.prompt.clone(),
            format!("Vote of `{voter}`."),
        );
        st.needs = s.needs.clone();
        st.join = s.join.clone();
        st.reads = s.reads.clone();
        st.output = Some(Loc {
            value: key.clone(),
            pos,
        });
        vote_ids.push(sid_v.clone());
        x.steps.push(st);
    }

    let final_id = id.to_string();
    let tie_branch = |when: &str| -> Option<BranchSpec> {
        on_tie.as_ref().map(|t| BranchSpec {
            when: Some(Loc {
                value: when.to_string(),
                pos,
            }),
            to: OneOrMany(vec![t.clone()]),
        })
    };
    let to = |target: &str| {
        OneOrMany(vec![Loc {
            value: target.to_string(),
            pos,
        }])
    };
    let compare = compare.to_string();

    // The first tally.
    let mut tally = common::step(
        format!("{id}.tally"),
        pos,
        format!("Tally of vote `{id}` on `{compare}`."),
    );
    tally.function = Some(Loc {
        value: "vote_tally".into(),
        pos,
    });
    tally.builtin = Some(common::builtin(TallyFn {
        voters: voters.clone(),
        compare: compare.clone(),
        quorum: quorum as usize,
        retry,
        previous: None,
    }));
    tally.needs = OneOrMany(vote_ids.iter().map(|v| Loc::from(v.as_str())).collect());
    tally.reads = OneOrMany(voters.iter().map(|(_, k)| Loc::from(k.as_str())).collect());
    tally.output = Some(Loc {
        value: tally_key.clone(),
        pos,
    });
    tally.on_error = s.on_error.clone();
    tally.impact = s.impact.clone();
    let mut branches = Vec::new();
    if retry {
        branches.push(BranchSpec {
            when: Some(Loc {
                value: format!("{tally_key}.status == 'retry'"),
                pos,
            }),
            to: OneOrMany(
                voters
                    .iter()
                    .map(|(v, _)| Loc {
                        value: format!("{id}.check_{}", common::ident(v)),
                        pos,
                    })
                    .collect(),
            ),
        });
    }
    branches.extend(tie_branch(&format!("{tally_key}.status == 'tie'")));
    branches.push(BranchSpec {
        when: None,
        to: to(&final_id),
    });
    tally.next = Some(NextSpec(branches));
    x.steps.push(tally);

    // Round 2: each dissenter is asked once more, with the majority's answers.
    if retry {
        let mut voted_ids = Vec::new();
        for (loc, (voter, key)) in v.voters.iter().zip(&voters) {
            let vid = common::ident(voter);
            let check_id = format!("{id}.check_{vid}");
            let revote_id = format!("{id}.revote_{vid}");
            let voted_id = format!("{id}.voted_{vid}");
            let mut check = common::step(
                check_id,
                pos,
                format!("Is `{voter}` a dissenter of vote `{id}`?"),
            );
            check.router = Some(vec![
                BranchSpec {
                    when: Some(Loc {
                        value: format!(
                            "'{}' in {tally_key}.dissenters",
                            voter.replace('\\', "\\\\").replace('\'', "\\'")
                        ),
                        pos,
                    }),
                    to: to(&revote_id),
                },
                BranchSpec {
                    when: None,
                    to: to(&voted_id),
                },
            ]);
            x.steps.push(check);

            let prompt = Loc {
                value: format!(
                    "{}\n\n---\nSelf-correction: your first answer disagrees with the majority of the panel.\n\
                     Your first answer: {{{{ {key} | tojson }}}}\n\
                     The majority ({{{{ {tally_key}.majority | join(\", \") }}}}) answered `{compare}` = {{{{ {tally_key}.value | tojson }}}}, with these answers and reasons:\n\
                     {{% for a in {tally_key}.majority_answers %}}- {{{{ a | tojson }}}}\n{{% endfor %}}\
                     Check your reasoning against theirs. Correct your answer if their reasons convince you, or keep it if you are sure. Reply in the same JSON format as before.",
                    v.prompt.value.trim_end()
                ),
                pos: v.prompt.pos,
            };
            let mut revote = common::agent_step(
                s,
                &revote_id,
                pos,
                loc,
                prompt,
                format!("Self-correction of `{voter}` (asked once, only as a dissenter)."),
            );
            let mut reads = s.reads.0.clone();
            for k in [key.as_str(), tally_key.as_str()] {
                if !reads.iter().any(|r| r.value == k) {
                    reads.push(Loc {
                        value: k.into(),
                        pos,
                    });
                }
            }
            revote.reads = OneOrMany(reads);
            revote.output = Some(Loc {
                value: key.clone(),
                pos,
            });
            revote.max_visits = Some(1);
            revote.next = Some(NextSpec(vec![BranchSpec {
                when: None,
                to: to(&voted_id),
            }]));
            // A failed re-ask keeps the first answer.
            revote.on_error = Some(Loc {
                value: voted_id.clone(),
                pos,
            });
            revote.impact = Some(format!("`{voter}` keeps its first answer in vote `{id}`"));
            x.steps.push(revote);

            x.steps.push(common::step(
                voted_id.clone(),
                pos,
                format!("`{voter}` has its final answer."),
            ));
            voted_ids.push(voted_id);
        }
        let mut retally = common::step(
            format!("{id}.retally"),
            pos,
            format!("Second tally of vote `{id}`, after self-correction."),
        );
        retally.function = Some(Loc {
            value: "vote_tally".into(),
            pos,
        });
        retally.builtin = Some(common::builtin(TallyFn {
            voters: voters.clone(),
            compare: compare.clone(),
            quorum: quorum as usize,
            retry: false,
            previous: Some(tally_key.clone()),
        }));
        retally.needs = OneOrMany(voted_ids.iter().map(|v| Loc::from(v.as_str())).collect());
        let mut reads: Vec<Loc<String>> =
            voters.iter().map(|(_, k)| Loc::from(k.as_str())).collect();
        reads.push(Loc::from(tally_key.as_str()));
        retally.reads = OneOrMany(reads);
        retally.output = Some(Loc {
            value: tally_key.clone(),
            pos,
        });
        retally.on_error = s.on_error.clone();
        retally.impact = s.impact.clone();
        let mut branches = Vec::new();
        branches.extend(tie_branch(&format!("{tally_key}.status == 'tie'")));
        branches.push(BranchSpec {
            when: None,
            to: to(&final_id),
        });
        retally.next = Some(NextSpec(branches));
        x.steps.push(retally);
    }

    // The decision: the accepted answer, or a failure naming the votes.
    let mut decide = common::exit_step(s, "vote_decision");
    decide.builtin = Some(common::builtin(DecideFn {
        voters: voters.iter().map(|(v, _)| v.clone()).collect(),
        tally_key: tally_key.clone(),
    }));
    decide.reads = OneOrMany(vec![Loc {
        value: tally_key,
        pos,
    }]);
    x.steps.push(decide);
}

/// The outcome of a tally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TallyStatus {
    /// One answer has the most votes and at least the quorum; no dissenter is sent back.
    Accepted,
    /// One answer leads and there are dissenters to send back (first round only).
    Retry,
    /// Two or more answers share the most votes.
    Tie,
    /// The leading answer has fewer votes than the quorum (or nobody answered).
    NoQuorum,
}

impl TallyStatus {
    /// As written in the tally (`accepted`, `retry`, `tie`, `no_quorum`).
    pub fn as_str(self) -> &'static str {
        match self {
            TallyStatus::Accepted => "accepted",
            TallyStatus::Retry => "retry",
            TallyStatus::Tie => "tie",
            TallyStatus::NoQuorum => "no_quorum",
        }
    }
}

/// A field of a JSON value by a dotted path (`a.b`).
pub fn field<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// The grouping key of a compared value: strings trimmed and lower-cased, numbers by value,
/// objects with sorted keys.
fn canon(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&m[k])))
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    match v {
        Value::String(s) => format!("s:{}", s.trim().to_lowercase()),
        Value::Number(n) => format!("n:{}", n.as_f64().unwrap_or(f64::NAN)),
        other => format!("j:{}", sorted(other)),
    }
}

/// A compared value as shown in messages: strings bare, the rest as JSON.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Tally the `votes` (voter, answer) on the field `compare`.
///
/// Answers are grouped by the value of `compare` (strings trimmed and case-insensitive). An
/// answer that is not an object, or lacks the field (or has it `null`), abstains: it counts for
/// nothing and its voter is a dissenter. Then, in this order:
/// - two or more values share the most votes: `tie` (nothing is accepted, nobody is sent back);
/// - no answer at all: `no_quorum`;
/// - one value leads and some voters dissent, and `allow_retry`: `retry`;
/// - the leader has at least `quorum` votes: `accepted` (dissenters are rejected);
/// - otherwise: `no_quorum`.
///
/// The result is the tally as JSON: `status`, `compare`, `quorum`, `value` (the leading value,
/// `null` on a tie), `votes` (voter → value), `counts` (`[{value, votes, voters}]`, most votes
/// first, then in voter order), `majority`, `dissenters`, `abstained`, `tied` (the tied values),
/// `answer` (the first majority answer) and `majority_answers`.
pub fn tally(votes: &[(String, Value)], compare: &str, quorum: usize, allow_retry: bool) -> Value {
    struct Group<'a> {
        key: String,
        value: &'a Value,
        voters: Vec<&'a str>,
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut abstained: Vec<&str> = Vec::new();
    let mut by_voter = Map::new();
    for (voter, answer) in votes {
        match field(answer, compare).filter(|v| !v.is_null()) {
            None => {
                abstained.push(voter);
                by_voter.insert(voter.clone(), Value::Null);
            }
            Some(value) => {
                by_voter.insert(voter.clone(), value.clone());
                let key = canon(value);
                match groups.iter_mut().find(|g| g.key == key) {
                    Some(g) => g.voters.push(voter),
                    None => groups.push(Group {
                        key,
                        value,
                        voters: vec![voter],
                    }),
                }
            }
        }
    }
    // Stable: equal counts keep the order of their first voter.
    groups.sort_by_key(|g| std::cmp::Reverse(g.voters.len()));
    let top = groups.first().map_or(0, |g| g.voters.len());
    let tied: Vec<&Group> = groups.iter().filter(|g| g.voters.len() == top).collect();
    let leader = (tied.len() == 1).then(|| tied[0]);
    let majority: Vec<&str> = leader.map(|g| g.voters.clone()).unwrap_or_default();
    let dissenters: Vec<&str> = match leader {
        Some(_) => votes
            .iter()
            .map(|(v, _)| v.as_str())
            .filter(|v| !majority.contains(v))
            .collect(),
        None => Vec::new(),
    };
    let status = if tied.len() > 1 {
        TallyStatus::Tie
    } else if leader.is_none() {
        TallyStatus::NoQuorum
    } else if allow_retry && !dissenters.is_empty() {
        TallyStatus::Retry
    } else if top >= quorum {
        TallyStatus::Accepted
    } else {
        TallyStatus::NoQuorum
    };
    let answers = |names: &[&str]| -> Vec<Value> {
        names
            .iter()
            .filter_map(|n| votes.iter().find(|(v, _)| v == n).map(|(_, a)| a.clone()))
            .collect()
    };
    let majority_answers = answers(&majority);
    json!({
        "status": status.as_str(),
        "compare": compare,
        "quorum": quorum,
        "value": leader.map_or(Value::Null, |g| g.value.clone()),
        "votes": by_voter,
        "counts": groups.iter().map(|g| json!({
            "value": g.value,
            "votes": g.voters.len(),
            "voters": g.voters,
        })).collect::<Vec<_>>(),
        "majority": majority,
        "dissenters": dissenters,
        "abstained": abstained,
        "tied": if tied.len() > 1 { tied.iter().map(|g| g.value.clone()).collect() } else { Vec::new() },
        "answer": majority_answers.first().cloned().unwrap_or(Value::Null),
        "majority_answers": majority_answers,
    })
}

/// The accepted answer of a final tally, or why there is none (a tie, no quorum), naming the
/// votes. `voters` gives the order in which votes are listed.
pub fn decide(tally: &Value, voters: &[String]) -> Result<Value, String> {
    let compare = tally["compare"].as_str().unwrap_or("?");
    let listing = voters
        .iter()
        .map(|v| {
            let value = &tally["votes"][v.as_str()];
            if value.is_null() {
                format!("{v}: (no answer)")
            } else {
                format!("{v}: {}", show(value))
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    match tally["status"].as_str() {
        Some("accepted") => Ok(tally["answer"].clone()),
        Some("tie") => {
            let tied: Vec<String> = tally["tied"]
                .as_array()
                .map(|a| a.iter().map(|v| format!("`{}`", show(v))).collect())
                .unwrap_or_default();
            let each = tally["counts"][0]["votes"].as_u64().unwrap_or(0);
            Err(format!(
                "tie on `{compare}`: {} have {each} vote(s) each (votes: {listing})",
                tied.join(" and ")
            ))
        }
        Some("no_quorum") => {
            let quorum = tally["quorum"].as_u64().unwrap_or(0);
            let best = match tally["counts"].get(0) {
                Some(c) => format!(
                    "the most agreed answer `{}` has {}",
                    show(&c["value"]),
                    c["votes"].as_u64().unwrap_or(0)
                ),
                None => "nobody answered".to_string(),
            };
            Err(format!(
                "no quorum on `{compare}`: {quorum} agreeing vote(s) needed, {best} (votes: {listing})"
            ))
        }
        other => Err(format!(
            "the tally has status {}, not a decision",
            other.unwrap_or("(none)")
        )),
    }
}

/// The tally step: reads each voter's key, tallies.
struct TallyFn {
    voters: Vec<(String, String)>,
    compare: String,
    quorum: usize,
    retry: bool,
    /// Second round: the key holding the first tally (its votes are kept as `first_votes`).
    previous: Option<String>,
}

impl StepFn for TallyFn {
    fn call(&self, input: StepInput) -> StepFuture {
        let votes: Vec<(String, Value)> = self
            .voters
            .iter()
            .map(|(v, k)| {
                (
                    v.clone(),
                    input.state.get(k).cloned().unwrap_or(Value::Null),
                )
            })
            .collect();
        let mut t = tally(&votes, &self.compare, self.quorum, self.retry);
        let round = if self.previous.is_some() { 2 } else { 1 };
        if let Value::Object(m) = &mut t {
            m.insert("round".into(), json!(round));
            if let Some(prev) = self.previous.as_ref().and_then(|k| input.state.get(k)) {
                let first = prev["votes"].clone();
                let changed: Vec<&str> = self
                    .voters
                    .iter()
                    .map(|(v, _)| v.as_str())
                    .filter(|v| {
                        let a = &first[*v];
                        let b = &m["votes"][*v];
                        canon(a) != canon(b)
                    })
                    .collect();
                m.insert("changed".into(), json!(changed));
                m.insert("first_votes".into(), first);
            }
        }
        StepFuture::Ready(Ok(t))
    }
}

/// The decision step: the accepted answer, or an error.
struct DecideFn {
    voters: Vec<String>,
    tally_key: String,
}

impl StepFn for DecideFn {
    fn call(&self, input: StepInput) -> StepFuture {
        let t = input
            .state
            .get(&self.tally_key)
            .cloned()
            .unwrap_or(Value::Null);
        StepFuture::Ready(decide(&t, &self.voters))
    }
}

/// Helpers shared by the `vote`, `best_of`, `synthesize` and `swarm` expansions.
pub(super) mod common {
    use super::*;

    /// The pattern blocks handled by these modules, by YAML name.
    fn blocks(s: &StepSpec) -> Vec<(&'static str, Option<Pos>)> {
        let mut out = Vec::new();
        if let Some(b) = &s.vote {
            out.push(("vote", b.pos));
        }
        if let Some(b) = &s.synthesize {
            out.push(("synthesize", b.pos));
        }
        if let Some(b) = &s.best_of {
            out.push(("best_of", b.pos));
        }
        if let Some(b) = &s.swarm {
            out.push(("swarm", b.pos));
        }
        out
    }

    /// Whether `s` is usable as a state key in CEL conditions and templates.
    pub fn is_ident(s: &str) -> bool {
        !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    /// `s` made usable as (part of) a state key: other characters become `_`.
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

    /// A generated no-op step at the block's position.
    pub fn step(id: String, pos: Option<Pos>, description: String) -> StepSpec {
        StepSpec {
            id: Loc { value: id, pos },
            description,
            ..StepSpec::default()
        }
    }

    /// The step that keeps the pattern step's id: its output, writes, transitions and failure
    /// policy (a function step; the caller sets `builtin` and `reads`).
    pub fn exit_step(s: &StepSpec, function: &str) -> StepSpec {
        let pos = s.id.pos;
        StepSpec {
            id: s.id.clone(),
            description: s.description.clone(),
            function: Some(Loc {
                value: function.to_string(),
                pos,
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
    /// transitions, so that references to it do not add errors of their own.
    pub fn placeholder(s: &StepSpec) -> StepSpec {
        StepSpec {
            id: s.id.clone(),
            description: s.description.clone(),
            needs: s.needs.clone(),
            join: s.join.clone(),
            next: s.next.clone(),
            on_error: s.on_error.clone(),
            ..StepSpec::default()
        }
    }

    /// An agent step generated from the pattern step `s`: its timeout, retries, deadline,
    /// budget, failure policy and impact apply.
    pub fn agent_step(
        s: &StepSpec,
        id: &str,
        pos: Option<Pos>,
        agent: &Loc<String>,
        prompt: Loc<String>,
        description: String,
    ) -> StepSpec {
        StepSpec {
            id: Loc {
                value: id.to_string(),
                pos,
            },
            description,
            agent: Some(Loc {
                value: agent.value.clone(),
                pos: agent.pos.or(pos),
            }),
            prompt: Some(prompt),
            on_error: s.on_error.clone(),
            impact: s.impact.clone(),
            timeout: s.timeout,
            budget: s.budget,
            retries: s.retries,
            deadline: s.deadline,
            max_visits: s.max_visits,
            ..StepSpec::default()
        }
    }

    /// Refuse the fields a pattern block replaces, and a second block. True when all is well.
    pub fn check_fields(s: &StepSpec, block: &str, x: &mut Expansion<'_>) -> bool {
        let id = s.id.value.as_str();
        let mut ok = true;
        let mut refuse = |x: &mut Expansion<'_>, field: &str, pos: Option<Pos>| {
            x.err(
                pos.or(s.id.pos),
                id,
                format!(
                    "a `{block}:` step does its work through the block: remove `{field}` (put the prompt and agents inside `{block}:`)"
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
        let all = blocks(s);
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
        ok
    }

    /// A block that expands into several steps is entered by some and left by another, so
    /// nothing may route to it (its steps would start without the transition). True when no
    /// transition, `on_error` or `start:` names it.
    pub fn check_not_target(
        s: &StepSpec,
        block: &str,
        entry: Option<&str>,
        x: &mut Expansion<'_>,
    ) -> bool {
        let id = s.id.value.as_str();
        let mut refs: Vec<(Option<Pos>, String)> = Vec::new();
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
                    refs.push((t.pos, format!("{what} of step `{from}`")));
                }
            }
            if let Some(e) = o.on_error.as_ref().filter(|e| e.value == id) {
                refs.push((e.pos, format!("`on_error` of step `{from}`")));
            }
        }
        for t in x.spec.start.0.iter().filter(|t| t.value == id) {
            refs.push((t.pos, "`start:`".to_string()));
        }
        let ok = refs.is_empty();
        for (pos, what) in refs {
            x.err(
                pos,
                id,
                match entry {
                    Some(e) => format!(
                        "{what} goes to `{id}`, the end of a `{block}:` block (it completes when the block is done): lead to its first step `{e}` instead, or reach `{id}` through `needs`"
                    ),
                    None => format!(
                        "{what} goes to `{id}`, the end of a `{block}:` block whose steps start in parallel: reach it through `needs` (route to a step that `{id}` needs)"
                    ),
                },
            );
        }
        ok
    }

    /// The agent named by `name` (an error, at its position, if it is not declared).
    pub fn agent<'a>(
        x: &mut Expansion<'a>,
        s: &StepSpec,
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
            x.err(
                name.pos.or(pos),
                &s.id.value,
                format!(
                    "unknown agent `{}` (agents: {})",
                    name.value,
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

    /// Declare a generated state key; a key of the same name declared by the user must have
    /// the same merge rule.
    pub fn gen_key(
        x: &mut Expansion<'_>,
        s: &StepSpec,
        name: &str,
        merge: MergeRule,
        description: &str,
        pos: Option<Pos>,
    ) {
        let spec = x.spec;
        if let Some((k, ks)) = spec.state.0.iter().find(|(k, _)| k.value == name)
            && ks.merge != merge
        {
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
            return;
        }
        x.key(name, merge, description, pos);
    }

    /// Wrap a step function for `StepSpec::builtin`.
    pub fn builtin(f: impl StepFn + 'static) -> BuiltinFn {
        BuiltinFn(Arc::new(f))
    }
}
