//! `PostgresStore`: the conformance suite against a PostgreSQL server, plus racing writers and
//! idempotent migrations.
//!
//! The server is `postgres://postgres@127.0.0.1:5432/test` (trust auth), or `$BATON_TEST_POSTGRES_URL`.
//! When it cannot be reached the tests are skipped with a warning, except in CI (`CI=true`),
//! where they fail. Every test makes runs with fresh ids, so runs of the tests can share the
//! database; only `full_suite` prunes (runs dated before 1990, see `testing::prune_retention`).

#![allow(clippy::unwrap_used)]

use baton_core::{RunId, RunStatus, RunStore, StoreError};
use baton_store::testing::{self, event, events, record};
use baton_store::{PostgresOptions, PostgresStore};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn url() -> String {
    std::env::var("BATON_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// The store, or `None` (after a warning) when there is no server outside CI.
async fn store() -> Option<PostgresStore> {
    let url = url();
    match PostgresStore::connect(&url).await {
        Ok(store) => Some(store),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "PostgreSQL is required in CI but {url} cannot be used: {e}\n\
             Start the server with:\n    \
             pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
             (or point BATON_TEST_POSTGRES_URL at another server; the database must exist)"
        ),
        Err(e) => {
            eprintln!(
                "warning: skipping PostgreSQL test: {url} cannot be used: {e}\n\
                 start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                 or set BATON_TEST_POSTGRES_URL"
            );
            None
        }
    }
}

#[tokio::test]
async fn full_suite() {
    let Some(store) = store().await else { return };
    testing::conformance(&store).await;
    store.close().await;
}

#[tokio::test]
async fn asynchronous_commit_store_works() {
    let Some(_reachable) = store().await else {
        return;
    };
    let options = PostgresOptions {
        synchronous_commit: false,
    };
    let store = PostgresStore::connect_with(&url(), options).await.unwrap();
    let run = record("pg-async-commit", 1);
    store.create_run(run.clone()).await.unwrap();
    store.append(run.id, events(0, 3)).await.unwrap();
    store.append(run.id, events(3, 5)).await.unwrap();
    assert_eq!(store.events(run.id, 1).await.unwrap(), events(1, 5));
    assert!(PostgresOptions::default().synchronous_commit);
}

#[tokio::test]
async fn bad_urls_are_backend_errors() {
    match PostgresStore::connect("postgres://u:hunter2@127.0.0.1:5432/x?sslmode=bogus").await {
        Err(StoreError::Backend(message)) => {
            assert!(!message.contains("hunter2"), "{message}");
            assert!(message.contains("postgres"), "{message}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn connecting_again_migrates_nothing() {
    let Some(first) = store().await else { return };
    let run = record("pg-reconnect", 1);
    first.create_run(run.clone()).await.unwrap();
    first.append(run.id, events(0, 4)).await.unwrap();
    first.close().await;
    let Some(second) = store().await else { return };
    assert_eq!(second.run(run.id).await.unwrap(), run);
    assert_eq!(second.events(run.id, 2).await.unwrap(), events(2, 4));
    assert!(second.table_bytes().await.unwrap() > 0);
    assert!(format!("{second:?}").starts_with("PostgresStore"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_pools_race_and_exactly_one_wins_each_seq() {
    let (Some(a), Some(b)) = (store().await, store().await) else {
        return;
    };
    let run = record("pg-race", 1);
    a.create_run(run.clone()).await.unwrap();
    const N: u64 = 100;
    let contend = |store: PostgresStore| async move { contend(&store, run.id, N).await };
    let (wa, wb) = tokio::join!(tokio::spawn(contend(a.clone())), tokio::spawn(contend(b)));
    let wins = [wa.unwrap(), wb.unwrap()];
    eprintln!("wins: {:?}", wins.iter().map(Vec::len).collect::<Vec<_>>());
    let mut all: Vec<u64> = wins.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..N).collect::<Vec<_>>(), "wins: {wins:?}");
    assert_eq!(a.events(run.id, 0).await.unwrap(), events(0, N));
}

/// Append seqs `0..n` one by one, racing another writer; returns the seqs this writer won.
async fn contend(store: &PostgresStore, run: RunId, n: u64) -> Vec<u64> {
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

#[tokio::test]
async fn unicode_and_key_order_of_inputs_survive() {
    let Some(store) = store().await else { return };
    let mut run = record("pg-input", 1);
    // `json` (not `jsonb`) keeps the text as written: key order, duplicates aside.
    run.input = serde_json::from_str(
        r#"{"z": "naïve ✓ \u0000", "a": [1.5, -2, 18446744073709551615], "m": {}}"#,
    )
    .unwrap();
    store.create_run(run.clone()).await.unwrap();
    let back = store.run(run.id).await.unwrap();
    assert_eq!(back, run);
    let keys: Vec<&String> = back.input.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["z", "a", "m"]);
    store.set_status(run.id, RunStatus::Halted).await.unwrap();
    assert!(
        store
            .runs(Some(RunStatus::Halted))
            .await
            .unwrap()
            .iter()
            .any(|r| r.id == run.id)
    );
}
