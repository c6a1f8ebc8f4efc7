//! `baton run`.

use super::{EXIT_INVALID, load};
use crate::render::Progress;
use baton_runtime::Runtime;
use baton_store::MemoryStore;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Parse `--input`: inline JSON, or @FILE.
fn parse_input(input: Option<&str>) -> Result<Value, String> {
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

pub async fn run(
    file: &Path,
    input: Option<&str>,
    json: bool,
    script: Option<PathBuf>,
    quiet: bool,
) -> anyhow::Result<u8> {
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
    let store = Arc::new(MemoryStore::new());
    let mut runtime = Runtime::new(store);
    let progress = (!json && !quiet).then(|| Arc::new(Progress::new()));
    if let Some(p) = &progress {
        runtime = runtime.with_observer(p.clone());
    }
    let report = match runtime.run(wf, input).await {
        Ok(r) => r,
        Err(baton_runtime::RunError::Input(e)) => {
            if let Some(p) = &progress {
                p.finish();
            }
            eprintln!("error: invalid input: {e}");
            return Ok(EXIT_INVALID);
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(p) = &progress {
        p.finish();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "run {} of `{}`: {}",
            report.run_id, report.workflow, report.status
        );
        if let Some(r) = &report.reason {
            println!("reason: {r}");
        }
        println!("completed: {}", report.completed_steps.join(", "));
        for f in &report.failed_steps {
            println!(
                "failed: {} — {} [{}] impact: {}",
                f.step, f.error, f.policy, f.impact
            );
        }
        for s in &report.skipped_steps {
            println!("skipped: {} — {}", s.step, s.reason);
        }
        let u = &report.usage;
        println!(
            "usage: {} model calls, {} tokens in / {} out, ${:.4}, {} tool calls, {} steps, {:.1} ms",
            u.model_calls,
            u.input_tokens,
            u.output_tokens,
            u.cost_usd,
            u.tool_calls,
            u.steps,
            report.duration_ms
        );
        println!(
            "outputs:\n{}",
            serde_json::to_string_pretty(&report.outputs)?
        );
    }
    Ok(report.exit_code())
}
