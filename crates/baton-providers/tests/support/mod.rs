//! A scripted HTTP server for provider tests, bound to `127.0.0.1:0`: it records every request
//! (method, path, headers, JSON body) and answers each with the next reply of its script —
//! a JSON body with any status, a Server-Sent Events body sent in separate chunks, a stream
//! that is cut off, or any of these after a delay. Providers talk to it over real HTTP.

#![allow(dead_code, clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use baton_core::{CompletionRequest, DeltaSink, Message, Role, StreamDelta};
use futures::channel::mpsc;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// `status` with `body` as `application/json`.
    Json { status: u16, body: String },
    /// 200 `text/event-stream`, each chunk written separately, `delay` apart.
    Sse {
        chunks: Vec<Vec<u8>>,
        delay: Duration,
    },
    /// Like `Sse`, then the connection is aborted (no end of the chunked body).
    SseAborted { chunks: Vec<Vec<u8>> },
    /// Wait, then answer with the inner reply.
    After { delay: Duration, reply: Box<Reply> },
}

impl Reply {
    /// 200 with `body`.
    pub fn ok(body: impl Into<String>) -> Self {
        Reply::Json {
            status: 200,
            body: body.into(),
        }
    }

    /// `status` with `body`.
    pub fn status(status: u16, body: impl Into<String>) -> Self {
        Reply::Json {
            status,
            body: body.into(),
        }
    }

    /// An SSE body cut into chunks of at most `size` bytes, sent 1 ms apart.
    pub fn sse_chunked(stream: &str, size: usize) -> Self {
        Reply::Sse {
            chunks: split(stream, size),
            delay: Duration::from_millis(1),
        }
    }
}

/// `text`'s bytes in pieces of at most `size` (pieces may split lines, CRLFs and UTF-8
/// characters: the provider must put them back together).
pub fn split(text: &str, size: usize) -> Vec<Vec<u8>> {
    text.as_bytes()
        .chunks(size.max(1))
        .map(<[u8]>::to_vec)
        .collect()
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Recorded {
    /// A header's value, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_string())
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    replies: Mutex<VecDeque<Reply>>,
}

/// The running server.
pub struct MockServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    shared: Arc<Shared>,
}

impl MockServer {
    /// Start a server that answers with `replies`, in order (then 500s).
    pub async fn start(replies: Vec<Reply>) -> Self {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            replies: Mutex::new(replies.into()),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockServer { url, shared }
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The only request received.
    pub fn only_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "expected one request, got {requests:?}");
        requests.into_iter().next().unwrap()
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    shared.requests.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    });
    let reply = shared.replies.lock().unwrap().pop_front();
    match reply {
        Some(reply) => respond(reply).await,
        None => json_response(
            500,
            r#"{"error":{"message":"the test script has no more replies"}}"#,
        ),
    }
}

fn json_response(status: u16, body: &str) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn respond(reply: Reply) -> futures::future::BoxFuture<'static, Response> {
    Box::pin(async move {
        match reply {
            Reply::Json { status, body } => json_response(status, &body),
            Reply::After { delay, reply } => {
                tokio::time::sleep(delay).await;
                respond(*reply).await
            }
            Reply::Sse { chunks, delay } => sse(chunks, delay, false),
            Reply::SseAborted { chunks } => sse(chunks, Duration::from_millis(1), true),
        }
    })
}

fn sse(chunks: Vec<Vec<u8>>, delay: Duration, abort: bool) -> Response {
    let (tx, rx) = mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    tokio::spawn(async move {
        for chunk in chunks {
            if tx.unbounded_send(Ok(chunk)).is_err() {
                return;
            }
            tokio::time::sleep(delay).await;
        }
        if abort {
            let _ = tx.unbounded_send(Err(std::io::Error::other("cut off")));
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(rx))
        .unwrap()
}

/// A sink that records what it receives.
pub fn recording_sink() -> (DeltaSink, Arc<Mutex<Vec<StreamDelta>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink_seen = Arc::clone(&seen);
    let sink: DeltaSink = Arc::new(move |delta| sink_seen.lock().unwrap().push(delta));
    (sink, seen)
}

/// A request with `messages` and nothing else.
pub fn request(model: &str, messages: Vec<Message>) -> CompletionRequest {
    CompletionRequest {
        model: model.to_string(),
        agent: "agent".into(),
        step: "step".into(),
        messages,
        tools: Vec::new(),
        output_schema: None,
        max_tokens: None,
        temperature: None,
        position: None,
    }
}

/// A one-question conversation.
pub fn hello(model: &str) -> CompletionRequest {
    request(
        model,
        vec![
            Message::text(Role::System, "You are terse."),
            Message::text(Role::User, "Say hello."),
        ],
    )
}

/// A local port nothing listens on (bound, then released).
pub async fn refused_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// The text of the `Text` deltas, in order.
pub fn texts(deltas: &[StreamDelta]) -> Vec<String> {
    deltas
        .iter()
        .filter_map(|delta| match delta {
            StreamDelta::Text { text } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// The argument fragments sent for call `id`, joined.
pub fn args_of(deltas: &[StreamDelta], id: &str) -> String {
    deltas
        .iter()
        .filter_map(|delta| match delta {
            StreamDelta::ToolArgs { id: of, fragment } if of == id => Some(fragment.as_str()),
            _ => None,
        })
        .collect()
}
