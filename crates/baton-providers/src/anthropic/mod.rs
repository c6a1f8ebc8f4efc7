//! A [`Model`] for Anthropic's Messages API.
//!
//! It sends `POST {base_url}/v1/messages` with the `x-api-key` and `anthropic-version:
//! 2023-06-01` headers, and maps baton's conversation onto the wire format:
//!
//! - system messages (wherever they stand) become the top-level `system` field, joined by
//!   blank lines;
//! - user text is a `text` block; an assistant message is its text block followed by a
//!   `tool_use` block (`id`, `name`, `input`) per tool call;
//! - a tool result is a `tool_result` block (`tool_use_id`, `content`) in a *user* message, and
//!   consecutive messages of one role are merged into one message, so the results of parallel
//!   tool calls travel together as the API requires (with the results first, before any text);
//! - tools are `{name, description, input_schema}`.
//!
//! `max_tokens` is required by the API: the request's limit, else
//! [`AnthropicConfig::max_tokens`]. An output schema needs no field of its own: baton puts it
//! in the system prompt.
//!
//! With [`AnthropicConfig::stream`] on, the reply is requested as Server-Sent Events and
//! [`Model::complete_streaming`] hands every text piece, tool-call start and `input_json_delta`
//! fragment to the sink as it arrives. The assembled [`CompletionResponse`] is the same as a
//! non-streamed call's. Prompt tokens written to or read from the prompt cache are counted as
//! input tokens.

mod stream;
mod wire;

use crate::assemble::usage_or_estimate;
use crate::assemble::{is_json, replay_to_sink};
use crate::http;
use baton_core::{
    CompletionRequest, CompletionResponse, DeltaSink, Message, Model, ModelError, Role, TokenUsage,
    ToolCall,
};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use stream::StreamAssembler;
use wire::{MessagesRequest, MessagesResponse, RequestBlock, ResponseBlock, ToolSpec, WireMessage};

/// Anthropic's endpoint, the default [`AnthropicConfig::base_url`].
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// The API version sent in `anthropic-version`.
pub const API_VERSION: &str = "2023-06-01";

/// The default [`AnthropicConfig::max_tokens`].
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The default [`AnthropicConfig::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// How to reach Anthropic's Messages API. Build it with [`AnthropicConfig::new`] and the
/// `with_*` methods, or set the public fields.
#[derive(Clone)]
#[non_exhaustive]
pub struct AnthropicConfig {
    /// The API's base URL, without the version; requests go to `{base_url}/v1/messages`.
    /// Default: [`DEFAULT_BASE_URL`].
    pub base_url: String,
    /// Sent as `x-api-key`. Anthropic itself needs one; a gateway in front of it may not.
    pub api_key: Option<String>,
    /// The model name sent when a request does not name one (an empty
    /// [`CompletionRequest::model`]).
    pub model: String,
    /// The completion-token limit of requests that set none (the API requires one).
    /// Default: [`DEFAULT_MAX_TOKENS`].
    pub max_tokens: u32,
    /// Request the reply as Server-Sent Events. Both [`Model::complete`] and
    /// [`Model::complete_streaming`] then stream on the wire; only the latter reports the
    /// pieces. Default: off.
    pub stream: bool,
    /// The longest wait for the server: for the connection, the response headers and (while
    /// reading the body) each next chunk. Default: [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// More headers for every request (for example `anthropic-beta`).
    pub extra_headers: Vec<(String, String)>,
}

impl fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self
            .extra_headers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        f.debug_struct("AnthropicConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("max_tokens", &self.max_tokens)
            .field("stream", &self.stream)
            .field("timeout", &self.timeout)
            .field("extra_headers", &headers)
            .finish()
    }
}

impl AnthropicConfig {
    /// A configuration for `model` at Anthropic's endpoint, with no key, no streaming and the
    /// defaults above.
    pub fn new(model: impl Into<String>) -> Self {
        AnthropicConfig {
            base_url: DEFAULT_BASE_URL.to_string(),
            api_key: None,
            model: model.into(),
            max_tokens: DEFAULT_MAX_TOKENS,
            stream: false,
            timeout: DEFAULT_TIMEOUT,
            extra_headers: Vec::new(),
        }
    }

    /// Set [`AnthropicConfig::base_url`].
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// Set [`AnthropicConfig::api_key`].
    pub fn with_api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// Set [`AnthropicConfig::max_tokens`].
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Set [`AnthropicConfig::stream`].
    pub fn with_stream(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }

    /// Set [`AnthropicConfig::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Add one of [`AnthropicConfig::extra_headers`].
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_headers.push((name.into(), value.into()));
        self
    }
}

/// A model behind Anthropic's Messages API. Cheap to clone: clones share one connection pool.
#[derive(Clone, Debug)]
pub struct AnthropicModel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: AnthropicConfig,
    client: reqwest::Client,
    url: String,
    headers: HeaderMap,
}

impl AnthropicModel {
    /// A model for `config`. Fails with [`ModelError::Config`] when a header name or value
    /// (the key included) cannot be sent, or the HTTP client cannot be built.
    pub fn new(config: AnthropicConfig) -> Result<Self, ModelError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        );
        if let Some(key) = &config.api_key {
            let mut value = HeaderValue::from_str(key).map_err(|_| ModelError::Config {
                message: "the Anthropic API key contains characters that cannot be sent in a \
                          header"
                    .to_string(),
            })?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_static("x-api-key"), value);
        }
        for (name, value) in &config.extra_headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| ModelError::Config {
                message: format!("invalid header name `{name}`"),
            })?;
            let value = HeaderValue::from_str(value).map_err(|_| ModelError::Config {
                message: format!("invalid value for header `{name}`"),
            })?;
            headers.insert(name, value);
        }
        let client = http::build_client(config.timeout)?;
        let url = http::join_url(&config.base_url, "v1/messages");
        Ok(AnthropicModel {
            inner: Arc::new(Inner {
                config,
                client,
                url,
                headers,
            }),
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &AnthropicConfig {
        &self.inner.config
    }

    async fn call(
        &self,
        request: CompletionRequest,
        sink: Option<DeltaSink>,
    ) -> Result<CompletionResponse, ModelError> {
        let inner = &self.inner;
        let stream = inner.config.stream;
        let body = build_request_body(&inner.config, &request, stream)?;
        let timeout = inner.config.timeout;
        let builder = inner
            .client
            .post(&inner.url)
            .headers(inner.headers.clone())
            .body(body);
        let mut response = http::send(builder, timeout).await?;
        let sink: DeltaSink = sink.unwrap_or_else(|| Arc::new(|_| {}));
        if !stream || is_json(&response) {
            // Not streamed (or a server that ignored `stream` and answered with JSON).
            let body = http::read_body(response, timeout, http::MAX_BODY_BYTES).await?;
            let reply = parse_response(&body, &request)?;
            if stream {
                replay_to_sink(&reply, &sink);
            }
            return Ok(reply);
        }
        let mut decoder = http::SseDecoder::new();
        let mut assembler = StreamAssembler::new(sink);
        let mut received = 0usize;
        while let Some(chunk) = http::next_chunk(&mut response, timeout).await? {
            received += chunk.len();
            if received > http::MAX_BODY_BYTES {
                return Err(ModelError::Malformed {
                    message: format!("the stream is larger than {} bytes", http::MAX_BODY_BYTES),
                });
            }
            for event in decoder.push(&chunk) {
                assembler.on_data(&event.data)?;
            }
            if assembler.is_stopped() {
                break;
            }
        }
        if !assembler.is_stopped()
            && let Some(event) = decoder.finish()
        {
            assembler.on_data(&event.data)?;
        }
        assembler.finish(&request)
    }
}

impl Model for AnthropicModel {
    fn complete(
        &self,
        request: CompletionRequest,
    ) -> impl Future<Output = Result<CompletionResponse, ModelError>> + Send {
        self.call(request, None)
    }

    fn complete_streaming(
        &self,
        request: CompletionRequest,
        sink: DeltaSink,
    ) -> impl Future<Output = Result<CompletionResponse, ModelError>> + Send {
        self.call(request, Some(sink))
    }
}

/// The HTTP status Anthropic documents for an error `type`, for errors that arrive inside a
/// stream (where the response status was already 200). Unknown types count as 500.
pub(crate) fn error_status(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// The JSON body for `request`.
fn build_request_body(
    config: &AnthropicConfig,
    request: &CompletionRequest,
    stream: bool,
) -> Result<Vec<u8>, ModelError> {
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|message| message.role == Role::System && !message.content.is_empty())
        .map(|message| message.content.as_str())
        .collect();
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    let mut messages: Vec<WireMessage<'_>> = Vec::new();
    for message in &request.messages {
        let Some((role, blocks)) = wire_blocks(message)? else {
            continue;
        };
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => messages.push(WireMessage {
                role,
                content: blocks,
            }),
        }
    }
    // Tool results must open their user message.
    for message in &mut messages {
        message
            .content
            .sort_by_key(|block| !matches!(block, RequestBlock::ToolResult { .. }));
    }
    let tools = request
        .tools
        .iter()
        .map(|tool| ToolSpec {
            name: &tool.name,
            description: &tool.description,
            input_schema: if tool.parameters.is_object() {
                tool.parameters.clone()
            } else {
                json!({"type": "object", "properties": {}})
            },
        })
        .collect();
    let model = if request.model.is_empty() {
        &config.model
    } else {
        &request.model
    };
    let body = MessagesRequest {
        model,
        max_tokens: request.max_tokens.unwrap_or(config.max_tokens),
        system,
        messages,
        tools,
        temperature: request.temperature,
        stream,
    };
    serde_json::to_vec(&body).map_err(|error| ModelError::Config {
        message: format!("cannot encode the request: {error}"),
    })
}

/// A message's wire role and content blocks; `None` for system messages (they go to
/// `system`) and for messages with nothing to send (the API rejects empty text blocks).
fn wire_blocks(
    message: &Message,
) -> Result<Option<(&'static str, Vec<RequestBlock<'_>>)>, ModelError> {
    let text = (!message.content.is_empty()).then(|| RequestBlock::Text {
        text: &message.content,
    });
    let (role, blocks) = match message.role {
        Role::System => return Ok(None),
        Role::User => ("user", text.into_iter().collect::<Vec<_>>()),
        Role::Assistant => {
            let mut blocks: Vec<RequestBlock<'_>> = text.into_iter().collect();
            blocks.extend(message.tool_calls.iter().map(|call| RequestBlock::ToolUse {
                id: &call.id,
                name: &call.name,
                // The API takes only an object; arguments that were not (a model's invalid
                // JSON, kept as a string) go back empty, and the tool result says what was
                // wrong with them.
                input: if call.args.is_object() {
                    call.args.clone()
                } else {
                    json!({})
                },
            }));
            ("assistant", blocks)
        }
        Role::Tool => {
            let id = message
                .tool_call_id
                .as_deref()
                .ok_or_else(|| ModelError::Config {
                    message: "a tool message has no tool_call_id".to_string(),
                })?;
            (
                "user",
                vec![RequestBlock::ToolResult {
                    tool_use_id: id,
                    content: &message.content,
                }],
            )
        }
    };
    Ok((!blocks.is_empty()).then_some((role, blocks)))
}

/// A non-streamed reply.
fn parse_response(
    body: &[u8],
    request: &CompletionRequest,
) -> Result<CompletionResponse, ModelError> {
    let reply: MessagesResponse = match serde_json::from_slice(body) {
        Ok(reply) => reply,
        Err(error) => {
            // An error body sent with status 200 (seen behind some gateways).
            if let Ok(wire::ErrorEnvelope { error: body_error }) = serde_json::from_slice(body) {
                let status = error_status(&body_error.kind);
                let message = match (body_error.message, body_error.kind) {
                    (message, _) if !message.is_empty() => message,
                    (_, kind) if !kind.is_empty() => kind,
                    _ => "an error without a message".to_string(),
                };
                return Err(ModelError::Http { status, message });
            }
            return Err(http::malformed_json("the reply", &error, body));
        }
    };
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    for block in reply.content {
        match block {
            ResponseBlock::Text { text } => content.push_str(&text),
            ResponseBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id,
                name,
                args: match input {
                    Value::Null => json!({}),
                    input => input,
                },
            }),
            ResponseBlock::Other => {}
        }
    }
    let usage = match (reply.usage.total_input(), reply.usage.output_tokens) {
        (None, None) => None,
        (input, output) => Some(TokenUsage {
            input_tokens: input.unwrap_or(0),
            output_tokens: output.unwrap_or(0),
        }),
    };
    let usage = usage_or_estimate(usage, request, &content, &tool_calls);
    Ok(CompletionResponse {
        content,
        tool_calls,
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::StreamDelta;
    use std::sync::Mutex;

    fn request(messages: Vec<Message>) -> CompletionRequest {
        CompletionRequest {
            model: String::new(),
            agent: "a".into(),
            step: "s".into(),
            messages,
            tools: Vec::new(),
            output_schema: None,
            max_tokens: None,
            temperature: None,
            position: None,
        }
    }

    #[test]
    fn tool_results_open_their_merged_user_message() {
        let config = AnthropicConfig::new("claude-sonnet-4-20250514");
        let body = build_request_body(
            &config,
            &request(vec![
                Message::text(Role::User, "first"),
                Message::tool_result("t1", "one"),
                Message::text(Role::User, ""),
            ]),
            false,
        )
        .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["model"], "claude-sonnet-4-20250514");
        assert_eq!(body["max_tokens"], 4096);
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "one"},
                {"type": "text", "text": "first"},
            ]}])
        );
    }

    #[test]
    fn stream_events_in_any_order_never_panic() {
        let events = [
            r#"{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":null}"#,
            r#"{"type":"future_event"}"#,
            r#"{"type":"error","error":{}}"#,
            r#"{"type":"message_stop"}"#,
            "{",
            "[]",
        ];
        let seen = Arc::new(Mutex::new(Vec::<StreamDelta>::new()));
        let sink_seen = Arc::clone(&seen);
        let sink: DeltaSink = Arc::new(move |delta| sink_seen.lock().unwrap().push(delta));
        let mut assembler = StreamAssembler::new(sink);
        for event in events {
            let _ = assembler.on_data(event);
        }
        let reply = assembler.finish(&request(vec![])).unwrap();
        assert!(reply.content.is_empty());
        for body in events {
            let _ = parse_response(body.as_bytes(), &request(vec![]));
        }
    }

    #[test]
    fn error_types_map_to_documented_statuses() {
        assert_eq!(error_status("overloaded_error"), 529);
        assert_eq!(error_status("rate_limit_error"), 429);
        assert_eq!(error_status("authentication_error"), 401);
        assert_eq!(error_status("something_new"), 500);
    }
}
