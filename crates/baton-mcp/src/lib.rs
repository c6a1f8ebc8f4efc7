//! # baton-mcp
//!
//! The tools of [MCP](https://modelcontextprotocol.io) (Model Context Protocol) servers as
//! baton [`Tool`](baton_core::Tool)s.
//!
//! ```no_run
//! # async fn demo() -> Result<(), baton_mcp::McpError> {
//! use baton_mcp::{McpClient, McpServerConfig};
//!
//! let client = McpClient::connect(McpServerConfig::stdio(
//!     "everything",
//!     ["npx", "-y", "@modelcontextprotocol/server-everything"],
//! ))
//! .await?;
//! for tool in client.tools() {
//!     println!("{}: {}", tool.spec().name, tool.spec().description); // everything__echo: ...
//! }
//! client.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! - **Transports**: a local program speaking MCP over stdio ([`McpTransport::Stdio`]), or a
//!   server speaking streamable HTTP ([`McpTransport::Http`]).
//! - **Names**: the tool `echo` of the server `everything` is `everything__echo`
//!   ([`tool_name`]; characters other than ASCII letters, digits, `_` and `-` become `_`).
//! - **Specs**: the server's description, its input schema as `parameters` (an empty schema
//!   is `{"type": "object"}`), and a side-effect class from the tool's annotations
//!   ([`ToolHints::effect`]) unless [`McpServerConfig::with_effect`] pins one.
//! - **Results**: `structuredContent` if present; else the text content, parsed as JSON when it
//!   is JSON; images, audio and resources become small JSON objects describing them (their
//!   bytes are not passed on). `isError: true`, JSON-RPC errors and lost connections are
//!   [`ToolError::Failed`](baton_core::ToolError::Failed) naming the server; a call running past
//!   its timeout is [`ToolError::Timeout`](baton_core::ToolError::Timeout) and is cancelled on
//!   the server.
//! - **Lifetime**: dropping an [`McpClient`] kills a stdio server's process group;
//!   [`McpClient::close`] shuts it down gently.
//!
//! The MCP implementation (`rmcp`) stays behind these types: none of its types is part of this
//! crate's API.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod client;
mod config;
mod error;
mod tool;

pub use client::{IDEMPOTENCY_META_KEY, McpClient, McpServerInfo, SkippedTool};
pub use config::{
    DEFAULT_STARTUP_TIMEOUT, DEFAULT_TIMEOUT, INHERITED_ENV_VARS, MAX_TOOL_NAME_LEN,
    McpServerConfig, McpTransport, SEPARATOR, pattern_matches, tool_name,
};
pub use error::McpError;
pub use tool::{McpTool, ToolHints};
