//! Tests against a real MCP server: `@modelcontextprotocol/server-everything` from npm.
//!
//! Install it with `crates/baton-mcp/tests/setup-mcp-server.sh` (into `$BATON_MCP_SERVER_DIR`,
//! default `$HOME/.cache/baton/mcp-servers`). Without it these tests print a warning and pass,
//! except under `CI=true`, where they fail.

#![allow(clippy::unwrap_used, missing_docs)]

use baton_core::{SideEffect, ToolContext, ToolError};
use baton_mcp::{McpClient, McpError, McpServerConfig, McpTool};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SERVER: &str = "everything";

/// The server's entry point, or `None` (after a warning) when it is not installed.
fn server_entry() -> Option<PathBuf> {
    let dir = std::env::var_os("BATON_MCP_SERVER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/baton/mcp-servers")
        });
    let entry = dir.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if entry.is_file() && node {
        return Some(entry);
    }
    let why = if node {
        format!("{} does not exist", entry.display())
    } else {
        "`node` is not on PATH".to_owned()
    };
    let msg = format!(
        "the MCP test server is not installed ({why}); run \
         crates/baton-mcp/tests/setup-mcp-server.sh (BATON_MCP_SERVER_DIR={})",
        dir.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("warning: skipping: {msg}");
    None
}

fn stdio_config(entry: &Path) -> McpServerConfig {
    McpServerConfig::stdio(SERVER, ["node".to_owned(), entry.display().to_string()])
}

async fn connect(entry: &Path) -> McpClient {
    McpClient::connect(stdio_config(entry)).await.unwrap()
}

fn tool<'a>(client: &'a McpClient, remote: &str) -> &'a McpTool {
    client
        .mcp_tools()
        .iter()
        .find(|t| t.remote_name() == remote)
        .unwrap_or_else(|| panic!("the server has no tool `{remote}`"))
}

async fn call(client: &McpClient, remote: &str, args: Value) -> Result<Value, ToolError> {
    let tool = client
        .tools()
        .into_iter()
        .find(|t| t.spec().name == format!("{SERVER}__{remote}"))
        .unwrap();
    tool.call_dyn(args, ToolContext::default()).await
}

/// Whether a process is running (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // pid (comm) state ...: the state follows the last ')'.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

async fn wait_gone(pid: u32, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    !alive(pid)
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) {
            let rest = stat.rsplit(')').next().unwrap_or("");
            let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
            if ppid == Some(pid) {
                out.push(child);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_prefixed_tools_with_schemas_and_effects() {
    let Some(entry) = server_entry() else { return };
    let client = connect(&entry).await;
    let names: Vec<String> = client
        .tools()
        .iter()
        .map(|t| t.spec().name.clone())
        .collect();
    eprintln!("server: {:?}", client.server_info());
    eprintln!("tools: {names:?}");
    assert!(
        client.skipped_tools().is_empty(),
        "{:?}",
        client.skipped_tools()
    );
    assert_eq!(client.name(), SERVER);
    assert_eq!(
        client.server_info().name.as_deref(),
        Some("mcp-servers/everything")
    );
    for expected in ["echo", "get-sum", "trigger-long-running-operation"] {
        let name = format!("{SERVER}__{expected}");
        assert!(names.contains(&name), "no `{name}` in {names:?}");
    }
    assert!(names.iter().all(|n| n.starts_with("everything__")));
    assert!(names.iter().all(|n| {
        n.len() <= 64
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
    }));

    let echo = tool(&client, "echo");
    let spec = baton_core::Tool::spec(echo);
    assert_eq!(spec.name, "everything__echo");
    assert_eq!(spec.description, "Echoes back the input string");
    assert_eq!(spec.parameters["type"], "object");
    assert_eq!(spec.parameters["properties"]["message"]["type"], "string");
    assert_eq!(spec.parameters["required"], json!(["message"]));
    assert_eq!(spec.effect, SideEffect::ReadOnly);
    assert_eq!(echo.hints().read_only, Some(true));

    eprintln!("echo parameters: {}", spec.parameters);
    // Every schema compiles as the runtime compiles it, and checks arguments.
    for t in client.tools() {
        let schema = &t.spec().parameters;
        let validator = jsonschema::validator_for(schema)
            .unwrap_or_else(|e| panic!("{}: {e}: {schema}", t.spec().name));
        if t.spec().name == "everything__echo" {
            assert!(validator.is_valid(&json!({"message": "hi"})));
            assert!(!validator.is_valid(&json!({"message": 3})));
            assert!(!validator.is_valid(&json!({})));
        }
    }

    let sum = baton_core::Tool::spec(tool(&client, "get-sum"));
    assert_eq!(sum.parameters["properties"]["a"]["type"], "number");
    assert_eq!(sum.parameters["properties"]["b"]["type"], "number");

    // readOnlyHint false, idempotentHint true.
    let gzip = baton_core::Tool::spec(tool(&client, "gzip-file-as-resource"));
    assert_eq!(gzip.effect, SideEffect::Idempotent);
    // readOnlyHint false, destructiveHint false, idempotentHint false.
    let toggle = baton_core::Tool::spec(tool(&client, "toggle-simulated-logging"));
    assert_eq!(toggle.effect, SideEffect::Irreversible);

    let structured = tool(&client, "get-structured-content");
    assert_eq!(
        structured.output_schema().unwrap()["properties"]["temperature"]["type"],
        "number"
    );
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effect_overrides_win_over_hints() {
    let Some(entry) = server_entry() else { return };
    let client =
        McpClient::connect(stdio_config(&entry).with_effect("echo", SideEffect::Compensatable))
            .await
            .unwrap();
    assert_eq!(
        baton_core::Tool::spec(tool(&client, "echo")).effect,
        SideEffect::Compensatable
    );
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_tools_and_converts_results() {
    let Some(entry) = server_entry() else { return };
    let client = connect(&entry).await;

    let echoed = call(&client, "echo", json!({"message": "hello baton"})).await;
    assert_eq!(echoed.unwrap(), json!("Echo: hello baton"));

    let sum = call(&client, "get-sum", json!({"a": 2, "b": 3.5})).await;
    assert_eq!(sum.unwrap(), json!("The sum of 2 and 3.5 is 5.5."));

    // structuredContent wins over the text content.
    let weather = call(
        &client,
        "get-structured-content",
        json!({"location": "Chicago"}),
    )
    .await
    .unwrap();
    assert_eq!(
        weather,
        json!({"temperature": 36, "conditions": "Light rain / drizzle", "humidity": 82})
    );

    // Text and an image: described block by block, without the image's bytes.
    let image = call(&client, "get-tiny-image", json!({})).await.unwrap();
    eprintln!("get-tiny-image: {image}");
    let blocks = image.as_array().unwrap();
    let img = blocks.iter().find(|b| b["type"] == "image").unwrap();
    assert_eq!(img["mime_type"], "image/png");
    assert!(img["bytes"].as_u64().unwrap() > 0);
    assert!(img.get("data").is_none());
    assert!(blocks.iter().any(|b| b["type"] == "text"));

    // The same through the client, by the server's own name.
    let again = client
        .call_tool("echo", json!({"message": "direct"}))
        .await
        .unwrap();
    assert_eq!(again, json!("Echo: direct"));
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_and_unknown_tools_fail() {
    let Some(entry) = server_entry() else { return };
    let client = connect(&entry).await;

    let err = call(&client, "get-sum", json!({"a": "two", "b": 3}))
        .await
        .unwrap_err();
    eprintln!("invalid arguments: {err}");
    match &err {
        ToolError::Failed { tool, message } => {
            assert_eq!(tool, "everything__get-sum");
            assert!(!message.is_empty());
            assert!(
                message.contains("a") && message.to_lowercase().contains("number"),
                "{message}"
            );
        }
        other => panic!("expected Failed, got {other:?}"),
    }

    let err = client
        .call_tool("no-such-tool", json!({}))
        .await
        .unwrap_err();
    eprintln!("unknown tool: {err}");
    match &err {
        ToolError::Failed { tool, message } => {
            assert_eq!(tool, "everything__no-such-tool");
            assert!(message.contains("no-such-tool"), "{message}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }

    // Arguments that are not an object never reach the server.
    let err = call(&client, "echo", json!([1])).await.unwrap_err();
    assert!(err.to_string().contains("must be a JSON object"), "{err}");

    // The session survives all of that.
    let ok = call(&client, "echo", json!({"message": "still here"})).await;
    assert_eq!(ok.unwrap(), json!("Echo: still here"));
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_call_times_out_and_the_session_goes_on() {
    let Some(entry) = server_entry() else { return };
    let client = connect(&entry).await;
    let slow = tool(&client, "trigger-long-running-operation")
        .clone()
        .with_timeout(Duration::from_millis(400));
    let start = Instant::now();
    let err = baton_core::Tool::call(
        &slow,
        json!({"duration": 10, "steps": 10}),
        ToolContext::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        ToolError::Timeout {
            tool: "everything__trigger-long-running-operation".into(),
            after_ms: 400
        }
    );
    assert!(start.elapsed() < Duration::from_secs(3));

    // A short run of the same tool completes within its timeout.
    let quick = slow.clone().with_timeout(Duration::from_secs(10));
    let done = baton_core::Tool::call(
        &quick,
        json!({"duration": 0.2, "steps": 2}),
        ToolContext {
            idempotency_key: "run:step:1".into(),
            ..ToolContext::default()
        },
    )
    .await
    .unwrap();
    assert!(
        done.as_str()
            .unwrap()
            .contains("Long running operation completed"),
        "{done}"
    );
    let ok = call(&client, "echo", json!({"message": "after timeout"})).await;
    assert_eq!(ok.unwrap(), json!("Echo: after timeout"));
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_client_kills_the_server_and_its_children() {
    let Some(entry) = server_entry() else { return };
    // Through a shell that stays as the parent, as `npx` does: the server is a grandchild.
    let config = McpServerConfig::stdio(
        SERVER,
        [
            "sh".to_owned(),
            "-c".to_owned(),
            format!("node '{}'; exit 0", entry.display()),
        ],
    );
    let client = McpClient::connect(config).await.unwrap();
    let shell = client.pid().unwrap();
    let node = children(shell);
    assert_eq!(node.len(), 1, "expected one child of the shell: {node:?}");
    let node = node[0];
    assert!(alive(shell) && alive(node));
    let tools = client.tools();
    drop(client);
    assert!(
        wait_gone(node, Duration::from_secs(5)).await,
        "server {node} survived"
    );
    assert!(
        wait_gone(shell, Duration::from_secs(5)).await,
        "shell {shell} survived"
    );
    // And our child, the shell, is reaped: no zombie is left either.
    let start = Instant::now();
    while Path::new(&format!("/proc/{shell}")).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "shell {shell} is left as a zombie"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The tools do not keep the server alive; they fail clearly.
    let echo = tools
        .iter()
        .find(|t| t.spec().name == "everything__echo")
        .unwrap();
    let err = echo
        .call_dyn(json!({"message": "x"}), ToolContext::default())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ToolError::Failed {
            tool: "everything__echo".into(),
            message: "MCP server `everything` is closed".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_shuts_the_server_down() {
    let Some(entry) = server_entry() else { return };
    let client = connect(&entry).await;
    let pid = client.pid().unwrap();
    assert!(alive(pid));
    let start = Instant::now();
    client.close().await.unwrap();
    assert!(
        wait_gone(pid, Duration::from_secs(2)).await,
        "{pid} survived close"
    );
    eprintln!("close took {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamable_http_transport() {
    let Some(entry) = server_entry() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = tokio::process::Command::new("node")
        .arg(&entry)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Wait for it to listen.
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the HTTP server did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let url = format!("http://127.0.0.1:{port}/mcp");
    let client =
        McpClient::connect(McpServerConfig::http("remote", &url).with_header("X-Baton-Test", "1"))
            .await
            .unwrap();
    assert_eq!(client.pid(), None);
    let names: Vec<String> = client
        .tools()
        .iter()
        .map(|t| t.spec().name.clone())
        .collect();
    assert!(names.contains(&"remote__echo".to_owned()), "{names:?}");
    let echo = client
        .tools()
        .into_iter()
        .find(|t| t.spec().name == "remote__echo")
        .unwrap();
    let out = echo
        .call_dyn(json!({"message": "over http"}), ToolContext::default())
        .await
        .unwrap();
    assert_eq!(out, json!("Echo: over http"));
    let sum = client
        .call_tool("get-sum", json!({"a": 40, "b": 2}))
        .await
        .unwrap();
    assert_eq!(sum, json!("The sum of 40 and 2 is 42."));
    client.close().await.unwrap();

    // Nothing listens there: the handshake fails, naming the server.
    server.kill().await.unwrap();
    let err = McpClient::connect(
        McpServerConfig::http("remote", &url).with_startup_timeout(Duration::from_secs(10)),
    )
    .await
    .unwrap_err();
    eprintln!("unreachable: {err}");
    assert!(err.to_string().contains("MCP server `remote`"), "{err}");
}

// The following need no MCP server.

#[tokio::test]
async fn a_missing_program_is_a_spawn_error() {
    let err = McpClient::connect(McpServerConfig::stdio(
        "ghost",
        ["/nonexistent/mcp-server", "--stdio"],
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, McpError::Spawn { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("MCP server `ghost`: cannot start `/nonexistent/mcp-server --stdio`: "),
        "{msg}"
    );
}

#[tokio::test]
async fn a_program_that_exits_is_a_handshake_error_with_its_stderr() {
    let err = McpClient::connect(McpServerConfig::stdio(
        "broken",
        ["sh", "-c", "echo 'fatal: no token' >&2; exit 3"],
    ))
    .await
    .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, McpError::Handshake { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("MCP server `broken`: handshake failed: "),
        "{msg}"
    );
    assert!(msg.contains("fatal: no token"), "{msg}");
}

#[tokio::test]
async fn a_program_that_is_not_mcp_is_a_handshake_error() {
    let err = McpClient::connect(
        McpServerConfig::stdio("chatty", ["sh", "-c", "echo hello; sleep 30"])
            .with_startup_timeout(Duration::from_millis(1500)),
    )
    .await
    .unwrap_err();
    eprintln!("{err}");
    assert!(
        err.to_string().starts_with("MCP server `chatty`: "),
        "{err}"
    );
}

#[tokio::test]
async fn a_silent_program_times_out_and_is_killed() {
    let marker = format!("baton-mcp-silent-{}", std::process::id());
    let start = Instant::now();
    let err = McpClient::connect(
        McpServerConfig::stdio(
            "silent",
            [
                "sh".to_owned(),
                "-c".to_owned(),
                format!("sleep 30; echo {marker}"),
            ],
        )
        .with_startup_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3));
    match &err {
        McpError::StartupTimeout {
            server, after_ms, ..
        } => {
            assert_eq!(server, "silent");
            assert_eq!(*after_ms, 500);
        }
        other => panic!("expected StartupTimeout, got {other:?}"),
    }
    // No process of it is left.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains(&marker) && !cmdline.contains("cargo") {
            let pid: u32 = entry.file_name().to_str().unwrap().parse().unwrap();
            assert!(!alive(pid), "left behind: {pid} {cmdline}");
        }
    }
}

#[tokio::test]
async fn bad_configurations_are_rejected_before_starting_anything() {
    let err = McpClient::connect(McpServerConfig::stdio("bad.name", ["true"]))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "MCP server `bad.name`: invalid configuration: the server name `bad.name` may only \
         contain ASCII letters, digits, `_` and `-`"
    );
    let err = McpClient::connect(McpServerConfig::http("h", "localhost:3000"))
        .await
        .unwrap_err();
    assert!(matches!(err, McpError::InvalidConfig { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_fails_its_calls_clearly() {
    let Some(entry) = server_entry() else { return };
    let client = connect(&entry).await;
    let pid = client.pid().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(wait_gone(pid, Duration::from_secs(5)).await);
    let err = call(&client, "echo", json!({"message": "anyone?"}))
        .await
        .unwrap_err();
    eprintln!("dead server: {err}");
    match &err {
        ToolError::Failed { tool, message } => {
            assert_eq!(tool, "everything__echo");
            assert!(
                message.starts_with("MCP server `everything` is no longer connected"),
                "{message}"
            );
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    // Closing a client whose server is gone is fine.
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_servers_get_a_minimal_environment_unless_told_otherwise() {
    let Some(entry) = server_entry() else { return };
    // Cargo sets this for the test process; it stands for any secret in baton's environment.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());

    let client = McpClient::connect(stdio_config(&entry).with_env("BATON_TEST_VAR", "42"))
        .await
        .unwrap();
    let spec = baton_core::Tool::spec(tool(&client, "get-env"));
    assert_eq!(spec.parameters["type"], "object");
    let env = call(&client, "get-env", Value::Null).await.unwrap();
    assert_eq!(env["BATON_TEST_VAR"], "42");
    assert!(env.get("PATH").is_some(), "{env}");
    assert!(env.get("CARGO_MANIFEST_DIR").is_none(), "{env}");
    client.close().await.unwrap();

    let client = McpClient::connect(stdio_config(&entry).with_inherited_env(true))
        .await
        .unwrap();
    let env = call(&client, "get-env", json!({})).await.unwrap();
    assert!(env.get("CARGO_MANIFEST_DIR").is_some(), "{env}");
    client.close().await.unwrap();
}
