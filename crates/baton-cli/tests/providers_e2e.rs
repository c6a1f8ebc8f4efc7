//! One workflow, five providers: the research-report example (`examples/research-report/`)
//! runs unchanged through the real `baton` binary on the scripted provider, on a local fake
//! OpenAI-compatible server (plain JSON and streamed) and on a local fake Anthropic server
//! (plain JSON and streamed), and every run must end with the same status, outputs, completed
//! steps, visits, usage (model calls, tool calls, tokens, steps) and cost.
//!
//! The fake servers (`support/fake_llm.rs`) answer from the example's own `script.yaml`, so
//! the replies and their token counts are those of the scripted run; only the wire differs.
//! The providers are selected with `--models FILE` (files written to a temporary directory with
//! the servers' ports, the example's price and an `api_key_env` set in the child's
//! environment). Besides the reports, the tests check what the servers received: the path, the
//! key in the provider's own header, the stream flag (and `stream_options.include_usage` for
//! OpenAI), the tools and structured-output request, and the tool loop as each API shapes it
//! (assistant tool calls, then the tool results: `tool` messages for OpenAI, `tool_result`
//! blocks of one user message for Anthropic), with the same results in every format.
//!
//! The streamed variants also run with the CLI's progress display on (no `--json`), which makes
//! the runtime hand every streamed piece to an observer, and report the same usage.
//!
//! Failures over the wire: a 429 is retried (the run succeeds with the scripted run's outputs
//! and tokens, and `baton events` shows the retries, which needs a SQLite store), a 401 fails
//! the step at once with the server's message, and an `api_key_env` naming an unset variable
//! stops the run before any request.

#![allow(clippy::unwrap_used)]

#[path = "support/fake_llm.rs"]
mod fake_llm;

use fake_llm::{FakeServer, Fault, Options, Recorded, Wire};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const OPENAI_KEY_VAR: &str = "BATON_E2E_OPENAI_KEY";
const OPENAI_KEY: &str = "sk-e2e-openai-7f3a";
const ANTHROPIC_KEY_VAR: &str = "BATON_E2E_ANTHROPIC_KEY";
const ANTHROPIC_KEY: &str = "sk-ant-e2e-91c4";
const OPENAI_MODEL: &str = "gpt-4o";
const ANTHROPIC_MODEL: &str = "claude-sonnet-4-20250514";
const ANTHROPIC_MAX_TOKENS: u64 = 2048;

/// The agents that answer the model calls of one run, in order.
const CALLS: [&str; 9] = [
    "planner",
    "researcher",
    "researcher",
    "researcher",
    "summariser",
    "writer",
    "reviewer",
    "writer",
    "reviewer",
];

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/research-report")
}

fn workflow() -> PathBuf {
    example().join("workflow.yaml")
}

fn script() -> PathBuf {
    example().join("script.yaml")
}

/// The price of the example's `default` model, as written in the workflow.
fn example_price() -> (f64, f64) {
    let text = std::fs::read_to_string(workflow()).unwrap();
    let spec = baton_runtime::parse_spec(&text, "workflow.yaml").unwrap();
    let (alias, model) = &spec.models.0[0];
    assert_eq!(alias.value, "default");
    let price = model.price.unwrap();
    (price.input_per_mtok, price.output_per_mtok)
}

/// Write a `--models` file pointing the `default` alias at a fake server.
fn models_file(dir: &Path, wire: Wire, url: &str, stream: bool, key_var: &str) -> PathBuf {
    let (input, output) = example_price();
    let entry = match wire {
        Wire::OpenAi => format!(
            "  provider: openai\n  base_url: {url}/v1\n  model: {OPENAI_MODEL}\n  \
             api_key_env: {key_var}\n"
        ),
        Wire::Anthropic => format!(
            "  provider: anthropic\n  base_url: {url}\n  model: {ANTHROPIC_MODEL}\n  \
             api_key_env: {key_var}\n  max_tokens: {ANTHROPIC_MAX_TOKENS}\n"
        ),
    };
    let text = format!(
        "default:\n{entry}  stream: {stream}\n  \
         price: {{input_per_mtok: {input:?}, output_per_mtok: {output:?}}}\n"
    );
    let name = format!(
        "models-{}-{}.yaml",
        match wire {
            Wire::OpenAi => "openai",
            Wire::Anthropic => "anthropic",
        },
        if stream { "stream" } else { "plain" }
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn start(wire: Wire, options: Options) -> FakeServer {
    FakeServer::start(wire, &workflow(), &script(), options).await
}

/// One finished `baton` process.
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run the `baton` binary in `cwd`, with the test keys in its environment and nothing else
/// that could choose a store, models or keys for it.
async fn baton(cwd: &Path, args: &[&str]) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .current_dir(cwd)
        .env_remove("BATON_STORE")
        .env_remove("BATON_MODELS")
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env(OPENAI_KEY_VAR, OPENAI_KEY)
        .env(ANTHROPIC_KEY_VAR, ANTHROPIC_KEY)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("baton did not finish within 2 minutes")
        .unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A finished `baton run --json`: exit code, report and stderr.
struct Run {
    name: String,
    code: i32,
    report: Value,
    stderr: String,
}

/// `baton run` of the example, on `models` (the workflow's own models when `None`).
async fn run(name: &str, cwd: &Path, store: &str, models: Option<&Path>) -> Run {
    let workflow = workflow();
    let input = format!("@{}", example().join("input.json").display());
    let mut args = vec!["--store", store];
    if let Some(m) = models {
        args.extend(["--models", m.to_str().unwrap()]);
    }
    args.extend([
        "run",
        workflow.to_str().unwrap(),
        "--input",
        &input,
        "--json",
        "-q",
    ]);
    let out = baton(cwd, &args).await;
    let report = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{name}: no JSON report ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
            out.code, out.stdout, out.stderr
        )
    });
    Run {
        name: name.to_string(),
        code: out.code,
        report,
        stderr: out.stderr,
    }
}

impl Run {
    fn usage(&self, field: &str) -> &Value {
        &self.report["usage"][field]
    }

    fn cost(&self) -> f64 {
        self.usage("cost_usd").as_f64().unwrap()
    }

    fn assert_succeeded(&self) {
        assert_eq!(
            (self.code, self.report["status"].as_str()),
            (0, Some("succeeded")),
            "{}: {}\nstderr:\n{}",
            self.name,
            self.report,
            self.stderr
        );
    }
}

/// The fields that must agree between two runs of the same workflow on the same replies.
fn assert_same_result(reference: &Run, other: &Run) {
    let what = format!("{} vs {}", reference.name, other.name);
    for field in [
        "status",
        "outputs",
        "completed_steps",
        "visits",
        "failed_steps",
        "skipped_steps",
    ] {
        assert_eq!(
            reference.report[field], other.report[field],
            "{what}: `{field}` differs"
        );
    }
    for field in [
        "model_calls",
        "tool_calls",
        "input_tokens",
        "output_tokens",
        "steps",
    ] {
        assert_eq!(
            reference.usage(field),
            other.usage(field),
            "{what}: usage.{field} differs"
        );
    }
    let (a, b) = (reference.cost(), other.cost());
    assert!((a - b).abs() <= 1e-12, "{what}: cost {a} vs {b}");
}

/// The scripted run's known result (examples/research-report/README.md).
fn assert_expected_scripted_result(run: &Run) {
    run.assert_succeeded();
    let r = &run.report;
    assert_eq!(
        r["completed_steps"],
        json!([
            "query",
            "search",
            "summarise",
            "write",
            "review",
            "check",
            "publish"
        ])
    );
    assert_eq!(r["visits"], json!({"check": 2, "review": 2, "write": 2}));
    assert_eq!(r["usage"]["model_calls"], 9);
    assert_eq!(r["usage"]["tool_calls"], 3);
    assert_eq!(r["usage"]["input_tokens"], 7400);
    assert_eq!(r["usage"]["output_tokens"], 1221);
    assert!((run.cost() - 0.03071).abs() < 1e-12, "cost {}", run.cost());
    let report = &r["outputs"]["report"];
    assert_eq!(report["approved"], true);
    assert_eq!(report["references"].as_array().unwrap().len(), 6);
    assert_eq!(report["open_issues"], json!([]));
}

/// Requests answered by each server: one per model call, by the expected agents, all 200.
fn assert_requests(name: &str, server: &FakeServer) -> Vec<Recorded> {
    assert_eq!(server.problems(), Vec::<String>::new(), "{name}");
    let requests = server.requests();
    let agents: Vec<&str> = requests
        .iter()
        .map(|r| r.agent.as_deref().unwrap_or("?"))
        .collect();
    assert_eq!(agents, CALLS, "{name}: the agents of the requests");
    for r in &requests {
        assert_eq!(r.status, 200, "{name}");
    }
    requests
}

fn roles(messages: &Value) -> Vec<&str> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect()
}

/// What the OpenAI-compatible provider sent.
fn check_openai_requests(name: &str, requests: &[Recorded], stream: bool) {
    for r in requests {
        let agent = r.agent.as_deref().unwrap();
        assert_eq!(r.path, "/v1/chat/completions", "{name}");
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {OPENAI_KEY}")),
            "{name}: the key from api_key_env"
        );
        assert_eq!(r.body["model"], OPENAI_MODEL, "{name}");
        if stream {
            assert_eq!(r.body["stream"], true, "{name}");
            assert_eq!(
                r.body["stream_options"],
                json!({"include_usage": true}),
                "{name}"
            );
        } else {
            assert_eq!(r.body.get("stream"), None, "{name}");
            assert_eq!(r.body.get("stream_options"), None, "{name}");
        }
        let roles = roles(&r.body["messages"]);
        assert_eq!(roles[..2], ["system", "user"], "{name}");
        // Tools only for the agent that has them.
        if agent == "researcher" {
            let tools = r.body["tools"].as_array().unwrap();
            assert_eq!(tools.len(), 1, "{name}");
            assert_eq!(tools[0]["type"], "function");
            assert_eq!(tools[0]["function"]["name"], "search");
            assert_eq!(
                tools[0]["function"]["parameters"]["required"],
                json!(["query"])
            );
        } else {
            assert_eq!(r.body.get("tools"), None, "{name}: {agent} has no tools");
        }
        // The output schema as structured output, for every agent that has one.
        if agent == "writer" {
            assert_eq!(r.body.get("response_format"), None, "{name}");
        } else {
            assert_eq!(r.body["response_format"]["type"], "json_schema", "{name}");
            assert!(r.body["response_format"]["json_schema"]["schema"].is_object());
        }
    }

    // The researcher's third call carries the whole tool loop.
    let messages = &requests[3].body["messages"];
    assert_eq!(
        roles(messages),
        [
            "system",
            "user",
            "assistant",
            "tool",
            "tool",
            "assistant",
            "tool"
        ],
        "{name}"
    );
    assert_eq!(messages[2]["content"], Value::Null, "{name}");
    assert_eq!(
        messages[2]["tool_calls"],
        json!([
            {"id": "call_1", "type": "function", "function": {"name": "search",
             "arguments": "{\"query\":\"error correction logical qubits\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "search",
             "arguments": "{\"query\":\"qubit fidelity hardware roadmap\"}"}},
        ]),
        "{name}"
    );
    assert_eq!(
        messages[5]["tool_calls"],
        json!([{"id": "call_3", "type": "function", "function": {"name": "search",
                "arguments": "{\"query\":\"post-quantum cryptography standards\",\"limit\":2}"}}]),
        "{name}"
    );
    let ids: Vec<&str> = [3, 4, 6]
        .iter()
        .map(|&i| messages[i]["tool_call_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["call_1", "call_2", "call_3"], "{name}");
}

/// What the Anthropic provider sent.
fn check_anthropic_requests(name: &str, requests: &[Recorded], stream: bool) {
    for r in requests {
        let agent = r.agent.as_deref().unwrap();
        assert_eq!(r.path, "/v1/messages", "{name}");
        assert_eq!(
            r.header("x-api-key").as_deref(),
            Some(ANTHROPIC_KEY),
            "{name}: the key from api_key_env"
        );
        assert_eq!(
            r.header("anthropic-version").as_deref(),
            Some("2023-06-01"),
            "{name}"
        );
        assert_eq!(r.header("authorization"), None, "{name}");
        assert_eq!(r.body["model"], ANTHROPIC_MODEL, "{name}");
        assert_eq!(r.body["max_tokens"], ANTHROPIC_MAX_TOKENS, "{name}");
        if stream {
            assert_eq!(r.body["stream"], true, "{name}");
        } else {
            assert_eq!(r.body.get("stream"), None, "{name}");
        }
        // The system prompt is a top-level field, not a message.
        assert!(r.body["system"].is_string(), "{name}");
        assert_eq!(roles(&r.body["messages"])[0], "user", "{name}");
        if agent == "researcher" {
            let tools = r.body["tools"].as_array().unwrap();
            assert_eq!(tools.len(), 1, "{name}");
            assert_eq!(tools[0]["name"], "search");
            assert_eq!(tools[0]["input_schema"]["required"], json!(["query"]));
        } else {
            assert_eq!(r.body.get("tools"), None, "{name}: {agent} has no tools");
        }
    }

    // The researcher's third call: tool_use blocks, then the results of the two parallel
    // calls together in one user message.
    let messages = &requests[3].body["messages"];
    assert_eq!(
        roles(messages),
        ["user", "assistant", "user", "assistant", "user"],
        "{name}"
    );
    let blocks = |i: usize, kind: &str| -> Vec<Value> {
        messages[i]["content"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == kind)
            .cloned()
            .collect()
    };
    assert_eq!(
        blocks(1, "tool_use"),
        vec![
            json!({"type": "tool_use", "id": "call_1", "name": "search",
                   "input": {"query": "error correction logical qubits"}}),
            json!({"type": "tool_use", "id": "call_2", "name": "search",
                   "input": {"query": "qubit fidelity hardware roadmap"}}),
        ],
        "{name}"
    );
    assert_eq!(
        blocks(3, "tool_use"),
        vec![json!({"type": "tool_use", "id": "call_3", "name": "search",
                    "input": {"query": "post-quantum cryptography standards", "limit": 2}})],
        "{name}"
    );
    let result_ids = |i: usize| -> Vec<String> {
        blocks(i, "tool_result")
            .iter()
            .map(|b| b["tool_use_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(result_ids(2), ["call_1", "call_2"], "{name}");
    assert_eq!(result_ids(4), ["call_3"], "{name}");
}

/// The tool results a request sends back, by call id, parsed as JSON.
fn tool_results(wire: Wire, request: &Recorded) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for m in request.body["messages"].as_array().unwrap() {
        match wire {
            Wire::OpenAi if m["role"] == "tool" => {
                out.insert(
                    m["tool_call_id"].as_str().unwrap().to_string(),
                    serde_json::from_str(m["content"].as_str().unwrap()).unwrap(),
                );
            }
            Wire::Anthropic => {
                for b in m["content"].as_array().unwrap() {
                    if b["type"] == "tool_result" {
                        out.insert(
                            b["tool_use_id"].as_str().unwrap().to_string(),
                            serde_json::from_str(b["content"].as_str().unwrap()).unwrap(),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn result_ids(results: &Value) -> Vec<&str> {
    results
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_example_gives_the_same_result_on_every_provider_and_wire_format() {
    let dir = tempfile::tempdir().unwrap();
    let servers = [
        ("openai", Wire::OpenAi, false),
        ("openai-stream", Wire::OpenAi, true),
        ("anthropic", Wire::Anthropic, false),
        ("anthropic-stream", Wire::Anthropic, true),
    ];
    let mut started = Vec::new();
    for (name, wire, stream) in servers {
        let server = start(wire, Options::default()).await;
        let key_var = match wire {
            Wire::OpenAi => OPENAI_KEY_VAR,
            Wire::Anthropic => ANTHROPIC_KEY_VAR,
        };
        let models = models_file(dir.path(), wire, &server.url, stream, key_var);
        started.push((name, wire, stream, server, models));
    }

    let cwd = dir.path();
    let (scripted, openai, openai_stream, anthropic, anthropic_stream) = tokio::join!(
        run("scripted", cwd, "memory", None),
        run("openai", cwd, "memory", Some(&started[0].4)),
        run("openai-stream", cwd, "memory", Some(&started[1].4)),
        run("anthropic", cwd, "memory", Some(&started[2].4)),
        run("anthropic-stream", cwd, "memory", Some(&started[3].4)),
    );

    assert_expected_scripted_result(&scripted);
    for other in [&openai, &openai_stream, &anthropic, &anthropic_stream] {
        other.assert_succeeded();
        assert_same_result(&scripted, other);
    }

    // What each server received.
    let mut all_results = Vec::new();
    for (name, wire, stream, server, _) in &started {
        let requests = assert_requests(name, server);
        match wire {
            Wire::OpenAi => check_openai_requests(name, &requests, *stream),
            Wire::Anthropic => check_anthropic_requests(name, &requests, *stream),
        }
        let results = tool_results(*wire, &requests[3]);
        assert_eq!(
            results.keys().collect::<Vec<_>>(),
            ["call_1", "call_2", "call_3"],
            "{name}"
        );
        assert_eq!(result_ids(&results["call_1"]), ["qc-01", "qc-02", "qc-06"]);
        assert_eq!(result_ids(&results["call_2"]), ["qc-03", "qc-09", "qc-06"]);
        assert_eq!(result_ids(&results["call_3"]), ["qc-04", "qc-10"]);
        all_results.push((name, results));
    }
    // The tool results went back identically over both APIs, streamed or not.
    for (name, results) in &all_results[1..] {
        assert_eq!(
            &all_results[0].1, results,
            "tool results: {} vs {name}",
            all_results[0].0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streamed_runs_with_the_progress_display_report_the_same_usage() {
    // Without `--json`/`-q` the CLI watches the run, and the runtime takes the providers'
    // streaming path (each piece handed to the observer) instead of the plain one.
    let dir = tempfile::tempdir().unwrap();
    let workflow = workflow();
    let input = format!("@{}", example().join("input.json").display());
    for (wire, key_var) in [
        (Wire::OpenAi, OPENAI_KEY_VAR),
        (Wire::Anthropic, ANTHROPIC_KEY_VAR),
    ] {
        let server = start(wire, Options::default()).await;
        let models = models_file(dir.path(), wire, &server.url, true, key_var);
        let out = baton(
            dir.path(),
            &[
                "--store",
                "memory",
                "--models",
                models.to_str().unwrap(),
                "run",
                workflow.to_str().unwrap(),
                "--input",
                &input,
            ],
        )
        .await;
        assert_eq!(out.code, 0, "{wire:?}: {}\n{}", out.stdout, out.stderr);
        let mut lines = out.stdout.lines();
        let first = lines.next().unwrap();
        assert!(
            first.starts_with("run ") && first.ends_with("`research-report`: succeeded"),
            "{first}"
        );
        let usage = out
            .stdout
            .lines()
            .find(|l| l.starts_with("usage: "))
            .unwrap();
        assert!(
            usage.starts_with(
                "usage: 9 model calls, 7400 tokens in / 1221 out, $0.0307, 3 tool calls, 10 steps"
            ),
            "{wire:?}: {usage}"
        );
        assert!(
            out.stderr.contains("▶ search (researcher)"),
            "{}",
            out.stderr
        );
        let requests = assert_requests(&format!("{wire:?} with progress"), &server);
        assert!(requests.iter().all(|r| r.body["stream"] == true));
    }
}

/// `baton events RUN --json` as parsed events.
async fn events(cwd: &Path, store: &str, run_id: &str) -> Vec<Value> {
    let out = baton(cwd, &["--store", store, "events", run_id, "--json"]).await;
    assert_eq!(out.code, 0, "baton events: {}", out.stderr);
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limited_calls_are_retried_and_the_run_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let limit = "Rate limit reached for gpt-4o on requests per min (RPM): Limit 3, Used 3";
    let server = start(
        Wire::OpenAi,
        Options {
            faults: vec![Fault::new(429, limit), Fault::new(429, limit)],
            always: None,
        },
    )
    .await;
    let models = models_file(dir.path(), Wire::OpenAi, &server.url, false, OPENAI_KEY_VAR);
    let store = format!("sqlite:{}", dir.path().join("db.sqlite").display());

    let (scripted, retried) = tokio::join!(
        run("scripted", dir.path(), "memory", None),
        run("openai-429", dir.path(), &store, Some(&models)),
    );
    assert_expected_scripted_result(&scripted);
    retried.assert_succeeded();
    for field in ["outputs", "completed_steps", "visits"] {
        assert_eq!(scripted.report[field], retried.report[field], "{field}");
    }
    // Failed calls are counted, but report no tokens and cost nothing.
    assert_eq!(retried.usage("model_calls"), 9 + 2);
    assert_eq!(
        retried.usage("input_tokens"),
        scripted.usage("input_tokens")
    );
    assert_eq!(
        retried.usage("output_tokens"),
        scripted.usage("output_tokens")
    );
    assert!((retried.cost() - scripted.cost()).abs() <= 1e-12);

    // The server answered the first two attempts with 429, then the script.
    let requests = server.requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses[..3], [429, 429, 200]);
    assert_eq!(requests.len(), 11);
    assert_eq!(
        requests[0].body, requests[2].body,
        "a retry resends the call"
    );

    // The run's log shows both retries of the planner's call.
    let run_id = retried.report["run_id"].as_str().unwrap();
    let events = events(dir.path(), &store, run_id).await;
    let retries: Vec<&Value> = events.iter().filter(|e| e["type"] == "retry").collect();
    assert_eq!(retries.len(), 2, "retry events: {retries:?}");
    for (retry, attempt) in retries.iter().zip([2, 3]) {
        assert_eq!(retry["step"], "query");
        assert_eq!(retry["attempt"], attempt);
        let reason = retry["reason"].as_str().unwrap();
        assert!(
            reason.contains("429") && reason.contains("Rate limit reached"),
            "{reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unauthorized_call_fails_the_step_with_the_servers_message() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            Wire::OpenAi,
            OPENAI_KEY_VAR,
            "Incorrect API key provided: sk-e2e-***7f3a.",
        ),
        (Wire::Anthropic, ANTHROPIC_KEY_VAR, "invalid x-api-key"),
    ];
    for (wire, key_var, message) in cases {
        let server = start(
            wire,
            Options {
                faults: Vec::new(),
                always: Some(Fault::new(401, message)),
            },
        )
        .await;
        let models = models_file(dir.path(), wire, &server.url, true, key_var);
        let run = run("unauthorized", dir.path(), "memory", Some(&models)).await;

        assert_eq!(run.code, 1, "{wire:?}: {}", run.report);
        assert_eq!(run.report["status"], "failed");
        assert_eq!(run.report["completed_steps"], json!([]));
        let failed = run.report["failed_steps"].as_array().unwrap();
        assert_eq!(failed.len(), 1, "{wire:?}: {failed:?}");
        assert_eq!(failed[0]["step"], "query");
        assert_eq!(failed[0]["policy"], "fail");
        let error = failed[0]["error"].as_str().unwrap();
        assert!(
            error.contains("401") && error.contains(message),
            "{wire:?}: {error}"
        );
        // Not retried: one request, one (failed) model call, nothing spent.
        assert_eq!(server.requests().len(), 1, "{wire:?}");
        assert_eq!(run.usage("model_calls"), 1);
        assert_eq!(run.usage("input_tokens"), 0);
        assert_eq!(run.cost(), 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unset_api_key_variable_stops_the_run_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(Wire::OpenAi, Options::default()).await;
    let models = models_file(
        dir.path(),
        Wire::OpenAi,
        &server.url,
        false,
        "BATON_E2E_KEY_THAT_IS_NOT_SET",
    );
    let workflow = workflow();
    let out = baton(
        dir.path(),
        &[
            "--store",
            "memory",
            "--models",
            models.to_str().unwrap(),
            "run",
            workflow.to_str().unwrap(),
            "--input",
            r#"{"topic": "quantum computing"}"#,
            "--json",
            "-q",
        ],
    )
    .await;
    assert_eq!(
        out.code, 2,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert!(
        out.stderr.contains("BATON_E2E_KEY_THAT_IS_NOT_SET"),
        "{}",
        out.stderr
    );
    assert!(server.requests().is_empty());
}
