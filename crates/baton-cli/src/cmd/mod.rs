//! Subcommands.

mod graph;
mod run;

use crate::args::{Cli, Command};
use crate::factory::Providers;
use baton_runtime::{Registry, Workflow, WorkflowError, load_file};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Exit code for invalid input or usage (SPEC §8).
pub const EXIT_INVALID: u8 = 2;

/// Run one command; returns the process exit code.
pub async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run {
            file,
            input,
            json,
            script,
            quiet,
        } => run::run(&file, input.as_deref(), json, script, quiet).await,
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
    }
}

/// The registry the CLI compiles workflows against.
pub fn registry(script: Option<PathBuf>) -> Registry {
    Registry::new().model_factory(Arc::new(Providers {
        script_override: script,
    }))
}

/// Load and compile a workflow file.
pub fn load(file: &Path, script: Option<PathBuf>) -> Result<Arc<Workflow>, WorkflowError> {
    load_file(file, &registry(script))
}
