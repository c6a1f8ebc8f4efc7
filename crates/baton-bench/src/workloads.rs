//! The workloads. Definitions: `shared/bench/WORKLOADS.md`; every workflow is built with
//! [`WorkflowBuilder`] against a [`Registry`] of Rust step functions, and run with
//! [`Runtime::run`].

use crate::report::{
    emit, fields, mean, min, pct, peak_rss_mib, proc_status_mib, scaled, secs, sum,
};
use baton_core::{RunStatus, RunStore};
use baton_runtime::builder::{StepBuilder, WorkflowBuilder};
use baton_runtime::executor::{Decision, Journal};
use baton_runtime::spec::MergeRule;
use baton_runtime::{Registry, RunReport, Runtime, Workflow};
use baton_store::{MemoryStore, NullStore, PostgresStore, SqliteOptions, SqliteStore};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Res = Result<(), String>;

/// The run input, as the peers pass it: `xs` starts empty.
fn xs_input() -> Value {
    json!({ "xs": [] })
}

/// Length of the final `xs`, or why the run is not acceptable.
fn xs_len(rep: &RunReport) -> Result<usize, String> {
    if rep.status != RunStatus::Succeeded {
        return Err(format!(
            "run ended {:?}: {}",
            rep.status,
            rep.reason.as_deref().unwrap_or("")
        ));
    }
    rep.outputs
        .get("xs")
        .and_then(Value::as_array)
        .map(Vec::len)
        .ok_or_else(|| format!("no `xs` list in the outputs: {}", rep.outputs))
}

fn expect_xs(rep: &RunReport, n: usize) -> Res {
    let got = xs_len(rep)?;
    if got == n {
        Ok(())
    } else {
        Err(format!("final `xs` has {got} entries, expected {n}"))
    }
}

/// `n0 -> n1 -> ... -> n{n-1}`, each step a registered function whose output (one integer)
/// goes to `xs`, an append key: every step appends one entry.
fn chain(n: usize, registry: &Registry, function: &str) -> Result<Arc<Workflow>, String> {
    let mut b = WorkflowBuilder::new(format!("chain{n}")).state("xs", MergeRule::Append);
    for i in 0..n {
        let mut s = StepBuilder::function(&format!("n{i}"), function).output("xs");
        if i > 0 {
            s = s.needs([format!("n{}", i - 1)]);
        }
        b = b.step(s);
    }
    b.build(registry).map_err(|e| e.to_string())
}

/// `split -> b0..b{width-1} -> join`: branches need `split` and append their output to `xs`;
/// `join` is a [`StepBuilder::join`] (no work) needing every branch.
fn fanout(width: usize, registry: &Registry, branch_fn: &str) -> Result<Arc<Workflow>, String> {
    let mut b = WorkflowBuilder::new(format!("fanout{width}"))
        .state("xs", MergeRule::Append)
        .step(StepBuilder::function("split", "noop"));
    let names: Vec<String> = (0..width).map(|i| format!("b{i}")).collect();
    for name in &names {
        b = b.step(
            StepBuilder::function(name, branch_fn)
                .output("xs")
                .needs(["split"]),
        );
    }
    b = b.step(StepBuilder::join("join").needs(names.iter().cloned()));
    b.build(registry).map_err(|e| e.to_string())
}

/// Every branch appended once, and the join completed last.
fn check_fanout(rep: &RunReport, width: usize) -> Res {
    expect_xs(rep, width)?;
    match rep.completed_steps.last().map(String::as_str) {
        Some("join") if rep.completed_steps.len() == width + 2 => Ok(()),
        _ => Err(format!(
            "expected split, {width} branches, then join; completed: {:?}",
            rep.completed_steps
        )),
    }
}

fn registry() -> Registry {
    Registry::new()
        .function("one", |_| Ok(json!(1)))
        .function("noop", |_| Ok(Value::Null))
        .async_function("sleep10_one", |_| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(json!(1))
        })
        .async_function("sleep50_one", |_| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(json!(1))
        })
}

/// One warm-up run (checked), then `runs` timed runs one after another (each checked after its
/// timer stops). Returns the durations and the events per run.
async fn timed_runs(
    rt: &Runtime,
    wf: &Arc<Workflow>,
    runs: usize,
    check: impl Fn(&RunReport) -> Res,
) -> Result<(Vec<Duration>, u64), String> {
    let warm = rt
        .run(wf.clone(), xs_input())
        .await
        .map_err(|e| e.to_string())?;
    check(&warm)?;
    let mut ts = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (wf, input) = (wf.clone(), xs_input());
        let t = Instant::now();
        let rep = rt.run(wf, input).await;
        ts.push(t.elapsed());
        check(&rep.map_err(|e| e.to_string())?)?;
    }
    Ok((ts, warm.events))
}

// ---------------------------------------------------------------- W1
/// W1: a line of 100 (and 10) function steps appending to `xs`, event log on (MemoryStore);
/// plus a diagnostic line with the NullStore, which separates the cost of keeping the log.
pub async fn w1() -> Res {
    w1_cases(&[(100, "memory"), (10, "memory"), (100, "null")]).await
}

/// Profiling aid (`--one W1-100`): only the headline case, 100 steps with the MemoryStore.
pub async fn w1_100() -> Res {
    w1_cases(&[(100, "memory")]).await
}

async fn w1_cases(cases: &[(usize, &str)]) -> Res {
    let reg = registry();
    for &(nodes, store) in cases {
        let wf = chain(nodes, &reg, "one")?;
        let st: Arc<dyn RunStore> = if store == "memory" {
            Arc::new(MemoryStore::new())
        } else {
            Arc::new(NullStore::new())
        };
        // No persistence: events are kept (MemoryStore) or checked and dropped (NullStore),
        // and handed over in batches.
        let rt = Runtime::new(st).with_journal(Journal::Batched);
        let runs = scaled(200);
        let (ts, events) = timed_runs(&rt, &wf, runs, |r| expect_xs(r, nodes)).await?;
        let ts = secs(&ts);
        let (workload, desc) = if store == "memory" {
            (
                "W1",
                format!(
                    "{nodes}-step line of sync Rust functions (json!(1) -> output xs, append merge), needs the previous step; Runtime::run, MemoryStore (event log kept in memory)"
                ),
            )
        } else {
            (
                "W1-diag",
                format!(
                    "W1 with NullStore (events ordered-checked then dropped): the cost of keeping the log is the difference to W1 ({nodes} steps)"
                ),
            )
        };
        emit(
            workload,
            fields![
                "desc" => desc,
                "store" => store, "event_log" => store == "memory",
                "runs" => runs, "nodes" => nodes,
                "us_per_step" => sum(&ts) / (runs * nodes) as f64 * 1e6,
                "run_ms_mean" => mean(&ts) * 1e3, "run_ms_p50" => pct(&ts, 50.0) * 1e3,
                "run_ms_p95" => pct(&ts, 95.0) * 1e3, "total_s" => sum(&ts),
                "events_per_run" => events,
                "events_per_step" => events as f64 / nodes as f64,
            ],
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- W2
/// W2a: split -> 100 sync no-op branches -> join, event log on (MemoryStore).
pub async fn w2a() -> Res {
    let width = 100;
    let runs = scaled(200);
    let wf = fanout(width, &registry(), "one")?;
    let rt = Runtime::new(Arc::new(MemoryStore::new()));
    let (ts, events) = timed_runs(&rt, &wf, runs, |r| check_fanout(r, width)).await?;
    let ts = secs(&ts);
    emit(
        "W2a",
        fields![
            "desc" => format!("split -> {width} branch steps (sync fn json!(1) -> xs append, needs split) -> join step (StepBuilder::join, needs all {width}); Runtime::run, MemoryStore"),
            "store" => "memory", "fanout" => "graph-level (needs), join = all",
            "runs" => runs, "width" => width,
            "run_ms_mean" => mean(&ts) * 1e3, "run_ms_p50" => pct(&ts, 50.0) * 1e3,
            "run_ms_p95" => pct(&ts, 95.0) * 1e3,
            "us_per_branch" => mean(&ts) / width as f64 * 1e6,
            "events_per_run" => events,
        ],
    );
    Ok(())
}

/// W2b: as W2a, every branch an async function sleeping 10 ms; floor = 100 bare tokio sleeps.
pub async fn w2b() -> Res {
    let width = 100;
    let runs = scaled(50);
    let wf = fanout(width, &registry(), "sleep10_one")?;
    let rt = Runtime::new(Arc::new(MemoryStore::new()));
    let (ts, events) = timed_runs(&rt, &wf, runs, |r| check_fanout(r, width)).await?;
    let ts = secs(&ts);
    let floor = tokio_sleep_floor(width, runs).await;
    let floor_ms = mean(&floor) * 1e3;
    emit(
        "W2b",
        fields![
            "desc" => format!("split -> {width} branch steps (async fn: tokio::time::sleep(10ms), json!(1) -> xs) -> join; Runtime::run, MemoryStore"),
            "store" => "memory", "fanout" => "graph-level (needs), join = all",
            "runs" => runs, "width" => width, "ideal_ms" => 10.0,
            "wall_ms_mean" => mean(&ts) * 1e3, "wall_ms_p50" => pct(&ts, 50.0) * 1e3,
            "wall_ms_min" => min(&ts) * 1e3,
            "floor_ms" => floor_ms, "floor_ms_p50" => pct(&floor, 50.0) * 1e3,
            "above_floor_ms" => mean(&ts) * 1e3 - floor_ms,
            "overhead_ms" => (mean(&ts) - 0.010) * 1e3,
            "events_per_run" => events,
        ],
    );
    Ok(())
}

/// `width` bare `tokio::time::sleep(10ms)` joined on one task, no framework, `runs` times.
/// tokio's timer has 1 ms resolution and rounds deadlines up, so this is ~11 ms, not 10.
async fn tokio_sleep_floor(width: usize, runs: usize) -> Vec<f64> {
    let mut ts = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        futures::future::join_all(
            (0..width).map(|_| tokio::time::sleep(Duration::from_millis(10))),
        )
        .await;
        ts.push(t.elapsed());
    }
    secs(&ts)
}

// ---------------------------------------------------------------- W4
/// W4: `concurrency` runs at once (`tokio::spawn` each) of a 10-step line whose steps sleep
/// 50 ms; NullStore (no persistence). Each task checks its own report and returns only the
/// length of `xs`, so the harness does not keep reports alive.
pub async fn w4(concurrency: usize) -> Res {
    let nodes = 10;
    let rss_start = peak_rss_mib();
    let wf = chain(nodes, &registry(), "sleep50_one")?;
    let rss_compiled = peak_rss_mib();
    let rt = Runtime::new(Arc::new(NullStore::new()));
    let go = |n: usize| {
        let (rt, wf) = (rt.clone(), wf.clone());
        async move {
            let hs: Vec<_> = (0..n)
                .map(|_| {
                    let (rt, wf) = (rt.clone(), wf.clone());
                    tokio::spawn(async move {
                        let rep = rt.run(wf, xs_input()).await.map_err(|e| e.to_string())?;
                        xs_len(&rep)
                    })
                })
                .collect();
            let mut lens = Vec::with_capacity(n);
            for h in hs {
                lens.push(h.await.map_err(|e| e.to_string())??);
            }
            Ok::<_, String>(lens)
        }
    };
    go(10).await?; // warm-up
    let rss_before = peak_rss_mib();
    let t = Instant::now();
    let lens = go(concurrency).await?;
    let wall = t.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    if let Some(bad) = lens.iter().find(|&&l| l != nodes) {
        return Err(format!(
            "a run ended with {bad} entries in `xs`, expected {nodes}"
        ));
    }
    emit(
        "W4",
        fields![
            "desc" => format!("{concurrency} concurrent Runtime::run (tokio::spawn each, multi-thread runtime, default workers) of a {nodes}-step line, each step an async fn sleeping 50ms then json!(1) -> xs append; NullStore"),
            "store" => "null",
            "concurrency" => concurrency, "nodes" => nodes, "ideal_s" => nodes as f64 * 0.050,
            "wall_s" => wall, "runs_per_s" => concurrency as f64 / wall,
            "node_steps_per_s" => (concurrency * nodes) as f64 / wall,
            "peak_rss_mib" => peak, "rss_before_mib" => rss_before,
            "rss_start_mib" => rss_start, "rss_after_compile_mib" => rss_compiled,
            "kib_per_run_above_before" => (peak - rss_before) * 1024.0 / concurrency as f64,
            "rss_anon_end_mib" => proc_status_mib("RssAnon"),
            "rss_file_end_mib" => proc_status_mib("RssFile"),
            "workers" => std::thread::available_parallelism().map_or(0, |n| n.get()),
        ],
    );
    Ok(())
}

/// W4 floor (diagnostic, not a baton number): the same `concurrency` tasks with no framework,
/// each doing 10 sequential `tokio::time::sleep(50ms)` and pushing to a local list, in a
/// process of its own. What is left of W4's wall time and RSS above this is baton's.
pub async fn w4_floor(concurrency: usize) -> Res {
    let nodes = 10;
    let rss_start = peak_rss_mib();
    let go = |n: usize| async move {
        let hs: Vec<_> = (0..n)
            .map(|_| {
                tokio::spawn(async move {
                    let mut xs = Vec::new();
                    for _ in 0..nodes {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        xs.push(json!(1));
                    }
                    xs.len()
                })
            })
            .collect();
        let mut lens = Vec::with_capacity(n);
        for h in hs {
            lens.push(h.await.map_err(|e| e.to_string())?);
        }
        Ok::<_, String>(lens)
    };
    go(10).await?; // warm-up
    let rss_before = peak_rss_mib();
    let t = Instant::now();
    let lens = go(concurrency).await?;
    let wall = t.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    if lens.iter().any(|&l| l != nodes) {
        return Err("a floor task did not finish its sleeps".into());
    }
    emit(
        "W4-floor",
        fields![
            "desc" => format!("no framework: {concurrency} tokio::spawn tasks, each {nodes} sequential tokio::time::sleep(50ms) + push to a local Vec; same runtime settings as W4"),
            "concurrency" => concurrency, "nodes" => nodes, "ideal_s" => nodes as f64 * 0.050,
            "wall_s" => wall, "runs_per_s" => concurrency as f64 / wall,
            "peak_rss_mib" => peak, "rss_before_mib" => rss_before, "rss_start_mib" => rss_start,
            "kib_per_run_above_before" => (peak - rss_before) * 1024.0 / concurrency as f64,
            "rss_anon_end_mib" => proc_status_mib("RssAnon"),
            "rss_file_end_mib" => proc_status_mib("RssFile"),
        ],
    );
    Ok(())
}

/// Bytes of the boxed future `Runtime::run_with_id` returns (allocated once per run, alive for
/// the whole run). The future is created, measured and dropped without being polled.
pub fn run_future_size() -> usize {
    let rt = Runtime::new(Arc::new(NullStore::new()));
    match chain(1, &registry(), "one") {
        Ok(wf) => {
            let fut = rt.run_with_id(wf, xs_input(), baton_core::RunId::new(), None);
            std::mem::size_of_val(&*fut)
        }
        Err(_) => 0,
    }
}

// ---------------------------------------------------------------- durable: W3, W5, W6

/// A durable store for a workload: SQLite in a fresh temp file (default or strict), or
/// PostgreSQL from `BATON_BENCH_POSTGRES_URL` (default: the local test database).
async fn durable(
    kind: &str,
    dir: &std::path::Path,
) -> Result<
    (
        Arc<dyn RunStore>,
        Option<SqliteStore>,
        Option<PostgresStore>,
    ),
    String,
> {
    match kind {
        "postgres" => {
            let url = std::env::var("BATON_BENCH_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let pg = PostgresStore::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            Ok((Arc::new(pg.clone()), None, Some(pg)))
        }
        other => {
            let strict = other == "sqlite-strict";
            let path = dir.join(format!("{other}.sqlite"));
            let st = SqliteStore::open(&path, SqliteOptions { strict })
                .await
                .map_err(|e| e.to_string())?;
            Ok((Arc::new(st.clone()), Some(st), None))
        }
    }
}

async fn store_bytes(sq: &Option<SqliteStore>, pg: &Option<PostgresStore>) -> u64 {
    if let Some(s) = sq {
        return s.db_stats().await.map(|d| d.used_bytes()).unwrap_or(0);
    }
    if let Some(p) = pg {
        return p.table_bytes().await.unwrap_or(0);
    }
    0
}

fn store_name(kind: &str) -> &'static str {
    if kind == "postgres" {
        "postgres"
    } else {
        "sqlite"
    }
}

/// W3: W1 with every step boundary journaled before the next step starts (kill -9 safe).
pub async fn w3() -> Res {
    let reg = registry();
    let wf = chain(100, &reg, "one")?;
    for kind in ["sqlite", "sqlite-strict", "postgres"] {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (st, sq, pg) = match durable(kind, dir.path()).await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("W3 {kind}: skipped: {e}");
                continue;
            }
        };
        let rt = Runtime::new(st).with_journal(Journal::PerStep);
        let runs = if kind == "sqlite" {
            scaled(200)
        } else {
            scaled(20)
        };
        let before = store_bytes(&sq, &pg).await;
        let (ts, events) = timed_runs(&rt, &wf, runs, |r| expect_xs(r, 100)).await?;
        let after = store_bytes(&sq, &pg).await;
        let ts = secs(&ts);
        let durability = match kind {
            "sqlite" => {
                "default: WAL, synchronous=NORMAL, journaled at every step boundary (kill -9 safe)"
            }
            "sqlite-strict" => "strict: WAL, synchronous=FULL (power-loss safe)",
            _ => "PostgreSQL, synchronous_commit as configured (default on)",
        };
        emit(
            "W3",
            fields![
                "store" => store_name(kind), "durability" => durability,
                "runs" => runs, "nodes" => 100,
                "us_per_step" => sum(&ts) / (runs * 100) as f64 * 1e6,
                "run_ms_mean" => mean(&ts) * 1e3, "run_ms_p50" => pct(&ts, 50.0) * 1e3,
                "db_bytes_per_step" => after.saturating_sub(before) as f64 / ((runs + 1) * 100) as f64,
                "events_per_run" => events,
            ],
        );
    }
    Ok(())
}

/// W5: three steps; the run suspends before step 2 for an approval (durably); then the approval
/// is recorded and the run resumed to completion. Timed: the decide-and-resume call.
pub async fn w5() -> Res {
    let reg = registry();
    let wf = WorkflowBuilder::new("approve3")
        .state("xs", MergeRule::Append)
        .state("ok", MergeRule::Replace)
        .step(StepBuilder::function("s1", "one").output("xs"))
        .step(
            StepBuilder::approval("gate", "Go on?")
                .needs(["s1"])
                .output("ok"),
        )
        .step(
            StepBuilder::function("s2", "one")
                .needs(["gate"])
                .output("xs"),
        )
        .step(
            StepBuilder::function("s3", "one")
                .needs(["s2"])
                .output("xs"),
        )
        .build(&reg)
        .map_err(|e| e.to_string())?;
    for kind in ["sqlite", "postgres"] {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (st, _, _) = match durable(kind, dir.path()).await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("W5 {kind}: skipped: {e}");
                continue;
            }
        };
        let rt = Runtime::new(st);
        let runs = if kind == "sqlite" {
            scaled(200)
        } else {
            scaled(50)
        };
        let mut ts = Vec::with_capacity(runs);
        for i in 0..=runs {
            let rep = rt
                .run(wf.clone(), xs_input())
                .await
                .map_err(|e| e.to_string())?;
            if rep.status != RunStatus::Suspended {
                return Err(format!(
                    "W5: expected a suspended run, got {:?}",
                    rep.status
                ));
            }
            let id: baton_core::RunId = rep.run_id.parse().map_err(|_| "bad run id")?;
            let task = rt
                .load(wf.clone(), id)
                .await
                .map_err(|e| e.to_string())?
                .pending_approvals()
                .first()
                .map(|p| p.task)
                .ok_or("no pending approval")?;
            let d = Decision {
                task,
                call_id: None,
                approved: true,
                by: "bench".into(),
                reason: None,
                value: None,
            };
            let t = Instant::now();
            let done = rt
                .decide(wf.clone(), id, d)
                .await
                .map_err(|e| e.to_string())?;
            let el = t.elapsed();
            expect_xs(&done, 3)?;
            if i > 0 {
                ts.push(el);
            }
        }
        let ts = secs(&ts);
        emit(
            "W5",
            fields![
                "store" => store_name(kind), "runs" => runs,
                "desc" => "s1 -> approval gate (suspends durably) -> s2 -> s3; timed: record the approval, replay the log, run s2 and s3 to completion",
                "resume_ms_mean" => mean(&ts) * 1e3, "resume_ms_p95" => pct(&ts, 95.0) * 1e3,
                "resume_ms_p50" => pct(&ts, 50.0) * 1e3,
            ],
        );
    }
    Ok(())
}

/// W6: a 20-step chain over a state map of 10,000 string entries (about 1.1 MB); each step
/// changes one entry (merge rule). Durable. Bytes per step are the database growth of the 20
/// steps (the growth of the same runs with no step subtracted: the initial state is stored
/// once per run, whatever the number of steps).
pub async fn w6() -> Res {
    let mut map = serde_json::Map::new();
    for i in 0..10_000 {
        map.insert(format!("k{i:05}"), Value::String(format!("{:0>100}", i)));
    }
    let state = Value::Object(map);
    let size = state.to_string().len();
    let reg = registry().function("touch", |input| {
        let n: usize = input.step[1..].parse().unwrap_or(0);
        Ok(json!({ format!("k{:05}", n * 37): "changed" }))
    });
    let build = |steps: usize| -> Result<Arc<Workflow>, String> {
        let mut b = WorkflowBuilder::new(format!("w6-{steps}")).state("m", MergeRule::Merge);
        for i in 0..steps {
            let mut s = StepBuilder::function(&format!("s{i}"), "touch").output("m");
            if i > 0 {
                s = s.needs([format!("s{}", i - 1)]);
            }
            b = b.step(s);
        }
        b.build(&reg).map_err(|e| e.to_string())
    };
    let wf20 = build(20)?;
    let wf0 = build(1)?;
    for kind in ["sqlite", "postgres"] {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (st, sq, pg) = match durable(kind, dir.path()).await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("W6 {kind}: skipped: {e}");
                continue;
            }
        };
        let rt = Runtime::new(st.clone()).with_journal(Journal::PerStep);
        let runs = scaled(10);
        let input = json!({ "m": state });
        // Baseline: the same initial state, one step.
        let b0 = store_bytes(&sq, &pg).await;
        let mut base = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            rt.run(wf0.clone(), input.clone())
                .await
                .map_err(|e| e.to_string())?;
            base.push(t.elapsed());
        }
        let b1 = store_bytes(&sq, &pg).await;
        let mut ts = Vec::new();
        let mut reads = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let rep = rt
                .run(wf20.clone(), input.clone())
                .await
                .map_err(|e| e.to_string())?;
            ts.push(t.elapsed());
            if rep.status != RunStatus::Succeeded {
                return Err(format!("W6 run ended {:?}", rep.status));
            }
            let id: baton_core::RunId = rep.run_id.parse().map_err(|_| "bad run id")?;
            // Read the final state back: the log from the store, folded.
            let t = Instant::now();
            let m = rt.load(wf20.clone(), id).await.map_err(|e| e.to_string())?;
            let v = m.value("m").cloned().unwrap_or_default();
            reads.push(t.elapsed());
            if v["k00037"] != "changed" {
                return Err("W6: the final state does not show the steps' changes".into());
            }
        }
        let b2 = store_bytes(&sq, &pg).await;
        let per_run_with_steps = b2.saturating_sub(b1) as f64 / runs as f64;
        let per_run_base = b1.saturating_sub(b0) as f64 / runs as f64;
        let ts = secs(&ts);
        let base = secs(&base);
        let reads = secs(&reads);
        emit(
            "W6",
            fields![
                "store" => store_name(kind), "runs" => runs, "nodes" => 20,
                "state_bytes" => size,
                "desc" => "per step = (20-step runs - 1-step runs on the same 1.1 MB state) / 19: the state is stored once per run, not per step",
                "us_per_step" => (mean(&ts) - mean(&base)) / 19.0 * 1e6,
                "run_ms_mean" => mean(&ts) * 1e3,
                "db_bytes_per_step" => (per_run_with_steps - per_run_base) / 19.0,
                "db_bytes_per_run" => per_run_with_steps,
                "read_state_ms" => mean(&reads) * 1e3,
                "read_state_ms_p95" => pct(&reads, 95.0) * 1e3,
            ],
        );
    }
    Ok(())
}
