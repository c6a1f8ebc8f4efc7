//! The consensus-family pattern blocks through the library: how `vote:`, `synthesize:`,
//! `best_of:` and `swarm:` expand into ordinary steps (ids, keys, conditions, prompts), the
//! errors a bad block gives (with its position and the step's name), the pure tally,
//! decision, synthesis and winner functions on their edge cases, and the Rust builder API
//! running a vote and a swarm with a function reducer on the scripted model.

#![allow(clippy::unwrap_used)]

use baton_core::RunStatus;
use baton_providers::ScriptedModel;
use baton_runtime::builder::{StepBuilder, WorkflowBuilder};
use baton_runtime::patterns::best_of::{self, BestOfSpec};
use baton_runtime::patterns::swarm::{ReduceSpec, SwarmSpec};
use baton_runtime::patterns::synthesize::{self, Finding, SynthesizeSpec};
use baton_runtime::patterns::vote::{self, VoteSpec};
use baton_runtime::spec::{AgentSpec, Loc, MergeRule, Pos, PriceSpec, StepSpec, WorkflowSpec};
use baton_runtime::{ModelEntry, Registry, Runtime, WorkflowError, compile_str, parse_spec};
use baton_store::MemoryStore;
use serde_json::{Value, json};
use std::sync::Arc;

// ---------------------------------------------------------------- helpers

fn registry(script: &str) -> Registry {
    let model = ScriptedModel::from_yaml_str(script, "test-script").unwrap();
    Registry::new().model(
        "default",
        ModelEntry::new(Arc::new(model), "scripted-1", PriceSpec::default()),
    )
}

/// Position (1-based) of the first occurrence of `needle` in `text`.
fn at(text: &str, needle: &str) -> Option<Pos> {
    let i = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the text"));
    let before = &text[..i];
    let line = before.matches('\n').count() as u32 + 1;
    let col = (i - before.rfind('\n').map_or(0, |n| n + 1)) as u32 + 1;
    Some(Pos { line, col })
}

fn errors(text: &str) -> WorkflowError {
    match compile_str(text, "wf.yaml", &registry("{}")) {
        Ok(_) => panic!("expected errors, but this compiled:\n{text}"),
        Err(e) => e,
    }
}

/// Assert exactly these (position of needle, step, message part) diagnostics.
fn expect(text: &str, want: &[(&str, &str, &str)]) {
    let err = errors(text);
    assert_eq!(
        err.diagnostics.len(),
        want.len(),
        "expected {} diagnostic(s), got:\n{err}",
        want.len()
    );
    for (needle, step, msg) in want {
        let pos = at(text, needle);
        assert!(
            err.diagnostics.iter().any(|d| d.pos == pos
                && d.step.as_deref() == Some(*step)
                && d.message.contains(msg)),
            "no diagnostic at {pos:?} ({needle:?}) for step `{step}` containing {msg:?} in:\n{err}"
        );
    }
}

fn expanded(text: &str) -> WorkflowSpec {
    let spec = parse_spec(text, "wf.yaml").unwrap();
    let (out, errors) = baton_runtime::patterns::expand(&spec).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    out
}

fn ids(spec: &WorkflowSpec) -> Vec<&str> {
    spec.steps.iter().map(|s| s.id.value.as_str()).collect()
}

fn step<'a>(spec: &'a WorkflowSpec, id: &str) -> &'a StepSpec {
    spec.steps.iter().find(|s| s.id.value == id).unwrap()
}

fn names(l: &[Loc<String>]) -> Vec<&str> {
    l.iter().map(|n| n.value.as_str()).collect()
}

const AGENTS: &str = r#"
agents:
  a:
    output_schema: &s
      type: object
      required: [level]
      properties: {level: {type: string}, reasons: {type: array}}
  b: {output_schema: *s}
  c: {output_schema: *s}
  plain: {instructions: Free text.}
  judge:
    output_schema: {type: object, properties: {winner: {type: string}, reasons: {type: array}}}
"#;

fn wf(state: &str, steps: &str) -> String {
    format!("name: t\n{AGENTS}\nstate:\n  case: replace\n  out: replace\n{state}\nsteps:\n{steps}")
}

// ---------------------------------------------------------------- expansion

#[test]
fn vote_expands_into_votes_a_tally_one_re_ask_per_voter_and_a_decision() {
    let text = wf(
        "",
        r#"
  - id: prep
  - id: triage
    needs: prep
    reads: [case]
    vote:
      voters: [a, b, c]
      prompt: "Triage {{ case }}"
      compare: level
      on_tie: prep2
    output: out
    next: after
  - id: prep2
  - id: after
"#,
    );
    let x = expanded(&text);
    assert_eq!(
        ids(&x),
        [
            "prep",
            "triage.vote_a",
            "triage.vote_b",
            "triage.vote_c",
            "triage.tally",
            "triage.check_a",
            "triage.revote_a",
            "triage.voted_a",
            "triage.check_b",
            "triage.revote_b",
            "triage.voted_b",
            "triage.check_c",
            "triage.revote_c",
            "triage.voted_c",
            "triage.retally",
            "triage",
            "prep2",
            "after"
        ]
    );
    // The votes take the step's needs and reads; each writes its own key.
    let va = step(&x, "triage.vote_a");
    assert_eq!(va.agent.as_ref().unwrap().value, "a");
    assert_eq!(names(&va.needs.0), ["prep"]);
    assert_eq!(names(&va.reads.0), ["case"]);
    assert_eq!(va.output.as_ref().unwrap().value, "triage_vote_a");
    // The tally needs every vote; default quorum is a strict majority (2 of 3).
    let t = step(&x, "triage.tally");
    assert!(t.builtin.is_some());
    assert_eq!(
        names(&t.needs.0),
        ["triage.vote_a", "triage.vote_b", "triage.vote_c"]
    );
    assert_eq!(t.output.as_ref().unwrap().value, "triage_tally");
    let branches = &t.next.as_ref().unwrap().0;
    assert_eq!(
        branches[0].when.as_ref().unwrap().value,
        "triage_tally.status == 'retry'"
    );
    assert_eq!(
        names(&branches[0].to.0),
        ["triage.check_a", "triage.check_b", "triage.check_c"]
    );
    assert_eq!(
        branches[1].when.as_ref().unwrap().value,
        "triage_tally.status == 'tie'"
    );
    assert_eq!(names(&branches[1].to.0), ["prep2"]);
    assert!(branches[2].when.is_none());
    assert_eq!(names(&branches[2].to.0), ["triage"]);
    // Each check routes a dissenter to its re-ask, anyone else to its join.
    let router = step(&x, "triage.check_b").router.as_ref().unwrap();
    assert_eq!(
        router[0].when.as_ref().unwrap().value,
        "'b' in triage_tally.dissenters"
    );
    assert_eq!(names(&router[0].to.0), ["triage.revote_b"]);
    assert_eq!(names(&router[1].to.0), ["triage.voted_b"]);
    // A re-ask runs once, sees its first answer and the tally, and keeps the first answer
    // when it fails.
    let rb = step(&x, "triage.revote_b");
    assert_eq!(rb.max_visits, Some(1));
    assert_eq!(
        names(&rb.reads.0),
        ["case", "triage_vote_b", "triage_tally"]
    );
    assert_eq!(rb.on_error.as_ref().unwrap().value, "triage.voted_b");
    let p = &rb.prompt.as_ref().unwrap().value;
    assert!(
        p.starts_with("Triage {{ case }}\n\n---\nSelf-correction"),
        "{p}"
    );
    assert!(p.contains("{{ triage_vote_b | tojson }}"), "{p}");
    assert!(
        p.contains("{% for a in triage_tally.majority_answers %}"),
        "{p}"
    );
    // The decision keeps the id, output and transitions.
    let d = step(&x, "triage");
    assert!(d.builtin.is_some() && d.needs.0.is_empty());
    assert_eq!(d.output.as_ref().unwrap().value, "out");
    assert_eq!(names(&d.next.as_ref().unwrap().0[0].to.0), ["after"]);
    assert_eq!(names(&step(&x, "triage.retally").needs.0).len(), 3);
    // Generated keys.
    let keys: Vec<&str> = x.state.0.iter().map(|(k, _)| k.value.as_str()).collect();
    assert_eq!(
        keys,
        [
            "case",
            "out",
            "triage_vote_a",
            "triage_vote_b",
            "triage_vote_c",
            "triage_tally"
        ]
    );
    // Every generated step is placed at the block.
    let block = at(&text, "voters:");
    assert!(
        x.steps
            .iter()
            .filter(|s| s.id.value.starts_with("triage."))
            .all(|s| s.id.pos == block),
        "generated steps point at the block"
    );
    // And it compiles.
    compile_str(&text, "wf.yaml", &registry("{}")).unwrap();
}

#[test]
fn vote_without_retry_has_no_second_round() {
    let text = wf(
        "",
        r#"
  - id: v
    reads: [case]
    vote: {voters: [a, b], prompt: "{{ case }}", compare: level, retry_dissenters: 0, tally: t}
    output: out
"#,
    );
    let x = expanded(&text);
    assert_eq!(ids(&x), ["v.vote_a", "v.vote_b", "v.tally", "v"]);
    assert_eq!(step(&x, "v.tally").output.as_ref().unwrap().value, "t");
    let next = &step(&x, "v.tally").next.as_ref().unwrap().0;
    assert_eq!(next.len(), 1, "only the decision: no retry, no tie branch");
}

#[test]
fn best_of_synthesize_and_swarm_expand() {
    let text = wf(
        "  fa: replace\n  fb: replace\n  items: replace\n",
        r#"
  - id: msg
    reads: [case]
    best_of:
      prompt: "Write {{ case }}"
      candidates: [plain, {id: short, agent: plain, prompt: "Short: {{ case }}"}]
      judge: judge
    output: out
  - id: fa_step
    agent: a
    prompt: x
    output: fa
  - id: fb_step
    agent: b
    prompt: x
    output: fb
  - id: merged
    synthesize:
      findings: [fa, fb_step]
      score: level
      authority: {a: 1.0, fb_step: 0.5}
  - id: sw
    reads: [case]
    swarm:
      over: items
      agent: plain
      prompt: "{{ item }} of {{ case }}"
      concurrency: 3
      reduce: {agent: plain, prompt: "{{ sw_results | tojson }}"}
    output: out
"#,
    );
    let x = expanded(&text);
    assert_eq!(
        ids(&x),
        [
            "msg.plain",
            "msg.short",
            "msg.judge",
            "msg",
            "fa_step",
            "fb_step",
            "merged",
            "sw.map",
            "sw"
        ]
    );
    // best-of: candidates in parallel, the judge sees them all, the pick needs the judge.
    assert_eq!(
        step(&x, "msg.short").prompt.as_ref().unwrap().value,
        "Short: {{ case }}"
    );
    let judge = step(&x, "msg.judge");
    assert_eq!(names(&judge.needs.0), ["msg.plain", "msg.short"]);
    assert_eq!(
        names(&judge.reads.0),
        ["case", "msg_cand_plain", "msg_cand_short"]
    );
    let jp = &judge.prompt.as_ref().unwrap().value;
    assert!(jp.contains("### Candidate `short`"), "{jp}");
    assert!(jp.contains("one of: plain, short"), "{jp}");
    assert_eq!(names(&step(&x, "msg").needs.0), ["msg.judge"]);
    // synthesize: one function step; needs derived from the finding steps.
    let m = step(&x, "merged");
    assert!(m.builtin.is_some());
    assert_eq!(names(&m.needs.0), ["fa_step", "fb_step"]);
    assert_eq!(names(&m.reads.0), ["fa", "fb"]);
    // swarm: a map and the reducer.
    let map = step(&x, "sw.map");
    let ms = map.map.as_ref().unwrap();
    assert_eq!(ms.concurrency, Some(3));
    assert_eq!(ms.agent.as_ref().unwrap().value, "plain");
    assert_eq!(map.output.as_ref().unwrap().value, "sw_results");
    let r = step(&x, "sw");
    assert_eq!(names(&r.needs.0), ["sw.map"]);
    assert_eq!(names(&r.reads.0), ["case", "sw_results"]);
    assert_eq!(r.agent.as_ref().unwrap().value, "plain");
    compile_str(&text, "wf.yaml", &registry("{}")).unwrap();
}

// ---------------------------------------------------------------- errors

#[test]
fn vote_errors_point_at_the_block_and_name_the_step() {
    let text = wf(
        "",
        r#"
  - id: triage
    reads: [case]
    prompt: "stray"
    vote:
      voters: [a, ghost, a, plain]
      prompt: "{{ case }}"
      compare: level
      quorum: 9
      retry_dissenters: 2
      on_tie: nowhere
"#,
    );
    expect(
        &text,
        &[
            (
                "\"stray\"",
                "triage",
                "a `vote:` step does its work through the block: remove `prompt`",
            ),
            (
                "ghost",
                "triage",
                "unknown agent `ghost` (agents: a, b, c, plain, judge)",
            ),
            ("a, plain]", "triage", "voter `a` is listed twice"),
            ("plain]", "triage", "voter `plain` has no `output_schema`"),
            (
                "9",
                "triage",
                "`quorum` must be between 1 and the number of voters (4), not 9",
            ),
            ("2\n", "triage", "`retry_dissenters` is 0 or 1"),
            (
                "nowhere",
                "triage",
                "`on_tie` is `fail` or another step of the workflow, not `nowhere`",
            ),
        ],
    );
}

#[test]
fn vote_needs_two_voters_a_compared_property_and_no_transition_into_it() {
    let text = wf(
        "",
        r#"
  - id: go
    next: v
  - id: v
    needs: go
    vote: {voters: [a], prompt: x, compare: missing}
"#,
    );
    expect(
        &text,
        &[
            (
                "v\n  - id: v",
                "v",
                "`next` of step `go` goes to `v`, the end of a `vote:` block",
            ),
            (
                "{voters",
                "v",
                "a vote needs at least two voters, this one has 1",
            ),
            (
                "a], prompt",
                "v",
                "voter `a`: its `output_schema` has no property `missing` to compare",
            ),
        ],
    );
}

#[test]
fn vote_on_tie_cannot_enter_another_block() {
    let text = wf(
        "",
        r#"
  - id: v
    reads: [case]
    vote: {voters: [a, b], prompt: "{{ case }}", compare: level, on_tie: w}
  - id: w
    reads: [case]
    vote: {voters: [b, c], prompt: "{{ case }}", compare: level}
"#,
    );
    expect(
        &text,
        &[(
            "w}",
            "v",
            "`on_tie` goes to `w`, which carries a pattern block of several steps",
        )],
    );
}

#[test]
fn synthesize_errors() {
    let text = wf(
        "  fa: replace\n",
        r#"
  - id: s
    synthesize:
      findings: [fa, nothing, fa]
      score: level
      authority: {other: 1.0, neg: -1}
    output: out
"#,
    );
    expect(
        &text,
        &[
            ("-1", "s", "authority of `neg` must be a number ≥ 0, not -1"),
            (
                "fa, nothing",
                "s",
                "finding `fa` has no authority: add `fa: <weight>` to `authority`",
            ),
            (
                "nothing",
                "s",
                "finding `nothing` is neither a state key nor a step with an `output`",
            ),
            ("fa]", "s", "finding `fa` is listed twice"),
        ],
    );
    // Every finding named, but an authority names none of them.
    let text = wf(
        "  fa: replace\n",
        r#"
  - id: s
    synthesize: {findings: fa, score: level, authority: {fa: 1, fx: 2}}
"#,
    );
    expect(
        &text,
        &[(
            "fx",
            "s",
            "`authority` names `fx`, which is neither a finding nor the agent of one (findings: fa)",
        )],
    );
}

#[test]
fn best_of_errors() {
    let text = wf(
        "",
        r#"
  - id: m
    best_of:
      candidates: [a, judge]
      agent: b
      judge: plain
"#,
    );
    expect(
        &text,
        &[
            (
                "b\n",
                "m",
                "give either `candidates` or `agent` with `n`, not both",
            ),
            ("plain\n", "m", "judge `plain` has no `output_schema`"),
        ],
    );
    let text = wf(
        "",
        r#"
  - id: m
    best_of:
      candidates: [a, judge]
      judge: judge
"#,
    );
    expect(
        &text,
        &[
            ("judge]", "m", "a candidate cannot be called `judge`"),
            ("a, judge]", "m", "candidate `a` has no prompt"),
            ("judge]", "m", "candidate `judge` has no prompt"),
        ],
    );
}

#[test]
fn swarm_errors() {
    let text = wf(
        "  items: replace\n",
        r#"
  - id: go
    on_error: sw
  - id: sw
    swarm:
      over: items
      agent: nobody
      prompt: "{{ item }}"
      concurrency: 0
      reduce: {agent: plain, function: f}
      bogus: 1
"#,
    );
    // An unknown field is a parse error at its position.
    let err = errors(&text);
    assert_eq!(err.diagnostics.len(), 1, "{err}");
    assert_eq!(
        err.diagnostics[0].pos.map(|p| p.line),
        at(&text, "bogus").map(|p| p.line)
    );
    assert!(err.diagnostics[0].message.contains("bogus"), "{err}");

    let text = text.replace("      bogus: 1\n", "");
    expect(
        &text,
        &[
            (
                "sw\n  - id: sw",
                "sw",
                "`on_error` of step `go` goes to `sw`, the end of a `swarm:` block (it completes when the block is done): lead to its first step `sw.map` instead",
            ),
            ("nobody", "sw", "unknown agent `nobody`"),
            ("0\n", "sw", "`concurrency` must be at least 1"),
            (
                "{agent: plain",
                "sw",
                "`reduce` has agent and function: give exactly one",
            ),
            (
                "plain, function",
                "sw",
                "the reducing agent needs a `prompt`",
            ),
        ],
    );
}

// ---------------------------------------------------------------- the tally

fn ballots(list: &[(&str, Value)]) -> Vec<(String, Value)> {
    list.iter()
        .map(|(v, a)| (v.to_string(), a.clone()))
        .collect()
}

#[test]
fn tally_edge_cases() {
    let lv = |l: &str| json!({"level": l, "reasons": [format!("because {l}")]});
    // Unanimous: accepted even when a retry is allowed (nobody to send back).
    let t = vote::tally(
        &ballots(&[("a", lv("x")), ("b", lv("x"))]),
        "level",
        2,
        true,
    );
    assert_eq!(t["status"], "accepted");
    assert_eq!(t["dissenters"], json!([]));
    // 2-1: retry with the dissenter named and the majority's answers.
    let votes = ballots(&[("a", lv("x")), ("b", lv("y")), ("c", lv("x"))]);
    let t = vote::tally(&votes, "level", 2, true);
    assert_eq!(t["status"], "retry");
    assert_eq!(t["value"], "x");
    assert_eq!(t["majority"], json!(["a", "c"]));
    assert_eq!(t["dissenters"], json!(["b"]));
    assert_eq!(t["answer"], lv("x"));
    assert_eq!(t["majority_answers"], json!([lv("x"), lv("x")]));
    assert_eq!(
        t["counts"][0],
        json!({"value": "x", "votes": 2, "voters": ["a", "c"]})
    );
    // The same without retry: accepted, the dissenter rejected; with quorum 3: no quorum.
    assert_eq!(vote::tally(&votes, "level", 2, false)["status"], "accepted");
    assert_eq!(
        vote::tally(&votes, "level", 3, false)["status"],
        "no_quorum"
    );
    // 2-2 and 1-1-1 are ties, whatever the quorum; nobody is a dissenter.
    let t = vote::tally(
        &ballots(&[
            ("a", lv("x")),
            ("b", lv("y")),
            ("c", lv("y")),
            ("d", lv("x")),
        ]),
        "level",
        2,
        true,
    );
    assert_eq!(t["status"], "tie");
    assert_eq!(t["tied"], json!(["x", "y"]));
    assert_eq!(t["dissenters"], json!([]));
    assert!(t["value"].is_null());
    let t = vote::tally(
        &ballots(&[("a", lv("x")), ("b", lv("y")), ("c", lv("z"))]),
        "level",
        1,
        true,
    );
    assert_eq!(t["status"], "tie");
    // Strings compare trimmed and case-insensitively; numbers by value; nested paths.
    let t = vote::tally(
        &ballots(&[("a", lv("Urgent ")), ("b", lv("urgent"))]),
        "level",
        2,
        false,
    );
    assert_eq!(
        (t["status"].as_str(), &t["value"]),
        (Some("accepted"), &json!("Urgent "))
    );
    let t = vote::tally(
        &ballots(&[
            ("a", json!({"r": {"n": 2}})),
            ("b", json!({"r": {"n": 2.0}})),
        ]),
        "r.n",
        2,
        false,
    );
    assert_eq!(t["status"], "accepted");
    // A missing field or a non-object answer abstains, and counts as a dissenter.
    let t = vote::tally(
        &ballots(&[
            ("a", lv("x")),
            ("b", json!({"other": 1})),
            ("c", lv("x")),
            ("d", json!("text")),
        ]),
        "level",
        2,
        true,
    );
    assert_eq!(t["status"], "retry");
    assert_eq!(t["abstained"], json!(["b", "d"]));
    assert_eq!(t["dissenters"], json!(["b", "d"]));
    assert!(t["votes"]["b"].is_null());
    // Nobody answered: no quorum, nobody to send back.
    let t = vote::tally(
        &ballots(&[("a", json!(null)), ("b", json!({}))]),
        "level",
        1,
        true,
    );
    assert_eq!(t["status"], "no_quorum");
    assert_eq!(t["dissenters"], json!([]));
}

#[test]
fn decision_messages_name_the_votes() {
    let voters: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
    let lv = |l: &str| json!({"level": l});
    let tie = vote::tally(
        &ballots(&[
            ("a", lv("x")),
            ("b", lv("y")),
            ("c", lv("y")),
            ("d", lv("x")),
        ]),
        "level",
        2,
        false,
    );
    assert_eq!(
        vote::decide(&tie, &voters).unwrap_err(),
        "tie on `level`: `x` and `y` have 2 vote(s) each (votes: a: x, b: y, c: y, d: x)"
    );
    let nq = vote::tally(
        &ballots(&[
            ("a", lv("x")),
            ("b", lv("y")),
            ("c", lv("x")),
            ("d", json!({})),
        ]),
        "level",
        3,
        false,
    );
    assert_eq!(
        vote::decide(&nq, &voters).unwrap_err(),
        "no quorum on `level`: 3 agreeing vote(s) needed, the most agreed answer `x` has 2 (votes: a: x, b: y, c: x, d: (no answer))"
    );
    let ok = vote::tally(
        &ballots(&[("a", lv("x")), ("b", lv("x"))]),
        "level",
        2,
        false,
    );
    assert_eq!(vote::decide(&ok, &voters).unwrap(), lv("x"));
}

// ---------------------------------------------------------------- the synthesis

fn f<'a>(name: &'a str, value: &'a Value, authority: f64) -> Finding<'a> {
    Finding {
        name,
        value,
        authority,
    }
}

#[test]
fn synthesis_edge_cases() {
    let fin = |s: f64, c: f64| json!({"score": s, "confidence": c});
    let (a, b, c) = (fin(80.0, 0.9), fin(60.0, 0.5), fin(20.0, 1.0));
    // Seed 001 by hand: (80*.9*1 + 60*.5*.8 + 20*1*.5) / (.9 + .4 + .5) = 106 / 1.8.
    let out = synthesize::synthesize(
        &[f("a", &a, 1.0), f("b", &b, 0.8), f("c", &c, 0.5)],
        "score",
        "confidence",
    )
    .unwrap();
    let want = 106.0 / 1.8;
    assert!(
        (out["score"].as_f64().unwrap() - want).abs() < 1e-4,
        "{out}"
    );
    // Overall confidence: sum(c*a) / sum(a) = 1.8 / 2.3.
    assert!((out["confidence"].as_f64().unwrap() - 1.8 / 2.3).abs() < 1e-4);
    assert_eq!(out["coverage"], 1.0);
    assert_eq!(out["spread"], 60.0);
    let dissent =
        ((0.9 * (80.0 - want).powi(2) + 0.4 * (60.0 - want).powi(2) + 0.5 * (20.0 - want).powi(2))
            / 1.8)
            .sqrt();
    assert!((out["dissent"].as_f64().unwrap() - dissent).abs() < 1e-4);
    assert!((out["findings"][1]["share"].as_f64().unwrap() - 0.4 / 1.8).abs() < 1e-4);

    // A missing finding: left out of the score, lowers confidence and coverage.
    let null = Value::Null;
    let out = synthesize::synthesize(
        &[f("a", &a, 1.0), f("b", &null, 1.0)],
        "score",
        "confidence",
    )
    .unwrap();
    assert_eq!(out["score"], 80.0);
    assert_eq!(out["confidence"], 0.45);
    assert_eq!(out["coverage"], 0.5);
    assert_eq!(out["missing"], json!(["b"]));
    assert_eq!(out["dissent"], 0.0);

    // Authority 0 keeps a finding out of the score.
    let out =
        synthesize::synthesize(&[f("a", &a, 1.0), f("c", &c, 0.0)], "score", "confidence").unwrap();
    assert_eq!(out["score"], 80.0);

    // Nested fields.
    let n = json!({"risk": {"score": 40}, "meta": {"conf": 0.5}});
    let out = synthesize::synthesize(&[f("n", &n, 2.0)], "risk.score", "meta.conf").unwrap();
    assert_eq!(out["score"], 40.0);

    // Errors.
    let e = |fs: &[Finding<'_>]| synthesize::synthesize(fs, "score", "confidence").unwrap_err();
    assert_eq!(
        e(&[f("a", &null, 1.0), f("b", &null, 1.0)]),
        "no finding to synthesise: a, b missing"
    );
    let zero = fin(50.0, 0.0);
    assert!(e(&[f("z", &zero, 1.0)]).starts_with("no weight to synthesise with"));
    let bad_conf = fin(50.0, 1.5);
    assert_eq!(
        e(&[f("x", &bad_conf, 1.0)]),
        "finding `x`: `confidence` must be a number between 0 and 1 (got 1.5)"
    );
    let text_score = json!({"score": "high", "confidence": 0.5});
    assert_eq!(
        e(&[f("x", &text_score, 1.0)]),
        "finding `x`: `score` is missing or not a number (got \"high\")"
    );
    let s = json!("high");
    assert!(e(&[f("x", &s, 1.0)]).starts_with("finding `x` is a string"));
}

#[test]
fn winner_matching() {
    let cands: Vec<String> = vec!["data".into(), "emotion".into()];
    assert_eq!(
        best_of::winner(&json!({"winner": "emotion"}), &cands),
        Ok("emotion")
    );
    assert_eq!(
        best_of::winner(&json!({"winner": " Data "}), &cands),
        Ok("data")
    );
    assert_eq!(
        best_of::winner(&json!({"winner": "story"}), &cands).unwrap_err(),
        "the judge picked `story`, which is not a candidate (data, emotion)"
    );
    assert!(
        best_of::winner(&json!({"reasons": []}), &cands)
            .unwrap_err()
            .starts_with("the judge's verdict has no `winner`")
    );
}

// ---------------------------------------------------------------- the builder

fn schema_agent() -> AgentSpec {
    AgentSpec {
        output_schema: Some(Loc::new(json!({
            "type": "object",
            "required": ["level"],
            "properties": {"level": {"type": "string"}}
        }))),
        ..AgentSpec::default()
    }
}

#[tokio::test]
async fn builder_vote_runs_and_re_asks_the_dissenter() {
    let builder = WorkflowBuilder::new("panel")
        .state("case", MergeRule::Replace)
        .state("decision", MergeRule::Replace)
        .agent("a", schema_agent())
        .agent("b", schema_agent())
        .agent("c", schema_agent())
        .step(
            StepBuilder::vote(
                "panel",
                VoteSpec::new(["a", "b", "c"], "Case: {{ case }}", "level").quorum(2),
            )
            .reads(["case"])
            .output("decision"),
        );
    // The builder gives the same spec as YAML.
    let yaml = parse_spec(
        r#"
name: panel
steps:
  - id: panel
    reads: [case]
    vote: {voters: [a, b, c], prompt: "Case: {{ case }}", compare: level, quorum: 2}
    output: decision
"#,
        "wf.yaml",
    )
    .unwrap();
    let strip = |mut s: StepSpec| {
        fn clear(l: &mut Loc<String>) {
            l.pos = None;
        }
        s.id.pos = None;
        if let Some(o) = s.output.as_mut() {
            clear(o);
        }
        s.reads.0.iter_mut().for_each(clear);
        if let Some(v) = s.vote.as_mut() {
            v.pos = None;
            v.value.voters.iter_mut().for_each(clear);
            clear(&mut v.value.prompt);
            clear(&mut v.value.compare);
            if let Some(q) = v.value.quorum.as_mut() {
                q.pos = None;
            }
        }
        s
    };
    assert_eq!(
        strip(builder.spec().steps[0].clone()),
        strip(yaml.steps[0].clone())
    );

    let wf = builder
        .build(&registry(
            r#"
agents:
  a: [{json: {level: high}}]
  b: [{json: {level: low}}, {json: {level: high}}]
  c: [{json: {level: high}}]
"#,
        ))
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    let report = Runtime::new(store)
        .run(wf, json!({"case": "chest pain"}))
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(report.outputs["decision"], json!({"level": "high"}));
    assert_eq!(report.outputs["panel_tally"]["changed"], json!(["b"]));
    assert_eq!(report.usage.model_calls, 4, "three votes and one re-ask");
}

#[tokio::test]
async fn builder_swarm_with_a_function_reducer_best_of_and_synthesis() {
    let registry = registry(
        r#"
agents:
  scorer:
    rules:
      - {when: {contains: "apple"}, reply: {json: {level: "3"}}}
      - {when: {contains: "pear"}, reply: {json: {level: "5"}}}
      - {when: {contains: "fig"}, reply: {json: {level: "4"}}}
  judge: [{json: {winner: "writer_2", reasons: ["shorter"]}}]
steps:
  slogan.writer_1: [{text: "one"}]
  slogan.writer_2: [{text: "two"}]
"#,
    )
    .function("count", |input| {
        let items = input
            .state
            .get("fruit_results")
            .cloned()
            .unwrap_or_default();
        Ok(json!({"n": items.as_array().map_or(0, Vec::len)}))
    });
    let judge = AgentSpec {
        output_schema: Some(Loc::new(json!({
            "type": "object",
            "properties": {"winner": {"type": "string"}}
        }))),
        ..AgentSpec::default()
    };
    let wf = WorkflowBuilder::new("fruit")
        .state_with_default(
            "fruits",
            MergeRule::Replace,
            Some(json!(["apple", "pear", "fig"])),
        )
        .state("summary", MergeRule::Replace)
        .state_with_default(
            "fa",
            MergeRule::Replace,
            Some(json!({"score": 80, "confidence": 1.0})),
        )
        .state_with_default(
            "fb",
            MergeRule::Replace,
            Some(json!({"score": 40, "confidence": 0.5})),
        )
        .state("risk", MergeRule::Replace)
        .state("slogan", MergeRule::Replace)
        .agent("scorer", schema_agent())
        .agent("writer", AgentSpec::default())
        .agent("judge", judge)
        .step(
            StepBuilder::swarm(
                "fruit",
                SwarmSpec::new(
                    "fruits",
                    "scorer",
                    "Score {{ item }}",
                    2,
                    ReduceSpec::function("count"),
                ),
            )
            .output("summary"),
        )
        .step(
            StepBuilder::best_of(
                "slogan",
                BestOfSpec::sampled("writer", 2, "A slogan", "judge"),
            )
            .needs(["fruit"])
            .output("slogan"),
        )
        .step(
            StepBuilder::synthesize(
                "risk",
                SynthesizeSpec::new(["fa", "fb"], "score")
                    .authority("fa", 1.0)
                    .default_authority(0.5),
            )
            .output("risk"),
        )
        .build(&registry)
        .unwrap();
    let report = Runtime::new(Arc::new(MemoryStore::new()))
        .run(wf, json!({}))
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(report.outputs["summary"], json!({"n": 3}));
    assert_eq!(
        report.outputs["fruit_results"],
        json!([{"level": "3"}, {"level": "5"}, {"level": "4"}])
    );
    assert_eq!(report.outputs["slogan"], "two");
    assert_eq!(report.outputs["slogan_cand_writer_1"], "one");
    // (80 x 1.0 x 1.0 + 40 x 0.5 x 0.5) / (1.0 + 0.25) = 90 / 1.25
    assert_eq!(report.outputs["risk"]["score"], 72.0);
    assert_eq!(report.outputs["risk"]["confidence"], 0.8333);
}
