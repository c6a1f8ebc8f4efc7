//! The Chat Completions wire format: serde types shaped exactly as the API sends and takes
//! them (`POST /chat/completions`), holding only the fields baton uses. Unknown fields in
//! replies are ignored, and fields that compatible servers omit or send as `null` are
//! optional, so OpenAI, Ollama, vLLM, llama.cpp, LM Studio, OpenRouter and Groq all parse.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The request body.
#[derive(Debug, Serialize)]
pub(crate) struct ChatRequest<'a> {
    pub model: &'a str,
    pub messages: Vec<ChatMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
}

/// One message of the request. `content` is always sent: `null` only for an assistant
/// message that carries tool calls and no text.
#[derive(Debug, Serialize)]
pub(crate) struct ChatMessage<'a> {
    pub role: &'static str,
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<RequestToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<&'a str>,
}

/// A tool call of an earlier assistant message, sent back in the conversation.
#[derive(Debug, Serialize)]
pub(crate) struct RequestToolCall<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: RequestFunction<'a>,
}

/// The function of a [`RequestToolCall`]: arguments are JSON *text*.
#[derive(Debug, Serialize)]
pub(crate) struct RequestFunction<'a> {
    pub name: &'a str,
    pub arguments: String,
}

/// A tool the model may call.
#[derive(Debug, Serialize)]
pub(crate) struct ToolSpec<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionSpec<'a>,
}

/// The function of a [`ToolSpec`].
#[derive(Debug, Serialize)]
pub(crate) struct FunctionSpec<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<&'a Value>,
}

/// `response_format: {type: json_schema, json_schema: {name, schema}}`.
#[derive(Debug, Serialize)]
pub(crate) struct ResponseFormat<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub json_schema: JsonSchemaFormat<'a>,
}

/// The named schema of a [`ResponseFormat`].
#[derive(Debug, Serialize)]
pub(crate) struct JsonSchemaFormat<'a> {
    pub name: &'static str,
    pub schema: &'a Value,
}

/// `stream_options: {include_usage: true}`: a last chunk carries the usage.
#[derive(Debug, Serialize)]
pub(crate) struct StreamOptions {
    pub include_usage: bool,
}

/// A non-streamed reply.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatResponse {
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<Usage>,
    /// An error object some servers send with status 200.
    #[serde(default)]
    pub error: Option<Value>,
}

/// One choice of a [`ChatResponse`] (baton asks for one).
#[derive(Debug, Deserialize)]
pub(crate) struct Choice {
    pub message: ResponseMessage,
}

/// The assistant message of a [`Choice`].
#[derive(Debug, Deserialize)]
pub(crate) struct ResponseMessage {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ResponseToolCall>>,
}

/// A tool call in a reply.
#[derive(Debug, Deserialize)]
pub(crate) struct ResponseToolCall {
    #[serde(default)]
    pub id: Option<String>,
    pub function: ResponseFunction,
}

/// The function of a [`ResponseToolCall`]. `arguments` is JSON text in OpenAI's API; a few
/// compatible servers send an object instead, which is taken as it is.
#[derive(Debug, Deserialize)]
pub(crate) struct ResponseFunction {
    pub name: String,
    #[serde(default)]
    pub arguments: Option<Value>,
}

/// Token counts.
#[derive(Clone, Copy, Debug, Deserialize)]
pub(crate) struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

/// One `data:` payload of a streamed reply (`chat.completion.chunk`), or an error object that
/// some servers send in the stream instead.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatChunk {
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub error: Option<Value>,
}

/// One choice of a [`ChatChunk`].
#[derive(Debug, Deserialize)]
pub(crate) struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Option<Delta>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// What a chunk adds to the message.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Delta {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A piece of a tool call: the first piece of a call carries its `id` and `function.name`,
/// later ones more of `function.arguments`; `index` says which call of the reply it belongs to.
#[derive(Debug, Deserialize)]
pub(crate) struct ToolCallDelta {
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionDelta>,
}

/// The function part of a [`ToolCallDelta`].
#[derive(Debug, Deserialize)]
pub(crate) struct FunctionDelta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<Value>,
}
