//! Live progress: a spinner listing the active steps on a terminal, plain lines otherwise.

use baton_core::{Event, EventKind, EventObserver, RunId};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

/// Prints the progress of runs to standard error.
pub struct Progress {
    bar: Option<ProgressBar>,
    active: Mutex<BTreeMap<(RunId, u64), String>>,
}

impl Progress {
    /// A terminal spinner when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Progress {
            bar,
            active: Mutex::new(BTreeMap::new()),
        }
    }

    fn line(&self, text: String) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{text}");
            }
        }
    }

    /// Remove the spinner.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl EventObserver for Progress {
    fn on_event(&self, run: RunId, event: &Event) {
        let mut active = match self.active.lock() {
            Ok(a) => a,
            Err(p) => p.into_inner(),
        };
        let line = match &event.kind {
            EventKind::StepStarted {
                step,
                task,
                item,
                agent,
                ..
            } => {
                let label = match item {
                    Some(i) => format!("{step}[{i}]"),
                    None => step.to_string(),
                };
                active.insert((run, *task), label.clone());
                match agent {
                    Some(a) => Some(format!("▶ {label} ({a})")),
                    None => Some(format!("▶ {label}")),
                }
            }
            EventKind::StepCompleted {
                step,
                task,
                duration_us,
                ..
            } => {
                let label = active
                    .remove(&(run, *task))
                    .unwrap_or_else(|| step.to_string());
                Some(format!("✓ {label} ({:.1} ms)", *duration_us as f64 / 1e3))
            }
            EventKind::StepFailed {
                step,
                task,
                error,
                policy,
            } => {
                if let Some(t) = task {
                    active.remove(&(run, *t));
                }
                Some(format!("✗ {step}: {error} [{policy}]"))
            }
            EventKind::StepSkipped { step, reason } => Some(format!("- {step} skipped: {reason}")),
            EventKind::Transition {
                from,
                to,
                when: Some(w),
            } => {
                let to: Vec<&str> = to.iter().map(|s| &**s).collect();
                Some(format!("→ {from} → {} (when {w})", to.join(", ")))
            }
            EventKind::ToolCalled {
                step, tool, error, ..
            } => Some(match error {
                Some(e) => format!("  {step}: tool {tool} rejected/failed: {e}"),
                None => format!("  {step}: tool {tool}"),
            }),
            EventKind::Retry {
                step,
                attempt,
                delay_ms,
                reason,
                ..
            } => Some(format!(
                "↻ {step}: retry {attempt} in {delay_ms} ms ({reason})"
            )),
            EventKind::ApprovalRequested { step, message, .. } => {
                Some(format!("⏸ {step} waits for approval: {message}"))
            }
            EventKind::ApprovalDecided {
                step, approved, by, ..
            } => Some(format!(
                "{} {step} {} by {by}",
                if *approved { "✓" } else { "✗" },
                if *approved { "approved" } else { "rejected" }
            )),
            EventKind::Delegated {
                step,
                from,
                to,
                handoff,
                depth,
                ..
            } => Some(format!(
                "  {step}: {from} {} {to} (depth {depth})",
                if *handoff {
                    "hands over to"
                } else {
                    "delegates to"
                }
            )),
            EventKind::DelegationReturned {
                step,
                from,
                to,
                message,
                ..
            } => Some(match message["error"].as_str() {
                Some(e) => format!("  {step}: {from} failed {to}'s task: {e}"),
                None => format!("  {step}: {from} answered {to}"),
            }),
            EventKind::LoopGuard { step, reason } => Some(format!("✗ {step}: {reason}")),
            EventKind::RunSuspended { reason } => Some(format!("⏸ run suspended: {reason}")),
            EventKind::RunResumed { .. } => Some("▶ run resumed".to_string()),
            EventKind::RunFinished { status, .. } => Some(format!("■ run {status}")),
            _ => None,
        };
        if let Some(bar) = &self.bar {
            let names: Vec<&str> = active.values().map(String::as_str).collect();
            bar.set_message(if names.is_empty() {
                String::new()
            } else {
                format!("running: {}", names.join(", "))
            });
        }
        drop(active);
        if let Some(l) = line {
            self.line(l);
        }
    }
}
