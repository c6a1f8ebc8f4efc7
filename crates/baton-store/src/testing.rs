//! The conformance suite for [`RunStore`] backends (feature `test-utils`).
//!
//! Every store — in memory, SQLite, PostgreSQL — should pass [`conformance`]; a store that
//! deliberately discards events (like [`NullStore`](crate::NullStore)) should pass
//! [`conformance_without_events`]. Run it from a test of the backend's crate:
//!
//! ```
//! # async fn demo() {
//! let store = baton_store::MemoryStore::new();
//! baton_store::testing::conformance(&store).await;
//! # }
//! ```
//!
//! The checks create their own runs with fresh ids and only look at those, so the store need
//! not be empty, and the suite may run more than once against the same store. A failed check
//! panics with a message naming the rule that was broken.

use baton_core::{Event, EventKind, KeyUpdate, RunId, RunRecord, RunStatus, RunStore, StoreError};
use serde_json::json;
use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A running run of `workflow` with a fresh id, created (and last updated) at `created_at_us`.
pub fn record(workflow: &str, created_at_us: u64) -> RunRecord {
    RunRecord {
        id: RunId::new(),
        workflow: workflow.to_owned(),
        status: RunStatus::Running,
        parent: None,
        input: json!({"topic": "conformance", "n": 3, "tags": ["a", "b"], "nested": {"x": 1.5}}),
        source: Some("conformance.yaml".to_owned()),
        created_at_us,
        updated_at_us: created_at_us,
    }
}

/// A plausible event with the given `seq`: `run_started` for 0, then a mix of kinds with JSON
/// payloads, so that a store that serializes events is exercised.
pub fn event(seq: u64) -> Event {
    let kind = match seq {
        0 => EventKind::RunStarted {
            workflow: "conformance".into(),
            input: json!({"topic": "stores"}),
            parent: None,
        },
        _ => match seq % 3 {
            0 => EventKind::StateUpdated {
                step: "write".into(),
                round: u32::try_from(seq).unwrap_or(u32::MAX),
                updates: vec![KeyUpdate {
                    key: "draft".into(),
                    value: json!({"text": format!("draft {seq} — ✓"), "score": 0.25, "ok": true}),
                }],
            },
            1 => EventKind::StepSkipped {
                step: "review".into(),
                reason: format!("condition false at {seq}"),
            },
            _ => EventKind::TimerFired { timer: seq },
        },
    };
    Event {
        seq,
        at_us: 1_700_000_000_000_000 + seq,
        kind,
    }
}

/// Events `from..to`, as produced by [`event`].
pub fn events(from: u64, to: u64) -> Vec<Event> {
    (from..to).map(event).collect()
}

/// One event of every kind, with `seq`s from `first_seq`: optional fields both set and unset,
/// nested tagged enums, floats, unicode, big and negative numbers — what a store that encodes
/// events must round-trip exactly. (Built from JSON, so that fields added to the event kinds
/// with defaults do not break the suite.)
pub fn every_kind(first_seq: u64) -> Vec<Event> {
    let (parent, child) = (RunId::new().to_string(), RunId::new().to_string());
    let call = json!({"id": "call_1", "name": "search",
        "args": {"q": "naïve ✓", "limit": 5, "neg": -3, "big": u64::MAX, "f": 0.1}});
    let kinds = [
        json!({"type": "run_started", "workflow": "every-kind", "parent": parent,
            "input": {"z": 1, "a": [null, true, 2.5, "x"], "m": {"k": {}}}}),
        json!({"type": "step_started", "step": "plan", "task": 1, "visit": 2, "round": 3,
            "item": 4, "agent": "planner", "input": ["a", "b"],
            "messages": [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": "plan a trip"}]}),
        json!({"type": "step_started", "step": "plain", "task": 2, "visit": 1, "round": 0}),
        json!({"type": "state_updated", "step": "plan", "round": 3,
            "updates": [{"key": "plan", "value": {"days": 3}}, {"key": "empty", "value": null}]}),
        json!({"type": "step_completed", "step": "plan", "task": 1, "output": -1.5e300,
            "duration_us": 1234}),
        json!({"type": "step_failed", "step": "plan", "error": "boom", "policy": "continue"}),
        json!({"type": "step_skipped", "step": "review", "reason": "condition false"}),
        json!({"type": "transition", "from": "plan", "to": ["a", "b"],
            "when": "state.ok == true"}),
        json!({"type": "model_called", "step": "plan", "task": 1, "agent": "planner",
            "model": "scripted", "turn": 1,
            "input": [{"role": "assistant", "tool_calls": [call]}],
            "output": {"content": "done", "tool_calls": [call],
                       "usage": {"input_tokens": 10, "output_tokens": 20}},
            "cost_usd": 0.000125, "duration_us": 99}),
        json!({"type": "model_failed", "step": "plan", "task": 1, "agent": "planner",
            "model": "scripted", "turn": 2,
            "error": {"kind": "http", "status": 429, "message": "slow down"},
            "duration_us": 7}),
        json!({"type": "tool_called", "step": "plan", "task": 1, "tool": "search",
            "call_id": "call_1", "args": {"q": "x"},
            "error": {"kind": "timeout", "tool": "search", "after_ms": 100},
            "duration_us": 100000}),
        json!({"type": "tool_called", "step": "plan", "task": 1, "tool": "search",
            "call_id": "call_2", "args": {}, "result": {"hits": []}, "duration_us": 5}),
        json!({"type": "output_rejected", "step": "plan", "task": 1,
            "reason": "missing field `days`"}),
        json!({"type": "retry", "step": "plan", "task": 1, "attempt": 2, "delay_ms": 250,
            "reason": "HTTP 429"}),
        json!({"type": "tool_started", "step": "plan", "task": 1, "tool": "write_file",
            "call_id": "call_3", "args": {"path": "/tmp/x"}, "idempotency_key": "r1-7-call_3"}),
        json!({"type": "approval_requested", "step": "plan", "task": 1, "call_id": "call_3",
            "tool": "write_file", "args": {"path": "/tmp/x"}, "message": "write /tmp/x?"}),
        json!({"type": "approval_requested", "step": "gate", "task": 4, "message": "ship it?"}),
        json!({"type": "approval_decided", "step": "plan", "task": 1, "call_id": "call_3",
            "approved": false, "by": "ana", "reason": "wrong path"}),
        json!({"type": "approval_decided", "step": "gate", "task": 4, "approved": true,
            "by": "bo", "value": {"edited": true}}),
        json!({"type": "run_suspended", "reason": "waiting for approval"}),
        json!({"type": "run_resumed", "restarted": [1, 4]}),
        json!({"type": "forked", "from": parent, "at": 12}),
        json!({"type": "state_overridden", "updates": [{"key": "plan", "value": "short"}]}),
        json!({"type": "model_called", "step": "plan", "task": 1, "agent": "planner",
            "model": "scripted", "turn": 3, "input": [],
            "output": {"usage": {"input_tokens": 0, "output_tokens": 0}},
            "cost_usd": 0.0, "duration_us": 0, "replayed": true}),
        json!({"type": "timer_started", "timer": 15, "step": "wait", "task": 1,
            "due_us": 1_700_000_060_000_000u64, "after_ms": 60000}),
        json!({"type": "timer_fired", "timer": 15}),
        json!({"type": "child_started", "step": "sub", "task": 3, "child": child}),
        json!({"type": "child_finished", "step": "sub", "task": 3, "child": child,
            "status": "partial_success",
            "usage": {"model_calls": 1, "input_tokens": 2, "output_tokens": 3,
                      "cost_usd": 0.5, "tool_calls": 4, "steps": 5}}),
        json!({"type": "run_finished", "status": "failed", "reason": "step `plan` failed"}),
        json!({"type": "run_finished", "status": "succeeded"}),
    ];
    (first_seq..)
        .zip(kinds)
        .map(|(seq, sample)| {
            let kind: EventKind = serde_json::from_value(sample.clone())
                .unwrap_or_else(|e| panic!("testing::every_kind: bad sample {sample}: {e}"));
            let again = serde_json::to_value(&kind).unwrap_or_default();
            assert!(
                covers(&again, &sample),
                "testing::every_kind: a field of {sample} was ignored (read back as {again})"
            );
            Event {
                seq,
                // Not monotonic on purpose: clocks may step back.
                at_us: if seq % 5 == 4 {
                    1_000
                } else {
                    1_700_000_000_000_000 + seq * 1_000
                },
                kind,
            }
        })
        .collect()
}

/// Whether `whole` has everything `part` has (objects may have more keys: fields added to the
/// event kinds with defaults).
fn covers(whole: &serde_json::Value, part: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (whole, part) {
        (Value::Object(w), Value::Object(p)) => p
            .iter()
            .all(|(k, v)| w.get(k).is_some_and(|wv| covers(wv, v))),
        (Value::Array(w), Value::Array(p)) => {
            w.len() == p.len() && w.iter().zip(p).all(|(wv, pv)| covers(wv, pv))
        }
        _ => whole == part,
    }
}

/// The full suite: records, ordering, event read-back, every event kind, status, listing,
/// retention.
///
/// The retention check ([`prune_retention`]) deletes runs that are not running and were last
/// updated before 1990; do not run it concurrently against one store.
pub async fn conformance(store: &dyn RunStore) {
    create_and_read(store).await;
    create_twice(store).await;
    not_found(store).await;
    append_ordering(store).await;
    events_from_offset(store).await;
    every_event_kind(store).await;
    status_change(store).await;
    runs_newest_first_and_filtered(store).await;
    prune_retention(store).await;
    response_cache(store).await;
}

/// The response cache keeps a reply per key, answers `None` for unknown keys, and a second
/// put under one key replaces the first.
pub async fn response_cache(store: &dyn RunStore) {
    let key = format!("sha256:test-{}", RunId::new());
    assert_eq!(store.cache_get(key.clone()).await.expect("cache_get"), None);
    let reply =
        json!({"content": "cached answer", "usage": {"input_tokens": 3, "output_tokens": 2}});
    store
        .cache_put(key.clone(), reply.clone())
        .await
        .expect("cache_put");
    assert_eq!(
        store.cache_get(key.clone()).await.expect("cache_get"),
        Some(reply)
    );
    let newer = json!({"content": "newer"});
    store
        .cache_put(key.clone(), newer.clone())
        .await
        .expect("cache_put again");
    assert_eq!(store.cache_get(key).await.expect("cache_get"), Some(newer));
}

/// The suite minus event read-back, for stores that discard events on purpose.
pub async fn conformance_without_events(store: &dyn RunStore) {
    create_and_read(store).await;
    create_twice(store).await;
    not_found(store).await;
    append_ordering(store).await;
    status_change(store).await;
    runs_newest_first_and_filtered(store).await;
    prune_check(store, false).await;
}

async fn create(store: &dyn RunStore, run: &RunRecord) {
    if let Err(e) = store.create_run(run.clone()).await {
        panic!("create_run({}) failed: {e}", run.id);
    }
}

async fn append_ok(store: &dyn RunStore, run: RunId, from: u64, to: u64) {
    if let Err(e) = store.append(run, events(from, to)).await {
        panic!("append of seqs {from}..{to} failed: {e}");
    }
}

/// Append `seqs` to a log whose next seq is `next` and check the refusal: `OutOfOrder` naming
/// the first offending event (`found`) and the seq that belonged in its place (`expected`).
async fn append_rejected(store: &dyn RunStore, run: RunId, seqs: &[u64], next: u64) {
    let batch: Vec<Event> = seqs.iter().map(|&s| event(s)).collect();
    let (want_expected, want_found) = seqs
        .iter()
        .zip(next..)
        .find(|&(&s, want)| s != want)
        .map(|(&s, want)| (want, s))
        .expect("append_rejected needs a batch that is out of order");
    match store.append(run, batch).await {
        Err(StoreError::OutOfOrder {
            run: r,
            expected,
            found,
        }) => {
            assert_eq!(r, run, "OutOfOrder names the wrong run");
            assert_eq!(
                (expected, found),
                (want_expected, want_found),
                "append of seqs {seqs:?} to a log expecting {next}: \
                 OutOfOrder must give (expected, found) of the first offending event"
            );
        }
        other => panic!(
            "append of seqs {seqs:?} to a log expecting {next} must fail with OutOfOrder, got {other:?}"
        ),
    }
}

/// A created run reads back exactly as given.
pub async fn create_and_read(store: &dyn RunStore) {
    let mut run = record("conformance-create", now_us());
    run.parent = Some(RunId::new());
    create(store, &run).await;
    let back = store.run(run.id).await.expect("run() of a created run");
    assert_eq!(back, run, "run() must return the record as created");
    let fresh = store
        .events(run.id, 0)
        .await
        .expect("events() of a created run");
    assert!(fresh.is_empty(), "a new run has no events");
}

/// Creating a run twice fails with `AlreadyExists` and leaves the first record alone.
pub async fn create_twice(store: &dyn RunStore) {
    let run = record("conformance-twice", now_us());
    create(store, &run).await;
    let mut again = run.clone();
    again.workflow = "conformance-impostor".into();
    match store.create_run(again).await {
        Err(StoreError::AlreadyExists(id)) => assert_eq!(id, run.id),
        other => panic!("second create_run must fail with AlreadyExists, got {other:?}"),
    }
    let back = store
        .run(run.id)
        .await
        .expect("run() after a refused create");
    assert_eq!(back, run, "a refused create_run must not change the record");
}

/// Every operation on an unknown run fails with `NotFound`.
pub async fn not_found(store: &dyn RunStore) {
    let ghost = RunId::new();
    let expect_not_found = |what: &str, result: Result<(), StoreError>| match result {
        Err(StoreError::NotFound(id)) => {
            assert_eq!(id, ghost, "{what}: NotFound names the wrong run")
        }
        other => panic!("{what} of an unknown run must fail with NotFound, got {other:?}"),
    };
    expect_not_found("run()", store.run(ghost).await.map(drop));
    expect_not_found("append()", store.append(ghost, events(0, 1)).await);
    expect_not_found("append() of nothing", store.append(ghost, Vec::new()).await);
    expect_not_found(
        "set_status()",
        store.set_status(ghost, RunStatus::Failed).await,
    );
    expect_not_found("events()", store.events(ghost, 0).await.map(drop));
}

/// Appends must continue the log exactly: no gaps, no repeats, no partial batches.
pub async fn append_ordering(store: &dyn RunStore) {
    let run = record("conformance-order", now_us());
    create(store, &run).await;
    let id = run.id;

    // The first event is seq 0.
    append_rejected(store, id, &[1], 0).await;
    append_rejected(store, id, &[1, 2], 0).await;
    // An empty batch is accepted and changes nothing.
    store
        .append(id, Vec::new())
        .await
        .expect("empty append to a new run");
    append_ok(store, id, 0, 3).await;
    // A batch with a gap inside is refused as a whole…
    append_rejected(store, id, &[3, 5], 3).await;
    append_rejected(store, id, &[3, 4, 4], 3).await;
    // …so the log still expects 3: nothing of the refused batches was kept.
    append_rejected(store, id, &[4], 3).await;
    // Repeats are refused.
    append_rejected(store, id, &[2], 3).await;
    append_rejected(store, id, &[0, 1, 2, 3], 3).await;
    append_ok(store, id, 3, 4).await;
    append_ok(store, id, 4, 6).await;
    store
        .append(id, Vec::new())
        .await
        .expect("empty append to a run with events");

    // Two writers racing for the same seq: exactly one wins.
    let (a, b) = futures::future::join(
        store.append(id, events(6, 7)),
        store.append(id, events(6, 7)),
    )
    .await;
    let outcomes = [a, b];
    let won = outcomes.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        won, 1,
        "exactly one of two racing appends of seq 6 must succeed: {outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|r| matches!(r, Err(StoreError::OutOfOrder { found: 6, .. }))),
        "the losing append must fail with OutOfOrder: {outcomes:?}"
    );
    append_ok(store, id, 7, 8).await;
}

/// Events read back in order, exactly as appended, from any offset.
pub async fn events_from_offset(store: &dyn RunStore) {
    let run = record("conformance-events", now_us());
    create(store, &run).await;
    let id = run.id;
    append_ok(store, id, 0, 1).await;
    append_ok(store, id, 1, 5).await;
    append_ok(store, id, 5, 6).await;
    append_ok(store, id, 6, 10).await;

    let all = store.events(id, 0).await.expect("events(run, 0)");
    assert_eq!(
        all,
        events(0, 10),
        "events(run, 0) must return the whole log, as appended"
    );
    for from in [1, 4, 5, 9] {
        let tail = store.events(id, from).await.expect("events(run, from)");
        assert_eq!(
            tail,
            events(from, 10),
            "events(run, {from}) must return seqs {from}..10"
        );
    }
    for from in [10, 11, 1_000_000] {
        let none = store.events(id, from).await.expect("events past the end");
        assert!(
            none.is_empty(),
            "events(run, {from}) past the end must be empty"
        );
    }

    // Logs of different runs are independent.
    let other = record("conformance-events-other", now_us());
    create(store, &other).await;
    append_ok(store, other.id, 0, 2).await;
    let theirs = store
        .events(other.id, 0)
        .await
        .expect("events of another run");
    assert_eq!(theirs, events(0, 2));
    let ours = store.events(id, 0).await.expect("events(run, 0) again");
    assert_eq!(
        ours.len(),
        10,
        "appending to one run must not touch another"
    );
}

/// `set_status` changes the status and moves `updated_at_us` forward; nothing else changes.
pub async fn status_change(store: &dyn RunStore) {
    // Created a second in the past, so any clock (even a database server's) is later.
    let run = record("conformance-status", now_us().saturating_sub(1_000_000));
    create(store, &run).await;
    store
        .set_status(run.id, RunStatus::Suspended)
        .await
        .expect("set_status(Suspended)");
    let suspended = store.run(run.id).await.expect("run() after set_status");
    assert_eq!(suspended.status, RunStatus::Suspended);
    assert!(
        suspended.updated_at_us > run.updated_at_us,
        "set_status must set updated_at_us to now ({} is not after {})",
        suspended.updated_at_us,
        run.updated_at_us
    );
    assert_eq!(
        suspended.created_at_us, run.created_at_us,
        "created_at_us must not change"
    );
    assert_eq!(
        RunRecord {
            status: run.status,
            updated_at_us: run.updated_at_us,
            ..suspended.clone()
        },
        run,
        "set_status must change only status and updated_at_us"
    );

    for status in [RunStatus::Running, RunStatus::Halted, RunStatus::Succeeded] {
        store.set_status(run.id, status).await.expect("set_status");
        let back = store.run(run.id).await.expect("run() after set_status");
        assert_eq!(back.status, status);
    }
    let last = store.run(run.id).await.expect("run()");
    assert!(
        last.updated_at_us >= suspended.updated_at_us,
        "updated_at_us must not go backwards"
    );
}

/// `runs` lists newest first (ties: highest id first) and filters by status.
pub async fn runs_newest_first_and_filtered(store: &dyn RunStore) {
    let base = now_us();
    let mut mine = Vec::new();
    for (offset, status) in [
        (30, RunStatus::Running),
        (10, RunStatus::Failed),
        (20, RunStatus::Running),
        (20, RunStatus::Failed),
        (40, RunStatus::Succeeded),
        (20, RunStatus::Running),
    ] {
        let run = record("conformance-list", base + offset);
        create(store, &run).await;
        if status != RunStatus::Running {
            store
                .set_status(run.id, status)
                .await
                .expect("set_status while listing");
        }
        mine.push((run.id, base + offset, status));
    }
    let ids: HashSet<RunId> = mine.iter().map(|(id, _, _)| *id).collect();

    let mut expected = mine.clone();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let newest_first: Vec<RunId> = expected.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(newest_first.first(), mine.get(4).map(|(id, _, _)| id));

    let listed = store.runs(None).await.expect("runs(None)");
    let listed_mine: Vec<RunId> = listed
        .iter()
        .map(|r| r.id)
        .filter(|id| ids.contains(id))
        .collect();
    assert_eq!(
        listed_mine, newest_first,
        "runs(None) must list every run, newest first, ties by id descending"
    );
    assert_listed_in_order(&listed);

    for status in [RunStatus::Running, RunStatus::Failed, RunStatus::Halted] {
        let listed = store.runs(Some(status)).await.expect("runs(Some(status))");
        assert!(
            listed.iter().all(|r| r.status == status),
            "runs(Some({status})) returned a run in another status"
        );
        assert_listed_in_order(&listed);
        let listed_mine: Vec<RunId> = listed
            .iter()
            .map(|r| r.id)
            .filter(|id| ids.contains(id))
            .collect();
        let want: Vec<RunId> = expected
            .iter()
            .filter(|(_, _, s)| *s == status)
            .map(|(id, _, _)| *id)
            .collect();
        assert_eq!(
            listed_mine, want,
            "runs(Some({status})) lists the wrong runs"
        );
    }
}

fn assert_listed_in_order(listed: &[RunRecord]) {
    for pair in listed.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            (a.created_at_us, a.id) > (b.created_at_us, b.id),
            "runs() must be newest first: {} ({}) listed before {} ({})",
            a.id,
            a.created_at_us,
            b.id,
            b.created_at_us
        );
    }
}

/// Every event kind reads back exactly as appended, in one batch and one by one.
pub async fn every_event_kind(store: &dyn RunStore) {
    let run = record("conformance-kinds", now_us());
    create(store, &run).await;
    let batch = every_kind(0);
    let n = batch.len() as u64;
    store
        .append(run.id, batch.clone())
        .await
        .expect("append of one event of every kind");
    let singles = every_kind(n);
    for event in &singles {
        store
            .append(run.id, vec![event.clone()])
            .await
            .expect("append of a single event");
    }
    let back = store.events(run.id, 0).await.expect("events(run, 0)");
    let mut want = batch.clone();
    want.extend(singles.iter().cloned());
    assert_eq!(back, want, "every event kind must read back exactly");
    let tail = store.events(run.id, 3).await.expect("events(run, 3)");
    assert_eq!(tail, want[3..].to_vec(), "events from inside a batch");
}

/// The start of the retention check's time window: 1990-01-01, before any real run.
const ANCIENT_US: u64 = 631_152_000_000_000;

/// `prune` deletes the runs in the given statuses last updated strictly before the cutoff,
/// with their events, and nothing else; it returns how many it deleted.
///
/// The check's runs are dated before 1990 (no real run is). It first prunes leftovers of an
/// earlier, interrupted pass and last deletes its own runs: both delete every run that is
/// not running and was last updated before 1990. Running runs are left alone, so tests that
/// create running runs with small timestamps may share the store, but two passes of this
/// check must not run concurrently against one store.
pub async fn prune_retention(store: &dyn RunStore) {
    prune_check(store, true).await;
}

async fn prune_check(store: &dyn RunStore, with_events: bool) {
    let cutoff = ANCIENT_US + 1_000_000;
    let pruned = vec![RunStatus::Succeeded, RunStatus::Failed];
    // Leftovers of an interrupted pass (any store may hold some: the count is not checked).
    // Running runs are never pruned here: other checks and tests create them with small
    // timestamps, and may be running against the same store.
    let ended = vec![
        RunStatus::Suspended,
        RunStatus::Succeeded,
        RunStatus::PartialSuccess,
        RunStatus::Failed,
        RunStatus::Halted,
    ];
    store
        .prune(cutoff + 1_000, ended.clone())
        .await
        .expect("prune of leftovers");

    let dated = |workflow: &str, status: RunStatus, updated_at_us: u64| RunRecord {
        status,
        created_at_us: ANCIENT_US,
        updated_at_us,
        ..record(workflow, ANCIENT_US)
    };
    let gone = [
        dated("prune-succeeded-old", RunStatus::Succeeded, ANCIENT_US),
        dated("prune-failed-just-before", RunStatus::Failed, cutoff - 1),
    ];
    let kept = [
        dated("prune-at-cutoff", RunStatus::Succeeded, cutoff),
        dated("prune-halted-old", RunStatus::Halted, ANCIENT_US),
        dated("prune-partial-old", RunStatus::PartialSuccess, ANCIENT_US),
        dated("prune-suspended-old", RunStatus::Suspended, ANCIENT_US),
        dated("prune-after-cutoff", RunStatus::Failed, cutoff + 500),
        record("prune-new", now_us()),
    ];
    for run in gone.iter().chain(&kept) {
        create(store, run).await;
        append_ok(store, run.id, 0, 3).await;
    }

    let none = store
        .prune(cutoff, Vec::new())
        .await
        .expect("prune with no statuses");
    assert_eq!(none, 0, "prune with no statuses must delete nothing");
    let early = store
        .prune(ANCIENT_US, pruned.clone())
        .await
        .expect("prune before every run");
    assert_eq!(
        early, 0,
        "prune must only delete runs updated strictly before the cutoff"
    );

    let deleted = store
        .prune(cutoff, pruned.clone())
        .await
        .expect("prune(cutoff, [succeeded, failed])");
    assert_eq!(
        deleted,
        gone.len() as u64,
        "prune must return how many runs it deleted"
    );
    for run in &gone {
        match store.run(run.id).await {
            Err(StoreError::NotFound(id)) => assert_eq!(id, run.id),
            other => panic!(
                "a pruned run ({}) must be gone, got {other:?}",
                run.workflow
            ),
        }
        match store.events(run.id, 0).await {
            Err(StoreError::NotFound(id)) => assert_eq!(id, run.id),
            other => panic!(
                "a pruned run's events ({}) must be gone, got {other:?}",
                run.workflow
            ),
        }
        match store.append(run.id, events(3, 4)).await {
            Err(StoreError::NotFound(_)) => {}
            other => panic!("append to a pruned run must fail with NotFound, got {other:?}"),
        }
    }
    for run in &kept {
        let back = store
            .run(run.id)
            .await
            .unwrap_or_else(|e| panic!("run {} must survive the prune: {e}", run.workflow));
        assert_eq!(&back, run, "a kept run must be untouched");
        if with_events {
            let log = store.events(run.id, 0).await.expect("events of a kept run");
            assert_eq!(log, events(0, 3), "a kept run keeps its events");
        }
    }
    let again = store
        .prune(cutoff, pruned)
        .await
        .expect("prune a second time");
    assert_eq!(again, 0, "a second prune finds nothing left to delete");

    // Clean up, so that a shared database does not collect the check's runs.
    let cleaned = store
        .prune(cutoff + 1_000, ended)
        .await
        .expect("prune of the check's runs");
    assert!(
        cleaned >= kept.len() as u64 - 1,
        "prune of every ended status must delete the check's old runs (deleted {cleaned})"
    );
    for run in &kept[..kept.len() - 1] {
        assert!(
            matches!(store.run(run.id).await, Err(StoreError::NotFound(_))),
            "prune must delete {} once its status is listed",
            run.workflow
        );
    }
}
