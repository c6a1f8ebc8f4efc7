//! A [`Model`] for any OpenAI-compatible Chat Completions endpoint: OpenAI itself, Ollama,
//! vLLM, the llama.cpp server, LM Studio, OpenRouter, Groq and the like.
//!
//! It sends `POST {base_url}/chat/completions` with `Authorization: Bearer {api_key}` (when a
//! key is configured) and maps baton's conversation onto the wire format: system, user and
//! assistant messages keep their roles; an assistant message's tool calls go out as
//! `tool_calls` (`type: function`, arguments as JSON text); a tool result is a `tool` message
//! answering its `tool_call_id`. Tools are sent as `{type: function, function: {name,
//! description, parameters}}`. When the request has an output schema and
//! [`OpenAiConfig::json_schema_output`] is on, it is sent as `response_format: {type:
//! json_schema, json_schema: {name: "output", schema}}`.
//!
//! With [`OpenAiConfig::stream`] on, the reply is requested as Server-Sent Events (with
//! `stream_options: {include_usage: true}`), and [`Model::complete_streaming`] hands every
//! piece of text and of each tool call to the sink as it arrives. The assembled
//! [`CompletionResponse`] is the same as a non-streamed call's.
//!
//! ```no_run
//! use baton_core::{CompletionRequest, Message, Model, Role};
//! use baton_providers::openai::{OpenAiConfig, OpenAiModel};
//!
//! # async fn run() -> Result<(), baton_core::ModelError> {
//! // A local Ollama: no key, and nothing to pay.
//! let model = OpenAiModel::new(
//!     OpenAiConfig::new("llama3.1").with_base_url("http://localhost:11434/v1"),
//! )?;
//! let reply = model
//!     .complete(CompletionRequest {
//!         model: String::new(), // empty: the configured model
//!         agent: "writer".into(),
//!         step: "draft".into(),
//!         messages: vec![Message::text(Role::User, "Write a haiku about Rust.")],
//!         tools: Vec::new(),
//!         output_schema: None,
//!         max_tokens: Some(200),
//!         temperature: None,
//!         position: None,
//!     })
//!     .await?;
//! println!("{} ({} tokens out)", reply.content, reply.usage.output_tokens);
//! # Ok(())
//! # }
//! ```

mod stream;
mod wire;

use crate::assemble::{fallback_call_id, parse_tool_args, tool_args_text, usage_or_estimate};
use crate::assemble::{is_json, replay_to_sink};
use crate::http;
use baton_core::{
    CompletionRequest, CompletionResponse, DeltaSink, Message, Model, ModelError, Role, TokenUsage,
    ToolCall,
};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use stream::StreamAssembler;
use wire::{
    ChatMessage, ChatRequest, ChatResponse, FunctionSpec, JsonSchemaFormat, RequestFunction,
    RequestToolCall, ResponseFormat, StreamOptions, ToolSpec,
};

/// OpenAI's own endpoint, the default [`OpenAiConfig::base_url`].
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The default [`OpenAiConfig::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Which request field carries the completion-token limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxTokensField {
    /// `max_tokens`: what compatible servers (Ollama, vLLM, llama.cpp, Groq) understand.
    MaxTokens,
    /// `max_completion_tokens`: what OpenAI asks for now (its reasoning models reject
    /// `max_tokens`).
    MaxCompletionTokens,
}

/// How to reach an OpenAI-compatible endpoint. Build it with [`OpenAiConfig::new`] and the
/// `with_*` methods, or set the public fields.
#[derive(Clone)]
#[non_exhaustive]
pub struct OpenAiConfig {
    /// The API's base URL, up to and including the version (`/v1`); requests go to
    /// `{base_url}/chat/completions`. Default: [`DEFAULT_BASE_URL`].
    pub base_url: String,
    /// Sent as `Authorization: Bearer {api_key}`; `None` sends no authorization (Ollama and
    /// other local servers need none).
    pub api_key: Option<String>,
    /// The model name sent when a request does not name one (an empty
    /// [`CompletionRequest::model`]).
    pub model: String,
    /// Request the reply as Server-Sent Events. Both [`Model::complete`] and
    /// [`Model::complete_streaming`] then stream on the wire; only the latter reports the
    /// pieces. Default: off.
    pub stream: bool,
    /// The longest wait for the server: for the connection, the response headers and (while
    /// reading the body) each next chunk. A streamed reply can take longer in total as long as
    /// it keeps sending. Default: [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// More headers for every request (OpenRouter's `HTTP-Referer`, an organization header,
    /// a gateway's key).
    pub extra_headers: Vec<(String, String)>,
    /// Send a request's output schema as `response_format: {type: json_schema, ...}`. Many
    /// compatible servers don't support it; turned off, the schema only reaches the model
    /// through the prompt (where baton always puts it). Default: on.
    pub json_schema_output: bool,
    /// The completion-token limit's field; `None` picks `max_completion_tokens` for
    /// `api.openai.com` and `max_tokens` for everything else. Default: `None`.
    pub max_tokens_field: Option<MaxTokensField>,
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self
            .extra_headers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("stream", &self.stream)
            .field("timeout", &self.timeout)
            .field("extra_headers", &headers)
            .field("json_schema_output", &self.json_schema_output)
            .field("max_tokens_field", &self.max_tokens_field)
            .finish()
    }
}

impl OpenAiConfig {
    /// A configuration for `model` at OpenAI's endpoint, with no key, no streaming and the
    /// defaults above.
    pub fn new(model: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: DEFAULT_BASE_URL.to_string(),
            api_key: None,
            model: model.into(),
            stream: false,
            timeout: DEFAULT_TIMEOUT,
            extra_headers: Vec::new(),
            json_schema_output: true,
            max_tokens_field: None,
        }
    }

    /// Set [`OpenAiConfig::base_url`].
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// Set [`OpenAiConfig::api_key`].
    pub fn with_api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// Set [`OpenAiConfig::stream`].
    pub fn with_stream(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }

    /// Set [`OpenAiConfig::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Add one of [`OpenAiConfig::extra_headers`].
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_headers.push((name.into(), value.into()));
        self
    }

    /// Set [`OpenAiConfig::json_schema_output`].
    pub fn with_json_schema_output(mut self, on: bool) -> Self {
        self.json_schema_output = on;
        self
    }

    /// Set [`OpenAiConfig::max_tokens_field`].
    pub fn with_max_tokens_field(mut self, field: MaxTokensField) -> Self {
        self.max_tokens_field = Some(field);
        self
    }

    /// The field the token limit goes in, resolving `None` by the endpoint.
    fn resolved_max_tokens_field(&self) -> MaxTokensField {
        self.max_tokens_field.unwrap_or_else(|| {
            if self.base_url.contains("://api.openai.com") {
                MaxTokensField::MaxCompletionTokens
            } else {
                MaxTokensField::MaxTokens
            }
        })
    }
}

/// A model behind an OpenAI-compatible Chat Completions endpoint. Cheap to clone: clones
/// share one connection pool.
#[derive(Clone, Debug)]
pub struct OpenAiModel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: OpenAiConfig,
    client: reqwest::Client,
    url: String,
    headers: HeaderMap,
}

impl OpenAiModel {
    /// A model for `config`. Fails with [`ModelError::Config`] when a header name or value
    /// (the key included) cannot be sent, or the HTTP client cannot be built.
    pub fn new(config: OpenAiConfig) -> Result<Self, ModelError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(key) = &config.api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                ModelError::Config {
                    message: "the OpenAI API key contains characters that cannot be sent in a \
                              header"
                        .to_string(),
                }
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
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
        let url = http::join_url(&config.base_url, "chat/completions");
        Ok(OpenAiModel {
            inner: Arc::new(Inner {
                config,
                client,
                url,
                headers,
            }),
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &OpenAiConfig {
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
            if assembler.is_done() {
                break;
            }
        }
        if !assembler.is_done()
            && let Some(event) = decoder.finish()
        {
            assembler.on_data(&event.data)?;
        }
        assembler.finish(&request)
    }
}

impl Model for OpenAiModel {
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

/// The wire role of a message.
fn role(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// The JSON body for `request`.
fn build_request_body(
    config: &OpenAiConfig,
    request: &CompletionRequest,
    stream: bool,
) -> Result<Vec<u8>, ModelError> {
    let messages = request
        .messages
        .iter()
        .map(wire_message)
        .collect::<Result<Vec<_>, _>>()?;
    let tools = request
        .tools
        .iter()
        .map(|tool| ToolSpec {
            kind: "function",
            function: FunctionSpec {
                name: &tool.name,
                description: &tool.description,
                parameters: Some(&tool.parameters).filter(|schema| !schema.is_null()),
            },
        })
        .collect();
    let (max_tokens, max_completion_tokens) = match config.resolved_max_tokens_field() {
        MaxTokensField::MaxTokens => (request.max_tokens, None),
        MaxTokensField::MaxCompletionTokens => (None, request.max_tokens),
    };
    let response_format = request
        .output_schema
        .as_ref()
        .filter(|_| config.json_schema_output)
        .map(|schema| ResponseFormat {
            kind: "json_schema",
            json_schema: JsonSchemaFormat {
                name: "output",
                schema,
            },
        });
    let model = if request.model.is_empty() {
        &config.model
    } else {
        &request.model
    };
    let body = ChatRequest {
        model,
        messages,
        tools,
        max_tokens,
        max_completion_tokens,
        temperature: request.temperature,
        response_format,
        stream,
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
    };
    serde_json::to_vec(&body).map_err(|error| ModelError::Config {
        message: format!("cannot encode the request: {error}"),
    })
}

/// One message on the wire.
fn wire_message(message: &Message) -> Result<ChatMessage<'_>, ModelError> {
    let tool_call_id = match message.role {
        Role::Tool => Some(
            message
                .tool_call_id
                .as_deref()
                .ok_or_else(|| ModelError::Config {
                    message: "a tool message has no tool_call_id".to_string(),
                })?,
        ),
        _ => None,
    };
    let tool_calls: Vec<RequestToolCall<'_>> = if message.role == Role::Assistant {
        message
            .tool_calls
            .iter()
            .map(|call| RequestToolCall {
                id: &call.id,
                kind: "function",
                function: RequestFunction {
                    name: &call.name,
                    arguments: tool_args_text(&call.args),
                },
            })
            .collect()
    } else {
        Vec::new()
    };
    let content = if message.content.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(message.content.as_str())
    };
    Ok(ChatMessage {
        role: role(message.role),
        content,
        tool_calls,
        tool_call_id,
    })
}

/// A non-streamed reply.
fn parse_response(
    body: &[u8],
    request: &CompletionRequest,
) -> Result<CompletionResponse, ModelError> {
    let reply: ChatResponse = serde_json::from_slice(body)
        .map_err(|error| http::malformed_json("the reply", &error, body))?;
    if let Some(error) = reply.error.filter(|error| !error.is_null()) {
        return Err(stream::body_error(&error));
    }
    let Some(choice) = reply.choices.into_iter().next() else {
        return Err(ModelError::Malformed {
            message: "the reply has no choices".to_string(),
        });
    };
    let message = choice.message;
    let content = [message.content, message.refusal]
        .into_iter()
        .flatten()
        .collect::<String>();
    let tool_calls: Vec<ToolCall> = message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(position, call)| ToolCall {
            id: call
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| fallback_call_id(position)),
            name: call.function.name,
            args: match call.function.arguments {
                Some(Value::String(text)) => parse_tool_args(&text),
                Some(Value::Null) | None => parse_tool_args(""),
                Some(other) => other,
            },
        })
        .collect();
    let usage = reply.usage.map(|usage| TokenUsage {
        input_tokens: usage.prompt_tokens,
        output_tokens: usage.completion_tokens,
    });
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
    use serde_json::json;
    use std::sync::Mutex;

    fn request() -> CompletionRequest {
        CompletionRequest {
            model: "gpt-4o-mini".into(),
            agent: "a".into(),
            step: "s".into(),
            messages: vec![Message::text(Role::User, "hi")],
            tools: Vec::new(),
            output_schema: None,
            max_tokens: Some(10),
            temperature: None,
            position: None,
        }
    }

    fn collect() -> (DeltaSink, Arc<Mutex<Vec<StreamDelta>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = Arc::clone(&seen);
        let sink: DeltaSink = Arc::new(move |delta| sink_seen.lock().unwrap().push(delta));
        (sink, seen)
    }

    #[test]
    fn max_tokens_field_follows_the_endpoint() {
        let config = OpenAiConfig::new("m");
        let body: Value =
            serde_json::from_slice(&build_request_body(&config, &request(), false).unwrap())
                .unwrap();
        assert_eq!(body["max_completion_tokens"], 10);
        assert!(body.get("max_tokens").is_none());
        let config = config.with_base_url("http://localhost:11434/v1");
        let body: Value =
            serde_json::from_slice(&build_request_body(&config, &request(), false).unwrap())
                .unwrap();
        assert_eq!(body["max_tokens"], 10);
        assert!(body.get("stream").is_none());
    }

    #[test]
    fn debug_redacts_the_key() {
        let config = OpenAiConfig::new("m").with_api_key("sk-secret");
        assert!(!format!("{config:?}").contains("sk-secret"));
    }

    #[test]
    fn ollama_parallel_calls_at_index_zero_stay_apart() {
        let (sink, seen) = collect();
        let mut assembler = StreamAssembler::new(sink);
        for data in [
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\"x\":1}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"b","function":{"name":"g","arguments":{"y":2}}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        ] {
            assembler.on_data(data).unwrap();
        }
        let reply = assembler.finish(&request()).unwrap();
        assert_eq!(reply.tool_calls.len(), 2);
        assert_eq!(reply.tool_calls[0].args, json!({"x": 1}));
        assert_eq!(reply.tool_calls[1].name, "g");
        assert_eq!(reply.tool_calls[1].args, json!({"y": 2}));
        assert_eq!(seen.lock().unwrap().len(), 4);
    }

    #[test]
    fn repeated_names_and_missing_ids() {
        let (sink, _) = collect();
        let mut assembler = StreamAssembler::new(sink);
        for data in [
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\"x\""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":":1}"}}]}}]}"#,
            "[DONE]",
        ] {
            assembler.on_data(data).unwrap();
        }
        let reply = assembler.finish(&request()).unwrap();
        assert_eq!(reply.tool_calls[0].id, "call_0");
        assert_eq!(reply.tool_calls[0].name, "f");
        assert_eq!(reply.tool_calls[0].args, json!({"x": 1}));
        // No usage reported: estimated rather than zero.
        assert!(reply.usage.input_tokens > 0);
    }

    #[test]
    fn garbage_never_panics() {
        for data in [
            "{",
            "null",
            "[]",
            "42",
            r#"{"choices":null}"#,
            r#"{"choices":[{"delta":null}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":null}]}}]}"#,
            r#"{"error":"boom"}"#,
            r#"{"error":{"code":503,"message":"busy"}}"#,
        ] {
            let (sink, _) = collect();
            let mut assembler = StreamAssembler::new(sink);
            let _ = assembler.on_data(data);
            let _ = assembler.finish(&request());
            let _ = parse_response(data.as_bytes(), &request());
        }
        let (sink, _) = collect();
        let mut assembler = StreamAssembler::new(sink);
        let error = assembler
            .on_data(r#"{"error":{"code":503,"message":"busy"}}"#)
            .unwrap_err();
        assert_eq!(
            error,
            ModelError::Http {
                status: 503,
                message: "error in the stream: busy".into()
            }
        );
    }
}
