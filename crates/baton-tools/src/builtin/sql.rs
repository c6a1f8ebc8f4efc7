//! `sql_query`: read-only SQL against a SQLite file or a PostgreSQL database.
//!
//! Read-only is enforced by the database engine, never by looking at the SQL text:
//!
//! - SQLite: the file is opened with `SQLITE_OPEN_READONLY` and `PRAGMA query_only = ON`, and
//!   the connection's limit on attached databases is set to 0, so `ATTACH` (which would let a
//!   query read any other database file the process can open) fails in the engine, as does
//!   `VACUUM INTO` (which attaches its target). Strings and blobs are limited to 16 MiB. A
//!   progress handler interrupts a query that runs past the time limit.
//! - PostgreSQL: each call runs in a `BEGIN READ ONLY` transaction that is always rolled back,
//!   with `SET LOCAL statement_timeout`. A read-only transaction does not stop what a
//!   superuser can do without writing to tables (`COPY … TO PROGRAM`, `pg_read_file`), so the
//!   tool refuses to run as a superuser or a member of `pg_execute_server_program`,
//!   `pg_read_server_files` or `pg_write_server_files` unless [`SqlConfig::allow_superuser`] is
//!   set. Connect as a role with `SELECT` on what the agent may read, and nothing more.
//!
//! Each call opens its own connection and closes it afterwards, so nothing a query leaves in a
//! session (an advisory lock, a setting) outlives the call.

use super::{chain, failed, invalid};
use crate::secrets::{SecretResolver, SecretStore, redact};
use baton_core::{SideEffect, Tool, ToolContext, ToolError, ToolSpec};
use futures::TryStreamExt;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow, PgTypeKind, PgValueFormat};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{
    AssertSqlSafe, Column, Connection, Decode, Executor, Row, SqlSafeStr, TypeInfo, ValueRef,
};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// The tool's name.
pub const SQL_QUERY: &str = "sql_query";

/// Largest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

/// Configuration of [`SqlQueryTool`].
#[derive(Clone)]
pub struct SqlConfig {
    /// `postgres://…` / `postgresql://…`, `sqlite:…`, or the path of a SQLite file. May contain
    /// `{{secret.NAME}}` placeholders (a password), resolved on the first call.
    pub url: String,
    /// Most rows returned (default 500); more are cut and the result flagged `truncated`.
    pub max_rows: usize,
    /// Time limit for one query (default 30 s).
    pub timeout: Duration,
    /// Allow a PostgreSQL role that can reach the server's files or programs (default false).
    pub allow_superuser: bool,
}

impl SqlConfig {
    /// The default limits for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        SqlConfig {
            url: url.into(),
            max_rows: 500,
            timeout: Duration::from_secs(30),
            allow_superuser: false,
        }
    }
}

impl fmt::Debug for SqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlConfig")
            .field("url", &redact_url_password(&self.url))
            .field("max_rows", &self.max_rows)
            .field("timeout", &self.timeout)
            .field("allow_superuser", &self.allow_superuser)
            .finish()
    }
}

/// `url` with the password part of `user:password@` replaced by `***`.
pub fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
}

fn kind_of(url: &str) -> Kind {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Kind::Postgres
    } else {
        Kind::Sqlite
    }
}

enum Backend {
    Sqlite(Box<SqliteConnectOptions>),
    Postgres(Box<PgConnectOptions>),
}

/// Run read-only SQL.
///
/// Arguments: `{"query": "SELECT …", "params": [1, "a", null]}` (`params` optional; bound to
/// `?`/`?1` in SQLite and `$1`, `$2` … in PostgreSQL, as bigint, double precision, boolean,
/// text or NULL: cast in the query where another type is needed, e.g. `$1::date`).
///
/// Result: `{"columns": ["id", "name"], "rows": [[1, "a"], …], "row_count": n, "truncated":
/// bool}`. Values: integers and floats as numbers, booleans, text, `null`; PostgreSQL `numeric`
/// as a string (to keep its precision), dates and times as ISO 8601 strings, `json`/`jsonb` as
/// JSON, `uuid` as a string, `bytea`/BLOB as `\x`-prefixed hex, arrays as JSON arrays; other
/// PostgreSQL types are an error that asks for a cast to `text`.
pub struct SqlQueryTool {
    spec: ToolSpec,
    config: SqlConfig,
    kind: Kind,
    backend: OnceCell<Backend>,
    secrets: Option<Arc<dyn SecretStore>>,
}

impl fmt::Debug for SqlQueryTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlQueryTool")
            .field("config", &self.config)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl SqlQueryTool {
    /// A tool for `config`. Nothing is opened until the first call.
    pub fn new(config: SqlConfig) -> Result<Self, String> {
        if config.url.trim().is_empty() {
            return Err("the SQL database URL is empty".into());
        }
        if config.max_rows == 0 {
            return Err("max_rows must be at least 1".into());
        }
        let kind = kind_of(&config.url);
        let engine = match kind {
            Kind::Sqlite => "SQLite",
            Kind::Postgres => "PostgreSQL",
        };
        let spec = ToolSpec::new(
            SQL_QUERY,
            format!(
                "Run one read-only SQL query against the {engine} database and return its rows \
                 (at most {}). Writes are refused by the database. Use parameters for values: {}.",
                config.max_rows,
                match kind {
                    Kind::Sqlite => "`?` placeholders",
                    Kind::Postgres => "`$1`, `$2`, … placeholders",
                }
            ),
            json!({
                "type": "object",
                "properties": {
                    "query": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_QUERY_BYTES,
                        "description": "One SQL statement, e.g. SELECT."
                    },
                    "params": {
                        "type": "array",
                        "maxItems": 100,
                        "items": {"type": ["string", "number", "integer", "boolean", "null"]},
                        "description": "Values for the query's placeholders, in order."
                    }
                },
                "required": ["query"],
                "additionalProperties": false
            }),
        )
        .with_effect(SideEffect::ReadOnly);
        Ok(SqlQueryTool {
            spec,
            config,
            kind,
            backend: OnceCell::new(),
            secrets: None,
        })
    }

    /// The same tool resolving `{{secret.NAME}}` placeholders in the URL from `store`.
    pub fn with_secrets(mut self, store: Arc<dyn SecretStore>) -> Self {
        self.secrets = Some(store);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &SqlConfig {
        &self.config
    }

    async fn backend(&self) -> Result<&Backend, String> {
        self.backend
            .get_or_try_init(|| async {
                let mut resolver = SecretResolver::new(self.secrets.as_deref());
                let url = resolver
                    .resolve_str(&self.config.url)
                    .map_err(|e| format!("the database URL: {e}"))?;
                let fail = |e: sqlx::Error| {
                    redact(
                        &format!("bad database URL `{}`: {e}", redact_url_password(&url)),
                        resolver.used(),
                    )
                };
                Ok(match self.kind {
                    Kind::Postgres => {
                        Backend::Postgres(Box::new(PgConnectOptions::from_str(&url).map_err(fail)?))
                    }
                    Kind::Sqlite => {
                        let opts = if url.starts_with("sqlite:") {
                            SqliteConnectOptions::from_str(&url).map_err(fail)?
                        } else {
                            SqliteConnectOptions::new().filename(&url)
                        };
                        Backend::Sqlite(Box::new(
                            opts.read_only(true)
                                .create_if_missing(false)
                                .pragma("query_only", "ON")
                                .busy_timeout(self.config.timeout),
                        ))
                    }
                })
            })
            .await
    }

    async fn run(&self, query: &str, params: &[Value]) -> Result<Value, String> {
        let max = self.config.max_rows;
        match self.backend().await? {
            Backend::Sqlite(opts) => {
                run_sqlite(opts, query, params, max, self.config.timeout).await
            }
            Backend::Postgres(opts) => {
                run_postgres(
                    opts,
                    query,
                    params,
                    max,
                    self.config.timeout,
                    self.config.allow_superuser,
                )
                .await
            }
        }
    }
}

impl Tool for SqlQueryTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Value, _ctx: ToolContext) -> Result<Value, ToolError> {
        let name = &self.spec.name;
        let Some(query) = args.get("query").and_then(Value::as_str) else {
            return Err(invalid(name, "`query` must be a string"));
        };
        if query.len() > MAX_QUERY_BYTES {
            return Err(invalid(
                name,
                format!(
                    "`query` is {} bytes; at most {MAX_QUERY_BYTES}",
                    query.len()
                ),
            ));
        }
        let params = match args.get("params") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                if let Some((i, _)) = items
                    .iter()
                    .enumerate()
                    .find(|(_, v)| v.is_array() || v.is_object())
                {
                    return Err(invalid(
                        name,
                        format!("`params[{i}]` must be a string, number, boolean or null"),
                    ));
                }
                items.clone()
            }
            Some(_) => return Err(invalid(name, "`params` must be an array")),
        };
        // Slack over the engine's own limit, so that its clearer error normally wins.
        let limit = self.config.timeout + Duration::from_secs(2);
        match tokio::time::timeout(limit, self.run(query, &params)).await {
            Ok(result) => result.map_err(|m| failed(name, m)),
            Err(_) => Err(ToolError::Timeout {
                tool: name.clone(),
                after_ms: u64::try_from(self.config.timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }
}

/// A database error as a message for the caller.
fn db_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            let mut msg = format!("the database refused the query: {}", db.message());
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(detail) = pg.detail() {
                    msg.push_str(&format!(" ({detail})"));
                }
                if let Some(hint) = pg.hint() {
                    msg.push_str(&format!(" hint: {hint}"));
                }
            }
            let lower = msg.to_ascii_lowercase();
            if lower.contains("read-only")
                || lower.contains("readonly")
                || lower.contains("query_only")
            {
                msg.push_str(" — sql_query is read-only");
            } else if lower.contains("too many attached databases") {
                msg.push_str(" — ATTACH is not allowed in sql_query");
            }
            msg
        }
        sqlx::Error::PoolTimedOut => "timed out waiting for a database connection".to_string(),
        other => format!("database error: {other}"),
    }
}

/// A connection error as a message for the caller.
fn connect_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        sqlx::Error::PoolTimedOut => "timed out waiting for a database connection".to_string(),
        other => chain(other),
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite

/// Largest string or blob a SQLite query may build, in bytes (SQLite's own default is 1 GB).
const SQLITE_MAX_VALUE_BYTES: i32 = 16 * 1024 * 1024;

/// No attached databases (so no `ATTACH`, nor `VACUUM INTO`, which attaches its target), and
/// no string or blob larger than [`SQLITE_MAX_VALUE_BYTES`].
#[allow(unsafe_code)]
fn apply_limits(handle: &mut sqlx::sqlite::LockedSqliteHandle<'_>) {
    let raw = handle.as_raw_handle();
    // SAFETY: `raw` is the live connection handle, locked away from sqlx's worker thread for
    // as long as `handle` is borrowed; `sqlite3_limit` only reads and lowers integer limits on
    // it and is safe to call on any open connection.
    unsafe {
        libsqlite3_sys::sqlite3_limit(raw.as_ptr(), libsqlite3_sys::SQLITE_LIMIT_ATTACHED, 0);
        libsqlite3_sys::sqlite3_limit(
            raw.as_ptr(),
            libsqlite3_sys::SQLITE_LIMIT_LENGTH,
            SQLITE_MAX_VALUE_BYTES,
        );
    }
}

async fn run_sqlite(
    opts: &SqliteConnectOptions,
    query: &str,
    params: &[Value],
    max_rows: usize,
    timeout: Duration,
) -> Result<Value, String> {
    let mut conn = SqliteConnection::connect_with(opts).await.map_err(|e| {
        format!(
            "cannot open the SQLite database `{}`: {}",
            opts.get_filename().display(),
            connect_error(&e)
        )
    })?;
    {
        let mut handle = conn.lock_handle().await.map_err(|e| db_error(&e))?;
        apply_limits(&mut handle);
        let deadline = Instant::now() + timeout;
        handle.set_progress_handler(10_000, move || Instant::now() < deadline);
    }
    let result = sqlite_query(&mut conn, query, params, max_rows).await;
    let _ = conn.close().await;
    result.map_err(|e| match e {
        QueryError::Db(e) => {
            let msg = db_error(&e);
            if msg.contains("interrupted") {
                format!(
                    "the query ran longer than {} ms and was interrupted",
                    timeout.as_millis()
                )
            } else {
                msg
            }
        }
        QueryError::Decode(m) => m,
    })
}

/// Why a query produced no result.
enum QueryError {
    /// The database said no.
    Db(sqlx::Error),
    /// A value could not be turned into JSON.
    Decode(String),
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        QueryError::Db(e)
    }
}

fn cannot_return(column: &str, type_name: &str, why: impl fmt::Display) -> QueryError {
    QueryError::Decode(format!(
        "cannot return column `{column}` ({type_name}): {why}; cast it in the query, e.g. `{column}::text`"
    ))
}

/// Bind the parameters, fetch at most `max_rows` rows, name the columns and turn each cell into
/// JSON with `$cell`: the same steps for every dialect, whose row and cell types differ.
macro_rules! query_json {
    ($conn:ident, $query:ident, $params:ident, $max_rows:ident, $row:ty, $cell:path) => {{
        let mut q = sqlx::query(AssertSqlSafe($query.to_string())).persistent(false);
        for p in $params {
            q = match p {
                Value::Null => q.bind(None::<String>),
                Value::Bool(b) => q.bind(*b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => q.bind(i),
                    None => q.bind(n.as_f64().unwrap_or(f64::NAN)),
                },
                Value::String(s) => q.bind(s.clone()),
                other => q.bind(other.to_string()),
            };
        }
        let mut rows: Vec<$row> = Vec::new();
        let mut truncated = false;
        {
            let mut stream = q.fetch(&mut *$conn);
            while let Some(row) = stream.try_next().await? {
                if rows.len() == $max_rows {
                    truncated = true;
                    break;
                }
                rows.push(row);
            }
        }
        let columns: Vec<String> = match rows.first() {
            Some(row) => row.columns().iter().map(|c| c.name().to_string()).collect(),
            None => match $conn
                .prepare(AssertSqlSafe($query.to_string()).into_sql_str())
                .await
            {
                Ok(stmt) => sqlx::Statement::columns(&stmt)
                    .iter()
                    .map(|c| c.name().to_string())
                    .collect(),
                Err(_) => Vec::new(),
            },
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut cells = Vec::with_capacity(row.len());
            for i in 0..row.len() {
                cells.push($cell(row, i)?);
            }
            out.push(Value::Array(cells));
        }
        Ok(json!({
            "columns": columns,
            "rows": out,
            "row_count": out.len(),
            "truncated": truncated,
        }))
    }};
}

async fn sqlite_query(
    conn: &mut SqliteConnection,
    query: &str,
    params: &[Value],
    max_rows: usize,
) -> Result<Value, QueryError> {
    query_json!(conn, query, params, max_rows, SqliteRow, sqlite_cell)
}

fn sqlite_cell(row: &SqliteRow, i: usize) -> Result<Value, QueryError> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let type_name = raw.type_info().name().to_string();
    let column = row.column(i).name().to_string();
    let decode_err = |e: sqlx::error::BoxDynError| cannot_return(&column, &type_name, e);
    Ok(match type_name.as_str() {
        "INTEGER" | "BOOLEAN" => {
            json!(<i64 as Decode<sqlx::Sqlite>>::decode(raw).map_err(decode_err)?)
        }
        "REAL" => float_json(<f64 as Decode<sqlx::Sqlite>>::decode(raw).map_err(decode_err)?),
        "BLOB" => {
            let bytes = <Vec<u8> as Decode<sqlx::Sqlite>>::decode(raw).map_err(decode_err)?;
            json!(hex(&bytes))
        }
        _ => json!(<String as Decode<sqlx::Sqlite>>::decode(raw).map_err(decode_err)?),
    })
}

fn float_json(f: f64) -> Value {
    if f.is_finite() {
        json!(f)
    } else if f.is_nan() {
        json!("NaN")
    } else if f > 0.0 {
        json!("Infinity")
    } else {
        json!("-Infinity")
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("\\x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

async fn run_postgres(
    opts: &PgConnectOptions,
    query: &str,
    params: &[Value],
    max_rows: usize,
    timeout: Duration,
    allow_superuser: bool,
) -> Result<Value, String> {
    // A connection of its own for every call, closed afterwards: nothing a query leaves in the
    // session (advisory locks, LISTEN, settings) outlives it.
    let mut conn = PgConnection::connect_with(opts)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL: {}", connect_error(&e)))?;
    let result = postgres_call(&mut conn, query, params, max_rows, timeout, allow_superuser).await;
    let _ = conn.close().await;
    result
}

async fn postgres_call(
    conn: &mut PgConnection,
    query: &str,
    params: &[Value],
    max_rows: usize,
    timeout: Duration,
    allow_superuser: bool,
) -> Result<Value, String> {
    let mut tx = conn
        .begin_with("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(|e| db_error(&e))?;
    let ms = timeout.as_millis().max(1);
    tx.execute(AssertSqlSafe(format!("SET LOCAL statement_timeout = {ms}")))
        .await
        .map_err(|e| db_error(&e))?;
    // This first query also takes the transaction's snapshot, after which `SET TRANSACTION
    // READ WRITE` is refused: the transaction stays read-only whatever the query says.
    let privileged: bool = sqlx::query_scalar(
        "SELECT current_setting('is_superuser') = 'on' \
         OR pg_has_role('pg_execute_server_program', 'MEMBER') \
         OR pg_has_role('pg_read_server_files', 'MEMBER') \
         OR pg_has_role('pg_write_server_files', 'MEMBER')",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| db_error(&e))?;
    if privileged && !allow_superuser {
        let _ = tx.rollback().await;
        return Err(
            "refusing to run as a PostgreSQL superuser (or a role that can read or \
                    write server files or run programs): a read-only transaction does not stop \
                    those; connect as a role with SELECT privileges only, or set allow_superuser"
                .to_string(),
        );
    }
    let result = postgres_query(&mut tx, query, params, max_rows).await;
    let _ = tx.rollback().await;
    result.map_err(|e| match e {
        QueryError::Db(e) => {
            let msg = db_error(&e);
            if msg.contains("statement timeout") {
                format!("the query ran longer than {ms} ms and was cancelled")
            } else {
                msg
            }
        }
        QueryError::Decode(m) => m,
    })
}

async fn postgres_query(
    conn: &mut sqlx::PgConnection,
    query: &str,
    params: &[Value],
    max_rows: usize,
) -> Result<Value, QueryError> {
    query_json!(conn, query, params, max_rows, PgRow, pg_cell)
}

fn pg_cell(row: &PgRow, i: usize) -> Result<Value, QueryError> {
    let column = &row.columns()[i];
    let raw = row.try_get_raw(i)?;
    let fail = |why: String| cannot_return(column.name(), column.type_info().name(), why);
    let cell = if raw.is_null() {
        Value::Null
    } else if raw.format() == PgValueFormat::Text {
        json!(raw.as_str().map_err(|e| fail(e.to_string()))?)
    } else {
        let bytes = raw.as_bytes().map_err(|e| fail(e.to_string()))?;
        pg_binary(column.type_info(), bytes).map_err(fail)?
    };
    Ok(cell)
}

fn pg_binary(ty: &sqlx::postgres::PgTypeInfo, bytes: &[u8]) -> Result<Value, String> {
    match ty.kind() {
        PgTypeKind::Enum(_) => {
            return std::str::from_utf8(bytes)
                .map(|s| json!(s))
                .map_err(|e| e.to_string());
        }
        PgTypeKind::Domain(base) => return pg_binary(base, bytes),
        PgTypeKind::Array(_) => return pg_array(bytes),
        _ => {}
    }
    match ty.oid() {
        Some(oid) => pg_by_oid(oid.0, bytes),
        None => Err("this type has no JSON form here".into()),
    }
}

/// Big-endian readers over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated value".into());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16, String> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Result<i64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
}

fn exact(bytes: &[u8], n: usize) -> Result<(), String> {
    if bytes.len() == n {
        Ok(())
    } else {
        Err(format!("expected {n} bytes, got {}", bytes.len()))
    }
}

fn pg_by_oid(oid: u32, bytes: &[u8]) -> Result<Value, String> {
    let mut r = Reader(bytes);
    Ok(match oid {
        // bool
        16 => {
            exact(bytes, 1)?;
            json!(bytes[0] != 0)
        }
        // bytea
        17 => json!(hex(bytes)),
        // "char"
        18 => json!(String::from_utf8_lossy(bytes)),
        // int2, int4, int8, oid
        21 => {
            exact(bytes, 2)?;
            json!(r.i16()?)
        }
        23 => {
            exact(bytes, 4)?;
            json!(r.i32()?)
        }
        20 => {
            exact(bytes, 8)?;
            json!(r.i64()?)
        }
        26 => {
            exact(bytes, 4)?;
            json!(r.i32()? as u32)
        }
        // float4, float8
        700 => {
            exact(bytes, 4)?;
            float_json(f64::from(f32::from_bits(r.i32()? as u32)))
        }
        701 => {
            exact(bytes, 8)?;
            float_json(f64::from_bits(r.i64()? as u64))
        }
        // text, name, varchar, bpchar, unknown, xml, citext-like text types
        25 | 19 | 1043 | 1042 | 705 | 142 => {
            json!(std::str::from_utf8(bytes).map_err(|e| format!("invalid UTF-8: {e}"))?)
        }
        // json
        114 => serde_json::from_slice(bytes).map_err(|e| format!("invalid json: {e}"))?,
        // jsonb: a version byte, then the text
        3802 => match bytes.split_first() {
            Some((1, text)) => {
                serde_json::from_slice(text).map_err(|e| format!("invalid jsonb: {e}"))?
            }
            _ => return Err("unknown jsonb format".into()),
        },
        // uuid
        2950 => {
            let u = uuid::Uuid::from_slice(bytes).map_err(|e| e.to_string())?;
            json!(u.to_string())
        }
        // numeric
        1700 => json!(pg_numeric(bytes)?),
        // date
        1082 => {
            exact(bytes, 4)?;
            let days = r.i32()?;
            match days {
                i32::MAX => json!("infinity"),
                i32::MIN => json!("-infinity"),
                d => json!(date_string(i64::from(d) + PG_EPOCH_DAYS)),
            }
        }
        // time
        1083 => {
            exact(bytes, 8)?;
            json!(time_string(r.i64()?))
        }
        // timestamp, timestamptz
        1114 | 1184 => {
            exact(bytes, 8)?;
            let us = r.i64()?;
            match us {
                i64::MAX => json!("infinity"),
                i64::MIN => json!("-infinity"),
                us => {
                    let days = us.div_euclid(DAY_US);
                    let rest = us.rem_euclid(DAY_US);
                    let zone = if oid == 1184 { "Z" } else { "" };
                    json!(format!(
                        "{}T{}{zone}",
                        date_string(days + PG_EPOCH_DAYS),
                        time_string(rest)
                    ))
                }
            }
        }
        // void (e.g. SELECT pg_sleep(0))
        2278 => Value::Null,
        _ => return Err("this type has no JSON form here".into()),
    })
}

/// A one- or more-dimensional array, as nested JSON arrays.
fn pg_array(bytes: &[u8]) -> Result<Value, String> {
    let mut r = Reader(bytes);
    let ndim = r.i32()?;
    let _has_null = r.i32()?;
    let elem_oid = r.i32()? as u32;
    if !(0..=6).contains(&ndim) {
        return Err("bad array".into());
    }
    let mut dims = Vec::new();
    for _ in 0..ndim {
        let len = r.i32()?;
        let _lower = r.i32()?;
        dims.push(usize::try_from(len).map_err(|_| "bad array".to_string())?);
    }
    if dims.is_empty() {
        return Ok(json!([]));
    }
    let total: usize = dims.iter().product();
    let mut flat = Vec::with_capacity(total.min(1 << 16));
    for _ in 0..total {
        let len = r.i32()?;
        if len < 0 {
            flat.push(Value::Null);
        } else {
            let elem = r.take(len as usize)?;
            flat.push(pg_by_oid(elem_oid, elem)?);
        }
    }
    // Fold the flat list into nested arrays, innermost dimension first.
    let mut level = flat;
    for &d in dims.iter().skip(1).rev() {
        let mut next = Vec::with_capacity(level.len() / d.max(1));
        let mut it = level.into_iter();
        loop {
            let chunk: Vec<Value> = it.by_ref().take(d).collect();
            if chunk.is_empty() {
                break;
            }
            next.push(Value::Array(chunk));
        }
        level = next;
    }
    Ok(Value::Array(level))
}

/// PostgreSQL's binary `numeric` as a decimal string.
fn pg_numeric(bytes: &[u8]) -> Result<String, String> {
    let mut r = Reader(bytes);
    let ndigits = r.i16()?;
    let weight = i32::from(r.i16()?);
    let sign = r.i16()? as u16;
    let dscale = r.i16()?;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return Err("bad numeric".into()),
    }
    let digits = (0..ndigits.max(0))
        .map(|_| r.i16())
        .collect::<Result<Vec<i16>, _>>()?;
    let digit = |i: i32| -> i16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                s.push_str(&digit(i).to_string());
            } else {
                s.push_str(&format!("{:04}", digit(i)));
            }
        }
    }
    let dscale = usize::try_from(dscale).unwrap_or(0);
    if dscale > 0 {
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        frac.truncate(dscale);
        s.push('.');
        s.push_str(&frac);
    }
    Ok(s)
}

/// Days from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_DAYS: i64 = 10_957;
const DAY_US: i64 = 86_400_000_000;

/// `YYYY-MM-DD` for a count of days since 1970-01-01 (proleptic Gregorian).
pub(crate) fn date_string(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        format!("{y:04}-{m:02}-{d:02}")
    } else {
        format!("{y:+05}-{m:02}-{d:02}")
    }
}

/// `HH:MM:SS[.ffffff]` for microseconds since midnight.
fn time_string(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if frac == 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        let f = format!("{frac:06}");
        format!("{h:02}:{m:02}:{s:02}.{}", f.trim_end_matches('0'))
    }
}

/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date_string(0), "1970-01-01");
        assert_eq!(date_string(PG_EPOCH_DAYS), "2000-01-01");
        assert_eq!(date_string(19_782), "2024-02-29");
        assert_eq!(date_string(-1), "1969-12-31");
        assert_eq!(time_string(3_723_000_500), "01:02:03.0005");
        assert_eq!(time_string(0), "00:00:00");
    }

    #[test]
    fn numerics() {
        // 12345.678: weight 1, digits [1, 2345, 6780], dscale 3
        let mut b = Vec::new();
        for v in [3i16, 1, 0, 3, 1, 2345, 6780] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(pg_numeric(&b).unwrap(), "12345.678");
        // -0.05: weight -1, digits [500], dscale 2
        let mut b = Vec::new();
        for v in [1i16, -1, 0x4000, 2, 500] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(pg_numeric(&b).unwrap(), "-0.05");
        // 0: no digits, dscale 0
        let mut b = Vec::new();
        for v in [0i16, 0, 0, 0] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(pg_numeric(&b).unwrap(), "0");
    }

    #[test]
    fn url_passwords() {
        assert_eq!(
            redact_url_password("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(
            redact_url_password("postgres://u@h/db"),
            "postgres://u@h/db"
        );
        assert_eq!(redact_url_password("data/app.db"), "data/app.db");
    }
}
