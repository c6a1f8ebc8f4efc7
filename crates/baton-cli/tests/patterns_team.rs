//! Team patterns, run through the `baton` binary on their examples: the software team with
//! error-analyser routing (`examples/software-team`), per-node model routing (its cost
//! breakdown), adaptive topology (`examples/adaptive-support`) and recursive decomposition
//! (`examples/product-launch`, and a fixture nesting one level too deep). Each test checks who
//! was called, in what order or together, which route was taken and why, and what it cost; the
//! Rust-API tests build the same workflows with `WorkflowBuilder` and check they behave alike.

#![allow(clippy::unwrap_used)]

#[path = "support/cli.rs"]
mod cli;

use baton_core::DynModel;
use baton_providers::ScriptedModel;
use baton_runtime::builder::{StepBuilder, WorkflowBuilder};
use baton_runtime::spec::{AgentSpec, MergeRule, ModelSpec, PriceSpec};
use baton_runtime::{ModelBuildError, ModelEntry, ModelFactory, ModelField, Registry, Runtime};
use baton_store::MemoryStore;
use cli::{Run, assert_status, example_dir, run};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

// ------------------------------------------------------------------------------------ helpers

/// The prices the examples declare, US dollars per million tokens (input, output).
fn price(model: &str) -> (f64, f64) {
    match model {
        "claude-opus" => (15.00, 75.00),
        "claude-sonnet" => (3.00, 15.00),
        "claude-haiku" => (0.80, 4.00),
        other => panic!("no price for {other}"),
    }
}

/// Tokens × price, by hand.
fn cost(model: &str, input_tokens: u64, output_tokens: u64) -> f64 {
    let (i, o) = price(model);
    (input_tokens as f64 * i + output_tokens as f64 * o) / 1e6
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// The steps started, in order (one entry per visit).
fn started(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "step_started")
        .map(|e| e["step"].as_str().unwrap().to_string())
        .collect()
}

/// The agents whose model was called, in order.
fn called(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "model_called")
        .map(|e| e["agent"].as_str().unwrap().to_string())
        .collect()
}

/// Every transition: (from, to, when).
fn transitions(events: &[Value]) -> Vec<(String, Vec<String>, Option<String>)> {
    events
        .iter()
        .filter(|e| e["type"] == "transition")
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_string(),
                cli::strings(&e["to"]),
                e["when"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// The transitions leaving one step: (to, when).
fn routes_from(events: &[Value], from: &str) -> Vec<(Vec<String>, Option<String>)> {
    transitions(events)
        .into_iter()
        .filter(|(f, _, _)| f == from)
        .map(|(_, to, when)| (to, when))
        .collect()
}

/// The last user message of each start of `step`, in order.
fn prompts(events: &[Value], step: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "step_started" && e["step"] == step)
        .map(|e| {
            let msgs = e["messages"].as_array().unwrap();
            msgs.last().unwrap()["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// The scheduling round each start of `step` began in.
fn rounds(events: &[Value], step: &str) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e["type"] == "step_started" && e["step"] == step)
        .map(|e| e["round"].as_u64().unwrap())
        .collect()
}

/// `completed_steps` is `first`, then the parallel steps in any order (they finish in whatever
/// order they finish), then `last`.
fn assert_completed(r: &Run, first: &[&str], parallel: &[&str], last: &[&str]) {
    let done = r.completed();
    assert_eq!(
        done.len(),
        first.len() + parallel.len() + last.len(),
        "{done:?}"
    );
    assert_eq!(&done[..first.len()], strs(first).as_slice(), "{done:?}");
    let mut middle = done[first.len()..first.len() + parallel.len()].to_vec();
    middle.sort();
    let mut expected = strs(parallel);
    expected.sort();
    assert_eq!(middle, expected, "{done:?}");
    assert_eq!(
        &done[done.len() - last.len()..],
        strs(last).as_slice(),
        "{done:?}"
    );
}

/// `cost_breakdown` as agent -> (model, calls, input tokens, output tokens, cost).
fn breakdown(report: &Value) -> BTreeMap<String, (String, u64, u64, u64, f64)> {
    report["cost_breakdown"]
        .as_array()
        .expect("the report has a cost_breakdown")
        .iter()
        .map(|l| {
            (
                l["agent"].as_str().unwrap().to_string(),
                (
                    l["model"].as_str().unwrap().to_string(),
                    l["model_calls"].as_u64().unwrap(),
                    l["input_tokens"].as_u64().unwrap(),
                    l["output_tokens"].as_u64().unwrap(),
                    l["cost_usd"].as_f64().unwrap(),
                ),
            )
        })
        .collect()
}

/// Every breakdown line's cost is its tokens × its model's price, and the lines add up to the
/// run's cost (for a run without sub-workflows).
fn assert_breakdown_priced(r: &Run) {
    let lines = breakdown(&r.report);
    let mut total = 0.0;
    for (agent, (model, _, input, output, usd)) in &lines {
        let expected = cost(model, *input, *output);
        assert!(
            close(*usd, expected),
            "{agent} on {model}: {usd} != {expected}"
        );
        total += usd;
    }
    let run_cost = r.report["usage"]["cost_usd"].as_f64().unwrap();
    assert!(close(total, run_cost), "lines {total} != run {run_cost}");
}

fn run_cost(r: &Run) -> f64 {
    r.report["usage"]["cost_usd"].as_f64().unwrap()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// `baton --store <store> <args...>`: exit code, stdout, stderr.
fn baton(store: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
    match store {
        Some(s) => cmd.arg("--store").arg(s),
        None => cmd.arg("--store").arg("memory"),
    };
    let out = cmd.args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `baton show RUN --json` on the run's store.
fn show(store: &str, run_id: &str) -> Value {
    let (code, out, err) = baton(Some(store), &["show", run_id, "--json"]);
    assert_eq!(code, 0, "baton show failed: {err}");
    serde_json::from_str(&out).unwrap()
}

/// `baton events RUN --json` on the run's store.
fn events_of_run(store: &str, run_id: &str) -> Vec<Value> {
    let (code, out, err) = baton(Some(store), &["events", run_id, "--json"]);
    assert_eq!(code, 0, "baton events failed: {err}");
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The one child run started by `step` (from its `child_started` event).
fn child_of(events: &[Value], step: &str) -> String {
    let started: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "child_started" && e["step"] == step)
        .collect();
    assert_eq!(started.len(), 1, "one child run for `{step}`");
    started[0]["child"].as_str().unwrap().to_string()
}

// ------------------------------------------------------------------ software team: routings

const LOGIC: &str = "diagnosis.kind == 'syntax' || diagnosis.kind == 'logic'";
const DESIGN: &str = "diagnosis.kind == 'design'";
const ENVIRONMENT: &str = "diagnosis.kind == 'environment'";

#[test]
fn software_team_logic_error_goes_back_to_the_coder() {
    let r = run("software-team", "input.json", &[]);
    assert_status(&r, "succeeded", 0);
    assert_eq!(
        r.completed(),
        strs(&[
            "architect",
            "coder",
            "tester",
            "analyse",
            "reviewer",
            "doc_writer"
        ])
    );
    assert_eq!(r.report["visits"], json!({"coder": 2, "tester": 2}));

    let ev = r.events();
    assert_eq!(
        started(&ev),
        strs(&[
            "architect",
            "coder",
            "tester",
            "analyse",
            "coder",
            "tester",
            "reviewer",
            "doc_writer"
        ])
    );
    // The architect is not bothered with the coder's bug; devops never runs.
    assert_eq!(
        called(&ev),
        strs(&[
            "architect",
            "coder",
            "tester",
            "analyst",
            "coder",
            "tester",
            "reviewer",
            "doc_writer"
        ])
    );

    // The routing decisions, with the conditions that made them.
    assert_eq!(
        routes_from(&ev, "tester"),
        [
            (strs(&["analyse"]), None),
            (strs(&["reviewer"]), Some("test_report.passed".to_string())),
        ]
    );
    assert_eq!(
        routes_from(&ev, "analyse"),
        [(strs(&["coder"]), Some(LOGIC.to_string()))]
    );

    // The analyser read the tester's report and classified it; the coder's second prompt
    // carries the failure and the analyser's reason.
    let o = r.outputs();
    assert_eq!(o["diagnosis"]["kind"], "logic");
    assert!(
        prompts(&ev, "analyse")[0].contains("AssertionError: list('ada', done=False)"),
        "{:?}",
        prompts(&ev, "analyse")
    );
    let coder = prompts(&ev, "coder");
    assert!(
        !coder[0].contains("previous version failed"),
        "{}",
        coder[0]
    );
    assert!(
        coder[1].contains("test_list_filters_by_done")
            && coder[1].contains("Error analyst (logic): list() keeps the todos"),
        "{}",
        coder[1]
    );
    assert!(
        o["patch"]["code"]
            .as_str()
            .unwrap()
            .contains("t[\"done\"] == done")
    );
    assert_eq!(o["test_report"]["passed"], true);
    assert_eq!(o["review"]["approved"], true);
    assert!(o["docs"].as_str().unwrap().starts_with("# TodoStore"));
    assert_eq!(o["env_fix"], Value::Null);
}

#[test]
fn software_team_design_error_goes_back_to_the_architect() {
    let r = run(
        "software-team",
        "input.json",
        &["--script", "script-design.yaml"],
    );
    assert_status(&r, "succeeded", 0);
    assert_eq!(
        r.report["visits"],
        json!({"architect": 2, "coder": 2, "tester": 2})
    );
    let ev = r.events();
    assert_eq!(
        started(&ev),
        strs(&[
            "architect",
            "coder",
            "tester",
            "analyse",
            "architect",
            "coder",
            "tester",
            "reviewer",
            "doc_writer"
        ])
    );
    assert_eq!(
        routes_from(&ev, "analyse"),
        [(strs(&["architect"]), Some(DESIGN.to_string()))]
    );

    // The architect's second visit sees the failures and the analyser's reason, and the
    // revised design scopes every call by user, which the coder then follows.
    let architect = prompts(&ev, "architect");
    assert!(!architect[0].contains("failed"), "{}", architect[0]);
    assert!(
        architect[1].contains("TypeError: TodoStore.add() takes 2 positional arguments")
            && architect[1].contains("Error analyst: The interface takes no user"),
        "{}",
        architect[1]
    );
    let o = r.outputs();
    assert_eq!(o["diagnosis"]["kind"], "design");
    assert!(
        o["design"]["interface"]
            .as_str()
            .unwrap()
            .starts_with("TodoStore().add(user, title)")
    );
    let coder = prompts(&ev, "coder");
    assert!(
        coder[1].contains("Interface: TodoStore().add(user, title)"),
        "{}",
        coder[1]
    );
    assert_eq!(o["test_report"]["passed"], true);

    // The strong model ran twice for the architect: a design error costs more than a bug.
    let lines = breakdown(&r.report);
    assert_eq!(lines["architect"].0, "claude-opus");
    assert_eq!(lines["architect"].1, 2);
    assert_breakdown_priced(&r);
}

#[test]
fn software_team_environment_error_goes_to_devops_and_reruns_the_tests() {
    let r = run(
        "software-team",
        "input.json",
        &["--script", "script-environment.yaml"],
    );
    assert_status(&r, "succeeded", 0);
    let ev = r.events();
    assert_eq!(
        started(&ev),
        strs(&[
            "architect",
            "coder",
            "tester",
            "analyse",
            "devops",
            "tester",
            "reviewer",
            "doc_writer"
        ])
    );
    assert_eq!(
        routes_from(&ev, "analyse"),
        [(strs(&["devops"]), Some(ENVIRONMENT.to_string()))]
    );
    // Neither the coder nor the architect runs again: the same module is tested again once
    // the environment is fixed, and the tester is told what changed.
    assert_eq!(r.report["visits"], json!({"tester": 2}));
    let tester = prompts(&ev, "tester");
    assert!(!tester[0].contains("Environment change"), "{}", tester[0]);
    assert!(
        tester[1].contains("Environment change since the last run: Added freezegun==1.5.1"),
        "{}",
        tester[1]
    );
    let o = r.outputs();
    assert_eq!(o["diagnosis"]["kind"], "environment");
    assert!(
        o["env_fix"]["change"]
            .as_str()
            .unwrap()
            .contains("freezegun")
    );
    assert_eq!(breakdown(&r.report)["devops"].0, "claude-haiku");
}

#[test]
fn software_team_fix_loop_is_bounded_by_max_visits() {
    let r = run(
        "software-team",
        "input.json",
        &["--script", "script-stuck.yaml"],
    );
    assert_status(&r, "failed", 1);
    assert_eq!(
        r.report["visits"],
        json!({"analyse": 3, "coder": 3, "tester": 3})
    );
    assert_eq!(r.failed(), ["coder"]);
    assert_eq!(
        r.report["failed_steps"][0]["error"],
        "visit bound reached: the step already ran 3 time(s) (max_visits 3)"
    );
    let ev = r.events();
    // Three rounds of coder -> tester -> analyse, each sent back to the coder, then the
    // fourth visit of the coder does not start.
    assert_eq!(
        routes_from(&ev, "analyse"),
        vec![(strs(&["coder"]), Some(LOGIC.to_string())); 3]
    );
    assert_eq!(
        started(&ev).iter().filter(|s| *s == "coder").count(),
        3,
        "{:?}",
        started(&ev)
    );
    let failed = r.events_of("step_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["step"], "coder");
    assert!(
        failed[0].get("task").is_none(),
        "the fourth visit never started"
    );
    // Nobody reviews or documents code that never passed.
    let agents = called(&ev);
    assert!(
        !agents.iter().any(|a| a == "reviewer" || a == "doc_writer"),
        "{agents:?}"
    );
    assert_eq!(r.usage("model_calls"), 10);
    assert_eq!(r.outputs()["test_report"]["passed"], false);
}

// ------------------------------------------------------------------- per-node model routing

#[test]
fn software_team_cost_breakdown_shows_each_agent_on_its_model() {
    let r = run("software-team", "input.json", &[]);
    assert_status(&r, "succeeded", 0);
    let lines = breakdown(&r.report);
    let by_agent: Vec<(&str, &str, u64, u64, u64)> = lines
        .iter()
        .map(|(a, (m, n, i, o, _))| (a.as_str(), m.as_str(), *n, *i, *o))
        .collect();
    // Sorted by agent; the deciders on the strong model, the workers on the mid-priced one,
    // the classifier and the doc writer on the cheapest. Token counts are the script's.
    assert_eq!(
        by_agent,
        [
            ("analyst", "claude-haiku", 1, 1200, 300),
            ("architect", "claude-opus", 1, 1200, 300),
            ("coder", "claude-sonnet", 2, 3000, 1800),
            ("doc_writer", "claude-haiku", 1, 1200, 300),
            ("reviewer", "claude-opus", 1, 1200, 300),
            ("tester", "claude-sonnet", 2, 2400, 600),
        ]
    );
    // Each line is tokens × that model's price, computed by hand here.
    assert!(close(lines["architect"].4, 0.0405));
    assert!(close(lines["reviewer"].4, 0.0405));
    assert!(close(lines["coder"].4, 2.0 * 0.018));
    assert!(close(lines["tester"].4, 2.0 * 0.0081));
    assert!(close(lines["analyst"].4, 0.00216));
    assert!(close(lines["doc_writer"].4, 0.00216));
    assert_breakdown_priced(&r);
    assert!(close(run_cost(&r), 0.13752), "{}", run_cost(&r));

    // The model each call went to is in its event.
    for e in r.events_of("model_called") {
        let agent = e["agent"].as_str().unwrap();
        assert_eq!(e["model"], lines[agent].0.as_str(), "{agent}");
    }

    // The same eight calls all on the strong model would cost 3x as much.
    let all_strong: f64 = lines
        .values()
        .map(|(_, _, i, o, _)| cost("claude-opus", *i, *o))
        .sum();
    assert!(all_strong > 3.0 * run_cost(&r), "{all_strong}");

    // The human summary has one line per agent and model.
    let dir = example_dir("software-team");
    let (code, out, err) = baton(
        None,
        &[
            "run",
            dir.join("workflow.yaml").to_str().unwrap(),
            "--input",
            &format!("@{}", dir.join("input.json").display()),
        ],
    );
    assert_eq!(code, 0, "{err}");
    for line in [
        "architect on claude-opus: 1 call(s)",
        "coder on claude-sonnet: 2 call(s)",
        "analyst on claude-haiku: 1 call(s)",
    ] {
        assert!(out.contains(line), "no `{line}` in:\n{out}");
    }
}

#[test]
fn software_team_graph_shows_the_error_routes() {
    let g = cli::graph("software-team", "workflow.yaml");
    for edge in [
        format!("analyse -. \"{LOGIC}\" .-> coder"),
        format!("analyse -. \"{DESIGN}\" .-> architect"),
        format!("analyse -. \"{ENVIRONMENT}\" .-> devops"),
        "tester -. \"test_report.passed\" .-> reviewer".to_string(),
        "devops -.-> tester".to_string(),
    ] {
        assert!(g.contains(&edge), "no `{edge}` in:\n{g}");
    }
}

/// The software team built with the Rust API (the code of docs/patterns/software-team.md),
/// run on the example's script: the same route and the same costs as the YAML.
#[tokio::test]
async fn software_team_rust_api_matches_the_yaml() {
    let script = example_dir("software-team").join("script.yaml");
    let model = Arc::new(ScriptedModel::from_file(&script).unwrap());
    let priced = |name: &str, input: f64, output: f64| {
        ModelEntry::new(
            model.clone(),
            name,
            PriceSpec {
                input_per_mtok: input,
                output_per_mtok: output,
            },
        )
    };
    let registry = Registry::new()
        .model("strong", priced("claude-opus", 15.00, 75.00))
        .model("worker", priced("claude-sonnet", 3.00, 15.00))
        .model("cheap", priced("claude-haiku", 0.80, 4.00));

    let wf = software_team().build(&registry).unwrap();
    let runtime = Runtime::new(Arc::new(MemoryStore::new()));
    let task = "Build the storage layer of a todo API.";
    let report = runtime.run(wf, json!({ "task": task })).await.unwrap();

    assert_eq!(
        report.completed_steps,
        [
            "architect",
            "coder",
            "tester",
            "analyse",
            "reviewer",
            "doc_writer"
        ]
    );
    assert_eq!(report.visits.get("coder"), Some(&2));
    let lines: Vec<(String, String, u64)> = report
        .cost_breakdown
        .iter()
        .map(|l| (l.agent.clone(), l.model.clone(), l.model_calls))
        .collect();
    assert_eq!(
        lines,
        [
            ("analyst", "claude-haiku", 1),
            ("architect", "claude-opus", 1),
            ("coder", "claude-sonnet", 2),
            ("doc_writer", "claude-haiku", 1),
            ("reviewer", "claude-opus", 1),
            ("tester", "claude-sonnet", 2),
        ]
        .map(|(a, m, n)| (a.to_string(), m.to_string(), n))
    );
    assert!(close(report.usage.cost_usd, 0.13752));
}

fn agent(model: &str, instructions: &str, schema: Option<Value>) -> AgentSpec {
    AgentSpec {
        instructions: instructions.into(),
        model: Some(model.into()),
        output_schema: schema.map(Into::into),
        ..AgentSpec::default()
    }
}

/// The software team with the Rust API (kept in step with docs/patterns/software-team.md).
fn software_team() -> WorkflowBuilder {
    let obj = |required: &[&str], props: Value| json!({"type": "object", "required": required, "properties": props});
    WorkflowBuilder::new("software-team")
        .agent(
            "architect",
            agent(
                "strong",
                "Design the module: its interface and decisions.",
                Some(obj(
                    &["interface", "decisions"],
                    json!({"interface": {"type": "string"}, "decisions": {"type": "array"}}),
                )),
            ),
        )
        .agent(
            "coder",
            agent(
                "worker",
                "Implement the design; fix what the analyst points at.",
                Some(obj(
                    &["code", "summary"],
                    json!({"code": {"type": "string"}, "summary": {"type": "string"}}),
                )),
            ),
        )
        .agent(
            "tester",
            agent(
                "worker",
                "Run the acceptance tests; report each failure.",
                Some(obj(
                    &["passed", "failures", "summary"],
                    json!({"passed": {"type": "boolean"}, "failures": {"type": "array"}}),
                )),
            ),
        )
        .agent(
            "analyst",
            agent(
                "cheap",
                "Classify the failure: syntax, logic, design or environment.",
                Some(obj(
                    &["kind", "reason"],
                    json!({"kind": {"enum": ["syntax", "logic", "design", "environment"]}}),
                )),
            ),
        )
        .agent("devops", agent("cheap", "Fix the environment.", None))
        .agent(
            "reviewer",
            agent(
                "strong",
                "Review the module.",
                Some(obj(&["approved", "comments"], json!({}))),
            ),
        )
        .agent("doc_writer", agent("cheap", "Write the README.", None))
        .state("task", MergeRule::Replace)
        .state("design", MergeRule::Replace)
        .state("patch", MergeRule::Replace)
        .state("test_report", MergeRule::Replace)
        .state("diagnosis", MergeRule::Replace)
        .state("env_fix", MergeRule::Replace)
        .state("review", MergeRule::Replace)
        .state("docs", MergeRule::Replace)
        .start(["architect"])
        .step(
            StepBuilder::agent("architect", "architect", "Task: {{ task }}")
                .reads(["task"])
                .output("design")
                .max_visits(2)
                .next("coder"),
        )
        .step(
            StepBuilder::agent(
                "coder",
                "coder",
                "Task: {{ task }}\nInterface: {{ design.interface }}\n\
                 {% if diagnosis %}Fix ({{ diagnosis.kind }}): {{ diagnosis.reason }}{% endif %}",
            )
            .reads(["task", "design", "diagnosis"])
            .output("patch")
            .max_visits(3)
            .next("tester"),
        )
        .step(
            StepBuilder::agent("tester", "tester", "Test:\n{{ patch.code }}")
                .reads(["patch"])
                .output("test_report")
                .max_visits(4)
                .next_when(Some("test_report.passed"), "reviewer")
                .next_when(None, "analyse"),
        )
        .step(
            StepBuilder::agent(
                "analyse",
                "analyst",
                "{% for f in test_report.failures %}{{ f.test }}: {{ f.error }}\n{% endfor %}",
            )
            .reads(["test_report"])
            .output("diagnosis")
            .max_visits(3)
            .next_when(Some(LOGIC), "coder")
            .next_when(Some(DESIGN), "architect")
            .next_when(Some(ENVIRONMENT), "devops"),
        )
        .step(
            StepBuilder::agent("devops", "devops", "Fix: {{ diagnosis.reason }}")
                .reads(["diagnosis"])
                .output("env_fix")
                .max_visits(1)
                .next("tester"),
        )
        .step(
            StepBuilder::agent("reviewer", "reviewer", "Review:\n{{ patch.code }}")
                .reads(["patch"])
                .output("review")
                .next("doc_writer"),
        )
        .step(
            StepBuilder::agent("doc_writer", "doc_writer", "Document: {{ patch.summary }}")
                .reads(["patch"])
                .output("docs"),
        )
}

// ----------------------------------------------------------------------- adaptive topology

/// One ticket through adaptive-support: the run, its events.
fn ticket(input: &str) -> (Run, Vec<Value>) {
    let r = run("adaptive-support", input, &[]);
    assert_status(&r, "succeeded", 0);
    let ev = r.events();
    (r, ev)
}

/// The classifier's verdict, as recorded by `classify`'s `state_updated` event.
fn triage_update(events: &[Value]) -> Value {
    let update = events
        .iter()
        .find(|e| e["type"] == "state_updated" && e["step"] == "classify")
        .expect("classify wrote its verdict");
    assert_eq!(update["updates"][0]["key"], "triage");
    update["updates"][0]["value"].clone()
}

#[test]
fn adaptive_simple_ticket_is_answered_by_one_agent() {
    let (r, ev) = ticket("input-simple.json");
    assert_eq!(r.completed(), strs(&["classify", "route", "solo"]));
    assert_eq!(called(&ev), strs(&["classifier", "support_agent"]));
    assert_eq!(
        routes_from(&ev, "route"),
        [(
            strs(&["solo"]),
            Some("triage.complexity == 'simple'".to_string())
        )]
    );
    let triage = triage_update(&ev);
    assert_eq!(triage["complexity"], "simple");
    assert!(
        triage["reason"]
            .as_str()
            .unwrap()
            .contains("single how-to question")
    );
    assert!(
        r.outputs()["reply"]
            .as_str()
            .unwrap()
            .starts_with("Hi Lena")
    );
    assert_eq!(r.outputs()["billing_note"], Value::Null);
}

#[test]
fn adaptive_moderate_ticket_gets_a_small_team_in_parallel() {
    let (r, ev) = ticket("input-moderate.json");
    assert_completed(
        &r,
        &["classify", "route"],
        &["billing", "tech"],
        &["team_reply"],
    );
    let mut agents = called(&ev);
    agents.sort();
    assert_eq!(
        agents,
        strs(&["billing", "classifier", "team_writer", "tech"])
    );
    assert_eq!(
        routes_from(&ev, "route"),
        [(
            strs(&["billing", "tech", "team_reply"]),
            Some("triage.complexity == 'moderate'".to_string())
        )]
    );
    assert_eq!(triage_update(&ev)["complexity"], "moderate");
    // The two specialists start together; the reply waits for both.
    assert_eq!(rounds(&ev, "billing"), rounds(&ev, "tech"));
    assert!(rounds(&ev, "team_reply")[0] > rounds(&ev, "billing")[0]);
    let reply = r.outputs()["reply"].as_str().unwrap();
    assert!(reply.contains("refunded the duplicate $49") && reply.contains("E-502"));
    assert_eq!(r.outputs()["legal_note"], Value::Null);
}

#[test]
fn adaptive_complex_ticket_gets_the_full_team_and_a_strong_synthesis() {
    let (r, ev) = ticket("input.json");
    assert_completed(
        &r,
        &["classify", "route"],
        &["billing", "tech", "legal", "account"],
        &["lead"],
    );
    assert_eq!(
        routes_from(&ev, "route"),
        [(
            strs(&["billing", "tech", "legal", "account", "lead"]),
            Some("triage.complexity == 'complex'".to_string())
        )]
    );
    // The classifier's output (and its reason) is also in its model_called event.
    let classify = ev
        .iter()
        .find(|e| e["type"] == "model_called" && e["step"] == "classify")
        .unwrap();
    let verdict: Value =
        serde_json::from_str(classify["output"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(verdict["complexity"], "complex");
    assert!(verdict["reason"].as_str().unwrap().contains("GDPR"));
    assert_eq!(classify["model"], "claude-haiku");

    // Four specialists in one round, then the lead on the strong model.
    let round = rounds(&ev, "billing");
    for s in ["tech", "legal", "account"] {
        assert_eq!(rounds(&ev, s), round, "{s}");
    }
    assert!(rounds(&ev, "lead")[0] > round[0]);
    let lines = breakdown(&r.report);
    assert_eq!(lines["support_lead"].0, "claude-opus");
    for s in ["billing", "tech", "legal", "account_manager", "classifier"] {
        assert_eq!(lines[s].0, "claude-haiku", "{s}");
    }
    assert!(!lines.contains_key("support_agent") && !lines.contains_key("team_writer"));
    let lead = prompts(&ev, "lead");
    assert!(
        lead[0].contains("Legal: Logs were unavailable")
            && lead[0].contains("Account: 1,200 seats"),
        "{}",
        lead[0]
    );
}

#[test]
fn adaptive_topology_spends_only_what_the_ticket_needs() {
    let (simple, _) = ticket("input-simple.json");
    let (moderate, _) = ticket("input-moderate.json");
    let (complex, _) = ticket("input.json");
    for r in [&simple, &moderate, &complex] {
        assert_breakdown_priced(r);
    }
    // By hand: classifier 1200/300 on haiku = 0.00216; solo 1200/300 on sonnet = 0.0081;
    // team writer 1500/200 on sonnet = 0.0075; lead 2600/450 on opus = 0.07275.
    let classifier = cost("claude-haiku", 1200, 300);
    let simple_cost = classifier + cost("claude-sonnet", 1200, 300);
    let moderate_cost = 3.0 * classifier + cost("claude-sonnet", 1500, 200);
    let complex_cost = 5.0 * classifier + cost("claude-opus", 2600, 450);
    assert!(
        close(run_cost(&simple), simple_cost),
        "{}",
        run_cost(&simple)
    );
    assert!(close(run_cost(&moderate), moderate_cost));
    assert!(close(run_cost(&complex), complex_cost));
    assert!(close(simple_cost, 0.01026) && close(complex_cost, 0.08355));
    assert_eq!(
        [&simple, &moderate, &complex].map(|r| r.usage("model_calls")),
        [2, 4, 6]
    );
    // Sending the simple ticket to the full team would have cost eight times as much.
    assert!(run_cost(&complex) > 8.0 * run_cost(&simple));
}

/// The adaptive router with the Rust API: `branch` triggers a whole team at once. Rust
/// functions stand in for the agents: the classifier reads the ticket's size, each specialist
/// appends its name to `team`.
#[tokio::test]
async fn adaptive_router_rust_api_takes_each_route() {
    let mut registry = Registry::new().function("classify", |input| {
        let size = input
            .state
            .get("size")
            .and_then(Value::as_str)
            .unwrap_or("");
        Ok(json!({"complexity": size, "reason": format!("a {size} ticket")}))
    });
    for who in [
        "solo",
        "billing",
        "tech",
        "legal",
        "account",
        "team_reply",
        "lead",
    ] {
        registry = registry.function(who, move |_| Ok(json!(who)));
    }
    let specialist = |id: &str| StepBuilder::function(id, id).output("team");
    let wf = WorkflowBuilder::new("adaptive")
        .state("size", MergeRule::Replace)
        .state("triage", MergeRule::Replace)
        .state("team", MergeRule::Append)
        .step(
            StepBuilder::function("classify", "classify")
                .reads(["size"])
                .output("triage")
                .next("route"),
        )
        .step(
            StepBuilder::router("route", [])
                .branch(Some("triage.complexity == 'simple'"), ["solo"])
                .branch(
                    Some("triage.complexity == 'moderate'"),
                    ["billing", "tech", "team_reply"],
                )
                .branch(
                    Some("triage.complexity == 'complex'"),
                    ["billing", "tech", "legal", "account", "lead"],
                ),
        )
        .step(specialist("solo"))
        .step(specialist("billing"))
        .step(specialist("tech"))
        .step(specialist("legal"))
        .step(specialist("account"))
        .step(specialist("team_reply").needs(["billing", "tech"]))
        .step(specialist("lead").needs(["billing", "tech", "legal", "account"]))
        .build(&registry)
        .unwrap();
    let runtime = Runtime::new(Arc::new(MemoryStore::new()));
    let mut teams = Vec::new();
    for size in ["simple", "moderate", "complex"] {
        let report = runtime
            .run(wf.clone(), json!({ "size": size }))
            .await
            .unwrap();
        teams.push(report.outputs["team"].clone());
    }
    assert_eq!(
        teams,
        [
            json!(["solo"]),
            json!(["billing", "tech", "team_reply"]),
            json!(["billing", "tech", "legal", "account", "lead"]),
        ]
    );
}

// -------------------------------------------------------------- recursive decomposition

#[test]
fn product_launch_nests_three_levels_and_results_flow_back() {
    let r = run("product-launch", "input.json", &[]);
    assert_status(&r, "succeeded", 0);
    assert_completed(&r, &["brief"], &["timing", "marketing"], &["plan"]);
    let store = r.store_url();
    let top_id = r.report["run_id"].as_str().unwrap().to_string();
    let ev = r.events();

    // Level 2: the marketing step started one child run, in parallel with `timing`.
    assert_eq!(rounds(&ev, "marketing"), rounds(&ev, "timing"));
    let marketing_id = child_of(&ev, "marketing");
    let marketing = show(&store, &marketing_id);
    assert_eq!(marketing["run"]["workflow"], "marketing");
    assert_eq!(marketing["run"]["parent"], top_id.as_str());
    assert_eq!(marketing["run"]["status"], "succeeded");
    // It got the brief as its input (the `input:` expression over the parent's state).
    assert_eq!(marketing["run"]["input"]["brief"], r.outputs()["brief"]);

    // Level 3: marketing's content step started its own child.
    let marketing_events = events_of_run(&store, &marketing_id);
    let content_id = child_of(&marketing_events, "content");
    let content = show(&store, &content_id);
    assert_eq!(content["run"]["workflow"], "content");
    assert_eq!(content["run"]["parent"], marketing_id.as_str());
    // Its input: the product from the brief and marketing's own campaign angle.
    assert_eq!(
        content["run"]["input"],
        json!({"topic": "Tally", "angle": marketing["state"]["angle"].clone()})
    );
    assert!(
        marketing["state"]["angle"]
            .as_str()
            .unwrap()
            .starts_with("Fairness without the spreadsheet")
    );
    assert_eq!(
        started(&events_of_run(&store, &content_id)),
        strs(&["outline", "draft", "edit"])
    );

    // Results flow back up: the grandchild's outputs are marketing's `blog`, which is part of
    // the top run's `marketing`, and the top-level plan was written from them.
    let post = &content["report"]["outputs"];
    assert_eq!(post["title"], "Stop keeping score");
    assert_eq!(post["words"], 412);
    assert_eq!(marketing["report"]["outputs"]["blog"], *post);
    assert_eq!(r.outputs()["marketing"]["blog"], *post);
    assert_eq!(
        r.outputs()["marketing"]["campaign"],
        marketing["report"]["outputs"]["campaign"]
    );
    let plan_prompt = &prompts(&ev, "plan")[0];
    assert!(
        plan_prompt.contains("Blog post: \"Stop keeping score\" (412 words)"),
        "{plan_prompt}"
    );

    // Usage includes the children: 3 calls here, 4 in marketing, 3 in content.
    let calls = |v: &Value| v["report"]["usage"]["model_calls"].as_u64().unwrap();
    assert_eq!(calls(&content), 3);
    assert_eq!(
        calls(&marketing),
        4 + 3,
        "marketing's usage includes content's"
    );
    assert_eq!(r.usage("model_calls"), 3 + 4 + 3);
    assert_eq!(r.usage("steps"), 4 + 5 + 3);
    let finished: Vec<&Value> = ev
        .iter()
        .filter(|e| e["type"] == "child_finished")
        .collect();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["status"], "succeeded");
    assert_eq!(finished[0]["usage"], marketing["report"]["usage"]);

    // The cost by hand, level by level: strategist, scheduler and launch_director here;
    // marketing_lead x2 and designer + email_writer; content_writer x2 and editor.
    let own = cost("claude-opus", 600, 150)
        + cost("claude-haiku", 800, 200)
        + cost("claude-opus", 1500, 300);
    let level2 = 2.0 * cost("claude-sonnet", 800, 200) + 2.0 * cost("claude-haiku", 800, 200);
    let level3 = 2.0 * cost("claude-haiku", 800, 200) + cost("claude-sonnet", 1400, 600);
    assert!(close(own + level2 + level3, 0.09645));
    assert!(
        close(run_cost(&r), own + level2 + level3),
        "{}",
        run_cost(&r)
    );
    // The breakdown lists every agent of the tree: the children's lines are added to the
    // parent's, and they sum to the run's cost.
    let top_lines = breakdown(&r.report);
    assert_eq!(
        top_lines.keys().collect::<Vec<_>>(),
        [
            "content_writer",
            "designer",
            "editor",
            "email_writer",
            "launch_director",
            "marketing_lead",
            "scheduler",
            "strategist"
        ]
    );
    let own_total: f64 = ["launch_director", "scheduler", "strategist"]
        .iter()
        .map(|a| top_lines[*a].4)
        .sum();
    assert!(close(own_total, own));
    let all_total: f64 = top_lines.values().map(|l| l.4).sum();
    assert!(close(all_total, own + level2 + level3), "{all_total}");
    assert_eq!(top_lines["marketing_lead"].1, 2);
    let content_lines = breakdown(&content["report"]);
    assert_eq!(content_lines["editor"].0, "claude-sonnet");
}

#[test]
fn recursive_nesting_past_max_depth_is_a_validation_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/patterns/too-deep");
    let launch = dir.join("launch.yaml");
    let (code, _, err) = baton(None, &["validate", launch.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    // Reported at content.yaml's `workflow:` line (level 3 may not start level 4), through
    // the chain of files and steps that led there.
    for part in [
        "launch.yaml:12:15: step `marketing`: sub-workflow `marketing.yaml`",
        "marketing.yaml:8:15: step `content`: sub-workflow `content.yaml`",
        "content.yaml:8:15: step `review`: sub-workflows nest deeper than max_depth 3",
    ] {
        assert!(err.contains(part), "no `{part}` in: {err}");
    }
    // `baton run` refuses it the same way, before anything runs.
    let (code, out, err) = baton(
        None,
        &[
            "run",
            launch.to_str().unwrap(),
            "--input",
            "{\"product\": \"x\"}",
        ],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("nest deeper than max_depth 3"), "{err}");
    // Depth counts from the file you start: two levels from marketing.yaml are fine.
    let (code, _, err) = baton(
        None,
        &["validate", dir.join("marketing.yaml").to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    // And the example's three levels are within its bound.
    let example = example_dir("product-launch").join("workflow.yaml");
    let (code, _, err) = baton(None, &["validate", example.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

/// Builds the `provider: scripted` models a YAML file declares, from their `script:`.
struct ScriptedFiles;

impl ModelFactory for ScriptedFiles {
    fn build(
        &self,
        _alias: &str,
        spec: &ModelSpec,
        base_dir: &Path,
    ) -> Result<Arc<dyn DynModel>, ModelBuildError> {
        let script = spec
            .script
            .as_ref()
            .ok_or_else(|| ModelBuildError::new(ModelField::Other, "no script"))?;
        let model = ScriptedModel::from_file(base_dir.join(&script.value))
            .map_err(|e| ModelBuildError::new(ModelField::Other, e.to_string()))?;
        Ok(Arc::new(model))
    }
}

/// The top level of product-launch with the Rust API: a sub-workflow step is
/// `StepBuilder::workflow(id, path)` with `.input(child_key, cel)`; the children are the
/// example's YAML files.
#[tokio::test]
async fn product_launch_rust_api_runs_the_yaml_children() {
    let dir = example_dir("product-launch");
    let model = Arc::new(ScriptedModel::from_file(dir.join("script.yaml")).unwrap());
    // The children are YAML files with their own `models:`: a model factory builds those
    // (here, scripted models from each entry's `script:`).
    let registry = Registry::new()
        .model(
            "strong",
            ModelEntry::new(
                model,
                "claude-opus",
                PriceSpec {
                    input_per_mtok: 15.00,
                    output_per_mtok: 75.00,
                },
            ),
        )
        .model_factory(Arc::new(ScriptedFiles));
    let marketing = dir.join("marketing.yaml");
    let wf = WorkflowBuilder::new("product-launch")
        .max_depth(3)
        .agent(
            "strategist",
            agent(
                "strong",
                "Write the launch brief.",
                Some(json!({"type": "object", "required": ["product", "audience", "key_message", "launch_date"]})),
            ),
        )
        .state("product", MergeRule::Replace)
        .state("brief", MergeRule::Replace)
        .state("marketing", MergeRule::Replace)
        .outputs(["marketing"])
        .step(
            StepBuilder::agent("brief", "strategist", "Brief for {{ product }}")
                .reads(["product"])
                .output("brief"),
        )
        .step(
            StepBuilder::workflow("marketing", marketing.to_str().unwrap())
                .input("brief", "brief")
                .needs(["brief"])
                .output("marketing"),
        )
        .build(&registry)
        .unwrap();
    let runtime = Runtime::new(Arc::new(MemoryStore::new()));
    let report = runtime.run(wf, json!({"product": "Tally"})).await.unwrap();
    assert_eq!(report.completed_steps, ["brief", "marketing"]);
    assert_eq!(
        report.outputs["marketing"]["blog"]["title"],
        "Stop keeping score"
    );
    // 1 call here, 4 in marketing, 3 in content.
    assert_eq!(report.usage.model_calls, 8);
}
