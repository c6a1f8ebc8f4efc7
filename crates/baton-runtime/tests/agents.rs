//! Agent turns with the scripted model: the tool loop, tool-call rejection, structured output
//! validation and repair, retries of retryable faults, and the turn bound.
#![allow(clippy::unwrap_used)]

use baton_core::{EventKind, RunId, RunStatus, RunStore, ToolError, ToolSpec};
use baton_providers::ScriptedModel;
use baton_runtime::spec::PriceSpec;
use baton_runtime::{ModelEntry, Registry, RunReport, Runtime, load_file};
use baton_store::MemoryStore;
use baton_tools::FnTool;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const WORKFLOW: &str = r#"
name: agents
defaults:
  retry_backoff: 1ms
agents:
  researcher:
    instructions: You research.
    tools: [lookup]
    max_turns: 4
  scorer:
    output_schema:
      type: object
      required: [score]
      properties:
        score: {type: integer, minimum: 0, maximum: 100}
state:
  topic: replace
  notes: replace
  score: replace
steps:
  - id: research
    agent: researcher
    reads: [topic]
    prompt: "Research {{ topic }}"
    output: notes
  - id: score
    agent: scorer
    needs: research
    reads: [notes]
    prompt: "Score: {{ notes }}"
    writes: [score]
"#;

struct Fixture {
    calls: Arc<AtomicUsize>,
    registry: Registry,
}

fn fixture(script: &str) -> Fixture {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let lookup = FnTool::sync(
        ToolSpec::new(
            "lookup",
            "Look a company up",
            json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}),
        )
        .with_effect(baton_core::SideEffect::ReadOnly),
        move |args: Value| {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(json!({"found": args["name"]}))
        },
    );
    let model = ScriptedModel::from_yaml_str(script, "test-script").unwrap();
    let registry = Registry::new().tool(Arc::new(lookup)).model(
        "default",
        ModelEntry {
            model: Arc::new(model),
            name: "scripted-1".into(),
            price: PriceSpec {
                input_per_mtok: 1.0,
                output_per_mtok: 4.0,
            },
            max_tokens: None,
        },
    );
    Fixture { calls, registry }
}

async fn run(f: &Fixture) -> (RunReport, Vec<EventKind>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wf.yaml");
    std::fs::write(&path, WORKFLOW).unwrap();
    let wf = load_file(&path, &f.registry).unwrap();
    let store = Arc::new(MemoryStore::new());
    let report = Runtime::new(store.clone())
        .run(wf, json!({"topic": "ACME"}))
        .await
        .unwrap();
    let id: RunId = report.run_id.parse().unwrap();
    let events = store.events(id, 0).await.unwrap();
    (report, events.into_iter().map(|e| e.kind).collect())
}

#[tokio::test]
async fn tool_loop_rejections_structured_output_and_cost() {
    let f = fixture(
        r#"
agents:
  researcher:
    - tool_calls:
        - {name: lookup, args: {name: ACME}}
        - {name: web_search, args: {q: ACME}}
        - {name: lookup, args: {name: 7}}
      usage: {input_tokens: 1000, output_tokens: 100}
    - text: "ACME is a rocket maker."
      usage: {input_tokens: 2000, output_tokens: 50}
  scorer:
    - malformed: "Sure! The score is high."
      usage: {input_tokens: 10, output_tokens: 10}
    - json: {score: 82}
      usage: {input_tokens: 10, output_tokens: 10}
"#,
    );
    let (report, events) = run(&f).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(report.outputs["notes"], "ACME is a rocket maker.");
    assert_eq!(report.outputs["score"], 82);
    // Only the valid call ran.
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
    let tool_events: Vec<(&str, Option<&ToolError>)> = events
        .iter()
        .filter_map(|e| match e {
            EventKind::ToolCalled { tool, error, .. } => Some((tool.as_str(), error.as_ref())),
            _ => None,
        })
        .collect();
    assert_eq!(tool_events.len(), 3);
    // Rejections are answered at once; the valid call's result arrives after.
    assert!(matches!(
        tool_events[0],
        ("web_search", Some(ToolError::Unknown { .. }))
    ));
    assert!(matches!(
        tool_events[1],
        ("lookup", Some(ToolError::InvalidArguments { .. }))
    ));
    assert!(matches!(tool_events[2], ("lookup", None)));
    // The unknown tool's error reached the model as the tool result.
    let second_call_input = events
        .iter()
        .filter_map(|e| match e {
            EventKind::ModelCalled {
                step,
                turn: 2,
                input,
                ..
            } if &**step == "research" => Some(input),
            _ => None,
        })
        .next()
        .unwrap();
    // ...and the conversation lists the results in call order.
    let results: Vec<&str> = second_call_input
        .iter()
        .filter(|m| m.role == baton_core::Role::Tool)
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(results.len(), 3);
    assert!(results[0].contains("ACME"), "{results:?}");
    assert!(
        results[1].contains("unknown tool `web_search`; available: lookup"),
        "{results:?}"
    );
    assert!(results[2].contains("invalid arguments"), "{results:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EventKind::OutputRejected { .. }))
    );
    assert_eq!(report.usage.model_calls, 4);
    assert_eq!(report.usage.tool_calls, 3);
    assert_eq!(report.usage.input_tokens, 3020);
    assert_eq!(report.usage.output_tokens, 170);
    let cost = 3020.0 * 1.0 / 1e6 + 170.0 * 4.0 / 1e6;
    assert!((report.usage.cost_usd - cost).abs() < 1e-12);
}

#[tokio::test]
async fn retryable_faults_are_retried_then_give_up() {
    let f = fixture(
        r#"
agents:
  researcher:
    - error: {status: 429, message: slow down}
    - timeout: true
    - text: "done"
  scorer:
    - error: {status: 503}
    - error: {status: 503}
    - error: {status: 503}
"#,
    );
    let (report, events) = run(&f).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.outputs["notes"], "done");
    let retries = events
        .iter()
        .filter(|e| matches!(e, EventKind::Retry { .. }))
        .count();
    assert_eq!(retries, 4, "two for research, two for score");
    let f0 = &report.failed_steps[0];
    assert_eq!(f0.step, "score");
    assert!(f0.error.contains("after 3 attempt(s)"), "{}", f0.error);
    assert!(f0.error.contains("HTTP 503"), "{}", f0.error);
}

#[tokio::test]
async fn non_retryable_and_malformed_output_fail_with_reasons() {
    let f = fixture(
        r#"
agents:
  researcher:
    - text: "fine"
  scorer:
    - malformed: "{not json"
    - json: {score: 700}
"#,
    );
    let (report, _) = run(&f).await;
    assert_eq!(report.status, RunStatus::Failed);
    let e = &report.failed_steps[0].error;
    assert!(e.contains("malformed structured output"), "{e}");
    assert!(e.contains("700"), "{e}");
}

#[tokio::test]
async fn turn_bound_stops_an_agent_that_never_answers() {
    let f = fixture(
        r#"
agents:
  researcher:
    replies:
      - tool_calls: [{name: lookup, args: {name: ACME}}]
    then: repeat_last
  scorer: []
"#,
    );
    let (report, _) = run(&f).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert!(
        report.failed_steps[0].error.contains("4 turn(s)"),
        "{:?}",
        report.failed_steps
    );
    assert_eq!(f.calls.load(Ordering::SeqCst), 4);
}
