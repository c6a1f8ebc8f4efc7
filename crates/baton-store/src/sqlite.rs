//! The SQLite store.

use crate::codec::Format;
use crate::now_us;
use crate::sql::{
    append_verdict, backend, clamp_i64, decode_into, encode, input_json, parse_input, parse_status,
    status_str, to_i64, to_u64,
};
use baton_core::{BoxFuture, Event, RunId, RunRecord, RunStatus, RunStore, StoreError};
use sqlx::migrate::Migrator;
use sqlx::query::Query;
use sqlx::sqlite::{
    Sqlite, SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteQueryResult, SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use uuid::Uuid;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a statement waits for another connection (or process) to release the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Checkpoint the WAL into the database file when it reaches this many pages (40 MiB at
/// 4 KiB pages; SQLite's default is 1,000). A checkpoint costs two `fsync`s whatever its
/// size, and the commit that triggers it pays for them: on a slow disk (~15 ms per `fsync`)
/// the default adds ~30 µs to every small append on average, this ~3 µs. The price is a WAL
/// file of up to 40 MiB beside the database, and a longer recovery read after a crash.
const WAL_CHECKPOINT_PAGES: u32 = 10_000;

/// Connections reading concurrently (WAL lets readers run beside the writer).
const READERS: u32 = 4;

/// How a [`SqliteStore`] trades speed for durability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SqliteOptions {
    /// `false` (the default): WAL with `synchronous=NORMAL`. A committed append survives the
    /// process being killed (`kill -9`) at any moment, but the last commits may be lost if the
    /// machine loses power. `true`: `synchronous=FULL`, the WAL is synced at every commit, so
    /// commits also survive power loss, at the cost of one `fsync` per append.
    pub strict: bool,
}

/// Sizes of a SQLite database, for benchmarks (see [`SqliteStore::db_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbStats {
    /// Bytes of the main database file.
    pub main_bytes: u64,
    /// Bytes of the write-ahead log (0 after a complete checkpoint).
    pub wal_bytes: u64,
    /// The page size.
    pub page_size: u64,
    /// Pages in the database.
    pub page_count: u64,
    /// Pages in the database that are free (left by deletions, reused by later writes).
    pub freelist_pages: u64,
}

impl DbStats {
    /// Main file plus WAL: what the database occupies on disk.
    pub fn file_bytes(&self) -> u64 {
        self.main_bytes + self.wal_bytes
    }

    /// Bytes of the pages in use (free pages not counted).
    pub fn used_bytes(&self) -> u64 {
        self.page_count.saturating_sub(self.freelist_pages) * self.page_size
    }
}

/// A [`RunStore`] in one SQLite file, shared safely by several processes.
///
/// The file is created if missing and migrated to the current schema on [`open`](Self::open).
/// It runs in WAL mode with foreign keys on and a 30 s busy timeout, so several processes
/// (a runner, `baton runs` in another shell) can use one file. Runs are rows of `runs`; each
/// [`append`](RunStore::append) is one row of `journal` holding the whole batch in a compact,
/// versioned encoding (see [`codec`](crate::codec)), inserted by a single statement that checks
/// that the batch continues the log, so two writers — even in two processes — can never both
/// append the same `seq`.
///
/// Within a process, writes go through one connection (they are serialized anyway by SQLite,
/// which makes concurrent writers sleep); reads use a small pool beside it.
#[derive(Clone)]
pub struct SqliteStore {
    /// The one connection that writes (`None` once closed). Not a pool: a pool's acquire and
    /// release cost more than a small append itself.
    writer: Arc<Mutex<Option<SqliteConnection>>>,
    /// Connections that read; `None` in memory, where the writer reads too.
    reader: Option<SqlitePool>,
    path: Option<PathBuf>,
    strict: bool,
    format: Format,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("strict", &self.strict)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

fn err(context: &str, run: Option<RunId>, e: sqlx::Error) -> StoreError {
    backend("sqlite", context, run, e)
}

impl SqliteStore {
    /// Open (creating it if missing) the database at `path` and bring its schema up to date.
    pub async fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if options.strict {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .pragma("wal_autocheckpoint", WAL_CHECKPOINT_PAGES.to_string());
        let mut writer = SqliteConnection::connect_with(&connect)
            .await
            .map_err(|e| err(&format!("opening {shown}"), None, e))?;
        migrate(&mut writer, &shown).await?;
        // One reader stays open: a fresh connection's first read costs a few milliseconds.
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(1)
            .test_before_acquire(false)
            .connect_with(connect)
            .await
            .map_err(|e| err(&format!("opening {shown} for reading"), None, e))?;
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(Some(writer))),
            reader: Some(reader),
            path: Some(path),
            strict: options.strict,
            format: Format::default(),
        })
    }

    /// A private database in memory, gone when the store is dropped; for tests.
    pub async fn memory() -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true);
        // One connection for everything: each connection to `:memory:` is its own database.
        let mut conn = SqliteConnection::connect_with(&connect)
            .await
            .map_err(|e| err("opening an in-memory database", None, e))?;
        migrate(&mut conn, ":memory:").await?;
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(Some(conn))),
            reader: None,
            path: None,
            strict: false,
            format: Format::default(),
        })
    }

    /// Write journal bodies in `format` from now on (the default is the compact
    /// [`Format::MessagePack`]; [`Format::Json`] makes them readable in a SQL shell). Bodies of
    /// every format are always read.
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// The database file (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether commits are synced to disk (see [`SqliteOptions::strict`]).
    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// Checkpoint the WAL into the main file (truncating the WAL) and measure the database.
    pub async fn db_stats(&self) -> Result<DbStats, StoreError> {
        let mut guard = self.writer.lock().await;
        let conn = guard
            .as_mut()
            .ok_or_else(|| err("db_stats", None, sqlx::Error::PoolClosed))?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut *conn)
            .await
            .map_err(|e| err("checkpoint", None, e))?;
        let mut pragma = async |sql: &'static str| -> Result<u64, StoreError> {
            let value: i64 = sqlx::query_scalar(sql)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| err(sql, None, e))?;
            to_u64(sql, value)
        };
        let page_size = pragma("PRAGMA page_size").await?;
        let page_count = pragma("PRAGMA page_count").await?;
        let freelist_pages = pragma("PRAGMA freelist_count").await?;
        drop(guard);
        let file_len = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
        let (main_bytes, wal_bytes) = match &self.path {
            Some(path) => {
                let mut wal = path.as_os_str().to_owned();
                wal.push("-wal");
                (file_len(path), file_len(Path::new(&wal)))
            }
            None => (page_size * page_count, 0),
        };
        Ok(DbStats {
            main_bytes,
            wal_bytes,
            page_size,
            page_count,
            freelist_pages,
        })
    }

    /// Main file plus WAL after a checkpoint: the database's size on disk, for benchmarks.
    pub async fn file_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.db_stats().await?.file_bytes())
    }

    /// Close every connection (waiting for the ones in use). Dropping the store also closes
    /// them, but without waiting.
    pub async fn close(&self) {
        if let Some(reader) = &self.reader {
            reader.close().await;
        }
        if let Some(conn) = self.writer.lock().await.take() {
            // Best effort: there is nobody to tell.
            let _ = conn.close().await;
        }
    }

    /// Run a statement on the writer.
    async fn write(
        &self,
        query: Query<'_, Sqlite, SqliteArguments>,
    ) -> Result<SqliteQueryResult, sqlx::Error> {
        let mut guard = self.writer.lock().await;
        let conn = guard.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        query.execute(conn).await
    }

    /// Fetch one row with the writer (reading what it wrote, under its lock).
    async fn write_fetch_one(
        &self,
        query: Query<'_, Sqlite, SqliteArguments>,
    ) -> Result<SqliteRow, sqlx::Error> {
        let mut guard = self.writer.lock().await;
        let conn = guard.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        query.fetch_one(conn).await
    }

    /// Fetch rows with a reader.
    async fn read_all(
        &self,
        query: Query<'_, Sqlite, SqliteArguments>,
    ) -> Result<Vec<SqliteRow>, sqlx::Error> {
        match &self.reader {
            Some(pool) => query.fetch_all(pool).await,
            None => {
                let mut guard = self.writer.lock().await;
                let conn = guard.as_mut().ok_or(sqlx::Error::PoolClosed)?;
                query.fetch_all(conn).await
            }
        }
    }

    /// Fetch at most one row with a reader.
    async fn read_optional(
        &self,
        query: Query<'_, Sqlite, SqliteArguments>,
    ) -> Result<Option<SqliteRow>, sqlx::Error> {
        match &self.reader {
            Some(pool) => query.fetch_optional(pool).await,
            None => {
                let mut guard = self.writer.lock().await;
                let conn = guard.as_mut().ok_or(sqlx::Error::PoolClosed)?;
                query.fetch_optional(conn).await
            }
        }
    }

    async fn create_now(&self, run: RunRecord) -> Result<(), StoreError> {
        let id = run.id;
        let query = sqlx::query(
            "INSERT INTO runs (id, workflow, status, parent, input, source, created_at_us, updated_at_us) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(id.0)
        .bind(run.workflow)
        .bind(status_str(run.status))
        .bind(run.parent.map(|p| p.0))
        .bind(input_json(id, &run.input)?)
        .bind(run.source)
        .bind(to_i64("created_at_us", run.created_at_us)?)
        .bind(to_i64("updated_at_us", run.updated_at_us)?);
        let result = self.write(query).await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::AlreadyExists(id))
            }
            Err(e) => Err(err("create_run", Some(id), e)),
        }
    }

    /// Whether the run exists, and the seq its log expects next.
    async fn next_seq(&self, run: RunId) -> Result<(bool, u64), StoreError> {
        let query = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE id = ?1), \
             COALESCE((SELECT last_seq + 1 FROM journal WHERE run_id = ?1 \
                       ORDER BY first_seq DESC LIMIT 1), 0)",
        )
        .bind(run.0);
        let row = self
            .write_fetch_one(query)
            .await
            .map_err(|e| err("append (reading the log's end)", Some(run), e))?;
        let exists: bool = row.try_get(0).map_err(|e| err("append", Some(run), e))?;
        let next: i64 = row.try_get(1).map_err(|e| err("append", Some(run), e))?;
        Ok((exists, to_u64("next seq", next)?))
    }

    async fn append_now(&self, run: RunId, events: Vec<Event>) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            let (exists, next) = self.next_seq(run).await?;
            return append_verdict(run, exists, next, &[]);
        };
        let (first, last) = (first.seq, last.seq);
        if crate::check_order(run, first, &events).is_err() {
            // A gap inside the batch; report the first offender, which may be the first event.
            let (exists, next) = self.next_seq(run).await?;
            return append_verdict(run, exists, next, &events);
        }
        let body = encode(run, &events, self.format)?;
        let (first_i, last_i) = (to_i64("seq", first)?, to_i64("seq", last)?);
        // One statement, so one atomic step under SQLite's write lock: insert only if the run
        // exists and the batch starts where the log ends. The primary key backs it up.
        let query = sqlx::query(
            "INSERT INTO journal (run_id, first_seq, last_seq, body) \
             SELECT ?1, ?2, ?3, ?4 \
             WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?1) \
               AND ?2 = COALESCE((SELECT last_seq + 1 FROM journal WHERE run_id = ?1 \
                                  ORDER BY first_seq DESC LIMIT 1), 0)",
        )
        .bind(run.0)
        .bind(first_i)
        .bind(last_i)
        .bind(body);
        match self.write(query).await {
            Ok(done) if done.rows_affected() == 1 => Ok(()),
            Ok(_) => {
                let (exists, next) = self.next_seq(run).await?;
                append_verdict(run, exists, next, &events)?;
                // Only a deleted-and-recreated run could get here; refuse rather than loop.
                Err(StoreError::Backend(format!(
                    "sqlite: append of run {run}: the log changed during the append; try again"
                )))
            }
            Err(sqlx::Error::Database(e))
                if e.is_unique_violation() || e.is_foreign_key_violation() =>
            {
                let (exists, next) = self.next_seq(run).await?;
                append_verdict(run, exists, next, &events)?;
                Err(StoreError::OutOfOrder {
                    run,
                    expected: next,
                    found: first,
                })
            }
            Err(e) => Err(err("append", Some(run), e)),
        }
    }

    async fn set_status_now(&self, run: RunId, status: RunStatus) -> Result<(), StoreError> {
        let query = sqlx::query(
            "UPDATE runs SET status = ?2, updated_at_us = MAX(updated_at_us, ?3) WHERE id = ?1",
        )
        .bind(run.0)
        .bind(status_str(status))
        .bind(clamp_i64(now_us()));
        let done = self
            .write(query)
            .await
            .map_err(|e| err("set_status", Some(run), e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(run));
        }
        Ok(())
    }

    async fn run_now(&self, run: RunId) -> Result<RunRecord, StoreError> {
        let query = sqlx::query(
            "SELECT id, workflow, status, parent, input, source, created_at_us, updated_at_us \
             FROM runs WHERE id = ?1",
        )
        .bind(run.0);
        let row = self
            .read_optional(query)
            .await
            .map_err(|e| err("run", Some(run), e))?;
        match row {
            Some(row) => record(&row),
            None => Err(StoreError::NotFound(run)),
        }
    }

    async fn events_now(&self, run: RunId, from: u64) -> Result<Vec<Event>, StoreError> {
        let from_i = clamp_i64(from);
        // The rows from the one holding `from` on: the last row starting at or before it.
        let query = sqlx::query(
            "SELECT first_seq, body FROM journal \
             WHERE run_id = ?1 AND last_seq >= ?2 AND first_seq >= COALESCE( \
                 (SELECT MAX(first_seq) FROM journal WHERE run_id = ?1 AND first_seq <= ?2), 0) \
             ORDER BY first_seq",
        )
        .bind(run.0)
        .bind(from_i);
        let rows = self
            .read_all(query)
            .await
            .map_err(|e| err("events", Some(run), e))?;
        if rows.is_empty() {
            let query = sqlx::query("SELECT 1 FROM runs WHERE id = ?1").bind(run.0);
            let exists = self
                .read_optional(query)
                .await
                .map_err(|e| err("events", Some(run), e))?
                .is_some();
            return if exists {
                Ok(Vec::new())
            } else {
                Err(StoreError::NotFound(run))
            };
        }
        let mut events = Vec::new();
        for row in rows {
            let first: i64 = row.try_get(0).map_err(|e| err("events", Some(run), e))?;
            let body: &[u8] = row.try_get(1).map_err(|e| err("events", Some(run), e))?;
            decode_into(run, first, body, from, &mut events)?;
        }
        Ok(events)
    }

    async fn runs_now(&self, status: Option<RunStatus>) -> Result<Vec<RunRecord>, StoreError> {
        let query = sqlx::query(
            "SELECT id, workflow, status, parent, input, source, created_at_us, updated_at_us \
             FROM runs WHERE ?1 IS NULL OR status = ?1 \
             ORDER BY created_at_us DESC, id DESC",
        )
        .bind(status.map(status_str));
        let rows = self
            .read_all(query)
            .await
            .map_err(|e| err("runs", None, e))?;
        rows.iter().map(record).collect()
    }

    async fn prune_now(&self, before_us: u64, statuses: Vec<RunStatus>) -> Result<u64, StoreError> {
        if statuses.is_empty() {
            return Ok(0);
        }
        let names: Vec<&str> = statuses.into_iter().map(status_str).collect();
        let names = serde_json::to_string(&names)
            .map_err(|e| StoreError::Backend(format!("sqlite: prune: {e}")))?;
        // Journal rows go with their run (ON DELETE CASCADE).
        let query = sqlx::query(
            "DELETE FROM runs WHERE updated_at_us < ?1 \
             AND status IN (SELECT value FROM json_each(?2))",
        )
        .bind(clamp_i64(before_us))
        .bind(names);
        let done = self.write(query).await.map_err(|e| err("prune", None, e))?;
        Ok(done.rows_affected())
    }
}

/// Apply the embedded migrations. Two processes opening a new file at once may both try;
/// the loser sees the winner's tables on a second attempt.
async fn migrate(conn: &mut SqliteConnection, shown: &str) -> Result<(), StoreError> {
    let mut attempt = 0;
    loop {
        match MIGRATOR.run(&mut *conn).await {
            Ok(()) => return Ok(()),
            // The loser waited on the winner's lock (busy timeout), so a retry finds it done.
            Err(_) if attempt < 3 => attempt += 1,
            Err(e) => {
                return Err(StoreError::Backend(format!(
                    "sqlite: migrating {shown}: {e}"
                )));
            }
        }
    }
}

fn record(row: &SqliteRow) -> Result<RunRecord, StoreError> {
    let get_err = |e| err("reading a run", None, e);
    let id = RunId(row.try_get::<Uuid, _>(0).map_err(get_err)?);
    let status: &str = row.try_get(2).map_err(get_err)?;
    let input: &str = row.try_get(4).map_err(get_err)?;
    let created: i64 = row.try_get(6).map_err(get_err)?;
    let updated: i64 = row.try_get(7).map_err(get_err)?;
    Ok(RunRecord {
        id,
        workflow: row.try_get(1).map_err(get_err)?,
        status: parse_status(id, status)?,
        parent: row
            .try_get::<Option<Uuid>, _>(3)
            .map_err(get_err)?
            .map(RunId),
        input: parse_input(id, input)?,
        source: row.try_get(5).map_err(get_err)?,
        created_at_us: to_u64("created_at_us", created)?,
        updated_at_us: to_u64("updated_at_us", updated)?,
    })
}

impl RunStore for SqliteStore {
    fn request_halt(
        &self,
        run: Option<RunId>,
        reason: String,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.write(
                sqlx::query("INSERT INTO halts (run_id, at_us, reason) VALUES (?1, ?2, ?3)")
                    .bind(run.map(|r| r.0))
                    .bind(crate::now_us() as i64)
                    .bind(reason),
            )
            .await
            .map_err(|e| err("halts", run, e))?;
            Ok(())
        })
    }

    fn halts_since(
        &self,
        since_us: u64,
    ) -> BoxFuture<'_, Result<Vec<baton_core::HaltRequest>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .read_all(
                    sqlx::query(
                        "SELECT run_id, at_us, reason FROM halts WHERE at_us >= ?1 ORDER BY id",
                    )
                    .bind(since_us as i64),
                )
                .await
                .map_err(|e| err("halts", None, e))?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let run: Option<uuid::Uuid> = sqlx::Row::try_get(r, 0).ok()?;
                    let at: i64 = sqlx::Row::try_get(r, 1).ok()?;
                    let reason: String = sqlx::Row::try_get(r, 2).ok()?;
                    Some(baton_core::HaltRequest {
                        run: run.map(RunId),
                        at_us: at.max(0) as u64,
                        reason,
                    })
                })
                .collect())
        })
    }

    fn cache_get(
        &self,
        key: String,
    ) -> BoxFuture<'_, Result<Option<serde_json::Value>, StoreError>> {
        Box::pin(async move {
            let row = self
                .read_optional(
                    sqlx::query("SELECT value FROM response_cache WHERE key = ?1").bind(key),
                )
                .await
                .map_err(|e| err("cache", None, e))?;
            Ok(row.and_then(|r| {
                let text: String = sqlx::Row::try_get(&r, 0).ok()?;
                serde_json::from_str(&text).ok()
            }))
        })
    }

    fn cache_put(
        &self,
        key: String,
        value: serde_json::Value,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.write(
                sqlx::query(
                    "INSERT OR REPLACE INTO response_cache (key, value, created_at_us) VALUES (?1, ?2, ?3)",
                )
                .bind(key)
                .bind(value.to_string())
                .bind(crate::now_us() as i64),
            )
            .await
            .map_err(|e| err("cache", None, e))?;
            Ok(())
        })
    }

    fn create_run(&self, run: RunRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.create_now(run))
    }

    fn append(&self, run: RunId, events: Vec<Event>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.append_now(run, events))
    }

    fn set_status(&self, run: RunId, status: RunStatus) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.set_status_now(run, status))
    }

    fn run(&self, run: RunId) -> BoxFuture<'_, Result<RunRecord, StoreError>> {
        Box::pin(self.run_now(run))
    }

    fn events(&self, run: RunId, from: u64) -> BoxFuture<'_, Result<Vec<Event>, StoreError>> {
        Box::pin(self.events_now(run, from))
    }

    fn runs(&self, status: Option<RunStatus>) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        Box::pin(self.runs_now(status))
    }

    fn prune(
        &self,
        before_us: u64,
        statuses: Vec<RunStatus>,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.prune_now(before_us, statuses))
    }
}
