//! Fake language-model servers for end-to-end tests of the `baton` binary: one speaking
//! OpenAI's Chat Completions (`POST /v1/chat/completions`), one Anthropic's Messages
//! (`POST /v1/messages`), each as JSON or as Server-Sent Events when the request asks to
//! stream. They run in the test process (axum on `127.0.0.1:0`); the `baton` child process
//! connects to them over real HTTP.
//!
//! Both answer from a **scripted-model script** (docs/scripted-model.md), the very file the
//! scripted provider reads: every request is translated into a `CompletionRequest` and handed
//! to a `ScriptedModel` loaded from that file, and its reply (text, tool calls, JSON answers,
//! token usage) is encoded in the server's wire format. A run against a fake server therefore
//! gets the same replies, with the same token counts, as a run on the scripted provider.
//!
//! The wire formats do not carry baton's agent or step, so the server finds them from the
//! request: the system prompt begins with the agent's `instructions` (as baton builds it), and
//! the workflow file says which step runs that agent. Positions in the script advance per step
//! (or agent) with every call the server answers, as the scripted provider's do in a run.
//!
//! Every request is recorded (path, headers, JSON body) for the test to inspect. Faults can
//! be queued (answered, one per request, before the script is consulted) or made permanent.

#![allow(dead_code, clippy::unwrap_used)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use baton_core::{CompletionRequest, CompletionResponse, Message, Model, Role, ToolCall};
use baton_providers::ScriptedModel;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Which API a server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI Chat Completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

/// An HTTP error the server answers with instead of a scripted reply.
#[derive(Clone, Debug)]
pub struct Fault {
    /// The HTTP status.
    pub status: u16,
    /// The error message, put in the wire format's error body.
    pub message: String,
}

impl Fault {
    /// A fault with `status` and `message`.
    pub fn new(status: u16, message: &str) -> Self {
        Fault {
            status,
            message: message.to_string(),
        }
    }
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The request path.
    pub path: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The JSON body (`null` if it was not JSON).
    pub body: Value,
    /// The agent the server took the request for (`None` if it could not tell).
    pub agent: Option<String>,
    /// The HTTP status it answered with.
    pub status: u16,
}

impl Recorded {
    /// A header's value, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_string())
    }
}

/// An agent of the workflow, as the server recognises it.
struct AgentInfo {
    name: String,
    instructions: String,
    /// The step that runs it, when exactly one does.
    step: Option<String>,
}

struct Shared {
    wire: Wire,
    script: ScriptedModel,
    agents: Vec<AgentInfo>,
    faults: Mutex<VecDeque<Fault>>,
    always: Option<Fault>,
    requests: Mutex<Vec<Recorded>>,
    problems: Mutex<Vec<String>>,
}

/// A running fake server. It stops when the test's runtime shuts down.
pub struct FakeServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    shared: Arc<Shared>,
}

/// How to start a [`FakeServer`].
#[derive(Default)]
pub struct Options {
    /// Faults answered first, one per request, before any scripted reply.
    pub faults: Vec<Fault>,
    /// A fault answered to every request (the script is never consulted).
    pub always: Option<Fault>,
}

impl FakeServer {
    /// Start a server speaking `wire` that answers the agents of `workflow` from `script`.
    pub async fn start(wire: Wire, workflow: &Path, script: &Path, options: Options) -> Self {
        let text = std::fs::read_to_string(workflow).unwrap();
        let spec = baton_runtime::parse_spec(&text, &workflow.display().to_string()).unwrap();
        let agents = spec
            .agents
            .0
            .iter()
            .map(|(name, agent)| {
                let steps: Vec<&str> = spec
                    .steps
                    .iter()
                    .filter(|s| s.agent.as_ref().is_some_and(|a| a.value == name.value))
                    .map(|s| s.id.value.as_str())
                    .collect();
                AgentInfo {
                    name: name.value.clone(),
                    instructions: agent.instructions.clone(),
                    step: (steps.len() == 1).then(|| steps[0].to_string()),
                }
            })
            .collect();
        let shared = Arc::new(Shared {
            wire,
            script: ScriptedModel::from_file(script).unwrap(),
            agents,
            faults: Mutex::new(options.faults.into()),
            always: options.always,
            requests: Mutex::new(Vec::new()),
            problems: Mutex::new(Vec::new()),
        });
        let app = match wire {
            Wire::OpenAi => Router::new().route("/v1/chat/completions", post(handle)),
            Wire::Anthropic => Router::new().route("/v1/messages", post(handle)),
        }
        .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeServer { url, shared }
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// What went wrong on the server's side (requests it could not answer from the script).
    pub fn problems(&self) -> Vec<String> {
        self.shared.problems.lock().unwrap().clone()
    }
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let path = match shared.wire {
        Wire::OpenAi => "/v1/chat/completions",
        Wire::Anthropic => "/v1/messages",
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (agent, response) = answer(&shared, &body).await;
    shared.requests.lock().unwrap().push(Recorded {
        path: path.to_string(),
        headers,
        body,
        agent,
        status: response.status().as_u16(),
    });
    response
}

/// The answer to one request, and the agent it was taken for.
async fn answer(shared: &Shared, body: &Value) -> (Option<String>, Response) {
    if let Some(fault) = &shared.always {
        return (None, error_response(shared.wire, fault));
    }
    let fault = shared.faults.lock().unwrap().pop_front();
    if let Some(fault) = fault {
        return (None, error_response(shared.wire, &fault));
    }
    let messages = match shared.wire {
        Wire::OpenAi => openai_messages(body),
        Wire::Anthropic => anthropic_messages(body),
    };
    let system = messages
        .iter()
        .find(|m| m.role == Role::System)
        .map(|m| m.content.clone())
        .unwrap_or_default();
    let found = shared
        .agents
        .iter()
        .find(|a| !a.instructions.is_empty() && system.starts_with(a.instructions.as_str()));
    let Some(agent) = found else {
        let problem = format!("no agent's instructions begin the system prompt {system:?}");
        shared.problems.lock().unwrap().push(problem.clone());
        return (
            None,
            error_response(shared.wire, &Fault::new(400, &problem)),
        );
    };
    let request = CompletionRequest {
        model: String::new(),
        agent: agent.name.clone(),
        step: agent.step.clone().unwrap_or_default(),
        messages,
        tools: Vec::new(),
        output_schema: None,
        max_tokens: None,
        temperature: None,
        position: None,
    };
    let reply = match shared.script.complete(request).await {
        Ok(reply) => reply,
        Err(e) => {
            let problem = format!("the script has no answer for agent {}: {e}", agent.name);
            shared.problems.lock().unwrap().push(problem.clone());
            return (
                Some(agent.name.clone()),
                error_response(shared.wire, &Fault::new(400, &problem)),
            );
        }
    };
    let stream = body["stream"] == json!(true);
    let response = match (shared.wire, stream) {
        (Wire::OpenAi, false) => json_response(200, openai_completion(&reply)),
        (Wire::OpenAi, true) => {
            let usage = body["stream_options"]["include_usage"] == json!(true);
            sse_response(openai_stream(&reply, usage))
        }
        (Wire::Anthropic, false) => json_response(200, anthropic_message(&reply)),
        (Wire::Anthropic, true) => sse_response(anthropic_stream(&reply)),
    };
    (Some(agent.name.clone()), response)
}

// ----- requests: the wire's conversation back into baton's messages -----

fn openai_messages(body: &Value) -> Vec<Message> {
    let mut out = Vec::new();
    for m in body["messages"].as_array().into_iter().flatten() {
        let content = m["content"].as_str().unwrap_or("").to_string();
        match m["role"].as_str().unwrap_or("") {
            "system" => out.push(Message::text(Role::System, content)),
            "user" => out.push(Message::text(Role::User, content)),
            "assistant" => {
                let tool_calls = m["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| ToolCall {
                        id: c["id"].as_str().unwrap_or("").to_string(),
                        name: c["function"]["name"].as_str().unwrap_or("").to_string(),
                        args: c["function"]["arguments"]
                            .as_str()
                            .and_then(|t| serde_json::from_str(t).ok())
                            .unwrap_or(Value::Null),
                    })
                    .collect();
                out.push(Message {
                    role: Role::Assistant,
                    content,
                    tool_calls,
                    tool_call_id: None,
                });
            }
            "tool" => out.push(Message::tool_result(
                m["tool_call_id"].as_str().unwrap_or(""),
                content,
            )),
            _ => {}
        }
    }
    out
}

fn anthropic_messages(body: &Value) -> Vec<Message> {
    let mut out = Vec::new();
    if let Some(system) = body["system"].as_str() {
        out.push(Message::text(Role::System, system));
    }
    for m in body["messages"].as_array().into_iter().flatten() {
        let blocks = m["content"].as_array().cloned().unwrap_or_default();
        match m["role"].as_str().unwrap_or("") {
            "user" => {
                for b in &blocks {
                    match b["type"].as_str().unwrap_or("") {
                        "text" => {
                            out.push(Message::text(Role::User, b["text"].as_str().unwrap_or("")))
                        }
                        "tool_result" => out.push(Message::tool_result(
                            b["tool_use_id"].as_str().unwrap_or(""),
                            b["content"].as_str().unwrap_or(""),
                        )),
                        _ => {}
                    }
                }
            }
            "assistant" => {
                let mut text = String::new();
                let mut tool_calls = Vec::new();
                for b in &blocks {
                    match b["type"].as_str().unwrap_or("") {
                        "text" => text.push_str(b["text"].as_str().unwrap_or("")),
                        "tool_use" => tool_calls.push(ToolCall {
                            id: b["id"].as_str().unwrap_or("").to_string(),
                            name: b["name"].as_str().unwrap_or("").to_string(),
                            args: b["input"].clone(),
                        }),
                        _ => {}
                    }
                }
                out.push(Message {
                    role: Role::Assistant,
                    content: text,
                    tool_calls,
                    tool_call_id: None,
                });
            }
            _ => {}
        }
    }
    out
}

// ----- replies: a scripted answer in each wire format -----

/// `text` in pieces of at most `size` characters (at least one piece).
fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

fn args_text(call: &ToolCall) -> String {
    serde_json::to_string(&call.args).unwrap()
}

fn openai_completion(reply: &CompletionResponse) -> Value {
    let tool_calls: Vec<Value> = reply
        .tool_calls
        .iter()
        .map(|c| {
            json!({"id": c.id, "type": "function",
                   "function": {"name": c.name, "arguments": args_text(c)}})
        })
        .collect();
    let mut message = json!({
        "role": "assistant",
        "content": if reply.content.is_empty() && !tool_calls.is_empty() {
            Value::Null
        } else {
            Value::String(reply.content.clone())
        },
        "refusal": null,
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let (input, output) = (reply.usage.input_tokens, reply.usage.output_tokens);
    json!({
        "id": "chatcmpl-e2e",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4o-2024-08-06",
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": if reply.tool_calls.is_empty() { "stop" } else { "tool_calls" },
        }],
        "usage": {"prompt_tokens": input, "completion_tokens": output,
                  "total_tokens": input + output},
    })
}

fn openai_chunk(delta: Value, finish: Option<&str>) -> String {
    let body = json!({
        "id": "chatcmpl-e2e",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        "usage": null,
    });
    format!("data: {body}\n\n")
}

/// A streamed reply: text in small pieces, each tool call's arguments in fragments, the
/// finish chunk, the usage chunk (only when the request set `stream_options.include_usage`)
/// and `[DONE]`.
fn openai_stream(reply: &CompletionResponse, include_usage: bool) -> String {
    let mut out = openai_chunk(json!({"role": "assistant", "content": ""}), None);
    if !reply.content.is_empty() {
        for piece in pieces(&reply.content, 16) {
            out.push_str(&openai_chunk(json!({"content": piece}), None));
        }
    }
    for (index, call) in reply.tool_calls.iter().enumerate() {
        out.push_str(&openai_chunk(
            json!({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                                   "function": {"name": call.name, "arguments": ""}}]}),
            None,
        ));
        for fragment in pieces(&args_text(call), 7) {
            out.push_str(&openai_chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
                None,
            ));
        }
    }
    let finish = if reply.tool_calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    out.push_str(&openai_chunk(json!({}), Some(finish)));
    if include_usage {
        let (input, output) = (reply.usage.input_tokens, reply.usage.output_tokens);
        let body = json!({
            "id": "chatcmpl-e2e",
            "object": "chat.completion.chunk",
            "created": 1694268190,
            "model": "gpt-4o-2024-08-06",
            "choices": [],
            "usage": {"prompt_tokens": input, "completion_tokens": output,
                      "total_tokens": input + output},
        });
        out.push_str(&format!("data: {body}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

fn anthropic_stop_reason(reply: &CompletionResponse) -> &'static str {
    if reply.tool_calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    }
}

fn anthropic_message(reply: &CompletionResponse) -> Value {
    let mut content = Vec::new();
    if !reply.content.is_empty() || reply.tool_calls.is_empty() {
        content.push(json!({"type": "text", "text": reply.content}));
    }
    for call in &reply.tool_calls {
        content.push(json!({"type": "tool_use", "id": call.id, "name": call.name,
                            "input": call.args}));
    }
    json!({
        "id": "msg_e2e",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": content,
        "stop_reason": anthropic_stop_reason(reply),
        "stop_sequence": null,
        "usage": {"input_tokens": reply.usage.input_tokens,
                  "output_tokens": reply.usage.output_tokens,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    })
}

fn anthropic_event(data: Value) -> String {
    let kind = data["type"].as_str().unwrap().to_string();
    format!("event: {kind}\ndata: {data}\n\n")
}

/// A streamed reply: `message_start` (the prompt's tokens), a `ping`, a text block in small
/// pieces, one `tool_use` block per call with its input in `input_json_delta` fragments,
/// `message_delta` (the output tokens) and `message_stop`.
fn anthropic_stream(reply: &CompletionResponse) -> String {
    let mut out = anthropic_event(json!({"type": "message_start", "message": {
        "id": "msg_e2e", "type": "message", "role": "assistant", "content": [],
        "model": "claude-sonnet-4-20250514", "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": reply.usage.input_tokens, "output_tokens": 1,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    }}));
    out.push_str(&anthropic_event(json!({"type": "ping"})));
    let mut index = 0;
    if !reply.content.is_empty() || reply.tool_calls.is_empty() {
        out.push_str(&anthropic_event(
            json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}}),
        ));
        for piece in pieces(&reply.content, 16) {
            out.push_str(&anthropic_event(json!({"type": "content_block_delta",
                "index": index, "delta": {"type": "text_delta", "text": piece}})));
        }
        out.push_str(&anthropic_event(
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    for call in &reply.tool_calls {
        out.push_str(&anthropic_event(
            json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": call.id, "name": call.name,
                              "input": {}}}),
        ));
        for fragment in pieces(&args_text(call), 7) {
            out.push_str(&anthropic_event(json!({"type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": fragment}})));
        }
        out.push_str(&anthropic_event(
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    out.push_str(&anthropic_event(json!({"type": "message_delta",
        "delta": {"stop_reason": anthropic_stop_reason(reply), "stop_sequence": null},
        "usage": {"output_tokens": reply.usage.output_tokens}})));
    out.push_str(&anthropic_event(json!({"type": "message_stop"})));
    out
}

fn error_response(wire: Wire, fault: &Fault) -> Response {
    let body = match wire {
        Wire::OpenAi => json!({"error": {
            "message": fault.message,
            "type": if fault.status == 429 { "rate_limit_exceeded" } else { "invalid_request_error" },
            "param": null,
            "code": null,
        }}),
        Wire::Anthropic => json!({"type": "error", "error": {
            "type": match fault.status {
                401 => "authentication_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                s if s >= 500 => "api_error",
                _ => "invalid_request_error",
            },
            "message": fault.message,
        }}),
    };
    json_response(fault.status, body)
}

fn json_response(status: u16, body: Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn sse_response(events: String) -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from(events))
        .unwrap()
}
