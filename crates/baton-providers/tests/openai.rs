//! The OpenAI-compatible provider against a local server speaking the Chat Completions wire
//! format over real HTTP: the request body and headers it sends, plain and tool-call replies,
//! streamed replies cut into many small chunks, structured output, and every failure it must
//! classify.

#![allow(clippy::unwrap_used)]

mod support;

use baton_core::{
    CompletionResponse, Message, Model, ModelError, Role, StreamDelta, TokenUsage, ToolCall,
    ToolDef,
};
use baton_providers::openai::{MaxTokensField, OpenAiConfig, OpenAiModel};
use serde_json::{Value, json};
use std::time::Duration;
use support::{MockServer, Reply, args_of, hello, recording_sink, request, texts};

const MODEL: &str = "gpt-4o-mini";

fn model(server: &MockServer, stream: bool) -> OpenAiModel {
    OpenAiModel::new(
        OpenAiConfig::new(MODEL)
            .with_base_url(format!("{}/v1", server.url))
            .with_api_key("sk-test")
            .with_stream(stream)
            .with_timeout(Duration::from_secs(5)),
    )
    .unwrap()
}

/// A `chat.completion` body, as OpenAI sends it, with `message` as the only choice.
fn completion(message: Value, finish: &str, usage: (u64, u64)) -> String {
    json!({
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": {
            "prompt_tokens": usage.0,
            "completion_tokens": usage.1,
            "total_tokens": usage.0 + usage.1,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0
            }
        },
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306"
    })
    .to_string()
}

/// One `chat.completion.chunk` event.
fn chunk(delta: Value, finish: Option<&str>) -> String {
    let body = json!({
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        "usage": null,
    });
    format!("data: {body}\n\n")
}

/// The usage chunk sent last with `stream_options.include_usage`.
fn usage_chunk(usage: (u64, u64)) -> String {
    let body = json!({
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [],
        "usage": {"prompt_tokens": usage.0, "completion_tokens": usage.1, "total_tokens": usage.0 + usage.1},
    });
    format!("data: {body}\n\n")
}

/// A whole stream: a role chunk, `events`, the finish chunk, usage and `[DONE]`.
fn stream(events: &[String], finish: &str, usage: (u64, u64)) -> String {
    let mut out = chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    );
    for event in events {
        out.push_str(event);
    }
    out.push_str(&chunk(json!({}), Some(finish)));
    out.push_str(&usage_chunk(usage));
    out.push_str("data: [DONE]\n\n");
    out
}

fn text_chunk(text: &str) -> String {
    chunk(json!({"content": text}), None)
}

/// The first piece of tool call `index`: id, type and name, empty arguments.
fn call_start(index: u32, id: &str, name: &str) -> String {
    chunk(
        json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                               "function": {"name": name, "arguments": ""}}]}),
        None,
    )
}

fn call_args(index: u32, fragment: &str) -> String {
    chunk(
        json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
        None,
    )
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
    let server = MockServer::start(vec![Reply::ok(completion(
        json!({"role": "assistant", "content": "Hello!", "refusal": null, "annotations": []}),
        "stop",
        (19, 3),
    ))])
    .await;
    let model = OpenAiModel::new(
        OpenAiConfig::new(MODEL)
            .with_base_url(format!("{}/v1/", server.url))
            .with_api_key("sk-test")
            .with_header("HTTP-Referer", "https://baton.example")
            .with_timeout(Duration::from_secs(5)),
    )
    .unwrap();

    let reply = model.complete(hello(MODEL)).await.unwrap();

    assert_eq!(
        reply,
        CompletionResponse {
            content: "Hello!".into(),
            tool_calls: vec![],
            usage: TokenUsage {
                input_tokens: 19,
                output_tokens: 3
            },
        }
    );
    let sent = server.only_request();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization").as_deref(),
        Some("Bearer sk-test")
    );
    assert_eq!(
        sent.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        sent.header("http-referer").as_deref(),
        Some("https://baton.example")
    );
    assert_eq!(
        sent.body,
        json!({
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Say hello."}
            ]
        })
    );
}

#[tokio::test]
async fn conversation_with_tool_calls_and_results_maps_to_the_wire() {
    let server = MockServer::start(vec![Reply::ok(completion(
        json!({"role": "assistant", "content": "Sunny in both."}),
        "stop",
        (120, 5),
    ))])
    .await;
    let model = OpenAiModel::new(
        OpenAiConfig::new(MODEL)
            .with_base_url(format!("{}/v1", server.url))
            .with_max_tokens_field(MaxTokensField::MaxCompletionTokens),
    )
    .unwrap();
    let mut req = request(
        "",
        vec![
            Message::text(Role::System, "Use tools."),
            Message::text(Role::User, "Weather in Paris and Oslo?"),
            Message {
                role: Role::Assistant,
                content: String::new(),
                tool_calls: vec![
                    call("call_1", "get_weather", json!({"location": "Paris"})),
                    call("call_2", "get_weather", json!({"location": "Oslo"})),
                ],
                tool_call_id: None,
            },
            Message::tool_result("call_1", "sunny, 24C"),
            Message::tool_result("call_2", "sunny, 18C"),
        ],
    );
    req.tools = vec![weather_tool()];
    req.max_tokens = Some(256);
    req.temperature = Some(0.5);

    let reply = model.complete(req).await.unwrap();
    assert_eq!(reply.content, "Sunny in both.");

    let sent = server.only_request();
    assert_eq!(
        sent.header("authorization"),
        None,
        "no key, no authorization"
    );
    assert_eq!(
        sent.body,
        json!({
            "model": MODEL, // the configured model: the request named none
            "messages": [
                {"role": "system", "content": "Use tools."},
                {"role": "user", "content": "Weather in Paris and Oslo?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"location\":\"Oslo\"}"}}
                ]},
                {"role": "tool", "content": "sunny, 24C", "tool_call_id": "call_1"},
                {"role": "tool", "content": "sunny, 18C", "tool_call_id": "call_2"}
            ],
            "tools": [{"type": "function", "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"location": {"type": "string"}},
                    "required": ["location"]
                }
            }}],
            "max_completion_tokens": 256,
            "temperature": 0.5
        })
    );
}

#[tokio::test]
async fn single_tool_call_reply() {
    let server = MockServer::start(vec![Reply::ok(completion(
        json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
            {"id": "call_abc", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}
        ]}),
        "tool_calls",
        (80, 17),
    ))])
    .await;
    let mut req = hello(MODEL);
    req.tools = vec![weather_tool()];
    let reply = model(&server, false).complete(req).await.unwrap();
    assert_eq!(reply.content, "");
    assert_eq!(
        reply.tool_calls,
        vec![call(
            "call_abc",
            "get_weather",
            json!({"location": "Paris"})
        )]
    );
    assert_eq!(
        reply.usage,
        TokenUsage {
            input_tokens: 80,
            output_tokens: 17
        }
    );
}

/// The parallel-tool-call reply both as one body and as a stream of small fragments.
fn parallel_calls() -> (String, String) {
    let whole = completion(
        json!({"role": "assistant", "content": "Checking both.", "tool_calls": [
            {"id": "call_p", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris\"}"}},
            {"id": "call_o", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"location\": \"Oslo\"}"}}
        ]}),
        "tool_calls",
        (95, 40),
    );
    let streamed = stream(
        &[
            text_chunk("Checking"),
            text_chunk(" both."),
            call_start(0, "call_p", "get_weather"),
            call_args(0, "{\"loc"),
            call_args(0, "ation\": "),
            call_args(0, "\"Paris\"}"),
            call_start(1, "call_o", "get_weather"),
            call_args(1, "{\"location\""),
            call_args(1, ": \"Oslo\"}"),
        ],
        "tool_calls",
        (95, 40),
    );
    (whole, streamed)
}

#[tokio::test]
async fn parallel_tool_calls_reply() {
    let (whole, _) = parallel_calls();
    let server = MockServer::start(vec![Reply::ok(whole)]).await;
    let reply = model(&server, false).complete(hello(MODEL)).await.unwrap();
    assert_eq!(reply.content, "Checking both.");
    assert_eq!(
        reply.tool_calls,
        vec![
            call("call_p", "get_weather", json!({"location": "Paris"})),
            call("call_o", "get_weather", json!({"location": "Oslo"})),
        ]
    );
}

#[tokio::test]
async fn streamed_text_arrives_in_pieces_and_matches_the_whole_reply() {
    let whole = completion(
        json!({"role": "assistant", "content": "Hello there, friend — ✓"}),
        "stop",
        (21, 9),
    );
    let streamed = stream(
        &[
            text_chunk("Hello"),
            text_chunk(" there,"),
            text_chunk(" friend"),
            text_chunk(" — ✓"),
        ],
        "stop",
        (21, 9),
    );
    // 7-byte pieces: events, lines and the multi-byte characters are all split.
    let server = MockServer::start(vec![
        Reply::ok(whole),
        Reply::sse_chunked(&streamed, 7),
        Reply::sse_chunked(&streamed, 7),
    ])
    .await;
    let plain = model(&server, false).complete(hello(MODEL)).await.unwrap();
    let (sink, seen) = recording_sink();
    let streamed_reply = model(&server, true)
        .complete_streaming(hello(MODEL), sink)
        .await
        .unwrap();
    // With streaming on, `complete` streams on the wire too and gives the same reply.
    let streamed_quiet = model(&server, true).complete(hello(MODEL)).await.unwrap();

    assert_eq!(streamed_reply, plain);
    assert_eq!(streamed_quiet, plain);
    assert_eq!(
        texts(&seen.lock().unwrap()),
        vec!["Hello", " there,", " friend", " — ✓"]
    );
    let requests = server.requests();
    assert!(requests[0].body.get("stream").is_none());
    for sent in &requests[1..] {
        assert_eq!(sent.body["stream"], true);
        assert_eq!(sent.body["stream_options"], json!({"include_usage": true}));
    }
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
    assert_eq!(
        reply.usage,
        TokenUsage {
            input_tokens: 95,
            output_tokens: 40
        }
    );
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.iter()
            .filter(|delta| !matches!(delta, StreamDelta::ToolArgs { .. }))
            .cloned()
            .collect::<Vec<_>>(),
        vec![
            StreamDelta::Text {
                text: "Checking".into()
            },
            StreamDelta::Text {
                text: " both.".into()
            },
            StreamDelta::ToolCall {
                id: "call_p".into(),
                name: "get_weather".into()
            },
            StreamDelta::ToolCall {
                id: "call_o".into(),
                name: "get_weather".into()
            },
        ]
    );
    // Each call's fragments come after its start, in order, and add up to its arguments.
    let start_o = seen
        .iter()
        .position(|delta| matches!(delta, StreamDelta::ToolCall { id, .. } if id == "call_o"))
        .unwrap();
    assert!(
        seen[..start_o]
            .iter()
            .all(|delta| !matches!(delta, StreamDelta::ToolArgs { id, .. } if id == "call_o"))
    );
    assert_eq!(args_of(&seen, "call_p"), "{\"location\": \"Paris\"}");
    assert_eq!(args_of(&seen, "call_o"), "{\"location\": \"Oslo\"}");
    let fragments = seen
        .iter()
        .filter(|delta| matches!(delta, StreamDelta::ToolArgs { .. }))
        .count();
    assert_eq!(fragments, 5);
}

#[tokio::test]
async fn stream_with_crlf_comments_and_no_trailing_blank_line() {
    // Some servers send CRLF, keep-alive comments, and close right after `data: [DONE]`.
    let body = stream(&[text_chunk("Hi")], "stop", (4, 1))
        .replace("\n", "\r\n")
        .replacen("data: ", ": keep-alive\r\n\r\ndata: ", 1);
    let body = body.strip_suffix("\r\n").unwrap().to_string();
    let server = MockServer::start(vec![Reply::sse_chunked(&body, 3)]).await;
    let reply = model(&server, true).complete(hello(MODEL)).await.unwrap();
    assert_eq!(reply.content, "Hi");
    assert_eq!(
        reply.usage,
        TokenUsage {
            input_tokens: 4,
            output_tokens: 1
        }
    );
}

#[tokio::test]
async fn structured_output_request_shape() {
    let schema = json!({
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": false
    });
    let reply = completion(
        json!({"role": "assistant", "content": "{\"answer\":\"42\"}"}),
        "stop",
        (30, 6),
    );
    let server = MockServer::start(vec![Reply::ok(reply.clone()), Reply::ok(reply)]).await;
    let mut req = hello(MODEL);
    req.output_schema = Some(schema.clone());

    let out = model(&server, false).complete(req.clone()).await.unwrap();
    assert_eq!(out.content, "{\"answer\":\"42\"}");
    let off = OpenAiModel::new(
        OpenAiConfig::new(MODEL)
            .with_base_url(format!("{}/v1", server.url))
            .with_json_schema_output(false),
    )
    .unwrap();
    off.complete(req).await.unwrap();

    let requests = server.requests();
    assert_eq!(
        requests[0].body["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}})
    );
    assert!(requests[1].body.get("response_format").is_none());
}

#[tokio::test]
async fn tool_arguments_that_are_not_json_are_kept_as_a_string() {
    let bad = "{\"location\": \"Par";
    let whole = completion(
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_x", "type": "function", "function": {"name": "get_weather", "arguments": bad}}
        ]}),
        "length",
        (50, 8),
    );
    let streamed = stream(
        &[call_start(0, "call_x", "get_weather"), call_args(0, bad)],
        "length",
        (50, 8),
    );
    let server = MockServer::start(vec![
        Reply::ok(whole),
        Reply::sse_chunked(&streamed, 11),
        Reply::ok(completion(
            json!({"role": "assistant", "content": "ok"}),
            "stop",
            (1, 1),
        )),
    ])
    .await;
    let plain = model(&server, false).complete(hello(MODEL)).await.unwrap();
    let (sink, _) = recording_sink();
    let streamed = model(&server, true)
        .complete_streaming(hello(MODEL), sink)
        .await
        .unwrap();
    assert_eq!(
        plain.tool_calls,
        vec![call("call_x", "get_weather", json!(bad))]
    );
    assert_eq!(streamed, plain);

    // Sent back in the conversation, the arguments are the model's text, unchanged.
    let mut messages = hello(MODEL).messages;
    messages.push(Message {
        role: Role::Assistant,
        content: String::new(),
        tool_calls: plain.tool_calls.clone(),
        tool_call_id: None,
    });
    messages.push(Message::tool_result(
        "call_x",
        "error: arguments are not valid JSON",
    ));
    model(&server, false)
        .complete(request(MODEL, messages))
        .await
        .unwrap();
    let sent = &server.requests()[2];
    assert_eq!(
        sent.body["messages"][2]["tool_calls"][0]["function"]["arguments"],
        json!(bad)
    );
}

#[tokio::test]
async fn missing_usage_is_estimated_the_same_way_streamed_or_not() {
    // A server that reports no usage (and ignores stream_options): budgets still count.
    let whole =
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"},
                                    "finish_reason": "stop"}]})
        .to_string();
    let streamed = format!(
        "{}{}data: [DONE]\n\n",
        text_chunk("Hello!"),
        chunk(json!({}), Some("stop"))
    );
    let server = MockServer::start(vec![Reply::ok(whole), Reply::sse_chunked(&streamed, 16)]).await;
    let plain = model(&server, false).complete(hello(MODEL)).await.unwrap();
    let streamed = model(&server, true).complete(hello(MODEL)).await.unwrap();
    assert!(plain.usage.input_tokens > 5, "{:?}", plain.usage);
    assert!(plain.usage.output_tokens > 0);
    assert_eq!(streamed, plain);
}

#[tokio::test]
async fn an_error_object_inside_the_stream_is_an_http_error() {
    let body = format!(
        "{}data: {}\n\n",
        text_chunk("Hel"),
        json!({"error": {"message": "The server had an error while processing your request.",
                         "type": "server_error", "param": null, "code": null}})
    );
    let server = MockServer::start(vec![Reply::sse_chunked(&body, 64)]).await;
    let (sink, seen) = recording_sink();
    let error = model(&server, true)
        .complete_streaming(hello(MODEL), sink)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        ModelError::Http {
            status: 500,
            message: "error in the stream: The server had an error while processing your request."
                .into()
        }
    );
    assert!(error.is_retryable());
    assert_eq!(texts(&seen.lock().unwrap()), vec!["Hel"]);
}

#[tokio::test]
async fn a_server_that_ignores_stream_and_answers_json_still_feeds_the_sink() {
    let (whole, _) = parallel_calls();
    let server = MockServer::start(vec![Reply::ok(whole.clone()), Reply::ok(whole)]).await;
    let plain = model(&server, false).complete(hello(MODEL)).await.unwrap();
    let (sink, seen) = recording_sink();
    let reply = model(&server, true)
        .complete_streaming(hello(MODEL), sink)
        .await
        .unwrap();
    assert_eq!(reply, plain);
    let seen = seen.lock().unwrap();
    assert_eq!(texts(&seen), vec!["Checking both."]);
    assert_eq!(args_of(&seen, "call_o"), "{\"location\":\"Oslo\"}");
}
