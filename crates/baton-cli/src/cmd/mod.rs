//! Subcommands.

mod continue_run;
mod graph;
mod inspect;
mod run;
pub mod store;

use crate::args::{Cli, Command};
use crate::factory::{McpServers, Providers};
use baton_runtime::{Registry, RunReport, Workflow, WorkflowError, load_file};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Exit code for invalid input or usage (SPEC §8).
pub const EXIT_INVALID: u8 = 2;

/// Run one command; returns the process exit code.
pub async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let store = store::StoreSpec::new(cli.store.clone(), cli.strict);
    let _ = MODELS.set(cli.models.clone());
    match cli.command {
        Command::Run {
            file,
            input,
            json,
            script,
            quiet,
            run_id,
        } => run::run(&store, &file, input.as_deref(), json, script, quiet, run_id).await,
        Command::Validate { file } => match load(&file, None) {
            Ok(wf) => {
                println!(
                    "{}: workflow `{}` is valid ({} steps, {} agents, {} state keys)",
                    file.display(),
                    wf.name(),
                    wf.steps().len(),
                    wf.agent_names().count(),
                    wf.key_names().count()
                );
                Ok(0)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(EXIT_INVALID)
            }
        },
        Command::Graph { file } => match load(&file, None) {
            Ok(wf) => {
                print!("{}", graph::mermaid(&wf));
                Ok(0)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(EXIT_INVALID)
            }
        },
        Command::Resume { run, json, script } => {
            continue_run::resume(&store, &run, json, script).await
        }
        Command::Approve {
            run,
            step,
            task,
            edit,
            by,
            comment,
            json,
            script,
        } => {
            let d = continue_run::DecisionArgs {
                approved: true,
                step,
                task,
                edit,
                by,
                reason: comment,
            };
            continue_run::decide(&store, &run, d, json, script).await
        }
        Command::Reject {
            run,
            reason,
            step,
            task,
            by,
            json,
            script,
        } => {
            let d = continue_run::DecisionArgs {
                approved: false,
                step,
                task,
                edit: None,
                by,
                reason: Some(reason),
            };
            continue_run::decide(&store, &run, d, json, script).await
        }
        Command::Fork {
            run,
            at,
            workflow,
            set,
            json,
            script,
        } => continue_run::fork(&store, &run, at, workflow, set, json, script).await,
        Command::Runs { status, json } => inspect::runs(&store, status.as_deref(), json).await,
        Command::Show { run, json } => inspect::show(&store, &run, json).await,
        Command::Events { run, follow, json } => inspect::events(&store, &run, follow, json).await,
        Command::Checkpoints { run } => inspect::checkpoints(&store, &run).await,
        Command::Diff { a, b } => inspect::diff(&store, &a, &b).await,
        Command::Kill { run, all, reason } => {
            inspect::kill(&store, run.as_deref(), all, reason).await
        }
        Command::Prune {
            older_than,
            include_failed,
        } => inspect::prune(&store, &older_than, include_failed).await,
    }
}

/// The registry the CLI compiles workflows against.
pub fn registry(script: Option<PathBuf>) -> Registry {
    Registry::new()
        .model_factory(Arc::new(Providers {
            script_override: script,
        }))
        .tool_source_factory(Arc::new(McpServers))
}

/// `--models`, set once at start.
static MODELS: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

/// Load and compile a workflow file (with `--models` applied).
pub fn load(file: &Path, script: Option<PathBuf>) -> Result<Arc<Workflow>, WorkflowError> {
    match MODELS.get().cloned().flatten() {
        Some(models) => baton_runtime::load_file_with_models(file, &models, &registry(script)),
        None => load_file(file, &registry(script)),
    }
}

/// Print a run's result: JSON, or a human summary.
pub fn print_report(report: &RunReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
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
    if report.cost_breakdown.len() > 1 {
        for c in &report.cost_breakdown {
            println!(
                "  {} on {}: {} call(s), {} tokens in / {} out, ${:.4}",
                c.agent, c.model, c.model_calls, c.input_tokens, c.output_tokens, c.cost_usd
            );
        }
    }
    println!(
        "outputs:\n{}",
        serde_json::to_string_pretty(&report.outputs)?
    );
    if report.status == baton_core::RunStatus::Suspended {
        println!(
            "the run is suspended: `baton show {}` lists what it waits for; `baton approve {}` or `baton reject {} --reason ...` decides",
            report.run_id, report.run_id, report.run_id
        );
    }
    Ok(())
}
