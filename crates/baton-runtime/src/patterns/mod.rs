//! Multi-agent patterns as expansions into the one graph (ADR 0001).
//!
//! A step may carry one pattern block (`debate:`, `vote:`, `best_of:`, ...). Before a workflow
//! is compiled, [`expand`] replaces each such step with ordinary steps (agent steps, routers,
//! maps, joins and generated function steps) whose ids are `<step>.<part>`, and declares the
//! state keys they need. Validation, scheduling, events, budgets, replay and `baton graph` then
//! treat them like any other step. Every generated step carries the position of the block the
//! user wrote, so errors still point at the YAML.
//!
//! Each pattern lives in its own module with an `expand_step` function taking the step and the
//! workflow being built ([`Expansion`]).

use crate::spec::{KeySpec, Loc, MergeRule, Pos, StepSpec, WorkflowSpec};

pub mod best_of;
mod common;
pub mod debate;
pub mod refine;
pub mod reflect;
pub mod swarm;
pub mod synthesize;
pub mod vote;

/// A problem found while expanding a pattern block.
#[derive(Clone, Debug, PartialEq)]
pub struct PatternError {
    /// Where.
    pub pos: Option<Pos>,
    /// The step carrying the block.
    pub step: String,
    /// What is wrong.
    pub message: String,
}

/// The workflow being expanded: patterns append steps and declare keys here.
#[derive(Debug)]
pub struct Expansion<'a> {
    /// The original workflow (to look agents and keys up).
    pub spec: &'a WorkflowSpec,
    /// Steps generated so far (in order; replaces the pattern step in place).
    pub steps: Vec<StepSpec>,
    /// State keys to add.
    pub keys: Vec<(Loc<String>, KeySpec)>,
    /// Problems.
    pub errors: Vec<PatternError>,
}

impl Expansion<'_> {
    /// Record a problem with the pattern block of `step`.
    pub fn err(&mut self, pos: Option<Pos>, step: &str, message: impl Into<String>) {
        self.errors.push(PatternError {
            pos,
            step: step.to_string(),
            message: message.into(),
        });
    }

    /// Declare a state key the pattern needs (once; a key the user declared wins).
    pub fn key(&mut self, name: &str, merge: MergeRule, description: &str, pos: Option<Pos>) {
        let declared = self.spec.state.0.iter().any(|(k, _)| k.value == name)
            || self.keys.iter().any(|(k, _)| k.value == name);
        if !declared {
            self.keys.push((
                Loc {
                    value: name.to_string(),
                    pos,
                },
                KeySpec {
                    merge,
                    default: None,
                    description: description.to_string(),
                    untrusted: false,
                },
            ));
        }
    }

    /// Whether the workflow declares an agent of this name.
    pub fn has_agent(&self, name: &str) -> bool {
        self.spec.agents.0.iter().any(|(n, _)| n.value == name)
    }
}

/// The pattern blocks a step carries: (block name, its position).
fn blocks(s: &StepSpec) -> Vec<(&'static str, Option<Pos>)> {
    let mut v = Vec::new();
    if let Some(b) = &s.debate {
        v.push(("debate", b.pos));
    }
    if let Some(b) = &s.reflect {
        v.push(("reflect", b.pos));
    }
    if let Some(b) = &s.refine {
        v.push(("refine", b.pos));
    }
    if let Some(b) = &s.vote {
        v.push(("vote", b.pos));
    }
    if let Some(b) = &s.synthesize {
        v.push(("synthesize", b.pos));
    }
    if let Some(b) = &s.best_of {
        v.push(("best_of", b.pos));
    }
    if let Some(b) = &s.swarm {
        v.push(("swarm", b.pos));
    }
    v
}

/// Whether a step carries a pattern block.
fn has_pattern(s: &StepSpec) -> bool {
    s.debate.is_some()
        || s.reflect.is_some()
        || s.refine.is_some()
        || s.vote.is_some()
        || s.synthesize.is_some()
        || s.best_of.is_some()
        || s.swarm.is_some()
}

/// Expand every pattern block. `None` when the workflow uses none (nothing to copy).
pub fn expand(spec: &WorkflowSpec) -> Option<(WorkflowSpec, Vec<PatternError>)> {
    if !spec.steps.iter().any(has_pattern) {
        return None;
    }
    let mut x = Expansion {
        spec,
        steps: Vec::with_capacity(spec.steps.len() * 2),
        keys: Vec::new(),
        errors: Vec::new(),
    };
    for s in &spec.steps {
        if !has_pattern(s) {
            x.steps.push(s.clone());
            continue;
        }
        let found = blocks(s);
        if found.len() > 1 {
            let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
            x.err(
                found[1].1.or(s.id.pos),
                &s.id.value,
                format!(
                    "a step carries one pattern block, this one has {}: split it into one step per pattern",
                    names.join(" and ")
                ),
            );
        }
        if s.debate.is_some() {
            debate::expand_step(s, &mut x);
            continue;
        }
        if s.reflect.is_some() {
            reflect::expand_step(s, &mut x);
            continue;
        }
        if s.refine.is_some() {
            refine::expand_step(s, &mut x);
            continue;
        }
        if s.vote.is_some() {
            vote::expand_step(s, &mut x);
            continue;
        }
        if s.synthesize.is_some() {
            synthesize::expand_step(s, &mut x);
            continue;
        }
        if s.best_of.is_some() {
            best_of::expand_step(s, &mut x);
            continue;
        }
        if s.swarm.is_some() {
            swarm::expand_step(s, &mut x);
            continue;
        }
    }
    let mut out = spec.clone();
    out.steps = x.steps;
    out.state.0.extend(x.keys);
    Some((out, x.errors))
}
