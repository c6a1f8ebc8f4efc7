//! Run events: the ordered, immutable log of everything that happened in a run.
//!
//! The log is the source of truth: a run's state, step statuses and usage are the fold of its
//! events (see `baton_runtime::machine`). Events are appended by exactly one writer per run, in
//! `seq` order, and never change afterwards.

use crate::id::RunId;
use crate::message::Message;
use crate::model::{CompletionResponse, ModelError};
use crate::tool::ToolError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// A cheaply clonable name (step, agent, tool, state key).
pub type Name = Arc<str>;

/// One entry of a run's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the run's log, from 0, without gaps.
    pub seq: u64,
    /// Wall-clock time the event was recorded, microseconds since the Unix epoch.
    pub at_us: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// One write to a state key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyUpdate {
    /// The state key.
    pub key: Name,
    /// The value written; the key's merge rule decides how it combines with the current one.
    pub value: Value,
}

/// The status of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Steps are running or ready to run.
    Running,
    /// Waiting durably for a human, a timer or an event.
    Suspended,
    /// Every step that should have run, ran.
    Succeeded,
    /// A step failed and the workflow chose to go on without it (`on_error: continue`, or a
    /// skipped map item); what did not depend on it completed. A failure routed to a handler
    /// step (`on_error: <step>`) is handled, and such a run can still succeed.
    PartialSuccess,
    /// The run failed.
    Failed,
    /// Stopped by a budget or the kill switch; can be resumed.
    Halted,
}

impl RunStatus {
    /// The process exit code for a run that ended in this status (SPEC §8).
    pub fn exit_code(self) -> u8 {
        match self {
            RunStatus::Succeeded => 0,
            RunStatus::Failed => 1,
            RunStatus::PartialSuccess => 3,
            RunStatus::Suspended => 4,
            RunStatus::Halted => 5,
            RunStatus::Running => 1,
        }
    }

    /// Whether the run has ended (it may still be resumed if halted or suspended).
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Running)
    }

    /// The status as written in events and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Suspended => "suspended",
            RunStatus::Succeeded => "succeeded",
            RunStatus::PartialSuccess => "partial_success",
            RunStatus::Failed => "failed",
            RunStatus::Halted => "halted",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Usage {
    /// Add another usage to this one.
    pub fn add(&mut self, other: &Usage) {
        self.model_calls += other.model_calls;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd += other.cost_usd;
        self.tool_calls += other.tool_calls;
        self.steps += other.steps;
        self.cache_hits += other.cache_hits;
        self.cache_misses += other.cache_misses;
    }
}

/// What one agent consumed on one model: a line of a run's cost breakdown.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CostLine {
    /// Agent.
    pub agent: String,
    /// The provider's model name.
    pub model: String,
    /// Successful calls.
    pub model_calls: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// US dollars.
    pub cost_usd: f64,
}

/// Totals of what a run consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Model calls made (successful or not).
    pub model_calls: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Cost in US dollars, from the price table.
    pub cost_usd: f64,
    /// Tool calls requested (including rejected ones).
    pub tool_calls: u64,
    /// Steps started (each visit and map item counts).
    pub steps: u64,
    /// Model calls answered from the response cache.
    #[serde(default)]
    pub cache_hits: u64,
    /// Model calls that looked in the response cache and went to the provider.
    #[serde(default)]
    pub cache_misses: u64,
}

/// What happened. Serialized with a `type` tag in snake case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The run began with this input.
    RunStarted {
        /// Workflow name.
        workflow: String,
        /// The run's input (the initial values of state keys).
        input: Value,
        /// The parent run and step, for a sub-workflow.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<RunId>,
    },
    /// A step (or one item of a map step) began.
    StepStarted {
        /// Step id.
        step: Name,
        /// Task id: the seq of this event; later events of the task refer to it.
        task: u64,
        /// How many times this step has started, this one included.
        visit: u32,
        /// The scheduling round it started in.
        round: u32,
        /// For a map step: the index of the item.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<u32>,
        /// For an agent step: the agent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<Name>,
        /// For an agent step: the rendered prompt and system instructions.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        messages: Vec<Message>,
        /// What the task works on: a map step's items, a map item, a sub-workflow's input.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<Value>,
    },
    /// A step's writes were merged into the state.
    StateUpdated {
        /// The writing step.
        step: Name,
        /// The round the step started in (parallel writes are those of one round).
        round: u32,
        /// The writes, in order.
        updates: Vec<KeyUpdate>,
    },
    /// A task finished successfully.
    StepCompleted {
        /// Step id.
        step: Name,
        /// Task id.
        task: u64,
        /// For a map item: its result (the map step gathers them).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
        /// How long the task took.
        duration_us: u64,
    },
    /// A task failed.
    StepFailed {
        /// Step id.
        step: Name,
        /// Task id, if the step had started.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<u64>,
        /// Why.
        error: String,
        /// Where the run goes because of it: a step id, `continue`, or `fail`.
        policy: String,
    },
    /// A step will not run in this run.
    StepSkipped {
        /// Step id.
        step: Name,
        /// Why.
        reason: String,
    },
    /// A conditional transition fired.
    Transition {
        /// The step whose `next` was evaluated.
        from: Name,
        /// The steps activated.
        to: Vec<Name>,
        /// The condition that matched, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        when: Option<String>,
    },
    /// A model call returned.
    ModelCalled {
        /// Step id.
        step: Name,
        /// Task id.
        task: u64,
        /// Agent.
        agent: Name,
        /// Model name.
        model: String,
        /// Turn within the agent's loop, from 1.
        turn: u32,
        /// Messages added to the conversation since the previous call of this task.
        input: Vec<Message>,
        /// The reply.
        output: CompletionResponse,
        /// Cost in US dollars.
        cost_usd: f64,
        /// Time the call took.
        duration_us: u64,
        /// Served from a recorded run (fork or replay), not sent to the provider: free.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        replayed: bool,
        /// The response cache: `true` served from it (free), `false` missed and stored.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache: Option<bool>,
    },
    /// An agent's conversation nears its model's window: older turns are being summarised.
    ContextCompressing {
        /// Step id.
        step: Name,
        /// Task id.
        task: u64,
        /// Messages before this index (after the system prompt) are summarised.
        upto: usize,
        /// Estimated tokens of the conversation before.
        before_tokens: u64,
    },
    /// Older turns were replaced by a summary; the recent ones are kept verbatim.
    ContextCompressed {
        /// Step id.
        step: Name,
        /// Task id.
        task: u64,
        /// Estimated tokens before.
        before_tokens: u64,
        /// Estimated tokens after.
        after_tokens: u64,
        /// The summary that replaced them.
        summary: String,
    },
    /// An agent's model failed for good; the next model of its fallback chain takes over.
    ModelFallback {
        /// Step id.
        step: Name,
        /// Task id.
        task: u64,
        /// The model that failed.
        from: String,
        /// The model used next.
        to: String,
        /// Why.
        reason: String,
    },
    /// Consumption passed 80% of a budget.
    BudgetAlert {
        /// `run`, `agent <name>` or `step <id>`.
        scope: String,
        /// `cost_usd`, `tokens`, `model_calls`, `tool_calls`, `steps` or `wall_time_ms`.
        metric: String,
        /// Used so far.
        used: f64,
        /// The limit.
        limit: f64,
    },
    /// A call or step would have gone past a budget, so it was not made.
    BudgetExceeded {
        /// `run`, `agent <name>` or `step <id>`.
        scope: String,
        /// The metric.
        metric: String,
        /// Used so far, in flight included.
        used: f64,
        /// What the refused work could have added at most.
        needed: f64,
        /// The limit.
        limit: f64,
    },
    /// Input or a tool result holds text that looks like instructions aimed at the agents.
    SecurityAlert {
        /// Where it was found: `input <key>` or `tool <name>`.
        source: String,
        /// The step, for a tool result.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<Name>,
        /// What matched.
        pattern: String,
        /// The text around it.
        excerpt: String,
    },
    /// A circuit breaker changed state (shared by every run of the process).
    CircuitBreaker {
        /// The model (or tool) it guards.
        target: String,
        /// Previous state: closed, open, half_open.
        from: String,
        /// New state.
        to: String,
    },
    /// An agent handed a sub-task to another agent: a delegation (the result comes back to the
    /// delegating agent as its tool call's result) or a handoff (the receiving agent's answer
    /// becomes the step's answer). Starts a new agent task inside the same step.
    Delegated {
        /// Step id.
        step: Name,
        /// The new task.
        task: u64,
        /// The delegating agent's task.
        parent_task: u64,
        /// The delegating tool call's id.
        call_id: String,
        /// Delegating agent.
        from: Name,
        /// Receiving agent.
        to: Name,
        /// Delegation depth of the new task (1 for a worker of a step's own agent).
        depth: u32,
        /// A handoff (control passes to `to`) rather than a delegation.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        handoff: bool,
        /// The task message (from, to, run and task ids, kind, payload, timestamp, ...).
        message: Value,
        /// The new task's opening conversation: exactly what the receiving agent sees.
        messages: Vec<crate::Message>,
    },
    /// A delegated (or handed-off) task ended.
    DelegationReturned {
        /// Step id.
        step: Name,
        /// The delegated task.
        task: u64,
        /// The delegating agent's task.
        parent_task: u64,
        /// The delegating tool call's id.
        call_id: String,
        /// The agent that did the work.
        from: Name,
        /// The agent it reports to.
        to: Name,
        /// It was a handoff.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        handoff: bool,
        /// The result (or error) message, as sent back.
        message: Value,
        /// Time the task took.
        duration_us: u64,
    },
    /// A loop guard stopped work that made no progress.
    LoopGuard {
        /// Step id.
        step: Name,
        /// Why.
        reason: String,
    },
    /// A model call failed.
    ModelFailed {
        /// Step id.
        step: Name,
        /// Task id.
        task: u64,
        /// Agent.
        agent: Name,
        /// Model name.
        model: String,
        /// Turn within the agent's loop.
        turn: u32,
        /// The error.
        error: ModelError,
        /// Time the call took.
        duration_us: u64,
    },
    /// A tool call was answered (by the tool, or by the runtime rejecting it).
    ToolCalled {
        /// Step id.
        step: Name,
        /// Task id.
        task: u64,
        /// The tool name as requested.
        tool: String,
        /// The model's call id.
        call_id: String,
        /// Arguments as requested.
        args: Value,
        /// The result, on success.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        /// The error, on failure; `unknown` and `invalid_arguments` mean nothing ran.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ToolError>,
        /// Time the call took.
        duration_us: u64,
        /// Served from a recorded run (fork or replay): the tool did not run again.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        replayed: bool,
    },
    /// A side-effecting tool call is about to run (journaled before it starts).
    ToolStarted {
        /// Step id.
        step: Name,
        /// Task id.
        task: u64,
        /// The tool.
        tool: String,
        /// The model's call id.
        call_id: String,
        /// The arguments it runs with.
        args: Value,
        /// The key handed to the tool; the same for every attempt of this logical call.
        idempotency_key: String,
    },
    /// The run waits for a human decision (an approval step, an `approve`-tier tool call, or a
    /// call whose outcome is unknown after a crash).
    ApprovalRequested {
        /// Step id.
        step: Name,
        /// Task id.
        task: u64,
        /// For a tool call: the model's call id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
        /// For a tool call: the tool.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tool: Option<String>,
        /// For a tool call: the exact arguments to approve.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        args: Option<Value>,
        /// What the human is asked.
        message: String,
    },
    /// A human decided.
    ApprovalDecided {
        /// Step id.
        step: Name,
        /// Task id.
        task: u64,
        /// For a tool call: the model's call id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
        /// Approved or rejected.
        approved: bool,
        /// Who decided.
        by: String,
        /// Why (required for a rejection).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The value approved: for a tool call the exact arguments that will run (edited or
        /// not); for an approval step the data the human edited, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Value>,
    },
    /// The run stopped to wait (for a human); it costs nothing while it waits.
    RunSuspended {
        /// What it waits for.
        reason: String,
    },
    /// A suspended, halted or interrupted run continues in a new process.
    RunResumed {
        /// Tasks whose work is started again.
        restarted: Vec<u64>,
    },
    /// This run was forked from another run's log.
    Forked {
        /// The original run.
        from: RunId,
        /// The last event copied from it.
        at: u64,
    },
    /// State set by hand (a fork with changed state).
    StateOverridden {
        /// The values set (replacing the current ones).
        updates: Vec<KeyUpdate>,
    },
    /// A structured answer failed its schema; the model is asked to repair it.
    OutputRejected {
        /// Step id.
        step: Name,
        /// Task id.
        task: u64,
        /// What was wrong.
        reason: String,
    },
    /// A failed call will be tried again after a delay.
    Retry {
        /// Step id.
        step: Name,
        /// Task id.
        task: u64,
        /// The attempt about to be made, from 2.
        attempt: u32,
        /// Delay before it.
        delay_ms: u64,
        /// The failure that caused it.
        reason: String,
    },
    /// A timer was set.
    TimerStarted {
        /// Timer id (the seq of this event).
        timer: u64,
        /// Step it belongs to.
        step: Name,
        /// For a retry delay: the task that waits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<u64>,
        /// When it fires, microseconds since the Unix epoch.
        due_us: u64,
        /// A step's deadline (the task fails if still running when it fires).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        deadline: bool,
        /// Delay.
        after_ms: u64,
    },
    /// A timer fired.
    TimerFired {
        /// Timer id.
        timer: u64,
    },
    /// A sub-workflow run began for a step.
    ChildStarted {
        /// Step id.
        step: Name,
        /// Task id.
        task: u64,
        /// The child run.
        child: RunId,
    },
    /// A sub-workflow run ended.
    ChildFinished {
        /// Step id.
        step: Name,
        /// Task id.
        task: u64,
        /// The child run.
        child: RunId,
        /// How it ended.
        status: RunStatus,
        /// What it consumed (added to this run's usage).
        usage: Usage,
        /// Its cost breakdown (added to this run's).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        costs: Vec<CostLine>,
    },
    /// The run ended.
    RunFinished {
        /// Final status.
        status: RunStatus,
        /// Why, when it did not succeed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl EventKind {
    /// The snake-case name of the event type.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::RunStarted { .. } => "run_started",
            EventKind::StepStarted { .. } => "step_started",
            EventKind::StateUpdated { .. } => "state_updated",
            EventKind::StepCompleted { .. } => "step_completed",
            EventKind::StepFailed { .. } => "step_failed",
            EventKind::StepSkipped { .. } => "step_skipped",
            EventKind::Transition { .. } => "transition",
            EventKind::ModelCalled { .. } => "model_called",
            EventKind::ModelFailed { .. } => "model_failed",
            EventKind::ToolCalled { .. } => "tool_called",
            EventKind::ToolStarted { .. } => "tool_started",
            EventKind::ContextCompressing { .. } => "context_compressing",
            EventKind::BudgetAlert { .. } => "budget_alert",
            EventKind::BudgetExceeded { .. } => "budget_exceeded",
            EventKind::SecurityAlert { .. } => "security_alert",
            EventKind::LoopGuard { .. } => "loop_guard",
            EventKind::Delegated { .. } => "delegated",
            EventKind::DelegationReturned { .. } => "delegation_returned",
            EventKind::CircuitBreaker { .. } => "circuit_breaker",
            EventKind::ContextCompressed { .. } => "context_compressed",
            EventKind::ModelFallback { .. } => "model_fallback",
            EventKind::ApprovalRequested { .. } => "approval_requested",
            EventKind::ApprovalDecided { .. } => "approval_decided",
            EventKind::RunSuspended { .. } => "run_suspended",
            EventKind::RunResumed { .. } => "run_resumed",
            EventKind::Forked { .. } => "forked",
            EventKind::StateOverridden { .. } => "state_overridden",
            EventKind::OutputRejected { .. } => "output_rejected",
            EventKind::Retry { .. } => "retry",
            EventKind::TimerStarted { .. } => "timer_started",
            EventKind::TimerFired { .. } => "timer_fired",
            EventKind::ChildStarted { .. } => "child_started",
            EventKind::ChildFinished { .. } => "child_finished",
            EventKind::RunFinished { .. } => "run_finished",
        }
    }
}
