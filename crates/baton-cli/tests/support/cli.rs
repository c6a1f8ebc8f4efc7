//! Running examples through the `baton` binary and reading what they did: the JSON report and,
//! from a store of the test's own, the run's events. Shared by the pattern tests
//! (`#[path = "support/cli.rs"] mod cli;`).

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `examples/<name>` in the source tree.
pub fn example_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// One finished `baton run --json`, with the store it ran on (to read its events).
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// The JSON report.
    pub report: Value,
    /// Standard error.
    pub stderr: String,
    store: tempfile::TempDir,
}

impl Run {
    /// `status` of the report.
    pub fn status(&self) -> &str {
        self.report["status"].as_str().unwrap_or("")
    }

    /// `outputs` of the report.
    pub fn outputs(&self) -> &Value {
        &self.report["outputs"]
    }

    /// `completed_steps`, in order of first completion.
    pub fn completed(&self) -> Vec<String> {
        strings(&self.report["completed_steps"])
    }

    /// Failed step ids, in order.
    pub fn failed(&self) -> Vec<String> {
        self.report["failed_steps"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| f["step"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A `usage` counter.
    pub fn usage(&self, field: &str) -> u64 {
        self.report["usage"][field].as_u64().unwrap_or(0)
    }

    /// Every event of the run (`baton events RUN --json`), in order.
    pub fn events(&self) -> Vec<Value> {
        let run_id = self.report["run_id"].as_str().unwrap_or("");
        let out = Command::new(env!("CARGO_BIN_EXE_baton"))
            .arg("--store")
            .arg(self.store_url())
            .args(["events", run_id, "--json"])
            .output()
            .expect("baton events runs");
        assert!(
            out.status.success(),
            "baton events failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("an event is one JSON object per line"))
            .collect()
    }

    /// The events of one type (`"model_called"`, `"step_started"`, ...: the `type` field).
    pub fn events_of(&self, kind: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["type"] == kind)
            .collect()
    }

    /// The store URL this run used.
    pub fn store_url(&self) -> String {
        format!("sqlite:{}", self.store.path().join("baton.db").display())
    }
}

/// The strings of a JSON list.
pub fn strings(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `baton run examples/<example>/workflow.yaml --input @<input> --json [extra...]`, on a fresh
/// SQLite store of its own. `input` and any `--script`/`--models` file in `extra` are relative
/// to the example's directory when they name a file there.
pub fn run(example: &str, input: &str, extra: &[&str]) -> Run {
    run_file(example, "workflow.yaml", input, extra)
}

/// Like [`run`] for another workflow file of the example.
pub fn run_file(example: &str, workflow: &str, input: &str, extra: &[&str]) -> Run {
    let dir = example_dir(example);
    let store = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
    cmd.arg("--store")
        .arg(format!(
            "sqlite:{}",
            store.path().join("baton.db").display()
        ))
        .arg("run")
        .arg(dir.join(workflow))
        .arg("--input")
        .arg(format!("@{}", dir.join(input).display()))
        .arg("--json");
    for a in extra {
        let p = dir.join(a);
        if p.is_file() {
            cmd.arg(p);
        } else {
            cmd.arg(a);
        }
    }
    let out = cmd.output().expect("baton runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stdout: {stdout}\nstderr: {stderr}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        report,
        stderr,
        store,
    }
}

/// Assert status and exit code, printing the report when they differ.
pub fn assert_status(r: &Run, status: &str, code: i32) {
    assert_eq!(
        (r.status(), r.code),
        (status, code),
        "report: {:#}\nstderr: {}",
        r.report,
        r.stderr
    );
}

/// `baton graph <example>/<workflow>`: the Mermaid picture.
pub fn graph(example: &str, workflow: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("graph")
        .arg(example_dir(example).join(workflow))
        .output()
        .expect("baton graph runs");
    assert!(
        out.status.success(),
        "baton graph failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
