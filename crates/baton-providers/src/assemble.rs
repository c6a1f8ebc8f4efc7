//! Pieces both HTTP providers use to build a [`CompletionResponse`]: parsing a tool call's
//! argument text, and filling in usage a server did not report.

use crate::tokens;
use baton_core::{
    CompletionRequest, CompletionResponse, DeltaSink, Message, Role, StreamDelta, TokenUsage,
    ToolCall,
};
use serde_json::Value;

/// A tool call's arguments from the JSON text the model wrote.
///
/// Empty text (a call without arguments, as some servers send it) is `{}`. Text that is not
/// valid JSON is kept, unchanged, as a JSON string: the call still reaches the runtime, whose
/// schema validation rejects it and tells the model what it sent, so the model can correct
/// itself on its next turn. Failing the whole reply as malformed instead would throw away the
/// rest of the reply and retry blindly, and the model would never learn what went wrong.
pub(crate) fn parse_tool_args(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return Value::Object(serde_json::Map::new());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

/// A tool call's arguments as JSON text for the wire: an argument string kept by
/// [`parse_tool_args`] goes back exactly as the model wrote it.
pub(crate) fn tool_args_text(args: &Value) -> String {
    match args {
        Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

/// The id of a tool call a server sent without one: `call_<n>`, `n` counting from 0 in the
/// reply, the same whether the reply was streamed or not.
pub(crate) fn fallback_call_id(position: usize) -> String {
    format!("call_{position}")
}

/// The usage a server reported or, when it reported none (some OpenAI-compatible servers
/// don't), an estimate from the request and the reply, so that budgets still count the call.
pub(crate) fn usage_or_estimate(
    reported: Option<TokenUsage>,
    request: &CompletionRequest,
    content: &str,
    tool_calls: &[ToolCall],
) -> TokenUsage {
    reported.unwrap_or_else(|| TokenUsage {
        input_tokens: tokens::estimate_request_tokens(request),
        output_tokens: tokens::estimate_tokens(&[Message {
            role: Role::Assistant,
            content: content.to_string(),
            tool_calls: tool_calls.to_vec(),
            tool_call_id: None,
        }]),
    })
}

/// Hand a whole reply to `sink` as if it had streamed in one piece each: for servers that
/// answer a streaming request with a plain JSON body.
pub(crate) fn replay_to_sink(reply: &CompletionResponse, sink: &DeltaSink) {
    if !reply.content.is_empty() {
        sink(StreamDelta::Text {
            text: reply.content.clone(),
        });
    }
    for call in &reply.tool_calls {
        sink(StreamDelta::ToolCall {
            id: call.id.clone(),
            name: call.name.clone(),
        });
        sink(StreamDelta::ToolArgs {
            id: call.id.clone(),
            fragment: tool_args_text(&call.args),
        });
    }
}

/// Whether `response` is JSON rather than the event stream that was asked for.
pub(crate) fn is_json(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().starts_with("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_args_parse_or_stay_raw() {
        assert_eq!(parse_tool_args(r#"{"q":"x"}"#), json!({"q": "x"}));
        assert_eq!(parse_tool_args("  "), json!({}));
        assert_eq!(parse_tool_args(r#"{"q": "x""#), json!(r#"{"q": "x""#));
        assert_eq!(tool_args_text(&json!(r#"{"q": "x""#)), r#"{"q": "x""#);
        assert_eq!(tool_args_text(&json!({"q": 1})), r#"{"q":1}"#);
    }
}
