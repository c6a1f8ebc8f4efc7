//! Why connecting to an MCP server failed.

/// Why [`McpClient::connect`](crate::McpClient::connect) (or a later request of the client
/// itself) failed. Every message names the server.
///
/// Failures of tool calls are not `McpError`s but [`ToolError`](baton_core::ToolError)s.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpError {
    /// The configuration cannot work (bad name, empty command, bad URL or header).
    #[error("MCP server `{server}`: invalid configuration: {message}")]
    InvalidConfig {
        /// The server.
        server: String,
        /// What is wrong.
        message: String,
    },
    /// The server's program could not be started.
    #[error("MCP server `{server}`: cannot start `{command}`: {source}")]
    Spawn {
        /// The server.
        server: String,
        /// The program and its arguments, as one line.
        command: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The MCP handshake (`initialize`) failed: the program exited, wrote something other than
    /// MCP, the HTTP endpoint could not be reached or refused, or no protocol version was common.
    #[error(
        "MCP server `{server}`: handshake failed: {message}{}",
        stderr_suffix(stderr)
    )]
    Handshake {
        /// The server.
        server: String,
        /// What went wrong.
        message: String,
        /// The last lines the program wrote on stderr (stdio servers; may be empty).
        stderr: String,
    },
    /// Start-up, handshake and tool listing did not finish within the startup timeout.
    #[error(
        "MCP server `{server}`: not ready after {after_ms} ms (start-up, handshake and tools/list){}",
        stderr_suffix(stderr)
    )]
    StartupTimeout {
        /// The server.
        server: String,
        /// How long we waited.
        after_ms: u64,
        /// The last lines the program wrote on stderr (stdio servers; may be empty).
        stderr: String,
    },
    /// The server answered a request of the client (such as `tools/list`) with an error, or
    /// with something that is not MCP.
    #[error("MCP server `{server}`: {request} failed: {message}")]
    Protocol {
        /// The server.
        server: String,
        /// The request, such as `tools/list`.
        request: String,
        /// What went wrong.
        message: String,
    },
    /// The connection is closed.
    #[error("MCP server `{server}` is closed")]
    Closed {
        /// The server.
        server: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends with:\n{stderr}")
    }
}
