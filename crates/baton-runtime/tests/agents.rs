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
        ModelEntry::new(
            Arc::new(model),
            "scripted-1",
            PriceSpec {
                input_per_mtok: 1.0,
                output_per_mtok: 4.0,
            },
        ),
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
    // Different arguments every turn: only the turn bound can stop it.
    let f = fixture(
        r#"
agents:
  researcher:
    - tool_calls: [{name: lookup, args: {name: A}}]
    - tool_calls: [{name: lookup, args: {name: B}}]
    - tool_calls: [{name: lookup, args: {name: C}}]
    - tool_calls: [{name: lookup, args: {name: D}}]
    - tool_calls: [{name: lookup, args: {name: E}}]
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

#[tokio::test]
async fn loop_guard_stops_the_same_call_repeated() {
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
    let (report, events) = run(&f).await;
    assert_eq!(report.status, RunStatus::Failed);
    let e = &report.failed_steps[0].error;
    assert!(e.contains("loop guard") && e.contains("3 times"), "{e}");
    assert_eq!(
        f.calls.load(Ordering::SeqCst),
        2,
        "the third identical call did not run"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EventKind::LoopGuard { .. }))
    );
}

/// Fallback chains, the response cache, and context compression, through YAML models built by
/// a test factory over scripted models.
mod models {
    use super::*;
    use baton_runtime::spec::ModelSpec;
    use baton_runtime::{ModelBuildError, ModelFactory};
    use std::collections::HashMap;
    use std::path::Path;

    struct Scripts(HashMap<String, Arc<ScriptedModel>>);

    impl ModelFactory for Scripts {
        fn build(
            &self,
            alias: &str,
            _spec: &ModelSpec,
            _base: &Path,
        ) -> Result<Arc<dyn baton_core::DynModel>, ModelBuildError> {
            self.0
                .get(alias)
                .cloned()
                .map(|m| m as Arc<dyn baton_core::DynModel>)
                .ok_or_else(|| {
                    ModelBuildError::new(baton_runtime::ModelField::Provider, "no script")
                })
        }
    }

    async fn run_yaml(
        yaml: &str,
        scripts: &[(&str, &str)],
        store: Arc<MemoryStore>,
    ) -> (
        RunReport,
        Vec<EventKind>,
        HashMap<String, Arc<ScriptedModel>>,
    ) {
        let models: HashMap<String, Arc<ScriptedModel>> = scripts
            .iter()
            .map(|(a, s)| {
                (
                    a.to_string(),
                    Arc::new(ScriptedModel::from_yaml_str(s, *a).unwrap()),
                )
            })
            .collect();
        let reg = Registry::new().model_factory(Arc::new(Scripts(models.clone())));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wf.yaml");
        std::fs::write(&path, yaml).unwrap();
        let wf = load_file(&path, &reg).unwrap();
        let report = Runtime::new(store.clone())
            .run(wf, json!({}))
            .await
            .unwrap();
        let id: RunId = report.run_id.parse().unwrap();
        let events = store
            .events(id, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        (report, events, models)
    }

    #[tokio::test]
    async fn a_failing_model_falls_back_along_its_chain() {
        let yaml = r#"
name: fb
defaults: {retry_backoff: 1ms, model_retries: 1}
models:
  main: {provider: x, model: big, fallback: [spare], price: {input_per_mtok: 10, output_per_mtok: 10}}
  spare: {provider: x, model: small, price: {input_per_mtok: 1, output_per_mtok: 1}}
agents:
  a: {model: main}
state: {out: replace}
steps:
  - {id: s, agent: a, prompt: "go", output: out}
"#;
        let (report, events, models) = run_yaml(
            yaml,
            &[
                ("main", "agents:\n  a: [{error: {status: 503}}, {error: {status: 503}}]\n"),
                ("spare", "agents:\n  a: [{text: from spare, usage: {input_tokens: 100, output_tokens: 10}}]\n"),
            ],
            Arc::new(MemoryStore::new()),
        )
        .await;
        assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
        assert_eq!(report.outputs["out"], "from spare");
        assert_eq!(
            models["main"].total_calls(),
            2,
            "one call and one retry on the main model"
        );
        let fb: Vec<(String, String)> = events
            .iter()
            .filter_map(|e| match e {
                EventKind::ModelFallback { from, to, .. } => Some((from.clone(), to.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(fb, [("big".to_string(), "small".to_string())]);
        // Priced at the fallback's price.
        assert!(
            (report.usage.cost_usd - (100.0 + 10.0) / 1e6).abs() < 1e-12,
            "{:?}",
            report.usage
        );
    }

    #[tokio::test]
    async fn identical_requests_hit_the_response_cache() {
        let yaml = r#"
name: cached
models:
  default: {provider: x, cache: true, price: {input_per_mtok: 1, output_per_mtok: 1}}
agents:
  a: {}
state: {out: replace}
steps:
  - {id: s, agent: a, prompt: "same question", output: out}
"#;
        let store = Arc::new(MemoryStore::new());
        let script = "agents:\n  a:\n    replies: [{text: answer, usage: {input_tokens: 50, output_tokens: 5}}]\n    then: repeat_last\n";
        let (first, _, _) = run_yaml(yaml, &[("default", script)], store.clone()).await;
        assert_eq!(first.usage.cache_misses, 1);
        assert_eq!(first.usage.cache_hits, 0);
        let (second, events, models) = run_yaml(yaml, &[("default", script)], store.clone()).await;
        assert_eq!(second.usage.cache_hits, 1, "{:?}", second.usage);
        assert_eq!(second.usage.cost_usd, 0.0, "a cached reply is free");
        assert_eq!(
            models["default"].total_calls(),
            0,
            "the provider was not called"
        );
        assert_eq!(second.outputs["out"], "answer");
        assert!(events.iter().any(|e| matches!(
            e,
            EventKind::ModelCalled {
                cache: Some(true),
                ..
            }
        )));
    }

    #[tokio::test]
    async fn a_long_conversation_is_compressed_with_an_event() {
        // A tiny window: after a few tool turns the history passes 80% and is summarised.
        let yaml = r#"
name: long
defaults: {max_turns: 12}
models:
  default: {provider: x, context_window: 400, summarizer: scribe}
  scribe: {provider: x}
agents:
  a: {tools: [lookup]}
state: {out: replace}
steps:
  - {id: s, agent: a, prompt: "Research ACME thoroughly.", output: out}
"#;
        let long = "x".repeat(300);
        let script = format!(
            "agents:\n  a:\n{}    - text: done\n",
            (0..6)
                .map(|i| format!("    - text: \"{long} {i}\"\n      tool_calls: [{{name: lookup, args: {{name: ACME{i}}}}}]\n"))
                .collect::<String>()
        );
        let scribe = "agents:\n  a:\n    replies: [{text: \"ACME makes rockets; 6 lookups done.\"}]\n    then: repeat_last\n";
        let lookup = FnTool::sync(
            ToolSpec::new("lookup", "look up", json!({"type": "object"}))
                .with_effect(baton_core::SideEffect::ReadOnly),
            |_| Ok(json!({"found": "ACME"})),
        );
        let models: HashMap<String, Arc<ScriptedModel>> =
            [("default", script.as_str()), ("scribe", scribe)]
                .iter()
                .map(|(a, s)| {
                    (
                        a.to_string(),
                        Arc::new(ScriptedModel::from_yaml_str(s, *a).unwrap()),
                    )
                })
                .collect();
        let reg = Registry::new()
            .model_factory(Arc::new(Scripts(models.clone())))
            .tool(Arc::new(lookup));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wf.yaml");
        std::fs::write(&path, yaml).unwrap();
        let wf = load_file(&path, &reg).unwrap();
        let store = Arc::new(MemoryStore::new());
        let report = Runtime::new(store.clone())
            .run(wf, json!({}))
            .await
            .unwrap();
        assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
        assert_eq!(report.outputs["out"], "done");
        let id: RunId = report.run_id.parse().unwrap();
        let events: Vec<EventKind> = store
            .events(id, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        let compressed: Vec<(u64, u64)> = events
            .iter()
            .filter_map(|e| match e {
                EventKind::ContextCompressed {
                    before_tokens,
                    after_tokens,
                    ..
                } => Some((*before_tokens, *after_tokens)),
                _ => None,
            })
            .collect();
        assert!(!compressed.is_empty(), "no compression happened");
        for (b, a) in &compressed {
            assert!(a < b, "compression must shrink the context: {b} -> {a}");
        }
        assert!(models["scribe"].total_calls() >= 1);
        // The next request after a compression carries the summary, not the old turns.
        let summary_seen = events.iter().any(|e| matches!(e, EventKind::ModelCalled { input, .. } if input.iter().any(|m| m.content.contains("Summary of the earlier conversation"))));
        assert!(summary_seen, "the summary reached the model");
    }
}
