//! The Anthropic provider against a local server speaking the Messages wire format over real
//! HTTP: the request body and headers it sends (top-level system prompt, tool results merged
//! into one user message), plain and tool-call replies, streamed replies with every event
//! type cut into many small chunks, usage accounting and the in-stream `error` event.

#![allow(clippy::unwrap_used)]

mod support;

use baton_core::{
    CompletionResponse, Message, Model, ModelError, Role, StreamDelta, TokenUsage, ToolCall,
    ToolDef,
};
use baton_providers::anthropic::{AnthropicConfig, AnthropicModel};
use serde_json::{Value, json};
use std::time::Duration;
use support::{MockServer, Reply, args_of, hello, recording_sink, request, texts};

const MODEL: &str = "claude-sonnet-4-20250514";

fn model(server: &MockServer, stream: bool) -> AnthropicModel {
    AnthropicModel::new(
        AnthropicConfig::new(MODEL)
            .with_base_url(&server.url)
            .with_api_key("sk-ant-test")
            .with_stream(stream)
            .with_timeout(Duration::from_secs(5)),
    )
    .unwrap()
}

/// A `message` body as the API sends it.
fn message(content: Value, stop_reason: &str, usage: Value) -> String {
    json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage,
    })
    .to_string()
}

/// One SSE event, with its `event:` line as the API sends it.
fn event(data: Value) -> String {
    let kind = data["type"].as_str().unwrap().to_string();
    format!("event: {kind}\ndata: {data}\n\n")
}

fn message_start(input_tokens: u64) -> String {
    event(json!({"type": "message_start", "message": {
        "id": "msg_01", "type": "message", "role": "assistant", "content": [], "model": MODEL,
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    }}))
}

fn text_block(index: u32, pieces: &[&str]) -> String {
    let mut out = event(json!({"type": "content_block_start", "index": index,
                               "content_block": {"type": "text", "text": ""}}));
    for piece in pieces {
        out.push_str(&event(
            json!({"type": "content_block_delta", "index": index,
                                   "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    out.push_str(&event(
        json!({"type": "content_block_stop", "index": index}),
    ));
    out
}

fn tool_block(index: u32, id: &str, name: &str, pieces: &[&str]) -> String {
    let mut out = event(json!({"type": "content_block_start", "index": index,
                               "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}));
    for piece in pieces {
        out.push_str(&event(
            json!({"type": "content_block_delta", "index": index,
                                   "delta": {"type": "input_json_delta", "partial_json": piece}}),
        ));
    }
    out.push_str(&event(
        json!({"type": "content_block_stop", "index": index}),
    ));
    out
}

fn message_end(stop_reason: &str, output_tokens: u64) -> String {
    let mut out = event(json!({"type": "message_delta",
                               "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                               "usage": {"output_tokens": output_tokens}}));
    out.push_str(&event(json!({"type": "message_stop"})));
    out
}

fn ping() -> String {
    event(json!({"type": "ping"}))
}

fn weather_tool() -> ToolDef {
    ToolDef {
        name: "get_weather".into(),
        description: "Current weather for a city".into(),
        parameters: json!({
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"]
        }),
    }
}

fn call(id: &str, name: &str, args: Value) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        args,
    }
}

#[tokio::test]
async fn plain_text_reply_and_request_shape() {
    let server = MockServer::start(vec![Reply::ok(message(
        json!([{"type": "text", "text": "Hello!"}]),
        "end_turn",
        json!({"input_tokens": 14, "output_tokens": 4}),
    ))])
    .await;
    let reply = model(&server, false).complete(hello(MODEL)).await.unwrap();
    assert_eq!(
        reply,
        CompletionResponse {
            content: "Hello!".into(),
            tool_calls: vec![],
            usage: TokenUsage {
                input_tokens: 14,
                output_tokens: 4
            },
        }
    );
    let sent = server.only_request();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key").as_deref(), Some("sk-ant-test"));
    assert_eq!(
        sent.header("anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    assert_eq!(
        sent.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(
        sent.body,
        json!({
            "model": MODEL,
            "max_tokens": 4096,
            "system": "You are terse.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}]
        })
    );
}

#[tokio::test]
async fn conversation_with_tool_calls_and_results_maps_to_the_wire() {
    let server = MockServer::start(vec![Reply::ok(message(
        json!([{"type": "text", "text": "Sunny in both."}]),
        "end_turn",
        json!({"input_tokens": 300, "output_tokens": 6}),
    ))])
    .await;
    let model = AnthropicModel::new(
        AnthropicConfig::new("claude-3-5-haiku-latest")
            .with_base_url(format!("{}/", server.url))
            .with_api_key("sk-ant-test")
            .with_max_tokens(1000)
            .with_header("anthropic-beta", "token-efficient-tools-2025-02-19"),
    )
    .unwrap();
    let mut req = request(
        "",
        vec![
            Message::text(Role::System, "Use tools."),
            Message::text(Role::System, "Answer briefly."),
            Message::text(Role::User, "Weather in Paris and Oslo?"),
            Message {
                role: Role::Assistant,
                content: "Let me check.".into(),
                tool_calls: vec![
                    call("toolu_1", "get_weather", json!({"location": "Paris"})),
                    call("toolu_2", "get_weather", json!({"location": "Oslo"})),
                ],
                tool_call_id: None,
            },
            Message::tool_result("toolu_1", "sunny, 24C"),
            Message::tool_result("toolu_2", "sunny, 18C"),
            Message::text(Role::User, "Also: be brief."),
        ],
    );
    req.tools = vec![weather_tool()];
    req.temperature = Some(0.25);

    model.complete(req).await.unwrap();

    let sent = server.only_request();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(
        sent.header("anthropic-beta").as_deref(),
        Some("token-efficient-tools-2025-02-19")
    );
    assert_eq!(
        sent.body,
        json!({
            "model": "claude-3-5-haiku-latest",
            "max_tokens": 1000,
            "system": "Use tools.\n\nAnswer briefly.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Oslo?"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"location": "Oslo"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny, 24C"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "sunny, 18C"},
                    {"type": "text", "text": "Also: be brief."}
                ]}
            ],
            "tools": [{
                "name": "get_weather",
                "description": "Current weather for a city",
                "input_schema": {
                    "type": "object",
                    "properties": {"location": {"type": "string"}},
                    "required": ["location"]
                }
            }],
            "temperature": 0.25
        })
    );
}

#[tokio::test]
async fn single_tool_call_reply() {
    let server = MockServer::start(vec![Reply::ok(message(
        json!([{"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9",
                "name": "get_weather", "input": {"location": "San Francisco, CA"}}]),
        "tool_use",
        json!({"input_tokens": 472, "output_tokens": 54}),
    ))])
    .await;
    let mut req = hello(MODEL);
    req.tools = vec![weather_tool()];
    let reply = model(&server, false).complete(req).await.unwrap();
    assert_eq!(reply.content, "");
    assert_eq!(
        reply.tool_calls,
        vec![call(
            "toolu_01A09q90qw90lq917835lq9",
            "get_weather",
            json!({"location": "San Francisco, CA"})
        )]
    );
}

/// A reply with text, a thinking block (ignored) and two tool calls, whole and streamed.
fn parallel_calls() -> (String, String) {
    let whole = message(
        json!([
            {"type": "thinking", "thinking": "Two cities.", "signature": "sig"},
            {"type": "text", "text": "I'll check both."},
            {"type": "tool_use", "id": "toolu_p", "name": "get_weather", "input": {"location": "Paris"}},
            {"type": "tool_use", "id": "toolu_o", "name": "get_weather", "input": {"location": "Oslo"}}
        ]),
        "tool_use",
        json!({"input_tokens": 410, "output_tokens": 92,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}),
    );
    let mut streamed = message_start(410);
    streamed.push_str(&event(json!({"type": "content_block_start", "index": 0,
                                    "content_block": {"type": "thinking", "thinking": ""}})));
    streamed.push_str(&event(json!({"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "thinking_delta", "thinking": "Two cities."}})));
    streamed.push_str(&event(json!({"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "signature_delta", "signature": "sig"}})));
    streamed.push_str(&event(json!({"type": "content_block_stop", "index": 0})));
    streamed.push_str(&text_block(1, &["I'll", " check", " both."]));
    streamed.push_str(&ping());
    streamed.push_str(&tool_block(
        2,
        "toolu_p",
        "get_weather",
        &["", "{\"locat", "ion\": \"Pa", "ris\"}"],
    ));
    streamed.push_str(&tool_block(
        3,
        "toolu_o",
        "get_weather",
        &["{\"location\":", " \"Oslo\"}"],
    ));
    streamed.push_str(&message_end("tool_use", 92));
    (whole, streamed)
}

#[tokio::test]
async fn parallel_tool_calls_reply() {
    let (whole, _) = parallel_calls();
    let server = MockServer::start(vec![Reply::ok(whole)]).await;
    let reply = model(&server, false).complete(hello(MODEL)).await.unwrap();
    assert_eq!(reply.content, "I'll check both.");
    assert_eq!(
        reply.tool_calls,
        vec![
            call("toolu_p", "get_weather", json!({"location": "Paris"})),
            call("toolu_o", "get_weather", json!({"location": "Oslo"})),
        ]
    );
    assert_eq!(
        reply.usage,
        TokenUsage {
            input_tokens: 410,
            output_tokens: 92
        }
    );
}

#[tokio::test]
async fn streamed_text_arrives_in_pieces_and_matches_the_whole_reply() {
    let whole = message(
        json!([{"type": "text", "text": "Hello there — ✓"}]),
        "end_turn",
        json!({"input_tokens": 25, "output_tokens": 7}),
    );
    let streamed = format!(
        "{}{}{}{}",
        message_start(25),
        ping(),
        text_block(0, &["Hello", " there", " — ✓"]),
        message_end("end_turn", 7)
    );
    let server = MockServer::start(vec![
        Reply::ok(whole),
        Reply::sse_chunked(&streamed, 6),
        Reply::sse_chunked(&streamed.replace('\n', "\r\n"), 13),
    ])
    .await;
    let plain = model(&server, false).complete(hello(MODEL)).await.unwrap();
    let (sink, seen) = recording_sink();
    let streamed_reply = model(&server, true)
        .complete_streaming(hello(MODEL), sink)
        .await
        .unwrap();
    let crlf_reply = model(&server, true).complete(hello(MODEL)).await.unwrap();

    assert_eq!(streamed_reply, plain);
    assert_eq!(crlf_reply, plain);
    assert_eq!(
        texts(&seen.lock().unwrap()),
        vec!["Hello", " there", " — ✓"]
    );
    let requests = server.requests();
    assert!(requests[0].body.get("stream").is_none());
    assert_eq!(requests[1].body["stream"], true);
}

#[tokio::test]
async fn streamed_parallel_tool_calls_in_fragments_match_the_whole_reply() {
    let (whole, streamed) = parallel_calls();
    let server = MockServer::start(vec![Reply::ok(whole), Reply::sse_chunked(&streamed, 5)]).await;
    let plain = model(&server, false).complete(hello(MODEL)).await.unwrap();
    let (sink, seen) = recording_sink();
    let reply = model(&server, true)
        .complete_streaming(hello(MODEL), sink)
        .await
        .unwrap();

    assert_eq!(reply, plain);
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.clone(),
        vec![
            StreamDelta::Text {
                text: "I'll".into()
            },
            StreamDelta::Text {
                text: " check".into()
            },
            StreamDelta::Text {
                text: " both.".into()
            },
            StreamDelta::ToolCall {
                id: "toolu_p".into(),
                name: "get_weather".into()
            },
            StreamDelta::ToolArgs {
                id: "toolu_p".into(),
                fragment: "{\"locat".into()
            },
            StreamDelta::ToolArgs {
                id: "toolu_p".into(),
                fragment: "ion\": \"Pa".into()
            },
            StreamDelta::ToolArgs {
                id: "toolu_p".into(),
                fragment: "ris\"}".into()
            },
            StreamDelta::ToolCall {
                id: "toolu_o".into(),
                name: "get_weather".into()
            },
            StreamDelta::ToolArgs {
                id: "toolu_o".into(),
                fragment: "{\"location\":".into()
            },
            StreamDelta::ToolArgs {
                id: "toolu_o".into(),
                fragment: " \"Oslo\"}".into()
            },
        ]
    );
    assert_eq!(args_of(&seen, "toolu_o"), "{\"location\": \"Oslo\"}");
}

#[tokio::test]
async fn a_tool_call_without_input_has_empty_arguments() {
    let whole = message(
        json!([{"type": "tool_use", "id": "toolu_n", "name": "now", "input": {}}]),
        "tool_use",
        json!({"input_tokens": 10, "output_tokens": 3}),
    );
    let streamed = format!(
        "{}{}{}",
        message_start(10),
        tool_block(0, "toolu_n", "now", &[""]),
        message_end("tool_use", 3)
    );
    let server = MockServer::start(vec![Reply::ok(whole), Reply::sse_chunked(&streamed, 32)]).await;
    let plain = model(&server, false).complete(hello(MODEL)).await.unwrap();
    let streamed = model(&server, true).complete(hello(MODEL)).await.unwrap();
    assert_eq!(plain.tool_calls, vec![call("toolu_n", "now", json!({}))]);
    assert_eq!(streamed, plain);
}

#[tokio::test]
async fn cached_prompt_tokens_count_as_input_streamed_or_not() {
    let usage = json!({"input_tokens": 20, "output_tokens": 5,
                       "cache_creation_input_tokens": 1000, "cache_read_input_tokens": 3000});
    let whole = message(
        json!([{"type": "text", "text": "ok"}]),
        "end_turn",
        usage.clone(),
    );
    let streamed = format!(
        "{}{}{}",
        event(json!({"type": "message_start", "message": {
            "id": "msg_01", "type": "message", "role": "assistant", "content": [], "model": MODEL,
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 20, "output_tokens": 1,
                      "cache_creation_input_tokens": 1000, "cache_read_input_tokens": 3000}
        }})),
        text_block(0, &["ok"]),
        message_end("end_turn", 5)
    );
    let server = MockServer::start(vec![Reply::ok(whole), Reply::sse_chunked(&streamed, 17)]).await;
    let plain = model(&server, false).complete(hello(MODEL)).await.unwrap();
    let streamed = model(&server, true).complete(hello(MODEL)).await.unwrap();
    assert_eq!(
        plain.usage,
        TokenUsage {
            input_tokens: 4020,
            output_tokens: 5
        }
    );
    assert_eq!(streamed.usage, plain.usage);
}

#[tokio::test]
async fn an_error_event_in_the_stream_is_an_http_error() {
    let streamed = format!(
        "{}{}{}",
        message_start(12),
        text_block(0, &["Hel"]),
        event(
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        )
    );
    let server = MockServer::start(vec![Reply::sse_chunked(&streamed, 10)]).await;
    let (sink, seen) = recording_sink();
    let error = model(&server, true)
        .complete_streaming(hello(MODEL), sink)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        ModelError::Http {
            status: 529,
            message: "Overloaded".into()
        }
    );
    assert!(error.is_retryable());
    assert_eq!(texts(&seen.lock().unwrap()), vec!["Hel"]);
}

#[tokio::test]
async fn tool_input_that_is_not_json_is_kept_as_a_string() {
    let streamed = format!(
        "{}{}{}",
        message_start(10),
        tool_block(0, "toolu_x", "get_weather", &["{\"location\": ", "\"Par"]),
        message_end("max_tokens", 3)
    );
    let server = MockServer::start(vec![
        Reply::sse_chunked(&streamed, 8),
        Reply::ok(message(
            json!([{"type": "text", "text": "ok"}]),
            "end_turn",
            json!({"input_tokens": 1, "output_tokens": 1}),
        )),
    ])
    .await;
    let reply = model(&server, true).complete(hello(MODEL)).await.unwrap();
    assert_eq!(
        reply.tool_calls,
        vec![call(
            "toolu_x",
            "get_weather",
            json!("{\"location\": \"Par")
        )]
    );

    // Sent back, the call's input is an (empty) object, as the API requires.
    let mut messages = hello(MODEL).messages;
    messages.push(Message {
        role: Role::Assistant,
        content: String::new(),
        tool_calls: reply.tool_calls.clone(),
        tool_call_id: None,
    });
    messages.push(Message::tool_result(
        "toolu_x",
        "error: arguments are not valid JSON",
    ));
    model(&server, false)
        .complete(request(MODEL, messages))
        .await
        .unwrap();
    let sent = &server.requests()[1];
    assert_eq!(
        sent.body["messages"][1],
        json!({"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_x", "name": "get_weather", "input": {}}
        ]})
    );
}

#[tokio::test]
async fn structured_output_adds_no_field() {
    // The schema reaches Claude through the system prompt, which baton writes.
    let server = MockServer::start(vec![Reply::ok(message(
        json!([{"type": "text", "text": "{\"answer\":\"42\"}"}]),
        "end_turn",
        json!({"input_tokens": 30, "output_tokens": 6}),
    ))])
    .await;
    let mut req = hello(MODEL);
    req.output_schema = Some(json!({"type": "object"}));
    req.max_tokens = Some(64);
    model(&server, false).complete(req).await.unwrap();
    let sent = server.only_request();
    let keys: Vec<&String> = sent.body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["model", "max_tokens", "system", "messages"]);
    assert_eq!(sent.body["max_tokens"], 64);
}

#[tokio::test]
async fn a_server_that_ignores_stream_and_answers_json_still_feeds_the_sink() {
    let (whole, _) = parallel_calls();
    let server = MockServer::start(vec![Reply::ok(whole)]).await;
    let (sink, seen) = recording_sink();
    let reply = model(&server, true)
        .complete_streaming(hello(MODEL), sink)
        .await
        .unwrap();
    assert_eq!(reply.tool_calls.len(), 2);
    let seen = seen.lock().unwrap();
    assert_eq!(texts(&seen), vec!["I'll check both."]);
    assert_eq!(args_of(&seen, "toolu_p"), "{\"location\":\"Paris\"}");
}
