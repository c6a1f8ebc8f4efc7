//! Measure the SQL stores on the shapes of the durable benchmark workloads
//! (`shared/bench/WORKLOADS.md`), without the engine: the journal writes a run would make.
//!
//! ```text
//! cargo run --release -p baton-store --example measure [-- sizes|w3|w3-strict|w6|all] [--postgres URL]
//! ```
//!
//! - W3 shape: runs of 100 steps, one append of 3 small events per step (`state_updated`,
//!   `step_completed`, the next `step_started`), SQLite default and strict mode: µs per append,
//!   µs per step with the run's create and final status, database bytes per step.
//! - W6 shape: runs of 20 steps whose input (and `run_started` event) carry a map of 10,000
//!   strings (about 1.1 MB); each step changes one entry. µs per step, bytes per step, and the
//!   time to read the whole log back (`events(run, 0)`).
//! - Body sizes of one step's batch and of a whole W3 run in each body format.

#![allow(clippy::unwrap_used)]

use baton_core::{Event, EventKind, KeyUpdate, RunId, RunRecord, RunStatus, RunStore};
use baton_store::codec::{self, Format};
use baton_store::{PostgresOptions, PostgresStore, SqliteOptions, SqliteStore};
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn record(workflow: &str, input: Value) -> RunRecord {
    let now = now_us();
    RunRecord {
        id: RunId::new(),
        workflow: workflow.into(),
        status: RunStatus::Running,
        parent: None,
        input,
        source: Some(format!("examples/{workflow}.yaml")),
        created_at_us: now,
        updated_at_us: now,
    }
}

/// The first batch of a run: `run_started` and the first `step_started`.
fn start_batch(workflow: &str, input: &Value) -> Vec<Event> {
    let at = now_us();
    vec![
        Event {
            seq: 0,
            at_us: at,
            kind: EventKind::RunStarted {
                workflow: workflow.into(),
                input: input.clone(),
                parent: None,
            },
        },
        Event {
            seq: 1,
            at_us: at + 3,
            kind: EventKind::StepStarted {
                step: "n0".into(),
                task: 1,
                visit: 1,
                round: 0,
                item: None,
                agent: None,
                messages: Vec::new(),
                input: None,
            },
        },
    ]
}

/// The batch that finishes step `i` (of `steps`) and starts the next one, from `seq` on, with
/// the update written by the step.
fn step_batch(i: u64, steps: u64, seq: u64, key: &str, value: Value) -> Vec<Event> {
    let at = now_us();
    let step: baton_core::Name = format!("n{i}").into();
    let mut kinds = vec![
        EventKind::StateUpdated {
            step: step.clone(),
            round: i as u32,
            updates: vec![KeyUpdate {
                key: key.into(),
                value,
            }],
        },
        EventKind::StepCompleted {
            step,
            task: seq - 2,
            output: None,
            duration_us: 2,
        },
    ];
    if i + 1 < steps {
        kinds.push(EventKind::StepStarted {
            step: format!("n{}", i + 1).into(),
            task: seq + 2,
            visit: 1,
            round: i as u32 + 1,
            item: None,
            agent: None,
            messages: Vec::new(),
            input: None,
        });
    } else {
        kinds.push(EventKind::RunFinished {
            status: RunStatus::Succeeded,
            reason: None,
        });
    }
    (seq..)
        .zip(kinds)
        .enumerate()
        .map(|(k, (seq, kind))| Event {
            seq,
            at_us: at + k as u64,
            kind,
        })
        .collect()
}

#[derive(Default)]
struct Totals {
    /// Time to create the run and append its first batch (`run_started`: the input).
    start_time: Duration,
    appends: u64,
    append_time: Duration,
    steps: u64,
    run_time: Duration,
    /// µs per append, per run (the machines are noisy: the median and best runs say more).
    per_run: Vec<f64>,
}

impl Totals {
    fn spread(&self) -> String {
        let mut v = self.per_run.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => String::new(),
            n => format!("(per run: best {:.1}, median {:.1})", v[0], v[n / 2]),
        }
    }
}

/// One run of `steps` steps: create, start batch, one append per step, final status.
/// `update(i)` is the (key, value) step `i` writes.
async fn one_run(
    store: &dyn RunStore,
    workflow: &str,
    input: &Value,
    steps: u64,
    update: &dyn Fn(u64) -> (String, Value),
    totals: &mut Totals,
) -> RunId {
    let run_started = Instant::now();
    let run = record(workflow, input.clone());
    let id = run.id;
    let t = Instant::now();
    store.create_run(run).await.unwrap();
    store
        .append(id, start_batch(workflow, input))
        .await
        .unwrap();
    totals.start_time += t.elapsed();
    let mut seq = 2;
    let mut this_run = Duration::ZERO;
    for i in 0..steps {
        let (key, value) = update(i);
        let batch = step_batch(i, steps, seq, &key, value);
        seq += batch.len() as u64;
        let t = Instant::now();
        store.append(id, batch).await.unwrap();
        this_run += t.elapsed();
    }
    totals.append_time += this_run;
    totals.appends += steps;
    if steps > 0 {
        totals.per_run.push(per(this_run, steps));
    }
    store.set_status(id, RunStatus::Succeeded).await.unwrap();
    totals.run_time += run_started.elapsed();
    totals.steps += steps;
    id
}

fn w3_update(i: u64) -> (String, Value) {
    ("xs".into(), json!(i))
}

fn w6_input() -> Value {
    let entries: serde_json::Map<String, Value> = (0..10_000)
        .map(|i| {
            (
                format!("key-{i:05}"),
                json!(format!("value {i:05} {}", "x".repeat(88))),
            )
        })
        .collect();
    json!({ "entries": entries })
}

fn w6_update(i: u64) -> (String, Value) {
    let k = (i * 997) % 10_000;
    (
        "entries".into(),
        json!({ format!("key-{k:05}"): format!("changed at step {i} {}", "y".repeat(80)) }),
    )
}

async fn w3_sqlite(strict: bool, format: Format, runs: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("w3.db"), SqliteOptions { strict })
        .await
        .unwrap()
        .with_format(format);
    let input = json!({ "xs": [] });
    // Warm-up run, not counted (nor its bytes).
    one_run(
        &store,
        "chain100",
        &input,
        100,
        &w3_update,
        &mut Totals::default(),
    )
    .await;
    let before = store.db_stats().await.unwrap();
    let mut totals = Totals::default();
    for _ in 0..runs {
        one_run(&store, "chain100", &input, 100, &w3_update, &mut totals).await;
    }
    let after = store.db_stats().await.unwrap();
    println!(
        "W3 sqlite {:<7} {:<11} runs={runs:<4} append_us={:>7.1} {} step_us={:>7.1} \
         db_bytes_per_step={:>6.1} (pages in use: {:.1})",
        if strict { "strict" } else { "default" },
        format!("{format:?}"),
        per(totals.append_time, totals.appends),
        totals.spread(),
        per(totals.run_time, totals.steps),
        (after.file_bytes() - before.file_bytes()) as f64 / totals.steps as f64,
        (after.used_bytes() - before.used_bytes()) as f64 / totals.steps as f64,
    );
}

async fn w6_sqlite(format: Format, runs: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("w6.db"), SqliteOptions::default())
        .await
        .unwrap()
        .with_format(format);
    let input = w6_input();
    let input_bytes = serde_json::to_vec(&input).unwrap().len();
    one_run(
        &store,
        "chain20",
        &input,
        20,
        &w6_update,
        &mut Totals::default(),
    )
    .await;
    let before = store.db_stats().await.unwrap();
    let mut totals = Totals::default();
    let mut ids = Vec::new();
    for _ in 0..runs {
        ids.push(one_run(&store, "chain20", &input, 20, &w6_update, &mut totals).await);
    }
    let after = store.db_stats().await.unwrap();
    // A run of 0 steps: what the input costs by itself (record + run_started).
    let base_before = store.db_stats().await.unwrap();
    for _ in 0..runs {
        one_run(
            &store,
            "chain20",
            &input,
            0,
            &w6_update,
            &mut Totals::default(),
        )
        .await;
    }
    let base_after = store.db_stats().await.unwrap();
    let per_run = (after.file_bytes() - before.file_bytes()) as f64 / runs as f64;
    let base_per_run = (base_after.file_bytes() - base_before.file_bytes()) as f64 / runs as f64;
    let mut reads = Vec::new();
    let mut record_reads = Vec::new();
    for _ in 0..3 {
        for id in &ids {
            let t = Instant::now();
            let log = store.events(*id, 0).await.unwrap();
            reads.push(t.elapsed());
            assert_eq!(log.len(), 2 + 20 * 3);
            let t = Instant::now();
            store.run(*id).await.unwrap();
            record_reads.push(t.elapsed());
        }
    }
    reads.sort();
    record_reads.sort();
    println!(
        "W6 sqlite default {:<11} runs={runs:<4} input={:.2}MB append_us={:>7.1} {} \
         step_us(incl. create)={:>8.1} start_ms/run={:.2} bytes/run={:>9.0} input-only/run={:>9.0} \
         db_bytes_per_step(total/20)={:>8.0} (beyond the input: {:>6.0}) \
         events(run,0)_ms p50={:.2} p90={:.2} max={:.2}; run()_ms p50={:.2}",
        format!("{format:?}"),
        input_bytes as f64 / 1e6,
        per(totals.append_time, totals.appends),
        totals.spread(),
        per(totals.run_time, totals.steps),
        ms(totals.start_time) / runs as f64,
        per_run,
        base_per_run,
        per_run / 20.0,
        (per_run - base_per_run) / 20.0,
        ms(reads[reads.len() / 2]),
        ms(reads[reads.len() * 9 / 10]),
        ms(reads[reads.len() - 1]),
        ms(record_reads[record_reads.len() / 2]),
    );
}

async fn w3_postgres(url: &str, synchronous_commit: bool, runs: u64) {
    let options = PostgresOptions { synchronous_commit };
    let store = match PostgresStore::connect_with(url, options).await {
        Ok(store) => store,
        Err(e) => {
            println!("W3 postgres: skipped ({e})");
            return;
        }
    };
    let input = json!({ "xs": [] });
    one_run(
        &store,
        "chain100",
        &input,
        100,
        &w3_update,
        &mut Totals::default(),
    )
    .await;
    let before = store.table_bytes().await.unwrap();
    let mut totals = Totals::default();
    for _ in 0..runs {
        one_run(&store, "chain100", &input, 100, &w3_update, &mut totals).await;
    }
    let after = store.table_bytes().await.unwrap();
    println!(
        "W3 postgres synchronous_commit={:<5} runs={runs:<4} append_us={:>7.1} {} step_us={:>7.1} \
         table_bytes_per_step={:>6.1}",
        synchronous_commit,
        per(totals.append_time, totals.appends),
        totals.spread(),
        per(totals.run_time, totals.steps),
        after.saturating_sub(before) as f64 / totals.steps as f64,
    );
}

fn body_sizes() {
    let batch = step_batch(50, 100, 152, "xs", json!(50));
    let mut run = start_batch("chain100", &json!({"xs": []}));
    let mut seq = 2;
    for i in 0..100 {
        let b = step_batch(i, 100, seq, "xs", json!(i));
        seq += b.len() as u64;
        run.extend(b);
    }
    for format in [Format::Json, Format::MessagePack] {
        let one = codec::encode(&batch, format).unwrap().len();
        // Whole run, one batch per step as the stores write it.
        let mut total = codec::encode(&run[..2], format).unwrap().len();
        let mut at = 2;
        for _ in 0..100 {
            total += codec::encode(&run[at..at + 3], format).unwrap().len();
            at += 3;
        }
        println!(
            "body {:<11} one W3 step batch (3 events) = {one:>4} bytes; W3 run of 100 steps = {:>6} bytes ({:.1} per step)",
            format!("{format:?}"),
            total,
            total as f64 / 100.0
        );
    }
    let w6 = start_batch("chain20", &w6_input());
    for format in [Format::Json, Format::MessagePack] {
        let t = Instant::now();
        let body = codec::encode(&w6, format).unwrap();
        let enc = t.elapsed();
        let t = Instant::now();
        let back = codec::decode(0, &body, 0).unwrap();
        let dec = t.elapsed();
        assert_eq!(back, w6);
        println!(
            "body {:<11} W6 start batch = {:>8} bytes, encode {:.2} ms, decode {:.2} ms",
            format!("{format:?}"),
            body.len(),
            ms(enc),
            ms(dec)
        );
    }
}

fn per(total: Duration, n: u64) -> f64 {
    total.as_secs_f64() * 1e6 / n.max(1) as f64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let postgres = args
        .iter()
        .position(|a| a == "--postgres")
        .and_then(|i| args.get(i + 1).cloned());
    // `measure [sizes|w3|w3-strict|w6|all] [--postgres URL]`
    let only = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .map_or("all", String::as_str);
    let wants = |what: &str| only == "all" || only == what;
    if wants("sizes") {
        body_sizes();
    }
    if wants("w3") {
        for format in [Format::MessagePack, Format::Json] {
            w3_sqlite(false, format, 50).await;
        }
    }
    if wants("w3-strict") {
        w3_sqlite(true, Format::MessagePack, 3).await;
    }
    if wants("w6") {
        for format in [Format::MessagePack, Format::Json] {
            w6_sqlite(format, 10).await;
        }
    }
    if let Some(url) = postgres {
        w3_postgres(&url, true, 5).await;
        w3_postgres(&url, false, 20).await;
    }
}
