//! `baton resume`, `approve`, `reject` and `fork`: continuing runs from the store.

use super::run::runtime;
use super::store::{StoreSpec, find, parse_run};
use super::{EXIT_INVALID, load, print_report};
use baton_runtime::executor::Decision;
use baton_runtime::{RunError, RunReport, Workflow};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

macro_rules! invalid {
    ($($arg:tt)*) => {{
        eprintln!("error: {}", format!($($arg)*));
        return Ok(EXIT_INVALID);
    }};
}

/// The workflow a run was started from.
fn workflow_of(source: Option<&str>, script: Option<PathBuf>) -> Result<Arc<Workflow>, String> {
    let Some(src) = source else {
        return Err("the run does not record its workflow file (it was built in code)".into());
    };
    load(Path::new(src), script).map_err(|e| format!("{src}: {e}"))
}

fn finish(result: Result<RunReport, RunError>, json: bool) -> anyhow::Result<u8> {
    match result {
        Ok(report) => {
            print_report(&report, json)?;
            Ok(report.exit_code())
        }
        Err(RunError::Input(e)) => invalid!("{e}"),
        Err(e) => Err(e.into()),
    }
}

pub async fn resume(
    store: &StoreSpec,
    run: &str,
    json: bool,
    script: Option<PathBuf>,
) -> anyhow::Result<u8> {
    let id = match parse_run(run) {
        Ok(id) => id,
        Err(e) => invalid!("{e}"),
    };
    let (rt, progress) = runtime(store, json).await?;
    let record = match find(rt.store().as_ref(), id).await {
        Ok(r) => r,
        Err(e) => invalid!("{e}"),
    };
    let wf = match workflow_of(record.source.as_deref(), script) {
        Ok(w) => w,
        Err(e) => invalid!("{e}"),
    };
    let result = rt.resume(wf, id).await;
    if let Some(p) = progress {
        p.finish();
    }
    finish(result, json)
}

/// What `approve` / `reject` were asked.
pub struct DecisionArgs {
    pub approved: bool,
    pub step: Option<String>,
    pub task: Option<u64>,
    pub edit: Option<String>,
    pub by: Option<String>,
    pub reason: Option<String>,
}

pub async fn decide(
    store: &StoreSpec,
    run: &str,
    d: DecisionArgs,
    json: bool,
    script: Option<PathBuf>,
) -> anyhow::Result<u8> {
    let id = match parse_run(run) {
        Ok(id) => id,
        Err(e) => invalid!("{e}"),
    };
    let edit: Option<Value> = match &d.edit {
        Some(t) => match serde_json::from_str(t) {
            Ok(v) => Some(v),
            Err(e) => invalid!("--edit: not valid JSON: {e}"),
        },
        None => None,
    };
    let (rt, progress) = runtime(store, json).await?;
    let record = match find(rt.store().as_ref(), id).await {
        Ok(r) => r,
        Err(e) => invalid!("{e}"),
    };
    let wf = match workflow_of(record.source.as_deref(), script) {
        Ok(w) => w,
        Err(e) => invalid!("{e}"),
    };
    let machine = rt.load(wf.clone(), id).await?;
    let pending: Vec<_> = machine
        .pending_approvals()
        .into_iter()
        .filter(|p| d.step.as_deref().is_none_or(|s| s == p.step))
        .filter(|p| d.task.is_none_or(|t| t == p.task))
        .collect();
    let chosen = match pending.as_slice() {
        [] => invalid!(
            "run {id} has no pending approval{} (status: {})",
            d.step
                .as_deref()
                .map(|s| format!(" for step `{s}`"))
                .unwrap_or_default(),
            record.status
        ),
        [one] => one.clone(),
        many => {
            let list: Vec<String> = many
                .iter()
                .map(|p| {
                    format!(
                        "task {} (step `{}`{})",
                        p.task,
                        p.step,
                        p.tool
                            .as_deref()
                            .map(|t| format!(", tool `{t}`"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            invalid!(
                "several approvals are pending; choose one with --step or --task: {}",
                list.join("; ")
            )
        }
    };
    let by =
        d.by.or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "cli".into());
    let decision = Decision {
        task: chosen.task,
        call_id: chosen.call_id,
        approved: d.approved,
        by,
        reason: d.reason,
        value: edit,
    };
    let result = rt.decide(wf, id, decision).await;
    if let Some(p) = progress {
        p.finish();
    }
    finish(result, json)
}

pub async fn fork(
    store: &StoreSpec,
    run: &str,
    at: u64,
    workflow: Option<PathBuf>,
    set: Vec<String>,
    json: bool,
    script: Option<PathBuf>,
) -> anyhow::Result<u8> {
    let id = match parse_run(run) {
        Ok(id) => id,
        Err(e) => invalid!("{e}"),
    };
    let mut changes = Vec::new();
    for s in &set {
        let Some((k, v)) = s.split_once('=') else {
            invalid!("--set `{s}`: expected KEY=JSON")
        };
        match serde_json::from_str::<Value>(v) {
            Ok(v) => changes.push((k.to_string(), v)),
            Err(e) => invalid!("--set {k}: not valid JSON: {e}"),
        }
    }
    let (rt, progress) = runtime(store, json).await?;
    let record = match find(rt.store().as_ref(), id).await {
        Ok(r) => r,
        Err(e) => invalid!("{e}"),
    };
    let original = match workflow_of(record.source.as_deref(), script.clone()) {
        Ok(w) => w,
        Err(e) => invalid!("{e}"),
    };
    let wf = match &workflow {
        Some(f) => match load(f, script) {
            Ok(w) => w,
            Err(e) => invalid!("{e}"),
        },
        None => original.clone(),
    };
    let result = rt.fork(original, wf, id, at, changes).await;
    if let Some(p) = progress {
        p.finish();
    }
    finish(result, json)
}
