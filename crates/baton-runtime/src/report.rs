//! The result of a run, as `baton run --json` prints it.

use crate::machine::RunMachine;
use crate::workflow::Workflow;
use baton_core::{RunStatus, Usage};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

/// A step that failed, what the run did about it, and what was lost.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailedStep {
    /// Step id.
    pub step: String,
    /// The error.
    pub error: String,
    /// `fail`, `continue`, `skip` (map item), or the step the failure was routed to.
    pub policy: String,
    /// What the failure costs: the step's declared impact and the steps that did not run.
    pub impact: String,
}

/// A step that did not run because something it needed did not complete.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SkippedStep {
    /// Step id.
    pub step: String,
    /// Why.
    pub reason: String,
}

/// Everything a caller needs to know about a finished run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunReport {
    /// Run id.
    pub run_id: String,
    /// Workflow name.
    pub workflow: String,
    /// Final status.
    pub status: RunStatus,
    /// Why it did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The declared output keys and their values.
    pub outputs: Value,
    /// Steps that completed, in order of first completion.
    pub completed_steps: Vec<String>,
    /// Steps that ran more than once, and how often.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub visits: BTreeMap<String, u32>,
    /// Failures, in order.
    pub failed_steps: Vec<FailedStep>,
    /// Steps skipped because a need did not complete.
    pub skipped_steps: Vec<SkippedStep>,
    /// What the run consumed (sub-workflows included).
    pub usage: Usage,
    /// What each agent consumed on each model, sub-workflows included, sorted by agent then
    /// model.
    pub cost_breakdown: Vec<crate::machine::CostLine>,
    /// For a degraded run: the share of the workflow's steps that completed, a rough measure of
    /// how much of the intended result the outputs reflect (1.0 when nothing was lost).
    pub confidence: f64,
    /// What to do about the failures, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recommendations: Vec<String>,
    /// Wall time of this execution, milliseconds.
    pub duration_ms: f64,
    /// Events in the run's log.
    pub events: u64,
}

impl RunReport {
    /// The process exit code for this run (SPEC §8).
    pub fn exit_code(&self) -> u8 {
        self.status.exit_code()
    }

    /// Build the report from a machine.
    pub fn from_machine(m: &RunMachine, duration_ms: f64) -> Self {
        let wf: &Workflow = m.workflow();
        // Completions by step index: names are built once per step, not once per completion.
        let mut counts = vec![0u32; wf.steps.len()];
        let mut completed = Vec::new();
        for &i in m.completed_indices() {
            if counts[i] == 0 {
                completed.push(wf.steps[i].name.to_string());
            }
            counts[i] += 1;
        }
        let visits: BTreeMap<String, u32> = counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 1)
            .map(|(i, c)| (wf.steps[i].name.to_string(), *c))
            .collect();
        let skipped = m.skipped_steps();
        let skipped_set: HashSet<&str> = skipped.iter().map(|(s, _)| s.as_str()).collect();
        let failed_steps = m
            .failures()
            .iter()
            .map(|f| {
                let mut parts = Vec::new();
                if let Some(i) = wf.step_index.get(&f.step) {
                    if let Some(text) = &wf.steps[*i].impact {
                        parts.push(text.trim().trim_end_matches('.').to_string());
                    }
                    let lost = downstream(wf, *i, &skipped_set);
                    if !lost.is_empty() {
                        parts.push(format!("not run because of it: {}", lost.join(", ")));
                    }
                }
                if parts.is_empty() {
                    parts.push(match f.policy.as_str() {
                        "fail" => "the run failed".to_string(),
                        "continue" | "skip" => "the run continued without this result".to_string(),
                        other => format!("handled by `{other}`"),
                    });
                }
                FailedStep {
                    step: f.step.clone(),
                    error: f.error.clone(),
                    policy: f.policy.clone(),
                    impact: parts.join("; "),
                }
            })
            .collect();
        let lost: HashSet<&str> = m
            .failures()
            .iter()
            .map(|f| f.step.as_str())
            .chain(skipped_set.iter().copied())
            .collect();
        let reached = completed.len() + lost.len();
        let confidence = if lost.is_empty() || reached == 0 {
            1.0
        } else {
            completed.len() as f64 / reached as f64
        };
        let mut recommendations = Vec::new();
        for f in m.failures() {
            let line = if f.error.contains("budget exceeded") {
                format!(
                    "raise the budget that stopped `{}` in the workflow, then `baton resume {}`",
                    f.step,
                    m.run_id()
                )
            } else if f.error.contains("timed out")
                || f.error.contains("HTTP 5")
                || f.error.contains("HTTP 429")
                || f.error.contains("connection")
            {
                format!(
                    "`{}` failed on a transient fault: `baton resume {}` later, or add `retries:` to the step",
                    f.step,
                    m.run_id()
                )
            } else if f.policy == "continue" || f.policy == "skip" {
                format!(
                    "`{}` was lost ({}); review its error, fix the input or the tool, and fork from the checkpoint before it",
                    f.step, f.error
                )
            } else {
                format!(
                    "fix the cause of `{}` ({}), then fork or re-run",
                    f.step, f.error
                )
            };
            if !recommendations.contains(&line) {
                recommendations.push(line);
            }
        }
        RunReport {
            run_id: m.run_id().to_string(),
            workflow: wf.name.clone(),
            status: m.status(),
            reason: m.reason().map(str::to_string),
            outputs: m.outputs(),
            completed_steps: completed,
            visits,
            failed_steps,
            skipped_steps: skipped
                .into_iter()
                .map(|(step, reason)| SkippedStep { step, reason })
                .collect(),
            usage: *m.usage(),
            cost_breakdown: m.cost_breakdown(),
            confidence,
            recommendations,
            duration_ms,
            events: m.seq(),
        }
    }
}

/// Transitive dependents of `s` that were skipped.
fn downstream(wf: &Workflow, s: usize, skipped: &HashSet<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = vec![false; wf.steps.len()];
    let mut stack = vec![s];
    while let Some(i) = stack.pop() {
        for &(d, _) in &wf.steps[i].dependents {
            if !std::mem::replace(&mut seen[d], true) && skipped.contains(&*wf.steps[d].name) {
                out.push(wf.steps[d].name.to_string());
                stack.push(d);
            }
        }
    }
    out
}

/// Map a status to whether the run is considered done for good.
pub fn is_final(status: RunStatus) -> bool {
    matches!(
        status,
        RunStatus::Succeeded | RunStatus::PartialSuccess | RunStatus::Failed
    )
}
