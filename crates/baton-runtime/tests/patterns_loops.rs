//! The looping patterns, in process: `debate:`, `reflect:` and `refine:` blocks expand into
//! ordinary steps with readable ids and generated keys; a bad block is reported once, at its
//! position, naming the step; and expanded workflows run on the scripted model with the
//! behaviour each pattern promises (the debate's round bound, what the arbitrator saw, the
//! verifier's bound and `on_bound`, refinement's early stop), also when built with the Rust API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use baton_core::{Event, RunId, RunStatus, RunStore};
use baton_providers::ScriptedModel;
use baton_runtime::builder::{StepBuilder, WorkflowBuilder};
use baton_runtime::machine::RunMachine;
use baton_runtime::patterns::debate::DebateSpec;
use baton_runtime::patterns::refine::{PassSpec, RefineSpec};
use baton_runtime::patterns::reflect::{OnBound, ReflectSpec};
use baton_runtime::spec::{AgentSpec, Loc, MergeRule, PriceSpec, WorkflowSpec};
use baton_runtime::{
    Diagnostic, ModelEntry, Registry, RunReport, Runtime, Workflow, compile_str, parse_spec,
};
use baton_store::MemoryStore;
use serde_json::{Value, json};
use std::sync::Arc;

// ---------------------------------------------------------------- helpers

fn registry(script: &str) -> Registry {
    let model = ScriptedModel::from_yaml_str(script, "test-script").unwrap();
    Registry::new()
        .model(
            "default",
            ModelEntry::new(Arc::new(model), "scripted-1", PriceSpec::default()),
        )
        .function("noop", |_| Ok(Value::Null))
}

/// The diagnostics of a workflow that must not compile.
fn errors(text: &str) -> Vec<Diagnostic> {
    match compile_str(text, "wf.yaml", &registry("{}")) {
        Ok(_) => panic!("the workflow compiled:\n{text}"),
        Err(e) => e.diagnostics,
    }
}

/// The only diagnostic of a workflow that must not compile: (line, col, step, message).
fn error(text: &str) -> (u32, u32, Option<String>, String) {
    let d = errors(text);
    assert_eq!(d.len(), 1, "expected one diagnostic, got {d:#?}");
    let d = &d[0];
    let p = d.pos.expect("a position");
    (p.line, p.col, d.step.clone(), d.message.clone())
}

fn expanded(text: &str) -> WorkflowSpec {
    let spec = parse_spec(text, "wf.yaml").unwrap();
    let (out, errors) = baton_runtime::patterns::expand(&spec).expect("the workflow has a block");
    assert!(errors.is_empty(), "{errors:?}");
    out
}

fn ids(spec: &WorkflowSpec) -> Vec<&str> {
    spec.steps.iter().map(|s| s.id.value.as_str()).collect()
}

async fn run(wf: Arc<Workflow>, input: Value) -> (RunReport, Vec<Event>) {
    let store = Arc::new(MemoryStore::new());
    let report = Runtime::new(store.clone()).run(wf, input).await.unwrap();
    let id: RunId = report.run_id.parse().unwrap();
    let events = store.events(id, 0).await.unwrap();
    (report, events)
}

/// Events as JSON (`type` plus fields), so tests read them as a user of `baton events` would.
fn json_events(events: &[Event]) -> Vec<Value> {
    events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect()
}

/// `(step, agent)` of every model call, in order.
fn model_calls(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["type"] == "model_called")
        .map(|e| {
            (
                e["step"].as_str().unwrap().to_string(),
                e["agent"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `(from, to, when)` of every transition, in order.
fn transitions(events: &[Value]) -> Vec<(String, String, Option<String>)> {
    events
        .iter()
        .filter(|e| e["type"] == "transition")
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_string(),
                e["to"][0].as_str().unwrap().to_string(),
                e["when"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// The user prompt of the first start of `step`.
fn prompt_of(events: &[Value], step: &str) -> String {
    let e = events
        .iter()
        .find(|e| e["type"] == "step_started" && e["step"] == step)
        .unwrap_or_else(|| panic!("`{step}` never started"));
    let msgs = e["messages"].as_array().unwrap();
    msgs.iter().rev().find(|m| m["role"] == "user").unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string()
}

fn count<T: PartialEq>(list: &[T], item: &T) -> usize {
    list.iter().filter(|x| *x == item).count()
}

fn calls(list: &[(String, String)], step: &str, agent: &str) -> usize {
    count(list, &(step.to_string(), agent.to_string()))
}

// ---------------------------------------------------------------- workflows

const DEBATE: &str = r#"
name: debate
agents:
  bull:
    instructions: Argue for.
    output_schema:
      type: object
      required: [argument, concedes]
      properties: {argument: {type: string}, concedes: {type: boolean}}
  bear:
    instructions: Argue against.
    output_schema:
      type: object
      required: [argument, concedes]
      properties: {argument: {type: string}, concedes: {type: boolean}}
  judge:
    instructions: Decide.
state:
  company: replace
  decision: replace
  memo: replace
steps:
  - id: scope
    function: noop
    output: memo
  - id: decide
    needs: scope
    reads: [company]
    debate:
      topic: "Should we acquire {{ company }}?"
      pro: bull
      contra: bear
      arbitrator: judge
      rounds: 3
      stop_when: "decide_round.contra.concedes"
    output: decision
  - id: after
    function: noop
    needs: decide
"#;

const REFLECT: &str = r#"
name: reflect
agents:
  writer:
    instructions: Write.
  checker:
    instructions: Check.
    output_schema:
      type: object
      required: [passed, reasons]
      properties:
        passed: {type: boolean}
        reasons: {type: array, items: {type: string}}
state:
  sources: replace
  report: replace
steps:
  - id: report
    reads: [sources]
    reflect:
      producer: writer
      prompt: "Summarise {{ sources }}."
      verifier: checker
      max_rounds: 2
      on_bound: accept_last
    output: report
"#;

const REFINE: &str = r#"
name: refine
agents:
  scout: {instructions: Survey.}
  analyst: {instructions: Narrow.}
  expert: {instructions: Detail.}
state:
  question: replace
  review: replace
steps:
  - id: lit-review
    reads: [question]
    refine:
      passes:
        - name: broad
          agent: scout
          prompt: "Survey {{ question }}."
          stop_when: "lit_review_broad == 'nothing'"
        - name: focused
          agent: analyst
          prompt: "Narrow {{ previous }} on {{ question }}."
        - agent: expert
          prompt: "Detail {{ previous }} (broad: {{ lit_review_broad }})."
    output: review
"#;

// ---------------------------------------------------------------- expansion

#[test]
fn debate_expands_into_readable_steps_around_a_bounded_loop() {
    let spec = expanded(DEBATE);
    assert_eq!(
        ids(&spec),
        [
            "scope",
            "decide.begin",
            "decide.pro",
            "decide.contra",
            "decide.round",
            "decide.arbitrator",
            "decide",
            "after"
        ]
    );
    let step = |id: &str| spec.steps.iter().find(|s| s.id.value == id).unwrap();
    // The way in keeps the needs; the loop's steps are bounded by the rounds.
    assert_eq!(step("decide.begin").needs.0[0].value, "scope");
    for s in ["decide.pro", "decide.contra", "decide.round"] {
        assert_eq!(step(s).max_visits, Some(3), "{s}");
    }
    assert_eq!(step("decide.pro").agent.as_ref().unwrap().value, "bull");
    assert_eq!(step("decide.contra").agent.as_ref().unwrap().value, "bear");
    assert_eq!(
        step("decide.arbitrator").agent.as_ref().unwrap().value,
        "judge"
    );
    // The round decides: stop_when first, then another round, then the arbitrator.
    let when: Vec<Option<&str>> = step("decide.round")
        .next
        .as_ref()
        .unwrap()
        .0
        .iter()
        .map(|b| b.when.as_ref().map(|w| w.value.as_str()))
        .collect();
    assert_eq!(
        when,
        [
            Some("decide_round.contra.concedes"),
            Some("decide_round.round < 3"),
            Some("decide_round.round >= 3")
        ]
    );
    // The arbitrator writes the output; the step keeping the id waits for it.
    assert_eq!(
        step("decide.arbitrator").output.as_ref().unwrap().value,
        "decision"
    );
    assert_eq!(step("decide").needs.0[0].value, "decide.arbitrator");
    let keys: Vec<(&str, MergeRule)> = spec
        .state
        .0
        .iter()
        .map(|(k, s)| (k.value.as_str(), s.merge))
        .filter(|(k, _)| k.starts_with("decide_"))
        .collect();
    assert_eq!(
        keys,
        [
            ("decide_pro", MergeRule::Append),
            ("decide_contra", MergeRule::Append),
            ("decide_transcript", MergeRule::Append),
            ("decide_round", MergeRule::Replace)
        ]
    );
    // Generated steps carry the block's position (its first line), so later errors point at
    // the YAML.
    let block_line = line_of(DEBATE, "topic: \"Should");
    assert_eq!(step("decide.round").id.pos.unwrap().line, block_line);
}

#[test]
fn reflect_and_refine_expand_into_readable_steps() {
    let spec = expanded(REFLECT);
    assert_eq!(
        ids(&spec),
        [
            "report.begin",
            "report.producer",
            "report.verifier",
            "report.review",
            "report"
        ]
    );
    let spec = expanded(REFINE);
    assert_eq!(
        ids(&spec),
        [
            "lit-review.broad",
            "lit-review.focused",
            "lit-review.pass3",
            "lit-review"
        ]
    );
    let keys: Vec<&str> = spec.state.0.iter().map(|(k, _)| k.value.as_str()).collect();
    assert_eq!(
        keys,
        [
            "question",
            "review",
            "lit_review_broad",
            "lit_review_focused",
            "lit_review_pass3"
        ]
    );
    // Each pass reads the earlier passes' results; the first has none.
    let reads = |i: usize| -> Vec<&str> {
        spec.steps[i]
            .reads
            .0
            .iter()
            .map(|r| r.value.as_str())
            .collect()
    };
    assert_eq!(reads(0), ["question"]);
    assert_eq!(
        reads(2),
        ["question", "lit_review_broad", "lit_review_focused"]
    );
}

// ---------------------------------------------------------------- errors

/// `DEBATE` with `from` replaced by `to` (which must occur).
fn debate_with(from: &str, to: &str) -> String {
    assert!(DEBATE.contains(from), "{from}");
    DEBATE.replacen(from, to, 1)
}

fn line_of(text: &str, needle: &str) -> u32 {
    text.lines().position(|l| l.contains(needle)).unwrap() as u32 + 1
}

#[test]
fn debate_errors_point_at_the_block_and_name_the_step() {
    // An unknown agent: at the name, once (compile does not repeat it for the generated step).
    let text = debate_with("contra: bear", "contra: beer");
    let (line, col, step, msg) = error(&text);
    assert_eq!((line, col), (line_of(&text, "contra: beer"), 15));
    assert_eq!(step.as_deref(), Some("decide"));
    assert_eq!(
        msg,
        "contra `beer` is not a declared agent (agents: bull, bear, judge)"
    );

    // Zero rounds: at the number.
    let text = debate_with("rounds: 3", "rounds: 0");
    let (line, col, step, msg) = error(&text);
    assert_eq!((line, col), (line_of(&text, "rounds: 0"), 15));
    assert_eq!(step.as_deref(), Some("decide"));
    assert!(msg.starts_with("`rounds` must be at least 1"), "{msg}");

    // A topic using a key the step does not read.
    let text = debate_with("{{ company }}", "{{ compnay }}");
    let (line, _, step, msg) = error(&text);
    assert_eq!(line, line_of(&text, "topic:"));
    assert_eq!(step.as_deref(), Some("decide"));
    assert_eq!(
        msg,
        "`topic` uses `compnay`, which the step does not read (add it to `reads`; the step reads: company)"
    );

    // stop_when naming an unknown key, and one that does not parse.
    let text = debate_with("decide_round.contra.concedes", "decide_rnd.contra.concedes");
    let (line, _, _, msg) = error(&text);
    assert_eq!(line, line_of(&text, "stop_when"));
    assert!(
        msg.contains("uses `decide_rnd`, which is not a state key"),
        "{msg}"
    );
    let text = debate_with("decide_round.contra.concedes", "decide_round.(");
    let (_, _, step, msg) = error(&text);
    assert_eq!(step.as_deref(), Some("decide"));
    assert!(msg.starts_with("bad `stop_when` expression"), "{msg}");

    // A missing field and a misspelt one: the YAML reader's errors, with their line.
    let text = debate_with("      arbitrator: judge\n", "");
    let d = errors(&text);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].message.contains("missing field `arbitrator`"), "{d:?}");
    assert!(d[0].pos.is_some());
    let text = debate_with("rounds: 3", "round: 3");
    let d = errors(&text);
    assert!(d[0].message.contains("unknown field `round`"), "{d:?}");
    assert_eq!(d[0].pos.unwrap().line, line_of(&text, "round: 3"));
}

#[test]
fn a_block_step_is_entered_through_needs_and_does_one_thing() {
    // A transition into the block would start its end without the debate.
    let text = debate_with(
        "    function: noop\n    output: memo",
        "    function: noop\n    output: memo\n    next: decide",
    );
    let (line, col, step, msg) = error(&text);
    assert_eq!((line, col), (line_of(&text, "next: decide"), 11));
    assert_eq!(step.as_deref(), Some("scope"));
    assert_eq!(
        msg,
        "`next` goes to `decide`, the end of a `debate:` block (it completes when the block is done): lead to its first step `decide.begin` instead, or reach `decide` through `needs`"
    );
    let text = debate_with("name: debate\n", "name: debate\nstart: [scope, decide]\n");
    let (line, col, _, msg) = error(&text);
    assert_eq!((line, col), (3, 16));
    assert_eq!(
        msg,
        "`start:` names `decide`, the end of a `debate:` block (it completes when the block is done): name its first step `decide.begin` instead"
    );

    // Fields the block replaces, and its own bound instead of max_visits.
    let text = debate_with(
        "    output: decision",
        "    output: decision\n    agent: judge",
    );
    let (_, _, step, msg) = error(&text);
    assert_eq!(step.as_deref(), Some("decide"));
    assert!(msg.contains("remove `agent`"), "{msg}");
    let text = debate_with(
        "    output: decision",
        "    output: decision\n    max_visits: 2",
    );
    let (_, _, _, msg) = error(&text);
    assert_eq!(
        msg,
        "`max_visits` does not apply to a `debate:` step: its loop is bounded by `rounds`"
    );

    // A generated key declared with another merge rule.
    let text = debate_with(
        "  memo: replace",
        "  memo: replace\n  decide_transcript: replace",
    );
    let (line, _, _, msg) = error(&text);
    assert_eq!(line, line_of(&text, "decide_transcript: replace"));
    assert!(
        msg.starts_with("state key `decide_transcript` is generated by this step's pattern block with merge rule `append`"),
        "{msg}"
    );
}

#[test]
fn reflect_errors() {
    let with = |from: &str, to: &str| {
        assert!(REFLECT.contains(from), "{from}");
        REFLECT.replacen(from, to, 1)
    };
    // The verifier must answer {passed, reasons}.
    let text = with("verifier: checker", "verifier: writer");
    let (line, col, step, msg) = error(&text);
    assert_eq!((line, col), (line_of(&text, "verifier: writer"), 17));
    assert_eq!(step.as_deref(), Some("report"));
    assert!(
        msg.starts_with("verifier `writer` must answer with a verdict: give the agent an `output_schema` with a required boolean `passed`"),
        "{msg}"
    );
    let text = with("max_rounds: 2", "max_rounds: 0");
    let (line, _, _, msg) = error(&text);
    assert_eq!(line, line_of(&text, "max_rounds: 0"));
    assert!(msg.starts_with("`max_rounds` must be at least 1"), "{msg}");
    let text = with(
        "on_bound: accept_last",
        "on_bound: accept_last\n      converge: 1.5",
    );
    let (_, _, _, msg) = error(&text);
    assert_eq!(
        msg,
        "`converge` is a similarity between 0 (exclusive) and 1, not 1.5"
    );
    let text = with("on_bound: accept_last", "on_bound: keep_going");
    let d = errors(&text);
    assert!(d[0].message.contains("keep_going"), "{d:?}");
    assert_eq!(d[0].pos.unwrap().line, line_of(&text, "keep_going"));
    let text = with("producer: writer", "producer: ghost");
    let (_, _, _, msg) = error(&text);
    assert_eq!(
        msg,
        "producer `ghost` is not a declared agent (agents: writer, checker)"
    );
    // Two blocks on one step.
    let text = with(
        "    output: report",
        "    output: report\n    debate: {topic: t, pro: writer, contra: writer, arbitrator: writer}",
    );
    let d = errors(&text);
    assert!(
        d.iter().any(|d| d.message
            == "a step carries one pattern block, this one has debate and reflect: split it into one step per pattern"),
        "{d:?}"
    );
}

#[test]
fn refine_errors() {
    let with = |from: &str, to: &str| {
        assert!(REFINE.contains(from), "{from}");
        REFINE.replacen(from, to, 1)
    };
    // stop_when on the last pass has nothing to stop.
    let text = with(
        "(broad: {{ lit_review_broad }}).\"",
        "(broad: {{ lit_review_broad }}).\"\n          stop_when: \"true\"",
    );
    let (line, _, step, msg) = error(&text);
    assert_eq!(line, line_of(&text, "stop_when: \"true\""));
    assert_eq!(step.as_deref(), Some("lit-review"));
    assert_eq!(
        msg,
        "`stop_when` on the last pass (`pass3`) has no later pass to skip: remove it"
    );
    // A pass cannot read a later pass's result.
    let text = with("Narrow {{ previous }}", "Narrow {{ lit_review_pass3 }}");
    let (line, _, _, msg) = error(&text);
    assert_eq!(line, line_of(&text, "Narrow {{"));
    assert!(
        msg.starts_with("`passes[1].prompt` uses `lit_review_pass3`, which the step does not read"),
        "{msg}"
    );
    // Two passes of one name; a name that cannot be a step id part.
    let text = with("name: focused", "name: broad");
    let (_, _, _, msg) = error(&text);
    assert_eq!(msg, "two passes are called `broad`");
    let text = with("name: focused", "name: \"focused pass\"");
    let (_, _, _, msg) = error(&text);
    assert_eq!(
        msg,
        "pass name `focused pass`: use letters, digits, `_` and `-` only"
    );
    let text = with("agent: analyst", "agent: analist");
    let (line, col, _, msg) = error(&text);
    assert_eq!((line, col), (line_of(&text, "agent: analist"), 18));
    assert_eq!(
        msg,
        "agent `analist` is not a declared agent (agents: scout, analyst, expert)"
    );
    // No passes at all.
    let text = r#"
name: empty
state: {q: replace}
steps:
  - id: r
    refine: {passes: []}
"#;
    let (line, _, step, msg) = error(text);
    assert_eq!((line, step.as_deref()), (6, Some("r")));
    assert_eq!(msg, "a refinement needs at least one pass under `passes`");
}

// ---------------------------------------------------------------- running

const DEBATE_SCRIPT: &str = r#"
agents:
  bull:
    replies:
      - json: {argument: "growth", concedes: false}
      - json: {argument: "synergies", concedes: false}
      - json: {argument: "moat", concedes: false}
    then: cycle
  bear:
    replies:
      - json: {argument: "price", concedes: false}
      - json: {argument: "integration", concedes: false}
      - json: {argument: "people", concedes: false}
    then: cycle
  judge:
    - text: "Acquire, with an earn-out."
"#;

#[tokio::test]
async fn the_debate_runs_exactly_its_rounds_and_the_arbitrator_sees_the_transcript() {
    // The script would answer forever (`then: cycle`): only the round bound stops the debate.
    let reg = registry(DEBATE_SCRIPT);
    let wf = compile_str(DEBATE, "wf.yaml", &reg).unwrap();
    let (report, events) = run(wf.clone(), json!({"company": "ACME"})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    let ev = json_events(&events);
    let calls_made = model_calls(&ev);
    assert_eq!(calls(&calls_made, "decide.pro", "bull"), 3);
    assert_eq!(calls(&calls_made, "decide.contra", "bear"), 3);
    assert_eq!(calls(&calls_made, "decide.arbitrator", "judge"), 1);
    assert_eq!(calls_made.len(), 7);
    // Strict alternation, pro first, the arbitrator last.
    let order: Vec<&str> = calls_made.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        order,
        [
            "decide.pro",
            "decide.contra",
            "decide.pro",
            "decide.contra",
            "decide.pro",
            "decide.contra",
            "decide.arbitrator"
        ]
    );
    // The arbitrator's prompt holds the topic and all six tagged arguments, in order.
    let p = prompt_of(&ev, "decide.arbitrator");
    assert!(p.starts_with("Should we acquire ACME?"), "{p}");
    let tagged = [
        "[round 1, pro, bull] {\"argument\": \"growth\", \"concedes\": false}",
        "[round 1, contra, bear] {\"argument\": \"price\", \"concedes\": false}",
        "[round 2, pro, bull] {\"argument\": \"synergies\", \"concedes\": false}",
        "[round 2, contra, bear] {\"argument\": \"integration\", \"concedes\": false}",
        "[round 3, pro, bull] {\"argument\": \"moat\", \"concedes\": false}",
        "[round 3, contra, bear] {\"argument\": \"people\", \"concedes\": false}",
    ];
    let mut at = 0;
    for t in tagged {
        let i = p[at..]
            .find(t)
            .unwrap_or_else(|| panic!("`{t}` not in order in:\n{p}"));
        at += i + t.len();
    }
    // The contra side answers the pro side's argument of the same round.
    let contra_prompts: Vec<&str> = ev
        .iter()
        .filter(|e| e["type"] == "step_started" && e["step"] == "decide.contra")
        .map(|e| e["messages"][1]["content"].as_str().unwrap())
        .collect();
    assert!(contra_prompts[1].contains("This is round 2 of 3."));
    assert!(contra_prompts[1].contains("the pro side argued:\n{\"argument\": \"synergies\""));
    // The transcript in state is tagged; the output is the arbitrator's answer; `after` ran.
    let t = report.outputs["decide_transcript"].as_array().unwrap();
    assert_eq!(t.len(), 6);
    assert_eq!(
        t[3],
        json!({"round": 2, "side": "contra", "agent": "bear",
               "argument": {"argument": "integration", "concedes": false}})
    );
    assert_eq!(report.outputs["decision"], "Acquire, with an earn-out.");
    assert_eq!(report.outputs["decide_round"]["round"], 3);
    assert_eq!(
        report.completed_steps.last().map(String::as_str),
        Some("after")
    );
    // The last round ends on the bound, visibly.
    let tr = transitions(&ev);
    assert_eq!(
        tr.iter()
            .filter(|(f, _, _)| f == "decide.round")
            .map(|(_, to, when)| (to.as_str(), when.as_deref()))
            .collect::<Vec<_>>(),
        [
            ("decide.pro", Some("decide_round.round < 3")),
            ("decide.pro", Some("decide_round.round < 3")),
            ("decide.arbitrator", Some("decide_round.round >= 3"))
        ]
    );
    // Replaying the log rebuilds the same state (the generated round function is not rerun).
    let m = RunMachine::replay(wf, report.run_id.parse().unwrap(), &events).unwrap();
    assert_eq!(m.outputs(), report.outputs);
}

#[tokio::test]
async fn a_concession_ends_the_debate_early() {
    let reg = registry(
        r#"
agents:
  bull:
    replies: [{json: {argument: "growth", concedes: false}}]
    then: repeat_last
  bear:
    - json: {argument: "price", concedes: false}
    - json: {argument: "fair enough", concedes: true}
  judge:
    - text: "Acquire."
"#,
    );
    let wf = compile_str(DEBATE, "wf.yaml", &reg).unwrap();
    let (report, events) = run(wf, json!({"company": "ACME"})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    let ev = json_events(&events);
    let c = model_calls(&ev);
    assert_eq!(
        (
            calls(&c, "decide.pro", "bull"),
            calls(&c, "decide.contra", "bear")
        ),
        (2, 2)
    );
    assert!(transitions(&ev).contains(&(
        "decide.round".into(),
        "decide.arbitrator".into(),
        Some("decide_round.contra.concedes".into())
    )));
    assert!(prompt_of(&ev, "decide.arbitrator").contains("over 2 round(s)"));
}

#[tokio::test]
async fn a_retried_turn_does_not_cost_the_debate_a_round() {
    // The bull's second call fails for good (400); `retries: 1` runs the turn again, which is
    // another visit of `decide.pro` in round 2: the debate still gets its three rounds (the
    // visit bound of the generated steps leaves room for retries).
    let reg = registry(
        r#"
agents:
  bull:
    - json: {argument: "growth", concedes: false}
    - error: {status: 400, message: "bad request"}
    - json: {argument: "synergies", concedes: false}
    - json: {argument: "moat", concedes: false}
  bear:
    replies: [{json: {argument: "price", concedes: false}}]
    then: repeat_last
  judge:
    - text: "Acquire."
"#,
    );
    let text = debate_with(
        "    output: decision",
        "    output: decision\n    retries: 1",
    );
    let wf = compile_str(&text, "wf.yaml", &reg).unwrap();
    let (report, events) = run(wf, json!({"company": "ACME"})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    let ev = json_events(&events);
    let c = model_calls(&ev);
    assert_eq!(
        (
            calls(&c, "decide.pro", "bull"),
            calls(&c, "decide.contra", "bear")
        ),
        (3, 3)
    );
    let retried: Vec<&Value> = ev
        .iter()
        .filter(|e| e["type"] == "step_failed" && e["step"] == "decide.pro")
        .collect();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0]["policy"], "retry");
    // The third round's pro turn is the step's fourth visit, within its bound.
    let last_visit = ev
        .iter()
        .filter(|e| e["type"] == "step_started" && e["step"] == "decide.pro")
        .map(|e| e["visit"].as_u64().unwrap())
        .max();
    assert_eq!(last_visit, Some(4));
    assert_eq!(report.visits["decide.pro"], 3);
    assert_eq!(
        report.outputs["decide_transcript"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
}

#[tokio::test]
async fn a_retried_turn_keeps_the_transcript_in_order() {
    let reg = registry(
        r#"
agents:
  bull:
    - json: {argument: "growth", concedes: false}
    - error: {status: 400, message: "bad request"}
    - json: {argument: "synergies", concedes: false}
    - json: {argument: "moat", concedes: false}
  bear:
    replies: [{json: {argument: "price", concedes: false}}]
    then: repeat_last
  judge:
    - text: "Acquire."
"#,
    );
    let text = debate_with(
        "    output: decision",
        "    output: decision\n    retries: 1",
    );
    let wf = compile_str(&text, "wf.yaml", &reg).unwrap();
    let (report, _) = run(wf, json!({"company": "ACME"})).await;
    let t = report.outputs["decide_transcript"].as_array().unwrap();
    let order: Vec<(u64, &str)> = t
        .iter()
        .map(|e| {
            (
                e["round"].as_u64().unwrap(),
                e["argument"]["argument"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            (1, "growth"),
            (1, "price"),
            (2, "synergies"),
            (2, "price"),
            (3, "moat"),
            (3, "price")
        ]
    );
}

fn agent(instructions: &str, schema: Option<Value>) -> AgentSpec {
    AgentSpec {
        instructions: instructions.into(),
        output_schema: schema.map(Loc::new),
        ..AgentSpec::default()
    }
}

#[tokio::test]
async fn a_debate_built_in_rust_runs_like_the_yaml_one() {
    let reg = registry(
        r#"
agents:
  pro: [{text: "yes 1"}, {text: "yes 2"}]
  con: [{text: "no 1"}, {text: "no 2"}]
  arb: [{text: "no, because of no 2"}]
"#,
    );
    let wf = WorkflowBuilder::new("built")
        .state("question", MergeRule::Replace)
        .state("verdict", MergeRule::Replace)
        .agent("pro", agent("Argue for.", None))
        .agent("con", agent("Argue against.", None))
        .agent("arb", agent("Decide.", None))
        .step(
            StepBuilder::debate("d", DebateSpec::new("{{ question }}", "pro", "con", "arb"))
                .reads(["question"])
                .output("verdict"),
        )
        .build(&reg)
        .unwrap();
    assert_eq!(
        wf.step_names().collect::<Vec<_>>(),
        [
            "d.begin",
            "d.pro",
            "d.contra",
            "d.round",
            "d.arbitrator",
            "d"
        ]
    );
    let (report, events) = run(wf, json!({"question": "Ship it?"})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(report.outputs["verdict"], "no, because of no 2");
    let ev = json_events(&events);
    // Default: two rounds.
    assert_eq!(model_calls(&ev).len(), 5);
    let p = prompt_of(&ev, "d.arbitrator");
    assert!(p.contains("[round 2, contra, con] no 2"), "{p}");
}

const VERDICT: &str = r#"{type: object, required: [passed, reasons], properties: {passed: {type: boolean}, reasons: {type: array, items: {type: string}}}}"#;

#[tokio::test]
async fn the_verifier_sends_drafts_back_with_reasons_until_one_passes() {
    let reg = registry(
        r#"
agents:
  writer: [{text: "Sales rose 25%."}, {text: "Sales rose 18%."}]
  checker:
    - json: {passed: false, reasons: ["25% is not in the sources; they say 18%"]}
    - json: {passed: true, reasons: []}
"#,
    );
    let wf = compile_str(REFLECT, "wf.yaml", &reg).unwrap();
    let (report, events) = run(wf, json!({"sources": "Sales rose 18%."})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(report.outputs["report"], "Sales rose 18%.");
    assert_eq!(report.outputs["report_review"]["outcome"], "passed");
    let ev = json_events(&events);
    assert_eq!(
        model_calls(&ev),
        [
            ("report.producer".to_string(), "writer".to_string()),
            ("report.verifier".into(), "checker".into()),
            ("report.producer".into(), "writer".into()),
            ("report.verifier".into(), "checker".into()),
        ]
    );
    // The second draft was asked for with the reasons and the rejected draft.
    let second = ev
        .iter()
        .filter(|e| e["type"] == "step_started" && e["step"] == "report.producer")
        .nth(1)
        .unwrap()["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(second.starts_with("Summarise Sales rose 18%.."), "{second}");
    assert!(
        second.contains("- 25% is not in the sources; they say 18%"),
        "{second}"
    );
    assert!(
        second.contains("Your previous draft:\nSales rose 25%."),
        "{second}"
    );
    // The verifier saw the draft it judged.
    assert!(prompt_of(&ev, "report.verifier").contains("round 1 of 2):\nSales rose 25%."));
}

#[tokio::test]
async fn at_the_bound_the_step_fails_or_accepts_the_last_draft() {
    let script = r#"
agents:
  writer: [{text: "draft one"}, {text: "a second, different draft"}, {text: "never asked"}]
  checker:
    replies: [{json: {passed: false, reasons: ["unsupported claim"]}}]
    then: repeat_last
"#;
    // accept_last: two drafts (max_rounds 2), the last is the output, the review says `bound`.
    let reg = registry(script);
    let wf = compile_str(REFLECT, "wf.yaml", &reg).unwrap();
    let (report, events) = run(wf, json!({"sources": "S"})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(report.outputs["report"], "a second, different draft");
    assert_eq!(report.outputs["report_review"]["outcome"], "bound");
    assert_eq!(report.outputs["report_review"]["passed"], false);
    assert_eq!(model_calls(&json_events(&events)).len(), 4);

    // fail (the default), with a dependent and `on_error: continue`: the step fails with the
    // verifier's reasons, its dependent is skipped, the run is a partial success.
    let text = REFLECT
        .replace("      on_bound: accept_last\n", "")
        .replace(
            "    output: report\n",
            "    output: report\n    on_error: continue\n  - id: publish\n    function: noop\n    needs: report\n",
        );
    let reg = registry(script);
    let wf = compile_str(&text, "wf.yaml", &reg).unwrap();
    let (report, events) = run(wf, json!({"sources": "S"})).await;
    assert_eq!(report.status, RunStatus::PartialSuccess, "{report:?}");
    assert_eq!(report.failed_steps.len(), 1, "{report:?}");
    assert_eq!(report.failed_steps[0].step, "report");
    assert_eq!(
        report.failed_steps[0].error,
        "verifier `checker` did not pass the draft: 2 draft(s) made, the bound (max_rounds 2); its last reasons: unsupported claim"
    );
    assert_eq!(report.skipped_steps[0].step, "publish");
    assert_eq!(report.outputs["report"], Value::Null);
    assert_eq!(model_calls(&json_events(&events)).len(), 4);
}

#[tokio::test]
async fn drafts_that_stop_changing_end_the_loop_before_the_bound() {
    let text = REFLECT.replace("max_rounds: 2", "max_rounds: 5").replace(
        "on_bound: accept_last",
        "on_bound: accept_last\n      converge: 0.9",
    );
    let reg = registry(
        r#"
agents:
  writer:
    replies: [{text: "Sales rose 25% in the quarter."}]
    then: repeat_last
  checker:
    replies: [{json: {passed: false, reasons: ["25% is wrong"]}}]
    then: repeat_last
"#,
    );
    let wf = compile_str(&text, "wf.yaml", &reg).unwrap();
    let (report, events) = run(wf, json!({"sources": "S"})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(report.outputs["report_review"]["outcome"], "converged");
    assert_eq!(report.outputs["report_review"]["similarity"], 1.0);
    // Two drafts, not five.
    assert_eq!(model_calls(&json_events(&events)).len(), 4);
}

const REFINE_SCRIPT: &str = r#"
agents:
  scout: [{text: "three threads"}]
  analyst: [{text: "one thread"}]
  expert: [{text: "the detailed review"}]
"#;

#[tokio::test]
async fn refinement_narrows_pass_by_pass() {
    let reg = registry(REFINE_SCRIPT);
    let wf = compile_str(REFINE, "wf.yaml", &reg).unwrap();
    let (report, events) = run(wf, json!({"question": "Q"})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(report.outputs["review"], "the detailed review");
    let ev = json_events(&events);
    assert_eq!(
        model_calls(&ev),
        [
            ("lit-review.broad".to_string(), "scout".to_string()),
            ("lit-review.focused".into(), "analyst".into()),
            ("lit-review.pass3".into(), "expert".into()),
        ]
    );
    // Each pass sees the one before as `previous` (and earlier ones by key).
    assert_eq!(
        prompt_of(&ev, "lit-review.focused"),
        "Narrow three threads on Q."
    );
    assert_eq!(
        prompt_of(&ev, "lit-review.pass3"),
        "Detail one thread (broad: three threads)."
    );
}

#[tokio::test]
async fn a_pass_that_finds_nothing_ends_the_refinement() {
    let reg = registry(
        r#"
agents:
  scout: [{text: "nothing"}]
  analyst: [{text: "never asked"}]
  expert: [{text: "never asked"}]
"#,
    );
    let wf = compile_str(REFINE, "wf.yaml", &reg).unwrap();
    let (report, events) = run(wf, json!({"question": "Q"})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(report.completed_steps, ["lit-review.broad", "lit-review"]);
    assert_eq!(report.outputs["review"], "nothing");
    let ev = json_events(&events);
    assert_eq!(model_calls(&ev).len(), 1);
    assert_eq!(
        transitions(&ev),
        [(
            "lit-review.broad".to_string(),
            "lit-review".to_string(),
            Some("lit_review_broad == 'nothing'".to_string())
        )]
    );
    assert!(
        !ev.iter()
            .any(|e| e["type"] == "step_started" && e["step"] == "lit-review.focused")
    );
}

#[tokio::test]
async fn refinement_and_reflection_built_in_rust() {
    let reg = registry(
        r#"
agents:
  a: [{text: "leads: none"}]
  b: [{text: "never asked"}]
  w: [{text: "draft"}]
  v: [{json: {passed: true, reasons: []}}]
"#,
    );
    let schema: Value = serde_saphyr::from_str(VERDICT).unwrap();
    let wf = WorkflowBuilder::new("built")
        .state("q", MergeRule::Replace)
        .state("found", MergeRule::Replace)
        .state("text", MergeRule::Replace)
        .agent("a", agent("Survey.", None))
        .agent("b", agent("Detail.", None))
        .agent("w", agent("Write.", None))
        .agent("v", agent("Verify.", Some(schema)))
        .step(
            StepBuilder::refine(
                "r",
                RefineSpec::new()
                    .pass(
                        PassSpec::new("wide", "a", "{{ q }}").stop_when("r_wide == 'leads: none'"),
                    )
                    .pass(PassSpec::new("deep", "b", "{{ previous }}")),
            )
            .reads(["q"])
            .output("found"),
        )
        .step(
            StepBuilder::reflect(
                "w",
                ReflectSpec::new("w", "Write about {{ found }}", "v")
                    .max_rounds(2)
                    .on_bound(OnBound::Fail),
            )
            .needs(["r"])
            .reads(["found"])
            .output("text"),
        )
        .build(&reg)
        .unwrap();
    let (report, events) = run(wf, json!({"q": "Q"})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(report.outputs["text"], "draft");
    let c = model_calls(&json_events(&events));
    assert_eq!(calls(&c, "r.deep", "b"), 0);
    assert_eq!(c.len(), 3);
    assert_eq!(
        prompt_of(&json_events(&events), "w.producer"),
        "Write about leads: none"
    );
}
