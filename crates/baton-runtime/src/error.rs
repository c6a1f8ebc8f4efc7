//! Errors of the runtime crate.

use crate::spec::Pos;
use baton_core::StoreError;
use std::fmt;

/// One located problem in a workflow definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file (or `<builder>` for workflows built in code).
    pub file: String,
    /// Line and column, when known.
    pub pos: Option<Pos>,
    /// The step concerned, if any.
    pub step: Option<String>,
    /// What is wrong, and where possible how to fix it.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(p) => write!(f, "{}:{}:{}: ", self.file, p.line, p.col)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if let Some(step) = &self.step {
            write!(f, "step `{step}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A workflow that could not be loaded or compiled: every problem found, in file order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct WorkflowError {
    /// The problems.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {d}")?;
        }
        Ok(())
    }
}

impl WorkflowError {
    /// A single diagnostic.
    pub fn single(file: impl Into<String>, pos: Option<Pos>, message: impl Into<String>) -> Self {
        WorkflowError {
            diagnostics: vec![Diagnostic {
                file: file.into(),
                pos,
                step: None,
                message: message.into(),
            }],
        }
    }
}

/// Why a run could not be carried out (as opposed to a run that ran and failed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The run's input does not fit the workflow.
    #[error("invalid input: {0}")]
    Input(String),
    /// The store failed; nothing after the last stored event happened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Replaying a log met an event that does not fit the workflow.
    #[error("replay diverged at event {seq}: {message}")]
    Nondeterminism {
        /// Event seq.
        seq: u64,
        /// What did not fit.
        message: String,
    },
}

/// Shorthand for results of the runtime.
pub type Result<T, E = RunError> = std::result::Result<T, E>;
