//! Tests of the scripted model: replies, routing, faults, exhaustion, rules, latency, usage,
//! and the errors a broken script produces.

use super::*;
use baton_core::DynModel;
use serde_json::json;
use std::sync::Arc;
use tokio::time::Instant;

fn model(yaml: &str) -> ScriptedModel {
    match ScriptedModel::from_yaml_str(yaml, "test.yaml") {
        Ok(model) => model,
        Err(error) => panic!("script should load: {error}"),
    }
}

fn load_error(yaml: &str) -> ScriptError {
    match ScriptedModel::from_yaml_str(yaml, "bad.yaml") {
        Ok(_) => panic!("script should not load:\n{yaml}"),
        Err(error) => error,
    }
}

/// The line, column and message of an `Invalid` error.
fn located(error: &ScriptError) -> (Option<u64>, Option<u64>, &str) {
    match error {
        ScriptError::Invalid {
            origin,
            line,
            column,
            message,
        } => {
            assert_eq!(origin, "bad.yaml");
            (*line, *column, message.as_str())
        }
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

fn request(agent: &str, step: &str, user: &str) -> CompletionRequest {
    CompletionRequest {
        model: "scripted".to_string(),
        agent: agent.to_string(),
        step: step.to_string(),
        messages: vec![
            Message::text(Role::System, "You are helpful."),
            Message::text(Role::User, user),
        ],
        tools: Vec::new(),
        output_schema: None,
        max_tokens: None,
        temperature: None,
        position: None,
    }
}

#[tokio::test]
async fn a_call_position_picks_the_reply_so_resumed_runs_continue_the_script() {
    let model = ScriptedModel::from_yaml_str(
        "agents:\n  a: [{text: one}, {text: two}, {text: three}]\n",
        "pos",
    )
    .unwrap();
    let mut req = request("a", "s", "go");
    req.position = Some(baton_core::CallPosition {
        by_agent: 2,
        by_step: 0,
    });
    assert_eq!(model.complete(req.clone()).await.unwrap().content, "three");
    req.position = Some(baton_core::CallPosition {
        by_agent: 1,
        by_step: 0,
    });
    assert_eq!(model.complete(req).await.unwrap().content, "two");
}

fn config_message(result: Result<CompletionResponse, ModelError>) -> String {
    match result {
        Err(ModelError::Config { message }) => message,
        other => panic!("expected a Config error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Replies and routing

#[tokio::test]
async fn sequence_is_consumed_one_reply_per_turn() {
    let m = model(
        r#"
agents:
  researcher:
    - tool_calls:
        - {name: web_search, args: {query: "rust"}}
        - {id: mine, name: fetch}
    - text: "Found three sources."
      usage: {input_tokens: 420, output_tokens: 60}
    - json: {score: 82, reason: "fit", nested: [1, 2]}
    - text: "Calling once more."
      tool_calls:
        - {name: web_search, args: {query: "tokio"}}
"#,
    );
    let first = m.complete(request("researcher", "s", "go")).await.unwrap();
    assert_eq!(first.content, "");
    assert_eq!(
        first.tool_calls,
        vec![
            ToolCall {
                id: "call_1".into(),
                name: "web_search".into(),
                args: json!({"query": "rust"}),
            },
            ToolCall {
                id: "mine".into(),
                name: "fetch".into(),
                args: json!({}),
            },
        ]
    );

    let second = m.complete(request("researcher", "s", "go")).await.unwrap();
    assert_eq!(second.content, "Found three sources.");
    assert!(second.tool_calls.is_empty());
    assert_eq!(
        second.usage,
        TokenUsage {
            input_tokens: 420,
            output_tokens: 60
        }
    );

    let third = m.complete(request("researcher", "s", "go")).await.unwrap();
    assert_eq!(
        third.content, r#"{"score":82,"reason":"fit","nested":[1,2]}"#,
        "json replies keep key order and serialize compactly"
    );
    let parsed: serde_json::Value = serde_json::from_str(&third.content).unwrap();
    assert_eq!(
        parsed,
        json!({"score": 82, "reason": "fit", "nested": [1, 2]})
    );

    let fourth = m.complete(request("researcher", "s", "go")).await.unwrap();
    assert_eq!(fourth.content, "Calling once more.");
    // Ids count the key's tool calls in script order, so turns never reuse an id.
    assert_eq!(fourth.tool_calls[0].id, "call_3");

    assert_eq!(m.agent_calls("researcher"), 4);
    assert_eq!(m.total_calls(), 4);
}

#[tokio::test]
async fn step_entry_takes_priority_over_agent_entry() {
    let m = model(
        r#"
agents:
  writer: [{text: "from agent 1"}, {text: "from agent 2"}]
steps:
  score_lead: [{text: "from step"}]
"#,
    );
    let by_step = m
        .complete(request("writer", "score_lead", "x"))
        .await
        .unwrap();
    assert_eq!(by_step.content, "from step");
    // Another step of the same agent falls back to the agent's sequence, from its start.
    let by_agent = m.complete(request("writer", "draft", "x")).await.unwrap();
    assert_eq!(by_agent.content, "from agent 1");
    // A step entry serves any agent.
    let other_agent = m.complete(request("someone_else", "score_lead", "x")).await;
    assert!(config_message(other_agent).contains("script exhausted for step score_lead"));

    assert_eq!(m.step_calls("score_lead"), 2);
    assert_eq!(m.agent_calls("writer"), 1);
    let stats = m.stats();
    assert_eq!(
        stats[&ScriptKey::Step("score_lead".into())],
        KeyStats {
            calls: 2,
            from_sequence: 1,
            from_rules: 0,
            exhausted: 1
        }
    );
    assert_eq!(stats[&ScriptKey::Agent("writer".into())].from_sequence, 1);
}

#[tokio::test]
async fn stats_list_every_key_and_reset_rewinds() {
    let m = model("agents: {a: [{text: one}, {text: two}], b: [{text: b}]}\nsteps: {s: []}\n");
    assert_eq!(m.stats().len(), 3);
    assert!(
        m.stats()
            .values()
            .all(|stats| *stats == KeyStats::default())
    );
    assert_eq!(
        m.complete(request("a", "x", "")).await.unwrap().content,
        "one"
    );
    let _ = m.complete(request("nobody", "nowhere", "")).await;
    assert_eq!(m.unmatched_calls(), 1);
    assert_eq!(m.total_calls(), 2);
    m.reset();
    assert_eq!(m.total_calls(), 0);
    assert_eq!(
        m.complete(request("a", "x", "")).await.unwrap().content,
        "one"
    );
}

#[tokio::test]
async fn missing_entry_names_agent_step_and_known_keys() {
    let m = model("agents: {researcher: [{text: hi}], writer: [{text: hi}]}\nsteps: {score: []}\n");
    let message = config_message(m.complete(request("critic", "review", "x")).await);
    assert!(message.contains("step review"), "{message}");
    assert!(message.contains("agent critic"), "{message}");
    assert!(message.contains("agents: researcher, writer"), "{message}");
    assert!(message.contains("steps: score"), "{message}");
    assert!(message.contains("test.yaml"), "{message}");
    assert_eq!(m.unmatched_calls(), 1);

    let empty = model("");
    let message = config_message(empty.complete(request("a", "s", "x")).await);
    assert!(
        message.contains("steps: (none); agents: (none)"),
        "{message}"
    );
}

#[tokio::test]
async fn json_scripts_are_accepted() {
    let m = model(r#"{"agents": {"a": [{"json": {"ok": true}}, {"text": "done"}]}}"#);
    assert_eq!(
        m.complete(request("a", "s", "")).await.unwrap().content,
        r#"{"ok":true}"#
    );
    assert_eq!(
        m.complete(request("a", "s", "")).await.unwrap().content,
        "done"
    );
}

#[tokio::test]
async fn usable_as_dyn_model_and_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let m = model("agents: {a: [{text: hi}]}");
    let future = m.complete(request("a", "s", ""));
    assert_send(&future);
    assert_eq!(future.await.unwrap().content, "hi");

    let shared: Arc<dyn DynModel> = Arc::new(model("agents: {a: [{text: hi}]}"));
    let handle = tokio::spawn({
        let shared = shared.clone();
        async move { shared.complete(request("a", "s", "")).await }
    });
    assert_eq!(handle.await.unwrap().unwrap().content, "hi");
}

// ---------------------------------------------------------------------------------------------
// Faults

#[tokio::test(start_paused = true)]
async fn each_fault_kind_maps_to_its_error() {
    let m = model(
        r#"
latency: 5ms
agents:
  a:
    - error: {status: 429, message: "rate limited"}
    - error: {status: 503}
    - timeout: true
      latency: 2s
    - timeout: true
    - malformed: "{not json"
    - connection_reset: true
"#,
    );
    let call = || m.complete(request("a", "s", "question"));

    let http = call().await.unwrap_err();
    assert_eq!(
        http,
        ModelError::Http {
            status: 429,
            message: "rate limited".into()
        }
    );
    assert!(http.is_retryable());

    assert_eq!(
        call().await.unwrap_err(),
        ModelError::Http {
            status: 503,
            message: "scripted fault".into()
        }
    );

    let start = Instant::now();
    assert_eq!(
        call().await.unwrap_err(),
        ModelError::Timeout { after_ms: 2000 }
    );
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "a timeout takes its latency"
    );
    assert_eq!(
        call().await.unwrap_err(),
        ModelError::Timeout { after_ms: 5 }
    );

    let malformed = call().await.unwrap();
    assert_eq!(malformed.content, "{not json");
    assert!(malformed.tool_calls.is_empty());
    assert!(serde_json::from_str::<serde_json::Value>(&malformed.content).is_err());

    let reset = call().await.unwrap_err();
    assert!(matches!(reset, ModelError::Connection { .. }), "{reset:?}");
    assert!(reset.is_retryable());
}

// ---------------------------------------------------------------------------------------------
// Exhaustion

#[tokio::test]
async fn exhaustion_defaults_to_an_error_that_repeats() {
    let m = model("agents: {researcher: [{text: one}, {text: two}]}");
    for expected in ["one", "two"] {
        let reply = m.complete(request("researcher", "s", "")).await.unwrap();
        assert_eq!(reply.content, expected);
    }
    for _ in 0..2 {
        let message = config_message(m.complete(request("researcher", "s", "")).await);
        assert!(
            message.starts_with("script exhausted for agent researcher after 2 replies"),
            "{message}"
        );
    }
    assert_eq!(
        m.stats()[&ScriptKey::Agent("researcher".into())],
        KeyStats {
            calls: 4,
            from_sequence: 2,
            from_rules: 0,
            exhausted: 2
        }
    );
}

#[tokio::test]
async fn exhaustion_with_explicit_then_error_and_empty_sequences() {
    let m = model(
        r#"
agents:
  a: {replies: [{text: only}], then: error}
  empty: []
  empty_cycle: {replies: [], then: cycle}
"#,
    );
    assert_eq!(
        m.complete(request("a", "s", "")).await.unwrap().content,
        "only"
    );
    let message = config_message(m.complete(request("a", "s", "")).await);
    assert!(message.contains("after 1 reply "), "{message}");
    for agent in ["empty", "empty_cycle"] {
        let message = config_message(m.complete(request(agent, "s", "")).await);
        assert!(
            message.contains(&format!(
                "script exhausted for agent {agent} after 0 replies"
            )),
            "{message}"
        );
    }
}

#[tokio::test]
async fn exhaustion_with_repeat_last() {
    let m = model("agents: {a: {replies: [{text: one}, {text: two}], then: repeat_last}}");
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(m.complete(request("a", "s", "")).await.unwrap().content);
    }
    assert_eq!(seen, ["one", "two", "two", "two", "two"]);
    assert_eq!(m.stats()[&ScriptKey::Agent("a".into())].from_sequence, 5);
}

#[tokio::test]
async fn exhaustion_with_cycle() {
    let m = model("agents: {a: {replies: [{text: one}, {text: two}, {text: three}], then: cycle}}");
    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.push(m.complete(request("a", "s", "")).await.unwrap().content);
    }
    assert_eq!(seen, ["one", "two", "three", "one", "two", "three", "one"]);
}

// ---------------------------------------------------------------------------------------------
// Rules

const RULES: &str = r#"
agents:
  scorer:
    replies:
      - text: "fallback 1"
      - text: "fallback 2"
    rules:
      - when: {contains: "Acme"}
        reply: {json: {score: 90}}
      - when: {contains: "Ac"}
        reply: {json: {score: 10}}
      - when: {contains: "Globex"}
        replies:
          - tool_calls: [{name: lookup, args: {company: Globex}}]
          - json: {score: 55}
"#;

#[tokio::test]
async fn rules_match_the_last_user_message_and_consume_nothing() {
    let m = model(RULES);
    let acme = m
        .complete(request("scorer", "s", "Score lead: Acme Corp"))
        .await
        .unwrap();
    assert_eq!(
        acme.content, r#"{"score":90}"#,
        "the first matching rule wins"
    );
    let again = m
        .complete(request("scorer", "s", "Acme again"))
        .await
        .unwrap();
    assert_eq!(
        again.content, r#"{"score":90}"#,
        "a fixed reply never runs out"
    );
    let ac = m.complete(request("scorer", "s", "Acer")).await.unwrap();
    assert_eq!(ac.content, r#"{"score":10}"#);

    // No rule matches: the sequence answers from its start, untouched by the rule hits.
    let other = m.complete(request("scorer", "s", "Initech")).await.unwrap();
    assert_eq!(other.content, "fallback 1");

    // Only the last user message counts: not the system prompt, not earlier user turns,
    // not tool results.
    let mut req = request("scorer", "s", "Acme");
    req.messages.push(Message::text(Role::User, "Initech"));
    req.messages.push(Message::tool_result("call_1", "Acme"));
    req.messages[0].content = "Acme".into();
    assert_eq!(m.complete(req).await.unwrap().content, "fallback 2");

    // No user message at all: rules cannot match.
    let mut req = request("scorer", "s", "");
    req.messages.retain(|message| message.role != Role::User);
    assert!(config_message(m.complete(req).await).contains("after 2 replies"));

    assert_eq!(
        m.stats()[&ScriptKey::Agent("scorer".into())],
        KeyStats {
            calls: 6,
            from_sequence: 2,
            from_rules: 3,
            exhausted: 1
        }
    );
}

#[tokio::test]
async fn rule_sequences_drive_multi_turn_loops_per_item() {
    let m = model(RULES);
    // Turn 1 of the Globex item: a tool call.
    let turn1 = m
        .complete(request("scorer", "s", "Score lead: Globex"))
        .await
        .unwrap();
    assert_eq!(turn1.tool_calls.len(), 1);
    assert_eq!(turn1.tool_calls[0].name, "lookup");
    assert_eq!(turn1.tool_calls[0].id, "call_1");

    // Turn 2: the conversation grew with the call and its result; the last user message is
    // unchanged, so the same rule continues its own sequence.
    let mut req = request("scorer", "s", "Score lead: Globex");
    req.messages.push(Message {
        role: Role::Assistant,
        content: String::new(),
        tool_calls: turn1.tool_calls.clone(),
        tool_call_id: None,
    });
    req.messages
        .push(Message::tool_result("call_1", r#"{"employees": 12}"#));
    let turn2 = m.complete(req.clone()).await.unwrap();
    assert_eq!(turn2.content, r#"{"score":55}"#);

    // The rule's sequence is used up and `then` defaults to error.
    let message = config_message(m.complete(req).await);
    assert!(
        message.contains(
            "script exhausted for agent scorer rule 3 (when contains \"Globex\") after 2 replies"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn rules_make_concurrent_calls_order_independent() {
    let m = Arc::new(model(
        r#"
steps:
  score:
    rules:
      - {when: {contains: "item-0"}, reply: {text: "zero"}}
      - {when: {contains: "item-1"}, reply: {text: "one"}}
      - {when: {contains: "item-2"}, reply: {text: "two"}}
"#,
    ));
    // Issue the calls in reverse order, concurrently.
    let handles: Vec<_> = (0..3)
        .rev()
        .map(|i| {
            let m = m.clone();
            tokio::spawn(async move {
                let reply = m
                    .complete(request("any", "score", &format!("Process item-{i}")))
                    .await
                    .unwrap();
                (i, reply.content)
            })
        })
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results.sort();
    assert_eq!(
        results,
        [
            (0, "zero".to_string()),
            (1, "one".to_string()),
            (2, "two".to_string())
        ]
    );
    assert_eq!(m.stats()[&ScriptKey::Step("score".into())].from_rules, 3);
}

#[tokio::test]
async fn rule_sequences_follow_the_entry_then_mode() {
    let m = model(
        r#"
agents:
  a:
    then: cycle
    rules:
      - when: {contains: "x"}
        replies: [{text: "x1"}, {text: "x2"}]
"#,
    );
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(m.complete(request("a", "s", "x")).await.unwrap().content);
    }
    assert_eq!(seen, ["x1", "x2", "x1", "x2", "x1"]);
}

// ---------------------------------------------------------------------------------------------
// Latency

#[tokio::test(start_paused = true)]
async fn latency_defaults_and_overrides_are_applied() {
    let m = model(
        r#"
latency: 250ms
agents:
  a:
    - text: default
    - text: own
      latency: 2s
    - text: minute
      latency: 1m
    - text: integer
      latency: 40
    - error: {status: 500}
      latency: 3s
"#,
    );
    let expected = [
        Duration::from_millis(250),
        Duration::from_secs(2),
        Duration::from_secs(60),
        Duration::from_millis(40),
        Duration::from_secs(3),
    ];
    for want in expected {
        let start = Instant::now();
        let _ = m.complete(request("a", "s", "")).await;
        assert_eq!(start.elapsed(), want);
    }
}

#[tokio::test(start_paused = true)]
async fn no_latency_means_no_wait_and_concurrent_calls_overlap() {
    let m = model(
        "agents: {a: [{text: now}]}\nsteps: {slow: {replies: [{text: slow}], then: repeat_last}}\nlatency: 0",
    );
    let start = Instant::now();
    m.complete(request("a", "s", "")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);

    let m = model("latency: 1s\nsteps: {slow: {replies: [{text: slow}], then: repeat_last}}");
    let start = Instant::now();
    let (one, two) = tokio::join!(
        m.complete(request("a", "slow", "")),
        m.complete(request("b", "slow", ""))
    );
    assert_eq!(one.unwrap().content, "slow");
    assert_eq!(two.unwrap().content, "slow");
    assert_eq!(start.elapsed(), Duration::from_secs(1), "latencies overlap");
}

#[tokio::test(start_paused = true)]
async fn missing_entries_and_exhaustion_fail_without_latency() {
    let m = model("latency: 5s\nagents: {a: []}");
    let start = Instant::now();
    assert!(m.complete(request("a", "s", "")).await.is_err());
    assert!(m.complete(request("b", "s", "")).await.is_err());
    assert_eq!(start.elapsed(), Duration::ZERO);
}

// ---------------------------------------------------------------------------------------------
// Usage

#[tokio::test]
async fn usage_falls_back_field_by_field_to_the_file_default() {
    let m = model(
        r#"
usage: {input_tokens: 100, output_tokens: 20}
agents:
  a:
    - text: "no usage"
    - text: "partial"
      usage: {output_tokens: 7}
    - text: "full"
      usage: {input_tokens: 1, output_tokens: 2}
"#,
    );
    let usages: Vec<(u64, u64)> = {
        let mut out = Vec::new();
        for _ in 0..3 {
            let usage = m.complete(request("a", "s", "q")).await.unwrap().usage;
            out.push((usage.input_tokens, usage.output_tokens));
        }
        out
    };
    assert_eq!(usages, [(100, 20), (100, 7), (1, 2)]);
}

#[tokio::test]
async fn usage_is_estimated_from_characters_when_nothing_gives_it() {
    let m = model(
        r#"
usage: {output_tokens: 3}
agents:
  estimate:
    - text: "12345"
    - tool_calls: [{name: search, args: {q: "rust"}}]
    - text: "héllo wörld"
      usage: {input_tokens: 9}
  partial_default:
    - text: "abcd"
"#,
    );
    // Messages: "You are helpful." (16 chars) + "0123456789" (10) = 26 -> ceil(26/4) = 7.
    let first = m
        .complete(request("estimate", "s", "0123456789"))
        .await
        .unwrap();
    assert_eq!(first.usage.input_tokens, 7);
    assert_eq!(
        first.usage.output_tokens, 3,
        "the file's output default applies"
    );

    let m = model(
        r#"
agents:
  estimate:
    - text: "12345"
    - tool_calls: [{name: search, args: {q: "rust"}}]
    - text: "héllo wörld"
"#,
    );
    let first = m
        .complete(request("estimate", "s", "0123456789"))
        .await
        .unwrap();
    assert_eq!(
        first.usage,
        TokenUsage {
            input_tokens: 7,
            output_tokens: 2
        }
    );

    // Output of a tool call: "search" (6) + {"q":"rust"} (12) = 18 -> 5.
    // Input now also counts the assistant's earlier tool call the same way: 26 + 18 = 44 -> 11.
    let mut req = request("estimate", "s", "0123456789");
    req.messages.push(Message {
        role: Role::Assistant,
        content: String::new(),
        tool_calls: vec![ToolCall {
            id: "c".into(),
            name: "search".into(),
            args: json!({"q": "rust"}),
        }],
        tool_call_id: None,
    });
    let second = m.complete(req).await.unwrap();
    assert_eq!(
        second.usage,
        TokenUsage {
            input_tokens: 11,
            output_tokens: 5
        }
    );

    // Characters, not bytes: "héllo wörld" is 11 characters -> 3 tokens.
    let third = m.complete(request("estimate", "s", "")).await.unwrap();
    assert_eq!(
        third.usage,
        TokenUsage {
            input_tokens: 4,
            output_tokens: 3
        }
    );
}

#[test]
fn estimates_round_up() {
    assert_eq!(estimate_output_tokens("", &[]), 0);
    assert_eq!(estimate_output_tokens("a", &[]), 1);
    assert_eq!(estimate_output_tokens("abcd", &[]), 1);
    assert_eq!(estimate_output_tokens("abcde", &[]), 2);
    assert_eq!(estimate_input_tokens(&[]), 0);
    assert_eq!(
        estimate_input_tokens(&[
            Message::text(Role::User, "abc"),
            Message::text(Role::User, "de")
        ]),
        2
    );
}

// ---------------------------------------------------------------------------------------------
// Broken scripts

#[test]
fn wrong_type_is_located() {
    let error = load_error("agents:\n  a:\n    - text: [1, 2]\n");
    let (line, column, message) = located(&error);
    assert_eq!((line, column), (Some(3), Some(13)));
    assert!(message.contains("string"), "{message}");
    let shown = error.to_string();
    assert!(
        shown.starts_with("invalid script bad.yaml:3:13: "),
        "{shown}"
    );
    assert!(
        !shown.contains("at line"),
        "the location is not repeated: {shown}"
    );

    let error = load_error("agents:\n  a: 5\n");
    assert_eq!(located(&error).0, Some(2));
    let error = load_error("agents: [1]\n");
    assert_eq!(located(&error).0, Some(1));
    let error = load_error("usage: {input_tokens: lots}\n");
    assert_eq!(located(&error).0, Some(1));
    let error = load_error("agents:\n  a:\n    - error: {status: many}\n");
    assert_eq!(located(&error).0, Some(3));
}

#[test]
fn unknown_reply_kind_is_located() {
    let error = load_error("agents:\n  a:\n    - text: fine\n    - answer: \"hi\"\n");
    let (line, column, message) = located(&error);
    assert_eq!((line, column), (Some(4), Some(7)));
    assert!(message.contains("unknown reply kind `answer`"), "{message}");
    assert!(message.contains("connection_reset"), "{message}");
}

#[test]
fn bad_durations_are_located() {
    for (yaml, line) in [
        ("latency: 5 sec\n", 1),
        ("latency: fast\n", 1),
        ("latency: -5\n", 1),
        ("latency: 1.5s\n", 1),
        ("latency: 2.5\n", 1),
        ("agents:\n  a:\n    - text: hi\n      latency: 2h\n", 4),
        ("latency: 99999999999999999999m\n", 1),
    ] {
        let error = load_error(yaml);
        let (got_line, column, message) = located(&error);
        assert_eq!(got_line, Some(line), "{yaml}: {message}");
        assert!(column.is_some());
        assert!(
            message.contains("duration"),
            "{yaml}: message should mention a duration: {message}"
        );
    }
}

#[test]
fn parse_duration_accepts_the_documented_forms() {
    assert_eq!(
        format::parse_duration("250ms"),
        Ok(Duration::from_millis(250))
    );
    assert_eq!(format::parse_duration("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(format::parse_duration("1m"), Ok(Duration::from_secs(60)));
    assert_eq!(format::parse_duration("75"), Ok(Duration::from_millis(75)));
    assert_eq!(format::parse_duration(" 3 s "), Ok(Duration::from_secs(3)));
    assert!(format::parse_duration("").is_err());
    assert!(format::parse_duration("ms").is_err());
    assert!(format::parse_duration("1h").is_err());
}

#[test]
fn structural_mistakes_are_located() {
    let cases: &[(&str, u64, &str)] = &[
        ("agentz: {}\n", 1, "unknown field `agentz`"),
        ("agents:\n  a: {replies: [], then: forever}\n", 2, "forever"),
        (
            "agents:\n  a: {replies: [], order: 1}\n",
            2,
            "unknown field `order`",
        ),
        (
            "agents:\n  a:\n    - {text: hi, json: {}}\n",
            3,
            "`text` and `json`",
        ),
        (
            "agents:\n  a:\n    - {error: {status: 500}, timeout: true}\n",
            3,
            "one kind",
        ),
        ("agents:\n  a:\n    - {}\n", 3, "needs one of"),
        ("agents:\n  a:\n    - {latency: 5ms}\n", 3, "needs one of"),
        ("agents:\n  a:\n    - timeout: false\n", 3, "timeout: true"),
        (
            "agents:\n  a:\n    - connection_reset: false\n",
            3,
            "connection_reset: true",
        ),
        (
            "agents:\n  a:\n    - tool_calls: []\n",
            3,
            "at least one call",
        ),
        ("agents:\n  a:\n    - tool_calls: [{args: {}}]\n", 3, "name"),
        (
            "agents:\n  a:\n    - tool_calls: [{name: x, argz: {}}]\n",
            3,
            "argz",
        ),
        (
            "agents:\n  a:\n    - error: {status: 42}\n",
            3,
            "invalid HTTP status 42",
        ),
        ("agents:\n  a:\n    - error: {message: oops}\n", 3, "status"),
        (
            "agents:\n  a:\n    - {timeout: true, usage: {input_tokens: 1}}\n",
            3,
            "`usage` has no effect",
        ),
        (
            "agents:\n  a:\n    - {text: hi, usage: {tokens: 1}}\n",
            3,
            "unknown field `tokens`",
        ),
        (
            "agents:\n  a:\n    rules:\n      - {when: {contains: x}, reply: {text: a}, replies: [{text: b}]}\n",
            4,
            "not both",
        ),
        (
            "agents:\n  a:\n    rules:\n      - {when: {contains: x}}\n",
            4,
            "needs `reply`",
        ),
        (
            "agents:\n  a:\n    rules:\n      - {when: {contains: x}, replies: []}\n",
            4,
            "at least one reply",
        ),
        (
            "agents:\n  a:\n    rules:\n      - {when: {matches: x}, reply: {text: a}}\n",
            4,
            "matches",
        ),
        (
            "agents:\n  a:\n    rules:\n      - {reply: {text: a}}\n",
            4,
            "when",
        ),
        ("agents:\n  a: []\n  a: []\n", 3, "duplicate"),
        ("agents:\n  a:\n    - {text: a, text: b}\n", 3, "duplicate"),
        ("agents:\n  a:\n", 2, ""),
        ("agents:\n  a: [\n", 2, ""),
        ("- just\n- a list\n", 1, ""),
    ];
    for (yaml, line, needle) in cases {
        let error = load_error(yaml);
        let (got_line, _, message) = located(&error);
        assert_eq!(got_line, Some(*line), "{yaml}: {message}");
        assert!(
            message.contains(needle),
            "{yaml}: `{needle}` not in: {message}"
        );
        assert!(!message.contains("DuplicateKeyPolicy"), "{message}");
    }
}

#[test]
fn hostile_input_does_not_panic() {
    for text in [
        "\0",
        "{{{{",
        "agents: {a: [{text: *missing}]}",
        "a: &a [*a]",
        "agents: !!binary aGk=",
        "agents:\n  a:\n    - text: \"unterminated\n",
        "\u{feff}agents: {}",
        "---\nagents: {}\n---\nagents: {}\n",
    ] {
        let _ = ScriptedModel::from_yaml_str(text, "hostile.yaml");
    }
}

#[test]
fn from_file_reads_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "agents: {a: [{text: hi}]}\n").unwrap();
    let m = ScriptedModel::from_file(&good).unwrap();
    assert_eq!(m.origin(), good.display().to_string());

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "agents:\n  a:\n    - nonsense: 1\n").unwrap();
    let error = ScriptedModel::from_file(&bad).unwrap_err();
    let shown = error.to_string();
    assert!(
        shown.contains(&format!("{}:3:", bad.display())),
        "the error names the file and line: {shown}"
    );

    let missing = dir.path().join("missing.yaml");
    let error = ScriptedModel::from_file(&missing).unwrap_err();
    assert!(matches!(error, ScriptError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains("missing.yaml"), "{error}");
}

/// Every `yaml` block of the documentation is a complete script that loads.
#[tokio::test]
async fn documented_examples_load() {
    let doc = include_str!("../../../../docs/scripted-model.md");
    let mut blocks = 0;
    let mut rest = doc;
    while let Some(start) = rest.find("```yaml\n") {
        let body = &rest[start + "```yaml\n".len()..];
        let end = body.find("```").unwrap();
        let yaml = &body[..end];
        if let Err(error) = ScriptedModel::from_yaml_str(yaml, "docs/scripted-model.md") {
            panic!("documented example does not load: {error}\n{yaml}");
        }
        blocks += 1;
        rest = &body[end..];
    }
    assert!(blocks >= 1, "the docs have at least one yaml example");
}
