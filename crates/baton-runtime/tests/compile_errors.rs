//! Compile errors through the library: `parse_spec` + `compile_spec` (and `load_file` for
//! file-level problems) report every problem as a [`Diagnostic`] with the right line, column,
//! step and message; and garbled YAML never panics (proptest).
//!
//! Tests marked `#[ignore = "engine bug: ..."]` state the behaviour the engine should have and
//! does not yet; run them with `cargo test -p baton-runtime --test compile_errors -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use baton_core::{CompletionRequest, CompletionResponse, DynModel, Model, ModelError};
use baton_runtime::spec::{ModelSpec, Pos, StepSpec, WorkflowSpec};
use baton_runtime::{
    Diagnostic, ModelFactory, Registry, WorkflowError, compile_spec, load_file, parse_spec,
};
use proptest::prelude::*;
use std::path::Path;
use std::sync::Arc;

// ---------------------------------------------------------------- helpers

/// A model that is never called: compilation only needs one to exist.
struct NoModel;

impl Model for NoModel {
    async fn complete(&self, _: CompletionRequest) -> Result<CompletionResponse, ModelError> {
        Err(ModelError::Config {
            message: "compile tests make no model calls".into(),
        })
    }
}

/// Builds `provider: test` models; every other provider is unknown.
struct TestModels;

impl ModelFactory for TestModels {
    fn build(
        &self,
        _alias: &str,
        spec: &ModelSpec,
        _base_dir: &Path,
    ) -> Result<Arc<dyn DynModel>, baton_runtime::ModelBuildError> {
        match spec.provider.value.as_str() {
            "test" => Ok(Arc::new(NoModel)),
            other => Err(baton_runtime::ModelBuildError::new(
                baton_runtime::ModelField::Provider,
                format!("unknown provider `{other}` (known: test)"),
            )),
        }
    }
}

fn registry() -> Registry {
    Registry::new()
        .model_factory(Arc::new(TestModels))
        .function("noop", |_| Ok(serde_json::Value::Null))
}

/// Parse and compile `text`; the error, which must exist.
fn errors(text: &str) -> WorkflowError {
    match baton_runtime::compile_str(text, "wf.yaml", &registry()) {
        Ok(_) => panic!("expected errors, but this compiled:\n{text}"),
        Err(e) => e,
    }
}

/// Parse and compile `text`, which must be valid.
fn compiles(text: &str) {
    let spec = parse_spec(text, "wf.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    if let Err(e) = compile_spec(&spec, &registry()) {
        panic!("expected a valid workflow, got:\n{e}\n{text}");
    }
}

fn pos(line: u32, col: u32) -> Option<Pos> {
    Some(Pos { line, col })
}

/// The diagnostic at `at` whose message contains every needle.
fn find<'a>(err: &'a WorkflowError, at: Option<Pos>, needles: &[&str]) -> &'a Diagnostic {
    err.diagnostics
        .iter()
        .find(|d| d.pos == at && needles.iter().all(|n| d.message.contains(n)))
        .unwrap_or_else(|| panic!("no diagnostic at {at:?} containing {needles:?} in:\n{err}"))
}

/// Exactly one diagnostic; it.
fn only(err: &WorkflowError) -> &Diagnostic {
    assert_eq!(err.diagnostics.len(), 1, "expected one diagnostic:\n{err}");
    &err.diagnostics[0]
}

/// Assert the exact set of (line, col, step, needles), in any order, and nothing else.
/// `step` `Some("*")` accepts any step.
fn expect(err: &WorkflowError, expected: &[(u32, u32, Option<&str>, &[&str])]) {
    assert_eq!(
        err.diagnostics.len(),
        expected.len(),
        "expected {} diagnostics, got:\n{err}",
        expected.len()
    );
    for (line, col, step, needles) in expected {
        let d = find(err, pos(*line, *col), needles);
        if *step != Some("*") {
            assert_eq!(d.step.as_deref(), *step, "{d}");
        }
    }
}

const MODEL: &str = "models:\n  default:\n    provider: test\n";

// ---------------------------------------------------------------- YAML and shape

#[test]
fn yaml_syntax_error_is_located() {
    let e = errors(
        "name: x
steps:
  - id: one
     run: \"echo 1\"
",
    );
    let d = only(&e);
    assert_eq!(d.file, "wf.yaml");
    assert_eq!(d.pos, pos(4, 9), "{d}");
    assert!(d.message.contains("mapping values are not allowed"), "{d}");
    // The message is the parser's first line only: no snippet, no duplicated position.
    assert!(
        !d.message.contains('\n') && !d.message.contains("line 4"),
        "{d}"
    );
}

#[test]
fn unclosed_bracket_is_located_at_the_bracket() {
    let d = errors("name: x\nsteps:\n  - id: one\n    run: [echo, \"1\"\n").diagnostics[0].clone();
    assert_eq!(d.pos, pos(4, 10), "{d}");
    assert!(d.message.contains("unclosed bracket"), "{d}");
}

#[test]
fn wrong_types_are_located_at_the_value() {
    for (text, at, needle) in [
        (
            "name: x\nsteps:\n  - id: a\n    max_visits: \"lots\"\n",
            pos(4, 17),
            "u32",
        ),
        ("name: x\nsteps: 5\n", pos(2, 8), "sequence"),
        (
            "name: x\nsteps:\n  - id: a\n    needs: {b: 1}\n",
            pos(4, 12),
            "a name or a list of names",
        ),
        (
            "name: x\nsteps:\n  - id: a\n    timeout: 5 parsecs\n",
            pos(4, 14),
            "unknown duration unit `parsecs`",
        ),
        (
            "name: x\nsteps:\n  - id: a\n    timeout: -5\n",
            pos(4, 14),
            "negative",
        ),
        (
            "name: x\nsteps:\n  - id: a\n    run: []\n",
            pos(4, 10),
            "program",
        ),
    ] {
        let e = errors(text);
        let d = only(&e);
        assert_eq!(d.pos, at, "{d}\n{text}");
        assert!(d.message.contains(needle), "{d}\n{text}");
    }
}

#[test]
fn unknown_merge_rule_names_the_value() {
    let e = errors("name: x\nstate:\n  k: sometimes\nsteps: []\n");
    let d = only(&e);
    // On the right line; the column is the key's (3:3), not the value's (3:6).
    assert_eq!(d.pos.map(|p| p.line), Some(3), "{d}");
    assert!(d.message.contains("unknown variant `sometimes`"), "{d}");
    assert!(d.message.contains("append"), "{d}");
}

#[test]
fn unknown_fields_name_the_field_and_the_choices() {
    let e = errors("name: x\nsteps:\n  - id: a\n    run: \"echo 1\"\n    need: b\n");
    let d = only(&e);
    assert_eq!(d.pos, pos(5, 5), "{d}");
    assert!(d.message.contains("unknown field `need`"), "{d}");
    assert!(d.message.contains("needs"), "{d}");

    let e = errors("name: x\nstep:\n  - id: a\n");
    let d = only(&e);
    assert_eq!(d.pos, pos(2, 1), "{d}");
    assert!(d.message.contains("unknown field `step`"), "{d}");
}

#[test]
fn duplicate_mapping_keys() {
    let e = errors("name: x\nstate:\n  k: replace\n  k: append\nsteps: []\n");
    let d = only(&e);
    assert_eq!(d.pos, pos(4, 3), "{d}");
    assert!(
        d.message.contains("duplicate") && d.message.contains('k'),
        "{d}"
    );
}

#[test]
fn empty_and_non_mapping_texts() {
    for text in ["", "   \n\t\n"] {
        let d = only(&errors(text)).clone();
        assert_eq!(d.pos, None);
        assert_eq!(d.message, "the file is empty");
    }
    for text in ["# only a comment\n", "- a\n- b\n", "just text\n", "42\n"] {
        let e = errors(text);
        let d = only(&e);
        // Not a mapping of workflow fields: located on line 1 (or at the end of a comment).
        assert!(d.pos.is_some_and(|p| p.line <= 2), "{d}");
        assert!(!d.message.trim().is_empty(), "{d}");
    }
    // A null document is an empty mapping: the first missing field is named.
    let e = errors("~\n");
    assert!(only(&e).message.contains("missing field `name`"), "{e}");
}

#[test]
fn pathological_yaml_is_refused_not_crashed() {
    // Deep nesting: a recursion limit, not a stack overflow.
    let deep = format!(
        "name: x\nstate:\n  k: {{merge: replace, default: {}{}}}\nsteps: []\n",
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    let e = errors(&deep);
    assert!(e.diagnostics[0].pos.is_some(), "{e}");
    // Alias expansion ("billion laughs"): a budget, not an out-of-memory.
    let mut bomb = String::from(
        "name: bomb\nstate:\n  k0:\n    default: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        bomb.push_str(&format!("  k{i}:\n    default: &a{i} [{refs}]\n"));
    }
    bomb.push_str("steps:\n  - id: a\n    run: \"echo 1\"\n");
    let e = errors(&bomb);
    assert!(e.diagnostics[0].pos.is_some(), "{e}");
}

// ---------------------------------------------------------------- unknown names

const UNKNOWN_NAMES: &str = r#"name: unknown_names
models:
  default:
    provider: test
agents:
  writer:
    tools: [serch]
tools:
  search:
    command: [cat]
state:
  topic: replace
  draft: replace
start: [fetch, begin]
steps:
  - id: fetch
    agent: writter
    prompt: "Write"
    on_error: recover
  - id: check
    needs: [fetch, prepare]
    function: nope
    next: publish
  - id: decide
    needs: check
    reads: [topic, tone]
    output: drafts
    writes: [draft, verdict]
    router:
      - when: "topik == 'x'"
        to: [fetch, archive]
"#;

#[test]
fn unknown_names_are_all_reported_with_their_place() {
    let e = errors(UNKNOWN_NAMES);
    expect(
        &e,
        &[
            (
                7,
                13,
                None,
                &["agent `writer`", "unknown tool `serch`", "`search`"],
            ),
            // Labelled `step `start`` today, though `start` is not a step: any label passes.
            (14, 16, Some("*"), &["`start` names unknown step `begin`"]),
            (
                17,
                12,
                Some("fetch"),
                &["unknown agent `writter`", "`writer`"],
            ),
            (
                19,
                15,
                Some("fetch"),
                &["on_error", "unknown step `recover`"],
            ),
            (21, 20, Some("check"), &["needs", "unknown step `prepare`"]),
            (22, 15, Some("check"), &["unknown function `nope`", "noop"]),
            (23, 11, Some("check"), &["unknown step `publish`"]),
            (
                26,
                20,
                Some("decide"),
                &["reads", "unknown state key `tone`"],
            ),
            (
                27,
                13,
                Some("decide"),
                &["output", "unknown state key `drafts`"],
            ),
            (
                28,
                21,
                Some("decide"),
                &["writes", "unknown state key `verdict`"],
            ),
            (
                30,
                15,
                Some("decide"),
                &["`topik`", "not a state key", "`topic`"],
            ),
            (31, 21, Some("decide"), &["unknown step `archive`"]),
            (24, 9, Some("decide"), &["a router writes no state"]),
        ],
    );
}

#[test]
fn diagnostics_come_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wf.yaml");
    std::fs::write(&path, UNKNOWN_NAMES).unwrap();
    let e = load_file(&path, &registry()).unwrap_err();
    let file = path.display().to_string();
    assert!(e.diagnostics.iter().all(|d| d.file == file), "{e}");
    let lines: Vec<(u32, u32)> = e
        .diagnostics
        .iter()
        .map(|d| d.pos.map(|p| (p.line, p.col)).unwrap_or((u32::MAX, 0)))
        .collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "{e}");
    // Display: `error: file:line:col: step `x`: message`, one per line.
    let text = e.to_string();
    assert_eq!(text.lines().count(), e.diagnostics.len(), "{text}");
    assert!(
        text.starts_with(&format!(
            "error: {file}:7:13: agent `writer` uses unknown tool `serch`"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "error: {file}:17:12: step `fetch`: unknown agent `writter`"
        )),
        "{text}"
    );
}

#[test]
fn prompt_variables_must_be_read() {
    let text = format!(
        "name: x\n{MODEL}agents:\n  w: {{}}\nstate:\n  topic: replace\nsteps:\n  - id: write\n    agent: w\n    reads: topic\n    prompt: \"About {{{{ topic }}}} for {{{{ audience }}}}\"\n"
    );
    let e = errors(&text);
    let d = only(&e);
    assert_eq!(d.pos, pos(13, 13), "{d}");
    assert_eq!(d.step.as_deref(), Some("write"));
    assert!(d.message.contains("prompt uses `audience`"), "{d}");
    assert!(d.message.contains("the step reads: topic"), "{d}");
}

#[test]
fn models_unknown_alias_unknown_provider_and_none() {
    let e = errors(
        "name: x
models:
  default:
    provider: test
  fast:
    provider: openia
agents:
  writer:
    model: defualt
steps:
  - id: a
    agent: writer
    prompt: hi
",
    );
    expect(
        &e,
        &[
            (6, 15, None, &["model `fast`", "unknown provider `openia`"]),
            (
                9,
                12,
                None,
                &["agent `writer`", "unknown model `defualt`", "`default`"],
            ),
        ],
    );

    let e = errors("name: x\nagents:\n  w: {}\nsteps:\n  - id: a\n    agent: w\n    prompt: hi\n");
    let d = only(&e);
    assert_eq!(d.pos, pos(3, 3), "{d}");
    assert!(d.message.contains("names no model"), "{d}");

    // A registry without a model factory cannot build declared models.
    let spec = parse_spec(
        "name: x\nmodels:\n  m:\n    provider: test\nsteps:\n  - id: a\n    run: \"echo 1\"\n",
        "wf.yaml",
    )
    .unwrap();
    let e = compile_spec(&spec, &Registry::new()).unwrap_err();
    let d = only(&e);
    assert_eq!(d.pos, pos(3, 3), "{d}");
    assert!(d.message.contains("no model factory"), "{d}");
}

#[test]
fn failed_model_is_reported_once() {
    let e = errors(
        "name: x
models:
  default:
    provider: openia
agents:
  w: {}
steps:
  - id: a
    agent: w
    prompt: hi
",
    );
    let d = only(&e);
    assert_eq!(d.pos, pos(4, 15), "{d}");
    assert!(d.message.contains("unknown provider `openia`"), "{d}");
}

#[test]
fn did_you_mean_only_suggests_close_names() {
    // `zebra` contains `a` and `xy` is two edits from `a`: neither is a plausible typo of `a`.
    let e = errors(
        "name: x\nsteps:\n  - id: a\n    run: \"echo 1\"\n    next: zebra\n  - id: b\n    needs: [a, xy]\n",
    );
    assert_eq!(e.diagnostics.len(), 2, "{e}");
    for d in &e.diagnostics {
        assert!(!d.message.contains("did you mean `a`"), "{d}");
    }
}

#[test]
fn tools_without_command_and_bad_state_defaults() {
    let e = errors(
        "name: x
tools:
  t: {description: nothing runs it}
state:
  n: {merge: sum, default: \"many\"}
  l: {merge: append, default: 3}
outputs: [n, nn]
steps:
  - id: a
    run: \"echo 1\"
",
    );
    expect(
        &e,
        &[
            (3, 3, None, &["tool `t`", "no `command`"]),
            (5, 3, None, &["state key `n`", "a string", "`sum`"]),
            (6, 3, None, &["state key `l`", "a number", "`append`"]),
            (7, 14, None, &["outputs", "unknown state key `nn`"]),
        ],
    );
}

// ---------------------------------------------------------------- graph shape

#[test]
fn dependency_cycle_names_every_step() {
    let e = errors(
        "name: x
steps:
  - id: begin
    run: \"echo 1\"
  - id: a
    needs: [begin, c]
    run: \"echo 1\"
  - id: b
    needs: a
    run: \"echo 1\"
  - id: c
    needs: b
    run: \"echo 1\"
",
    );
    let d = only(&e);
    assert_eq!(d.pos, pos(5, 9), "{d}");
    assert_eq!(d.step.as_deref(), Some("a"));
    assert!(
        d.message.contains("dependency cycle: a -> c -> b -> a"),
        "{d}"
    );
}

#[test]
fn self_need_and_two_step_cycle() {
    let e = errors("name: x\nsteps:\n  - id: a\n    needs: a\n    run: \"echo 1\"\n");
    let d = only(&e);
    assert_eq!(d.pos, pos(4, 12), "{d}");
    assert!(d.message.contains("cannot need itself"), "{d}");

    let e = errors(
        "name: x\nsteps:\n  - id: s\n  - id: a\n    needs: [s, b]\n  - id: b\n    needs: a\n",
    );
    let d = only(&e);
    assert!(d.message.contains("a -> b -> a"), "{d}");
}

#[test]
fn unreachable_step_and_no_entry() {
    let e = errors(
        "name: x\nstart: first\nsteps:\n  - id: first\n    run: \"echo 1\"\n  - id: orphan\n    run: \"echo 1\"\n",
    );
    let d = only(&e);
    assert_eq!(d.pos, pos(6, 9), "{d}");
    assert_eq!(d.step.as_deref(), Some("orphan"));
    assert!(d.message.contains("unreachable"), "{d}");

    let e = errors("name: x\nsteps:\n  - id: a\n    run: \"echo 1\"\n    next: a\n");
    let d = only(&e);
    assert_eq!(d.pos, pos(1, 7), "{d}");
    assert!(d.message.contains("no entry step"), "{d}");
    assert!(d.message.contains("start:"), "{d}");
}

#[test]
fn duplicate_and_empty_ids() {
    let e = errors(
        "name: \"\"\nsteps:\n  - id: a\n    run: \"echo 1\"\n  - id: a\n    run: \"echo 2\"\n  - id: \"\"\n",
    );
    expect(
        &e,
        &[
            (1, 7, None, &["non-empty `name`"]),
            (5, 9, Some("a"), &["duplicate step id"]),
            (7, 9, None, &["non-empty `id`"]),
        ],
    );
    let e = errors("name: x\nsteps: []\n");
    assert!(only(&e).message.contains("no steps"), "{e}");
}

// ---------------------------------------------------------------- step shapes

#[test]
fn step_shapes() {
    let text = format!(
        "name: x
{MODEL}agents:
  w: {{}}
state:
  items: {{merge: replace, default: [1, 2]}}
  out: replace
steps:
  - id: both
    agent: w
    prompt: hi
    run: \"echo 1\"
  - id: fan
    needs: both
    map:
      over: items
    output: out
  - id: route
    needs: fan
    router: []
  - id: gather
    needs: [both, fan]
    join: {{mode: quorum, quorum: 3}}
    run: \"echo 1\"
  - id: gather0
    needs: [both, fan]
    join:
      mode: quorum
      quorum: 0
    run: \"echo 1\"
  - id: noquorum
    needs: [both, fan]
    join: {{mode: quorum}}
  - id: lonely
    join: {{mode: any}}
    needs: []
    max_visits: 0
  - id: promptless
    needs: both
    agent: w
  - id: coded
    needs: both
    run: \"echo 1\"
    prompt: hi
  - id: fan2
    needs: both
    map:
      over: items
      run: \"echo 1\"
      concurrency: 0
"
    );
    let e = errors(&text);
    expect(
        &e,
        &[
            (
                11,
                9,
                Some("both"),
                &["a step does one thing", "agent and run"],
            ),
            (
                18,
                13,
                Some("fan"),
                &["exactly one of `agent`, `run` or `function`"],
            ),
            (
                20,
                9,
                Some("route"),
                &["a router needs at least one branch"],
            ),
            (
                25,
                34,
                Some("gather"),
                &["quorum 3 is not between 1 and the 2 needs"],
            ),
            (
                31,
                15,
                Some("gather0"),
                &["quorum 0 is not between 1 and the 2 needs"],
            ),
            (35, 11, Some("noquorum"), &["needs a `quorum` count"]),
            (37, 11, Some("lonely"), &["`join` needs a `needs` list"]),
            (36, 9, Some("lonely"), &["max_visits must be at least 1"]),
            (42, 12, Some("promptless"), &["needs a `prompt`"]),
            (46, 13, Some("coded"), &["`prompt` is only for agent steps"]),
            (47, 9, Some("fan2"), &["a map step needs an `output`"]),
            (
                50,
                13,
                Some("fan2"),
                &["map concurrency must be at least 1"],
            ),
        ],
    );
}

#[test]
fn invalid_json_schemas() {
    let text = format!(
        "name: x
{MODEL}agents:
  w:
    tools: [calc]
    output_schema:
      type: objekt
tools:
  calc:
    parameters: {{type: object, properties: {{a: {{type: 12}}}}}}
    command: [cat]
steps:
  - id: a
    agent: w
    prompt: hi
"
    );
    let e = errors(&text);
    expect(
        &e,
        &[
            (
                9,
                7,
                None,
                &["agent `w`: output_schema: invalid JSON Schema", "objekt"],
            ),
            (12, 17, None, &["tool `calc`: invalid JSON Schema", "12"]),
        ],
    );
}

// ---------------------------------------------------------------- expressions and templates

const CEL_PLAIN: &str = "name: x
state:
  score: replace
steps:
  - id: s
    run: \"echo 1\"
    output: score
    next:
      - when: score >= 50 &&
        to: done
      - to: done
  - id: done
";

const CEL_QUOTED: &str = "name: x
state:
  score: replace
steps:
  - id: s
    run: \"echo 1\"
    output: score
    next:
      - when: \"score >= 50 ) || true\"
        to: done
      - to: done
  - id: done
";

const CEL_BLOCK: &str = "name: x
state:
  score: replace
steps:
  - id: s
    run: \"echo 1\"
    output: score
    next:
      - when: |
          score >= 50 &&
          score <= ) 100
        to: done
      - to: done
  - id: done
";

#[test]
fn bad_expressions_are_reported_for_their_step() {
    for text in [CEL_PLAIN, CEL_QUOTED, CEL_BLOCK] {
        let e = errors(text);
        let d = only(&e);
        assert_eq!(d.step.as_deref(), Some("s"), "{d}");
        assert!(d.message.contains("bad expression `score >= 50"), "{d}");
        assert!(d.message.contains("Syntax error"), "{d}");
        let line = d.pos.expect("located").line;
        assert!((9..=12).contains(&line), "{d}");
    }
    // An empty condition, and a map over an empty expression.
    let e = errors(
        "name: x\nstate:\n  l: replace\nsteps:\n  - id: a\n    run: \"echo 1\"\n    next:\n      - when: \"\"\n        to: a\n",
    );
    assert!(find(&e, pos(8, 15), &["empty expression"]).step.is_some());
}

#[test]
fn bad_expressions_point_at_the_error() {
    // Plain: the value starts at 9:15; the parser fails at the end (expression column 15).
    assert_eq!(only(&errors(CEL_PLAIN)).pos, pos(9, 29));
    // Quoted: the text starts after the quote at 9:16; the stray `)` is column 13.
    assert_eq!(only(&errors(CEL_QUOTED)).pos, pos(9, 28));
    // Block: the text starts at 10:11; the stray `)` is on its line 2, column 10.
    assert_eq!(only(&errors(CEL_BLOCK)).pos, pos(11, 20));
}

fn template_text(prompt: &str) -> String {
    format!(
        "name: x\n{MODEL}agents:\n  w: {{}}\nstate:\n  topic: replace\nsteps:\n  - id: write\n    agent: w\n    reads: topic\n    prompt: {prompt}\n"
    )
}

#[test]
fn bad_templates_are_reported_for_their_step() {
    for (prompt, needle) in [
        ("\"About {{ topic }\"", "expected end of variable block"),
        (
            "|\n      About {{ topic }}.\n      {% if topic %}x{% endfor %}\n      Thanks.",
            "endfor",
        ),
        ("\"{% for %}\"", "expected in"),
    ] {
        let e = errors(&template_text(prompt));
        let d = only(&e);
        assert_eq!(d.step.as_deref(), Some("write"), "{d}");
        assert!(d.message.starts_with("bad prompt template: "), "{d}");
        assert!(d.message.contains(needle), "{d}");
        assert!((13..=16).contains(&d.pos.expect("located").line), "{d}");
    }
}

#[test]
fn bad_templates_point_at_the_line() {
    // One-line prompt on line 13.
    let e = errors(&template_text("\"About {{ topic }\""));
    assert_eq!(only(&e).pos.map(|p| p.line), Some(13), "{e}");
    // A block starting on line 14; the bad `{% endfor %}` is its second line.
    let e = errors(&template_text(
        "|\n      About {{ topic }}.\n      {% if topic %}x{% endfor %}\n      Thanks.",
    ));
    assert_eq!(only(&e).pos.map(|p| p.line), Some(15), "{e}");
}

// ---------------------------------------------------------------- several problems

#[test]
fn three_independent_problems_are_all_reported() {
    let e = errors(
        "name: multi
state:
  draft: replace
steps:
  - id: write
    run: \"echo 1\"
    output: drafted
  - id: review
    needs: [write, proofread]
    run: \"echo 1\"
  - id: publish
    needs: review
    agent: editor
",
    );
    expect(
        &e,
        &[
            (
                7,
                13,
                Some("write"),
                &["unknown state key `drafted`", "`draft`"],
            ),
            (9, 20, Some("review"), &["unknown step `proofread`"]),
            (13, 12, Some("publish"), &["unknown agent `editor`"]),
        ],
    );
}

#[test]
fn specs_built_in_code_have_no_positions() {
    let spec = WorkflowSpec {
        name: "built".into(),
        steps: vec![StepSpec {
            id: "a".into(),
            needs: baton_runtime::spec::OneOrMany(vec!["ghost".into()]),
            ..StepSpec::default()
        }],
        ..WorkflowSpec::default()
    };
    let e = compile_spec(&spec, &registry()).unwrap_err();
    let d = only(&e);
    assert_eq!(d.pos, None);
    assert_eq!(d.file, "<builder>");
    assert!(
        d.to_string()
            .starts_with("<builder>: step `a`: needs unknown step `ghost`"),
        "{d}"
    );
}

#[test]
fn the_valid_baseline_compiles() {
    // The control for the mutations below.
    compiles(BASELINE);
}

// ---------------------------------------------------------------- files

fn write(dir: &Path, name: &str, text: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn file_level_problems() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry();

    let missing = dir.path().join("missing.yaml");
    let e = load_file(&missing, &reg).unwrap_err();
    let d = only(&e);
    assert_eq!(d.file, missing.display().to_string());
    assert!(d.message.contains("cannot read the file"), "{d}");

    let e = load_file(dir.path(), &reg).unwrap_err();
    assert!(only(&e).message.contains("directory"), "{e}");

    let latin1 = write(dir.path(), "latin1.yaml", b"name: caf\xe9\nsteps: []\n");
    let e = load_file(&latin1, &reg).unwrap_err();
    assert!(only(&e).message.contains("not UTF-8"), "{e}");

    let empty = write(dir.path(), "empty.yaml", b"");
    let e = load_file(&empty, &reg).unwrap_err();
    assert_eq!(only(&e).message, "the file is empty");

    let big = vec![b'#'; baton_runtime::loader::MAX_FILE_BYTES as usize + 1];
    let big = write(dir.path(), "big.yaml", &big);
    let e = load_file(&big, &reg).unwrap_err();
    assert!(only(&e).message.contains("the limit is"), "{e}");

    // A compile error through load_file names the file and keeps the position.
    let bad = write(
        dir.path(),
        "bad.yaml",
        b"name: x\nsteps:\n  - id: a\n    needs: ghost\n",
    );
    let e = load_file(&bad, &reg).unwrap_err();
    let d = only(&e);
    assert_eq!(d.file, bad.display().to_string());
    assert_eq!(d.pos, pos(4, 12), "{d}");
}

#[test]
fn sub_workflow_problems() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry();
    let sub = |target: &str| format!("name: p\nsteps:\n  - id: call\n    workflow: {target}\n");

    // Missing child.
    let p = write(dir.path(), "parent.yaml", sub("nope.yaml").as_bytes());
    let d = only(&load_file(&p, &reg).unwrap_err()).clone();
    assert_eq!(d.pos, pos(4, 15), "{d}");
    assert_eq!(d.step.as_deref(), Some("call"));
    assert!(d.message.contains("sub-workflow `nope.yaml`"), "{d}");
    assert!(d.message.contains("cannot read the file"), "{d}");

    // a -> b -> a.
    let a = write(dir.path(), "a.yaml", sub("b.yaml").as_bytes());
    write(dir.path(), "b.yaml", sub("a.yaml").as_bytes());
    let d = only(&load_file(&a, &reg).unwrap_err()).clone();
    assert!(d.message.contains("sub-workflow cycle"), "{d}");
    assert!(
        d.message.contains("a.yaml ->") && d.message.contains("b.yaml ->"),
        "{d}"
    );

    // A child with its own error: the parent's diagnostic carries the child's place.
    write(
        dir.path(),
        "broken.yaml",
        b"name: c\nsteps:\n  - id: x\n    needs: ghost\n",
    );
    let p = write(dir.path(), "p2.yaml", sub("broken.yaml").as_bytes());
    let d = only(&load_file(&p, &reg).unwrap_err()).clone();
    assert!(d.message.contains("broken.yaml:4:12"), "{d}");
    assert!(d.message.contains("unknown step `ghost`"), "{d}");

    // Input naming a key the child does not have.
    write(
        dir.path(),
        "child.yaml",
        b"name: c\nstate:\n  topic: replace\nsteps:\n  - id: x\n    run: \"echo 1\"\n",
    );
    let p = write(
        dir.path(),
        "p3.yaml",
        b"name: p\nstate:\n  t: replace\nsteps:\n  - id: call\n    workflow: child.yaml\n    input:\n      topik: t\n      topic: tt\n",
    );
    let e = load_file(&p, &reg).unwrap_err();
    expect(
        &e,
        &[
            (8, 7, Some("call"), &["has no state key `topik`", "`topic`"]),
            (9, 14, Some("call"), &["`tt`", "not a state key"]),
        ],
    );

    // Nesting deeper than max_depth.
    write(dir.path(), "d2.yaml", sub("child.yaml").as_bytes());
    let p = write(
        dir.path(),
        "d1.yaml",
        b"name: p\ndefaults:\n  max_depth: 1\nsteps:\n  - id: call\n    workflow: d2.yaml\n",
    );
    let d = only(&load_file(&p, &reg).unwrap_err()).clone();
    assert!(d.message.contains("max_depth"), "{d}");
}

// ---------------------------------------------------------------- garbled input never panics

/// A valid workflow using most features; the proptest mutates its text.
const BASELINE: &str = r#"name: baseline
description: every feature, for mutation
models:
  default:
    provider: test
    price: {input_per_mtok: 1.0, output_per_mtok: 2.0}
agents:
  writer:
    instructions: You write.
    tools: [calc]
    timeout: 2s
  scorer:
    output_schema:
      type: object
      required: [score]
      properties: {score: {type: integer}}
tools:
  calc:
    description: adds
    parameters: {type: object, required: [a, b], properties: {a: {type: number}, b: {type: number}}}
    command: [cat]
state:
  topic: replace
  draft: replace
  score: {merge: max}
  notes: append
  topics: {merge: replace, default: [a, b, c]}
  counts: {merge: sum}
outputs: [draft, score, notes]
defaults:
  max_visits: 5
  timeout: 30s
steps:
  - id: write
    agent: writer
    reads: [topic]
    prompt: |
      Write about {{ topic }}.
      {% if topic %}Be brief.{% endif %}
    output: draft
  - id: score
    agent: scorer
    needs: write
    reads: [draft]
    prompt: "Score {{ draft }}"
    writes: [score]
    on_error: low
  - id: route
    needs: score
    router:
      - when: "score >= 50 && size(topics) > 0"
        to: fan
      - to: low
  - id: fan
    map:
      over: topics
      as: t
      run: ["sh", "-c", "cat"]
      concurrency: 2
    output: notes
    max_visits: 2
  - id: low
    run: "echo 1"
    output: counts
    next:
      - when: counts < 3
        to: low
      - to: done
  - id: done
    needs: [fan]
    join: {mode: any, timeout: 1s, on_timeout: proceed}
    function: noop
"#;

#[derive(Clone, Debug)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Indent(usize, bool),
    SwapChars(usize),
    DeleteChar(usize),
    InsertChar(usize, char),
    ReplaceWord(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = prop::sample::select(vec![
        ':', '-', '[', ']', '{', '}', '"', '\'', '|', '>', '&', '*', '!', '#', '%', '@', ',', '?',
        ' ', '\t', '\n', '\\', '0', 'x', 'é', '\u{0}', '\u{feff}',
    ]);
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<usize>(), any::<bool>()).prop_map(|(a, b)| Mutation::Indent(a, b)),
        any::<usize>().prop_map(Mutation::SwapChars),
        any::<usize>().prop_map(Mutation::DeleteChar),
        (any::<usize>(), special).prop_map(|(a, c)| Mutation::InsertChar(a, c)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::ReplaceWord(a, b)),
    ]
}

fn apply(text: &str, muts: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for m in muts {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match *m {
            Mutation::DeleteLine(i) => {
                lines.remove(i % n);
            }
            Mutation::DuplicateLine(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Mutation::SwapLines(a, b) => lines.swap(a % n, b % n),
            Mutation::Indent(i, deeper) => {
                let l = &mut lines[i % n];
                if deeper {
                    l.insert(0, ' ');
                } else if l.starts_with(' ') {
                    l.remove(0);
                }
            }
            Mutation::SwapChars(i) | Mutation::DeleteChar(i) | Mutation::InsertChar(i, _) => {
                let mut text: Vec<char> = lines.join("\n").chars().collect();
                if text.len() < 2 {
                    break;
                }
                let at = i % (text.len() - 1);
                match *m {
                    Mutation::SwapChars(_) => text.swap(at, at + 1),
                    Mutation::DeleteChar(_) => {
                        text.remove(at);
                    }
                    Mutation::InsertChar(_, c) => text.insert(at, c),
                    _ => unreachable!(),
                }
                lines = text
                    .into_iter()
                    .collect::<String>()
                    .lines()
                    .map(str::to_string)
                    .collect();
            }
            Mutation::ReplaceWord(a, b) => {
                // Replace one identifier by another from the text: typos that stay plausible.
                let all = lines.join("\n");
                let words: Vec<&str> = all
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .filter(|w| !w.is_empty())
                    .collect();
                if words.is_empty() {
                    continue;
                }
                let (from, to) = (words[a % words.len()], words[b % words.len()]);
                let replaced = all.replacen(from, to, 1 + a % 2);
                lines = replaced.lines().map(str::to_string).collect();
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Parse and compile; whatever comes back must be well-formed.
fn check_never_panics(text: &str) -> Result<(), TestCaseError> {
    let spec = match parse_spec(text, "garbled.yaml") {
        Ok(s) => s,
        Err(e) => return check_error(text, &e, "garbled.yaml"),
    };
    match compile_spec(&spec, &registry()) {
        Ok(_) => Ok(()),
        Err(e) => check_error(text, &e, "<builder>"),
    }
}

fn check_error(text: &str, e: &WorkflowError, file: &str) -> Result<(), TestCaseError> {
    prop_assert!(!e.diagnostics.is_empty(), "an error without diagnostics");
    let lines = text.lines().count() as u32 + 1;
    for d in &e.diagnostics {
        prop_assert_eq!(&d.file, file);
        prop_assert!(!d.message.trim().is_empty(), "empty message: {:?}", d);
        if let Some(p) = d.pos {
            prop_assert!(p.line >= 1 && p.col >= 1, "position below 1: {}", d);
            prop_assert!(
                p.line <= lines,
                "position past the end ({} lines): {}",
                lines,
                d
            );
        }
    }
    let _ = e.to_string();
    Ok(())
}

proptest! {
    // At least 512 cases; PROPTEST_CASES can ask for more.
    #![proptest_config({
        let d = ProptestConfig::default();
        ProptestConfig { cases: d.cases.max(512), ..d }
    })]

    #[test]
    fn mutated_workflows_never_panic(muts in prop::collection::vec(mutation(), 1..8)) {
        let text = apply(BASELINE, &muts);
        check_never_panics(&text)?;
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        check_never_panics(&text)?;
    }

    #[test]
    fn yaml_shaped_noise_never_panics(
        text in "(name: [a-z]{0,4}\n)?(steps:\n)?([ -]{0,6}(id|needs|next|when|to|agent|prompt|router|map|over|join|run|reads|output|state|models|provider|\\{\\{|\\}\\}|%|[a-z]{1,4})[:]? ?[a-z0-9\\[\\]{}'\"|>&*!, ]{0,12}\n){0,25}"
    ) {
        check_never_panics(&text)?;
    }
}

#[test]
fn a_parents_depth_bound_applies_to_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bound: Option<u32>, child: Option<&str>| {
        let defaults = bound.map_or(String::new(), |b| format!("defaults: {{max_depth: {b}}}\n"));
        let step = match child {
            Some(c) => format!("  - id: sub\n    workflow: {c}\n    output: out\n"),
            None => "  - id: sub\n    function: noop\n    output: out\n".to_string(),
        };
        std::fs::write(
            dir.path().join(name),
            format!("name: {name}\n{defaults}state:\n  out: replace\nsteps:\n{step}"),
        )
        .unwrap();
    };
    // top (bound 2) -> mid (no bound of its own: 4) -> leaf: level 2 may not nest.
    file("top.yaml", Some(2), Some("mid.yaml"));
    file("mid.yaml", None, Some("leaf.yaml"));
    file("leaf.yaml", None, None);
    let reg = registry();
    let err = load_file(&dir.path().join("top.yaml"), &reg).unwrap_err();
    assert!(
        err.to_string().contains("nest deeper than max_depth 2"),
        "{err}"
    );
    // On its own, mid.yaml is fine: levels count from the file you run.
    load_file(&dir.path().join("mid.yaml"), &reg).unwrap();
}

#[test]
fn two_pattern_blocks_on_one_step_are_an_error() {
    let err = errors(
        r#"
name: two
agents:
  a: {}
  b: {}
state:
  out: replace
steps:
  - id: s
    vote: {voters: [a, b], prompt: "Which?", compare: answer}
    synthesize: {findings: [out], score: score}
    output: out
"#,
    );
    let d = find(
        &err,
        pos(11, 17),
        &["one pattern block", "vote and synthesize"],
    );
    assert_eq!(d.step.as_deref(), Some("s"));
}
