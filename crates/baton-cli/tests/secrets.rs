//! Secrets are resolved only when a tool runs and appear nowhere else: not in prompts, events,
//! the store, the CLI's output. The test runs a real workflow whose agent calls `http_get` on a
//! local server that requires the secret (and echoes it back, as a careless API might), then
//! searches everything baton wrote for the secret's value.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

const SECRET: &str = "s3cr3t-token-8c1f0e";

fn serve(seen: Arc<Mutex<Vec<String>>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let auth = req
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                .unwrap_or("")
                .to_string();
            seen.lock().unwrap().push(auth.clone());
            // A careless API that echoes the credential it got.
            let body = format!(
                "{{\"status\": \"ok\", \"you_sent\": \"{}\"}}",
                auth.replace('"', "")
            );
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                body.len(),
                body
            );
            let _ = s.write_all(resp.as_bytes());
        }
    });
    port
}

#[test]
fn a_secret_reaches_the_tool_and_nothing_else() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = serve(seen.clone());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wf.yaml"),
        r#"
name: secret-demo
secrets: [API_TOKEN]
models:
  default: {provider: scripted, script: script.yaml}
builtins:
  http_get:
    allow_hosts: ["127.0.0.1"]
    allow_http: true
    host_headers:
      "127.0.0.1": {Authorization: "Bearer {{secret.API_TOKEN}}"}
agents:
  fetcher:
    instructions: "Fetch the status. The token is never shown to you."
    tools: [http_get]
state: {out: replace}
steps:
  - {id: fetch, agent: fetcher, prompt: "Get the status", output: out}
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("script.yaml"),
        format!(
            "agents:\n  fetcher:\n    - tool_calls: [{{name: http_get, args: {{url: \"http://127.0.0.1:{port}/status\"}}}}]\n    - text: \"status ok\"\n"
        ),
    )
    .unwrap();
    let db = dir.path().join("db.sqlite");
    let baton = env!("CARGO_BIN_EXE_baton");
    let out = Command::new(baton)
        .current_dir(dir.path())
        .env("BATON_STORE", format!("sqlite:{}", db.display()))
        .env("BATON_SECRET_API_TOKEN", SECRET)
        .args(["run", "wf.yaml", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The tool used it.
    let got = seen.lock().unwrap().clone();
    assert!(
        got.iter().any(|a| a.contains(SECRET)),
        "the server never saw the secret: {got:?}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["outputs"]["out"], "status ok");
    let run = report["run_id"].as_str().unwrap().to_string();
    // Nothing else holds it: output, events, the database files.
    let events = Command::new(baton)
        .current_dir(dir.path())
        .env("BATON_STORE", format!("sqlite:{}", db.display()))
        .args(["events", &run, "--json"])
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&events.stdout).to_string();
    assert!(events.contains("http_get"), "{events}");
    for (what, text) in [
        ("stdout", &stdout),
        ("stderr", &stderr),
        ("events", &events),
    ] {
        assert!(!text.contains(SECRET), "the secret leaked into {what}");
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(
            !hay.contains(SECRET),
            "the secret leaked into {}",
            path.display()
        );
    }
    // The echoed credential reached the model redacted.
    assert!(
        events.contains("***") || events.contains("[redacted]") || !events.contains("Bearer s3"),
        "{events}"
    );
}

#[test]
fn an_undeclared_secret_is_a_located_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wf.yaml"),
        r#"
name: undeclared
tools:
  notify:
    command: [python3, notify.py]
    env: {TOKEN: "{{secret.SLACK_TOKEN}}"}
state: {x: replace}
steps:
  - {id: a, run: "echo 1", output: x}
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .current_dir(dir.path())
        .args(["validate", "wf.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wf.yaml:4:3"), "{err}");
    assert!(
        err.contains("secret `SLACK_TOKEN` is used but not declared"),
        "{err}"
    );
}
