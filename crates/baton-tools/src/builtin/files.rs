//! `file_read`, `file_write`, `file_list`: files inside one sandbox directory.
//!
//! Paths are relative to the sandbox root. A path is refused when it is absolute, contains a
//! `..` component or a NUL byte, or resolves (through symbolic links) to anything outside the
//! root. Symbolic links that stay inside the root are followed; a link whose target leaves the
//! root (or does not exist, for a write) is refused. The final open uses `O_NOFOLLOW` on the
//! already-resolved path, so swapping the file for a link between the check and the open does not
//! lead outside either.

use super::{failed, invalid, truncate_utf8};
use baton_core::{SideEffect, Tool, ToolContext, ToolError, ToolSpec};
use serde_json::{Value, json};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Name of the read tool.
pub const FILE_READ: &str = "file_read";
/// Name of the write tool.
pub const FILE_WRITE: &str = "file_write";
/// Name of the list tool.
pub const FILE_LIST: &str = "file_list";

/// Limits of the file tools.
#[derive(Clone, Debug)]
pub struct FilesConfig {
    /// The sandbox root; must exist and be a directory.
    pub root: PathBuf,
    /// Largest content `file_read` returns, in bytes (default 1 MiB); a longer file is cut and
    /// flagged `truncated`.
    pub max_read_bytes: usize,
    /// Largest content `file_write` accepts, in bytes (default 1 MiB).
    pub max_write_bytes: usize,
    /// Most entries `file_list` returns (default 1000).
    pub max_list_entries: usize,
}

impl FilesConfig {
    /// The default limits for the sandbox at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FilesConfig {
            root: root.into(),
            max_read_bytes: 1024 * 1024,
            max_write_bytes: 1024 * 1024,
            max_list_entries: 1000,
        }
    }
}

/// A directory that paths are confined to.
#[derive(Debug)]
pub struct Sandbox {
    root: PathBuf,
    config: FilesConfig,
}

impl Sandbox {
    /// The sandbox for `config`. Fails if the root does not exist or is not a directory.
    pub fn new(config: FilesConfig) -> Result<Self, String> {
        let root = fs::canonicalize(&config.root).map_err(|e| {
            format!(
                "sandbox directory `{}` is not usable: {e}",
                config.root.display()
            )
        })?;
        if !root.is_dir() {
            return Err(format!(
                "sandbox directory `{}` is not a directory",
                config.root.display()
            ));
        }
        Ok(Sandbox { root, config })
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The limits.
    pub fn config(&self) -> &FilesConfig {
        &self.config
    }

    /// Check the shape of a sandbox path and return its normal components.
    fn components(rel: &str) -> Result<Vec<&str>, String> {
        if rel.contains('\0') {
            return Err("the path contains a NUL byte".into());
        }
        let path = Path::new(rel);
        if path.is_absolute() || rel.starts_with('/') || rel.starts_with('\\') {
            return Err(format!(
                "`{rel}` is absolute; paths are relative to the sandbox root"
            ));
        }
        let mut out = Vec::new();
        for c in path.components() {
            match c {
                Component::Normal(s) => match s.to_str() {
                    Some(s) => out.push(s),
                    None => return Err(format!("`{rel}` is not valid UTF-8")),
                },
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(format!(
                        "`{rel}` contains `..`; paths may not leave the sandbox"
                    ));
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(format!(
                        "`{rel}` is absolute; paths are relative to the sandbox root"
                    ));
                }
            }
        }
        Ok(out)
    }

    /// `path` resolved through any links, checked to be inside the root.
    fn confine(&self, rel: &str, path: &Path) -> Result<PathBuf, String> {
        let real = fs::canonicalize(path).map_err(|e| not_found(rel, &e))?;
        if real.starts_with(&self.root) {
            Ok(real)
        } else {
            Err(format!(
                "`{rel}` resolves (through a symbolic link) to a place outside the sandbox"
            ))
        }
    }

    /// An existing path inside the sandbox, fully resolved.
    pub fn resolve_existing(&self, rel: &str) -> Result<PathBuf, String> {
        let parts = Self::components(rel)?;
        let mut path = self.root.clone();
        for part in parts {
            path.push(part);
            // Resolve each step, so a link to the outside is refused even when what follows it
            // would not exist there.
            path = self.confine(rel, &path)?;
        }
        Ok(path)
    }

    /// Where a file may be written: its parent resolved and inside the root (created if it
    /// is missing), and the file itself (a link to inside the root is followed; one to the
    /// outside, a dangling one, or a directory, is refused). Returns the path and whether the
    /// file exists.
    pub fn resolve_for_write(&self, rel: &str) -> Result<(PathBuf, bool), String> {
        let parts = Self::components(rel)?;
        let Some((file, dirs)) = parts.split_last() else {
            return Err("the path is empty; name a file".into());
        };
        let mut dir = self.root.clone();
        for part in dirs {
            let next = dir.join(part);
            match fs::symlink_metadata(&next) {
                Ok(_) => {
                    dir = self.confine(rel, &next)?;
                    if !dir.is_dir() {
                        return Err(format!("`{part}` in `{rel}` is not a directory"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&next)
                        .map_err(|e| format!("cannot create directory for `{rel}`: {e}"))?;
                    dir = self.confine(rel, &next)?;
                }
                Err(e) => return Err(format!("cannot inspect `{rel}`: {e}")),
            }
        }
        let target = dir.join(file);
        match fs::symlink_metadata(&target) {
            Ok(meta) => {
                let real = if meta.file_type().is_symlink() {
                    fs::canonicalize(&target).map_err(|_| {
                        format!("`{rel}` is a symbolic link to nothing; it will not be followed")
                    })?
                } else {
                    target
                };
                if !real.starts_with(&self.root) {
                    return Err(format!(
                        "`{rel}` resolves (through a symbolic link) to a place outside the sandbox"
                    ));
                }
                if real.is_dir() {
                    return Err(format!("`{rel}` is a directory"));
                }
                Ok((real, true))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((target, false)),
            Err(e) => Err(format!("cannot inspect `{rel}`: {e}")),
        }
    }

    /// The path shown back to the caller: relative to the root, `/`-separated.
    fn display(&self, real: &Path) -> String {
        let rel = real.strip_prefix(&self.root).unwrap_or(real);
        let s = rel
            .components()
            .filter_map(|c| c.as_os_str().to_str())
            .collect::<Vec<_>>()
            .join("/");
        if s.is_empty() { ".".into() } else { s }
    }

    fn read(&self, rel: &str) -> Result<Value, String> {
        let path = self.resolve_existing(rel)?;
        let meta = fs::metadata(&path).map_err(|e| not_found(rel, &e))?;
        if meta.is_dir() {
            return Err(format!("`{rel}` is a directory; use file_list"));
        }
        if !meta.is_file() {
            return Err(format!("`{rel}` is not a regular file"));
        }
        let max = self.config.max_read_bytes;
        let file = open_nofollow(&path, false).map_err(|e| format!("cannot open `{rel}`: {e}"))?;
        let mut bytes = Vec::new();
        file.take(max as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read `{rel}`: {e}"))?;
        let truncated = bytes.len() > max;
        bytes.truncate(max);
        let content = match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) if truncated => {
                // The cut may have split a character: keep the valid prefix.
                let valid = e.utf8_error().valid_up_to();
                let bytes = e.into_bytes();
                if bytes.len() - valid > 3 {
                    return Err(format!("`{rel}` is not a UTF-8 text file"));
                }
                String::from_utf8_lossy(&bytes[..valid]).into_owned()
            }
            Err(_) => return Err(format!("`{rel}` is not a UTF-8 text file")),
        };
        Ok(json!({
            "path": self.display(&path),
            "content": truncate_utf8(&content, max),
            "size": meta.len(),
            "truncated": truncated,
        }))
    }

    fn write(&self, rel: &str, content: &str) -> Result<Value, String> {
        if content.len() > self.config.max_write_bytes {
            return Err(format!(
                "the content is {} bytes; at most {} may be written",
                content.len(),
                self.config.max_write_bytes
            ));
        }
        let (path, existed) = self.resolve_for_write(rel)?;
        if existed
            && let Ok(current) = fs::read(&path)
            && current == content.as_bytes()
        {
            return Ok(json!({
                "path": self.display(&path),
                "bytes": content.len(),
                "created": false,
                "changed": false,
            }));
        }
        // Write a temporary file next to the target and rename it over: readers never see half a
        // file, and the rename replaces the final name itself rather than following it.
        let dir = path.parent().unwrap_or(&self.root);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let tmp = dir.join(format!(
            ".{name}.baton-tmp-{}",
            uuid::Uuid::now_v7().simple()
        ));
        let result = (|| -> io::Result<()> {
            let mut f = open_nofollow(&tmp, true)?;
            f.write_all(content.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(format!("cannot write `{rel}`: {e}"));
        }
        Ok(json!({
            "path": self.display(&path),
            "bytes": content.len(),
            "created": !existed,
            "changed": true,
        }))
    }

    fn list(&self, rel: &str) -> Result<Value, String> {
        let dir = if rel.is_empty() || rel == "." {
            self.root.clone()
        } else {
            self.resolve_existing(rel)?
        };
        if !dir.is_dir() {
            return Err(format!("`{rel}` is not a directory"));
        }
        let mut entries = Vec::new();
        let mut truncated = false;
        let reader = fs::read_dir(&dir).map_err(|e| format!("cannot list `{rel}`: {e}"))?;
        let mut all: Vec<(String, Value)> = Vec::new();
        for entry in reader {
            let entry = entry.map_err(|e| format!("cannot list `{rel}`: {e}"))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.contains(".baton-tmp-") {
                continue;
            }
            let meta = match fs::symlink_metadata(entry.path()) {
                Ok(m) => m,
                Err(_) => continue,
            };
            let kind = if meta.file_type().is_symlink() {
                "symlink"
            } else if meta.is_dir() {
                "dir"
            } else if meta.is_file() {
                "file"
            } else {
                "other"
            };
            let mut v = json!({"name": name, "type": kind});
            if meta.is_file() {
                v["size"] = json!(meta.len());
            }
            all.push((name, v));
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, v) in all {
            if entries.len() >= self.config.max_list_entries {
                truncated = true;
                break;
            }
            entries.push(v);
        }
        Ok(json!({
            "path": self.display(&dir),
            "entries": entries,
            "truncated": truncated,
        }))
    }
}

fn not_found(rel: &str, e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::NotFound {
        format!("`{rel}` does not exist")
    } else {
        format!("cannot open `{rel}`: {e}")
    }
}

/// Open `path` without following a symbolic link in its last component; `create` makes a new
/// file (failing if one exists).
fn open_nofollow(path: &Path, create: bool) -> io::Result<fs::File> {
    let mut opts = fs::OpenOptions::new();
    if create {
        opts.write(true).create_new(true);
    } else {
        opts.read(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NOFOLLOW);
    }
    opts.open(path)
}

fn path_arg<'a>(tool: &str, args: &'a Value, required: bool) -> Result<&'a str, ToolError> {
    match args.get("path") {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) if !required => Ok(""),
        _ => Err(invalid(tool, "`path` must be a string")),
    }
}

/// Runs blocking file work off the async executor.
async fn blocking<T: Send + 'static>(
    tool: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ToolError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|m| failed(tool, m)),
        Err(e) => Err(failed(
            tool,
            format!("the file operation did not finish: {e}"),
        )),
    }
}

/// `file_read {path}` → `{path, content, size, truncated}`. Read-only.
#[derive(Clone, Debug)]
pub struct FileReadTool {
    spec: ToolSpec,
    sandbox: Arc<Sandbox>,
}

/// `file_write {path, content}` → `{path, bytes, created, changed}`. Idempotent: it replaces
/// the whole file, so repeating a call leaves the same state (and does not touch the file when
/// the content is already there). Missing parent directories are created.
#[derive(Clone, Debug)]
pub struct FileWriteTool {
    spec: ToolSpec,
    sandbox: Arc<Sandbox>,
}

/// `file_list {path?}` → `{path, entries: [{name, type, size?}], truncated}`, sorted by name,
/// not recursive. Read-only.
#[derive(Clone, Debug)]
pub struct FileListTool {
    spec: ToolSpec,
    sandbox: Arc<Sandbox>,
}

/// The three file tools sharing one sandbox.
pub fn file_tools(sandbox: Arc<Sandbox>) -> (FileReadTool, FileWriteTool, FileListTool) {
    let c = sandbox.config().clone();
    let path_schema =
        |desc: &str| json!({"type": "string", "maxLength": 4096, "description": desc});
    (
        FileReadTool {
            spec: ToolSpec::new(
                FILE_READ,
                format!(
                    "Read a UTF-8 text file from the working directory (at most {} bytes are returned).",
                    c.max_read_bytes
                ),
                json!({
                    "type": "object",
                    "properties": {"path": path_schema("Path relative to the working directory, e.g. `notes/today.md`.")},
                    "required": ["path"],
                    "additionalProperties": false
                }),
            )
            .with_effect(SideEffect::ReadOnly),
            sandbox: sandbox.clone(),
        },
        FileWriteTool {
            spec: ToolSpec::new(
                FILE_WRITE,
                format!(
                    "Write a UTF-8 text file in the working directory, replacing it whole if it \
                     exists and creating missing directories (at most {} bytes).",
                    c.max_write_bytes
                ),
                json!({
                    "type": "object",
                    "properties": {
                        "path": path_schema("Path relative to the working directory, e.g. `out/report.md`."),
                        "content": {"type": "string", "maxLength": c.max_write_bytes, "description": "The whole new content."}
                    },
                    "required": ["path", "content"],
                    "additionalProperties": false
                }),
            )
            .with_effect(SideEffect::Idempotent),
            sandbox: sandbox.clone(),
        },
        FileListTool {
            spec: ToolSpec::new(
                FILE_LIST,
                format!(
                    "List a directory of the working directory (its root if no path is given; at most {} entries).",
                    c.max_list_entries
                ),
                json!({
                    "type": "object",
                    "properties": {"path": path_schema("Directory relative to the working directory; omit for the root.")},
                    "additionalProperties": false
                }),
            )
            .with_effect(SideEffect::ReadOnly),
            sandbox,
        },
    )
}

impl Tool for FileReadTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Value, _ctx: ToolContext) -> Result<Value, ToolError> {
        let path = path_arg(&self.spec.name, &args, true)?.to_string();
        let sandbox = self.sandbox.clone();
        blocking(&self.spec.name, move || sandbox.read(&path)).await
    }
}

impl Tool for FileWriteTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Value, _ctx: ToolContext) -> Result<Value, ToolError> {
        let path = path_arg(&self.spec.name, &args, true)?.to_string();
        let Some(content) = args.get("content").and_then(Value::as_str) else {
            return Err(invalid(&self.spec.name, "`content` must be a string"));
        };
        let content = content.to_string();
        let sandbox = self.sandbox.clone();
        blocking(&self.spec.name, move || sandbox.write(&path, &content)).await
    }
}

impl Tool for FileListTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Value, _ctx: ToolContext) -> Result<Value, ToolError> {
        let path = path_arg(&self.spec.name, &args, false)?.to_string();
        let sandbox = self.sandbox.clone();
        blocking(&self.spec.name, move || sandbox.list(&path)).await
    }
}
