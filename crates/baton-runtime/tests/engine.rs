//! Scheduling, state and failure semantics of the engine, through the builder API.
#![allow(clippy::unwrap_used)]

use baton_core::{EventKind, RunId, RunStatus, RunStore};
use baton_runtime::builder::{StepBuilder, WorkflowBuilder};
use baton_runtime::spec::{JoinMode, MergeRule, OnTimeout};
use baton_runtime::{Registry, RunReport, Runtime, Workflow, load_file};
use baton_store::MemoryStore;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

async fn run(wf: Arc<Workflow>, input: Value) -> (RunReport, Vec<EventKind>) {
    let store = Arc::new(MemoryStore::new());
    let report = Runtime::new(store.clone()).run(wf, input).await.unwrap();
    let id: RunId = report.run_id.parse().unwrap();
    let events = store.events(id, 0).await.unwrap();
    (report, events.into_iter().map(|e| e.kind).collect())
}

fn sleeper(
    ms: u64,
    value: Value,
) -> impl Fn(baton_runtime::StepInput) -> futures::future::BoxFuture<'static, Result<Value, String>>
+ Send
+ Sync
+ 'static {
    move |_| {
        let v = value.clone();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(v)
        })
    }
}

#[tokio::test]
async fn parallel_writes_to_a_replace_key_are_an_error_naming_both_steps() {
    let reg = Registry::new()
        .function("a", |_| Ok(json!("from a")))
        .async_function("b", sleeper(5, json!("from b")));
    let wf = WorkflowBuilder::new("conflict")
        .state("summary", MergeRule::Replace)
        .step(StepBuilder::join("start"))
        .step(
            StepBuilder::function("left", "a")
                .needs(["start"])
                .output("summary"),
        )
        .step(
            StepBuilder::function("right", "b")
                .needs(["start"])
                .output("summary"),
        )
        .build(&reg)
        .unwrap();
    let (report, _) = run(wf, json!({})).await;
    assert_eq!(report.status, RunStatus::Failed);
    let f = &report.failed_steps[0];
    assert_eq!(f.step, "right");
    assert!(
        f.error.contains("conflicting parallel writes"),
        "{}",
        f.error
    );
    assert!(
        f.error.contains("`left`") && f.error.contains("`right`"),
        "{}",
        f.error
    );
}

#[tokio::test]
async fn sequential_writes_to_a_replace_key_are_fine() {
    let reg = Registry::new().function("a", |i| Ok(json!(format!("by {}", i.step))));
    let wf = WorkflowBuilder::new("seq")
        .state("summary", MergeRule::Replace)
        .step(StepBuilder::function("one", "a").output("summary"))
        .step(
            StepBuilder::function("two", "a")
                .needs(["one"])
                .output("summary"),
        )
        .build(&reg)
        .unwrap();
    let (report, _) = run(wf, json!({})).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.outputs["summary"], "by two");
}

#[tokio::test]
async fn fan_out_runs_branches_concurrently_and_join_waits_for_all() {
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (a, p) = (active.clone(), peak.clone());
    let reg = Registry::new().async_function("branch", move |_| {
        let (a, p) = (a.clone(), p.clone());
        async move {
            let now = a.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            a.fetch_sub(1, Ordering::SeqCst);
            Ok(json!(1))
        }
    });
    let mut b = WorkflowBuilder::new("fan")
        .state("xs", MergeRule::Append)
        .step(StepBuilder::join("split"));
    let names: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    for n in &names {
        b = b.step(
            StepBuilder::function(n, "branch")
                .needs(["split"])
                .output("xs"),
        );
    }
    let wf = b
        .step(StepBuilder::join("join").needs(names.clone()))
        .build(&reg)
        .unwrap();
    let t0 = std::time::Instant::now();
    let (report, _) = run(wf, json!({})).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(
        peak.load(Ordering::SeqCst),
        10,
        "all branches in flight at once"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(150),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(report.outputs["xs"].as_array().unwrap().len(), 10);
    assert_eq!(report.completed_steps.last().unwrap(), "join");
}

#[tokio::test]
async fn quorum_join_proceeds_on_quorum_and_absorbs_late_arrivals() {
    let reg = Registry::new()
        .async_function("fast", sleeper(1, json!("fast")))
        .async_function("slow", sleeper(60, json!("slow")))
        .function("count", |_| Ok(json!(1)));
    let wf = WorkflowBuilder::new("quorum")
        .state("votes", MergeRule::Append)
        .state("decisions", MergeRule::Sum)
        .step(StepBuilder::function("v1", "fast").output("votes"))
        .step(StepBuilder::function("v2", "fast").output("votes"))
        .step(StepBuilder::function("v3", "slow").output("votes"))
        .step(
            StepBuilder::function("decide", "count")
                .needs(["v1", "v2", "v3"])
                .join_mode(JoinMode::Quorum, Some(2), None, OnTimeout::Fail)
                .output("decisions"),
        )
        .build(&reg)
        .unwrap();
    let (report, events) = run(wf, json!({})).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.outputs["decisions"], 1, "decide ran exactly once");
    let started: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            EventKind::StepStarted { step, .. } => Some(&**step),
            _ => None,
        })
        .collect();
    let decide = started.iter().position(|s| *s == "decide").unwrap();
    let v3_done = events
        .iter()
        .position(|e| matches!(e, EventKind::StepCompleted { step, .. } if &**step == "v3"))
        .unwrap();
    let decide_started = events
        .iter()
        .position(|e| matches!(e, EventKind::StepStarted { step, .. } if &**step == "decide"))
        .unwrap();
    assert!(
        decide_started < v3_done,
        "decide did not wait for the slow voter"
    );
    assert!(decide > 0);
}

#[tokio::test]
async fn join_timeout_fails_or_proceeds() {
    for (on_timeout, expect) in [
        (OnTimeout::Fail, RunStatus::Failed),
        (OnTimeout::Proceed, RunStatus::Succeeded),
    ] {
        let reg = Registry::new()
            .async_function("fast", sleeper(1, json!("fast")))
            .async_function("slow", sleeper(300, json!("slow")))
            .function("sum", |_| Ok(json!("joined")));
        let wf = WorkflowBuilder::new("timeout")
            .state("parts", MergeRule::Append)
            .state("out", MergeRule::Replace)
            .step(StepBuilder::function("a", "fast").output("parts"))
            .step(StepBuilder::function("b", "slow").output("parts"))
            .step(
                StepBuilder::function("j", "sum")
                    .needs(["a", "b"])
                    .join_mode(
                        JoinMode::All,
                        None,
                        Some(Duration::from_millis(50)),
                        on_timeout,
                    )
                    .output("out"),
            )
            .build(&reg)
            .unwrap();
        let (report, _) = run(wf, json!({})).await;
        assert_eq!(report.status, expect, "{on_timeout:?}: {report:?}");
        if expect == RunStatus::Failed {
            let f = &report.failed_steps[0];
            assert_eq!(f.step, "j");
            assert!(f.error.contains("timed out after 50 ms"), "{}", f.error);
            assert!(f.error.contains("`b`"), "{}", f.error);
        } else {
            assert_eq!(report.outputs["out"], "joined");
        }
    }
}

#[tokio::test]
async fn loops_are_bounded_by_max_visits() {
    let reg = Registry::new().function("inc", |_| Ok(json!(1)));
    let wf = WorkflowBuilder::new("loop")
        .state("n", MergeRule::Sum)
        .step(
            StepBuilder::function("again", "inc")
                .output("n")
                .next_when(Some("n < 100"), "again")
                .max_visits(5),
        )
        .start(["again"])
        .build(&reg)
        .unwrap();
    let (report, _) = run(wf, json!({})).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.outputs["n"], 5);
    assert!(
        report.failed_steps[0].error.contains("visit bound"),
        "{:?}",
        report.failed_steps
    );
    assert_eq!(report.visits["again"], 5);
}

#[tokio::test]
async fn conditional_loop_ends_when_condition_turns_false() {
    let reg = Registry::new().function("inc", |_| Ok(json!(1)));
    let wf = WorkflowBuilder::new("loop")
        .state("n", MergeRule::Sum)
        .step(
            StepBuilder::function("again", "inc")
                .output("n")
                .next_when(Some("n < 3"), "again")
                .next_when(None, "done"),
        )
        .step(StepBuilder::join("done"))
        .start(["again"])
        .build(&reg)
        .unwrap();
    let (report, events) = run(wf, json!({})).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.outputs["n"], 3);
    assert_eq!(report.completed_steps, ["again", "done"]);
    let transitions = events
        .iter()
        .filter(|e| matches!(e, EventKind::Transition { .. }))
        .count();
    assert_eq!(transitions, 3);
}

#[tokio::test]
async fn failure_routing_continue_and_impact() {
    let reg = Registry::new()
        .function("ok", |_| Ok(json!("ok")))
        .function("boom", |_| Err("upstream API returned 500".to_string()));
    // Routed failure: the run succeeds through the handler.
    let wf = WorkflowBuilder::new("routed")
        .state("r", MergeRule::Replace)
        .step(StepBuilder::function("enrich", "boom").on_error("manual_review"))
        .step(
            StepBuilder::function("score", "ok")
                .needs(["enrich"])
                .output("r"),
        )
        .step(StepBuilder::function("manual_review", "ok").output("r"))
        .build(&reg)
        .unwrap();
    let (report, _) = run(wf, json!({})).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.completed_steps, ["manual_review"]);
    assert_eq!(report.failed_steps[0].policy, "manual_review");
    assert_eq!(report.skipped_steps[0].step, "score");

    // Continue: partial success, dependents skipped, impact reported.
    let wf = WorkflowBuilder::new("degraded")
        .state("fin", MergeRule::Replace)
        .state("mkt", MergeRule::Replace)
        .step(StepBuilder::function("financial", "ok").output("fin"))
        .step(
            StepBuilder::function("market", "boom")
                .output("mkt")
                .on_error("continue")
                .impact("no market sizing in the recommendation"),
        )
        .step(StepBuilder::join("synthesis").needs(["financial", "market"]))
        .build(&reg)
        .unwrap();
    let (report, _) = run(wf, json!({})).await;
    assert_eq!(report.status, RunStatus::PartialSuccess);
    assert_eq!(report.exit_code(), 3);
    let f = &report.failed_steps[0];
    assert_eq!(f.step, "market");
    assert!(f.impact.contains("no market sizing"), "{}", f.impact);
    assert!(f.impact.contains("synthesis"), "{}", f.impact);
    assert_eq!(report.completed_steps, ["financial"]);
}

#[tokio::test]
async fn map_respects_its_concurrency_limit_and_keeps_item_order() {
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (a, p) = (active.clone(), peak.clone());
    let reg = Registry::new().async_function("monitor", move |input| {
        let (a, p) = (a.clone(), p.clone());
        async move {
            let now = a.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            let n = input.item.as_ref().and_then(Value::as_u64).unwrap_or(0);
            // Later items finish first.
            tokio::time::sleep(Duration::from_millis(30 - n)).await;
            a.fetch_sub(1, Ordering::SeqCst);
            Ok(json!(n * 2))
        }
    });
    let wf = WorkflowBuilder::new("map")
        .state_with_default(
            "topics",
            MergeRule::Replace,
            Some(json!((0..20).collect::<Vec<u64>>())),
        )
        .state("reports", MergeRule::Replace)
        .step(StepBuilder::map_function("monitor_all", "topics", "monitor", 4).output("reports"))
        .build(&reg)
        .unwrap();
    let (report, _) = run(wf, json!({})).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(peak.load(Ordering::SeqCst), 4);
    let expect: Vec<u64> = (0..20).map(|n| n * 2).collect();
    assert_eq!(report.outputs["reports"], json!(expect));
    assert_eq!(report.usage.steps, 21);
}

#[tokio::test]
async fn run_input_must_name_declared_keys() {
    let reg = Registry::new().function("ok", |_| Ok(json!(1)));
    let wf = WorkflowBuilder::new("input")
        .state("lead", MergeRule::Replace)
        .step(StepBuilder::function("a", "ok"))
        .build(&reg)
        .unwrap();
    let rt = Runtime::new(Arc::new(MemoryStore::new()));
    let err = rt.run(wf.clone(), json!({"leed": 1})).await.unwrap_err();
    assert!(
        err.to_string().contains("`leed` is not a state key"),
        "{err}"
    );
    let err = rt.run(wf, json!([1])).await.unwrap_err();
    assert!(err.to_string().contains("JSON object"), "{err}");
}

#[tokio::test]
async fn sub_workflows_and_subprocess_steps() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("child.yaml"),
        r#"
name: child
state:
  n: replace
  doubled: replace
steps:
  - id: double
    run: ["python3", "-c", "import json,sys; d=json.load(sys.stdin); print(json.dumps(d['state']['n'] * 2))"]
    reads: [n]
    output: doubled
outputs: [doubled]
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("parent.yaml"),
        r#"
name: parent
state:
  x: replace
  result: replace
steps:
  - id: call
    workflow: child.yaml
    input:
      n: "x + 1"
    output: result
"#,
    )
    .unwrap();
    let wf = load_file(&dir.path().join("parent.yaml"), &Registry::new()).unwrap();
    let (report, events) = run(wf, json!({"x": 20})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(report.outputs["result"], json!({"doubled": 42}));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EventKind::ChildStarted { .. }))
    );
    assert!(events.iter().any(|e| matches!(
        e,
        EventKind::ChildFinished {
            status: RunStatus::Succeeded,
            ..
        }
    )));
}

/// The library example of README.md, kept compiling and true.
#[tokio::test]
async fn readme_library_example() {
    let registry = Registry::new().function("greet", |input| {
        let name = input
            .state
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or("world");
        Ok(json!(format!("hello, {name}")))
    });
    let wf = WorkflowBuilder::new("hello")
        .state("name", MergeRule::Replace)
        .state("greeting", MergeRule::Replace)
        .step(
            StepBuilder::function("greet", "greet")
                .reads(["name"])
                .output("greeting"),
        )
        .build(&registry)
        .unwrap();
    let report = Runtime::new(Arc::new(MemoryStore::new()))
        .run(wf, json!({"name": "baton"}))
        .await
        .unwrap();
    assert_eq!(report.outputs["greeting"], "hello, baton");
}

/// An `any` join fires once even when a need it did not wait for finishes later.
#[tokio::test]
async fn any_join_fires_once_when_a_late_need_completes() {
    let reg = Registry::new()
        .function("now", |_| Ok(json!(1)))
        .async_function("later", sleeper(40, json!(2)))
        .function("count", |_| Ok(json!(1)));
    let wf = WorkflowBuilder::new("any")
        .state("r", MergeRule::Append)
        .state("fired", MergeRule::Sum)
        .step(StepBuilder::function("a", "now").output("r"))
        .step(StepBuilder::function("b", "later").output("r"))
        .step(StepBuilder::function("c", "now").needs(["b"]).output("r"))
        .step(
            StepBuilder::function("j", "count")
                .needs(["a", "c"])
                .join_mode(JoinMode::Any, None, None, OnTimeout::Fail)
                .output("fired"),
        )
        .build(&reg)
        .unwrap();
    let (report, _) = run(wf, json!({})).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.outputs["fired"], 1, "{report:?}");
}

/// A transition condition that cannot be evaluated fails the step, which is then not also
/// reported as completed.
#[tokio::test]
async fn routing_error_fails_the_step_instead_of_completing_it() {
    let reg = Registry::new().function("one", |_| Ok(json!(1)));
    let wf = WorkflowBuilder::new("route")
        .state("n", MergeRule::Replace)
        .state("r", MergeRule::Append)
        .step(
            StepBuilder::function("s", "one")
                .output("r")
                .on_error("continue")
                .next_when(Some("n > 3"), "t"),
        )
        .step(StepBuilder::function("t", "one").output("r"))
        .step(StepBuilder::function("d", "one").needs(["s"]).output("r"))
        .build(&reg)
        .unwrap();
    let (report, _) = run(wf, json!({})).await;
    assert_eq!(report.status, RunStatus::PartialSuccess);
    assert!(report.completed_steps.is_empty(), "{report:?}");
    assert_eq!(report.failed_steps[0].step, "s");
    assert!(
        report.failed_steps[0].error.contains("routing"),
        "{:?}",
        report.failed_steps
    );
    assert_eq!(report.skipped_steps[0].step, "d");
}

/// `retries:` runs a failing step again before `on_error` applies; a degraded run reports a
/// reduced confidence and what to do.
#[tokio::test]
async fn step_retries_then_degrades_with_confidence_and_recommendations() {
    let tries = Arc::new(AtomicUsize::new(0));
    let t = tries.clone();
    let reg = Registry::new()
        .function("flaky", move |_| {
            if t.fetch_add(1, Ordering::SeqCst) < 2 {
                Err("upstream timed out".to_string())
            } else {
                Ok(json!("ok"))
            }
        })
        .function("broken", |_| Err("schema changed upstream".to_string()))
        .function("ok", |_| Ok(json!(1)));
    let wf = WorkflowBuilder::new("retry")
        .state("a", MergeRule::Replace)
        .state("b", MergeRule::Replace)
        .state("c", MergeRule::Replace)
        .step(
            StepBuilder::function("flaky", "flaky")
                .output("a")
                .retries(2),
        )
        .step(
            StepBuilder::function("broken", "broken")
                .output("b")
                .retries(1)
                .on_error("continue"),
        )
        .step(
            StepBuilder::function("after", "ok")
                .needs(["broken"])
                .output("c"),
        )
        .build(&reg)
        .unwrap();
    let (report, events) = run(wf, json!({})).await;
    assert_eq!(report.outputs["a"], "ok", "third attempt succeeded");
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    let retried = events
        .iter()
        .filter(|e| matches!(e, EventKind::StepFailed { policy, .. } if policy == "retry"))
        .count();
    assert_eq!(retried, 3, "two retries of flaky, one of broken");
    assert_eq!(report.status, RunStatus::PartialSuccess);
    assert_eq!(report.failed_steps.len(), 1);
    assert!(
        report.confidence < 1.0 && report.confidence > 0.0,
        "{}",
        report.confidence
    );
    assert!(!report.recommendations.is_empty());
    assert!(
        report.recommendations[0].contains("broken"),
        "{:?}",
        report.recommendations
    );
}
