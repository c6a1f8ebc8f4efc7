//! Behaviour specific to `MemoryStore` and `NullStore`, beyond the conformance suite.

#![allow(clippy::unwrap_used)]

use baton_core::{RunId, RunStatus, RunStore, StoreError};
use baton_store::testing::{event, events, record};
use baton_store::{MemoryStore, NullStore};
use std::sync::Arc;

#[tokio::test]
async fn memory_event_count_tracks_appends() {
    let store = MemoryStore::new();
    let run = record("count", 1);
    let id = run.id;
    assert_eq!(store.event_count(id), 0);
    store.create_run(run).await.unwrap();
    assert_eq!(store.event_count(id), 0);
    store.append(id, events(0, 3)).await.unwrap();
    assert_eq!(store.event_count(id), 3);
    store.append(id, events(3, 10)).await.unwrap();
    assert_eq!(store.event_count(id), 10);
    assert!(store.append(id, events(11, 12)).await.is_err());
    assert_eq!(store.event_count(id), 10);
    assert_eq!(store.run_count(), 1);
    assert_eq!(format!("{store:?}"), "MemoryStore { runs: 1, .. }");
}

#[tokio::test]
async fn memory_events_from_offset_and_out_of_order_details() {
    let store = MemoryStore::default();
    let run = record("offsets", 1);
    let id = run.id;
    store.create_run(run).await.unwrap();
    store.append(id, events(0, 5)).await.unwrap();
    assert_eq!(store.events(id, 2).await.unwrap(), events(2, 5));
    assert_eq!(store.events(id, u64::MAX).await.unwrap(), vec![]);
    let err = store.append(id, vec![event(7)]).await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::OutOfOrder { run, expected: 5, found: 7 } if run == id
    ));
    assert_eq!(
        err.to_string(),
        format!("run {id}: append out of order: expected seq 5, got 7")
    );
}

#[tokio::test]
async fn memory_store_is_shared_across_tasks() {
    let store = Arc::new(MemoryStore::new());
    let mut handles = Vec::new();
    for t in 0..8u64 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let run = record("parallel", t);
            let id = run.id;
            store.create_run(run).await.unwrap();
            for seq in 0..100 {
                store.append(id, vec![event(seq)]).await.unwrap();
            }
            id
        }));
    }
    for handle in handles {
        let id = handle.await.unwrap();
        assert_eq!(store.event_count(id), 100);
        assert_eq!(store.events(id, 0).await.unwrap(), events(0, 100));
    }
    let all = store.runs(None).await.unwrap();
    assert_eq!(all.len(), 8);
    let created: Vec<u64> = all.iter().map(|r| r.created_at_us).collect();
    assert_eq!(created, vec![7, 6, 5, 4, 3, 2, 1, 0]);
}

#[tokio::test]
async fn null_store_discards_events_but_checks_order() {
    let store = NullStore::new();
    let run = record("null", 5);
    let id = run.id;
    store.create_run(run.clone()).await.unwrap();
    store.append(id, events(0, 4)).await.unwrap();
    assert_eq!(store.event_count(id), 4);
    assert_eq!(store.events(id, 0).await.unwrap(), vec![]);
    let err = store.append(id, events(5, 6)).await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::OutOfOrder {
            expected: 4,
            found: 5,
            ..
        }
    ));
    store.append(id, events(4, 6)).await.unwrap();
    assert_eq!(store.event_count(id), 6);

    // Records work as in any store.
    store.set_status(id, RunStatus::Succeeded).await.unwrap();
    let back = store.run(id).await.unwrap();
    assert_eq!(back.status, RunStatus::Succeeded);
    assert_eq!(
        store.runs(Some(RunStatus::Succeeded)).await.unwrap().len(),
        1
    );
    assert_eq!(store.runs(Some(RunStatus::Running)).await.unwrap().len(), 0);

    // Unknown runs are unknown.
    let ghost = RunId::new();
    assert!(matches!(
        store.events(ghost, 0).await,
        Err(StoreError::NotFound(id)) if id == ghost
    ));
    assert_eq!(store.event_count(ghost), 0);
    assert_eq!(format!("{store:?}"), "NullStore { runs: 1, .. }");
}

#[tokio::test]
async fn stores_work_as_trait_objects() {
    let stores: Vec<Arc<dyn RunStore>> =
        vec![Arc::new(MemoryStore::new()), Arc::new(NullStore::new())];
    for store in stores {
        let run = record("dyn", 1);
        store.create_run(run.clone()).await.unwrap();
        store.append(run.id, events(0, 2)).await.unwrap();
        assert_eq!(store.run(run.id).await.unwrap(), run);
    }
}
