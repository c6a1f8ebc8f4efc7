//! Assembling a streamed Messages reply from its events, handing each piece to the sink as it
//! arrives.
//!
//! The stream is `message_start` (usage with the prompt's tokens), then for each content
//! block `content_block_start` (a text block, or a `tool_use` block with its id and name),
//! `content_block_delta`s (`text_delta` text, or `input_json_delta` pieces of the tool's input
//! as JSON text) and `content_block_stop`; then `message_delta` (stop reason, cumulative
//! output tokens) and `message_stop`. `ping` events may come anywhere, and an `error` event
//! (for example `overloaded_error`) ends the stream with a failure.

use super::error_status;
use super::wire::{BlockDelta, ResponseBlock, StreamEvent};
use crate::assemble::{parse_tool_args, usage_or_estimate};
use baton_core::{
    CompletionRequest, CompletionResponse, DeltaSink, ModelError, StreamDelta, TokenUsage, ToolCall,
};
use serde_json::Value;
use std::collections::HashMap;

/// A tool call being assembled.
struct ToolBlock {
    id: String,
    name: String,
    /// The input given with `content_block_start` (used when no JSON pieces follow).
    initial: Value,
    json: String,
}

/// The state of one streamed reply.
pub(crate) struct StreamAssembler {
    sink: DeltaSink,
    content: String,
    /// Tool calls in the order their blocks started.
    tools: Vec<ToolBlock>,
    /// Block index -> position in `tools`.
    tool_at: HashMap<u32, usize>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    /// `message_stop` has arrived.
    stopped: bool,
}

impl StreamAssembler {
    pub(crate) fn new(sink: DeltaSink) -> Self {
        StreamAssembler {
            sink,
            content: String::new(),
            tools: Vec::new(),
            tool_at: HashMap::new(),
            input_tokens: None,
            output_tokens: None,
            stopped: false,
        }
    }

    /// Whether `message_stop` has arrived (nothing after it matters).
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Take one event's `data`.
    pub(crate) fn on_data(&mut self, data: &str) -> Result<(), ModelError> {
        let event: StreamEvent =
            serde_json::from_str(data).map_err(|error| ModelError::Malformed {
                message: format!(
                    "a stream event is not the expected JSON ({error}): {}",
                    crate::http::truncate(data.trim(), 200)
                ),
            })?;
        match event {
            StreamEvent::MessageStart { message } => {
                self.input_tokens = message.usage.total_input();
                self.output_tokens = message.usage.output_tokens;
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                ResponseBlock::Text { text } => self.text(text),
                ResponseBlock::ToolUse { id, name, input } => {
                    (self.sink)(StreamDelta::ToolCall {
                        id: id.clone(),
                        name: name.clone(),
                    });
                    self.tool_at.insert(index, self.tools.len());
                    self.tools.push(ToolBlock {
                        id,
                        name,
                        initial: input,
                        json: String::new(),
                    });
                }
                ResponseBlock::Other => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => self.text(text),
                BlockDelta::InputJsonDelta { partial_json } => {
                    let Some(&position) = self.tool_at.get(&index) else {
                        return Err(ModelError::Malformed {
                            message: format!(
                                "input_json_delta for content block {index}, which is no tool_use \
                                 block"
                            ),
                        });
                    };
                    let tool = &mut self.tools[position];
                    if !partial_json.is_empty() {
                        tool.json.push_str(&partial_json);
                        (self.sink)(StreamDelta::ToolArgs {
                            id: tool.id.clone(),
                            fragment: partial_json,
                        });
                    }
                }
                BlockDelta::Other => {}
            },
            StreamEvent::MessageDelta { usage } => {
                if let Some(usage) = usage {
                    // Counts in message_delta are cumulative: they replace earlier ones.
                    if let Some(input) = usage.total_input() {
                        self.input_tokens = Some(input);
                    }
                    if let Some(output) = usage.output_tokens {
                        self.output_tokens = Some(output);
                    }
                }
            }
            StreamEvent::MessageStop => self.stopped = true,
            StreamEvent::Error { error } => {
                return Err(ModelError::Http {
                    status: error_status(&error.kind),
                    message: if error.message.is_empty() {
                        error.kind
                    } else {
                        error.message
                    },
                });
            }
            StreamEvent::ContentBlockStop | StreamEvent::Ping | StreamEvent::Other => {}
        }
        Ok(())
    }

    fn text(&mut self, text: String) {
        if !text.is_empty() {
            self.content.push_str(&text);
            (self.sink)(StreamDelta::Text { text });
        }
    }

    /// The body has ended: the whole reply, or why it is incomplete.
    pub(crate) fn finish(
        self,
        request: &CompletionRequest,
    ) -> Result<CompletionResponse, ModelError> {
        if !self.stopped {
            return Err(ModelError::Malformed {
                message: "the stream ended before the reply was complete (no message_stop event)"
                    .to_string(),
            });
        }
        let tool_calls: Vec<ToolCall> = self
            .tools
            .into_iter()
            .map(|tool| ToolCall {
                id: tool.id,
                name: tool.name,
                args: if tool.json.trim().is_empty() {
                    match tool.initial {
                        Value::Null => parse_tool_args(""),
                        initial => initial,
                    }
                } else {
                    parse_tool_args(&tool.json)
                },
            })
            .collect();
        let reported = match (self.input_tokens, self.output_tokens) {
            (None, None) => None,
            (input, output) => Some(TokenUsage {
                input_tokens: input.unwrap_or(0),
                output_tokens: output.unwrap_or(0),
            }),
        };
        let usage = usage_or_estimate(reported, request, &self.content, &tool_calls);
        Ok(CompletionResponse {
            content: self.content,
            tool_calls,
            usage,
        })
    }
}
