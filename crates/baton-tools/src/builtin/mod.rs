//! Built-in tools: `http_get`, `sql_query`, `file_read` / `file_write` / `file_list`,
//! `calculator` and `outbox`.
//!
//! Each is a [`Tool`](baton_core::Tool) with a strict JSON Schema (`additionalProperties:
//! false`) and a declared side-effect class; [`registry`] builds the ones a [`BuiltinConfig`]
//! enables. See `docs/tools.md` for arguments, results, limits and security rules.

pub mod calculator;
pub mod files;
pub mod http_get;
pub mod outbox;
pub mod sql;

pub use calculator::{CalcError, CalcValue, CalculatorTool, evaluate};
pub use files::{FileListTool, FileReadTool, FileWriteTool, FilesConfig, Sandbox, file_tools};
pub use http_get::{HttpGetConfig, HttpGetTool};
pub use outbox::{
    Channel, JsonlOutbox, MemoryOutbox, OutboxMessage, OutboxSink, OutboxTool, Recorded,
};
pub use sql::{SqlConfig, SqlQueryTool};

use crate::secrets::SecretStore;
use baton_core::{DynTool, ToolError};
use std::path::PathBuf;
use std::sync::Arc;

/// Which built-in tools to build, and how.
///
/// A tool whose setting is absent is left out: `http_get` needs at least one allowed host,
/// the file tools a sandbox directory, `sql_query` a database URL, `outbox` a sink. The
/// calculator is always there.
#[derive(Clone, Default)]
pub struct BuiltinConfig {
    /// Root of the file tools' sandbox (must exist).
    pub sandbox_dir: Option<PathBuf>,
    /// Hosts `http_get` may fetch (see [`HttpGetConfig::allow_hosts`]).
    pub http_allow_hosts: Vec<String>,
    /// Database for `sql_query` (see [`SqlConfig::url`]).
    pub sql_url: Option<String>,
    /// Where `outbox` records messages.
    pub outbox: Option<Arc<dyn OutboxSink>>,
    /// Where `{{secret.NAME}}` placeholders (in `http_get` headers, the SQL URL) are resolved.
    pub secrets: Option<Arc<dyn SecretStore>>,
    /// Settings of `http_get` beyond its hosts; `allow_hosts` here is extended by
    /// [`BuiltinConfig::http_allow_hosts`].
    pub http: Option<HttpGetConfig>,
    /// Limits of the file tools; the root is [`BuiltinConfig::sandbox_dir`].
    pub files: Option<FilesConfig>,
    /// Limits of `sql_query`; the URL is [`BuiltinConfig::sql_url`] when that is set.
    pub sql: Option<SqlConfig>,
}

impl std::fmt::Debug for BuiltinConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinConfig")
            .field("sandbox_dir", &self.sandbox_dir)
            .field("http_allow_hosts", &self.http_allow_hosts)
            .field(
                "sql_url",
                &self.sql_url.as_deref().map(sql::redact_url_password),
            )
            .field("outbox", &self.outbox.is_some())
            .field("secrets", &self.secrets.is_some())
            .field("http", &self.http)
            .field("files", &self.files)
            .field("sql", &self.sql)
            .finish()
    }
}

/// Why the built-in tools could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("built-in tool `{tool}`: {message}")]
pub struct BuiltinError {
    /// The tool.
    pub tool: String,
    /// What is wrong with its configuration.
    pub message: String,
}

fn config_error(tool: &str) -> impl FnOnce(String) -> BuiltinError + '_ {
    move |message| BuiltinError {
        tool: tool.to_string(),
        message,
    }
}

/// The built-in tools `config` enables, ready to register. Nothing is connected or fetched
/// here: databases are opened on the first call.
pub fn registry(config: &BuiltinConfig) -> Result<Vec<Arc<dyn DynTool>>, BuiltinError> {
    let mut tools: Vec<Arc<dyn DynTool>> = Vec::new();

    let mut http = config.http.clone().unwrap_or_default();
    http.allow_hosts
        .extend(config.http_allow_hosts.iter().cloned());
    if !http.allow_hosts.is_empty() {
        let mut tool = HttpGetTool::new(http).map_err(config_error(http_get::HTTP_GET))?;
        if let Some(secrets) = &config.secrets {
            tool = tool.with_secrets(secrets.clone());
        }
        tools.push(Arc::new(tool));
    }

    let sql = match (&config.sql_url, &config.sql) {
        (Some(url), Some(sql)) => Some(SqlConfig {
            url: url.clone(),
            ..sql.clone()
        }),
        (Some(url), None) => Some(SqlConfig::new(url.clone())),
        (None, sql) => sql.clone(),
    };
    if let Some(sql) = sql {
        let mut tool = SqlQueryTool::new(sql).map_err(config_error(sql::SQL_QUERY))?;
        if let Some(secrets) = &config.secrets {
            tool = tool.with_secrets(secrets.clone());
        }
        tools.push(Arc::new(tool));
    }

    let files = match (&config.sandbox_dir, &config.files) {
        (Some(dir), Some(files)) => Some(FilesConfig {
            root: dir.clone(),
            ..files.clone()
        }),
        (Some(dir), None) => Some(FilesConfig::new(dir.clone())),
        (None, files) => files.clone(),
    };
    if let Some(files) = files {
        let sandbox = Sandbox::new(files).map_err(config_error("file_read"))?;
        let (read, write, list) = file_tools(Arc::new(sandbox));
        tools.push(Arc::new(read));
        tools.push(Arc::new(write));
        tools.push(Arc::new(list));
    }

    tools.push(Arc::new(CalculatorTool::new()));

    if let Some(sink) = &config.outbox {
        tools.push(Arc::new(OutboxTool::new(sink.clone())));
    }
    Ok(tools)
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the tools.

pub(crate) fn failed(tool: &str, message: impl Into<String>) -> ToolError {
    ToolError::Failed {
        tool: tool.to_string(),
        message: message.into(),
    }
}

pub(crate) fn invalid(tool: &str, message: impl Into<String>) -> ToolError {
    ToolError::InvalidArguments {
        tool: tool.to_string(),
        message: message.into(),
    }
}

/// An error and its sources, `: `-separated.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
