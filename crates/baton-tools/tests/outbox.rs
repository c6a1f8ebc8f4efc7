//! The outbox: messages recorded (never sent) in memory or a JSON-lines file, deduplicated by
//! idempotency key; and the built-in registry.

#![allow(clippy::unwrap_used)]

use baton_core::{DynTool, SideEffect, Tool, ToolContext, ToolError};
use baton_tools::builtin::{
    BuiltinConfig, Channel, JsonlOutbox, MemoryOutbox, OutboxSink, OutboxTool, registry,
};
use serde_json::json;
use std::sync::Arc;

fn ctx(key: &str) -> ToolContext {
    ToolContext {
        run_id: "run-1".into(),
        step: "notify".into(),
        idempotency_key: key.into(),
    }
}

fn email(body: &str) -> serde_json::Value {
    json!({"channel": "email", "to": "ops@example.com", "subject": "Storm", "body": body})
}

#[tokio::test]
async fn records_and_deduplicates_by_idempotency_key() {
    let sink = Arc::new(MemoryOutbox::new());
    let tool = OutboxTool::new(sink.clone());
    assert_eq!(Tool::spec(&tool).effect, SideEffect::Idempotent);

    let first = tool
        .call(email("hello"), ctx("run-1/notify/1"))
        .await
        .unwrap();
    assert_eq!(first["status"], "recorded");
    assert_eq!(first["channel"], "email");
    let id = first["id"].as_str().unwrap().to_string();

    // A retry with the same key (even with other arguments) records nothing new.
    let again = tool
        .call(email("hello again"), ctx("run-1/notify/1"))
        .await
        .unwrap();
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["id"], id.as_str());

    let other = tool
        .call(
            json!({"channel": "slack", "to": "#ops", "body": "storm alert"}),
            ctx("run-1/notify/2"),
        )
        .await
        .unwrap();
    assert_ne!(other["id"], id.as_str());

    let all = sink.snapshot();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].id, id);
    assert_eq!(all[0].body, "hello");
    assert_eq!(all[0].subject.as_deref(), Some("Storm"));
    assert_eq!(all[0].idempotency_key, "run-1/notify/1");
    assert_eq!(all[0].run_id, "run-1");
    assert!(
        all[0].at > 1_600_000_000_000_000,
        "microseconds since the epoch"
    );
    assert_eq!(all[1].channel, Channel::Slack);
    assert_eq!(all[1].subject, None);

    // An empty key never matches another message.
    tool.call(email("a"), ctx("")).await.unwrap();
    tool.call(email("b"), ctx("")).await.unwrap();
    assert_eq!(sink.snapshot().len(), 4);
}

#[tokio::test]
async fn jsonl_file_persists_and_deduplicates_across_instances() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.jsonl");
    let tool = OutboxTool::new(Arc::new(JsonlOutbox::new(&path)));
    let first = tool.call(email("one"), ctx("k1")).await.unwrap();
    tool.call(
        json!({"channel": "sms", "to": "+15550100", "body": "two"}),
        ctx("k2"),
    )
    .await
    .unwrap();

    // A new sink on the same file (a restarted process) sees what was recorded.
    let reopened = Arc::new(JsonlOutbox::new(&path));
    let tool2 = OutboxTool::new(reopened.clone());
    let again = tool2.call(email("one, retried"), ctx("k1")).await.unwrap();
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["id"], first["id"]);

    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 2);
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["channel"], "email");
    assert_eq!(line["idempotency_key"], "k1");
    assert_eq!(line["body"], "one");
    let messages = reopened.messages().await.unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].channel, Channel::Sms);
}

#[tokio::test]
async fn concurrent_calls_with_one_key_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let sinks: Vec<Arc<dyn OutboxSink>> = vec![
        Arc::new(MemoryOutbox::new()),
        Arc::new(JsonlOutbox::new(dir.path().join("o.jsonl"))),
    ];
    for sink in sinks {
        let tool = Arc::new(OutboxTool::new(sink.clone()));
        let mut handles = Vec::new();
        for i in 0..8 {
            let tool = tool.clone();
            handles.push(tokio::spawn(async move {
                tool.call(email(&format!("try {i}")), ctx("same"))
                    .await
                    .unwrap()
            }));
        }
        let mut ids = Vec::new();
        for h in handles {
            ids.push(h.await.unwrap()["id"].as_str().unwrap().to_string());
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "every call got the first message's id");
        assert_eq!(sink.messages().await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn bad_arguments_are_clear() {
    let tool = OutboxTool::new(Arc::new(MemoryOutbox::new()));
    for (args, expect) in [
        (
            json!({"channel": "fax", "to": "x", "body": "b"}),
            "`channel`",
        ),
        (json!({"channel": "email", "to": " ", "body": "b"}), "`to`"),
        (json!({"channel": "email", "to": "x"}), "`body`"),
        (
            json!({"channel": "email", "to": "x", "body": "b", "subject": 3}),
            "`subject`",
        ),
    ] {
        match tool.call(args.clone(), ctx("k")).await {
            Err(ToolError::InvalidArguments { message, .. }) => {
                assert!(message.contains(expect), "{args}: {message}")
            }
            other => panic!("{args}: {other:?}"),
        }
    }
    let schema = &Tool::spec(&tool).parameters;
    assert_eq!(schema["additionalProperties"], json!(false));
    assert_eq!(schema["required"], json!(["channel", "to", "body"]));
    assert_eq!(
        schema["properties"]["channel"]["enum"],
        json!(["email", "slack", "sms", "webhook"])
    );
}

#[tokio::test]
async fn registry_builds_what_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let only_calc = registry(&BuiltinConfig::default()).unwrap();
    let names: Vec<&str> = only_calc.iter().map(|t| t.spec().name.as_str()).collect();
    assert_eq!(names, ["calculator"]);

    let config = BuiltinConfig {
        sandbox_dir: Some(dir.path().to_path_buf()),
        http_allow_hosts: vec!["api.example.com".into()],
        sql_url: Some(dir.path().join("app.db").to_string_lossy().into_owned()),
        outbox: Some(Arc::new(MemoryOutbox::new())),
        ..BuiltinConfig::default()
    };
    let tools = registry(&config).unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.spec().name.as_str()).collect();
    assert_eq!(
        names,
        [
            "http_get",
            "sql_query",
            "file_read",
            "file_write",
            "file_list",
            "calculator",
            "outbox"
        ]
    );
    for tool in &tools {
        let spec = DynTool::spec(tool.as_ref());
        assert_eq!(spec.parameters["type"], "object", "{}", spec.name);
        assert_eq!(
            spec.parameters["additionalProperties"],
            json!(false),
            "{}",
            spec.name
        );
        assert!(!spec.description.is_empty());
        let expected = match spec.name.as_str() {
            "file_write" | "outbox" => SideEffect::Idempotent,
            _ => SideEffect::ReadOnly,
        };
        assert_eq!(spec.effect, expected, "{}", spec.name);
    }
    // Debug output hides database passwords.
    let config = BuiltinConfig {
        sql_url: Some("postgres://app:hunter2@db/prod".into()),
        ..BuiltinConfig::default()
    };
    assert!(!format!("{config:?}").contains("hunter2"));

    let err = registry(&BuiltinConfig {
        sandbox_dir: Some(dir.path().join("missing")),
        ..BuiltinConfig::default()
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("missing"), "{err}");
    let err = registry(&BuiltinConfig {
        http_allow_hosts: vec!["*".into()],
        ..BuiltinConfig::default()
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("http_get"), "{err}");
}
