//! Loading workflow files: YAML text -> [`WorkflowSpec`] -> compiled [`Workflow`].

use crate::compile::{Source, compile};
use crate::error::WorkflowError;
use crate::registry::Registry;
use crate::spec::{Entries, ModelSpec, Pos, WorkflowSpec};
use crate::workflow::Workflow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest workflow file accepted (bytes).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Parse YAML text into a spec; `file` names it in errors.
pub fn parse_spec(text: &str, file: &str) -> Result<WorkflowSpec, WorkflowError> {
    if text.trim().is_empty() {
        return Err(WorkflowError::single(file, None, "the file is empty"));
    }
    serde_saphyr::from_str::<WorkflowSpec>(text).map_err(|e| located(file, &e))
}

/// serde-saphyr decorates its messages with a source snippet; keep the first line, which
/// carries the message itself (the position is reported separately).
fn clean_message(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // "line 3 column 5: message" duplicates the position we report ourselves.
    let first = match first.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map_or(first, |(_, m)| m),
        None => first,
    };
    // "... at line 3, column 5" duplicates our own prefix.
    let first = match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    // Hints addressed to programmers using the YAML library are not for workflow authors.
    if first.starts_with("multiple YAML documents") {
        return "the file holds several YAML documents (`---`); a workflow is one document"
            .to_string();
    }
    first
        .split(", set DuplicateKeyPolicy")
        .next()
        .unwrap_or(first)
        .to_string()
}

/// Load and compile a workflow file.
pub fn load_file(path: &Path, registry: &Registry) -> Result<Arc<Workflow>, WorkflowError> {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    load_nested(path, registry, vec![canon], None, None)
}

/// Load a workflow file with its `models:` section replaced by the one in `models_file` (a
/// YAML mapping of aliases, as under `models:`): the same workflow, other providers.
pub fn load_file_with_models(
    path: &Path,
    models_file: &Path,
    registry: &Registry,
) -> Result<Arc<Workflow>, WorkflowError> {
    let shown = models_file.display().to_string();
    let text = read_text(models_file, &shown)?;
    let models: Entries<ModelSpec> =
        serde_saphyr::from_str(&text).map_err(|e| located(&shown, &e))?;
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    load_nested(path, registry, vec![canon], Some((shown, models)), None)
}

fn read_text(path: &Path, file: &str) -> Result<String, WorkflowError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| WorkflowError::single(file, None, format!("cannot read the file: {e}")))?;
    if meta.is_dir() {
        return Err(WorkflowError::single(
            file,
            None,
            "this is a directory, not a workflow file",
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(WorkflowError::single(
            file,
            None,
            format!(
                "the file is {} bytes; the limit is {MAX_FILE_BYTES}",
                meta.len()
            ),
        ));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| WorkflowError::single(file, None, format!("cannot read the file: {e}")))?;
    String::from_utf8(bytes)
        .map_err(|e| WorkflowError::single(file, None, format!("the file is not UTF-8 text: {e}")))
}

fn located(file: &str, e: &serde_saphyr::Error) -> WorkflowError {
    let pos = e.location().and_then(|l| {
        (l.line() > 0).then(|| Pos {
            line: l.line() as u32,
            col: l.column() as u32,
        })
    });
    WorkflowError::single(file, pos, clean_message(&e.to_string()))
}

pub(crate) fn load_nested(
    path: &Path,
    registry: &Registry,
    stack: Vec<PathBuf>,
    models: Option<(String, Entries<ModelSpec>)>,
    max_depth: Option<u32>,
) -> Result<Arc<Workflow>, WorkflowError> {
    let file = path.display().to_string();
    let text = read_text(path, &file)?;
    let mut spec = parse_spec(&text, &file)?;
    let models_file = models.as_ref().map(|(f, _)| f.clone());
    if let Some((_, m)) = models {
        spec.models = m;
    }
    let base_dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let src = Source {
        file,
        base_dir,
        registry,
        stack,
        text: Some(text),
        models_file,
        max_depth,
    };
    compile(&spec, &src).map(Arc::new)
}

/// Parse and compile workflow text; `file` names it in errors, and relative paths resolve
/// against the current directory.
pub fn compile_str(
    text: &str,
    file: &str,
    registry: &Registry,
) -> Result<Arc<Workflow>, WorkflowError> {
    let spec = parse_spec(text, file)?;
    let src = Source {
        file: file.to_string(),
        base_dir: PathBuf::from("."),
        registry,
        stack: Vec::new(),
        text: Some(text.to_string()),
        models_file: None,
        max_depth: None,
    };
    compile(&spec, &src).map(Arc::new)
}

/// Compile a spec built in code (see [`crate::builder`]); relative paths resolve against the
/// current directory.
pub fn compile_spec(
    spec: &WorkflowSpec,
    registry: &Registry,
) -> Result<Arc<Workflow>, WorkflowError> {
    let src = Source {
        file: "<builder>".into(),
        base_dir: PathBuf::from("."),
        registry,
        stack: Vec::new(),
        text: None,
        models_file: None,
        max_depth: None,
    };
    compile(spec, &src).map(Arc::new)
}
