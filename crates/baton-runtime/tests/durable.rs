//! Durable runs through the library: approvals and suspension, resume after a crash (the run's
//! task dropped mid-flight) without repeating completed work, exactly-once side effects, and
//! forks that re-run only what follows the fork point.
#![allow(clippy::unwrap_used)]

use baton_core::{EventKind, RunId, RunStatus, RunStore, SideEffect, ToolSpec};
use baton_providers::ScriptedModel;
use baton_runtime::executor::Decision;
use baton_runtime::spec::PriceSpec;
use baton_runtime::{ModelEntry, Registry, Runtime, load_file};
use baton_store::MemoryStore;
use baton_tools::FnTool;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

async fn events(store: &MemoryStore, id: RunId) -> Vec<EventKind> {
    // The run may not exist yet when a test polls for it.
    store
        .events(id, 0)
        .await
        .map(|v| v.into_iter().map(|e| e.kind).collect())
        .unwrap_or_default()
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

#[tokio::test]
async fn approval_step_suspends_and_resumes_without_redoing_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "wf.yaml",
        r#"
name: publish
state:
  draft: replace
  decision: replace
  published: replace
steps:
  - id: draft
    function: draft
    output: draft
  - id: review
    needs: draft
    reads: [draft]
    approval: "Publish this draft? {{ draft }}"
    output: decision
  - id: publish
    needs: review
    function: publish
    output: published
"#,
    );
    let drafts = counter();
    let publishes = counter();
    let (d, p) = (drafts.clone(), publishes.clone());
    let reg = Registry::new()
        .function("draft", move |_| {
            d.fetch_add(1, Ordering::SeqCst);
            Ok(json!("Q3 results are in"))
        })
        .function("publish", move |_| {
            p.fetch_add(1, Ordering::SeqCst);
            Ok(json!(true))
        });
    let wf = load_file(&path, &reg).unwrap();
    let store = Arc::new(MemoryStore::new());
    let rt = Runtime::new(store.clone());
    let report = rt.run(wf.clone(), json!({})).await.unwrap();
    assert_eq!(report.status, RunStatus::Suspended);
    assert_eq!(report.exit_code(), 4);
    let id: RunId = report.run_id.parse().unwrap();
    assert_eq!(store.run(id).await.unwrap().status, RunStatus::Suspended);

    // A new "process": only the store and the workflow file survive.
    let wf = load_file(&path, &reg).unwrap();
    let m = rt.load(wf.clone(), id).await.unwrap();
    let pending = m.pending_approvals();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].step, "review");
    let ev = events(&store, id).await;
    assert!(ev.iter().any(|e| matches!(e, EventKind::ApprovalRequested { message, .. } if message == "Publish this draft? Q3 results are in")));

    // A rejection needs the pending task; a wrong task is refused and records nothing.
    let before = store.event_count(id);
    let wrong = rt
        .decide(
            wf.clone(),
            id,
            Decision {
                task: 999,
                call_id: None,
                approved: true,
                by: "ann".into(),
                reason: None,
                value: None,
            },
        )
        .await;
    assert!(wrong.is_err());
    assert_eq!(store.event_count(id), before);

    let report = rt
        .decide(
            wf,
            id,
            Decision {
                task: pending[0].task,
                call_id: None,
                approved: true,
                by: "ann".into(),
                reason: Some("looks right".into()),
                value: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(report.outputs["decision"]["by"], "ann");
    assert_eq!(report.outputs["published"], true);
    assert_eq!(
        drafts.load(Ordering::SeqCst),
        1,
        "the draft step was not re-executed"
    );
    assert_eq!(publishes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn rejection_fails_the_step_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "wf.yaml",
        r#"
name: gate
state:
  ok: replace
steps:
  - id: gate
    approval: "Go?"
    output: ok
"#,
    );
    let wf = load_file(&path, &Registry::new()).unwrap();
    let store = Arc::new(MemoryStore::new());
    let rt = Runtime::new(store.clone());
    let report = rt.run(wf.clone(), json!({})).await.unwrap();
    let id: RunId = report.run_id.parse().unwrap();
    let task = rt.load(wf.clone(), id).await.unwrap().pending_approvals()[0].task;
    let report = rt
        .decide(
            wf,
            id,
            Decision {
                task,
                call_id: None,
                approved: false,
                by: "bob".into(),
                reason: Some("budget frozen".into()),
                value: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    assert!(
        report.failed_steps[0]
            .error
            .contains("rejected by bob: budget frozen")
    );
}

struct Bank {
    calls: Mutex<Vec<(Value, String)>>,
}

fn bank_tool(bank: Arc<Bank>, effect: SideEffect) -> FnTool {
    FnTool::new(
        ToolSpec::new(
            "transfer",
            "Move money",
            json!({"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}}),
        )
        .with_effect(effect),
        move |args, ctx| {
            let bank = bank.clone();
            async move {
                bank.calls.lock().unwrap().push((args.clone(), ctx.idempotency_key));
                Ok(json!({"ok": true, "amount": args["amount"]}))
            }
        },
    )
}

fn scripted(text: &str) -> ModelEntry {
    ModelEntry::new(
        Arc::new(ScriptedModel::from_yaml_str(text, "test").unwrap()),
        "scripted",
        PriceSpec {
            input_per_mtok: 1.0,
            output_per_mtok: 1.0,
        },
    )
}

const PAYMENTS: &str = r#"
name: payments
agents:
  payer:
    tools: [transfer]
tools:
  transfer:
    effect: irreversible
    tier: auto
    policy:
      - when: "args.amount > limit"
        tier: forbid
        reason: "over the limit from the ledger"
      - when: "args.amount > 100"
        tier: approve
state:
  limit: {merge: replace, default: 1000}
  result: replace
steps:
  - id: pay
    agent: payer
    prompt: "Pay the supplier"
    output: result
"#;

#[tokio::test]
async fn approve_tier_binds_the_exact_arguments_and_policy_forbids() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "wf.yaml", PAYMENTS);
    let bank = Arc::new(Bank {
        calls: Mutex::new(Vec::new()),
    });
    let reg = Registry::new()
        .tool(Arc::new(bank_tool(bank.clone(), SideEffect::Irreversible)))
        .model(
            "default",
            scripted(
                r#"
agents:
  payer:
    - tool_calls: [{name: transfer, args: {amount: 5000}}]
    - tool_calls: [{name: transfer, args: {amount: 500}}]
    - text: "paid"
"#,
            ),
        );
    let wf = load_file(&path, &reg).unwrap();
    let store = Arc::new(MemoryStore::new());
    let rt = Runtime::new(store.clone());
    let report = rt.run(wf.clone(), json!({})).await.unwrap();
    assert_eq!(report.status, RunStatus::Suspended, "{report:?}");
    assert!(
        bank.calls.lock().unwrap().is_empty(),
        "nothing ran before approval"
    );
    let id: RunId = report.run_id.parse().unwrap();
    let ev = events(&store, id).await;
    assert!(ev.iter().any(|e| matches!(e, EventKind::ToolCalled { error: Some(baton_core::ToolError::Forbidden { reason, .. }), .. } if reason.contains("ledger"))));

    let pending = rt.load(wf.clone(), id).await.unwrap().pending_approvals();
    assert_eq!(pending[0].tool.as_deref(), Some("transfer"));
    assert_eq!(pending[0].args, Some(json!({"amount": 500})));
    // Edited arguments must satisfy the schema.
    let bad = rt
        .decide(
            wf.clone(),
            id,
            Decision {
                task: pending[0].task,
                call_id: pending[0].call_id.clone(),
                approved: true,
                by: "cfo".into(),
                reason: None,
                value: Some(json!({"amount": "lots"})),
            },
        )
        .await;
    assert!(bad.unwrap_err().to_string().contains("schema"));
    let report = rt
        .decide(
            wf,
            id,
            Decision {
                task: pending[0].task,
                call_id: pending[0].call_id.clone(),
                approved: true,
                by: "cfo".into(),
                reason: None,
                value: Some(json!({"amount": 400})),
            },
        )
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    let calls = bank.calls.lock().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].0,
        json!({"amount": 400}),
        "ran with exactly the approved arguments"
    );
}

/// A crash is the run's task dropped while a call is in flight; resume continues from the log.
#[tokio::test]
async fn resume_after_crash_repeats_only_safe_calls() {
    for (effect, expect_suspend) in [
        (SideEffect::Idempotent, false),
        (SideEffect::Irreversible, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let text = PAYMENTS.replace(
            "effect: irreversible",
            &format!(
                "effect: {}",
                serde_json::to_value(effect).unwrap().as_str().unwrap()
            ),
        );
        let path = write(dir.path(), "wf.yaml", &text);
        let bank = Arc::new(Bank {
            calls: Mutex::new(Vec::new()),
        });
        let script = r#"
agents:
  payer:
    - tool_calls: [{name: transfer, args: {amount: 50}}]
      latency: 0ms
    - text: "paid"
"#;
        // First process: the tool hangs, and the process "dies" during the call.
        let hang = FnTool::new(
            ToolSpec::new("transfer", "Move money", json!({"type": "object"})).with_effect(effect),
            |_, _| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(json!(null))
            },
        );
        let reg1 = Registry::new()
            .tool(Arc::new(hang))
            .model("default", scripted(script));
        let wf1 = load_file(&path, &reg1).unwrap();
        let store = Arc::new(MemoryStore::new());
        let rt = Runtime::new(store.clone());
        let id = RunId::new();
        let handle = tokio::spawn(rt.run_with_id(wf1, json!({}), id, None));
        for _ in 0..200 {
            if events(&store, id)
                .await
                .iter()
                .any(|e| matches!(e, EventKind::ToolStarted { .. }))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        handle.abort();
        let _ = handle.await;
        let model_calls_before = events(&store, id)
            .await
            .iter()
            .filter(|e| matches!(e, EventKind::ModelCalled { .. }))
            .count();
        assert_eq!(model_calls_before, 1);

        // Second process.
        let reg2 = Registry::new()
            .tool(Arc::new(bank_tool(bank.clone(), effect)))
            // The same script: the run tells the provider where it stands, so the reply
            // received before the crash is not asked for again and the script continues.
            .model("default", scripted(script));
        let wf2 = load_file(&path, &reg2).unwrap();
        let report = rt.resume(wf2.clone(), id).await.unwrap();
        let ev = events(&store, id).await;
        assert!(ev.iter().any(|e| matches!(e, EventKind::RunResumed { .. })));
        if expect_suspend {
            assert_eq!(report.status, RunStatus::Suspended, "{report:?}");
            assert!(
                bank.calls.lock().unwrap().is_empty(),
                "an irreversible call is not repeated blindly"
            );
            let p = rt.load(wf2.clone(), id).await.unwrap().pending_approvals();
            assert_eq!(p[0].args, Some(json!({"amount": 50})));
        } else {
            assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
            let calls = bank.calls.lock().unwrap();
            assert_eq!(calls.len(), 1);
            let key = ev.iter().find_map(|e| match e {
                EventKind::ToolStarted {
                    idempotency_key, ..
                } => Some(idempotency_key.clone()),
                _ => None,
            });
            assert_eq!(
                Some(calls[0].1.clone()),
                key,
                "same idempotency key as the journaled intent"
            );
            // The model reply received before the crash was not asked for again.
            let model_calls = ev
                .iter()
                .filter(|e| matches!(e, EventKind::ModelCalled { .. }))
                .count();
            assert_eq!(model_calls, 2);
            assert_eq!(
                ev.iter()
                    .filter(|e| matches!(e, EventKind::ToolStarted { .. }))
                    .count(),
                1
            );
        }
    }
}

#[tokio::test]
async fn fork_reruns_only_what_follows_and_leaves_the_original_alone() {
    let dir = tempfile::tempdir().unwrap();
    let wf_text = r#"
name: chain
state:
  topic: replace
  a: replace
  b: replace
  c: replace
steps:
  - id: a
    agent: writer
    reads: [topic]
    prompt: "Outline {{ topic }}"
    output: a
  - id: b
    agent: writer
    needs: a
    reads: [a]
    prompt: "Draft from {{ a }}"
    output: b
  - id: c
    agent: writer
    needs: b
    reads: [b]
    prompt: "Polish {{ b }}"
    output: c
agents:
  writer: {}
"#;
    let path = write(dir.path(), "wf.yaml", wf_text);
    let path2 = write(
        dir.path(),
        "wf2.yaml",
        &wf_text.replace("Polish {{ b }}", "Polish for executives: {{ b }}"),
    );
    let script = r#"
steps:
  a: [{text: "outline"}]
  b: [{text: "draft"}]
  c:
    rules:
      - when: {contains: "executives"}
        reply: {text: "exec summary"}
    replies: [{text: "polished"}]
"#;
    let model = Arc::new(ScriptedModel::from_yaml_str(script, "s").unwrap());
    let reg = Registry::new().model(
        "default",
        ModelEntry::new(
            model.clone(),
            "m",
            PriceSpec {
                input_per_mtok: 1.0,
                output_per_mtok: 1.0,
            },
        ),
    );
    let wf = load_file(&path, &reg).unwrap();
    let wf2 = load_file(&path2, &reg).unwrap();
    let store = Arc::new(MemoryStore::new());
    let rt = Runtime::new(store.clone());
    let original = rt.run(wf.clone(), json!({"topic": "Q3"})).await.unwrap();
    assert_eq!(original.outputs["c"], "polished");
    let oid: RunId = original.run_id.parse().unwrap();
    let before = store.events(oid, 0).await.unwrap();
    assert_eq!(model.total_calls(), 3);

    // Fork right after step `a` completed.
    let at = before
        .iter()
        .find(|e| matches!(&e.kind, EventKind::StepCompleted { step, .. } if &**step == "a"))
        .unwrap()
        .seq;
    let forked = rt.fork(wf.clone(), wf2, oid, at, vec![]).await.unwrap();
    assert_eq!(forked.status, RunStatus::Succeeded);
    assert_eq!(forked.outputs["b"], "draft");
    assert_eq!(forked.outputs["c"], "exec summary");
    assert_eq!(model.step_calls("a"), 1, "a is shared history");
    assert_eq!(model.step_calls("b"), 1, "b was served from the recording");
    assert_eq!(model.step_calls("c"), 2, "only c was called again");
    let fid: RunId = forked.run_id.parse().unwrap();
    let fev = events(&store, fid).await;
    assert!(fev.iter().any(|e| matches!(e, EventKind::Forked { .. })));
    let replayed: Vec<&str> = fev
        .iter()
        .filter_map(|e| match e {
            EventKind::ModelCalled { step, replayed, .. } => Some((&**step, *replayed)),
            _ => None,
        })
        .filter(|(_, r)| *r)
        .map(|(s, _)| s)
        .collect();
    assert_eq!(replayed, ["b"]);
    assert_eq!(
        store.events(oid, 0).await.unwrap(),
        before,
        "the original run is untouched"
    );

    // Fork with changed state.
    let set = rt
        .fork(
            wf.clone(),
            wf,
            oid,
            at,
            vec![("a".into(), json!("new outline"))],
        )
        .await
        .unwrap();
    assert_eq!(set.outputs["a"], "new outline");
}
