//! The supervisor and handoff examples through the `baton` binary: who delegated to whom, at
//! which depth, concurrently or not, what was refused, what each model cost.

#![allow(clippy::unwrap_used)]

#[path = "support/cli.rs"]
mod cli;

use cli::{assert_status, graph, run};
use serde_json::Value;

fn delegations(events: &[Value]) -> Vec<(String, String, u64)> {
    events
        .iter()
        .filter(|e| e["type"] == "delegated")
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_string(),
                e["to"].as_str().unwrap().to_string(),
                e["depth"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn callers(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "model_called")
        .map(|e| e["agent"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn supervisor_delegates_to_its_roster_and_decides() {
    let r = run("due-diligence-supervisor", "input.json", &[]);
    assert_status(&r, "succeeded", 0);
    assert_eq!(r.completed(), ["review"]);
    let rec = &r.outputs()["recommendation"];
    assert_eq!(rec["decision"], "proceed_with_conditions");
    assert_eq!(rec["score"], 71);

    let events = r.events();
    assert_eq!(
        delegations(&events),
        [
            ("lead_analyst".into(), "financial_analyst".into(), 1),
            ("lead_analyst".into(), "market_analyst".into(), 1),
            ("lead_analyst".into(), "legal_counsel".into(), 1),
            ("legal_counsel".into(), "ip_specialist".into(), 2),
        ]
    );
    // Financial and market were both asked before either answered; legal only after both.
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let delegated: Vec<usize> = (0..types.len())
        .filter(|&i| types[i] == "delegated")
        .collect();
    let returned: Vec<usize> = (0..types.len())
        .filter(|&i| types[i] == "delegation_returned")
        .collect();
    assert!(delegated[1] < returned[0], "parallel: {types:?}");
    assert!(returned[1] < delegated[2], "legal after both: {types:?}");
    // The legal counsel got the financial figures it was handed, nothing else.
    let legal_task = events
        .iter()
        .find(|e| e["type"] == "delegated" && e["to"] == "legal_counsel")
        .unwrap();
    assert_eq!(
        legal_task["message"]["payload"]["context"]["revenue_musd"],
        61
    );
    assert_eq!(legal_task["message"]["kind"], "task");
    // The lead was called three times, each worker once, legal twice (around its own delegation).
    let calls = callers(&events);
    let count = |a: &str| calls.iter().filter(|c| *c == a).count();
    assert_eq!(
        (
            count("lead_analyst"),
            count("financial_analyst"),
            count("market_analyst"),
            count("legal_counsel"),
            count("ip_specialist")
        ),
        (3, 1, 1, 2, 1)
    );

    // Per-node model routing: the lead on the strong model, the workers on the cheap one; the
    // costs follow from the scripted tokens and the two prices.
    let breakdown = r.report["cost_breakdown"].as_array().unwrap();
    let line = |agent: &str| {
        breakdown
            .iter()
            .find(|l| l["agent"] == agent)
            .unwrap_or_else(|| panic!("no line for {agent}: {breakdown:?}"))
    };
    assert_eq!(line("lead_analyst")["model"], "gpt-4.1");
    for w in [
        "financial_analyst",
        "market_analyst",
        "legal_counsel",
        "ip_specialist",
    ] {
        assert_eq!(line(w)["model"], "gpt-4.1-mini", "{w}");
    }
    // lead: 2 calls of 600/120 and one of 1800/200 at $2/$8 per Mtok.
    let lead = (600.0 * 2.0 + 1800.0) * 2.0 / 1e6 + (120.0 * 2.0 + 200.0) * 8.0 / 1e6;
    let lead_cost = line("lead_analyst")["cost_usd"].as_f64().unwrap();
    assert!((lead_cost - lead).abs() < 1e-9, "{lead_cost} vs {lead}");
    // legal: 2 calls of 600/120 at $0.40/$1.60.
    let legal = 1200.0 * 0.40 / 1e6 + 240.0 * 1.60 / 1e6;
    let legal_cost = line("legal_counsel")["cost_usd"].as_f64().unwrap();
    assert!((legal_cost - legal).abs() < 1e-9, "{legal_cost} vs {legal}");
}

#[test]
fn supervisor_loop_is_detected_and_stopped() {
    let r = run(
        "due-diligence-supervisor",
        "input.json",
        &["--script", "script-loop.yaml"],
    );
    assert_status(&r, "succeeded", 0);
    assert_eq!(r.outputs()["recommendation"]["decision"], "walk_away");
    let events = r.events();
    assert_eq!(
        delegations(&events),
        [
            ("lead_analyst".into(), "financial_analyst".into(), 1),
            ("financial_analyst".into(), "market_analyst".into(), 2),
        ]
    );
    let guards: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "loop_guard")
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(guards.len(), 1);
    assert!(
        guards[0].contains(
            "delegation loop: lead_analyst -> financial_analyst -> market_analyst -> financial_analyst"
        ),
        "{guards:?}"
    );
    // The refused call never reached the financial analyst a second time.
    assert_eq!(
        callers(&events),
        [
            "lead_analyst",
            "financial_analyst",
            "market_analyst",
            "market_analyst",
            "financial_analyst",
            "lead_analyst"
        ]
    );
}

#[test]
fn supervisor_graph_shows_the_roster() {
    let g = graph("due-diligence-supervisor", "workflow.yaml");
    for edge in [
        "review ==>|delegates| agent_financial_analyst",
        "review ==>|delegates| agent_legal_counsel",
        "agent_legal_counsel ==>|delegates| agent_ip_specialist",
    ] {
        assert!(g.contains(edge), "{edge} missing from:\n{g}");
    }
}

#[test]
fn handoff_passes_explicit_context_and_the_peer_finishes() {
    let r = run("launch-handoff", "input.json", &[]);
    assert_status(&r, "succeeded", 0);
    assert_eq!(r.outputs()["launch"]["slot"], "2026-11-25 00:01 PST");
    let events = r.events();
    assert_eq!(
        callers(&events),
        [
            "researcher",
            "researcher",
            "calendar_agent",
            "calendar_agent"
        ]
    );
    let handoff = events.iter().find(|e| e["type"] == "delegated").unwrap();
    assert_eq!(handoff["handoff"], true);
    assert_eq!(handoff["message"]["kind"], "handoff");
    // What the calendar agent saw: its instructions, then the handed-over task and context.
    let seen = handoff["messages"].to_string();
    assert!(seen.contains("Tuesday-Thursday 12:01 AM PST"), "{seen}");
    assert!(seen.contains("within_days"), "{seen}");
    assert!(
        !seen.contains("Research the best time"),
        "the user's request was not handed over: {seen}"
    );
    // The calendar agent's own tool ran with the handed-over parameters.
    let tools: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "tool_called")
        .map(|e| e["tool"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["launch_stats", "free_slots"]);
    let ret = events
        .iter()
        .find(|e| e["type"] == "delegation_returned")
        .unwrap();
    assert_eq!(ret["message"]["kind"], "result");
    assert_eq!(ret["message"]["payload"]["slot"], "2026-11-25 00:01 PST");
}
