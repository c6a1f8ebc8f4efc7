//! Assembling a streamed Chat Completions reply from its `data:` payloads, handing each piece
//! to the sink as it arrives.
//!
//! The stream is a sequence of `chat.completion.chunk` objects ending with `data: [DONE]`.
//! Text arrives in `choices[0].delta.content`; a tool call arrives as pieces in
//! `choices[0].delta.tool_calls[]`, tied together by their `index`: the first piece carries
//! the call's `id` and `function.name`, later ones more of `function.arguments`. With
//! `stream_options.include_usage`, a last chunk with empty `choices` carries the usage.
//!
//! Two quirks of compatible servers are handled: Ollama sends every call of a parallel batch
//! with index 0 and tells them apart only by their ids, so a new id at an index already in use
//! opens a new call; and a server may send a call's name again in later pieces, which is not
//! appended twice.

use super::wire::{ChatChunk, ToolCallDelta};
use crate::assemble::{fallback_call_id, parse_tool_args, usage_or_estimate};
use crate::http::json_error_message;
use baton_core::{
    CompletionRequest, CompletionResponse, DeltaSink, ModelError, StreamDelta, TokenUsage, ToolCall,
};
use serde_json::Value;
use std::collections::HashMap;

/// A tool call being assembled.
#[derive(Debug, Default)]
struct Slot {
    id: String,
    name: String,
    args: String,
    /// Whether [`StreamDelta::ToolCall`] has been sent for it.
    started: bool,
}

/// The state of one streamed reply.
pub(crate) struct StreamAssembler {
    sink: DeltaSink,
    content: String,
    slots: Vec<Slot>,
    /// The wire index of a call -> its slot.
    by_index: HashMap<u32, usize>,
    usage: Option<TokenUsage>,
    /// A choice has reported its `finish_reason`.
    finished: bool,
    /// `data: [DONE]` has arrived.
    done: bool,
}

impl StreamAssembler {
    pub(crate) fn new(sink: DeltaSink) -> Self {
        StreamAssembler {
            sink,
            content: String::new(),
            slots: Vec::new(),
            by_index: HashMap::new(),
            usage: None,
            finished: false,
            done: false,
        }
    }

    /// Whether `[DONE]` has arrived (nothing after it matters).
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Take one event's `data`.
    pub(crate) fn on_data(&mut self, data: &str) -> Result<(), ModelError> {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let chunk: ChatChunk =
            serde_json::from_str(data).map_err(|error| ModelError::Malformed {
                message: format!(
                    "a stream chunk is not the expected JSON ({error}): {}",
                    crate::http::truncate(data, 200)
                ),
            })?;
        if let Some(error) = chunk.error {
            return Err(body_error(&error));
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(TokenUsage {
                input_tokens: usage.prompt_tokens,
                output_tokens: usage.completion_tokens,
            });
        }
        for choice in chunk.choices.into_iter().filter(|choice| choice.index == 0) {
            if let Some(delta) = choice.delta {
                for text in [delta.content, delta.refusal].into_iter().flatten() {
                    if !text.is_empty() {
                        self.content.push_str(&text);
                        (self.sink)(StreamDelta::Text { text });
                    }
                }
                for call in delta.tool_calls.unwrap_or_default() {
                    self.on_tool_call(call);
                }
            }
            if choice.finish_reason.is_some() {
                self.finished = true;
            }
        }
        Ok(())
    }

    fn on_tool_call(&mut self, call: ToolCallDelta) {
        let index = call.index.unwrap_or(0);
        let id = call.id.filter(|id| !id.is_empty());
        let slot = match self.by_index.get(&index) {
            Some(&slot)
                if id.as_ref().is_none_or(|id| {
                    self.slots[slot].id.is_empty() || *id == self.slots[slot].id
                }) =>
            {
                slot
            }
            _ => {
                self.slots.push(Slot::default());
                let slot = self.slots.len() - 1;
                self.by_index.insert(index, slot);
                slot
            }
        };
        let position = slot;
        let slot = &mut self.slots[slot];
        if let Some(id) = id
            && slot.id.is_empty()
        {
            slot.id = id;
        }
        let (name, fragment) = match call.function {
            Some(function) => (
                function.name.unwrap_or_default(),
                match function.arguments {
                    Some(Value::String(text)) => text,
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                },
            ),
            None => (String::new(), String::new()),
        };
        if !slot.started && !name.is_empty() {
            slot.name = name;
        }
        slot.args.push_str(&fragment);
        if !slot.started {
            if slot.name.is_empty() {
                return;
            }
            if slot.id.is_empty() {
                slot.id = fallback_call_id(position);
            }
            slot.started = true;
            (self.sink)(StreamDelta::ToolCall {
                id: slot.id.clone(),
                name: slot.name.clone(),
            });
            if !slot.args.is_empty() {
                (self.sink)(StreamDelta::ToolArgs {
                    id: slot.id.clone(),
                    fragment: slot.args.clone(),
                });
            }
        } else if !fragment.is_empty() {
            (self.sink)(StreamDelta::ToolArgs {
                id: slot.id.clone(),
                fragment,
            });
        }
    }

    /// The body has ended: the whole reply, or why it is incomplete.
    pub(crate) fn finish(
        self,
        request: &CompletionRequest,
    ) -> Result<CompletionResponse, ModelError> {
        if !self.finished && !self.done {
            return Err(ModelError::Malformed {
                message: "the stream ended before the reply was complete (no finish_reason and \
                          no [DONE])"
                    .to_string(),
            });
        }
        let mut tool_calls = Vec::with_capacity(self.slots.len());
        for (position, slot) in self.slots.into_iter().enumerate() {
            if slot.name.is_empty() {
                return Err(ModelError::Malformed {
                    message: format!("streamed tool call {position} has no function name"),
                });
            }
            tool_calls.push(ToolCall {
                id: slot.id,
                name: slot.name,
                args: parse_tool_args(&slot.args),
            });
        }
        let usage = usage_or_estimate(self.usage, request, &self.content, &tool_calls);
        Ok(CompletionResponse {
            content: self.content,
            tool_calls,
            usage,
        })
    }
}

/// An error object sent inside the stream (`data: {"error": {...}}`) or in a 200 body, as an
/// HTTP error: its numeric `code` or `status` when it has one, else 400 for an invalid request
/// and 500 (worth a retry) for anything else.
pub(super) fn body_error(error: &Value) -> ModelError {
    let wrapped = serde_json::json!({ "error": error });
    let message = json_error_message(&wrapped).unwrap_or_else(|| error.to_string());
    let numeric = ["code", "status"].iter().find_map(|key| {
        error
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|code| u16::try_from(code).ok())
            .filter(|code| (400..600).contains(code))
    });
    let status = numeric.unwrap_or_else(|| {
        let kind = error.get("type").and_then(Value::as_str).unwrap_or("");
        if kind == "invalid_request_error" {
            400
        } else {
            500
        }
    });
    ModelError::Http {
        status,
        message: format!("error in the stream: {message}"),
    }
}
