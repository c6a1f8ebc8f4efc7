//! Hierarchical supervisors and handoffs: delegated agent tasks inside the run machine.
//!
//! Who is called, concurrently or in order; what each receiving agent sees (only the task
//! message); the depth bound; loop detection; handoffs ending the step with the peer's answer;
//! failures reported back to the delegating agent; replay and resume across a delegation.

#![allow(clippy::unwrap_used)]

use baton_core::{Event, EventKind, Role, RunId, RunStatus, RunStore};
use baton_providers::ScriptedModel;
use baton_runtime::machine::RunMachine;
use baton_runtime::spec::PriceSpec;
use baton_runtime::{ModelEntry, Registry, RunReport, Runtime, compile_str};
use baton_store::MemoryStore;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn scripted(script: &str) -> Registry {
    Registry::new().model(
        "default",
        ModelEntry::new(
            Arc::new(ScriptedModel::from_yaml_str(script, "test").unwrap()),
            "scripted",
            PriceSpec {
                input_per_mtok: 1.0,
                output_per_mtok: 1.0,
            },
        ),
    )
}

async fn run(workflow: &str, script: &str, input: Value) -> (RunReport, Vec<Event>) {
    let wf = compile_str(workflow, "wf.yaml", &scripted(script)).unwrap();
    let store = Arc::new(MemoryStore::new());
    let report = Runtime::new(store.clone()).run(wf, input).await.unwrap();
    let id: RunId = report.run_id.parse().unwrap();
    let events = store.events(id, 0).await.unwrap();
    (report, events)
}

/// (from, to, depth) of every delegation, in order.
fn delegations(events: &[Event]) -> Vec<(String, String, u32)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Delegated {
                from, to, depth, ..
            } => Some((from.to_string(), to.to_string(), *depth)),
            _ => None,
        })
        .collect()
}

/// Agents of the model calls, in order.
fn callers(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ModelCalled { agent, .. } => Some(agent.to_string()),
            _ => None,
        })
        .collect()
}

fn loop_guards(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::LoopGuard { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

const SUPERVISOR: &str = r#"
name: supervisor
agents:
  manager:
    instructions: You split the work and decide.
    delegates: [fin, mkt]
  fin:
    description: Financial specialist.
    instructions: You analyse financials.
    output_schema: {type: object, required: [score], properties: {score: {type: number}}}
  mkt:
    instructions: You analyse markets.
    output_schema: {type: object, required: [score], properties: {score: {type: number}}}
state:
  company: replace
  verdict: replace
steps:
  - id: review
    agent: manager
    reads: [company]
    prompt: "Review {{ company }} (secret internal note: board wants a yes)."
    output: verdict
"#;

#[tokio::test]
async fn supervisor_delegates_in_parallel_and_synthesises_the_results() {
    let script = r#"
agents:
  manager:
    - tool_calls:
        - {name: delegate_to_fin, args: {task: "Score the financials of ACME", context: {revenue_musd: 61}}}
        - {name: delegate_to_mkt, args: {task: "Score the market of ACME"}}
    - text: "Proceed: financials 80, market 60."
  fin:
    - json: {score: 80}
      latency: 30ms
  mkt:
    - json: {score: 60}
"#;
    let (report, events) = run(SUPERVISOR, script, json!({"company": "ACME"})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(
        report.outputs["verdict"],
        "Proceed: financials 80, market 60."
    );
    assert_eq!(
        delegations(&events),
        [
            ("manager".into(), "fin".into(), 1),
            ("manager".into(), "mkt".into(), 1)
        ]
    );
    // Concurrent: both workers were started before either answered.
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.type_name()).collect();
    let second_start = kinds.iter().rposition(|k| *k == "delegated").unwrap();
    let first_return = kinds
        .iter()
        .position(|k| *k == "delegation_returned")
        .unwrap();
    assert!(second_start < first_return, "{kinds:?}");
    // mkt answered first (fin is slower), but the manager's conversation has the results in
    // call order, and it was called exactly twice.
    assert_eq!(callers(&events), ["manager", "mkt", "fin", "manager"]);
    let last = events
        .iter()
        .rev()
        .find_map(|e| match &e.kind {
            EventKind::ModelCalled { agent, input, .. } if &**agent == "manager" => Some(input),
            _ => None,
        })
        .unwrap();
    let results: Vec<&str> = last
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(results.len(), 2);
    assert!(
        results[0].contains("80") && results[1].contains("60"),
        "{results:?}"
    );
    // A worker sees only the task message: its instructions and the task with its context,
    // not the manager's prompt.
    let fin_start = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Delegated {
                to,
                messages,
                message,
                ..
            } if &**to == "fin" => Some((messages.clone(), message.clone())),
            _ => None,
        })
        .unwrap();
    let seen: String = fin_start.0.iter().map(|m| m.content.clone()).collect();
    assert!(seen.contains("Score the financials of ACME") && seen.contains("61"));
    assert!(!seen.contains("secret internal note"), "{seen}");
    // The SPEC §3 envelope.
    let m = fin_start.1;
    assert_eq!(
        (m["from"].as_str(), m["to"].as_str()),
        (Some("manager"), Some("fin"))
    );
    assert_eq!(m["kind"], "task");
    assert!(m["task_id"].is_u64() && m["parent_task_id"].is_u64());
    assert_eq!(m["run_id"], report.run_id);
    let returned: Vec<Value> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::DelegationReturned { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert!(returned.iter().all(|m| m["kind"] == "result"));
    // Usage counts every agent; the cost breakdown names each.
    assert_eq!(report.usage.model_calls, 4);
    let agents: Vec<&str> = report
        .cost_breakdown
        .iter()
        .map(|c| c.agent.as_str())
        .collect();
    assert_eq!(agents, ["fin", "manager", "mkt"]);
}

const CHAIN: &str = r#"
name: chain
defaults: {max_delegation_depth: 3}
agents:
  a: {instructions: "Level 0.", delegates: [b]}
  b: {instructions: "Level 1.", delegates: [c, a]}
  c: {instructions: "Level 2.", delegates: [d]}
  d: {instructions: "Level 3.", delegates: [e]}
  e: {instructions: "Level 4."}
state:
  out: replace
steps:
  - id: go
    agent: a
    prompt: "Go."
    output: out
"#;

#[tokio::test]
async fn delegation_depth_is_bounded() {
    let script = r#"
agents:
  a:
    - tool_calls: [{name: delegate_to_b, args: {task: "t1"}}]
    - text: "a done"
  b:
    - tool_calls: [{name: delegate_to_c, args: {task: "t2"}}]
    - text: "b done"
  c:
    - tool_calls: [{name: delegate_to_d, args: {task: "t3"}}]
    - text: "c done"
  d:
    - tool_calls: [{name: delegate_to_e, args: {task: "t4"}}]
    - text: "d done without e"
  e:
    - text: "e should never be called"
"#;
    let (report, events) = run(CHAIN, script, json!({})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(report.outputs["out"], "a done");
    assert_eq!(
        delegations(&events),
        [
            ("a".into(), "b".into(), 1),
            ("b".into(), "c".into(), 2),
            ("c".into(), "d".into(), 3)
        ]
    );
    assert!(!callers(&events).contains(&"e".to_string()));
    let guards = loop_guards(&events);
    assert_eq!(guards.len(), 1);
    assert!(
        guards[0].contains("depth bound") && guards[0].contains("a -> b -> c -> d -> e"),
        "{guards:?}"
    );
    // d was told why, as its call's result, and finished without it.
    let refused = events.iter().any(|e| {
        matches!(&e.kind, EventKind::ToolCalled { tool, error: Some(_), .. } if tool == "delegate_to_e")
    });
    assert!(refused);

    // With a bound of 2, c may not delegate to d.
    let tight = CHAIN.replace("max_delegation_depth: 3", "max_delegation_depth: 2");
    let (report, events) = run(&tight, script, json!({})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(delegations(&events).len(), 2);
    assert!(!callers(&events).contains(&"d".to_string()));
}

#[tokio::test]
async fn delegation_loops_are_refused() {
    let script = r#"
agents:
  a:
    - tool_calls: [{name: delegate_to_b, args: {task: "help"}}]
    - text: "a done"
  b:
    - tool_calls: [{name: delegate_to_a, args: {task: "help me back"}}]
    - text: "b done alone"
"#;
    let (report, events) = run(CHAIN, script, json!({})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(callers(&events), ["a", "b", "b", "a"]);
    let guards = loop_guards(&events);
    assert_eq!(guards.len(), 1, "{guards:?}");
    assert!(
        guards[0].contains("delegation loop: a -> b -> a"),
        "{guards:?}"
    );
    // What b learnt from the refused call.
    let b_second = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ModelCalled { agent, input, .. } if &**agent == "b" => Some(input),
            _ => None,
        })
        .nth(1)
        .unwrap();
    assert!(
        b_second
            .iter()
            .any(|m| m.role == Role::Tool && m.content.contains("delegation loop")),
        "{b_second:?}"
    );
}

#[tokio::test]
async fn a_failing_worker_is_an_error_result_for_the_manager() {
    let script = r#"
agents:
  manager:
    - tool_calls: [{name: delegate_to_fin, args: {task: "Score"}}]
    - text: "No financial view; cannot decide."
  fin:
    - malformed: "not json"
    - malformed: "still not json"
"#;
    let (report, events) = run(SUPERVISOR, script, json!({"company": "ACME"})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    let returned = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::DelegationReturned { message, .. } => Some(message.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(returned["kind"], "error");
    assert!(
        returned["error"]
            .as_str()
            .unwrap()
            .contains("malformed structured output")
    );
    assert_eq!(
        report.outputs["verdict"],
        "No financial view; cannot decide."
    );
}

const HANDOFF: &str = r#"
name: handoff
agents:
  researcher:
    instructions: You research, then hand over.
    handoffs: [scheduler]
  scheduler:
    instructions: You schedule.
    output_schema: {type: object, required: [slot], properties: {slot: {type: string}}}
state:
  request: replace
  plan: replace
steps:
  - id: plan
    agent: researcher
    reads: [request]
    prompt: "{{ request }}"
    output: plan
"#;

#[tokio::test]
async fn a_handoff_passes_only_the_context_and_the_peer_answers_for_the_step() {
    let script = r#"
agents:
  researcher:
    - tool_calls:
        - {name: handoff_to_scheduler, args: {task: "Book a Tue-Thu 00:01 PST slot", context: {weekdays: [Tue, Wed, Thu]}}}
  scheduler:
    - json: {slot: "Wed 00:01 PST"}
"#;
    let (report, events) = run(
        HANDOFF,
        script,
        json!({"request": "Research launch timing (private: budget is $0)"}),
    )
    .await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(report.outputs["plan"], json!({"slot": "Wed 00:01 PST"}));
    // The researcher is not called again after handing over.
    assert_eq!(callers(&events), ["researcher", "scheduler"]);
    let (messages, message) = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Delegated {
                messages,
                message,
                handoff: true,
                ..
            } => Some((messages.clone(), message.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(message["kind"], "handoff");
    let seen: String = messages.iter().map(|m| m.content.clone()).collect();
    assert!(seen.contains("Book a Tue-Thu 00:01 PST slot") && seen.contains("Wed"));
    assert!(!seen.contains("private"), "{seen}");
}

#[tokio::test]
async fn replaying_the_log_rebuilds_a_run_with_delegations() {
    let script = r#"
agents:
  a:
    - tool_calls: [{name: delegate_to_b, args: {task: "t1"}}]
    - text: "a done"
  b:
    - tool_calls: [{name: delegate_to_c, args: {task: "t2"}}, {name: delegate_to_a, args: {task: "loop"}}]
    - text: "b done"
  c:
    - text: "c done"
"#;
    let wf = compile_str(CHAIN, "wf.yaml", &scripted(script)).unwrap();
    let store = Arc::new(MemoryStore::new());
    let report = Runtime::new(store.clone())
        .run(wf.clone(), json!({}))
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    let id: RunId = report.run_id.parse().unwrap();
    let events = store.events(id, 0).await.unwrap();
    let m = RunMachine::replay(wf, id, &events).unwrap();
    assert_eq!(m.status(), RunStatus::Succeeded);
    assert_eq!(m.outputs(), report.outputs);
    assert_eq!(m.usage(), &report.usage);
    assert_eq!(m.cost_breakdown(), report.cost_breakdown);
}

#[tokio::test]
async fn a_run_interrupted_during_a_delegation_resumes_without_asking_again() {
    let hang = r#"
agents:
  manager:
    - tool_calls: [{name: delegate_to_fin, args: {task: "Score"}}, {name: delegate_to_mkt, args: {task: "Score"}}]
    - text: "decided"
  fin:
    - json: {score: 80}
  mkt:
    - json: {score: 60}
      latency: 60m
"#;
    let wf1 = compile_str(SUPERVISOR, "wf.yaml", &scripted(hang)).unwrap();
    let store = Arc::new(MemoryStore::new());
    let rt = Runtime::new(store.clone());
    let id = RunId::new();
    let handle = tokio::spawn(rt.run_with_id(wf1, json!({"company": "ACME"}), id, None));
    // Wait until fin has answered (mkt hangs), then "crash".
    for _ in 0..400 {
        let ev = store.events(id, 0).await.unwrap_or_default();
        if ev
            .iter()
            .any(|e| matches!(e.kind, EventKind::DelegationReturned { .. }))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handle.abort();
    let _ = handle.await;
    let before = store.events(id, 0).await.unwrap();
    assert_eq!(callers(&before), ["manager", "fin"]);

    let quick = hang.replace("      latency: 60m\n", "");
    let wf2 = compile_str(SUPERVISOR, "wf.yaml", &scripted(&quick)).unwrap();
    let report = rt.resume(wf2, id).await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(report.outputs["verdict"], "decided");
    let after = store.events(id, 0).await.unwrap();
    // Only the unanswered worker and then the manager were called after the restart.
    assert_eq!(callers(&after), ["manager", "fin", "mkt", "manager"]);
}

#[tokio::test]
async fn bad_rosters_are_validation_errors_with_positions() {
    let bad = r#"
name: bad
agents:
  boss:
    delegates: [wrkr, boss]
  worker: {}
state:
  out: replace
steps:
  - id: s
    agent: boss
    prompt: "go"
    output: out
"#;
    let err = compile_str(bad, "wf.yaml", &scripted("agents: {}"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("wf.yaml:5:17")
            && err.contains("unknown agent `wrkr`")
            && err.contains("did you mean `worker`"),
        "{err}"
    );
    assert!(
        err.contains("wf.yaml:5:23") && err.contains("cannot delegate to itself"),
        "{err}"
    );
}

#[tokio::test]
async fn the_rust_api_builds_the_same_supervisor() {
    use baton_runtime::builder::{StepBuilder, WorkflowBuilder};
    use baton_runtime::spec::{AgentSpec, Loc, MergeRule, OneOrMany};
    let script = r#"
agents:
  manager:
    - tool_calls: [{name: delegate_to_fin, args: {task: "Score ACME"}}]
    - text: "go"
  fin:
    - text: "80"
"#;
    let registry = scripted(script);
    let manager = AgentSpec {
        instructions: "Delegate, then decide.".into(),
        delegates: OneOrMany(vec![Loc::new("fin".to_string())]),
        ..AgentSpec::default()
    };
    let wf = WorkflowBuilder::new("review")
        .agent("manager", manager)
        .agent("fin", AgentSpec::default())
        .state("verdict", MergeRule::Replace)
        .step(StepBuilder::agent("review", "manager", "Review ACME.").output("verdict"))
        .build(&registry)
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    let report = Runtime::new(store.clone())
        .run(wf, json!({}))
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    let id: RunId = report.run_id.parse().unwrap();
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(delegations(&events), [("manager".into(), "fin".into(), 1)]);
    assert_eq!(report.outputs["verdict"], "go");
}

/// A random roster: who may delegate to whom, and whom each agent asks on its first turn.
#[derive(Clone, Debug)]
struct Roster {
    asks: Vec<Vec<usize>>,
    latency: Vec<u8>,
    bound: u32,
}

fn roster() -> impl proptest::strategy::Strategy<Value = Roster> {
    use proptest::prelude::*;
    (2usize..6).prop_flat_map(|n| {
        (
            proptest::collection::vec(proptest::collection::vec(0..n, 0..3), n),
            proptest::collection::vec(0u8..4, n),
            1u32..4,
        )
            .prop_map(|(mut asks, latency, bound)| {
                for a in &mut asks {
                    a.sort();
                    a.dedup();
                }
                Roster {
                    asks,
                    latency,
                    bound,
                }
            })
    })
}

fn roster_workflow(r: &Roster) -> (String, String) {
    let n = r.asks.len();
    let mut wf = format!(
        "name: roster\ndefaults: {{max_delegation_depth: {}}}\nagents:\n",
        r.bound
    );
    let mut script = String::from("agents:\n");
    for i in 0..n {
        // Everyone may delegate to everyone else; the script decides who is asked.
        let others: Vec<String> = (0..n)
            .filter(|&j| j != i)
            .map(|j| format!("a{j}"))
            .collect();
        wf.push_str(&format!(
            "  a{i}: {{instructions: \"Agent {i}.\", delegates: [{}]}}\n",
            others.join(", ")
        ));
        let calls: Vec<String> = r.asks[i]
            .iter()
            .filter(|&&j| j != i)
            .map(|j| format!("{{name: delegate_to_a{j}, args: {{task: \"from a{i}\"}}}}"))
            .collect();
        script.push_str(&format!("  a{i}:\n    replies:\n"));
        if !calls.is_empty() {
            script.push_str(&format!(
                "      - tool_calls: [{}]\n        latency: {}ms\n",
                calls.join(", "),
                r.latency[i]
            ));
        }
        script.push_str(&format!(
            "      - text: \"a{i} done\"\n        latency: {}ms\n    then: repeat_last\n",
            r.latency[i]
        ));
    }
    wf.push_str("state:\n  out: replace\nsteps:\n  - id: go\n    agent: a0\n    prompt: \"Go.\"\n    output: out\n");
    (wf, script)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Whatever the roster asks, no chain holds an agent twice, no delegation is deeper than the
    /// bound, and replaying the log rebuilds the run.
    #[test]
    fn random_rosters_stay_bounded_loop_free_and_replayable(r in roster()) {
        let (text, script) = roster_workflow(&r);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let wf = compile_str(&text, "wf.yaml", &scripted(&script)).unwrap();
            let store = Arc::new(MemoryStore::new());
            let report = Runtime::new(store.clone()).run(wf.clone(), json!({})).await.unwrap();
            assert_eq!(report.status, RunStatus::Succeeded, "{report:?}\n{text}\n{script}");
            let id: RunId = report.run_id.parse().unwrap();
            let events = store.events(id, 0).await.unwrap();
            // task -> (agent, parent task)
            let mut tasks: std::collections::HashMap<u64, (String, Option<u64>)> =
                std::collections::HashMap::new();
            for e in &events {
                match &e.kind {
                    EventKind::StepStarted { task, agent, .. } => {
                        tasks.insert(*task, (agent.as_deref().unwrap_or("").to_string(), None));
                    }
                    EventKind::Delegated { task, parent_task, to, depth, .. } => {
                        assert!(*depth <= r.bound, "depth {depth} over {}", r.bound);
                        let mut up = Some(*parent_task);
                        let mut chain = 0;
                        while let Some(t) = up {
                            let (agent, parent) = tasks[&t].clone();
                            assert_ne!(&agent, &**to, "loop through {to}");
                            chain += 1;
                            up = parent;
                        }
                        assert_eq!(chain, *depth);
                        tasks.insert(*task, (to.to_string(), Some(*parent_task)));
                    }
                    _ => {}
                }
            }
            let m = RunMachine::replay(wf, id, &events).unwrap();
            assert_eq!(m.outputs(), report.outputs);
            assert_eq!(m.usage(), &report.usage);
            assert_eq!(m.cost_breakdown(), report.cost_breakdown);
        });
    }
}

#[tokio::test]
async fn a_step_deadline_ends_its_delegated_tasks_with_it() {
    let wf = SUPERVISOR.replace(
        "    output: verdict\n",
        "    output: verdict\n    deadline: 100ms\n    on_error: continue\n",
    );
    let script = r#"
agents:
  manager:
    - tool_calls: [{name: delegate_to_fin, args: {task: "Score"}}]
    - text: "never reached"
  fin:
    - json: {score: 80}
      latency: 60m
"#;
    let (report, events) = tokio::time::timeout(
        Duration::from_secs(20),
        run(&wf, script, json!({"company": "ACME"})),
    )
    .await
    .expect("the run ends at the deadline, not when the worker would have answered");
    assert_eq!(report.status, RunStatus::PartialSuccess, "{report:?}");
    assert!(
        report.failed_steps[0].error.contains("deadline"),
        "{report:?}"
    );
    // The worker never answered, and nothing was reported back for it.
    assert_eq!(callers(&events), ["manager"]);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, EventKind::DelegationReturned { .. }))
    );
}
