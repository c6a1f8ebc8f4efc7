//! Bad input to the `baton` command: every malformed workflow, missing file or bad `--input`
//! must give a located, readable error and exit code 2 — never a panic.
//!
//! Each fixture in `tests/fixtures/bad/` holds one kind of mistake (or several independent
//! ones, which must all be reported). The tests run the real binary with the fixture directory
//! as the working directory, so diagnostics read `file.yaml:LINE:COL: ...`.
//! `fixtures/bad/support/` holds valid helper files (a script, a valid workflow) and
//! `fixtures/bad/runtime/` workflows that compile but fail when run.
//!
//! Tests marked `#[ignore = "engine bug: ..."]` state the behaviour the engine should have and
//! does not yet; run them with `cargo test -p baton-cli --test bad_input -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory of the bad fixtures.
fn bad_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad")
}

/// What one run of `baton` did.
#[derive(Debug)]
struct Outcome {
    args: Vec<String>,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// The diagnostics on stderr: each starts with `error: ` at the start of a line and runs
    /// until the next one (a message may span lines, e.g. a multi-line expression).
    fn diagnostics(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for line in self.stderr.lines() {
            match line.strip_prefix("error: ") {
                Some(rest) => out.push(rest.to_string()),
                None => {
                    if let Some(last) = out.last_mut() {
                        last.push('\n');
                        last.push_str(line);
                    }
                }
            }
        }
        out
    }

    /// The process ended with `code`, printed no panic, and (for code 2) said something.
    fn assert_exit(&self, code: i32) {
        for text in [&self.stderr, &self.stdout] {
            assert!(
                !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
                "baton {:?} panicked:\n{}",
                self.args,
                text
            );
        }
        assert_eq!(
            self.code,
            Some(code),
            "baton {:?}: wrong exit code\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.stdout,
            self.stderr
        );
        if code == 2 {
            assert!(
                !self.diagnostics().is_empty(),
                "baton {:?}: exit 2 without an `error:` line\nstderr:\n{}",
                self.args,
                self.stderr
            );
        }
    }

    /// Exit 2, and exactly the `expected` diagnostics (in any order). Each is `(at, needles)`:
    /// `at` is `"LINE:COL"`, or `"LINE"` when only the line is meaningful, or `""` for a
    /// diagnostic without a position; `needles` must all occur in its message.
    fn assert_diagnostics(&self, file: &str, expected: &[(&str, &[&str])]) {
        self.assert_exit(2);
        let diags = self.diagnostics();
        assert_eq!(
            diags.len(),
            expected.len(),
            "baton {:?}: expected {} diagnostic(s), got:\n{}",
            self.args,
            expected.len(),
            self.stderr
        );
        for (at, needles) in expected {
            let prefix = match (at.is_empty(), at.contains(':')) {
                (true, _) => format!("{file}: "),
                (false, true) => format!("{file}:{at}: "),
                (false, false) => format!("{file}:{at}:"),
            };
            let found = diags
                .iter()
                .any(|d| d.starts_with(&prefix) && needles.iter().all(|n| d.contains(n)));
            assert!(
                found,
                "baton {:?}: no diagnostic starting `{prefix}` containing {needles:?}; got:\n{}",
                self.args, self.stderr
            );
        }
    }

    /// The one diagnostic (asserting there is exactly one), without its `error: ` prefix.
    fn only_diagnostic(&self) -> String {
        self.assert_exit(2);
        let diags = self.diagnostics();
        assert_eq!(diags.len(), 1, "expected one diagnostic:\n{}", self.stderr);
        diags.into_iter().next().unwrap()
    }
}

/// Run `baton ARGS` in `dir`.
fn baton_in(dir: &Path, args: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        // Runs that do start must not leave a database in the source tree.
        .env("BATON_STORE", "memory")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run baton");
    Outcome {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run `baton ARGS` in the fixture directory.
fn baton(args: &[&str]) -> Outcome {
    baton_in(&bad_dir(), args)
}

/// `baton validate FILE` on a fixture.
fn validate(file: &str) -> Outcome {
    baton(&["validate", file])
}

/// Parse `LINE:COL` out of a diagnostic that starts with `file:`.
fn position(diag: &str, file: &str) -> (u32, u32) {
    let rest = diag
        .strip_prefix(file)
        .and_then(|r| r.strip_prefix(':'))
        .unwrap_or_else(|| panic!("diagnostic does not start with `{file}:`: {diag}"));
    let mut parts = rest.splitn(3, ':');
    let line = parts.next().and_then(|l| l.parse().ok());
    let col = parts.next().and_then(|c| c.parse().ok());
    match (line, col) {
        (Some(l), Some(c)) => (l, c),
        _ => panic!("diagnostic has no line:col: {diag}"),
    }
}

// ---------------------------------------------------------------- 1. YAML syntax

#[test]
fn yaml_bad_indentation() {
    validate("syntax_bad_indent.yaml").assert_diagnostics(
        "syntax_bad_indent.yaml",
        &[("6:9", &["mapping values are not allowed"])],
    );
}

#[test]
fn yaml_unclosed_bracket_at_end_of_file() {
    validate("syntax_unclosed_bracket_eof.yaml").assert_diagnostics(
        "syntax_unclosed_bracket_eof.yaml",
        &[("4:10", &["unclosed bracket '['"])],
    );
}

#[test]
fn yaml_unclosed_bracket_before_more_lines() {
    // The `[` opened on line 6 is never closed; the YAML parser notices only at the `:` of the
    // next line, and says so. The position is where the parser stopped, not the bracket.
    validate("syntax_unclosed_bracket.yaml")
        .assert_diagnostics("syntax_unclosed_bracket.yaml", &[("7:11", &["':'"])]);
}

#[test]
fn yaml_several_documents() {
    validate("two_documents.yaml").assert_diagnostics(
        "two_documents.yaml",
        &[("6:1", &["several YAML documents"])],
    );
}

#[test]
fn yaml_top_level_not_a_mapping() {
    validate("not_a_mapping.yaml")
        .assert_diagnostics("not_a_mapping.yaml", &[("1:1", &["mapping"])]);
}

// ---------------------------------------------------------------- 2. wrong types

#[test]
fn wrong_type_string_for_a_number() {
    validate("type_max_visits_string.yaml")
        .assert_diagnostics("type_max_visits_string.yaml", &[("5:17", &["u32"])]);
}

#[test]
fn wrong_type_number_for_a_list() {
    validate("type_steps_number.yaml")
        .assert_diagnostics("type_steps_number.yaml", &[("2:8", &["sequence"])]);
}

#[test]
fn wrong_type_mapping_for_names() {
    validate("type_needs_map.yaml").assert_diagnostics(
        "type_needs_map.yaml",
        &[("7:12", &["invalid type: map", "a name or a list of names"])],
    );
}

#[test]
fn missing_required_field() {
    let d = validate("missing_name.yaml").only_diagnostic();
    assert!(d.starts_with("missing_name.yaml:"), "{d}");
    assert!(d.contains("missing field `name`"), "{d}");
    position(&d, "missing_name.yaml");
}

// ---------------------------------------------------------------- 3. unknown fields

#[test]
fn unknown_field_prompts() {
    validate("unknown_field_prompts.yaml").assert_diagnostics(
        "unknown_field_prompts.yaml",
        &[("11:5", &["unknown field `prompts`", "prompt"])],
    );
}

#[test]
fn unknown_field_need() {
    validate("unknown_field_need.yaml").assert_diagnostics(
        "unknown_field_need.yaml",
        &[("7:5", &["unknown field `need`", "needs"])],
    );
}

// ---------------------------------------------------------------- 4-7. unknown names

#[test]
fn unknown_agent() {
    validate("unknown_agent.yaml").assert_diagnostics(
        "unknown_agent.yaml",
        &[(
            "10:12",
            &[
                "step `write`",
                "unknown agent `writter`",
                "did you mean `writer`",
            ],
        )],
    );
}

#[test]
fn unknown_tool() {
    validate("unknown_tool.yaml").assert_diagnostics(
        "unknown_tool.yaml",
        &[(
            "8:21",
            &["agent `writer`", "unknown tool `calculator`", "search"],
        )],
    );
}

#[test]
fn unknown_steps_in_start_needs_next_router_and_on_error() {
    validate("unknown_steps.yaml").assert_diagnostics(
        "unknown_steps.yaml",
        &[
            ("2:16", &["start", "unknown step `begin`"]),
            (
                "9:15",
                &["step `fetch`", "on_error", "unknown step `recover`"],
            ),
            (
                "11:20",
                &["step `check`", "needs", "unknown step `prepare`"],
            ),
            ("13:11", &["step `check`", "unknown step `publish`"]),
            ("18:21", &["step `decide`", "unknown step `archive`"]),
        ],
    );
}

#[test]
fn unknown_state_keys_in_reads_output_writes_condition_and_prompt() {
    validate("unknown_keys.yaml").assert_diagnostics(
        "unknown_keys.yaml",
        &[
            (
                "15:20",
                &["step `write`", "reads", "unknown state key `tone`"],
            ),
            (
                "16:13",
                &["step `write`", "prompt uses `audience`", "does not read"],
            ),
            (
                "17:13",
                &[
                    "step `write`",
                    "output",
                    "unknown state key `drafts`",
                    "`draft`",
                ],
            ),
            (
                "21:21",
                &["step `score`", "writes", "unknown state key `verdict`"],
            ),
            (
                "23:15",
                &["step `score`", "`scores`", "not a state key", "`score`"],
            ),
        ],
    );
}

#[test]
fn unknown_model_alias_and_provider() {
    validate("unknown_model.yaml").assert_diagnostics(
        "unknown_model.yaml",
        &[
            (
                "7:15",
                &["model `fast`", "unknown provider `openia`", "scripted"],
            ),
            (
                "11:12",
                &["agent `writer`", "unknown model `defualt`", "`default`"],
            ),
            ("13:12", &["agent `critic`", "unknown model `slow`"]),
        ],
    );
}

// ---------------------------------------------------------------- 8-9. graph shape

#[test]
fn dependency_cycle_names_every_step() {
    let d = validate("cycle.yaml").only_diagnostic();
    assert!(d.starts_with("cycle.yaml:5:9: step `a`: "), "{d}");
    assert!(d.contains("dependency cycle: a -> c -> b -> a"), "{d}");
    assert!(
        !d.contains("begin"),
        "the cycle does not include `begin`: {d}"
    );
}

#[test]
fn unreachable_step() {
    validate("unreachable.yaml").assert_diagnostics(
        "unreachable.yaml",
        &[("9:9", &["step `orphan`", "unreachable"])],
    );
}

// ---------------------------------------------------------------- 10. CEL

const CEL_FIXTURES: [&str; 3] = [
    "cel_syntax.yaml",
    "cel_syntax_quoted.yaml",
    "cel_syntax_block.yaml",
];

#[test]
fn bad_cel_expressions_are_reported() {
    for file in CEL_FIXTURES {
        let d = validate(file).only_diagnostic();
        let (line, _) = position(&d, file);
        // The `when:` is on line 9; the expression ends at line 11 at the latest.
        assert!((9..=12).contains(&line), "{d}");
        assert!(
            d.contains("step `score`: bad expression `score >= 50"),
            "{d}"
        );
        assert!(d.contains("Syntax error"), "{d}");
    }
}

#[test]
fn bad_cel_expressions_point_at_the_error() {
    // cel_syntax.yaml: `      - when: score >= 50 &&` — the value starts at 9:15 and the
    // parser fails at the end of the text (expression column 15): 9:29.
    // cel_syntax_quoted.yaml: `"score >= 50 ) || true"` — the quote is at 9:15, the text starts
    // at 9:16, the stray `)` is expression column 13: 9:28.
    // cel_syntax_block.yaml: a `|` block whose text starts at 10:11; the stray `)` is on the
    // block's line 2, column 10: 11:20.
    for (file, at) in [
        ("cel_syntax.yaml", (9, 29)),
        ("cel_syntax_quoted.yaml", (9, 28)),
        ("cel_syntax_block.yaml", (11, 20)),
    ] {
        let d = validate(file).only_diagnostic();
        assert_eq!(position(&d, file), at, "{d}");
    }
}

#[test]
fn non_boolean_condition_fails_the_run() {
    let out = baton(&[
        "run",
        "runtime/non_bool_condition.yaml",
        "--quiet",
        "--input",
        r#"{"topic": "rust"}"#,
    ]);
    out.assert_exit(1);
    assert!(
        out.stdout
            .contains("condition `topic` gave a string, not a boolean"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("failed"), "{}", out.stdout);
}

#[test]
fn non_boolean_condition_fails_the_run_as_json() {
    let out = baton(&["run", "runtime/non_bool_condition.yaml", "--json"]);
    out.assert_exit(1);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    assert_eq!(report["status"], "failed", "{report}");
    let reason = report["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("not a boolean"), "{report}");
}

#[test]
fn integer_arithmetic_in_a_condition() {
    // Regression: JSON integers once became CEL `uint`, and `uint + int` is an error.
    // `echo 5` writes 5 to `score`; `score + 1 == 6` should hold.
    let out = baton(&["run", "runtime/int_arithmetic.yaml", "--quiet"]);
    out.assert_exit(0);
    assert!(
        out.stdout.contains("completed: score, done"),
        "{}",
        out.stdout
    );
}

// ---------------------------------------------------------------- 11. templates

#[test]
fn bad_prompt_templates_are_reported() {
    for (file, needle) in [
        ("template_syntax.yaml", "expected end of variable block"),
        ("template_syntax_block.yaml", "endfor"),
    ] {
        let d = validate(file).only_diagnostic();
        let (line, _) = position(&d, file);
        assert!((14..=18).contains(&line), "{d}");
        assert!(d.contains("step `write`: bad prompt template"), "{d}");
        assert!(d.contains(needle), "{d}");
    }
}

#[test]
fn bad_prompt_templates_point_at_the_line() {
    // template_syntax.yaml: a one-line prompt on line 14.
    // template_syntax_block.yaml: a `|` block from line 15; the bad `{% endfor %}` is its
    // second line, so line 16.
    for (file, line) in [
        ("template_syntax.yaml", 14),
        ("template_syntax_block.yaml", 16),
    ] {
        let d = validate(file).only_diagnostic();
        assert_eq!(position(&d, file).0, line, "{d}");
    }
}

// ---------------------------------------------------------------- 12. missing files

#[test]
fn workflow_file_missing() {
    for cmd in ["validate", "run", "graph"] {
        let out = baton(&[cmd, "no-such-workflow.yaml"]);
        out.assert_diagnostics(
            "no-such-workflow.yaml",
            &[("", &["cannot read the file", "No such file"])],
        );
    }
}

#[test]
fn script_missing() {
    let out = validate("missing_script.yaml");
    out.assert_exit(2);
    let diags = out.diagnostics();
    assert!(
        diags.iter().any(|d| d.starts_with("missing_script.yaml:")
            && d.contains("model `default`")
            && d.contains("cannot read script")
            && d.contains("no-such-script.yaml")),
        "{}",
        out.stderr
    );
}

#[test]
fn script_missing_is_one_error_at_the_script() {
    validate("missing_script.yaml").assert_diagnostics(
        "missing_script.yaml",
        &[("5:13", &["cannot read script", "no-such-script.yaml"])],
    );
}

#[test]
fn script_override_missing() {
    let out = baton(&[
        "run",
        "support/agent_ok.yaml",
        "--script",
        "support/no-such-script.yaml",
    ]);
    out.assert_exit(2);
    assert!(
        out.diagnostics()
            .iter()
            .any(|d| d.starts_with("support/agent_ok.yaml:")
                && d.contains("cannot read script")
                && d.contains("no-such-script.yaml")),
        "{}",
        out.stderr
    );
}

#[test]
fn subworkflow_missing() {
    validate("missing_subworkflow.yaml").assert_diagnostics(
        "missing_subworkflow.yaml",
        &[(
            "4:15",
            &[
                "step `child`",
                "sub-workflow `support/no-such-child.yaml`",
                "cannot read the file",
            ],
        )],
    );
}

#[test]
fn subworkflow_include_cycle() {
    let d = validate("include_a.yaml").only_diagnostic();
    assert!(d.starts_with("include_a.yaml:4:15: step `call_b`: "), "{d}");
    assert!(d.contains("sub-workflow cycle"), "{d}");
    let a = d
        .find("include_a.yaml ->")
        .expect("cycle starts at include_a");
    let b = d
        .find("include_b.yaml ->")
        .expect("cycle goes through include_b");
    assert!(a < b && d.trim_end().ends_with("include_a.yaml"), "{d}");
    // The inner diagnostic keeps its own place.
    assert!(d.contains("include_b.yaml:4:15: step `call_a`"), "{d}");
}

#[test]
fn subworkflow_includes_itself() {
    validate("include_self.yaml").assert_diagnostics(
        "include_self.yaml",
        &[(
            "4:15",
            &["step `again`", "sub-workflow cycle", "include_self.yaml"],
        )],
    );
}

// ---------------------------------------------------------------- 13. duplicates

#[test]
fn duplicate_step_id() {
    validate("duplicate_step_id.yaml").assert_diagnostics(
        "duplicate_step_id.yaml",
        &[("5:9", &["step `fetch`", "duplicate step id"])],
    );
}

#[test]
fn duplicate_mapping_key() {
    validate("duplicate_key.yaml")
        .assert_diagnostics("duplicate_key.yaml", &[("4:3", &["duplicate", "topic"])]);
    validate("duplicate_field.yaml")
        .assert_diagnostics("duplicate_field.yaml", &[("5:5", &["duplicate", "run"])]);
}

#[test]
fn messages_do_not_name_library_apis() {
    for file in [
        "duplicate_key.yaml",
        "duplicate_field.yaml",
        "two_documents.yaml",
    ] {
        let d = validate(file).only_diagnostic();
        for api in ["DuplicateKeyPolicy", "Options", "from_str_multiple"] {
            assert!(!d.contains(api), "{d}");
        }
    }
}

// ---------------------------------------------------------------- 14. step shapes

#[test]
fn step_shapes() {
    validate("step_shapes.yaml").assert_diagnostics(
        "step_shapes.yaml",
        &[
            ("12:9", &["step `both`", "agent and run"]),
            (
                "19:13",
                &[
                    "step `fan`",
                    "a map needs exactly one of `agent`, `run` or `function`",
                ],
            ),
            (
                "21:9",
                &["step `route`", "a router needs at least one branch"],
            ),
            (
                "26:34",
                &["step `gather`", "quorum 3 is not between 1 and the 2 needs"],
            ),
        ],
    );
}

// ---------------------------------------------------------------- 15. JSON Schema

#[test]
fn invalid_json_schemas() {
    validate("bad_schema.yaml").assert_diagnostics(
        "bad_schema.yaml",
        &[
            (
                "10:7",
                &[
                    "agent `writer`",
                    "output_schema",
                    "invalid JSON Schema",
                    "objekt",
                ],
            ),
            ("14:17", &["tool `calc`", "invalid JSON Schema", "12"]),
        ],
    );
}

// ---------------------------------------------------------------- 16. not a workflow file

#[test]
fn empty_file() {
    validate("empty.yaml").assert_diagnostics("empty.yaml", &[("", &["the file is empty"])]);
}

#[test]
fn comment_only_file() {
    let d = validate("comment_only.yaml").only_diagnostic();
    assert!(d.starts_with("comment_only.yaml:"), "{d}");
}

#[test]
fn directory_instead_of_file() {
    validate("support").assert_diagnostics("support", &[("", &["directory"])]);
}

#[test]
fn non_utf8_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("latin1.yaml"),
        b"name: caf\xe9\nsteps:\n  - id: one\n    run: \"echo 1\"\n",
    )
    .unwrap();
    for cmd in ["validate", "run", "graph"] {
        baton_in(dir.path(), &[cmd, "latin1.yaml"])
            .assert_diagnostics("latin1.yaml", &[("", &["not UTF-8"])]);
    }
}

// ---------------------------------------------------------------- 17. bad --input

fn run_input(input: &str) -> Outcome {
    baton(&["run", "support/input.yaml", "--quiet", "--input", input])
}

#[test]
fn input_not_json() {
    let d = run_input("{topic: rust}").only_diagnostic();
    assert!(d.starts_with("--input: not valid JSON"), "{d}");
    let d = run_input("").only_diagnostic();
    assert!(d.starts_with("--input: not valid JSON"), "{d}");
}

#[test]
fn input_not_an_object() {
    for (input, what) in [
        ("[1, 2]", "a list"),
        (r#""rust""#, "a string"),
        ("5", "a number"),
    ] {
        let d = run_input(input).only_diagnostic();
        assert!(d.contains("invalid input"), "{d}");
        assert!(d.contains("JSON object"), "{d}");
        assert!(d.contains(what), "{d}");
    }
}

#[test]
fn input_unknown_state_key() {
    let d = run_input(r#"{"topik": "rust"}"#).only_diagnostic();
    assert!(d.contains("`topik` is not a state key"), "{d}");
    assert!(d.contains("topic"), "{d}");
}

#[test]
fn input_file_missing() {
    let d = run_input("@support/no-such-input.json").only_diagnostic();
    assert!(
        d.starts_with("--input @support/no-such-input.json: "),
        "{d}"
    );
    assert!(d.contains("No such file"), "{d}");
}

#[test]
fn input_file_not_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.json");
    std::fs::write(&path, "{\"topic\": \n").unwrap();
    let arg = format!("@{}", path.display());
    let d = run_input(&arg).only_diagnostic();
    assert!(d.starts_with(&format!("{arg}: not valid JSON")), "{d}");
}

#[test]
fn good_input_runs() {
    // The control: the same workflow with good input succeeds.
    let out = run_input(r#"{"topic": "rust"}"#);
    out.assert_exit(0);
}

// ---------------------------------------------------------------- several problems

#[test]
fn every_independent_problem_is_reported() {
    validate("multi.yaml").assert_diagnostics(
        "multi.yaml",
        &[
            ("7:13", &["step `write`", "unknown state key `drafted`"]),
            ("9:20", &["step `review`", "unknown step `proofread`"]),
            ("13:12", &["step `publish`", "unknown agent `editor`"]),
        ],
    );
}

// ---------------------------------------------------------------- every fixture, every command

fn bad_fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(bad_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn every_bad_fixture_fails_cleanly_in_every_command() {
    let names = bad_fixtures();
    assert!(names.len() >= 30, "fixtures missing: {names:?}");
    let abs = bad_dir();
    for name in &names {
        let full = abs.join(name).display().to_string();
        for args in [
            vec!["validate", name.as_str()],
            vec!["graph", name.as_str()],
            vec!["run", name.as_str(), "--quiet", "--input", "{}"],
            vec!["run", full.as_str(), "--json"],
        ] {
            let out = baton(&args);
            out.assert_exit(2);
            let file = args[1];
            for d in out.diagnostics() {
                assert!(
                    d.starts_with(&format!("{file}:")),
                    "baton {args:?}: diagnostic does not name the file: {d}"
                );
            }
            assert!(
                out.stdout.is_empty(),
                "baton {args:?} printed: {}",
                out.stdout
            );
        }
    }
}

#[test]
fn support_files_are_valid() {
    // The control for the sweep above: the helper workflows themselves are fine.
    for file in ["support/input.yaml", "support/agent_ok.yaml"] {
        validate(file).assert_exit(0);
    }
    for file in [
        "runtime/non_bool_condition.yaml",
        "runtime/int_arithmetic.yaml",
    ] {
        validate(file).assert_exit(0);
    }
}

#[test]
fn an_unknown_store_scheme_is_a_usage_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["--store", "mysql://db/runs", "runs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown store `mysql://db/runs`"), "{err}");
}

#[test]
fn pattern_and_roster_errors_are_located() {
    validate("pattern_errors.yaml").assert_diagnostics(
        "pattern_errors.yaml",
        &[
            (
                "10:17",
                &[
                    "agent `lead`",
                    "cannot delegate to unknown agent `analist`",
                    "(declared: bear, bull, lead)",
                ],
            ),
            ("10:26", &["agent `lead` cannot delegate to itself"]),
            (
                "20:15",
                &["step `decide`", "contra `baer` is not a declared agent"],
            ),
            ("22:15", &["step `decide`", "`rounds` must be at least 1"]),
        ],
    );
}
