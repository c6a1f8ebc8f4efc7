//! Which store the CLI uses.

use anyhow::Context;
use baton_core::{RunId, RunRecord, RunStore};
use baton_store::{MemoryStore, PostgresStore, SqliteOptions, SqliteStore};
use std::path::PathBuf;
use std::sync::Arc;

/// A `--store` value that names no store this build knows (a usage error: exit 2).
#[derive(Debug)]
pub struct InvalidStore(pub String);

impl std::fmt::Display for InvalidStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidStore {}

/// The default store: a SQLite file in the current directory.
pub const DEFAULT_SQLITE: &str = ".baton/baton.db";

/// A store as named on the command line.
pub struct StoreSpec {
    spec: Option<String>,
    strict: bool,
}

impl StoreSpec {
    /// From `--store` / `BATON_STORE` and `--strict`.
    pub fn new(spec: Option<String>, strict: bool) -> Self {
        StoreSpec { spec, strict }
    }

    /// Open it (wrapped in the crash-test hook when `BATON_TEST_KILL` is set).
    pub async fn open(&self) -> anyhow::Result<Arc<dyn RunStore>> {
        let store = self.open_plain().await?;
        Ok(match std::env::var("BATON_TEST_KILL") {
            Ok(spec) => Arc::new(crate::crash::CrashStore::new(store, &spec)?),
            Err(_) => store,
        })
    }

    async fn open_plain(&self) -> anyhow::Result<Arc<dyn RunStore>> {
        let spec = self.spec.as_deref().unwrap_or("");
        if spec == "memory" || spec == "memory:" {
            return Ok(Arc::new(MemoryStore::new()));
        }
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            let store = PostgresStore::connect(spec)
                .await
                .with_context(|| "cannot open the PostgreSQL store".to_string())?;
            return Ok(Arc::new(store));
        }
        if let Some((scheme, _)) = spec.split_once("://")
            && scheme != "sqlite"
        {
            return Err(InvalidStore(format!(
                "unknown store `{spec}`: use `memory`, a SQLite path (or `sqlite:PATH`), or a `postgres://` URL"
            ))
            .into());
        }
        let path = match spec.strip_prefix("sqlite:") {
            Some(p) => PathBuf::from(p),
            None if spec.is_empty() => PathBuf::from(DEFAULT_SQLITE),
            None => PathBuf::from(spec),
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let store = SqliteStore::open(
            &path,
            SqliteOptions {
                strict: self.strict,
            },
        )
        .await
        .with_context(|| format!("cannot open the SQLite store {}", path.display()))?;
        Ok(Arc::new(store))
    }
}

/// Parse a run id given on the command line, with a readable error.
pub fn parse_run(id: &str) -> Result<RunId, String> {
    id.parse().map_err(|_| {
        format!("`{id}` is not a run id (they look like 01a1fdd0-7ea0-7621-a61b-cd04a77a7ce8)")
    })
}

/// Find a run, with a readable error.
pub async fn find(store: &dyn RunStore, id: RunId) -> Result<RunRecord, String> {
    store.run(id).await.map_err(|e| match e {
        baton_core::StoreError::NotFound(_) => {
            format!("no run {id} in this store (is --store / BATON_STORE the one the run used?)")
        }
        other => other.to_string(),
    })
}
