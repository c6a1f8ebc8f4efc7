//! Durable runs through the CLI, each command a separate process sharing one SQLite store:
//! approve, edit and reject a suspended run; a suspended run survives everything being
//! restarted; the kill switch halts runs in two other processes.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn baton(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .current_dir(dir)
        .env(
            "BATON_STORE",
            format!("sqlite:{}", dir.join("db.sqlite").display()),
        )
        .args(args)
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

const PAY: &str = r#"
name: pay
models:
  default: {provider: scripted, script: script.yaml}
agents:
  payer: {tools: [transfer]}
tools:
  transfer:
    command: [python3, transfer.py]
    effect: irreversible
    tier: approve
    parameters: {type: object, required: [amount], properties: {amount: {type: number}}}
state:
  draft: replace
  ok: replace
  paid: replace
steps:
  - {id: draft, run: "echo '\"invoice 42\"'", output: draft}
  - {id: review, needs: draft, reads: [draft], approval: "Pay {{ draft }}?", output: ok}
  - {id: pay, needs: review, agent: payer, prompt: "Pay the invoice", output: paid}
"#;

fn setup(dir: &Path) {
    std::fs::write(dir.join("wf.yaml"), PAY).unwrap();
    std::fs::write(
        dir.join("script.yaml"),
        "agents:\n  payer:\n    - tool_calls: [{name: transfer, args: {amount: 500}}]\n    - text: paid\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("transfer.py"),
        "import json,sys\nd=json.load(sys.stdin)\nopen('ledger.txt','a').write(json.dumps(d['args'])+'\\n')\nprint(json.dumps({'ok': True}))\n",
    )
    .unwrap();
}

#[test]
fn approve_edit_and_reject_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    // Process 1: the run suspends at the approval step.
    let out = baton(d, &["run", "wf.yaml", "--json"]);
    assert_eq!(out.status.code(), Some(4));
    let run = json(&out)["run_id"].as_str().unwrap().to_string();
    // Process 2: listing shows it suspended; `show` names what it waits for.
    let list = json(&baton(d, &["runs", "--json", "--status", "suspended"]));
    assert!(list.as_array().unwrap().iter().any(|r| r["id"] == run));
    let show = json(&baton(d, &["show", &run, "--json"]));
    assert_eq!(show["pending_approvals"][0]["step"], "review");
    // Process 3: approve the step; the run goes on and suspends again at the approve-tier tool.
    let out = baton(d, &["approve", &run, "--by", "ann", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !d.join("ledger.txt").exists(),
        "nothing paid before the tool's approval"
    );
    // Process 4: approve the tool call with edited arguments: exactly those run.
    let out = baton(
        d,
        &["approve", &run, "--edit", r#"{"amount": 450}"#, "--json"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["outputs"]["ok"]["by"], "ann");
    let ledger = std::fs::read_to_string(d.join("ledger.txt")).unwrap();
    assert_eq!(ledger.trim(), r#"{"amount": 450}"#);
    // `draft` ran once although the run crossed four processes.
    let events = String::from_utf8_lossy(&baton(d, &["events", &run, "--json"]).stdout).to_string();
    let drafts = events
        .lines()
        .filter(|l| l.contains("\"step_started\"") && l.contains("\"draft\""))
        .count();
    assert_eq!(drafts, 1);

    // A second run, rejected: the step fails with the reason.
    let out = baton(d, &["run", "wf.yaml", "--json"]);
    let run2 = json(&out)["run_id"].as_str().unwrap().to_string();
    let out = baton(
        d,
        &["reject", &run2, "--reason", "duplicate invoice", "--json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let report = json(&out);
    assert!(
        report["failed_steps"][0]["error"]
            .as_str()
            .unwrap()
            .contains("duplicate invoice")
    );
    // Deciding again is refused with a clear message and exit 2.
    let again = baton(d, &["approve", &run2]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no pending approval"));
}

#[test]
fn the_kill_switch_halts_runs_in_two_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("slow.yaml"),
        "name: slow\nstate: {n: sum}\nsteps:\n  - {id: a, run: \"sleep 0.6; echo 1\", output: n}\n  - {id: b, needs: a, run: \"sleep 0.6; echo 1\", output: n}\n  - {id: c, needs: b, run: \"sleep 0.6; echo 1\", output: n}\n",
    )
    .unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .current_dir(d)
            .env(
                "BATON_STORE",
                format!("sqlite:{}", d.join("db.sqlite").display()),
            )
            .args(["run", "slow.yaml", "--json", "-q"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (p1, p2) = (spawn(), spawn());
    std::thread::sleep(Duration::from_millis(800));
    let t0 = Instant::now();
    let out = baton(d, &["kill", "--all", "--reason", "drill"]);
    assert!(out.status.success());
    for p in [p1, p2] {
        let out = p.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(5),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = json(&out);
        assert_eq!(report["status"], "halted");
        assert!(report["reason"].as_str().unwrap().contains("drill"));
        // Stopped at the next boundary, not after the whole run.
        assert!(report["completed_steps"].as_array().unwrap().len() < 3);
    }
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    // Both are halted in the store and can be resumed to completion.
    let halted = json(&baton(d, &["runs", "--json", "--status", "halted"]));
    let ids: Vec<String> = halted
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    let out = baton(d, &["resume", &ids[0], "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["outputs"]["n"], 3);
}
