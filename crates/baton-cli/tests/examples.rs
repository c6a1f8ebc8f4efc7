//! The examples under `examples/`, run end to end through the `baton` binary.
//!
//! Every example runs offline on its scripted model. Each test runs `baton run --json` and
//! checks the behaviour the example exists to show (statuses, exit codes, outputs, completed,
//! failed and skipped steps, visits, usage), not just that it exits 0.

#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn example_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// One finished `baton run`.
struct Run {
    code: i32,
    report: Value,
    stderr: String,
}

impl Run {
    fn status(&self) -> &str {
        self.report["status"].as_str().unwrap()
    }

    fn outputs(&self) -> &Value {
        &self.report["outputs"]
    }

    fn completed(&self) -> Vec<&str> {
        names(&self.report["completed_steps"])
    }

    /// Position of a step in `completed_steps` (panics if it did not complete).
    fn pos(&self, step: &str) -> usize {
        let completed = self.completed();
        completed
            .iter()
            .position(|s| *s == step)
            .unwrap_or_else(|| panic!("`{step}` did not complete: {completed:?}"))
    }

    fn usage(&self, field: &str) -> u64 {
        self.report["usage"][field].as_u64().unwrap()
    }

    fn cost(&self) -> f64 {
        self.report["usage"]["cost_usd"].as_f64().unwrap()
    }

    fn failed(&self) -> &Vec<Value> {
        self.report["failed_steps"].as_array().unwrap()
    }

    fn skipped(&self) -> Vec<&str> {
        self.report["skipped_steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step"].as_str().unwrap())
            .collect()
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// The binary, with runs kept in memory (nothing is written to the source tree).
fn baton() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
    cmd.env("BATON_STORE", "memory");
    cmd
}

/// `baton run examples/<example>/workflow.yaml --input @<input> --json [--script <script>]`.
fn run(example: &str, input: &str, script: Option<&str>) -> Run {
    let dir = example_dir(example);
    let mut cmd = baton();
    cmd.arg("run")
        .arg(dir.join("workflow.yaml"))
        .arg("--input")
        .arg(format!("@{}", dir.join(input).display()))
        .arg("--json");
    if let Some(s) = script {
        cmd.arg("--script").arg(dir.join(s));
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stdout: {stdout}\nstderr: {stderr}"));
    Run {
        code: out.status.code().unwrap(),
        report,
        stderr,
    }
}

fn assert_status(r: &Run, status: &str, code: i32) {
    assert_eq!(
        (r.status(), r.code),
        (status, code),
        "report: {:#}\nstderr: {}",
        r.report,
        r.stderr
    );
}

// ------------------------------------------------------------------------------ lead-pipeline

#[test]
fn lead_pipeline_hot_lead_is_assigned_notified_and_recorded() {
    let r = run("lead-pipeline", "input.json", None);
    assert_status(&r, "succeeded", 0);
    assert_eq!(
        r.completed(),
        [
            "capture",
            "enrich",
            "score",
            "qualify",
            "assign",
            "notify",
            "crm_update"
        ]
    );
    assert!(r.failed().is_empty() && r.skipped().is_empty());

    let o = r.outputs();
    assert_eq!(o["lead"]["email"], "jana.novak@acme-robotics.de");
    assert_eq!(o["lead"]["region"], "EU");
    assert_eq!(o["score"], 86);
    let bant = &o["bant"];
    let sum: u64 = ["budget", "authority", "need", "timeline"]
        .iter()
        .map(|k| bant[k].as_u64().unwrap())
        .sum();
    assert_eq!(sum, 86, "the score is the sum of the BANT parts");
    assert_eq!(o["qualification"]["tier"], "hot");
    assert_eq!(o["qualification"]["owner"], "Anna Schmidt");
    assert!(o["handoff"].as_str().unwrap().starts_with("Hi Anna"));
    assert_eq!(o["crm_record"]["status"], "assigned");
    assert_eq!(o["crm_record"]["owner"], "Anna Schmidt");
    assert_eq!(o["crm_record"]["score"], 86);
    let activity = names(&o["activity"]);
    assert_eq!(activity.len(), 3, "{activity:?}");
    assert!(activity[1].contains("assigned to Anna Schmidt"));

    // enrich, score, notify: one model call each, no faults.
    assert_eq!(r.usage("model_calls"), 3);
    assert_eq!(r.usage("tool_calls"), 0);
    assert_eq!(r.usage("steps"), 7);
}

#[test]
fn lead_pipeline_warm_lead_is_nurtured() {
    let r = run("lead-pipeline", "input-warm.json", None);
    assert_status(&r, "succeeded", 0);
    assert_eq!(
        r.completed(),
        [
            "capture",
            "enrich",
            "score",
            "qualify",
            "nurture",
            "crm_update"
        ]
    );
    let o = r.outputs();
    assert_eq!(o["score"], 68);
    assert_eq!(
        o["qualification"],
        json!({"tier": "warm", "sequence": "nurture-30d", "next_action": "email sequence"})
    );
    assert_eq!(o["handoff"], Value::Null, "nobody is notified");
    assert_eq!(o["crm_record"]["status"], "nurturing");
    assert_eq!(r.usage("model_calls"), 2);
}

#[test]
fn lead_pipeline_failed_enrichment_goes_to_manual_review() {
    let r = run("lead-pipeline", "input-bad.json", None);
    // The failure is handled by routing it to `manual_review`, so the run succeeds.
    assert_status(&r, "succeeded", 0);
    assert_eq!(r.completed(), ["capture", "manual_review", "crm_update"]);

    let failed = r.failed();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let f = &failed[0];
    assert_eq!(f["step"], "enrich");
    assert_eq!(f["policy"], "manual_review");
    let error = f["error"].as_str().unwrap();
    assert!(
        error.contains("after 3 attempt(s)") && error.contains("HTTP 500"),
        "{error}"
    );
    let impact = f["impact"].as_str().unwrap();
    assert!(
        impact.contains("could not be scored automatically"),
        "{impact}"
    );
    assert!(
        impact.contains("not run because of it: score, qualify"),
        "{impact}"
    );

    // The steps that needed the enrichment were skipped; the others were never triggered.
    assert_eq!(r.skipped(), ["score", "qualify"]);
    assert_eq!(
        r.report["skipped_steps"][0]["reason"],
        "needs `enrich`, which did not complete"
    );

    let o = r.outputs();
    assert_eq!(o["score"], Value::Null);
    assert_eq!(o["qualification"]["tier"], "manual_review");
    assert_eq!(o["qualification"]["queue"], "data-quality");
    assert_eq!(o["crm_record"]["status"], "needs_review");
    assert_eq!(o["crm_record"]["company"], "Initech");

    // Three attempts (one call plus two retries), all faults: no tokens, no cost.
    assert_eq!(r.usage("model_calls"), 3);
    assert_eq!(r.usage("input_tokens"), 0);
    assert_eq!(r.cost(), 0.0);
}

#[test]
fn lead_pipeline_unreadable_lead_goes_to_manual_review() {
    let r = run("lead-pipeline", "input-no-email.json", None);
    assert_status(&r, "succeeded", 0);
    assert_eq!(r.completed(), ["manual_review", "crm_update"]);
    let f = &r.failed()[0];
    assert_eq!(f["step"], "capture");
    assert_eq!(f["policy"], "manual_review");
    let error = f["error"].as_str().unwrap();
    assert!(
        error.contains("exited with code 1") && error.contains("no valid email"),
        "{error}"
    );
    assert_eq!(r.skipped(), ["enrich", "score", "qualify"]);
    assert_eq!(r.outputs()["crm_record"]["status"], "needs_review");
    assert_eq!(r.usage("model_calls"), 0);
}

// ------------------------------------------------------------------------------ due-diligence

#[test]
fn due_diligence_respects_dependencies_and_synthesises() {
    let r = run("due-diligence", "input.json", None);
    assert_status(&r, "succeeded", 0);
    let completed = r.completed();
    assert_eq!(completed.len(), 5, "{completed:?}");
    assert_eq!(r.pos("scope"), 0, "scope comes first: {completed:?}");
    assert!(r.pos("financial") > r.pos("scope"));
    assert!(r.pos("market") > r.pos("scope"));
    assert!(
        r.pos("legal") > r.pos("financial"),
        "legal needs financial: {completed:?}"
    );
    assert_eq!(r.pos("synthesis"), 4, "synthesis comes last: {completed:?}");

    let o = r.outputs();
    // The recommendation is the confidence- and authority-weighted score of the findings.
    let authority = [("financial", 1.0), ("market", 0.8), ("legal", 1.0)];
    let (mut num, mut den) = (0.0, 0.0);
    for (area, a) in authority {
        let w = o[area]["confidence"].as_f64().unwrap() * a;
        num += o[area]["score"].as_f64().unwrap() * w;
        den += w;
    }
    let expected = (num / den * 10.0).round() / 10.0;
    assert_eq!(expected, 69.4);
    let rec = &o["recommendation"];
    assert_eq!(rec["weighted_score"].as_f64().unwrap(), expected);
    assert_eq!(rec["decision"], "proceed_with_conditions");
    assert_eq!(rec["confidence"].as_f64().unwrap(), 0.8);
    let conditions = names(&rec["conditions"]);
    assert_eq!(conditions.len(), 2);
    assert!(conditions.iter().all(|c| c.starts_with("legal: ")));
    assert_eq!(o["financial"]["revenue_musd"].as_f64().unwrap(), 86.4);
    assert_eq!(o["market"]["competitors"], 14);

    // Four agents, one call each; synthesis is code.
    assert_eq!(r.usage("model_calls"), 4);
    assert_eq!(r.usage("input_tokens"), 3200);
    assert_eq!(r.usage("output_tokens"), 600);
    assert!((r.cost() - 0.0112).abs() < 1e-9, "{}", r.cost());
}

#[test]
fn due_diligence_market_outage_ends_partial_success() {
    let r = run(
        "due-diligence",
        "input.json",
        Some("script-market-outage.yaml"),
    );
    assert_status(&r, "partial_success", 3);
    assert_eq!(r.report["reason"], "1 step(s) failed, 1 skipped");
    assert_eq!(r.completed(), ["scope", "financial", "legal"]);

    let failed = r.failed();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let f = &failed[0];
    assert_eq!(f["step"], "market");
    assert_eq!(f["policy"], "continue");
    let error = f["error"].as_str().unwrap();
    assert!(
        error.contains("after 3 attempt(s)") && error.contains("timed out"),
        "{error}"
    );
    let impact = f["impact"].as_str().unwrap();
    assert!(impact.starts_with("Market position unverified"), "{impact}");
    assert!(
        impact.ends_with("not run because of it: synthesis"),
        "{impact}"
    );

    // synthesis needs all three (join mode all), so it is skipped rather than run degraded.
    assert_eq!(r.skipped(), ["synthesis"]);
    assert_eq!(
        r.report["skipped_steps"][0]["reason"],
        "needs `market`, which did not complete"
    );
    let o = r.outputs();
    assert_eq!(o["market"], Value::Null);
    assert_eq!(o["recommendation"], Value::Null);
    assert_eq!(o["legal"]["open_litigation"], 2);

    // scope, financial, legal answer; market's three attempts time out.
    assert_eq!(r.usage("model_calls"), 6);
    assert_eq!(r.usage("input_tokens"), 2400);
}

// ------------------------------------------------------------------------------- coder-tester

#[test]
fn coder_tester_loops_until_the_tests_pass() {
    let r = run("coder-tester", "input.json", None);
    assert_status(&r, "succeeded", 0);
    assert_eq!(
        r.completed(),
        ["coder", "tester", "analyse", "architect", "reviewer"]
    );
    // Steps that ran more than once; architect and reviewer ran once.
    assert_eq!(
        r.report["visits"],
        json!({"analyse": 3, "coder": 3, "tester": 3})
    );

    let o = r.outputs();
    assert_eq!(
        o["test_log"],
        json!([
            "attempt 1: 2/3 tests passed (logic error)",
            "attempt 2: 0/3 tests passed (design error)",
            "attempt 3: 3/3 tests passed"
        ])
    );
    assert_eq!(o["test_report"]["passed"], true);
    assert_eq!(o["test_report"]["error_kind"], "none");
    let code = o["patch"]["code"].as_str().unwrap();
    assert!(code.contains("def allow(self, user, now):"), "{code}");
    assert!(code.contains("q[0] <= now - self.window"), "{code}");
    assert!(o["design"].as_str().unwrap().contains("allow(user, now)"));
    assert_eq!(o["review"]["approved"], true);

    // coder x3, architect, reviewer; tester and analyse make no model calls.
    assert_eq!(r.usage("model_calls"), 5);
    assert_eq!(r.usage("steps"), 11);
}

#[test]
fn coder_tester_loop_guard_stops_a_coder_that_never_fixes_the_bug() {
    // The stuck coder sends the same patch again: the loop guard sees a step that ran again
    // and changed nothing, and stops the loop long before the visit bound (4).
    let r = run("coder-tester", "input.json", Some("script-stuck.yaml"));
    assert_status(&r, "failed", 1);
    let f = &r.failed()[0];
    assert_eq!(f["step"], "coder");
    assert_eq!(f["policy"], "fail");
    assert!(
        f["error"]
            .as_str()
            .unwrap()
            .contains("loop guard: step `coder` ran again (visit 2) and changed no state"),
        "{f}"
    );
    assert!(!r.completed().contains(&"architect"));
}

// -------------------------------------------------------------------------------- trip-planner

#[test]
fn trip_planner_researches_in_parallel_then_books_within_budget() {
    let r = run("trip-planner", "input.json", None);
    assert_status(&r, "succeeded", 0);
    let completed = r.completed();
    assert_eq!(completed.len(), 6, "{completed:?}");
    assert_eq!(r.pos("planner"), 0);
    for research in ["flights", "hotels", "activities"] {
        assert!(r.pos(research) < r.pos("optimizer"), "{completed:?}");
    }
    assert_eq!(r.pos("book"), 5);
    assert!(!completed.contains(&"over_budget"));

    let o = r.outputs();
    assert_eq!(o["trip"]["destination"], "Paris, France");
    assert_eq!(o["trip"]["budget_usd"], 3000);
    assert_eq!(o["itinerary"]["flight"], "AF023");
    assert_eq!(o["itinerary"]["hotel"], "HTL-MARAIS");
    assert_eq!(o["itinerary"]["total_usd"], 1994);
    assert_eq!(o["booking"]["status"], "confirmed");
    assert_eq!(o["booking"]["charged_usd"], 1848);
    let confirmations = o["booking"]["confirmations"].as_array().unwrap();
    assert_eq!(confirmations.len(), 2);

    // The script's confirmations are the ones book.py gives for these offers.
    for c in confirmations {
        let offer = c["offer_id"].as_str().unwrap();
        let tool = book_py(offer, "Maya Chen");
        assert_eq!(tool["status"], "confirmed");
        assert_eq!(c["confirmation"], tool["confirmation"], "{offer}");
    }

    // planner 1 + 3 researchers x (tool call + answer) + optimizer 1 + executor (2 bookings
    // in one turn + answer) = 10 model calls; 3 searches + 2 bookings = 5 tool calls.
    assert_eq!(r.usage("model_calls"), 10);
    assert_eq!(r.usage("tool_calls"), 5);
    assert_eq!(r.usage("steps"), 6);
    // 400 in / 80 out per call; 2 calls at $2.50/$10 per M tokens, 8 at $0.15/$0.60.
    assert_eq!(r.usage("input_tokens"), 4000);
    assert_eq!(r.usage("output_tokens"), 800);
    let expected =
        2.0 * (400.0 * 2.5 + 80.0 * 10.0) / 1e6 + 8.0 * (400.0 * 0.15 + 80.0 * 0.6) / 1e6;
    assert!(
        (r.cost() - expected).abs() < 1e-9,
        "{} vs {expected}",
        r.cost()
    );
}

/// Run the example's booking tool directly.
fn book_py(offer: &str, traveller: &str) -> Value {
    use std::io::Write;
    let mut child = Command::new("python3")
        .arg("book.py")
        .current_dir(example_dir("trip-planner"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = json!({"args": {"offer_id": offer, "traveller": traveller}});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn trip_planner_tools_really_run() {
    // Without --json, progress lines go to stderr, one per tool call, with any tool error.
    let dir = example_dir("trip-planner");
    let out = baton()
        .arg("run")
        .arg(dir.join("workflow.yaml"))
        .arg("--input")
        .arg(format!("@{}", dir.join("input.json").display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("tool search_offers").count(), 3, "{stderr}");
    assert_eq!(stderr.matches("book: tool book").count(), 2, "{stderr}");
    assert!(!stderr.contains("rejected/failed"), "{stderr}");
}

#[test]
fn trip_planner_does_not_book_over_budget() {
    let r = run("trip-planner", "input-tight-budget.json", None);
    assert_status(&r, "succeeded", 0);
    assert_eq!(r.pos("over_budget"), 5);
    assert!(!r.completed().contains(&"book"));
    let o = r.outputs();
    assert_eq!(o["trip"]["budget_usd"], 1500);
    assert_eq!(o["itinerary"]["total_usd"], 1803);
    assert_eq!(
        o["booking"],
        json!({"status": "not_booked", "reason": "over budget"})
    );
    // No executor: 10 - 2 model calls, 5 - 2 tool calls.
    assert_eq!(r.usage("model_calls"), 8);
    assert_eq!(r.usage("tool_calls"), 3);
}

// ------------------------------------------------------------------------ validate and graph

const EXAMPLES: &[(&str, &[&str])] = &[
    (
        "lead-pipeline",
        &[
            "capture",
            "enrich",
            "score",
            "qualify",
            "assign",
            "notify",
            "nurture",
            "manual_review",
            "crm_update",
        ],
    ),
    (
        "due-diligence",
        &["scope", "financial", "market", "legal", "synthesis"],
    ),
    (
        "coder-tester",
        &["coder", "tester", "analyse", "architect", "reviewer"],
    ),
    (
        "trip-planner",
        &[
            "planner",
            "flights",
            "hotels",
            "activities",
            "optimizer",
            "book",
            "over_budget",
        ],
    ),
];

#[test]
fn every_example_validates() {
    for (name, steps) in EXAMPLES {
        let out = baton()
            .arg("validate")
            .arg(example_dir(name).join("workflow.yaml"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!(
                "workflow `{name}` is valid ({} steps",
                steps.len()
            )),
            "{stdout}"
        );
    }
}

#[test]
fn every_example_graphs_as_mermaid() {
    for (name, steps) in EXAMPLES {
        let out = baton()
            .arg("graph")
            .arg(example_dir(name).join("workflow.yaml"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}");
        let chart = String::from_utf8_lossy(&out.stdout);
        assert!(
            chart.starts_with(&format!("---\ntitle: {name}\n---\nflowchart TD\n")),
            "{chart}"
        );
        for step in *steps {
            assert!(
                chart.contains(&format!("    {step}[")) || chart.contains(&format!("    {step}{{")),
                "{name}: no node for `{step}` in\n{chart}"
            );
        }
    }
}

/// Every workflow file under `examples/` (pattern examples and their variants included)
/// validates, and graphs with a node for each of its steps.
#[test]
fn every_workflow_under_examples_validates_and_graphs() {
    let root = example_dir("");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("workflow") && name.ends_with(".yaml") {
                files.push(f);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 17, "{files:?}");
    for f in &files {
        let out = baton().arg("validate").arg(f).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}{}",
            f.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = baton().arg("graph").arg(f).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", f.display());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("flowchart TD"),
            "{}",
            f.display()
        );
    }
}

#[test]
fn graphs_show_the_interesting_edges() {
    let graph = |name: &str| {
        let out = baton()
            .arg("graph")
            .arg(example_dir(name).join("workflow.yaml"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let lead = graph("lead-pipeline");
    assert!(
        lead.contains("enrich -. \"on error\" .-> manual_review"),
        "{lead}"
    );
    assert!(
        lead.contains("qualify -. \"score >= 80\" .-> assign"),
        "{lead}"
    );
    let dd = graph("due-diligence");
    for edge in [
        "scope --> financial",
        "scope --> market",
        "financial --> legal",
        "legal --> synthesis",
    ] {
        assert!(dd.contains(edge), "{edge} in {dd}");
    }
    let ct = graph("coder-tester");
    assert!(ct.contains("start((start)) --> coder"), "{ct}");
    assert!(
        ct.contains("analyse -. \"test_report.error_kind == 'logic'\" .-> coder"),
        "{ct}"
    );
    let trip = graph("trip-planner");
    assert!(
        trip.contains("optimizer -. \"itinerary.total_usd <= trip.budget_usd\" .-> book"),
        "{trip}"
    );
}
