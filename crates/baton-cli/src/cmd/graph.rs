//! `baton graph`: a Mermaid flowchart of a workflow.

use baton_runtime::Workflow;
use baton_runtime::workflow::{ErrorPolicy, StepKind, Work};
use std::fmt::Write;

fn id(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn label(text: &str) -> String {
    text.replace('"', "#quot;")
}

/// Edges from `node` to the agents agent `a` may delegate or hand over to (queued in `stack`).
fn roster(out: &mut String, wf: &Workflow, node: &str, a: usize, stack: &mut Vec<usize>) {
    for (to, handoff) in wf.agents()[a].delegates() {
        let edge = if handoff {
            "==>|hands over|"
        } else {
            "==>|delegates|"
        };
        let _ = writeln!(
            out,
            "    {node} {edge} agent_{}",
            id(wf.agents()[to].name())
        );
        stack.push(to);
    }
}

/// Render the workflow: needs as solid arrows, transitions as dotted ones with their condition.
pub fn mermaid(wf: &Workflow) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "---\ntitle: {}\n---\nflowchart TD", label(wf.name()));
    for s in wf.steps() {
        let kind = match s.kind() {
            StepKind::Work(Work::Agent { agent, .. }) => {
                format!("agent {}", wf.agents()[*agent].name())
            }
            StepKind::Work(Work::Code { .. }) => "code".to_string(),
            StepKind::Work(Work::Function { name, .. }) => format!("fn {name}"),
            StepKind::Workflow { child, .. } => format!("workflow {}", child.name()),
            StepKind::Map(_) => "map".to_string(),
            StepKind::Router => "router".to_string(),
            StepKind::Approval { .. } => "approval".to_string(),
            StepKind::Noop => "join".to_string(),
        };
        let text = label(&format!("{}<br/><small>{kind}</small>", s.name()));
        let shape = match s.kind() {
            StepKind::Router => format!("{{\"{text}\"}}"),
            StepKind::Approval { .. } => format!("[(\"{text}\")]"),
            StepKind::Map(_) => format!("[[\"{text}\"]]"),
            StepKind::Noop => format!("((\"{text}\"))"),
            StepKind::Workflow { .. } => format!("[/\"{text}\"/]"),
            _ => format!("[\"{text}\"]"),
        };
        let _ = writeln!(out, "    {}{shape}", id(s.name()));
    }
    for &e in wf.entries() {
        let _ = writeln!(out, "    start((start)) --> {}", id(wf.step(e).name()));
    }
    for s in wf.steps() {
        for &n in s.needs() {
            let _ = writeln!(out, "    {} --> {}", id(wf.step(n).name()), id(s.name()));
        }
        for (when, to) in s.transitions() {
            for &t in to {
                match when {
                    Some(w) => {
                        let _ = writeln!(
                            out,
                            "    {} -. \"{}\" .-> {}",
                            id(s.name()),
                            label(w),
                            id(wf.step(t).name())
                        );
                    }
                    None => {
                        let _ =
                            writeln!(out, "    {} -.-> {}", id(s.name()), id(wf.step(t).name()));
                    }
                }
            }
        }
        if let ErrorPolicy::Goto(t) = s.on_error() {
            let _ = writeln!(
                out,
                "    {} -. \"on error\" .-> {}",
                id(s.name()),
                id(wf.step(t).name())
            );
        }
    }
    // Supervisors and handoffs: who may delegate to (or hand over to) whom, at run time.
    let mut shown = vec![false; wf.agents().len()];
    let mut stack: Vec<usize> = Vec::new();
    for s in wf.steps() {
        let agent = match s.kind() {
            StepKind::Work(Work::Agent { agent, .. }) => Some(*agent),
            StepKind::Map(m) => match m.body() {
                Work::Agent { agent, .. } => Some(*agent),
                _ => None,
            },
            _ => None,
        };
        let Some(a) = agent else { continue };
        roster(&mut out, wf, &id(s.name()), a, &mut stack);
    }
    while let Some(a) = stack.pop() {
        if std::mem::replace(&mut shown[a], true) {
            continue;
        }
        let name = wf.agents()[a].name();
        let _ = writeln!(out, "    agent_{}{{{{\"{}\"}}}}", id(name), label(name));
        roster(&mut out, wf, &format!("agent_{}", id(name)), a, &mut stack);
    }
    out
}
