//! Event sourcing: replaying the events of any run rebuilds its final state exactly, and the
//! final state does not depend on the order in which parallel steps happen to finish.
#![allow(clippy::unwrap_used)]

use baton_core::{Event, RunId};
use baton_runtime::builder::{StepBuilder, WorkflowBuilder};
use baton_runtime::machine::RunMachine;
use baton_runtime::spec::MergeRule;
use baton_runtime::{Registry, Runtime, Workflow};
use baton_store::MemoryStore;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// A random DAG: for each step, the earlier steps it needs, and whether it is async.
#[derive(Clone, Debug)]
struct Dag {
    needs: Vec<Vec<usize>>,
    slow: Vec<u8>,
}

fn dag() -> impl Strategy<Value = Dag> {
    (2usize..12).prop_flat_map(|n| {
        let needs = (0..n)
            .map(|i| proptest::collection::vec(0..i.max(1), 0..=i.min(3)))
            .collect::<Vec<_>>();
        (needs, proptest::collection::vec(0u8..4, n)).prop_map(move |(needs, slow)| {
            let needs = needs
                .into_iter()
                .enumerate()
                .map(|(i, mut v)| {
                    v.retain(|&j| j < i);
                    v.sort();
                    v.dedup();
                    v
                })
                .collect();
            Dag { needs, slow }
        })
    })
}

fn build(d: &Dag, salt: u64) -> Arc<Workflow> {
    let slow = d.slow.clone();
    let registry = Registry::new().async_function("work", move |input| {
        let idx: usize = input.step[1..].parse().unwrap_or(0);
        // Different salts give different completion orders for the same graph.
        let ms = (slow[idx] as u64 * 7 + salt * 13 + idx as u64) % 4;
        let seen = input.state.get("total").cloned().unwrap_or(Value::Null);
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let _ = seen;
            Ok(json!({
                "log": [format!("s{idx}")],
                "total": idx + 1,
                "m": {format!("k{}", idx % 3): idx},
                "best": idx * 10,
            }))
        }
    });
    let mut b = WorkflowBuilder::new("random-dag")
        .state("log", MergeRule::Append)
        .state("total", MergeRule::Sum)
        .state("m", MergeRule::Merge)
        .state("best", MergeRule::Max)
        .state("seen", MergeRule::Replace);
    for (i, needs) in d.needs.iter().enumerate() {
        let mut s = StepBuilder::function(&format!("s{i}"), "work")
            .writes(["log", "total", "m", "best"])
            .reads(["total"]);
        if !needs.is_empty() {
            s = s.needs(needs.iter().map(|j| format!("s{j}")));
        }
        b = b.step(s);
    }
    b.build(&registry).unwrap()
}

async fn run(wf: Arc<Workflow>) -> (baton_runtime::RunReport, Vec<Event>) {
    let store = Arc::new(MemoryStore::new());
    let rt = Runtime::new(store.clone());
    let report = rt.run(wf, json!({})).await.unwrap();
    let id: RunId = report.run_id.parse().unwrap();
    let events = baton_core::RunStore::events(&*store, id, 0).await.unwrap();
    (report, events)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, .. ProptestConfig::default() })]

    #[test]
    fn replaying_the_log_rebuilds_the_final_state(d in dag(), salt in 0u64..4) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let wf = build(&d, salt);
            let (report, events) = run(wf.clone()).await;
            prop_assert_eq!(report.status, baton_core::RunStatus::Succeeded);
            // Through the wire format, as a store would keep it.
            let text = serde_json::to_string(&events).unwrap();
            let back: Vec<Event> = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(&back, &events);
            let id: RunId = report.run_id.parse().unwrap();
            let m = RunMachine::replay(wf, id, &back).unwrap();
            prop_assert_eq!(m.state_json(), report.outputs.clone());
            prop_assert_eq!(m.status(), report.status);
            prop_assert_eq!(*m.usage(), report.usage);
            prop_assert_eq!(m.completed_steps().len(), d.needs.len());
            Ok(())
        })?;
    }

    #[test]
    fn final_state_does_not_depend_on_completion_order(d in dag()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (a, _) = run(build(&d, 0)).await;
            let (b, _) = run(build(&d, 3)).await;
            prop_assert_eq!(a.outputs, b.outputs);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn replay_rejects_a_log_that_does_not_fit() {
    let wf = build(
        &Dag {
            needs: vec![vec![], vec![0]],
            slow: vec![0, 0],
        },
        0,
    );
    let (report, mut events) = run(wf.clone()).await;
    let id: RunId = report.run_id.parse().unwrap();
    events.remove(2);
    let err = RunMachine::replay(wf, id, &events).unwrap_err();
    assert!(err.to_string().contains("replay diverged"), "{err}");
}
