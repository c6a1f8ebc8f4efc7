//! The Anthropic Messages wire format: serde types shaped exactly as the API sends and takes
//! them (`POST /v1/messages`), holding only the fields baton uses. Unknown fields, content
//! block types (`thinking`, `redacted_thinking`, server tools) and stream events are ignored.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The request body.
#[derive(Debug, Serialize)]
pub(crate) struct MessagesRequest<'a> {
    pub model: &'a str,
    pub max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// One message of the request: a role and its content blocks.
#[derive(Debug, Serialize)]
pub(crate) struct WireMessage<'a> {
    pub role: &'static str,
    pub content: Vec<RequestBlock<'a>>,
}

/// A content block of a request message.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum RequestBlock<'a> {
    /// Text.
    Text { text: &'a str },
    /// A tool call of an earlier assistant turn; `input` must be an object.
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    /// A tool's result, in a user message.
    ToolResult {
        tool_use_id: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        content: &'a str,
    },
}

/// A tool the model may call.
#[derive(Debug, Serialize)]
pub(crate) struct ToolSpec<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub description: &'a str,
    pub input_schema: Value,
}

/// A non-streamed reply (`type: message`).
#[derive(Debug, Deserialize)]
pub(crate) struct MessagesResponse {
    pub content: Vec<ResponseBlock>,
    pub usage: Usage,
}

/// A content block of a reply.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ResponseBlock {
    /// Text.
    Text {
        #[serde(default)]
        text: String,
    },
    /// A tool call.
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// Anything else (`thinking`, `redacted_thinking`, server tool blocks).
    #[serde(other)]
    Other,
}

/// Token counts. The prompt's tokens are split three ways when prompt caching is in play.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub(crate) struct Usage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

impl Usage {
    /// All prompt tokens: uncached, written to the cache and read from it. (baton's
    /// [`baton_core::TokenUsage`] has one input count, so cached tokens are counted at the
    /// full price: budgets err on the safe side.)
    pub fn total_input(&self) -> Option<u64> {
        let parts = [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ];
        if parts.iter().all(Option::is_none) {
            return None;
        }
        Some(
            parts
                .iter()
                .flatten()
                .fold(0u64, |sum, n| sum.saturating_add(*n)),
        )
    }
}

/// An error body, in a non-2xx reply or an `error` stream event.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub message: String,
}

/// A whole error body: `{"type": "error", "error": {...}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// One stream event's `data`, told apart by its `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum StreamEvent {
    /// The message begins; its usage has the prompt's tokens.
    MessageStart { message: StartMessage },
    /// A content block begins (text, or a tool call with its id and name).
    ContentBlockStart {
        index: u32,
        content_block: ResponseBlock,
    },
    /// More of a content block.
    ContentBlockDelta { index: u32, delta: BlockDelta },
    /// A content block is complete.
    ContentBlockStop,
    /// Message-level changes: stop reason and cumulative output tokens.
    MessageDelta {
        #[serde(default)]
        usage: Option<Usage>,
    },
    /// The message is complete.
    MessageStop,
    /// Keep-alive.
    Ping,
    /// The request failed mid-stream (for example `overloaded_error`).
    Error { error: ErrorBody },
    /// Event types added after this was written.
    #[serde(other)]
    Other,
}

/// The `message` of a `message_start` event.
#[derive(Debug, Deserialize)]
pub(crate) struct StartMessage {
    #[serde(default)]
    pub usage: Usage,
}

/// The `delta` of a `content_block_delta` event.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum BlockDelta {
    /// More text.
    TextDelta { text: String },
    /// More of a tool call's input, as JSON text.
    InputJsonDelta { partial_json: String },
    /// `thinking_delta`, `signature_delta`, `citations_delta` and later additions.
    #[serde(other)]
    Other,
}
