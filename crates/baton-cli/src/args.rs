//! Command-line arguments (low-level, as typed).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// baton: a multi-agent orchestration runtime.
#[derive(Debug, Parser)]
#[command(name = "baton", version, about, long_about = None)]
pub struct Cli {
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
}
