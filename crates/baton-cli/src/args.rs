//! Command-line arguments (low-level, as typed).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// baton: a multi-agent orchestration runtime.
#[derive(Debug, Parser)]
#[command(name = "baton", version, about, long_about = None)]
pub struct Cli {
    /// Where runs are kept: `sqlite:PATH` (default `sqlite:.baton/baton.db`), a PostgreSQL URL
    /// (`postgres://user@host/db`), or `memory`.
    #[arg(long, global = true, env = "BATON_STORE")]
    pub store: Option<String>,
    /// SQLite: sync every commit to disk (power-loss safe) instead of the default (safe against
    /// a killed process).
    #[arg(long, global = true)]
    pub strict: bool,
    /// Replace the workflow's `models:` with the mapping in this YAML file (the same workflow on
    /// other providers, e.g. a local Ollama instead of the scripted model).
    #[arg(long, global = true, env = "BATON_MODELS")]
    pub models: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workflow to the end and print its result.
    Run {
        /// The workflow file (YAML).
        file: PathBuf,
        /// The run's input: a JSON object of state keys, or @FILE to read it from a file.
        #[arg(long, short)]
        input: Option<String>,
        /// Print only the result, as JSON.
        #[arg(long)]
        json: bool,
        /// Use this script for every scripted model of the workflow.
        #[arg(long)]
        script: Option<PathBuf>,
        /// Print no progress.
        #[arg(long, short)]
        quiet: bool,
        /// Give the run this id (a UUID) instead of a new one, e.g. to find it after a crash.
        #[arg(long)]
        run_id: Option<String>,
    },
    /// Check a workflow and report every problem with its place; exits 2 on any.
    Validate {
        /// The workflow file (YAML).
        file: PathBuf,
    },
    /// Print a workflow's graph as a Mermaid flowchart.
    Graph {
        /// The workflow file (YAML).
        file: PathBuf,
    },
    /// Continue a run that was interrupted, halted or suspended.
    Resume {
        /// Run id.
        run: String,
        /// Print only the result, as JSON.
        #[arg(long)]
        json: bool,
        /// Use this script for every scripted model of the workflow.
        #[arg(long)]
        script: Option<PathBuf>,
    },
    /// Approve a pending approval of a suspended run, and continue the run.
    Approve {
        /// Run id.
        run: String,
        /// The step waiting (needed when several approvals are pending).
        #[arg(long)]
        step: Option<String>,
        /// The task waiting (as `baton show` lists it).
        #[arg(long)]
        task: Option<u64>,
        /// Replace the tool call's arguments (or the step's data) with this JSON.
        #[arg(long)]
        edit: Option<String>,
        /// Who approves (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// A comment.
        #[arg(long)]
        comment: Option<String>,
        /// Print only the result, as JSON.
        #[arg(long)]
        json: bool,
        /// Use this script for every scripted model of the workflow.
        #[arg(long)]
        script: Option<PathBuf>,
    },
    /// Reject a pending approval of a suspended run, and continue the run.
    Reject {
        /// Run id.
        run: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// The step waiting.
        #[arg(long)]
        step: Option<String>,
        /// The task waiting.
        #[arg(long)]
        task: Option<u64>,
        /// Who rejects (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Print only the result, as JSON.
        #[arg(long)]
        json: bool,
        /// Use this script for every scripted model of the workflow.
        #[arg(long)]
        script: Option<PathBuf>,
    },
    /// List runs, newest first.
    Runs {
        /// Only runs in this status (running, suspended, succeeded, partial_success, failed, halted).
        #[arg(long)]
        status: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a run: status, state, steps, usage, pending approvals.
    Show {
        /// Run id.
        run: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a run's events.
    Events {
        /// Run id.
        run: String,
        /// Keep printing new events until the run stops.
        #[arg(long, short)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List a run's checkpoints (step boundaries), for `fork --at`.
    Checkpoints {
        /// Run id.
        run: String,
    },
    /// Start a new run from a checkpoint of another, optionally with changed state or workflow.
    Fork {
        /// Run id.
        run: String,
        /// The checkpoint: the last event (seq) the new run shares.
        #[arg(long)]
        at: u64,
        /// Continue with this workflow file (changed prompts or models) instead of the original.
        #[arg(long)]
        workflow: Option<PathBuf>,
        /// Set a state key: KEY=JSON (repeatable).
        #[arg(long = "set", value_name = "KEY=JSON")]
        set: Vec<String>,
        /// Print only the result, as JSON.
        #[arg(long)]
        json: bool,
        /// Use this script for every scripted model.
        #[arg(long)]
        script: Option<PathBuf>,
    },
    /// Show where two runs diverge.
    Diff {
        /// First run.
        a: String,
        /// Second run.
        b: String,
    },
    /// The kill switch: halt a run, or every active run of every process sharing the store, at
    /// its next step boundary (calls in flight are abandoned; `baton resume` continues later).
    Kill {
        /// The run to halt (omit with --all).
        run: Option<String>,
        /// Halt every active run.
        #[arg(long)]
        all: bool,
        /// Why (recorded in each halted run).
        #[arg(long, default_value = "stopped by an operator")]
        reason: String,
    },
    /// Delete finished runs older than a duration (retention).
    Prune {
        /// Age, e.g. `30d`, `12h`, `90m`.
        #[arg(long)]
        older_than: String,
        /// Also delete failed runs (default: succeeded and partial_success only).
        #[arg(long)]
        include_failed: bool,
    },
}
