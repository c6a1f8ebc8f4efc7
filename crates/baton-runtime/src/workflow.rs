//! The compiled workflow: an immutable, validated execution plan.
//!
//! Built only by [`crate::compile`] (from YAML or from [`crate::builder`]); everything the run
//! machine needs is resolved to indices, compiled expressions, templates and schema validators,
//! so running a step never parses or looks anything up by name.

use crate::expr::Expr;
use crate::registry::{ModelEntry, StepFn};
use crate::spec::{Defaults, JoinMode, MergeRule, OnItemError, OnTimeout};
use crate::template::Templates;
use baton_core::{DynTool, Name, ToolDef};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A validated, immutable workflow, ready to run any number of times.
pub struct Workflow {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) file: String,
    pub(crate) source: Option<std::path::PathBuf>,
    pub(crate) keys: Vec<KeyDef>,
    pub(crate) key_index: HashMap<String, usize>,
    pub(crate) steps: Vec<StepDef>,
    pub(crate) step_index: HashMap<String, usize>,
    pub(crate) agents: Vec<AgentDef>,
    pub(crate) entries: Vec<usize>,
    pub(crate) outputs: Vec<usize>,
    pub(crate) templates: Templates,
    pub(crate) defaults: Defaults,
    pub(crate) budget: Option<crate::spec::BudgetSpec>,
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflow")
            .field("name", &self.name)
            .field("steps", &self.steps.len())
            .finish()
    }
}

impl Workflow {
    /// The workflow's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its description.
    pub fn description(&self) -> &str {
        &self.description
    }
    /// The file it was loaded from (`<builder>` when built in code).
    pub fn file(&self) -> &str {
        &self.file
    }
    /// The absolute path of the file it was loaded from (to resume or fork its runs later).
    pub fn source(&self) -> Option<&std::path::Path> {
        self.source.as_deref()
    }
    /// Step ids in declaration order.
    pub fn step_names(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|s| &*s.name)
    }
    /// State keys in declaration order.
    pub fn key_names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| &*k.name)
    }
    /// Compiled agents in declaration order.
    pub fn agents(&self) -> &[AgentDef] {
        &self.agents
    }
    /// Agent names in declaration order.
    pub fn agent_names(&self) -> impl Iterator<Item = &str> {
        self.agents.iter().map(|a| &*a.name)
    }
    /// A step by index.
    pub fn step(&self, idx: usize) -> &StepDef {
        &self.steps[idx]
    }
    /// All steps.
    pub fn steps(&self) -> &[StepDef] {
        &self.steps
    }
    /// Entry steps.
    pub fn entries(&self) -> &[usize] {
        &self.entries
    }
}

/// A declared state key.
#[derive(Debug)]
pub struct KeyDef {
    pub(crate) name: Name,
    pub(crate) rule: MergeRule,
    pub(crate) initial: Value,
    pub(crate) untrusted: bool,
}

/// A tool as an agent may use it: the implementation and its argument validator.
pub struct ToolRef {
    pub(crate) name: String,
    pub(crate) tool: Arc<dyn DynTool>,
    pub(crate) validator: Arc<jsonschema::Validator>,
    pub(crate) timeout: Duration,
    pub(crate) effect: baton_core::SideEffect,
    pub(crate) tier: baton_core::Tier,
    pub(crate) policy: Arc<[PolicyDef]>,
    pub(crate) untrusted: bool,
    pub(crate) breaker: Arc<crate::limits::Breaker>,
}

/// A compiled policy rule.
pub struct PolicyDef {
    pub(crate) when: Expr,
    pub(crate) tier: baton_core::Tier,
    pub(crate) reason: String,
}

/// A compiled agent.
pub struct AgentDef {
    pub(crate) name: Name,
    pub(crate) instructions: String,
    /// The agent's model first, then its fallbacks.
    pub(crate) models: Vec<ModelEntry>,
    pub(crate) tools: Vec<ToolRef>,
    pub(crate) tool_defs: Vec<ToolDef>,
    pub(crate) output_schema: Option<(Value, Arc<jsonschema::Validator>)>,
    pub(crate) max_turns: u32,
    pub(crate) temperature: Option<f32>,
    pub(crate) timeout: Duration,
    pub(crate) budget: Option<crate::spec::BudgetSpec>,
    /// Agents it may delegate to or hand over to, by generated tool name.
    pub(crate) delegates: Vec<Delegate>,
}

/// A generated delegation tool of an agent.
#[derive(Clone, Debug)]
pub struct Delegate {
    /// `delegate_to_<agent>` or `handoff_to_<agent>`.
    pub(crate) tool: String,
    /// The receiving agent.
    pub(crate) agent: usize,
    /// A handoff (the receiver's answer is the step's answer).
    pub(crate) handoff: bool,
}

impl AgentDef {
    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The agents it may delegate to (`false`) or hand over to (`true`), by index.
    pub fn delegates(&self) -> impl Iterator<Item = (usize, bool)> + '_ {
        self.delegates.iter().map(|d| (d.agent, d.handoff))
    }
}

/// What a step (or a map item) does.
pub enum Work {
    /// One agent turn.
    Agent {
        /// Agent index.
        agent: usize,
        /// Template name.
        prompt: String,
    },
    /// A subprocess speaking JSON.
    Code {
        /// Program and arguments.
        command: Arc<[String]>,
        /// Working directory (the workflow file's directory).
        cwd: PathBuf,
    },
    /// A Rust function.
    Function {
        /// Registered name.
        name: String,
        /// The function.
        func: Arc<dyn StepFn>,
    },
}

/// A compiled map step.
pub struct MapDef {
    pub(crate) over: Expr,
    pub(crate) item_name: String,
    pub(crate) body: Work,
    pub(crate) concurrency: u32,
    pub(crate) on_item_error: OnItemError,
}

impl MapDef {
    /// What runs per item.
    pub fn body(&self) -> &Work {
        &self.body
    }
}

/// The kinds of step.
pub enum StepKind {
    /// Agent, code or function work.
    Work(Work),
    /// A sub-workflow.
    Workflow {
        /// The compiled child.
        child: Arc<Workflow>,
        /// Child key and the expression giving its value.
        input: Vec<(String, Expr)>,
    },
    /// A map over a list.
    Map(MapDef),
    /// Routing only (its `next` decides).
    Router,
    /// Wait for a human decision.
    Approval {
        /// Template name of the message.
        message: String,
    },
    /// No work: a pure join or sync point.
    Noop,
}

impl StepKind {
    /// A short name of the kind.
    pub fn label(&self) -> &'static str {
        match self {
            StepKind::Work(Work::Agent { .. }) => "agent",
            StepKind::Work(Work::Code { .. }) => "code",
            StepKind::Work(Work::Function { .. }) => "function",
            StepKind::Workflow { .. } => "workflow",
            StepKind::Map(_) => "map",
            StepKind::Router => "router",
            StepKind::Approval { .. } => "approval",
            StepKind::Noop => "join",
        }
    }
}

/// One branch of a step's `next`.
pub struct Branch {
    pub(crate) when: Option<Expr>,
    pub(crate) to: Vec<usize>,
}

/// How a step waits for its needs.
#[derive(Clone, Debug)]
pub struct JoinDef {
    pub(crate) mode: JoinMode,
    pub(crate) quorum: usize,
    pub(crate) timeout: Option<Duration>,
    pub(crate) on_timeout: OnTimeout,
}

/// What a failure of the step does to the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorPolicy {
    /// The run fails.
    Fail,
    /// The run goes on without this step (and what depends on it); it ends `partial_success`.
    Continue,
    /// The run routes to this step.
    Goto(usize),
}

/// A compiled step.
pub struct StepDef {
    pub(crate) name: Name,
    pub(crate) description: String,
    pub(crate) kind: StepKind,
    pub(crate) needs: Vec<usize>,
    /// (dependent step, index of this step in the dependent's needs)
    pub(crate) dependents: Vec<(usize, usize)>,
    pub(crate) has_incoming: bool,
    pub(crate) next: Vec<Branch>,
    pub(crate) reads: Vec<usize>,
    pub(crate) output: Option<usize>,
    pub(crate) writes: Vec<usize>,
    pub(crate) on_error: ErrorPolicy,
    pub(crate) max_visits: u32,
    pub(crate) timeout: Duration,
    pub(crate) join: JoinDef,
    pub(crate) impact: Option<String>,
    pub(crate) budget: Option<crate::spec::BudgetSpec>,
    pub(crate) retries: u32,
    pub(crate) deadline: Option<Duration>,
    /// The step reads a key marked untrusted.
    pub(crate) reads_untrusted: bool,
}

impl StepDef {
    /// The step id.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The step's kind.
    pub fn kind(&self) -> &StepKind {
        &self.kind
    }
    /// What the step is for.
    pub fn description(&self) -> &str {
        &self.description
    }
    /// Indices of the steps it needs.
    pub fn needs(&self) -> &[usize] {
        &self.needs
    }
    /// Its transitions: condition text (if any) and target indices.
    pub fn transitions(&self) -> impl Iterator<Item = (Option<&str>, &[usize])> {
        self.next
            .iter()
            .map(|b| (b.when.as_ref().map(|e| e.source()), b.to.as_slice()))
    }
    /// Its failure policy.
    pub fn on_error(&self) -> ErrorPolicy {
        self.on_error
    }
}
