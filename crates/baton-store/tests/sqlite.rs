//! `SqliteStore`: the conformance suite on a temporary file (default and strict durability, and
//! in memory), reopening a file, writers racing from two handles and from two processes, the
//! stored layout, and bodies the store cannot read.

#![allow(clippy::unwrap_used)]

use baton_core::{Event, EventKind, KeyUpdate, RunId, RunStatus, RunStore, StoreError};
use baton_store::testing::{self, event, events, record};
use baton_store::{SqliteOptions, SqliteStore, codec};
use serde_json::json;
use sqlx::Row;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

fn temp() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    (dir, path)
}

async fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path, SqliteOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn full_suite_default_mode() {
    let (_dir, path) = temp();
    let store = open(&path).await;
    assert!(!store.is_strict());
    testing::conformance(&store).await;
    // Twice on one file: the suite only looks at its own runs.
    testing::conformance(&store).await;
}

#[tokio::test]
async fn full_suite_strict_mode() {
    let (_dir, path) = temp();
    let store = SqliteStore::open(&path, SqliteOptions { strict: true })
        .await
        .unwrap();
    assert!(store.is_strict());
    testing::conformance(&store).await;
}

#[tokio::test]
async fn full_suite_in_memory() {
    let store = SqliteStore::memory().await.unwrap();
    assert_eq!(store.path(), None);
    testing::conformance(&store).await;
}

#[tokio::test]
async fn opening_creates_the_file_in_wal_mode() {
    let (_dir, path) = temp();
    assert!(!path.exists());
    let store = open(&path).await;
    assert!(path.exists());
    assert_eq!(store.path(), Some(path.as_path()));
    assert!(format!("{store:?}").contains("runs.db"));

    let mut conn = raw(&path).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "halts",
            "journal",
            "response_cache",
            "runs",
            "sqlite_sequence"
        ]
    );
    let journal_sql: String =
        sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'journal'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(journal_sql.contains("WITHOUT ROWID"), "{journal_sql}");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'runs' AND sql IS NOT NULL",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(indexes, ["runs_by_status"]);
}

#[tokio::test]
async fn reopened_file_reads_everything_back() {
    let (_dir, path) = temp();
    let mut runs = Vec::new();
    {
        let store = open(&path).await;
        for i in 0..3u64 {
            let run = record("reopen", 1_000 + i);
            store.create_run(run.clone()).await.unwrap();
            store.append(run.id, events(0, 1)).await.unwrap();
            store.append(run.id, events(1, 4 + i)).await.unwrap();
            runs.push(run);
        }
        store
            .set_status(runs[0].id, RunStatus::Succeeded)
            .await
            .unwrap();
        runs[0] = store.run(runs[0].id).await.unwrap();
        store.close().await;
    }
    // A second open migrates nothing and sees it all.
    let store = open(&path).await;
    let listed = store.runs(None).await.unwrap();
    let mut want = runs.clone();
    want.reverse();
    assert_eq!(listed, want);
    for (i, run) in (0u64..).zip(&runs) {
        assert_eq!(store.run(run.id).await.unwrap(), *run);
        assert_eq!(store.events(run.id, 0).await.unwrap(), events(0, 4 + i));
    }
    // And the log continues where it ended.
    store.append(runs[2].id, events(6, 7)).await.unwrap();
    assert_eq!(store.events(runs[2].id, 5).await.unwrap(), events(5, 7));
    // A third handle, concurrently, sees the same.
    let other = open(&path).await;
    assert_eq!(other.events(runs[2].id, 0).await.unwrap(), events(0, 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_race_and_exactly_one_wins_each_seq() {
    let (_dir, path) = temp();
    let a = open(&path).await;
    let b = open(&path).await;
    let run = record("race-handles", 1);
    a.create_run(run.clone()).await.unwrap();
    const N: u64 = 150;
    let contend = |store: SqliteStore| async move { contend(&store, run.id, N).await };
    let (wa, wb) = tokio::join!(tokio::spawn(contend(a.clone())), tokio::spawn(contend(b)));
    let wins = [wa.unwrap(), wb.unwrap()];
    eprintln!(
        "handle wins: {:?}",
        wins.iter().map(Vec::len).collect::<Vec<_>>()
    );
    check_wins(&wins, N);
    assert_eq!(a.events(run.id, 0).await.unwrap(), events(0, N));
}

/// Append seqs `0..n` one by one, racing another writer: after losing a seq, go on from the
/// seq the store says the log expects. Returns the seqs this writer won.
async fn contend(store: &SqliteStore, run: RunId, n: u64) -> Vec<u64> {
    let mut won = Vec::new();
    let mut seq = 0;
    while seq < n {
        match store.append(run, vec![event(seq)]).await {
            Ok(()) => {
                won.push(seq);
                seq += 1;
            }
            Err(StoreError::OutOfOrder {
                expected, found, ..
            }) => {
                assert_eq!(found, seq);
                assert!(
                    expected > seq,
                    "lost seq {seq} but the log expects {expected}"
                );
                seq = expected;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    won
}

/// Every seq won by exactly one writer.
fn check_wins(wins: &[Vec<u64>], n: u64) {
    let mut all: Vec<u64> = wins.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>(), "wins: {wins:?}");
}

const CHILD_ENV: &str = "BATON_SQLITE_RACE_CHILD";
const RACE_SEQS: u64 = 200;

#[test]
fn two_processes_race_and_exactly_one_wins_each_seq() {
    let (dir, path) = temp();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run = record("race-processes", 1);
    let store = rt.block_on(open(&path));
    rt.block_on(store.create_run(run.clone())).unwrap();
    let go = dir.path().join("go");
    let children: Vec<_> = (0..2)
        .map(|i| {
            let spec = format!(
                "{}|{}|{}|{}",
                path.display(),
                run.id,
                go.display(),
                dir.path().join(format!("ready-{i}")).display()
            );
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "race_child", "--ignored", "--nocapture"])
                .env(CHILD_ENV, spec)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    // Start both at once, when both have the file open.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(0..2).all(|i| dir.path().join(format!("ready-{i}")).exists()) {
        assert!(Instant::now() < deadline, "children did not get ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(&go, b"go").unwrap();
    let wins: Vec<Vec<u64>> = children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "child failed: {stdout}");
            let line = stdout
                .lines()
                .find_map(|l| l.strip_prefix("WINS:"))
                .unwrap_or_else(|| panic!("no WINS line in {stdout}"));
            line.split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect()
        })
        .collect();
    eprintln!(
        "process wins: {:?}",
        wins.iter().map(Vec::len).collect::<Vec<_>>()
    );
    check_wins(&wins, RACE_SEQS);
    let log = rt.block_on(store.events(run.id, 0)).unwrap();
    assert_eq!(log, events(0, RACE_SEQS));
}

/// The writer process of `two_processes_race_and_exactly_one_wins_each_seq`.
#[tokio::test]
#[ignore = "run as a child process by two_processes_race_and_exactly_one_wins_each_seq"]
async fn race_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let [path, run, go, ready] = parts[..] else {
        panic!("bad spec {spec}");
    };
    let run: RunId = run.parse().unwrap();
    let store = open(Path::new(path)).await;
    // Warm the connections up, then say so.
    store.events(run, 0).await.unwrap();
    std::fs::write(ready, b"ready").unwrap();
    while !Path::new(go).exists() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let won: Vec<String> = contend(&store, run, RACE_SEQS)
        .await
        .iter()
        .map(u64::to_string)
        .collect();
    println!("WINS:{}", won.join(","));
}

const KILL_ENV: &str = "BATON_SQLITE_KILL_CHILD";

#[test]
fn appends_acknowledged_before_kill_9_survive() {
    let (_dir, path) = temp();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run = record("kill-9", 1);
    let store = rt.block_on(open(&path));
    rt.block_on(store.create_run(run.clone())).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill_child", "--ignored", "--nocapture"])
        .env(KILL_ENV, format!("{}|{}", path.display(), run.id))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Kill it (SIGKILL) in the middle of its appends, once it has acknowledged some.
    let mut acked = 0u64;
    let stdout = child.stdout.take().unwrap();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        if let Some(n) = line.unwrap().strip_prefix("ACK ") {
            acked = n.parse().unwrap();
            if acked >= 300 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(acked >= 300, "the child stopped early");
    // Every acknowledged append is there, and the log is whole (the child appended in
    // batches of 3: whatever is there is a prefix of its batches).
    rt.block_on(store.close());
    let store = rt.block_on(open(&path));
    let log = rt.block_on(store.events(run.id, 0)).unwrap();
    let n = log.len() as u64;
    assert!(n >= acked, "acknowledged {acked} events, found {n}");
    assert_eq!(n % 3, 0);
    assert_eq!(log, events(0, n));
    rt.block_on(store.append(run.id, events(n, n + 1))).unwrap();
}

/// The writer process of `appends_acknowledged_before_kill_9_survive`: appends until killed.
#[tokio::test]
#[ignore = "run as a child process by appends_acknowledged_before_kill_9_survive"]
async fn kill_child() {
    use std::io::Write;
    let Ok(spec) = std::env::var(KILL_ENV) else {
        return;
    };
    let (path, run) = spec.split_once('|').unwrap();
    let run: RunId = run.parse().unwrap();
    let store = open(Path::new(path)).await;
    let mut out = std::io::stdout().lock();
    for seq in (0..1_000_000).step_by(3) {
        store.append(run, events(seq, seq + 3)).await.unwrap();
        writeln!(out, "ACK {}", seq + 3).unwrap();
        out.flush().unwrap();
    }
}

#[tokio::test]
async fn one_row_per_batch_with_a_version_byte() {
    let (_dir, path) = temp();
    let store = open(&path).await;
    let run = record("layout", 1);
    store.create_run(run.clone()).await.unwrap();
    store.append(run.id, events(0, 3)).await.unwrap();
    store.append(run.id, events(3, 4)).await.unwrap();
    store.append(run.id, Vec::new()).await.unwrap();
    store.append(run.id, events(4, 9)).await.unwrap();

    let mut conn = raw(&path).await;
    let rows = sqlx::query(
        "SELECT run_id, first_seq, last_seq, body FROM journal WHERE run_id = ?1 ORDER BY first_seq",
    )
    .bind(run.id.0)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let spans: Vec<(i64, i64)> = rows
        .iter()
        .map(|r| (r.get::<i64, _>(1), r.get::<i64, _>(2)))
        .collect();
    assert_eq!(spans, [(0, 2), (3, 3), (4, 8)]);
    for row in &rows {
        assert_eq!(row.get::<Vec<u8>, _>(0), run.id.0.as_bytes().to_vec());
        let body: Vec<u8> = row.get(3);
        assert_eq!(body[0], codec::Format::MessagePack.version());
    }
    let status: String = sqlx::query_scalar("SELECT status FROM runs WHERE id = ?1")
        .bind(run.id.0)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(status, "running");
}

#[tokio::test]
async fn json_bodies_are_read_too() {
    // A body in the JSON format (version 1), as a later or earlier writer might leave.
    let (_dir, path) = temp();
    let store = open(&path).await;
    let run = record("json-body", 1);
    store.create_run(run.clone()).await.unwrap();
    store.append(run.id, events(0, 2)).await.unwrap();
    let body = codec::encode(&events(2, 5), codec::Format::Json).unwrap();
    let mut conn = raw(&path).await;
    sqlx::query("INSERT INTO journal (run_id, first_seq, last_seq, body) VALUES (?1, 2, 4, ?2)")
        .bind(run.id.0)
        .bind(body)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(store.events(run.id, 0).await.unwrap(), events(0, 5));
    assert_eq!(store.events(run.id, 3).await.unwrap(), events(3, 5));
    store.append(run.id, events(5, 6)).await.unwrap();
    assert_eq!(store.events(run.id, 0).await.unwrap(), events(0, 6));
}

#[tokio::test]
async fn unreadable_bodies_are_backend_errors() {
    let (_dir, path) = temp();
    let store = open(&path).await;
    let run = record("bad-body", 1);
    store.create_run(run.clone()).await.unwrap();
    let mut conn = raw(&path).await;
    sqlx::query("INSERT INTO journal (run_id, first_seq, last_seq, body) VALUES (?1, 0, 0, ?2)")
        .bind(run.id.0)
        .bind(vec![99u8, 1, 2, 3])
        .execute(&mut conn)
        .await
        .unwrap();
    match store.events(run.id, 0).await {
        Err(StoreError::Backend(message)) => {
            assert!(message.contains("version 99"), "{message}");
            assert!(message.contains(&run.id.to_string()), "{message}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn large_input_round_trips() {
    // The W6 shape: a state map of 10,000 strings (about 1.1 MB) in the first event.
    let (_dir, path) = temp();
    let store = open(&path).await;
    let input = big_input();
    let mut run = record("big", 1);
    run.input = input.clone();
    store.create_run(run.clone()).await.unwrap();
    let first = Event {
        seq: 0,
        at_us: 1,
        kind: EventKind::RunStarted {
            workflow: "big".into(),
            input: input.clone(),
            parent: None,
        },
    };
    store.append(run.id, vec![first.clone()]).await.unwrap();
    let update = Event {
        seq: 1,
        at_us: 2,
        kind: EventKind::StateUpdated {
            step: "s0".into(),
            round: 0,
            updates: vec![KeyUpdate {
                key: "entries".into(),
                value: json!({"k00042": "changed"}),
            }],
        },
    };
    store.append(run.id, vec![update.clone()]).await.unwrap();
    assert_eq!(store.run(run.id).await.unwrap(), run);
    assert_eq!(store.events(run.id, 0).await.unwrap(), vec![first, update]);
    let stats = store.db_stats().await.unwrap();
    assert_eq!(stats.wal_bytes, 0, "the checkpoint truncates the WAL");
    assert!(stats.file_bytes() > 2_000_000, "{stats:?}");
    assert!(stats.used_bytes() <= stats.file_bytes());
}

fn big_input() -> serde_json::Value {
    let entries: serde_json::Map<String, serde_json::Value> = (0..10_000)
        .map(|i| {
            (
                format!("k{i:05}"),
                json!(format!("value {i:05} {}", "x".repeat(90))),
            )
        })
        .collect();
    json!({ "entries": entries })
}

#[tokio::test]
async fn file_bytes_grow_with_the_log() {
    let (_dir, path) = temp();
    let store = open(&path).await;
    let empty = store.file_bytes().await.unwrap();
    let run = record("growth", 1);
    store.create_run(run.clone()).await.unwrap();
    for seq in (0..300).step_by(3) {
        store.append(run.id, events(seq, seq + 3)).await.unwrap();
    }
    let full = store.file_bytes().await.unwrap();
    assert!(full > empty, "{full} <= {empty}");
    let stats = store.db_stats().await.unwrap();
    assert_eq!(stats.file_bytes(), full);
    assert_eq!(stats.main_bytes, stats.page_size * stats.page_count);

    let memory = SqliteStore::memory().await.unwrap();
    assert!(memory.file_bytes().await.unwrap() > 0);
}

/// A plain connection to the file, beside the store, to look at what it wrote.
async fn raw(path: &Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let url = format!("sqlite://{}", path.display());
    sqlx::SqliteConnection::connect(&url).await.unwrap()
}
