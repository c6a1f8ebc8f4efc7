//! # baton-providers
//!
//! Model providers for baton: implementations of [`baton_core::Model`].
//!
//! - [`openai::OpenAiModel`] talks to any OpenAI-compatible Chat Completions endpoint
//!   (OpenAI, Ollama, vLLM, llama.cpp, LM Studio, OpenRouter, Groq).
//! - [`anthropic::AnthropicModel`] talks to Anthropic's Messages API.
//! - [`scripted::ScriptedModel`] answers from a script file: deterministic replies, tool
//!   calls, latencies, token counts and injected faults, for tests, demos and offline runs.
//!
//! Both HTTP providers stream over Server-Sent Events when configured to, and classify
//! failures the same way (see [`http`]). [`prices`] holds default prices and context windows
//! of common models, and [`tokens`] estimates a request's tokens before it is sent.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod anthropic;
mod assemble;
pub mod http;
pub mod openai;
pub mod prices;
pub mod scripted;
pub mod tokens;

pub use anthropic::{AnthropicConfig, AnthropicModel};
pub use openai::{OpenAiConfig, OpenAiModel};
pub use scripted::{KeyStats, ScriptError, ScriptKey, ScriptedModel};
