//! The model seam: one async capability, `complete`.
//!
//! Providers (the scripted one, OpenAI-compatible, Anthropic) implement [`Model`]; the runtime
//! stores them as `Arc<dyn DynModel>`, the object-safe twin that every `Model` gets for free.

use crate::BoxFuture;
use crate::message::{Message, ToolCall};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;

/// Tokens used by one model call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

/// A tool as the model sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    /// Name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: Value,
}

/// One request to a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// The provider's model name (for example `gpt-4o-mini`).
    pub model: String,
    /// The agent making the call (scripted providers key replies on it).
    pub agent: String,
    /// The workflow step making the call.
    pub step: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef>,
    /// JSON Schema the final answer must satisfy, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// Upper bound on completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Where this call stands in its run (not sent to providers). Deterministic providers use
    /// it to answer a resumed run exactly as they would have answered the original process.
    #[serde(skip)]
    pub position: Option<CallPosition>,
}

/// How many model calls came before this one in the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallPosition {
    /// Earlier calls by the same agent.
    pub by_agent: u64,
    /// Earlier calls from the same step.
    pub by_step: u64,
}

/// A model's reply: text, tool calls, or both.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    /// Text of the reply.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content: String,
    /// Tool calls requested by the reply; empty for a final answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Tokens the call used.
    #[serde(default)]
    pub usage: TokenUsage,
}

/// Why a model call failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelError {
    /// The provider answered with an HTTP error status.
    #[error("HTTP {status}: {message}")]
    Http {
        /// HTTP status code.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// No answer within the time allowed.
    #[error("model call timed out after {after_ms} ms")]
    Timeout {
        /// How long we waited.
        after_ms: u64,
    },
    /// The connection failed or was reset.
    #[error("connection error: {message}")]
    Connection {
        /// What went wrong.
        message: String,
    },
    /// The provider's reply could not be understood.
    #[error("malformed reply: {message}")]
    Malformed {
        /// What was wrong with it.
        message: String,
    },
    /// The provider is misconfigured or has nothing to say for this request.
    #[error("{message}")]
    Config {
        /// What is wrong.
        message: String,
    },
}

impl ModelError {
    /// Whether trying the same call again may succeed (429, 5xx, timeouts, connection resets).
    pub fn is_retryable(&self) -> bool {
        match self {
            ModelError::Http { status, .. } => *status == 429 || *status >= 500,
            ModelError::Timeout { .. } | ModelError::Connection { .. } => true,
            ModelError::Malformed { .. } | ModelError::Config { .. } => false,
        }
    }
}

/// A piece of a reply as it streams in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamDelta {
    /// More text.
    Text {
        /// The new text.
        text: String,
    },
    /// A tool call begins.
    ToolCall {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
    },
    /// More of a tool call's arguments (JSON text, in pieces).
    ToolArgs {
        /// Call id.
        id: String,
        /// The new fragment.
        fragment: String,
    },
}

/// Where a streaming provider sends the pieces of a reply as they arrive.
pub type DeltaSink = Arc<dyn Fn(StreamDelta) + Send + Sync>;

/// A language model provider.
pub trait Model: Send + Sync {
    /// Send one request and wait for the whole reply.
    fn complete(
        &self,
        request: CompletionRequest,
    ) -> impl Future<Output = Result<CompletionResponse, ModelError>> + Send;

    /// Send one request, handing each piece of the reply to `sink` as it arrives, and return the
    /// whole reply (the same as [`Model::complete`] would). Providers that do not stream use
    /// this default, which sends nothing to the sink.
    fn complete_streaming(
        &self,
        request: CompletionRequest,
        sink: DeltaSink,
    ) -> impl Future<Output = Result<CompletionResponse, ModelError>> + Send {
        let _ = sink;
        self.complete(request)
    }
}

/// The object-safe twin of [`Model`], implemented for every `Model`.
pub trait DynModel: Send + Sync {
    /// See [`Model::complete`].
    fn complete_dyn(
        &self,
        request: CompletionRequest,
    ) -> BoxFuture<'_, Result<CompletionResponse, ModelError>>;
    /// See [`Model::complete_streaming`].
    fn complete_streaming_dyn(
        &self,
        request: CompletionRequest,
        sink: DeltaSink,
    ) -> BoxFuture<'_, Result<CompletionResponse, ModelError>>;
}

impl<M: Model> DynModel for M {
    fn complete_dyn(
        &self,
        request: CompletionRequest,
    ) -> BoxFuture<'_, Result<CompletionResponse, ModelError>> {
        Box::pin(self.complete(request))
    }
    fn complete_streaming_dyn(
        &self,
        request: CompletionRequest,
        sink: DeltaSink,
    ) -> BoxFuture<'_, Result<CompletionResponse, ModelError>> {
        Box::pin(self.complete_streaming(request, sink))
    }
}

impl Model for Arc<dyn DynModel> {
    fn complete(
        &self,
        request: CompletionRequest,
    ) -> impl Future<Output = Result<CompletionResponse, ModelError>> + Send {
        self.as_ref().complete_dyn(request)
    }
    fn complete_streaming(
        &self,
        request: CompletionRequest,
        sink: DeltaSink,
    ) -> impl Future<Output = Result<CompletionResponse, ModelError>> + Send {
        self.as_ref().complete_streaming_dyn(request, sink)
    }
}
