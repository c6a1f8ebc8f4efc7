//! `http_get` against a local HTTP server on 127.0.0.1: allowed fetches, refused hosts, schemes
//! and credentials (with no connection made), redirects re-checked at every hop, body limits,
//! timeouts and secrets in headers.

#![allow(clippy::unwrap_used)]

use baton_core::{SideEffect, Tool, ToolContext, ToolError};
use baton_tools::builtin::{HttpGetConfig, HttpGetTool};
use baton_tools::secrets::MemorySecrets;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A request the server saw: its path and headers.
type Request = (String, Vec<(String, String)>);

/// What the server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: Mutex<Vec<Request>>,
}

impl Seen {
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    fn paths(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }
    fn header(&self, path: &str, name: &str) -> Option<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .flat_map(|(_, h)| h.iter())
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

/// A tiny HTTP/1.1 server: one request per connection, routes below.
async fn server() -> (u16, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            s.connections.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                let mut lines = text.split("\r\n");
                let path = lines
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .unwrap_or("/")
                    .to_string();
                let headers: Vec<(String, String)> = lines
                    .take_while(|l| !l.is_empty())
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                    .collect();
                let auth = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                s.requests.lock().unwrap().push((path.clone(), headers));
                let (status, extra, body): (&str, String, String) = match path.as_str() {
                    "/hello" => ("200 OK", String::new(), "hello, world".into()),
                    "/big" => ("200 OK", String::new(), "ab".repeat(1500)),
                    "/utf8" => ("200 OK", String::new(), "é".repeat(10)),
                    "/echo-auth" => ("200 OK", String::new(), format!("you sent: {auth}")),
                    "/redirect-ok" => ("302 Found", "Location: /hello\r\n".into(), String::new()),
                    "/redirect-evil" => (
                        "302 Found",
                        "Location: https://evil.example.com/steal\r\n".into(),
                        String::new(),
                    ),
                    "/redirect-to-localhost" => (
                        "307 Temporary Redirect",
                        format!("Location: http://localhost:{port}/echo-auth\r\n"),
                        String::new(),
                    ),
                    "/redirect-file" => (
                        "302 Found",
                        "Location: file:///etc/passwd\r\n".into(),
                        String::new(),
                    ),
                    "/redirect-loop" => (
                        "302 Found",
                        "Location: /redirect-loop\r\n".into(),
                        String::new(),
                    ),
                    "/slow" => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        ("200 OK", String::new(), "late".into())
                    }
                    _ => ("404 Not Found", String::new(), "no such page".into()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (port, seen)
}

fn config(hosts: &[&str]) -> HttpGetConfig {
    HttpGetConfig {
        allow_http: true,
        timeout: Duration::from_secs(5),
        ..HttpGetConfig::allowing(hosts.iter().copied())
    }
}

async fn get(tool: &HttpGetTool, args: Value) -> Result<Value, ToolError> {
    tool.call(args, ToolContext::default()).await
}

fn failure(result: Result<Value, ToolError>) -> String {
    match result {
        Err(ToolError::Failed { tool, message }) => {
            assert_eq!(tool, "http_get");
            message
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn spec_is_strict_and_read_only() {
    let tool = HttpGetTool::new(config(&["127.0.0.1"])).unwrap();
    let spec = tool.spec();
    assert_eq!(spec.name, "http_get");
    assert_eq!(spec.effect, SideEffect::ReadOnly);
    assert_eq!(spec.parameters["additionalProperties"], json!(false));
    assert_eq!(spec.parameters["required"], json!(["url"]));
    assert!(spec.description.contains("127.0.0.1"));
}

#[tokio::test]
async fn fetches_an_allowed_host() {
    let (port, seen) = server().await;
    let tool = HttpGetTool::new(config(&["127.0.0.1"])).unwrap();
    let out = get(
        &tool,
        json!({"url": format!("http://127.0.0.1:{port}/hello"), "headers": {"X-Test": "1"}}),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"], "hello, world");
    assert_eq!(out["truncated"], false);
    assert_eq!(out["headers"]["content-type"], "text/plain; charset=utf-8");
    assert_eq!(seen.header("/hello", "x-test").as_deref(), Some("1"));

    let out = get(
        &tool,
        json!({"url": format!("http://127.0.0.1:{port}/missing")}),
    )
    .await
    .unwrap();
    assert_eq!(
        out["status"], 404,
        "an HTTP error status is a result, not a failure"
    );
}

#[tokio::test]
async fn disallowed_hosts_are_refused_without_a_connection() {
    let (port, seen) = server().await;
    let tool = HttpGetTool::new(config(&["127.0.0.1"])).unwrap();
    // `localhost` is the same server, but not on the list.
    let msg = failure(
        get(
            &tool,
            json!({"url": format!("http://localhost:{port}/hello")}),
        )
        .await,
    );
    assert!(
        msg.contains("`localhost` is not on the allow-list"),
        "{msg}"
    );
    let msg = failure(get(&tool, json!({"url": "https://example.com/"})).await);
    assert!(msg.contains("example.com"), "{msg}");
    // Credentials in the URL, other schemes, plain http when not allowed.
    let msg = failure(
        get(
            &tool,
            json!({"url": format!("http://user:pw@127.0.0.1:{port}/hello")}),
        )
        .await,
    );
    assert!(msg.contains("credentials"), "{msg}");
    assert!(!msg.contains("pw"), "{msg}");
    let msg = failure(get(&tool, json!({"url": "file:///etc/passwd"})).await);
    assert!(msg.contains("scheme `file`"), "{msg}");
    let msg = failure(get(&tool, json!({"url": "not a url"})).await);
    assert!(msg.contains("not a valid URL"), "{msg}");
    let strict = HttpGetTool::new(HttpGetConfig::allowing(["127.0.0.1"])).unwrap();
    let msg = failure(
        get(
            &strict,
            json!({"url": format!("http://127.0.0.1:{port}/hello")}),
        )
        .await,
    );
    assert!(msg.contains("plain http is not allowed"), "{msg}");
    // Forbidden headers.
    let msg = failure(
        get(
            &tool,
            json!({"url": format!("http://127.0.0.1:{port}/hello"), "headers": {"Host": "internal"}}),
        )
        .await,
    );
    assert!(msg.contains("`Host` may not be set"), "{msg}");

    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(seen.connections(), 0, "the server must have seen nothing");
}

#[tokio::test]
async fn connection_failures_are_clear() {
    // Bind and drop a listener to get a port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tool = HttpGetTool::new(config(&["127.0.0.1"])).unwrap();
    let msg = failure(get(&tool, json!({"url": format!("http://127.0.0.1:{port}/")})).await);
    assert!(msg.starts_with("request failed:"), "{msg}");
    assert!(msg.to_lowercase().contains("connect"), "{msg}");
}

#[tokio::test]
async fn redirects_are_rechecked_at_every_hop() {
    let (port, seen) = server().await;
    let tool = HttpGetTool::new(config(&["127.0.0.1"])).unwrap();
    let base = format!("http://127.0.0.1:{port}");

    let out = get(&tool, json!({"url": format!("{base}/redirect-ok")}))
        .await
        .unwrap();
    assert_eq!(out["body"], "hello, world");
    assert_eq!(out["redirects"], 1);
    assert_eq!(out["url"], format!("{base}/hello"));

    let msg = failure(get(&tool, json!({"url": format!("{base}/redirect-evil")})).await);
    assert!(
        msg.contains("redirect 1 refused") && msg.contains("evil.example.com"),
        "{msg}"
    );
    let msg = failure(get(&tool, json!({"url": format!("{base}/redirect-file")})).await);
    assert!(
        msg.contains("redirect 1 refused") && msg.contains("scheme `file`"),
        "{msg}"
    );
    let msg = failure(
        get(
            &tool,
            json!({"url": format!("{base}/redirect-to-localhost")}),
        )
        .await,
    );
    assert!(
        msg.contains("`localhost` is not on the allow-list"),
        "{msg}"
    );
    let msg = failure(get(&tool, json!({"url": format!("{base}/redirect-loop")})).await);
    assert!(msg.contains("too many redirects"), "{msg}");

    let paths = seen.paths();
    assert!(!paths.iter().any(|p| p == "/echo-auth"), "{paths:?}");
    // The loop was followed 5 times after the first request, then stopped.
    assert_eq!(paths.iter().filter(|p| *p == "/redirect-loop").count(), 6);
}

#[tokio::test]
async fn headers_do_not_follow_a_redirect_to_another_origin() {
    let (port, seen) = server().await;
    let tool = HttpGetTool::new(config(&["127.0.0.1", "localhost"])).unwrap();
    let out = get(
        &tool,
        json!({
            "url": format!("http://127.0.0.1:{port}/redirect-to-localhost"),
            "headers": {"Authorization": "Bearer abc"}
        }),
    )
    .await
    .unwrap();
    assert_eq!(out["body"], "you sent: ");
    assert_eq!(
        seen.header("/redirect-to-localhost", "authorization")
            .as_deref(),
        Some("Bearer abc")
    );
    assert_eq!(seen.header("/echo-auth", "authorization"), None);
}

#[tokio::test]
async fn bodies_are_cut_at_max_bytes() {
    let (port, _seen) = server().await;
    let tool = HttpGetTool::new(HttpGetConfig {
        max_bytes: 1001,
        ..config(&["127.0.0.1"])
    })
    .unwrap();
    let out = get(
        &tool,
        json!({"url": format!("http://127.0.0.1:{port}/big")}),
    )
    .await
    .unwrap();
    assert_eq!(out["truncated"], true);
    assert_eq!(out["bytes"], 1001);
    assert_eq!(out["body"].as_str().unwrap().len(), 1001);

    // A cut inside a multi-byte character keeps whole characters only.
    let tool = HttpGetTool::new(HttpGetConfig {
        max_bytes: 5,
        ..config(&["127.0.0.1"])
    })
    .unwrap();
    let out = get(
        &tool,
        json!({"url": format!("http://127.0.0.1:{port}/utf8")}),
    )
    .await
    .unwrap();
    assert_eq!(out["truncated"], true);
    assert_eq!(out["body"], "éé");
}

#[tokio::test]
async fn slow_servers_time_out() {
    let (port, _seen) = server().await;
    let tool = HttpGetTool::new(HttpGetConfig {
        timeout: Duration::from_millis(300),
        ..config(&["127.0.0.1"])
    })
    .unwrap();
    let started = std::time::Instant::now();
    let err = get(
        &tool,
        json!({"url": format!("http://127.0.0.1:{port}/slow")}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ToolError::Timeout { after_ms: 300, .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn configured_headers_carry_secrets_to_their_host_only() {
    let (port, seen) = server().await;
    let secrets = Arc::new(
        MemorySecrets::new()
            .with("API_TOKEN", "s3cr3t-token")
            .with("OTHER", "other-token"),
    );
    let tool = HttpGetTool::new(HttpGetConfig {
        headers: [("X-Client".to_string(), "baton".to_string())].into(),
        host_headers: [
            (
                "127.0.0.1".to_string(),
                [(
                    "Authorization".to_string(),
                    "Bearer {{secret.API_TOKEN}}".to_string(),
                )]
                .into(),
            ),
            (
                "localhost".to_string(),
                [("X-Other".to_string(), "{{ secret.OTHER }}".to_string())].into(),
            ),
        ]
        .into(),
        ..config(&["127.0.0.1", "localhost"])
    })
    .unwrap()
    .with_secrets(secrets);
    let out = get(
        &tool,
        json!({"url": format!("http://127.0.0.1:{port}/echo-auth")}),
    )
    .await
    .unwrap();
    // The server got the value; the result (which goes to the model and the event log) did not.
    assert_eq!(
        seen.header("/echo-auth", "authorization").as_deref(),
        Some("Bearer s3cr3t-token")
    );
    assert_eq!(
        seen.header("/echo-auth", "x-client").as_deref(),
        Some("baton")
    );
    assert_eq!(seen.header("/echo-auth", "x-other"), None);
    assert_eq!(out["body"], "you sent: Bearer ***");
    assert!(!out.to_string().contains("s3cr3t-token"));

    // Redirected to localhost: the 127.0.0.1 credentials stay behind, localhost's are added.
    let out = get(
        &tool,
        json!({"url": format!("http://127.0.0.1:{port}/redirect-to-localhost")}),
    )
    .await
    .unwrap();
    assert_eq!(out["body"], "you sent: ");
    let requests = seen.requests.lock().unwrap().clone();
    let (_, last) = requests.last().unwrap();
    assert!(
        last.iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("x-other") && v == "other-token")
    );
    assert!(
        !last
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("authorization"))
    );
}

#[tokio::test]
async fn secrets_in_arguments_are_refused_unless_enabled() {
    let (port, seen) = server().await;
    let secrets = Arc::new(MemorySecrets::new().with("API_TOKEN", "s3cr3t-token"));
    let args = json!({
        "url": format!("http://127.0.0.1:{port}/echo-auth"),
        "headers": {"Authorization": "Bearer {{secret.API_TOKEN}}"}
    });
    let tool = HttpGetTool::new(config(&["127.0.0.1"]))
        .unwrap()
        .with_secrets(secrets.clone());
    let msg = failure(get(&tool, args.clone()).await);
    assert!(msg.contains("refers to a secret"), "{msg}");
    assert_eq!(seen.connections(), 0);

    let tool = HttpGetTool::new(HttpGetConfig {
        secrets_in_args: true,
        ..config(&["127.0.0.1"])
    })
    .unwrap()
    .with_secrets(secrets);
    let out = get(&tool, args).await.unwrap();
    assert_eq!(
        seen.header("/echo-auth", "authorization").as_deref(),
        Some("Bearer s3cr3t-token")
    );
    assert_eq!(out["body"], "you sent: Bearer ***");
}

#[tokio::test]
async fn unknown_secrets_fail_before_any_request() {
    let (port, seen) = server().await;
    let tool = HttpGetTool::new(HttpGetConfig {
        headers: [(
            "Authorization".to_string(),
            "Bearer {{secret.NOPE}}".to_string(),
        )]
        .into(),
        ..config(&["127.0.0.1"])
    })
    .unwrap()
    .with_secrets(Arc::new(MemorySecrets::new()));
    let msg = failure(
        get(
            &tool,
            json!({"url": format!("http://127.0.0.1:{port}/echo-auth")}),
        )
        .await,
    );
    assert!(msg.contains("unknown secret `NOPE`"), "{msg}");
    assert_eq!(seen.connections(), 0);
}
