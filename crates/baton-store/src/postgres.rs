//! The PostgreSQL store.

use crate::codec::Format;
use crate::now_us;
use crate::sql::{
    append_verdict, backend, clamp_i64, decode_into, encode, input_json, parse_input, parse_status,
    status_str, to_i64, to_u64,
};
use baton_core::{BoxFuture, Event, RunId, RunRecord, RunStatus, RunStore, StoreError};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};
use std::time::Duration;
use uuid::Uuid;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Connections in the pool.
const CONNECTIONS: u32 = 8;

/// How a [`PostgresStore`] trades speed for durability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PostgresOptions {
    /// `true` (the default): the server's own setting, normally `synchronous_commit=on`: an
    /// append returns once the server has flushed its WAL, so it survives anything but the loss
    /// of the server's disk, at the cost of one flush per append. `false`: the store's sessions
    /// set `synchronous_commit=off`: an append returns before the flush. A committed append
    /// still survives baton being killed (the server has it), but a crash of the server or its
    /// machine may lose the last fraction of a second of appends (never a partial one): the
    /// guarantee of [`SqliteOptions::default`](crate::SqliteOptions).
    pub synchronous_commit: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            synchronous_commit: true,
        }
    }
}

/// A [`RunStore`] in a PostgreSQL database.
///
/// [`connect`](Self::connect) opens a pool and migrates the schema (idempotently, under
/// sqlx's advisory lock, so concurrent processes may connect at once). The schema is the
/// SQLite store's: `runs`, and `journal` with one row per appended batch in the compact,
/// versioned encoding of [`codec`](crate::codec). An append is one statement that inserts
/// only if the batch continues the log; two concurrent writers of the same `seq` collide on
/// the primary key `(run_id, first_seq)`, and the loser gets [`StoreError::OutOfOrder`].
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    format: Format,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("connections", &self.pool.size())
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

fn err(context: &str, run: Option<RunId>, e: sqlx::Error) -> StoreError {
    backend("postgres", context, run, e)
}

impl PostgresStore {
    /// Connect to `url` (`postgres://user@host:port/database`) and bring the schema up to date,
    /// with [`PostgresOptions::default`]: commits as durable as the server is configured.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connect to `url` with `options` and bring the schema up to date.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let context = || format!("connecting to {}", redact(url));
        let mut connect: PgConnectOptions = url
            .parse()
            .map_err(|e| err(&format!("parsing the URL {}", redact(url)), None, e))?;
        connect = connect.application_name("baton");
        if !options.synchronous_commit {
            connect = connect.options([("synchronous_commit", "off")]);
        }
        // One plain connection first: it fails at once with the real reason (the pool would
        // retry until its acquire timeout), and it runs the migrations.
        let mut conn = PgConnection::connect_with(&connect)
            .await
            .map_err(|e| err(&context(), None, e))?;
        MIGRATOR.run(&mut conn).await.map_err(|e| {
            StoreError::Backend(format!("postgres: migrating {}: {e}", redact(url)))
        })?;
        // Best effort: the pool does not need this connection.
        let _ = conn.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .test_before_acquire(false)
            .connect_with(connect)
            .await
            .map_err(|e| err(&context(), None, e))?;
        Ok(PostgresStore {
            pool,
            format: Format::default(),
        })
    }

    /// Write journal bodies in `format` from now on (the default is the compact
    /// [`Format::MessagePack`]); bodies of every format are always read.
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Bytes the store's tables occupy, indexes and TOAST included (for benchmarks).
    pub async fn table_bytes(&self) -> Result<u64, StoreError> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT pg_total_relation_size('runs') + pg_total_relation_size('journal')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| err("table_bytes", None, e))?;
        to_u64("table size", bytes)
    }

    /// Close every connection (waiting for the ones in use).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn create_now(&self, run: RunRecord) -> Result<(), StoreError> {
        let id = run.id;
        let result = sqlx::query(
            "INSERT INTO runs (id, workflow, status, parent, input, source, created_at_us, updated_at_us) \
             VALUES ($1, $2, $3, $4, $5::json, $6, $7, $8)",
        )
        .bind(id.0)
        .bind(run.workflow)
        .bind(status_str(run.status))
        .bind(run.parent.map(|p| p.0))
        .bind(input_json(id, &run.input)?)
        .bind(run.source)
        .bind(to_i64("created_at_us", run.created_at_us)?)
        .bind(to_i64("updated_at_us", run.updated_at_us)?)
        .execute(&self.pool)
        .await;
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
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE id = $1), \
             COALESCE((SELECT last_seq + 1 FROM journal WHERE run_id = $1 \
                       ORDER BY first_seq DESC LIMIT 1), 0)::bigint",
        )
        .bind(run.0)
        .fetch_one(&self.pool)
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
        // Inserts only if the run exists and the batch starts where the log ends (as of the
        // statement's snapshot). Two writers that both saw the same end insert the same
        // (run_id, first_seq): the primary key lets exactly one of them commit.
        let inserted = sqlx::query(
            "INSERT INTO journal (run_id, first_seq, last_seq, body) \
             SELECT $1, $2, $3, $4 \
             WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1) \
               AND $2 = COALESCE((SELECT last_seq + 1 FROM journal WHERE run_id = $1 \
                                  ORDER BY first_seq DESC LIMIT 1), 0)",
        )
        .bind(run.0)
        .bind(first_i)
        .bind(last_i)
        .bind(body)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(done) if done.rows_affected() == 1 => Ok(()),
            Ok(_) => {
                let (exists, next) = self.next_seq(run).await?;
                append_verdict(run, exists, next, &events)?;
                Err(StoreError::Backend(format!(
                    "postgres: append of run {run}: the log changed during the append; try again"
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
        let done = sqlx::query(
            "UPDATE runs SET status = $2, updated_at_us = GREATEST(updated_at_us, $3) WHERE id = $1",
        )
        .bind(run.0)
        .bind(status_str(status))
        .bind(clamp_i64(now_us()))
        .execute(&self.pool)
        .await
        .map_err(|e| err("set_status", Some(run), e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(run));
        }
        Ok(())
    }

    async fn run_now(&self, run: RunId) -> Result<RunRecord, StoreError> {
        let row = sqlx::query(
            "SELECT id, workflow, status, parent, input::text, source, created_at_us, updated_at_us \
             FROM runs WHERE id = $1",
        )
        .bind(run.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| err("run", Some(run), e))?;
        match row {
            Some(row) => record(&row),
            None => Err(StoreError::NotFound(run)),
        }
    }

    async fn events_now(&self, run: RunId, from: u64) -> Result<Vec<Event>, StoreError> {
        // The rows from the one holding `from` on: the last row starting at or before it.
        let rows = sqlx::query(
            "SELECT first_seq, body FROM journal \
             WHERE run_id = $1 AND last_seq >= $2 AND first_seq >= COALESCE( \
                 (SELECT MAX(first_seq) FROM journal WHERE run_id = $1 AND first_seq <= $2), 0) \
             ORDER BY first_seq",
        )
        .bind(run.0)
        .bind(clamp_i64(from))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| err("events", Some(run), e))?;
        if rows.is_empty() {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM runs WHERE id = $1)")
                    .bind(run.0)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| err("events", Some(run), e))?;
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
        let rows = sqlx::query(
            "SELECT id, workflow, status, parent, input::text, source, created_at_us, updated_at_us \
             FROM runs WHERE $1::text IS NULL OR status = $1 \
             ORDER BY created_at_us DESC, id DESC",
        )
        .bind(status.map(status_str))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| err("runs", None, e))?;
        rows.iter().map(record).collect()
    }

    async fn prune_now(&self, before_us: u64, statuses: Vec<RunStatus>) -> Result<u64, StoreError> {
        if statuses.is_empty() {
            return Ok(0);
        }
        let names: Vec<String> = statuses
            .into_iter()
            .map(|s| status_str(s).to_owned())
            .collect();
        // Journal rows go with their run (ON DELETE CASCADE).
        let done = sqlx::query("DELETE FROM runs WHERE updated_at_us < $1 AND status = ANY($2)")
            .bind(clamp_i64(before_us))
            .bind(names)
            .execute(&self.pool)
            .await
            .map_err(|e| err("prune", None, e))?;
        Ok(done.rows_affected())
    }
}

/// A connection URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn record(row: &PgRow) -> Result<RunRecord, StoreError> {
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

impl RunStore for PostgresStore {
    fn request_halt(
        &self,
        run: Option<RunId>,
        reason: String,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("INSERT INTO halts (run_id, at_us, reason) VALUES ($1, $2, $3)")
                .bind(run.map(|r| r.0))
                .bind(clamp_i64(crate::now_us()))
                .bind(reason)
                .execute(&self.pool)
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
            let rows = sqlx::query(
                "SELECT run_id, at_us, reason FROM halts WHERE at_us >= $1 ORDER BY id",
            )
            .bind(clamp_i64(since_us))
            .fetch_all(&self.pool)
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
            let row = sqlx::query("SELECT value FROM response_cache WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
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
            sqlx::query(
                "INSERT INTO response_cache (key, value, created_at_us) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            )
            .bind(key)
            .bind(value.to_string())
            .bind(clamp_i64(crate::now_us()))
            .execute(&self.pool)
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

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres:///db"), "postgres:///db");
    }
}
