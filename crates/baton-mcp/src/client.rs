//! The connection to one MCP server.

use crate::config::{
    INHERITED_ENV_VARS, MAX_TOOL_NAME_LEN, McpServerConfig, McpTransport, tool_name,
};
use crate::error::McpError;
use crate::tool::{McpTool, ToolHints, convert_result, normalise_schema};
use baton_core::{DynTool, ToolError, ToolSpec};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ClientCapabilities, ClientConfig, Implementation,
    MetaObject, RequestMetaObject,
};
use rmcp::service::{
    ClientInitializeError, Peer, RoleClient, RunningService, ServiceError, ServiceExt,
};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

/// How much of a stdio server's stderr is kept for error messages.
const STDERR_TAIL_BYTES: usize = 4096;

/// How long [`McpClient::close`] waits for the MCP shutdown sequence before killing.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(8);

/// The `_meta` key under which a call's idempotency key is sent.
pub const IDEMPOTENCY_META_KEY: &str = "baton/idempotency_key";

type Service = RunningService<RoleClient, ClientConfig>;

/// What the server said about itself in the handshake.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct McpServerInfo {
    /// The implementation's name (`serverInfo.name`), if given.
    pub name: Option<String>,
    /// The implementation's version, if given.
    pub version: Option<String>,
    /// The negotiated protocol version.
    pub protocol_version: String,
    /// The server's instructions for using it, if any.
    pub instructions: Option<String>,
}

/// A tool of the server that is not offered to baton, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedTool {
    /// The server's name for it.
    pub remote_name: String,
    /// Why it was skipped.
    pub reason: String,
}

/// The part of a client its tools share.
pub(crate) struct Connection {
    pub(crate) server: String,
    peer: Peer<RoleClient>,
    closed: AtomicBool,
    stderr: Option<Arc<StderrTail>>,
}

impl Connection {
    /// Calls the server's tool `remote` on behalf of the baton tool `tool`.
    pub(crate) async fn call(
        &self,
        tool: &str,
        remote: &str,
        args: Value,
        idempotency_key: &str,
        timeout: Duration,
    ) -> Result<Value, ToolError> {
        let failed = |message: String| ToolError::Failed {
            tool: tool.to_owned(),
            message,
        };
        if self.closed.load(Ordering::SeqCst) {
            return Err(failed(format!("MCP server `{}` is closed", self.server)));
        }
        let mut params = CallToolRequestParams::new(remote.to_owned());
        match args {
            Value::Object(args) => params = params.with_arguments(args),
            Value::Null => {}
            other => {
                return Err(failed(format!(
                    "arguments must be a JSON object, not {other}"
                )));
            }
        }
        if !idempotency_key.is_empty() {
            let mut meta = serde_json::Map::new();
            meta.insert(IDEMPOTENCY_META_KEY.into(), idempotency_key.into());
            params.meta = Some(RequestMetaObject(MetaObject(meta)));
        }
        // Dropping the request on timeout sends `notifications/cancelled` to the server.
        let response = match tokio::time::timeout(timeout, self.peer.call_tool_once(params)).await {
            Err(_) => {
                return Err(ToolError::Timeout {
                    tool: tool.to_owned(),
                    after_ms: millis(timeout),
                });
            }
            Ok(Err(ServiceError::Timeout { timeout })) => {
                return Err(ToolError::Timeout {
                    tool: tool.to_owned(),
                    after_ms: millis(timeout),
                });
            }
            Ok(Err(err)) => return Err(failed(self.describe_service_error(&err).await)),
            Ok(Ok(response)) => response,
        };
        let result = match response {
            CallToolResponse::Complete(result) => result,
            CallToolResponse::InputRequired(_) => {
                return Err(failed(format!(
                    "MCP server `{}` asked for user input (elicitation or sampling) to complete \
                     `{remote}`, which baton does not provide",
                    self.server
                )));
            }
            CallToolResponse::Task(_) => {
                return Err(failed(format!(
                    "MCP server `{}` turned the call of `{remote}` into a task, which baton does \
                     not support",
                    self.server
                )));
            }
            _ => {
                return Err(failed(format!(
                    "MCP server `{}` answered the call of `{remote}` with a kind of result baton \
                     does not know",
                    self.server
                )));
            }
        };
        let wire = serde_json::to_value(&result).map_err(|e| {
            failed(format!(
                "cannot read the result from MCP server `{}`: {e}",
                self.server
            ))
        })?;
        convert_result(tool, wire)
    }

    async fn describe_service_error(&self, err: &ServiceError) -> String {
        match err {
            ServiceError::McpError(data) => {
                let mut message = format!(
                    "MCP server `{}` returned error {}: {}",
                    self.server, data.code.0, data.message
                );
                if let Some(data) = &data.data {
                    message.push_str(&format!(" ({data})"));
                }
                message
            }
            ServiceError::TransportClosed | ServiceError::TransportSend(_) => {
                let mut message = if self.closed.load(Ordering::SeqCst) {
                    format!("MCP server `{}` is closed", self.server)
                } else {
                    let why = match err {
                        ServiceError::TransportSend(e) => error_chain(e.error.as_ref()),
                        _ => "connection closed".into(),
                    };
                    format!(
                        "MCP server `{}` is no longer connected ({why})",
                        self.server
                    )
                };
                if let Some(stderr) = &self.stderr {
                    let tail = stderr.text();
                    if !tail.trim().is_empty() {
                        message.push_str("; its stderr ends with:\n");
                        message.push_str(tail.trim());
                    }
                }
                message
            }
            other => format!("MCP server `{}`: {other}", self.server),
        }
    }
}

/// An error and its sources, as one line, without repeating a source already in the text.
///
/// The HTTP client's error is not a `source` of rmcp's error, so it is looked for by type.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    type HttpError = StreamableHttpError<reqwest::Error>;
    if let Some(StreamableHttpError::Client(e)) = err.downcast_ref::<HttpError>() {
        return error_chain(e);
    }
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// Why the handshake failed, without rmcp's internal type names.
fn describe_init_error(err: &ClientInitializeError) -> String {
    match err {
        ClientInitializeError::TransportError { error, context } => {
            format!("{} ({context})", error_chain(error.error.as_ref()))
        }
        ClientInitializeError::ConnectionClosed(during) => {
            format!("the connection closed during {during}")
        }
        other => error_chain(other),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The last bytes a stdio server wrote on stderr.
#[derive(Default)]
struct StderrTail {
    bytes: Mutex<Vec<u8>>,
}

impl StderrTail {
    fn push(&self, chunk: &[u8]) {
        let mut bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        bytes.extend_from_slice(chunk);
        if bytes.len() > STDERR_TAIL_BYTES {
            let excess = bytes.len() - STDERR_TAIL_BYTES;
            bytes.drain(..excess);
        }
    }

    fn text(&self) -> String {
        let bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Kills a stdio server's whole process group when dropped, so that neither the server nor
/// anything it started (`npx` starts `node`, `sh -c` starts the program) outlives the client.
struct ProcessGroup {
    #[cfg_attr(not(unix), allow(dead_code))]
    pgid: u32,
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Ok(pgid) = i32::try_from(self.pgid)
            && pgid > 1
        {
            // ESRCH (already gone) is fine.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A connection to one MCP server, whose tools it offers as baton tools.
///
/// [`connect`](Self::connect) starts the server (stdio) or opens a session (HTTP), performs the
/// MCP handshake and lists the server's tools once; [`tools`](Self::tools) returns them as
/// baton tools named `<server>__<tool>`.
///
/// A stdio server runs in a process group of its own. Dropping the client kills that group at
/// once (SIGKILL), so no server process outlives it; [`close`](Self::close) shuts the server
/// down gently first (closes its stdin, waits, then SIGTERM, then SIGKILL). The tools do not
/// keep the server alive: keep the client for as long as its tools are in use.
pub struct McpClient {
    conn: Arc<Connection>,
    service: Option<Service>,
    group: Option<ProcessGroup>,
    stderr_reader: Option<JoinHandle<()>>,
    pid: Option<u32>,
    info: McpServerInfo,
    tools: Vec<McpTool>,
    skipped: Vec<SkippedTool>,
    timeout: Duration,
}

impl std::fmt::Debug for McpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpClient")
            .field("server", &self.conn.server)
            .field("pid", &self.pid)
            .field("info", &self.info)
            .field("tools", &self.tools)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

/// A transport being set up, with what must be cleaned up if the handshake fails.
struct Started {
    group: Option<ProcessGroup>,
    stderr: Option<Arc<StderrTail>>,
    stderr_reader: Option<JoinHandle<()>>,
    pid: Option<u32>,
}

impl Started {
    /// Kills the server (if local) and returns what it wrote on stderr.
    async fn abandon(mut self) -> String {
        drop(self.group.take());
        if let Some(reader) = self.stderr_reader.take() {
            // The group is dead, so stderr reaches its end promptly.
            let _ = tokio::time::timeout(Duration::from_millis(500), reader).await;
        }
        self.stderr.as_ref().map(|s| s.text()).unwrap_or_default()
    }
}

impl McpClient {
    /// Connects to the server: starts it or opens an HTTP session, performs the MCP handshake
    /// and lists its tools, all within the configuration's `startup_timeout`.
    pub async fn connect(config: McpServerConfig) -> Result<McpClient, McpError> {
        let server = config.name.clone();
        config
            .validate()
            .map_err(|message| McpError::InvalidConfig {
                server: server.clone(),
                message,
            })?;
        let client_info = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("baton", env!("CARGO_PKG_VERSION")),
        );

        let (handshake, started) = match &config.transport {
            McpTransport::Stdio {
                command,
                env,
                inherit_env,
                cwd,
            } => {
                let mut cmd = tokio::process::Command::new(&command[0]);
                if !inherit_env {
                    cmd.env_clear();
                    for key in INHERITED_ENV_VARS {
                        if let Some(value) = std::env::var_os(key) {
                            cmd.env(key, value);
                        }
                    }
                }
                cmd.args(&command[1..]).envs(env).kill_on_drop(true);
                if let Some(cwd) = cwd {
                    cmd.current_dir(cwd);
                }
                #[cfg(unix)]
                cmd.process_group(0);
                let (transport, stderr) = TokioChildProcess::builder(cmd)
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|source| McpError::Spawn {
                        server: server.clone(),
                        command: command.join(" "),
                        source,
                    })?;
                let pid = transport.id();
                let tail = Arc::new(StderrTail::default());
                let stderr_reader = stderr.map(|mut stderr| {
                    let tail = Arc::clone(&tail);
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = stderr.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            tail.push(&buf[..n]);
                        }
                    })
                });
                let started = Started {
                    group: pid.map(|pgid| ProcessGroup { pgid }),
                    stderr: Some(tail),
                    stderr_reader,
                    pid,
                };
                let handshake: std::pin::Pin<Box<dyn Future<Output = _> + Send>> =
                    Box::pin(client_info.serve(transport));
                (handshake, started)
            }
            McpTransport::Http { url, headers } => {
                let mut custom = HashMap::new();
                for (name, value) in headers {
                    // Validated above.
                    if let (Ok(name), Ok(value)) = (
                        http::HeaderName::from_bytes(name.as_bytes()),
                        http::HeaderValue::from_str(value),
                    ) {
                        custom.insert(name, value);
                    }
                }
                let transport = StreamableHttpClientTransport::from_config(
                    StreamableHttpClientTransportConfig::with_uri(url.as_str())
                        .custom_headers(custom),
                );
                let started = Started {
                    group: None,
                    stderr: None,
                    stderr_reader: None,
                    pid: None,
                };
                let handshake: std::pin::Pin<Box<dyn Future<Output = _> + Send>> =
                    Box::pin(client_info.serve(transport));
                (handshake, started)
            }
        };

        let startup = async {
            let service = handshake.await.map_err(|e| Err(describe_init_error(&e)))?;
            match service.list_all_tools().await {
                Ok(tools) => Ok((service, tools)),
                Err(e) => Err(Ok(error_chain(&e))),
            }
        };
        let (service, listed) = match tokio::time::timeout(config.startup_timeout, startup).await {
            Ok(Ok(ready)) => ready,
            Ok(Err(Err(message))) => {
                return Err(McpError::Handshake {
                    server,
                    message,
                    stderr: started.abandon().await,
                });
            }
            Ok(Err(Ok(message))) => {
                drop(started.abandon().await);
                return Err(McpError::Protocol {
                    server,
                    request: "tools/list".into(),
                    message,
                });
            }
            Err(_) => {
                return Err(McpError::StartupTimeout {
                    server,
                    after_ms: millis(config.startup_timeout),
                    stderr: started.abandon().await,
                });
            }
        };

        let info = service
            .peer_info()
            .map(|p| McpServerInfo {
                name: p.server_info.as_ref().map(|i| i.name.clone()),
                version: p.server_info.as_ref().map(|i| i.version.clone()),
                protocol_version: p.protocol_version.to_string(),
                instructions: p.instructions.clone(),
            })
            .unwrap_or_default();
        let conn = Arc::new(Connection {
            server: server.clone(),
            peer: service.peer().clone(),
            closed: AtomicBool::new(false),
            stderr: started.stderr.clone(),
        });

        let mut tools = Vec::new();
        let mut skipped = Vec::new();
        let mut names = BTreeSet::new();
        for tool in listed {
            let remote = tool.name.to_string();
            let name = tool_name(&server, &remote);
            if name.len() > MAX_TOOL_NAME_LEN {
                skipped.push(SkippedTool {
                    remote_name: remote,
                    reason: format!(
                        "`{name}` is longer than the {MAX_TOOL_NAME_LEN} characters model APIs accept"
                    ),
                });
                continue;
            }
            if !names.insert(name.clone()) {
                skipped.push(SkippedTool {
                    remote_name: remote,
                    reason: format!("another tool of the server is also called `{name}`"),
                });
                continue;
            }
            let hints = tool
                .annotations
                .as_ref()
                .map(|a| ToolHints {
                    read_only: a.read_only_hint,
                    destructive: a.destructive_hint,
                    idempotent: a.idempotent_hint,
                    open_world: a.open_world_hint,
                })
                .unwrap_or_default();
            let effect = config
                .effects
                .get(&remote)
                .copied()
                .unwrap_or_else(|| hints.effect());
            let description = tool
                .description
                .as_deref()
                .map(str::to_owned)
                .or_else(|| tool.title.clone())
                .unwrap_or_default();
            let spec = ToolSpec::new(name, description, normalise_schema(&tool.input_schema))
                .with_effect(effect);
            let output_schema = tool
                .output_schema
                .as_ref()
                .map(|s| Value::Object(s.as_ref().clone()));
            tools.push(McpTool::new(
                spec,
                remote,
                hints,
                output_schema,
                config.timeout,
                Arc::clone(&conn),
            ));
        }

        Ok(McpClient {
            conn,
            service: Some(service),
            group: started.group,
            stderr_reader: started.stderr_reader,
            pid: started.pid,
            info,
            tools,
            skipped,
            timeout: config.timeout,
        })
    }

    /// The server's name (the prefix of its tools' names).
    pub fn name(&self) -> &str {
        &self.conn.server
    }

    /// What the server said about itself in the handshake.
    pub fn server_info(&self) -> &McpServerInfo {
        &self.info
    }

    /// The process id of a stdio server (also its process group id); `None` for HTTP.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The server's tools as baton tools, in the server's order.
    pub fn tools(&self) -> Vec<Arc<dyn DynTool>> {
        self.tools
            .iter()
            .map(|t| Arc::new(t.clone()) as Arc<dyn DynTool>)
            .collect()
    }

    /// The server's tools with their MCP details (to change a tool's timeout or class).
    pub fn mcp_tools(&self) -> &[McpTool] {
        &self.tools
    }

    /// The server's tools that are not offered (name too long, or clashing once sanitised).
    pub fn skipped_tools(&self) -> &[SkippedTool] {
        &self.skipped
    }

    /// Calls the server's tool `tool` by its own (unprefixed) name, whether or not it was
    /// listed, with the default timeout. Errors are as for [`McpTool`]'s calls.
    pub async fn call_tool(&self, tool: &str, args: Value) -> Result<Value, ToolError> {
        self.conn
            .call(&tool_name(self.name(), tool), tool, args, "", self.timeout)
            .await
    }

    /// Shuts the server down: for stdio, closes its stdin and waits for it to exit, then sends
    /// SIGTERM, then SIGKILL (MCP's shutdown sequence), and kills whatever is left of its
    /// process group; for HTTP, ends the session. Calls of its tools fail from then on.
    pub async fn close(mut self) -> Result<(), McpError> {
        self.shutdown().await
    }

    async fn shutdown(&mut self) -> Result<(), McpError> {
        self.conn.closed.store(true, Ordering::SeqCst);
        let result = match self.service.take() {
            Some(mut service) => match service.close_with_timeout(CLOSE_TIMEOUT).await {
                Ok(_) => Ok(()),
                Err(e) => Err(McpError::Protocol {
                    server: self.conn.server.clone(),
                    request: "shutdown".into(),
                    message: e.to_string(),
                }),
            },
            None => Ok(()),
        };
        drop(self.group.take());
        if let Some(reader) = self.stderr_reader.take() {
            let _ = tokio::time::timeout(Duration::from_millis(500), reader).await;
        }
        result
    }
}

impl Drop for McpClient {
    fn drop(&mut self) {
        self.conn.closed.store(true, Ordering::SeqCst);
        // Kill the process group now; dropping the service then ends the session task.
        drop(self.group.take());
        drop(self.service.take());
        if let Some(reader) = self.stderr_reader.take() {
            reader.abort();
        }
    }
}
