//! `baton run`.

use super::store::StoreSpec;
use super::{EXIT_INVALID, load, print_report};
use crate::render::Progress;
use baton_runtime::Runtime;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Parse `--input`: inline JSON, or @FILE.
pub fn parse_input(input: Option<&str>) -> Result<Value, String> {
    let Some(text) = input else {
        return Ok(Value::Null);
    };
    let (text, origin) = match text.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|e| format!("--input @{path}: {e}"))?,
            format!("@{path}"),
        ),
        None => (text.to_string(), "--input".to_string()),
    };
    serde_json::from_str(&text).map_err(|e| format!("{origin}: not valid JSON: {e}"))
}

/// A runtime on the chosen store, with progress on stderr unless `quiet`.
pub async fn runtime(
    store: &StoreSpec,
    quiet: bool,
) -> anyhow::Result<(Runtime, Option<Arc<Progress>>)> {
    let mut runtime =
        Runtime::new(store.open().await?).with_kill_switch(std::time::Duration::from_millis(200));
    let progress = (!quiet).then(|| Arc::new(Progress::new()));
    if let Some(p) = &progress {
        runtime = runtime.with_observer(p.clone());
    }
    Ok((runtime, progress))
}

pub async fn run(
    store: &StoreSpec,
    file: &Path,
    input: Option<&str>,
    json: bool,
    script: Option<PathBuf>,
    quiet: bool,
    run_id: Option<String>,
) -> anyhow::Result<u8> {
    let run_id = match run_id.as_deref().map(super::store::parse_run) {
        Some(Ok(id)) => id,
        Some(Err(e)) => {
            eprintln!("error: --run-id: {e}");
            return Ok(EXIT_INVALID);
        }
        None => baton_core::RunId::new(),
    };
    let input = match parse_input(input) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_INVALID);
        }
    };
    let wf = match load(file, script) {
        Ok(wf) => wf,
        Err(e) => {
            eprintln!("{e}");
            return Ok(EXIT_INVALID);
        }
    };
    let (runtime, progress) = runtime(store, json || quiet).await?;
    let result = runtime.run_with_id(wf, input, run_id, None).await;
    if let Some(p) = &progress {
        p.finish();
    }
    let report = match result {
        Ok(r) => r,
        Err(baton_runtime::RunError::Input(e)) => {
            eprintln!("error: invalid input: {e}");
            return Ok(EXIT_INVALID);
        }
        Err(baton_runtime::RunError::Store(baton_core::StoreError::AlreadyExists(id))) => {
            eprintln!("error: a run with id {id} already exists in this store");
            return Ok(EXIT_INVALID);
        }
        Err(e) => return Err(e.into()),
    };
    print_report(&report, json)?;
    Ok(report.exit_code())
}
