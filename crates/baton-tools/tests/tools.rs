//! Tests against real subprocesses (`sh`, `python3`) and closure tools.

#![allow(clippy::unwrap_used)]

use baton_core::{DynTool, Tool, ToolContext, ToolError, ToolSpec};
use baton_tools::{FnTool, SubprocessError, SubprocessOptions, SubprocessTool, run_json};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn cmd(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn sh(script: &str) -> Vec<String> {
    cmd(&["sh", "-c", script])
}

fn py(script: &str) -> Vec<String> {
    cmd(&["python3", "-c", script])
}

fn spec(name: &str) -> ToolSpec {
    ToolSpec::new(name, format!("the {name} tool"), json!({"type": "object"}))
}

fn ctx() -> ToolContext {
    ToolContext {
        run_id: "run-1".into(),
        step: "draft".into(),
        idempotency_key: "run-1/draft/3".into(),
    }
}

#[tokio::test]
async fn success_parses_stdout() {
    let out = run_json(
        &sh(r#"echo '  {"ok": true, "n": [1, 2]}  '"#),
        &json!({}),
        &SubprocessOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(out, json!({"ok": true, "n": [1, 2]}));
}

#[tokio::test]
async fn empty_stdout_is_null() {
    let out = run_json(&sh("true"), &json!({"x": 1}), &SubprocessOptions::default())
        .await
        .unwrap();
    assert_eq!(out, Value::Null);
    let out = run_json(&sh("printf '\\n  \\n'"), &json!(null), &Default::default())
        .await
        .unwrap();
    assert_eq!(out, Value::Null);
}

#[tokio::test]
async fn stdin_json_arrives_intact() {
    // A large, awkward input: unicode, escapes, nesting, and more than a pipe buffer's worth.
    let input = json!({
        "text": "héllo \"wörld\"\n\t✓ 🎉",
        "nested": {"a": [1, 2.5, null, true, {"b": "c"}]},
        "big": "x".repeat(200_000),
    });
    let echo = py("import json, sys; data = json.load(sys.stdin); json.dump(data, sys.stdout)");
    let out = run_json(&echo, &input, &SubprocessOptions::default())
        .await
        .unwrap();
    assert_eq!(out, input);
}

#[tokio::test]
async fn program_that_ignores_stdin_still_works() {
    // The program exits without reading a large input: the broken pipe is not an error.
    let input = json!({"big": "y".repeat(1_000_000)});
    let out = run_json(&sh("echo 42"), &input, &SubprocessOptions::default())
        .await
        .unwrap();
    assert_eq!(out, json!(42));
}

#[tokio::test]
async fn non_zero_exit_reports_code_and_stderr() {
    let err = run_json(
        &sh("echo partial; echo 'something broke' >&2; exit 2"),
        &json!({}),
        &SubprocessOptions::default(),
    )
    .await
    .unwrap_err();
    match &err {
        SubprocessError::Exit {
            code, stderr_tail, ..
        } => {
            assert_eq!(*code, Some(2));
            assert_eq!(stderr_tail, "something broke");
        }
        other => panic!("expected Exit, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "`sh -c 'echo partial; echo '\\''something broke'\\'' >&2; exit 2'` exited with code 2: something broke"
    );
}

#[tokio::test]
async fn python_exception_message_is_in_the_error() {
    let err = run_json(
        &py("raise ValueError('bad score')"),
        &json!({}),
        &SubprocessOptions::default(),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("exited with code 1"), "{msg}");
    assert!(msg.contains("ValueError: bad score"), "{msg}");
}

#[tokio::test]
async fn stderr_tail_is_bounded_and_keeps_the_end() {
    let err = run_json(
        &py("import sys\nsys.stderr.write('noise ' * 100000)\nsys.stderr.write('THE END')\nsys.exit(3)"),
        &json!({}),
        &SubprocessOptions::default(),
    )
    .await
    .unwrap_err();
    match err {
        SubprocessError::Exit {
            code, stderr_tail, ..
        } => {
            assert_eq!(code, Some(3));
            assert!(stderr_tail.ends_with("THE END"));
            assert!(stderr_tail.len() <= baton_tools::subprocess::STDERR_TAIL_BYTES + 4);
        }
        other => panic!("expected Exit, got {other:?}"),
    }
}

#[tokio::test]
async fn killed_by_signal_is_reported() {
    let err = run_json(&sh("kill -9 $$"), &json!({}), &Default::default())
        .await
        .unwrap_err();
    match &err {
        SubprocessError::Exit { code, signal, .. } => {
            assert_eq!(*code, None);
            assert_eq!(*signal, Some(9));
        }
        other => panic!("expected Exit, got {other:?}"),
    }
    assert!(err.to_string().contains("killed by signal 9"), "{err}");
}

#[tokio::test]
async fn bad_json_output() {
    let err = run_json(
        &sh("echo 'this is not json'"),
        &json!({}),
        &SubprocessOptions::default(),
    )
    .await
    .unwrap_err();
    match &err {
        SubprocessError::BadOutput { stdout_head, .. } => {
            assert_eq!(stdout_head, "this is not json");
        }
        other => panic!("expected BadOutput, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("printed invalid JSON"), "{msg}");
    assert!(msg.contains("this is not json"), "{msg}");

    // Two values in a row are not one JSON document either.
    let err = run_json(&sh("echo '{} {}'"), &json!({}), &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, SubprocessError::BadOutput { .. }), "{err:?}");
}

#[tokio::test]
async fn timeout_kills_the_program() {
    let opts = SubprocessOptions {
        timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let start = Instant::now();
    let err = run_json(&cmd(&["sleep", "5"]), &json!({}), &opts)
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        matches!(err, SubprocessError::Timeout { after_ms: 200, .. }),
        "{err:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert_eq!(
        err.to_string(),
        "`sleep 5` timed out after 200 ms and was killed"
    );
}

#[tokio::test]
async fn timeout_really_kills_the_program() {
    // The process is really gone: it would otherwise create the marker file.
    let dir = std::env::temp_dir().join(format!("baton-tools-timeout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("marker");
    let _ = std::fs::remove_file(&marker);
    let opts = SubprocessOptions {
        timeout: Duration::from_millis(200),
        cwd: Some(dir.clone()),
        ..Default::default()
    };
    let start = Instant::now();
    let err = run_json(
        &py("import time; time.sleep(1); open('marker', 'w').write('x')"),
        &json!({}),
        &opts,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SubprocessError::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!marker.exists(), "the program survived the timeout");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn program_not_found() {
    let err = run_json(
        &cmd(&["definitely-not-a-program-baton", "--flag"]),
        &json!({}),
        &SubprocessOptions::default(),
    )
    .await
    .unwrap_err();
    match &err {
        SubprocessError::Spawn { program, .. } => {
            assert_eq!(program, "definitely-not-a-program-baton");
        }
        other => panic!("expected Spawn, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("could not start `definitely-not-a-program-baton`: "),
        "{err}"
    );
}

#[tokio::test]
async fn empty_command_is_an_error() {
    let err = run_json(&[], &json!({}), &SubprocessOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, SubprocessError::Spawn { .. }), "{err:?}");
}

#[tokio::test]
async fn missing_working_directory_is_a_spawn_error() {
    let opts = SubprocessOptions {
        cwd: Some("/definitely/not/a/dir/baton".into()),
        ..Default::default()
    };
    let err = run_json(&sh("echo 1"), &json!({}), &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, SubprocessError::Spawn { .. }), "{err:?}");
    assert!(err.to_string().contains("working directory"), "{err}");
}

#[tokio::test]
async fn cwd_and_env_are_applied() {
    let dir = std::env::temp_dir();
    let opts = SubprocessOptions {
        cwd: Some(dir.clone()),
        env: vec![
            ("BATON_TEST_A".into(), "alpha".into()),
            ("BATON_TEST_B".into(), "b e t a".into()),
        ],
        ..Default::default()
    };
    let out = run_json(
        &py("import json, os; print(json.dumps([os.getcwd(), os.environ['BATON_TEST_A'], os.environ['BATON_TEST_B']]))"),
        &json!({}),
        &opts,
    )
    .await
    .unwrap();
    let expected_dir = std::fs::canonicalize(&dir).unwrap();
    assert_eq!(
        out,
        json!([expected_dir.to_str().unwrap(), "alpha", "b e t a"])
    );
}

#[tokio::test]
async fn dropping_the_future_kills_the_program() {
    let dir = std::env::temp_dir().join(format!("baton-tools-drop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("marker");
    let _ = std::fs::remove_file(&marker);
    let opts = SubprocessOptions {
        cwd: Some(dir.clone()),
        ..Default::default()
    };
    let script = py("import time; time.sleep(1); open('marker', 'w').write('x')");
    let cancelled = tokio::time::timeout(
        Duration::from_millis(200),
        run_json(&script, &json!({}), &opts),
    )
    .await;
    assert!(cancelled.is_err());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!marker.exists(), "the program survived being dropped");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn default_options() {
    let opts = SubprocessOptions::default();
    assert_eq!(opts.timeout, Duration::from_secs(60));
    assert_eq!(opts.cwd, None);
    assert!(opts.env.is_empty());
}

// --- SubprocessTool -------------------------------------------------------------------------

#[tokio::test]
async fn subprocess_tool_sends_args_and_context() {
    let tool = SubprocessTool::new(
        spec("echo"),
        py("import json, sys; req = json.load(sys.stdin); print(json.dumps({'got': req}))"),
        SubprocessOptions::default(),
    );
    assert_eq!(Tool::spec(&tool).name, "echo");
    let out = tool
        .call(json!({"text": "hi", "n": 3}), ctx())
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"got": {
            "args": {"text": "hi", "n": 3},
            "context": {"run_id": "run-1", "step": "draft", "idempotency_key": "run-1/draft/3"},
        }})
    );
}

#[tokio::test]
async fn subprocess_tool_works_as_dyn_tool() {
    let tool: Box<dyn DynTool> = Box::new(SubprocessTool::new(
        spec("double"),
        py("import json, sys; req = json.load(sys.stdin); print(req['args']['x'] * 2)"),
        SubprocessOptions::default(),
    ));
    assert_eq!(tool.spec().name, "double");
    let out = tool.call_dyn(json!({"x": 21}), ctx()).await.unwrap();
    assert_eq!(out, json!(42));
}

#[tokio::test]
async fn subprocess_tool_failure_maps_to_failed() {
    let tool = SubprocessTool::new(
        spec("score"),
        sh("echo 'no rubric found' >&2; exit 2"),
        SubprocessOptions::default(),
    );
    let err = tool.call(json!({}), ctx()).await.unwrap_err();
    match &err {
        ToolError::Failed { tool, message } => {
            assert_eq!(tool, "score");
            assert!(
                message.contains("exited with code 2: no rubric found"),
                "{message}"
            );
        }
        other => panic!("expected Failed, got {other:?}"),
    }

    let tool = SubprocessTool::new(spec("bad"), sh("echo nope"), SubprocessOptions::default());
    let err = tool.call(json!({}), ctx()).await.unwrap_err();
    assert!(
        matches!(&err, ToolError::Failed { tool, message } if tool == "bad" && message.contains("invalid JSON")),
        "{err:?}"
    );

    let tool = SubprocessTool::new(
        spec("ghost"),
        cmd(&["definitely-not-a-program-baton"]),
        SubprocessOptions::default(),
    );
    let err = tool.call(json!({}), ctx()).await.unwrap_err();
    assert!(
        matches!(&err, ToolError::Failed { tool, message } if tool == "ghost" && message.contains("could not start")),
        "{err:?}"
    );
}

#[tokio::test]
async fn subprocess_tool_timeout_maps_to_timeout() {
    let tool = SubprocessTool::new(
        spec("slow"),
        cmd(&["sleep", "5"]),
        SubprocessOptions {
            timeout: Duration::from_millis(200),
            ..Default::default()
        },
    );
    let start = Instant::now();
    let err = tool.call(json!({}), ctx()).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(
        err,
        ToolError::Timeout {
            tool: "slow".into(),
            after_ms: 200
        }
    );
}

// --- FnTool ---------------------------------------------------------------------------------

#[tokio::test]
async fn fn_tool_sync() {
    let tool = FnTool::sync(spec("add"), |args: Value| {
        let a = args["a"].as_i64().ok_or("`a` must be an integer")?;
        let b = args["b"].as_i64().ok_or("`b` must be an integer")?;
        Ok(json!(a + b))
    });
    assert_eq!(Tool::spec(&tool).name, "add");
    assert_eq!(
        tool.call(json!({"a": 2, "b": 3}), ctx()).await.unwrap(),
        json!(5)
    );
    assert_eq!(
        tool.call(json!({"a": 2}), ctx()).await.unwrap_err(),
        ToolError::Failed {
            tool: "add".into(),
            message: "`b` must be an integer".into()
        }
    );
    assert!(format!("{tool:?}").contains("sync"));
}

#[tokio::test]
async fn fn_tool_async_gets_context() {
    let tool = FnTool::new(spec("whoami"), |args: Value, ctx: ToolContext| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if args.get("fail").is_some() {
            return Err(format!("asked to fail in {}", ctx.step));
        }
        Ok(json!({"run": ctx.run_id, "step": ctx.step, "key": ctx.idempotency_key, "args": args}))
    });
    let out = tool.call(json!({"q": 1}), ctx()).await.unwrap();
    assert_eq!(
        out,
        json!({"run": "run-1", "step": "draft", "key": "run-1/draft/3", "args": {"q": 1}})
    );
    let err = tool.call(json!({"fail": true}), ctx()).await.unwrap_err();
    assert_eq!(
        err,
        ToolError::Failed {
            tool: "whoami".into(),
            message: "asked to fail in draft".into()
        }
    );

    // Usable through the object-safe twin, as registries hold tools.
    let dyn_tool: std::sync::Arc<dyn DynTool> = std::sync::Arc::new(tool);
    let out = dyn_tool
        .call_dyn(json!({}), ToolContext::default())
        .await
        .unwrap();
    assert_eq!(out["step"], json!(""));
}
