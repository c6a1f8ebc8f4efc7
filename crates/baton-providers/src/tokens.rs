//! Token estimates made before a call: for budgets (will this call fit in what is left?) and
//! context windows (does the conversation still fit the model?).
//!
//! Text is counted with OpenAI's `o200k_base` encoding (the one GPT-4o, GPT-4.1 and the
//! o-series use), whose ranks `tiktoken-rs` embeds in the binary, so nothing is downloaded at
//! run time. For other families (Claude, Llama, Qwen) the count is an approximation: their
//! tokenizers usually give somewhat more tokens for the same text (roughly 10–20 % for
//! English prose), so leave headroom when comparing against a hard limit. Message framing is
//! counted as OpenAI documents it for chat models: 3 tokens per message and 3 to prime the
//! reply.
//!
//! Two cases use a plain heuristic instead (4 characters a token, rounded up): text longer
//! than 256 KiB, where the BPE's cost grows faster than linearly on long runs of letters or
//! whitespace and an estimate does not need the precision, and the (never observed) case of
//! the embedded encoding failing to load.

use baton_core::{CompletionRequest, Message, ToolDef};
use std::sync::OnceLock;
use tiktoken_rs::CoreBPE;

/// Tokens of framing around each message (role, separators).
const TOKENS_PER_MESSAGE: u64 = 3;
/// Tokens that prime the model's reply.
const TOKENS_REPLY_PRIMING: u64 = 3;
/// Tokens of framing around each tool call in a message, and each tool definition.
const TOKENS_PER_TOOL: u64 = 8;
/// Texts longer than this are estimated with the heuristic.
const MAX_ENCODED_BYTES: usize = 256 * 1024;

/// The `o200k_base` encoding, loaded on first use; `None` if it failed to load.
fn encoding() -> Option<&'static CoreBPE> {
    static ENCODING: OnceLock<Option<CoreBPE>> = OnceLock::new();
    ENCODING
        .get_or_init(|| tiktoken_rs::o200k_base().ok())
        .as_ref()
}

/// Tokens in `text` (no framing).
pub fn estimate_text_tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    match encoding() {
        Some(bpe) if text.len() <= MAX_ENCODED_BYTES => {
            u64::try_from(bpe.encode_ordinary(text).len()).unwrap_or(u64::MAX)
        }
        _ => heuristic_tokens(text),
    }
}

/// The heuristic: one token per 4 characters, rounded up.
pub fn heuristic_tokens(text: &str) -> u64 {
    u64::try_from(text.chars().count().div_ceil(4)).unwrap_or(u64::MAX)
}

/// Tokens a model will read for `messages`: their text, their tool calls (name and
/// arguments) and tool-call ids, plus the framing of each message and of the reply.
///
/// ```
/// use baton_core::{Message, Role};
/// use baton_providers::tokens::estimate_tokens;
///
/// let n = estimate_tokens(&[
///     Message::text(Role::System, "You are terse."),
///     Message::text(Role::User, "Say hello."),
/// ]);
/// assert!((10..=30).contains(&n));
/// ```
pub fn estimate_tokens(messages: &[Message]) -> u64 {
    let mut total = TOKENS_REPLY_PRIMING;
    for message in messages {
        total = total
            .saturating_add(TOKENS_PER_MESSAGE)
            .saturating_add(estimate_text_tokens(&message.content));
        if let Some(id) = &message.tool_call_id {
            total = total.saturating_add(estimate_text_tokens(id));
        }
        for call in &message.tool_calls {
            let args = crate::assemble::tool_args_text(&call.args);
            total = total
                .saturating_add(TOKENS_PER_TOOL)
                .saturating_add(estimate_text_tokens(&call.id))
                .saturating_add(estimate_text_tokens(&call.name))
                .saturating_add(estimate_text_tokens(&args));
        }
    }
    total
}

/// Tokens of tool definitions as the model reads them (name, description, schema).
pub fn estimate_tool_tokens(tools: &[ToolDef]) -> u64 {
    tools.iter().fold(0, |total: u64, tool| {
        total
            .saturating_add(TOKENS_PER_TOOL)
            .saturating_add(estimate_text_tokens(&tool.name))
            .saturating_add(estimate_text_tokens(&tool.description))
            .saturating_add(estimate_text_tokens(&tool.parameters.to_string()))
    })
}

/// Tokens of a whole request's input: its messages, its tools and its output schema.
pub fn estimate_request_tokens(request: &CompletionRequest) -> u64 {
    let schema = request
        .output_schema
        .as_ref()
        .map_or(0, |schema| estimate_text_tokens(&schema.to_string()));
    estimate_tokens(&request.messages)
        .saturating_add(estimate_tool_tokens(&request.tools))
        .saturating_add(schema)
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::{Role, ToolCall};
    use serde_json::json;

    #[test]
    fn counts_known_texts_with_o200k() {
        // "hello world" is two tokens in every OpenAI encoding.
        assert_eq!(estimate_text_tokens("hello world"), 2);
        assert_eq!(estimate_text_tokens(""), 0);
        let prose = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        let n = estimate_text_tokens(&prose);
        assert!((180..=220).contains(&n), "{n}");
    }

    #[test]
    fn messages_add_framing_and_tool_calls() {
        let empty = estimate_tokens(&[]);
        assert_eq!(empty, TOKENS_REPLY_PRIMING);
        let one = estimate_tokens(&[Message::text(Role::User, "hello world")]);
        assert_eq!(one, TOKENS_REPLY_PRIMING + TOKENS_PER_MESSAGE + 2);
        let with_call = estimate_tokens(&[Message {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "search".into(),
                args: json!({"query": "rust"}),
            }],
            tool_call_id: None,
        }]);
        assert!(with_call > TOKENS_REPLY_PRIMING + TOKENS_PER_MESSAGE + TOKENS_PER_TOOL);
    }

    #[test]
    fn long_texts_use_the_heuristic() {
        let long = "a".repeat(MAX_ENCODED_BYTES + 4);
        assert_eq!(estimate_text_tokens(&long), heuristic_tokens(&long));
        assert_eq!(heuristic_tokens("abcde"), 2);
    }

    #[test]
    fn requests_count_tools_and_schema() {
        let mut request = CompletionRequest {
            model: "m".into(),
            agent: "a".into(),
            step: "s".into(),
            messages: vec![Message::text(Role::User, "hi")],
            tools: Vec::new(),
            output_schema: None,
            max_tokens: None,
            temperature: None,
            position: None,
        };
        let bare = estimate_request_tokens(&request);
        request.tools.push(ToolDef {
            name: "search".into(),
            description: "Search the web".into(),
            parameters: json!({"type": "object", "properties": {"q": {"type": "string"}}}),
        });
        let with_tool = estimate_request_tokens(&request);
        assert!(with_tool > bare + TOKENS_PER_TOOL);
        request.output_schema = Some(json!({"type": "object"}));
        assert!(estimate_request_tokens(&request) > with_tool);
    }
}
