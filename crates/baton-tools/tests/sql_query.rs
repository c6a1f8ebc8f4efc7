//! `sql_query` against a SQLite fixture and a local PostgreSQL: reads with parameters, and
//! writes, DDL and ATTACH refused by the engine.
//!
//! PostgreSQL: `BATON_TEST_POSTGRES_URL`, or `postgres://postgres@127.0.0.1:5432/test`. When it
//! is unreachable the PostgreSQL test is skipped with a warning, unless `CI=true`, where it fails.

#![allow(clippy::unwrap_used)]

use baton_core::{SideEffect, Tool, ToolContext, ToolError};
use baton_tools::builtin::{SqlConfig, SqlQueryTool};
use serde_json::{Value, json};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};
use std::path::{Path, PathBuf};
use std::time::Duration;

async fn call(tool: &SqlQueryTool, query: &str, params: Value) -> Result<Value, ToolError> {
    tool.call(
        json!({"query": query, "params": params}),
        ToolContext::default(),
    )
    .await
}

fn refused(result: Result<Value, ToolError>, expect: &[&str]) -> String {
    match result {
        Err(ToolError::Failed { message, .. }) => {
            eprintln!("refused: {message}");
            let lower = message.to_lowercase();
            assert!(
                expect.iter().any(|e| lower.contains(&e.to_lowercase())),
                "expected one of {expect:?} in: {message}"
            );
            message
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite

async fn sqlite_fixture(dir: &Path) -> PathBuf {
    let path = dir.join("fixture.db");
    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    conn.execute(
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, \
         photo BLOB, active BOOLEAN);
         INSERT INTO people VALUES (1, 'Ada', 9.5, x'CAFE', 1), (2, 'Brian', 7.25, NULL, 0),
                                   (3, 'Chen', NULL, NULL, 1);
         CREATE TABLE numbers (n INTEGER);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20)
         INSERT INTO numbers SELECT x FROM c;",
    )
    .await
    .unwrap();
    conn.close().await.unwrap();
    // Another database file, for ATTACH.
    let other = dir.join("other.db");
    let mut conn = SqliteConnectOptions::new()
        .filename(&other)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    conn.execute("CREATE TABLE secrets (v TEXT); INSERT INTO secrets VALUES ('hidden');")
        .await
        .unwrap();
    conn.close().await.unwrap();
    path
}

async fn sqlite_count(path: &Path, table: &str) -> i64 {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

#[tokio::test]
async fn sqlite_selects_with_params() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_fixture(dir.path()).await;
    let tool = SqlQueryTool::new(SqlConfig::new(db.to_str().unwrap())).unwrap();
    assert_eq!(tool.spec().effect, SideEffect::ReadOnly);
    assert_eq!(tool.spec().parameters["additionalProperties"], json!(false));
    assert_eq!(tool.spec().parameters["required"], json!(["query"]));

    let out = call(
        &tool,
        "SELECT id, name, score FROM people WHERE score > ? OR name = ? ORDER BY id",
        json!([8, "Chen"]),
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        json!({
            "columns": ["id", "name", "score"],
            "rows": [[1, "Ada", 9.5], [3, "Chen", null]],
            "row_count": 2,
            "truncated": false
        })
    );
    let out = call(
        &tool,
        "SELECT photo, active, 1.5 * 2 AS x FROM people WHERE id = ?1",
        json!([1]),
    )
    .await
    .unwrap();
    assert_eq!(out["rows"], json!([["\\xcafe", 1, 3.0]]));
    // No rows still names the columns.
    let out = call(
        &tool,
        "SELECT id, name FROM people WHERE id = ?",
        json!([99]),
    )
    .await
    .unwrap();
    assert_eq!(out["columns"], json!(["id", "name"]));
    assert_eq!(out["rows"], json!([]));
    // `sqlite:` URLs work too, and params may be omitted.
    let tool = SqlQueryTool::new(SqlConfig::new(format!("sqlite://{}", db.display()))).unwrap();
    let out = tool
        .call(
            json!({"query": "SELECT count(*) AS n FROM people"}),
            ToolContext::default(),
        )
        .await
        .unwrap();
    assert_eq!(out["rows"], json!([[3]]));
}

#[tokio::test]
async fn sqlite_row_limit() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_fixture(dir.path()).await;
    let tool = SqlQueryTool::new(SqlConfig {
        max_rows: 5,
        ..SqlConfig::new(db.to_str().unwrap())
    })
    .unwrap();
    let out = call(&tool, "SELECT n FROM numbers ORDER BY n", json!([]))
        .await
        .unwrap();
    assert_eq!(out["row_count"], 5);
    assert_eq!(out["truncated"], true);
    assert_eq!(out["rows"], json!([[1], [2], [3], [4], [5]]));
}

#[tokio::test]
async fn sqlite_writes_ddl_and_attach_are_refused_by_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_fixture(dir.path()).await;
    let tool = SqlQueryTool::new(SqlConfig::new(db.to_str().unwrap())).unwrap();
    let ro = ["readonly", "read-only", "query_only"];
    refused(
        call(
            &tool,
            "INSERT INTO people (name) VALUES (?)",
            json!(["Eve"]),
        )
        .await,
        &ro,
    );
    refused(
        call(&tool, "UPDATE people SET name = 'Eve'", json!([])).await,
        &ro,
    );
    refused(call(&tool, "DELETE FROM people", json!([])).await, &ro);
    refused(call(&tool, "DROP TABLE people", json!([])).await, &ro);
    refused(call(&tool, "CREATE TABLE t (x)", json!([])).await, &ro);
    // Turning query_only off does not help: the file itself is open read-only.
    refused(
        call(
            &tool,
            "PRAGMA query_only = OFF; INSERT INTO people (name) VALUES ('Eve')",
            json!([]),
        )
        .await,
        &ro,
    );
    // Writing through a RETURNING or a CTE is still a write.
    refused(
        call(
            &tool,
            "WITH x AS (SELECT 1) INSERT INTO numbers SELECT 1 FROM x RETURNING n",
            json!([]),
        )
        .await,
        &ro,
    );
    refused(call(&tool, "CREATE TEMP TABLE t (x)", json!([])).await, &ro);
    let copy = dir.path().join("copy.db");
    refused(
        call(
            &tool,
            &format!("VACUUM INTO '{}'", copy.display()),
            json!([]),
        )
        .await,
        &["attached databases", "readonly", "read-only"],
    );
    assert!(!copy.exists());
    refused(
        call(&tool, "SELECT length(randomblob(100000000))", json!([])).await,
        &["too big"],
    );
    let other = dir.path().join("other.db");
    let msg = refused(
        call(
            &tool,
            &format!("ATTACH DATABASE '{}' AS other", other.display()),
            json!([]),
        )
        .await,
        &["attached databases"],
    );
    assert!(msg.contains("ATTACH is not allowed"), "{msg}");
    refused(
        call(&tool, "ATTACH DATABASE ':memory:' AS m", json!([])).await,
        &["attached databases"],
    );
    assert_eq!(sqlite_count(&db, "people").await, 3, "nothing changed");
    assert_eq!(sqlite_count(&db, "numbers").await, 20);
}

#[tokio::test]
async fn sqlite_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_fixture(dir.path()).await;
    let tool = SqlQueryTool::new(SqlConfig::new(db.to_str().unwrap())).unwrap();
    refused(call(&tool, "SELEKT 1", json!([])).await, &["syntax error"]);
    refused(
        call(&tool, "SELECT * FROM nope", json!([])).await,
        &["no such table"],
    );
    match tool
        .call(
            json!({"query": "SELECT ?", "params": [[1]]}),
            ToolContext::default(),
        )
        .await
    {
        Err(ToolError::InvalidArguments { message, .. }) => assert!(message.contains("params[0]")),
        other => panic!("{other:?}"),
    }
    // A missing database file is an error, and is not created.
    let missing = dir.path().join("missing.db");
    let tool = SqlQueryTool::new(SqlConfig::new(missing.to_str().unwrap())).unwrap();
    refused(call(&tool, "SELECT 1", json!([])).await, &["cannot open"]);
    assert!(!missing.exists());
}

#[tokio::test]
async fn sqlite_runaway_queries_are_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_fixture(dir.path()).await;
    let tool = SqlQueryTool::new(SqlConfig {
        timeout: Duration::from_millis(300),
        ..SqlConfig::new(db.to_str().unwrap())
    })
    .unwrap();
    let started = std::time::Instant::now();
    let result = call(
        &tool,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
        json!([]),
    )
    .await;
    refused(result, &["interrupted"]);
    assert!(started.elapsed() < Duration::from_secs(3));
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

fn postgres_url() -> String {
    std::env::var("BATON_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// An admin connection, or `None` (with a warning) when PostgreSQL is unreachable outside CI.
async fn postgres_admin() -> Option<sqlx::PgConnection> {
    let url = postgres_url();
    match tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&url)).await {
        Ok(Ok(conn)) => Some(conn),
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_string(),
            };
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("PostgreSQL at {url} is required in CI: {why}");
            }
            eprintln!("WARNING: skipping the PostgreSQL sql_query test: {url}: {why}");
            None
        }
    }
}

#[tokio::test]
async fn postgres_read_only() {
    let Some(mut admin) = postgres_admin().await else {
        return;
    };
    let suffix = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let table = format!("baton_tools_sql_{suffix}");
    let role = format!("baton_tools_ro_{suffix}");
    admin
        .execute(AssertSqlSafe(format!(
            "CREATE SEQUENCE {table}_seq;
             CREATE TABLE {table} (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), \
             born date, seen timestamptz, tags text[], meta jsonb, uid uuid, ok boolean, \
             ratio double precision);
             INSERT INTO {table} VALUES
               (1, 'Ada', 12.50, '1815-12-10', '2024-02-29 12:34:56.789+00', '{{a,b}}',
                '{{\"k\": [1, 2]}}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, 0.25),
               (2, 'Brian', -0.05, NULL, NULL, '{{}}', NULL, NULL, false, NULL),
               (3, 'Chen', 1000000.00, '2000-01-01', '1999-12-31 23:59:59+00', NULL, '[]', NULL,
                NULL, 1e300);"
        )))
        .await
        .unwrap();
    let superuser: bool = sqlx::query_scalar("SELECT current_setting('is_superuser') = 'on'")
        .fetch_one(&mut admin)
        .await
        .unwrap();

    let checks = tokio::spawn(postgres_checks(table.clone(), role.clone(), superuser));
    let outcome = checks.await;

    let _ = admin
        .execute(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {table}; DROP SEQUENCE IF EXISTS {table}_seq"
        )))
        .await;
    let _ = admin
        .execute(AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
        .await;
    let _ = admin.close().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn postgres_checks(table: String, role: String, superuser: bool) {
    let url = postgres_url();
    let tool = SqlQueryTool::new(SqlConfig {
        allow_superuser: true,
        ..SqlConfig::new(url.clone())
    })
    .unwrap();

    // Reads, with parameters and every supported type.
    let out = call(
        &tool,
        &format!("SELECT id, name, price, born, seen, tags, meta, uid, ok, ratio FROM {table} WHERE id <= $1 ORDER BY id"),
        json!([3]),
    )
    .await
    .unwrap();
    assert_eq!(
        out["columns"],
        json!([
            "id", "name", "price", "born", "seen", "tags", "meta", "uid", "ok", "ratio"
        ])
    );
    assert_eq!(
        out["rows"][0],
        json!([1, "Ada", "12.50", "1815-12-10", "2024-02-29T12:34:56.789Z", ["a", "b"],
               {"k": [1, 2]}, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", true, 0.25])
    );
    assert_eq!(
        out["rows"][1],
        json!([2, "Brian", "-0.05", null, null, [], null, null, false, null])
    );
    assert_eq!(out["rows"][2][2], "1000000.00");
    assert_eq!(out["rows"][2][3], "2000-01-01");
    assert_eq!(out["rows"][2][4], "1999-12-31T23:59:59Z");
    assert_eq!(out["rows"][2][6], json!([]));
    assert_eq!(out["rows"][2][9], json!(1e300));
    let out = call(
        &tool,
        &format!("SELECT name FROM {table} WHERE name = $1 OR ok = $2 ORDER BY id"),
        json!(["Chen", true]),
    )
    .await
    .unwrap();
    assert_eq!(out["rows"], json!([["Ada"], ["Chen"]]));
    let out = call(
        &tool,
        "SELECT 1::int2 AS a, 2::int8 AS b, 'x'::varchar AS c, 'y'::char(2) AS d, \
         ARRAY[[1,2],[3,4]] AS m, '12:30:00'::time AS t, NULL::int AS n",
        json!([]),
    )
    .await
    .unwrap();
    assert_eq!(
        out["rows"],
        json!([[1, 2, "x", "y ", [[1, 2], [3, 4]], "12:30:00", null]])
    );
    let out = call(
        &tool,
        &format!("SELECT id FROM {table} WHERE id > $1"),
        json!([100]),
    )
    .await
    .unwrap();
    assert_eq!(out["columns"], json!(["id"]));
    assert_eq!(out["row_count"], 0);
    let limited = SqlQueryTool::new(SqlConfig {
        allow_superuser: true,
        max_rows: 2,
        ..SqlConfig::new(url.clone())
    })
    .unwrap();
    let out = call(&limited, "SELECT generate_series(1, 10)", json!([]))
        .await
        .unwrap();
    assert_eq!(out["rows"], json!([[1], [2]]));
    assert_eq!(out["truncated"], true);
    // Types without a JSON form ask for a cast.
    refused(
        call(&tool, "SELECT interval '1 day' AS i", json!([])).await,
        &["::text"],
    );

    // Writes and DDL are refused by the transaction.
    let ro = ["read-only transaction"];
    refused(
        call(
            &tool,
            &format!("INSERT INTO {table} (id, name) VALUES ($1, $2)"),
            json!([9, "Eve"]),
        )
        .await,
        &ro,
    );
    refused(
        call(
            &tool,
            &format!("UPDATE {table} SET name = 'Eve'"),
            json!([]),
        )
        .await,
        &ro,
    );
    refused(
        call(&tool, &format!("DELETE FROM {table}"), json!([])).await,
        &ro,
    );
    refused(
        call(&tool, &format!("DROP TABLE {table}"), json!([])).await,
        &ro,
    );
    refused(
        call(&tool, "CREATE TABLE baton_tools_never (x int)", json!([])).await,
        &ro,
    );
    refused(
        call(
            &tool,
            "CREATE TEMP TABLE baton_tools_never (x int)",
            json!([]),
        )
        .await,
        &ro,
    );
    refused(
        call(
            &tool,
            &format!("WITH d AS (DELETE FROM {table} RETURNING id) SELECT * FROM d"),
            json!([]),
        )
        .await,
        &ro,
    );
    refused(
        call(&tool, &format!("SELECT nextval('{table}_seq')"), json!([])).await,
        &["nextval() in a read-only transaction"],
    );
    // The transaction cannot be switched to read-write, nor left.
    refused(
        call(&tool, "SET TRANSACTION READ WRITE", json!([])).await,
        &["read-write mode must be set before any query"],
    );
    refused(
        call(&tool, &format!("COMMIT; DELETE FROM {table}"), json!([])).await,
        &["multiple commands", "prepared statement"],
    );
    let out = call(&tool, &format!("SELECT count(*) FROM {table}"), json!([]))
        .await
        .unwrap();
    assert_eq!(out["rows"], json!([[3]]), "nothing changed");

    // A statement running past the limit is cancelled.
    let quick = SqlQueryTool::new(SqlConfig {
        allow_superuser: true,
        timeout: Duration::from_millis(300),
        ..SqlConfig::new(url.clone())
    })
    .unwrap();
    refused(
        call(&quick, "SELECT pg_sleep(5)", json!([])).await,
        &["cancelled"],
    );

    // Superusers are refused unless allowed; a SELECT-only role works without that.
    if superuser {
        let strict = SqlQueryTool::new(SqlConfig::new(url.clone())).unwrap();
        refused(call(&strict, "SELECT 1", json!([])).await, &["superuser"]);
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        admin
            .execute(AssertSqlSafe(format!(
                "CREATE ROLE {role} LOGIN; GRANT SELECT ON {table} TO {role}"
            )))
            .await
            .unwrap();
        admin.close().await.unwrap();
        let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        let ro_url = format!(
            "postgres://{role}@{}:{}/{}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or("test")
        );
        let reader = SqlQueryTool::new(SqlConfig::new(ro_url)).unwrap();
        match call(
            &reader,
            &format!("SELECT name FROM {table} WHERE id = $1"),
            json!([2]),
        )
        .await
        {
            Ok(out) => assert_eq!(out["rows"], json!([["Brian"]])),
            // Servers that do not trust every role on loopback cannot run this part.
            Err(e) if e.to_string().contains("authentication") => {
                eprintln!("WARNING: skipping the SELECT-only role check: {e}");
            }
            Err(e) => panic!("{e}"),
        }
    } else {
        eprintln!("note: the test role is not a superuser; superuser refusal not exercised");
    }
}
