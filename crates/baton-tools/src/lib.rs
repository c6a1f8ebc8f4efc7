//! # baton-tools
//!
//! Ready-made [`Tool`](baton_core::Tool)s for baton:
//!
//! - [`SubprocessTool`]: a tool backed by any program that reads a JSON request on stdin and
//!   prints a JSON result on stdout (a Python script, a shell one-liner, a compiled binary).
//!   The lower-level [`subprocess::run_json`] runs such a program once.
//! - [`FnTool`]: a tool backed by a Rust closure, synchronous or async.
//! - [`builtin`]: the built-in tools (`http_get` with a host allow-list, read-only
//!   `sql_query`, `file_read` / `file_write` / `file_list` inside a sandbox directory,
//!   `calculator`, `outbox`), and [`builtin::registry`] to build them from a
//!   [`BuiltinConfig`].
//! - [`secrets`]: secrets referenced by name (`{{secret.NAME}}`), resolved only inside a tool
//!   call, and redacted from what the tool returns.
//!
//! All of them turn failures into [`ToolError`](baton_core::ToolError)s whose messages say what
//! happened, so they can be shown to a user or handed back to a model.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod builtin;
mod fn_tool;
pub mod secrets;
pub mod subprocess;
mod subprocess_tool;

pub use builtin::{BuiltinConfig, BuiltinError, registry};
pub use fn_tool::FnTool;
pub use secrets::{EnvSecrets, MemorySecrets, Secret, SecretStore, SecretString};
pub use subprocess::{SubprocessError, SubprocessOptions, run_json};
pub use subprocess_tool::SubprocessTool;
