//! The consensus-family patterns run end to end through the `baton` binary, each on its
//! example: the consensus vote (`examples/medical-triage`: majority accepted, the dissenter
//! re-asked exactly once, a held-out dissenter rejected, a tie, no quorum), the weighted
//! synthesis (`examples/compliance-risk`: the number, computed here by hand), best-of-n
//! (`examples/marketing-message`: every candidate called, the judge's winner is the output,
//! the losers kept) and the swarm (`examples/topic-monitors`: 100 item calls, never more than
//! 8 in flight, the reducer over the gathered results).

#![allow(clippy::unwrap_used)]

#[path = "support/cli.rs"]
mod cli;

use cli::{Run, assert_status, graph, run, run_file};
use serde_json::Value;
use std::collections::BTreeMap;

/// Model calls per agent, from the `model_called` events.
fn calls_per_agent(r: &Run) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in r.events_of("model_called") {
        *out.entry(e["agent"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    out
}

/// The steps of the `model_called` events of one agent, in order.
fn steps_calling(r: &Run, agent: &str) -> Vec<String> {
    r.events_of("model_called")
        .iter()
        .filter(|e| e["agent"] == agent)
        .map(|e| e["step"].as_str().unwrap().to_string())
        .collect()
}

/// The steps that started, in order (map items included once per item).
fn started(r: &Run) -> Vec<String> {
    r.events_of("step_started")
        .iter()
        .map(|e| e["step"].as_str().unwrap().to_string())
        .collect()
}

/// The last user message of the first `step_started` of `step`.
fn prompt_of(r: &Run, step: &str) -> String {
    let e = r
        .events_of("step_started")
        .into_iter()
        .find(|e| e["step"] == step)
        .unwrap_or_else(|| panic!("`{step}` did not start"));
    e["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap()
        .to_string()
}

fn pos(list: &[String], step: &str) -> usize {
    list.iter()
        .position(|s| s == step)
        .unwrap_or_else(|| panic!("`{step}` not in {list:?}"))
}

const VOTERS: [&str; 4] = [
    "emergency_physician",
    "general_practitioner",
    "triage_nurse",
    "cardiologist",
];

// ---------------------------------------------------------------- consensus vote

#[test]
fn vote_accepts_the_majority_and_re_asks_the_dissenter_exactly_once() {
    let r = run("medical-triage", "input.json", &[]);
    assert_status(&r, "succeeded", 0);
    let out = r.outputs();
    assert_eq!(out["triage"]["triage_level"], "urgent");

    // Round 1 was 3-1; the nurse corrected herself in round 2.
    let tally = &out["triage_tally"];
    assert_eq!(tally["round"], 2);
    assert_eq!(tally["status"], "accepted");
    assert_eq!(tally["first_votes"]["triage_nurse"], "routine");
    assert_eq!(tally["changed"], serde_json::json!(["triage_nurse"]));
    assert_eq!(tally["counts"][0]["votes"], 4);

    // Every voter was asked once; the dissenter, and only she, once more.
    let calls = calls_per_agent(&r);
    for v in [
        "emergency_physician",
        "general_practitioner",
        "cardiologist",
    ] {
        assert_eq!(calls[v], 1, "{v}: {calls:?}");
    }
    assert_eq!(calls["triage_nurse"], 2, "{calls:?}");
    assert_eq!(calls["care_coordinator"], 1);
    assert!(!calls.contains_key("senior_physician"), "{calls:?}");
    assert_eq!(
        steps_calling(&r, "triage_nurse"),
        ["triage.vote_triage_nurse", "triage.revote_triage_nurse"]
    );
    let starts = started(&r);
    let revotes: Vec<&String> = starts.iter().filter(|s| s.contains(".revote_")).collect();
    assert_eq!(revotes, ["triage.revote_triage_nurse"]);

    // The re-ask carries her first answer and the majority's answer with its reasons.
    let p = prompt_of(&r, "triage.revote_triage_nurse");
    assert!(p.contains("Triage this patient."), "{p}");
    assert!(
        p.contains("Your first answer: {\"triage_level\": \"routine\""),
        "{p}"
    );
    assert!(p.contains("answered `triage_level` = \"urgent\""), "{p}");
    assert!(
        p.contains("possible pneumonia with early hypoxia") && p.contains("sepsis screen needed"),
        "the majority's reasons: {p}"
    );

    // Order: all votes, tally, re-ask, second tally, decision, then the next step.
    let done = r.completed();
    for v in VOTERS {
        assert!(pos(&done, &format!("triage.vote_{v}")) < pos(&done, "triage.tally"));
    }
    assert!(pos(&done, "triage.tally") < pos(&done, "triage.revote_triage_nurse"));
    assert!(pos(&done, "triage.revote_triage_nurse") < pos(&done, "triage.retally"));
    assert!(pos(&done, "triage.retally") < pos(&done, "triage"));
    assert!(pos(&done, "triage") < pos(&done, "instructions"));
    // The four first votes ran in parallel (one scheduling round).
    let rounds: Vec<u64> = r
        .events_of("step_started")
        .iter()
        .filter(|e| e["step"].as_str().unwrap().starts_with("triage.vote_"))
        .map(|e| e["round"].as_u64().unwrap())
        .collect();
    assert_eq!(rounds.len(), 4);
    assert!(rounds.iter().all(|&x| x == rounds[0]), "{rounds:?}");
}

#[test]
fn vote_rejects_a_dissenter_who_holds_out_and_asks_her_only_once() {
    let r = run(
        "medical-triage",
        "input.json",
        &["--script", "script-holdout.yaml"],
    );
    assert_status(&r, "succeeded", 0);
    let tally = &r.outputs()["triage_tally"];
    assert_eq!(tally["status"], "accepted");
    assert_eq!(tally["value"], "urgent");
    assert_eq!(tally["counts"][0]["votes"], 3);
    assert_eq!(tally["dissenters"], serde_json::json!(["triage_nurse"]));
    assert_eq!(tally["changed"], serde_json::json!([]));
    assert_eq!(r.outputs()["triage"]["triage_level"], "urgent");
    assert_eq!(
        r.outputs()["triage_vote_triage_nurse"]["triage_level"],
        "routine"
    );
    // Sent back once, not a third time.
    assert_eq!(calls_per_agent(&r)["triage_nurse"], 2);
}

#[test]
fn vote_tie_routes_to_on_tie_without_re_asking_anyone() {
    let r = run(
        "medical-triage",
        "input.json",
        &["--script", "script-tie.yaml"],
    );
    assert_status(&r, "succeeded", 0);
    let tally = &r.outputs()["triage_tally"];
    assert_eq!(tally["round"], 1);
    assert_eq!(tally["status"], "tie");
    assert_eq!(tally["tied"], serde_json::json!(["urgent", "routine"]));
    let calls = calls_per_agent(&r);
    for v in VOTERS {
        assert_eq!(calls[v], 1, "{v} asked once only: {calls:?}");
    }
    assert_eq!(calls["senior_physician"], 1);
    let done = r.completed();
    assert!(
        !done
            .iter()
            .any(|s| s.contains(".revote_") || s == "triage.retally")
    );
    // The vote's decision step does not run: the tie branch replaces it.
    assert!(!done.contains(&"triage".to_string()), "{done:?}");
    assert!(pos(&done, "triage.tally") < pos(&done, "senior_review"));
    assert!(pos(&done, "senior_review") < pos(&done, "instructions"));
    assert_eq!(r.outputs()["triage"]["triage_level"], "urgent");
    // The senior physician saw both sides.
    let p = prompt_of(&r, "senior_review");
    assert!(
        p.contains("- urgent: emergency_physician, cardiologist")
            && p.contains("- routine: general_practitioner, triage_nurse"),
        "{p}"
    );
}

#[test]
fn vote_without_quorum_fails_naming_the_votes_and_on_error_takes_over() {
    let r = run(
        "medical-triage",
        "input.json",
        &["--script", "script-no-quorum.yaml"],
    );
    // `on_error: nurse_override` is an approval: the run waits for the nurse.
    assert_status(&r, "suspended", 4);
    let failed = r.report["failed_steps"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["step"], "triage");
    assert_eq!(failed[0]["policy"], "nurse_override");
    assert_eq!(
        failed[0]["error"],
        "no quorum on `triage_level`: 3 agreeing vote(s) needed, the most agreed answer `urgent` has 2 \
         (votes: emergency_physician: urgent, general_practitioner: routine, triage_nurse: emergency, cardiologist: urgent)"
    );
    // Both dissenters were re-asked once; the majority was not.
    let calls = calls_per_agent(&r);
    assert_eq!(calls["general_practitioner"], 2);
    assert_eq!(calls["triage_nurse"], 2);
    assert_eq!(calls["emergency_physician"], 1);
    assert_eq!(calls["cardiologist"], 1);
    assert!(!calls.contains_key("care_coordinator"));
    let tally = &r.outputs()["triage_tally"];
    assert_eq!(
        (tally["round"].as_u64(), tally["status"].as_str()),
        (Some(2), Some("no_quorum"))
    );
    assert!(
        r.report["reason"]
            .as_str()
            .unwrap()
            .contains("nurse_override")
    );
}

#[test]
fn vote_graph_shows_the_generated_steps() {
    let g = graph("medical-triage", "workflow.yaml");
    for part in [
        "triage.vote_triage_nurse",
        "triage.tally<br/><small>fn vote_tally</small>",
        "triage.check_triage_nurse",
        "triage.revote_triage_nurse",
        "triage.voted_triage_nurse",
        "triage.retally",
        "triage<br/><small>fn vote_decision</small>",
        "'triage_nurse' in triage_tally.dissenters",
        "triage_tally -. \"triage_tally.status == 'tie'\" .-> senior_review",
    ] {
        assert!(g.contains(part), "missing {part:?} in:\n{g}");
    }
}

// ---------------------------------------------------------------- weighted synthesis

/// Seed 001 by hand: (score, confidence, authority) per finding.
fn by_hand(findings: &[(f64, f64, f64)]) -> (f64, f64, f64) {
    let w: f64 = findings.iter().map(|(_, c, a)| c * a).sum();
    let score = findings.iter().map(|(s, c, a)| s * c * a).sum::<f64>() / w;
    let authority: f64 = findings.iter().map(|(_, _, a)| a).sum();
    let dissent = (findings
        .iter()
        .map(|(s, c, a)| c * a * (s - score).powi(2))
        .sum::<f64>()
        / w)
        .sqrt();
    (score, w / authority, dissent)
}

fn close(got: &Value, want: f64) {
    let g = got
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {got}"));
    assert!((g - want).abs() < 1e-4, "got {g}, want {want}");
}

#[test]
fn synthesis_weights_findings_by_confidence_times_authority() {
    let r = run("compliance-risk", "input.json", &[]);
    assert_status(&r, "succeeded", 0);
    let risk = &r.outputs()["risk"];
    // regulatory 72 @ 0.9 x 1.0, policy 55 @ 0.8 x 0.8, general 30 @ 0.6 x 0.6
    let (score, confidence, dissent) =
        by_hand(&[(72.0, 0.9, 1.0), (55.0, 0.8, 0.8), (30.0, 0.6, 0.6)]);
    assert!((score - 110.8 / 1.9).abs() < 1e-9);
    close(&risk["score"], score);
    close(&risk["score"], 58.3158);
    close(&risk["confidence"], confidence);
    close(&risk["dissent"], dissent);
    close(&risk["coverage"], 1.0);
    close(&risk["spread"], 42.0);
    close(&risk["findings"][0]["share"], 0.9 / 1.9);
    assert_eq!(risk["findings"][2]["name"], "general");
    close(&risk["findings"][2]["authority"], 0.6);
    // The weighting decides: a plain average (52.33) would have cleared the payment.
    let plain: f64 = risk["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["score"].as_f64().unwrap())
        .sum::<f64>()
        / 3.0;
    assert!(
        plain < 55.0 && risk["score"].as_f64().unwrap() >= 55.0,
        "{plain}"
    );
    let done = r.completed();
    assert!(done.contains(&"escalate".to_string()) && !done.contains(&"clear".to_string()));
    for f in ["regulatory", "policy", "general"] {
        assert!(pos(&done, f) < pos(&done, "risk"));
    }
    // A function step: no model call of its own.
    assert!(
        !r.events_of("model_called")
            .iter()
            .any(|e| e["step"] == "risk"),
        "the synthesis calls no model"
    );
}

#[test]
fn synthesis_low_risk_clears() {
    let r = run(
        "compliance-risk",
        "input.json",
        &["--script", "script-low-risk.yaml"],
    );
    assert_status(&r, "succeeded", 0);
    let (score, confidence, _) = by_hand(&[(20.0, 0.95, 1.0), (35.0, 0.9, 0.8), (40.0, 0.7, 0.6)]);
    close(&r.outputs()["risk"]["score"], score);
    close(&r.outputs()["risk"]["score"], 29.1866);
    close(&r.outputs()["risk"]["confidence"], confidence);
    assert!(r.completed().contains(&"clear".to_string()));
}

// ---------------------------------------------------------------- best-of-n

#[test]
fn best_of_calls_every_candidate_and_outputs_the_judges_winner() {
    let r = run("marketing-message", "input.json", &[]);
    assert_status(&r, "succeeded", 0);
    let calls = r.events_of("model_called");
    let agents: Vec<&str> = calls.iter().map(|e| e["agent"].as_str().unwrap()).collect();
    for a in ["data_writer", "emotion_writer", "benefit_writer"] {
        assert_eq!(agents.iter().filter(|x| **x == a).count(), 1, "{agents:?}");
        // Every candidate is called before the judge.
        let at = agents.iter().position(|x| *x == a).unwrap();
        assert!(at < agents.iter().position(|x| *x == "judge").unwrap());
    }
    assert_eq!(agents.len(), 5, "3 candidates, the judge, the social post");
    // The candidates started together.
    let rounds: Vec<u64> = r
        .events_of("step_started")
        .iter()
        .filter(|e| e["step"].as_str().unwrap().ends_with("_writer"))
        .map(|e| e["round"].as_u64().unwrap())
        .collect();
    assert_eq!(rounds.len(), 3);
    assert!(rounds.iter().all(|&x| x == rounds[0]));

    let out = r.outputs();
    assert_eq!(out["message_verdict"]["winner"], "benefit_writer");
    assert_eq!(out["message"], out["message_cand_benefit_writer"]);
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .starts_with("Get 6 hours back")
    );
    // The losers are kept, in the state and in the model calls.
    for loser in ["data_writer", "emotion_writer"] {
        let text = out[format!("message_cand_{loser}").as_str()]
            .as_str()
            .unwrap();
        assert_ne!(text, out["message"].as_str().unwrap());
        assert!(
            calls
                .iter()
                .any(|e| e["agent"] == loser && e["output"]["content"].as_str() == Some(text))
        );
    }
    // The judge saw every candidate by id.
    let p = prompt_of(&r, "message.judge");
    for c in ["data_writer", "emotion_writer", "benefit_writer"] {
        assert!(p.contains(&format!("### Candidate `{c}`")), "{p}");
    }
    assert!(p.contains("Sunday nights with spreadsheets"), "{p}");
    // The winner fed the next step.
    assert!(prompt_of(&r, "social_post").contains("Get 6 hours back"));
}

#[test]
fn best_of_fails_when_the_judge_picks_no_candidate() {
    let r = run(
        "marketing-message",
        "input.json",
        &["--script", "script-bad-judge.yaml"],
    );
    assert_status(&r, "failed", 1);
    assert_eq!(r.failed(), ["message"]);
    assert_eq!(
        r.report["failed_steps"][0]["error"],
        "the judge picked `storyteller`, which is not a candidate (data_writer, emotion_writer, benefit_writer)"
    );
    assert!(!r.completed().contains(&"social_post".to_string()));
}

#[test]
fn best_of_one_agent_with_prompt_variants() {
    let r = run_file(
        "marketing-message",
        "workflow-variants.yaml",
        "input.json",
        &[],
    );
    assert_status(&r, "succeeded", 0);
    assert_eq!(
        steps_calling(&r, "copywriter").len(),
        3,
        "one call per variant"
    );
    assert_eq!(
        r.outputs()["message"],
        "Ledgerly gives you your Sunday evenings back."
    );
    assert_eq!(
        r.outputs()["message_cand_data"],
        "Ledgerly reconciles 94% of your bank transactions automatically."
    );
}

// ---------------------------------------------------------------- swarm

/// The largest number of map items of `step` in flight at once, from the event order.
fn max_in_flight(r: &Run, step: &str) -> usize {
    let mut live = std::collections::HashSet::new();
    let mut max = 0;
    for e in r.events() {
        match e["type"].as_str().unwrap() {
            "step_started" if e["step"] == step && e.get("item").is_some() => {
                live.insert(e["task"].as_u64().unwrap());
                max = max.max(live.len());
            }
            "step_completed" | "step_failed" => {
                if let Some(t) = e["task"].as_u64() {
                    live.remove(&t);
                }
            }
            _ => {}
        }
    }
    max
}

#[test]
fn swarm_runs_100_monitors_8_at_a_time_then_the_reducer() {
    let r = run("topic-monitors", "input.json", &[]);
    assert_status(&r, "succeeded", 0);
    let calls = r.events_of("model_called");
    let monitor: Vec<&Value> = calls.iter().filter(|e| e["agent"] == "monitor").collect();
    assert_eq!(monitor.len(), 100);
    assert!(monitor.iter().all(|e| e["step"] == "trends.map"));
    let items: std::collections::BTreeSet<u64> = r
        .events_of("step_started")
        .iter()
        .filter(|e| e["step"] == "trends.map")
        .filter_map(|e| e["item"].as_u64())
        .collect();
    assert_eq!(items, (0..100).collect());
    // The concurrency limit held, and was used.
    assert_eq!(max_in_flight(&r, "trends.map"), 8);

    // Results are gathered in topic order.
    let topics = serde_json::from_str::<Value>(
        &std::fs::read_to_string(cli::example_dir("topic-monitors").join("input.json")).unwrap(),
    )
    .unwrap()["topics"]
        .clone();
    let results = r.outputs()["trends_results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 100);
    for (res, topic) in results.iter().zip(topics.as_array().unwrap()) {
        assert_eq!(&res["topic"], topic);
    }

    // The reducer ran once, after every item, on the gathered results.
    let reducer: Vec<&Value> = calls
        .iter()
        .filter(|e| e["agent"] == "trend_analyst")
        .collect();
    assert_eq!(reducer.len(), 1);
    let events = r.events();
    let last_item = events
        .iter()
        .rposition(|e| {
            e["type"] == "step_completed" && e["step"] == "trends.map" && e.get("output").is_some()
        })
        .unwrap();
    let reduce_start = events
        .iter()
        .position(|e| e["type"] == "step_started" && e["step"] == "trends")
        .unwrap();
    assert!(last_item < reduce_start);
    let p = prompt_of(&r, "trends");
    assert!(p.starts_with("100 monitors reported."), "{p}");
    assert!(p.contains("- ai-regulation: 940 mentions, mixed"), "{p}");
    assert!(p.contains("- media-layoffs: 45 mentions"), "{p}");
    assert!(!p.contains("ai-funding"), "flat topics are left out: {p}");
    let trends = &r.outputs()["trends"];
    assert_eq!(trends["rising"][0], "ai-regulation");
    assert_eq!(trends["rising"].as_array().unwrap().len(), 5);
    assert_eq!(r.completed(), ["trends.map", "trends"]);
}

#[test]
fn swarm_skips_failed_items_and_still_reduces() {
    let r = run(
        "topic-monitors",
        "input.json",
        &["--script", "script-outage.yaml"],
    );
    assert_status(&r, "partial_success", 3);
    let failed = r.report["failed_steps"].as_array().unwrap();
    assert_eq!(failed.len(), 3);
    assert!(
        failed
            .iter()
            .all(|f| f["step"] == "trends.map" && f["policy"] == "skip")
    );
    let results = r.outputs()["trends_results"].as_array().unwrap();
    assert_eq!(results.iter().filter(|v| v.is_null()).count(), 3);
    assert!(results[15].is_null(), "cloud-outages is item 15");
    assert!(max_in_flight(&r, "trends.map") <= 8);
    assert!(r.completed().contains(&"trends".to_string()));
    assert_eq!(r.outputs()["trends"]["rising"][0], "ai-regulation");
}
