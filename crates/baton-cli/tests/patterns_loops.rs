//! The looping pattern examples through the `baton` binary: `examples/debate-acquisition`
//! (debate: the round bound and an early concession), `examples/literature-review`
//! (progressive refinement: three narrowing passes, and an early stop on a dead end) and
//! `examples/verified-report` (reflection: a rejected draft fixed, a verifier that never
//! passes, drafts that stop changing). Each test reads the run's events to check who was
//! called, in what order, with what in the prompt.

#![allow(clippy::unwrap_used)]

#[path = "support/cli.rs"]
mod cli;

use cli::{Run, assert_status};
use serde_json::Value;

/// `(step, agent)` of every model call, in order.
fn model_calls(r: &Run) -> Vec<(String, String)> {
    r.events_of("model_called")
        .iter()
        .map(|e| {
            (
                e["step"].as_str().unwrap().to_string(),
                e["agent"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn calls_by(r: &Run, agent: &str) -> usize {
    model_calls(r).iter().filter(|(_, a)| a == agent).count()
}

/// `(to, when)` of the transitions leaving `from`, in order.
fn transitions_from(r: &Run, from: &str) -> Vec<(String, Option<String>)> {
    r.events_of("transition")
        .iter()
        .filter(|e| e["from"] == from)
        .map(|e| {
            (
                e["to"][0].as_str().unwrap().to_string(),
                e["when"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// The user prompt of each start of `step`, in order.
fn prompts(r: &Run, step: &str) -> Vec<String> {
    r.events_of("step_started")
        .iter()
        .filter(|e| e["step"] == step)
        .map(|e| {
            e["messages"]
                .as_array()
                .unwrap()
                .iter()
                .rev()
                .find(|m| m["role"] == "user")
                .unwrap()["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn started(r: &Run, step: &str) -> usize {
    r.events_of("step_started")
        .iter()
        .filter(|e| e["step"] == step)
        .count()
}

// ---------------------------------------------------------------- debate

#[test]
fn debate_runs_its_three_rounds_and_the_judge_decides_on_the_transcript() {
    let r = cli::run("debate-acquisition", "input.json", &[]);
    assert_status(&r, "succeeded", 0);
    // Exactly three turns per side, alternating, then the judge, then the memo.
    let steps: Vec<String> = model_calls(&r).into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        steps,
        [
            "decide.pro",
            "decide.contra",
            "decide.pro",
            "decide.contra",
            "decide.pro",
            "decide.contra",
            "decide.arbitrator",
            "memo"
        ]
    );
    assert_eq!((calls_by(&r, "bull"), calls_by(&r, "bear")), (3, 3));
    assert_eq!((calls_by(&r, "judge"), calls_by(&r, "secretary")), (1, 1));
    // Rounds 1 and 2 go on; round 3 is the bound.
    assert_eq!(
        transitions_from(&r, "decide.round"),
        [
            (
                "decide.pro".to_string(),
                Some("decide_round.round < 3".to_string())
            ),
            ("decide.pro".into(), Some("decide_round.round < 3".into())),
            (
                "decide.arbitrator".into(),
                Some("decide_round.round >= 3".into())
            ),
        ]
    );
    // The judge saw the topic rendered from the input and every argument, tagged, in order.
    let judge = &prompts(&r, "decide.arbitrator")[0];
    assert!(
        judge.starts_with("Should we acquire Nimbus Analytics for $420M?"),
        "{judge}"
    );
    let transcript = r.outputs()["decide_transcript"].as_array().unwrap();
    assert_eq!(transcript.len(), 6);
    let mut at = 0;
    for (i, entry) in transcript.iter().enumerate() {
        let side = if i % 2 == 0 { "pro" } else { "contra" };
        assert_eq!(entry["side"], side);
        assert_eq!(entry["round"], i as u64 / 2 + 1);
        let line = format!(
            "[round {}, {side}, {}] {}",
            i / 2 + 1,
            entry["agent"].as_str().unwrap(),
            entry["argument"]
                .to_string()
                .replace("\":", "\": ")
                .replace(",\"", ", \"")
        );
        let found = judge[at..].find(&line).unwrap_or_else(|| {
            panic!("`{line}` is not (in order) in the judge's prompt:\n{judge}")
        });
        at += found + line.len();
    }
    // The bear's second turn answers the bull's second argument.
    let bear2 = &prompts(&r, "decide.contra")[1];
    assert!(bear2.contains("This is round 2 of 3."), "{bear2}");
    assert!(
        bear2.contains("the pro side argued:\n{\"argument\": \"The -12% EBITDA margin"),
        "{bear2}"
    );
    // The decision is the judge's answer; the memo needed `decide` and came after it.
    assert_eq!(
        r.outputs()["decision"]["decision"],
        "acquire_with_conditions"
    );
    assert_eq!(
        r.outputs()["decision"]["conditions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let done = r.completed();
    let pos = |s: &str| done.iter().position(|d| d == s).unwrap();
    assert!(pos("decide.arbitrator") < pos("decide") && pos("decide") < pos("memo"));
    assert!(prompts(&r, "memo")[0].contains("Decision: acquire_with_conditions."));
    assert_eq!(r.report["visits"]["decide.pro"], 3);
    assert_eq!(r.usage("model_calls"), 8);
}

#[test]
fn a_concession_ends_the_debate_after_two_rounds() {
    let r = cli::run(
        "debate-acquisition",
        "input.json",
        &["--script", "script-concede.yaml"],
    );
    assert_status(&r, "succeeded", 0);
    assert_eq!((calls_by(&r, "bull"), calls_by(&r, "bear")), (2, 2));
    assert_eq!(
        transitions_from(&r, "decide.round"),
        [
            (
                "decide.pro".to_string(),
                Some("decide_round.round < 3".to_string())
            ),
            (
                "decide.arbitrator".into(),
                Some("decide_round.pro.concedes || decide_round.contra.concedes".into())
            ),
        ]
    );
    let judge = &prompts(&r, "decide.arbitrator")[0];
    assert!(judge.contains("over 2 round(s)"), "{judge}");
    assert!(judge.contains("I concede."), "{judge}");
    assert!(!judge.contains("never used"), "{judge}");
    assert_eq!(r.outputs()["decision"]["decision"], "acquire");
    assert_eq!(
        r.outputs()["decide_transcript"].as_array().unwrap().len(),
        4
    );
}

#[test]
fn debate_graph_shows_the_loop_and_its_bound() {
    let g = cli::graph("debate-acquisition", "workflow.yaml");
    for line in [
        "start((start)) --> decide_begin",
        "decide_begin -.-> decide_pro",
        "decide_pro -.-> decide_contra",
        "decide_contra -.-> decide_round",
        "decide_round -. \"decide_round.round < 3\" .-> decide_pro",
        "decide_round -. \"decide_round.round >= 3\" .-> decide_arbitrator",
        "decide_arbitrator --> decide",
        "decide --> memo",
    ] {
        assert!(g.contains(line), "`{line}` not in:\n{g}");
    }
}

// ---------------------------------------------------------------- progressive refinement

#[test]
fn literature_review_narrows_broad_focused_detailed() {
    let r = cli::run("literature-review", "input.json", &[]);
    assert_status(&r, "succeeded", 0);
    assert_eq!(
        model_calls(&r),
        [
            ("review.broad".to_string(), "scout".to_string()),
            ("review.focused".into(), "analyst".into()),
            ("review.detailed".into(), "expert".into()),
        ]
    );
    assert_eq!(
        r.completed(),
        [
            "review.broad",
            "review.focused",
            "review.detailed",
            "review"
        ]
    );
    // Each pass narrows: the focused pass sees only the two promising threads of four, the
    // detailed pass only the three selected papers.
    let focused = &prompts(&r, "review.focused")[0];
    assert!(
        focused.contains("- RAG for clinical QA (relevance 0.95)"),
        "{focused}"
    );
    assert!(
        focused.contains("- Hallucination measurement in medical LLMs"),
        "{focused}"
    );
    assert!(!focused.contains("General-domain RAG"), "{focused}");
    assert!(!focused.contains("Med-PaLM"), "{focused}");
    let detailed = &prompts(&r, "review.detailed")[0];
    assert!(
        detailed.contains(
            "Papers to review in detail: Zakka 2024 (Almanac); Xiong 2024 (MedRAG benchmark); Pal 2023 (Med-HALT)"
        ),
        "{detailed}"
    );
    assert!(!detailed.contains("Lozano"), "{detailed}");
    // The output is the detailed pass's review.
    assert_eq!(r.outputs()["review"]["evidence"], "moderate");
    assert_eq!(r.outputs()["review"], r.outputs()["review_detailed"]);
    assert_eq!(
        transitions_from(&r, "review.broad"),
        [("review.focused".to_string(), None)]
    );
}

#[test]
fn a_dead_end_stops_the_review_after_the_broad_pass() {
    let r = cli::run(
        "literature-review",
        "input.json",
        &["--script", "script-dead-end.yaml"],
    );
    assert_status(&r, "succeeded", 0);
    // The early stop is a transition straight to the end, with its condition.
    assert_eq!(
        transitions_from(&r, "review.broad"),
        [(
            "review".to_string(),
            Some("size(review_broad.promising) == 0".to_string())
        )]
    );
    // The later passes never start, and their agents are never called.
    assert_eq!(model_calls(&r).len(), 1);
    assert_eq!((calls_by(&r, "analyst"), calls_by(&r, "expert")), (0, 0));
    assert_eq!(
        (
            started(&r, "review.focused"),
            started(&r, "review.detailed")
        ),
        (0, 0)
    );
    assert_eq!(r.completed(), ["review.broad", "review"]);
    // The output is what the broad pass found (nothing promising).
    assert_eq!(r.outputs()["review"]["promising"], Value::Array(vec![]));
    assert_eq!(r.outputs()["review_focused"], Value::Null);
}

#[test]
fn literature_review_graph_shows_the_early_exits() {
    let g = cli::graph("literature-review", "workflow.yaml");
    for line in [
        "start((start)) --> review_broad",
        "review_broad -. \"size(review_broad.promising) == 0\" .-> review",
        "review_broad -.-> review_focused",
        "review_focused -. \"size(review_focused.selected) == 0\" .-> review",
        "review_focused -.-> review_detailed",
        "review_detailed -.-> review",
    ] {
        assert!(g.contains(line), "`{line}` not in:\n{g}");
    }
}

// ---------------------------------------------------------------- reflection / verification

#[test]
fn the_checker_sends_the_draft_back_once_and_passes_the_fix() {
    let r = cli::run("verified-report", "input.json", &[]);
    assert_status(&r, "succeeded", 0);
    let steps: Vec<String> = model_calls(&r).into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        steps,
        [
            "report.producer",
            "report.verifier",
            "report.producer",
            "report.verifier"
        ]
    );
    // The verifier checks the draft against the sources it was given.
    let check = &prompts(&r, "report.verifier")[0];
    assert!(
        check.contains("[S1] Northwind Q3 revenue was $48.2M, up 18% year on year."),
        "{check}"
    );
    assert!(
        check.contains("up 25% year on year [S1], making it the market leader"),
        "{check}"
    );
    // The second draft is asked for with the checker's reasons and the rejected draft.
    let second = &prompts(&r, "report.producer")[1];
    assert!(
        second.contains("- The draft says revenue grew 25%; S1 says 18%."),
        "{second}"
    );
    assert!(
        second.contains("- \"Making it the market leader\" is supported by no source."),
        "{second}"
    );
    assert!(second.contains("Your previous draft:\nNorthwind had a strong third quarter"));
    assert_eq!(
        transitions_from(&r, "report.review"),
        [
            (
                "report.producer".to_string(),
                Some("report_review.outcome == 'revise'".to_string())
            ),
            ("report".into(), None),
        ]
    );
    let report = r.outputs()["report"].as_str().unwrap();
    assert!(report.contains("up 18% year on year [S1]"), "{report}");
    assert!(!report.contains("market leader"), "{report}");
    assert_eq!(r.outputs()["report_review"]["outcome"], "passed");
    assert_eq!(r.outputs()["report_review"]["round"], 2);
    assert_eq!(r.outputs()["report_verdicts"][0]["passed"], false);
}

#[test]
fn a_verifier_that_never_passes_stops_at_the_bound() {
    let r = cli::run(
        "verified-report",
        "input.json",
        &["--script", "script-never-passes.yaml"],
    );
    assert_status(&r, "failed", 1);
    // Three drafts (max_rounds: 3), each checked; no fourth.
    assert_eq!((calls_by(&r, "writer"), calls_by(&r, "checker")), (3, 3));
    assert_eq!(r.failed(), ["report"]);
    assert_eq!(
        r.report["failed_steps"][0]["error"],
        "verifier `checker` did not pass the draft: 3 draft(s) made, the bound (max_rounds 3); its last reasons: The draft says +25%; S1 says 18%."
    );
    assert_eq!(r.outputs()["report"], Value::Null);
    assert_eq!(r.outputs()["report_review"]["outcome"], "rejected");
    assert_eq!(r.outputs()["report_verdicts"].as_array().unwrap().len(), 3);
}

#[test]
fn drafts_that_stop_changing_end_the_loop_early() {
    let r = cli::run(
        "verified-report",
        "input.json",
        &["--script", "script-stuck.yaml"],
    );
    assert_status(&r, "failed", 1);
    // Two identical drafts: converged at round 2, not run to the bound of 3.
    assert_eq!((calls_by(&r, "writer"), calls_by(&r, "checker")), (2, 2));
    let error = r.report["failed_steps"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "verifier `checker` did not pass the draft: drafts 1 and 2 are 1.000 alike (converge 0.98)"
        ),
        "{error}"
    );
    assert_eq!(r.outputs()["report_review"]["similarity"], 1.0);
}

#[test]
fn verified_report_graph_shows_the_revision_loop() {
    let g = cli::graph("verified-report", "workflow.yaml");
    for line in [
        "start((start)) --> report_begin",
        "report_producer -.-> report_verifier",
        "report_verifier -.-> report_review",
        "report_review -. \"report_review.outcome == 'revise'\" .-> report_producer",
        "report_review -.-> report",
    ] {
        assert!(g.contains(line), "`{line}` not in:\n{g}");
    }
}
