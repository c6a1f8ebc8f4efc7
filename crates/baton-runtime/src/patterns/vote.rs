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
use super::common::{self, Shape};
use crate::registry::{StepFn, StepFuture, StepInput};
use crate::spec::{BranchSpec, Loc, MergeRule, NextSpec, OneOrMany, StepSpec};
use serde::Deserialize;
use serde_json::{Map, Value, json};

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
    let shape = Shape::Fan { entry: None };
    let mut ok = common::check_fields(s, "vote", shape, x);
    ok &= common::check_not_target(s, "vote", shape, x);

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
        match common::agent(x, s, None, voter, pos) {
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
            shape,
            key,
            MergeRule::Replace,
            &format!("The answer of voter `{voter}` in vote `{id}`."),
            pos,
        );
    }
    common::gen_key(
        x,
        s,
        shape,
        &tally_key,
        MergeRule::Replace,
        &format!("The tally of vote `{id}`: status, votes, majority, dissenters."),
        pos,
    );

    // Declared even when the block is wrong, so that readers of the keys add no errors.
    if !ok {
        x.steps.push(common::placeholder(s, shape));
        return;
    }

    // Round 1: every voter in parallel.
    let mut vote_ids = Vec::new();
    for (loc, (voter, key)) in v.voters.iter().zip(&voters) {
        let sid_v = format!("{id}.vote_{}", common::ident(voter));
        let st = common::agent_step(
            s,
            &sid_v,
            pos,
            loc,
            v.prompt.clone(),
            format!("Vote of `{voter}`."),
        );
        x.steps.push(common::first_step(s, st, key, pos));
        vote_ids.push(sid_v);
    }

    let compare = compare.to_string();
    // A tally of the votes: the first (which may send dissenters back) or, after `previous`
    // (the key of the first), the second.
    let tally_step = |step_id: String,
                      description: String,
                      needs: &[String],
                      previous: Option<&str>|
     -> StepSpec {
        let retry = retry && previous.is_none();
        let mut t = common::step(step_id, pos, description);
        t.function = Some(Loc {
            value: "vote_tally".into(),
            pos,
        });
        t.builtin = Some(common::builtin(TallyFn {
            voters: voters.clone(),
            compare: compare.clone(),
            quorum: quorum as usize,
            retry,
            previous: previous.map(str::to_string),
        }));
        t.needs = OneOrMany(needs.iter().map(|v| Loc::from(v.as_str())).collect());
        let mut reads: Vec<Loc<String>> =
            voters.iter().map(|(_, k)| Loc::from(k.as_str())).collect();
        reads.extend(previous.map(Loc::from));
        t.reads = OneOrMany(reads);
        t.output = Some(Loc {
            value: tally_key.clone(),
            pos,
        });
        t.on_error = s.on_error.clone();
        t.impact = s.impact.clone();
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
        branches.extend(on_tie.as_ref().map(|t| BranchSpec {
            when: Some(Loc {
                value: format!("{tally_key}.status == 'tie'"),
                pos,
            }),
            to: OneOrMany(vec![t.clone()]),
        }));
        branches.push(common::branch(None, id, pos));
        t.next = Some(NextSpec(branches));
        t
    };

    // The first tally.
    x.steps.push(tally_step(
        format!("{id}.tally"),
        format!("Tally of vote `{id}` on `{compare}`."),
        &vote_ids,
        None,
    ));

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
            let dissents = Loc {
                value: format!(
                    "'{}' in {tally_key}.dissenters",
                    voter.replace('\\', "\\\\").replace('\'', "\\'")
                ),
                pos,
            };
            check.router = Some(vec![
                common::branch(Some(dissents), &revote_id, pos),
                common::branch(None, &voted_id, pos),
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
            revote.reads = common::reads_plus(s, &[key, &tally_key], pos);
            revote.output = Some(Loc {
                value: key.clone(),
                pos,
            });
            revote.max_visits = Some(1);
            revote.next = Some(NextSpec(vec![common::branch(None, &voted_id, pos)]));
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
        x.steps.push(tally_step(
            format!("{id}.retally"),
            format!("Second tally of vote `{id}`, after self-correction."),
            &voted_ids,
            Some(&tally_key),
        ));
    }

    // The decision: the accepted answer, or a failure naming the votes.
    let mut decide = common::exit_step(s, Some("vote_decision"));
    decide.builtin = Some(common::builtin(DecideFn {
        voters: voters.iter().map(|(v, _)| v.clone()).collect(),
        tally_key: tally_key.clone(),
    }));
    decide.reads = common::keys(&[&tally_key], pos);
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
                format!("{v}: {}", common::text_of(value))
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    match tally["status"].as_str() {
        Some("accepted") => Ok(tally["answer"].clone()),
        Some("tie") => {
            let tied: Vec<String> = tally["tied"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| format!("`{}`", common::text_of(v)))
                        .collect()
                })
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
                    common::text_of(&c["value"]),
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
