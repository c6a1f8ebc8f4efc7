//! The run machine: a pure, synchronous state machine over a compiled workflow.
//!
//! `handle(Input) -> Vec<Effect>` decides what happens next and records every decision as an
//! [`Event`]; `evolve(&Event)` is the only code that changes the machine's state. The executor
//! performs the effects (model calls, tool calls, code, timers) and feeds their results back as
//! inputs. Nothing here awaits, reads a clock or touches I/O, so replaying a run's events through
//! `evolve` rebuilds exactly the machine that wrote them ([`RunMachine::replay`]).

use crate::error::RunError;
use crate::guard::{self, Cost};
use crate::registry::{StepFn, StepInput, View};
use crate::spec::{JoinMode, OnItemError, OnTimeout};
use crate::state::{MergeError, State};
use crate::workflow::{ErrorPolicy, StepKind, Work, Workflow};
use baton_core::{
    CallPosition, CompletionRequest, CompletionResponse, DynModel, DynTool, Event, EventKind,
    KeyUpdate, Message, ModelError, Name, Role, RunId, RunStatus, SideEffect, Tier, ToolContext,
    ToolError, Usage,
};
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Something that happened outside the machine.
#[derive(Debug)]
pub enum Input {
    /// Begin the run with this input (an object of state keys).
    Start {
        /// The input.
        input: Value,
    },
    /// A code step (function or subprocess) returned.
    CodeReturned {
        /// Task.
        task: u64,
        /// Its output or a readable error.
        result: Result<Value, String>,
        /// How long it took.
        duration_us: u64,
    },
    /// A model call returned.
    ModelReplied {
        /// Task.
        task: u64,
        /// Reply or error.
        result: Result<CompletionResponse, ModelError>,
        /// How long it took.
        duration_us: u64,
        /// Served from a recorded run.
        replayed: bool,
        /// The response cache: hit, miss, or not used.
        cache: Option<bool>,
        /// A circuit-breaker state change this call caused: (model, from, to).
        breaker: Option<(String, String, String)>,
    },
    /// A tool call returned.
    ToolReturned {
        /// Task.
        task: u64,
        /// The model's call id.
        call_id: String,
        /// Tool name.
        tool: String,
        /// Arguments it ran with.
        args: Value,
        /// Result or error.
        result: Result<Value, ToolError>,
        /// How long it took.
        duration_us: u64,
        /// Served from a recorded run.
        replayed: bool,
        /// A circuit-breaker state change this call caused: (tool, from, to).
        breaker: Option<(String, String, String)>,
    },
    /// A human decided on a pending approval.
    Decision {
        /// Task.
        task: u64,
        /// For a tool call: the model's call id.
        call_id: Option<String>,
        /// Approved or rejected.
        approved: bool,
        /// Who.
        by: String,
        /// Why.
        reason: Option<String>,
        /// Edited arguments (tool call) or data (approval step).
        value: Option<Value>,
    },
    /// A sub-workflow run was created for a task.
    ChildStarted {
        /// Task.
        task: u64,
        /// Child run.
        child: RunId,
    },
    /// A sub-workflow run ended.
    ChildFinished {
        /// Task.
        task: u64,
        /// Child run.
        child: RunId,
        /// Its status.
        status: RunStatus,
        /// Its outputs.
        output: Value,
        /// Why it did not succeed.
        reason: Option<String>,
        /// What it consumed.
        usage: Usage,
        /// Its cost breakdown.
        costs: Vec<CostLine>,
        /// How long it took.
        duration_us: u64,
    },
    /// A timer fired.
    TimerFired {
        /// Timer.
        timer: u64,
    },
}

/// Something the executor must do.
pub enum Effect {
    /// Call a model.
    CallModel {
        /// Task.
        task: u64,
        /// The provider.
        model: Arc<dyn DynModel>,
        /// The request.
        request: CompletionRequest,
        /// Per-call timeout.
        timeout: Duration,
        /// Look in the response cache first (and store the reply there).
        cache: bool,
        /// Concurrency limit to wait on.
        limit: Option<Arc<tokio::sync::Semaphore>>,
        /// Circuit breaker to ask and tell.
        breaker: Option<Arc<crate::limits::Breaker>>,
        /// Request-rate limit to wait on.
        rate: Option<Arc<crate::limits::RateLimiter>>,
    },
    /// Call a tool (arguments already validated).
    CallTool {
        /// Task.
        task: u64,
        /// The model's call id.
        call_id: String,
        /// Tool name.
        name: String,
        /// The tool.
        tool: Arc<dyn DynTool>,
        /// Arguments.
        args: Value,
        /// Context (idempotency key).
        ctx: ToolContext,
        /// Per-call timeout.
        timeout: Duration,
        /// The tool's circuit breaker.
        breaker: Option<Arc<crate::limits::Breaker>>,
    },
    /// Run a Rust step function.
    CallFunction {
        /// Task.
        task: u64,
        /// The function.
        func: Arc<dyn StepFn>,
        /// Its input.
        input: StepInput,
    },
    /// Run a subprocess step.
    RunCode {
        /// Task.
        task: u64,
        /// Program and arguments.
        command: Arc<[String]>,
        /// Working directory.
        cwd: PathBuf,
        /// JSON written to its stdin.
        input: Value,
        /// Timeout.
        timeout: Duration,
    },
    /// Run a sub-workflow (or resume the child run already started for this task).
    RunChild {
        /// Task.
        task: u64,
        /// The child run to resume, if one was started before.
        child: Option<RunId>,
        /// The child workflow.
        workflow: Arc<Workflow>,
        /// Its input.
        input: Value,
    },
    /// Fire `TimerFired { timer }` after a delay.
    StartTimer {
        /// Timer.
        timer: u64,
        /// Delay.
        after: Duration,
    },
    /// The run is over.
    Finish {
        /// Final status.
        status: RunStatus,
    },
}

/// Where a step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepStatus {
    /// Has not run.
    NotRun,
    /// In flight.
    Running,
    /// Last visit completed.
    Completed,
    /// Last visit failed.
    Failed,
    /// Will not run (a need failed).
    Skipped,
}

#[derive(Clone, Debug)]
struct StepRt {
    status: StepStatus,
    visits: u32,
    round: u32,
    satisfied: Vec<bool>,
    satisfied_count: usize,
    absorb: Vec<bool>,
    failed_needs: usize,
    triggered: bool,
    /// Failed attempts retried since the step last completed.
    retried: u32,
    /// Lamport time: the highest round among the completions that made this step ready.
    pending_round: u32,
    timer: Option<u64>,
    timed_out: bool,
}

#[derive(Clone, Debug)]
struct TaskRt {
    step: usize,
    started_us: u64,
    item: Option<u32>,
    history: Vec<Message>,
    logged: usize,
    turn: u32,
    attempt: u32,
    repairs: u32,
    pending_tools: usize,
    /// Results of the current turn's tool calls, in call order; joined to the history when
    /// all have arrived so the conversation does not depend on which tool finished first.
    tool_slots: Vec<(String, Option<Message>)>,
    /// Pending human decisions: (call id for a tool call, tool, requested arguments).
    waits: Vec<Wait>,
    /// Calls whose intent was journaled (`ToolStarted`), with the arguments they run with.
    intents: Vec<(String, Value)>,
    /// The child run of a sub-workflow step.
    child: Option<RunId>,
    /// Position in the agent's model chain (fallbacks).
    model_idx: usize,
    /// Older messages being summarised: those before this index.
    compressing: Option<usize>,
    /// A summary failed: do not try again in this task.
    no_compress: bool,
    /// The conversation holds untrusted content (an untrusted key, or an untrusted tool's result).
    tainted: bool,
    /// A delegated task: who asked, and how.
    delegation: Option<Box<DelegationRt>>,
    /// A step's own task under which some agent delegated (its delegated tasks end with it).
    delegated: bool,
}

impl TaskRt {
    /// A task starting its work with these opening messages.
    fn new(
        step: usize,
        at_us: u64,
        item: Option<u32>,
        history: Vec<Message>,
        tainted: bool,
    ) -> Self {
        TaskRt {
            step,
            started_us: at_us,
            item,
            logged: history.len(),
            history,
            turn: 0,
            attempt: 1,
            repairs: 0,
            pending_tools: 0,
            tool_slots: Vec::new(),
            waits: Vec::new(),
            intents: Vec::new(),
            child: None,
            model_idx: 0,
            compressing: None,
            no_compress: false,
            tainted,
            delegation: None,
            delegated: false,
        }
    }
}

/// What a delegated task knows about where it came from.
#[derive(Clone, Debug)]
struct DelegationRt {
    /// The agent doing the work.
    agent: usize,
    /// The delegating task and its call id.
    parent: u64,
    call_id: String,
    /// The step's own task at the top of the chain.
    root: u64,
    /// Agents from the step's agent down to this one.
    chain: Vec<usize>,
    /// The receiver's answer is the step's answer.
    handoff: bool,
}

#[derive(Clone, Debug)]
struct Wait {
    call_id: Option<String>,
    tool: Option<String>,
    args: Option<Value>,
}

#[derive(Clone, Debug)]
struct MapRt {
    task: u64,
    items: Vec<Value>,
    results: Vec<Value>,
    next: usize,
    active: usize,
    done: usize,
    failed: Option<String>,
}

#[derive(Clone, Debug)]
enum TimerRt {
    Join(usize, u64),
    Retry(u64, u64),
    Deadline(u64, u64),
}

/// A decision a human has to make.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PendingApproval {
    /// Task waiting.
    pub task: u64,
    /// Its step.
    pub step: String,
    /// For a tool call: the call id.
    pub call_id: Option<String>,
    /// For a tool call: the tool.
    pub tool: Option<String>,
    /// For a tool call: the arguments to approve.
    pub args: Option<Value>,
}

/// Calls recorded in a run, with the requests that produced them.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// Model requests and their replies, in order.
    pub models: Vec<(CompletionRequest, CompletionResponse)>,
    /// Tool calls (name, arguments) and their results, in order.
    pub tools: Vec<(String, Value, Result<Value, ToolError>)>,
}

/// A number in [0, 1) drawn from the run, the task and the attempt (FNV-1a).
fn jitter(run: RunId, task: u64, attempt: u32) -> f64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in run
        .0
        .as_bytes()
        .iter()
        .chain(task.to_le_bytes().iter())
        .chain(attempt.to_le_bytes().iter())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A model call's reserved worst case: (agent, step, cost).
type Reservation = (Option<usize>, usize, Cost);

/// Output tokens reserved for a call to a model without `max_tokens`.
const DEFAULT_MAX_OUTPUT: u32 = 4096;

/// Recent messages kept verbatim when older turns are summarised.
const KEEP_VERBATIM: usize = 4;

/// What the summariser is told.
const SUMMARY_INSTRUCTIONS: &str = "You compress the earlier part of an agent's conversation. \
Summarise the transcript you are given: keep every fact, figure, decision, open question and \
tool result the agent may still need; drop pleasantries and repetition. Reply with the summary \
only.";

/// A rough token estimate (4 characters a token, plus a few per message), for deciding when to
/// compress; providers report the real counts.
pub fn estimate_tokens(messages: &[Message]) -> u64 {
    messages
        .iter()
        .map(|m| {
            let calls: usize = m
                .tool_calls
                .iter()
                .map(|c| c.name.len() + c.args.to_string().len())
                .sum();
            ((m.content.chars().count() + calls) as u64).div_ceil(4) + 4
        })
        .sum()
}

/// Index of the first message after the leading system messages.
fn first_turn(history: &[Message]) -> usize {
    history
        .iter()
        .position(|m| m.role != Role::System)
        .unwrap_or(history.len())
}

fn render_message(m: &Message) -> String {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut out = format!("{role}: {}", m.content);
    for c in &m.tool_calls {
        out.push_str(&format!("\n  [calls {} with {}]", c.name, c.args));
    }
    out
}

/// Whether a task can make no progress until a human decides.
fn blocked(t: &TaskRt) -> bool {
    !t.waits.is_empty() && (t.pending_tools == 0 || t.waits.len() >= t.pending_tools)
}

/// A failure as the final report shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Failure {
    /// Step id.
    pub step: String,
    /// Error.
    pub error: String,
    /// `fail`, `continue`, `skip` (a map item) or the step routed to.
    pub policy: String,
}

/// A line of the run's cost breakdown (agent, model, calls, tokens, cost).
pub use baton_core::CostLine;

/// The pure state machine of one run.
pub struct RunMachine {
    wf: Arc<Workflow>,
    run_id: RunId,
    seq: u64,
    now_us: u64,
    state: State,
    steps: Vec<StepRt>,
    tasks: HashMap<u64, TaskRt>,
    maps: HashMap<usize, MapRt>,
    timers: HashMap<u64, TimerRt>,
    candidates: VecDeque<usize>,
    usage: Usage,
    status: RunStatus,
    reason: Option<String>,
    failing: bool,
    degraded: bool,
    completed: Vec<usize>,
    /// Model calls so far per (agent, model) and per (step, model): call positions for
    /// deterministic providers.
    agent_calls: HashMap<(usize, String), u64>,
    step_calls: HashMap<(usize, String), u64>,
    /// Usage per (agent, model), in order of first call.
    costs: Vec<CostLine>,
    failures: Vec<Failure>,
    skipped: Vec<(usize, String)>,
    events: Vec<Event>,
    effects: Vec<Effect>,
    broken: Option<String>,
    /// Usage per agent and per step, for their budgets (folded from events).
    agent_usage: HashMap<usize, Cost>,
    step_usage: HashMap<usize, Cost>,
    /// Budget alerts already raised: (scope, metric).
    alerted: Vec<(String, String)>,
    /// When the run started (from its first event).
    started_us: u64,
    /// Worst-case costs reserved by model calls in flight (decided, not folded: a resumed run
    /// re-reserves for the calls it restarts).
    reserved: HashMap<u64, Reservation>,
    /// A run budget is spent: nothing new starts; the run halts when what is in flight is in.
    halting: Option<String>,
    /// Tasks that wanted a model call the run budget could not cover (decided, not folded).
    parked: Vec<u64>,
    /// Step deadlines to arm once the step's start is recorded.
    deadlines: Vec<(u64, Duration)>,
}

impl std::fmt::Debug for RunMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunMachine")
            .field("run_id", &self.run_id)
            .field("seq", &self.seq)
            .field("status", &self.status)
            .finish()
    }
}

fn strip_fences(s: &str) -> &str {
    let t = s.trim();
    if let Some(rest) = t.strip_prefix("```") {
        let rest = rest.split_once('\n').map_or("", |(_, r)| r);
        return rest.trim_end().strip_suffix("```").unwrap_or(rest).trim();
    }
    t
}

fn tool_content(result: &Option<Value>, error: &Option<ToolError>) -> String {
    match (result, error) {
        (_, Some(e)) => format!("error: {e}"),
        (Some(Value::String(s)), None) => s.clone(),
        (Some(v), None) => v.to_string(),
        (None, None) => String::new(),
    }
}

impl RunMachine {
    /// A machine for a new run of `wf`.
    pub fn new(wf: Arc<Workflow>, run_id: RunId) -> Self {
        let steps = wf
            .steps
            .iter()
            .map(|s| StepRt {
                status: StepStatus::NotRun,
                visits: 0,
                round: 0,
                satisfied: vec![false; s.needs.len()],
                satisfied_count: 0,
                absorb: vec![false; s.needs.len()],
                failed_needs: 0,
                triggered: false,
                retried: 0,
                pending_round: 0,
                timer: None,
                timed_out: false,
            })
            .collect();
        RunMachine {
            state: State::new(&wf.keys),
            wf,
            run_id,
            seq: 0,
            now_us: 0,
            steps,
            tasks: HashMap::new(),
            maps: HashMap::new(),
            timers: HashMap::new(),
            candidates: VecDeque::new(),
            usage: Usage::default(),
            status: RunStatus::Running,
            reason: None,
            failing: false,
            degraded: false,
            completed: Vec::new(),
            agent_calls: HashMap::new(),
            step_calls: HashMap::new(),
            costs: Vec::new(),
            failures: Vec::new(),
            skipped: Vec::new(),
            events: Vec::new(),
            effects: Vec::new(),
            broken: None,
            agent_usage: HashMap::new(),
            step_usage: HashMap::new(),
            alerted: Vec::new(),
            started_us: 0,
            reserved: HashMap::new(),
            halting: None,
            parked: Vec::new(),
            deadlines: Vec::new(),
        }
    }

    /// Rebuild a machine from a run's events (the fold). Fails on a log that does not fit the
    /// workflow.
    pub fn replay(wf: Arc<Workflow>, run_id: RunId, events: &[Event]) -> Result<Self, RunError> {
        let mut m = RunMachine::new(wf, run_id);
        for ev in events {
            if ev.seq != m.seq {
                return Err(RunError::Nondeterminism {
                    seq: ev.seq,
                    message: format!("expected seq {}", m.seq),
                });
            }
            m.evolve(ev, None)
                .map_err(|message| RunError::Nondeterminism {
                    seq: ev.seq,
                    message,
                })?;
            m.seq += 1;
        }
        Ok(m)
    }

    /// [`RunMachine::replay`] from an owned log: large values (the run's input, state writes)
    /// move into the state instead of being copied.
    pub fn replay_owned(
        wf: Arc<Workflow>,
        run_id: RunId,
        events: Vec<Event>,
    ) -> Result<Self, RunError> {
        let mut m = RunMachine::new(wf, run_id);
        for mut ev in events {
            if ev.seq != m.seq {
                return Err(RunError::Nondeterminism {
                    seq: ev.seq,
                    message: format!("expected seq {}", m.seq),
                });
            }
            // The input goes straight into the state; the fold sees an empty one.
            if let EventKind::RunStarted { input, .. } = &mut ev.kind
                && let Value::Object(map) = std::mem::take(input)
            {
                for (k, v) in map {
                    let i = *m
                        .wf
                        .key_index
                        .get(&k)
                        .ok_or_else(|| RunError::Nondeterminism {
                            seq: ev.seq,
                            message: format!("unknown state key `{k}`"),
                        })?;
                    m.state.set_input(i, v);
                }
            }
            m.evolve(&ev, None)
                .map_err(|message| RunError::Nondeterminism {
                    seq: ev.seq,
                    message,
                })?;
            m.seq += 1;
        }
        Ok(m)
    }

    /// A state key's current value, without copying it.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.lookup(key)
    }

    /// Check a run input against the workflow: an object whose keys are declared state keys.
    pub fn check_input(wf: &Workflow, input: &Value) -> Result<(), RunError> {
        match input {
            Value::Null => Ok(()),
            Value::Object(map) => {
                for k in map.keys() {
                    if !wf.key_index.contains_key(k) {
                        let declared: Vec<&str> = wf.key_names().collect();
                        return Err(RunError::Input(format!(
                            "`{k}` is not a state key of workflow `{}` (declared: {})",
                            wf.name,
                            declared.join(", ")
                        )));
                    }
                }
                Ok(())
            }
            other => Err(RunError::Input(format!(
                "the input must be a JSON object of state keys, not {}",
                crate::expr::type_name(other)
            ))),
        }
    }

    /// The workflow.
    pub fn workflow(&self) -> &Arc<Workflow> {
        &self.wf
    }
    /// The run id.
    pub fn run_id(&self) -> RunId {
        self.run_id
    }
    /// The run's status.
    pub fn status(&self) -> RunStatus {
        self.status
    }
    /// Why the run did not succeed, if it did not.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
    /// Usage so far.
    pub fn usage(&self) -> &Usage {
        &self.usage
    }
    /// Number of events recorded.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }
    /// A step's status by index.
    pub fn step_status(&self, idx: usize) -> StepStatus {
        self.steps[idx].status
    }
    /// Indices of the steps completed, in completion order (repeats for loops).
    pub fn completed_indices(&self) -> &[usize] {
        &self.completed
    }

    /// Steps completed, in completion order (repeats for loops).
    pub fn completed_steps(&self) -> Vec<String> {
        self.completed
            .iter()
            .map(|&i| self.wf.steps[i].name.to_string())
            .collect()
    }
    /// What each agent consumed on each model, sorted by agent then model.
    pub fn cost_breakdown(&self) -> Vec<CostLine> {
        let mut v = self.costs.clone();
        v.sort_by(|a, b| (&a.agent, &a.model).cmp(&(&b.agent, &b.model)));
        v
    }

    /// Failures, in order.
    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }
    /// Steps skipped and why.
    pub fn skipped_steps(&self) -> Vec<(String, String)> {
        self.skipped
            .iter()
            .map(|(i, r)| (self.wf.steps[*i].name.to_string(), r.clone()))
            .collect()
    }
    /// The state as a JSON object of every key.
    pub fn state_json(&self) -> Value {
        Value::Object(
            self.wf
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.name.to_string(), (**self.state.get(i)).clone()))
                .collect(),
        )
    }
    /// The declared outputs as a JSON object.
    pub fn outputs(&self) -> Value {
        Value::Object(
            self.wf
                .outputs
                .iter()
                .map(|&i| {
                    (
                        self.wf.keys[i].name.to_string(),
                        (**self.state.get(i)).clone(),
                    )
                })
                .collect(),
        )
    }
    /// Take the events recorded since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
    /// Events waiting to be taken.
    pub fn pending_events(&self) -> &[Event] {
        &self.events
    }

    // ------------------------------------------------------------------ recording

    fn emit(&mut self, kind: EventKind, step: Option<usize>) {
        let ev = Event {
            seq: self.seq,
            at_us: self.now_us,
            kind,
        };
        if let Err(e) = self.evolve(&ev, step) {
            // A live machine only records events it can fold; reaching this is a bug, and the
            // run is failed rather than left in an unknown state.
            self.broken.get_or_insert(e);
        }
        self.seq += 1;
        self.events.push(ev);
    }

    fn step_idx(&self, name: &str, hint: Option<usize>) -> Result<usize, String> {
        if let Some(h) = hint {
            return Ok(h);
        }
        self.wf
            .step_index
            .get(name)
            .copied()
            .ok_or_else(|| format!("unknown step `{name}`"))
    }

    /// Fold one event into the machine. This is the only place the run's state changes.
    fn evolve(&mut self, ev: &Event, hint: Option<usize>) -> Result<(), String> {
        match &ev.kind {
            EventKind::RunStarted { input, .. } => {
                self.started_us = ev.at_us;
                if let Value::Object(map) = input {
                    for (k, v) in map {
                        let i = *self
                            .wf
                            .key_index
                            .get(k)
                            .ok_or_else(|| format!("unknown state key `{k}`"))?;
                        self.state.set_input(i, v.clone());
                    }
                }
                for &e in &self.wf.entries {
                    self.steps[e].triggered = true;
                    self.candidates.push_back(e);
                }
            }
            EventKind::StepStarted {
                step,
                task,
                visit,
                round,
                item,
                messages,
                input,
                ..
            } => {
                let s = self.step_idx(step, hint)?;
                self.usage.steps += 1;
                match item {
                    None => {
                        let wf = self.wf.clone();
                        let needs = &wf.steps[s].needs;
                        let rt = &mut self.steps[s];
                        rt.status = StepStatus::Running;
                        rt.visits = *visit;
                        rt.round = *round;
                        rt.triggered = false;
                        rt.pending_round = 0;
                        rt.timed_out = false;
                        rt.timer = None;
                        rt.failed_needs = 0;
                        rt.satisfied_count = 0;
                        for p in 0..needs.len() {
                            let was = std::mem::replace(&mut self.steps[s].satisfied[p], false);
                            // A join that fires before all its needs arrived (quorum, any,
                            // timeout) absorbs the one completion still owed by each of them,
                            // so late arrivals do not fire it again.
                            self.steps[s].absorb[p] = !was;
                        }
                        if let StepKind::Map(_) = &wf.steps[s].kind {
                            let items = match input {
                                Some(Value::Array(a)) => a.clone(),
                                _ => Vec::new(),
                            };
                            self.maps.insert(
                                s,
                                MapRt {
                                    task: *task,
                                    results: vec![Value::Null; items.len()],
                                    items,
                                    next: 0,
                                    active: 0,
                                    done: 0,
                                    failed: None,
                                },
                            );
                        }
                    }
                    Some(i) => {
                        let m = self
                            .maps
                            .get_mut(&s)
                            .ok_or_else(|| format!("map item of `{step}` outside a map"))?;
                        m.active += 1;
                        m.next = m.next.max(*i as usize + 1);
                    }
                }
                let tainted = self.wf.steps[s].reads_untrusted;
                self.tasks.insert(
                    *task,
                    TaskRt::new(s, ev.at_us, *item, messages.clone(), tainted),
                );
            }
            EventKind::Delegated {
                step,
                task,
                parent_task,
                call_id,
                to,
                handoff,
                messages,
                ..
            } => {
                let s = self.step_idx(step, hint)?;
                let agent = self
                    .wf
                    .agents
                    .iter()
                    .position(|a| a.name == *to)
                    .ok_or_else(|| format!("delegation to unknown agent `{to}`"))?;
                let p = self
                    .tasks
                    .get(parent_task)
                    .ok_or_else(|| format!("delegation from unknown task {parent_task}"))?;
                let (root, mut chain) = match &p.delegation {
                    Some(d) => (d.root, d.chain.clone()),
                    None => (
                        *parent_task,
                        self.agent_of(*parent_task).into_iter().collect(),
                    ),
                };
                chain.push(agent);
                let (item, tainted) = (p.item, p.tainted);
                if let Some(r) = self.tasks.get_mut(&root) {
                    r.delegated = true;
                }
                let mut t = TaskRt::new(s, ev.at_us, item, messages.clone(), tainted);
                t.delegation = Some(Box::new(DelegationRt {
                    agent,
                    parent: *parent_task,
                    call_id: call_id.clone(),
                    root,
                    chain,
                    handoff: *handoff,
                }));
                self.tasks.insert(*task, t);
            }
            EventKind::DelegationReturned {
                task,
                parent_task,
                call_id,
                handoff,
                message,
                ..
            } => {
                self.tasks.remove(task);
                if !*handoff && let Some(t) = self.tasks.get_mut(parent_task) {
                    let content = match (&message["payload"], &message["error"]) {
                        (Value::String(s), _) => s.clone(),
                        (Value::Null, Value::String(e)) => format!("error: {e}"),
                        (v, _) => v.to_string(),
                    };
                    let msg = Message::tool_result(call_id.clone(), content);
                    match t
                        .tool_slots
                        .iter_mut()
                        .find(|(id, m)| id == call_id && m.is_none())
                    {
                        Some(slot) => slot.1 = Some(msg),
                        None => t.history.push(msg),
                    }
                    t.pending_tools = t.pending_tools.saturating_sub(1);
                    if t.pending_tools == 0 {
                        let slots = std::mem::take(&mut t.tool_slots);
                        t.history.extend(slots.into_iter().filter_map(|(_, m)| m));
                    }
                }
            }
            EventKind::StateUpdated {
                step,
                round,
                updates,
            } => {
                let s = self.step_idx(step, hint)?;
                for u in updates {
                    let k = *self
                        .wf
                        .key_index
                        .get(&*u.key)
                        .ok_or_else(|| format!("unknown state key `{}`", u.key))?;
                    let rule = self.wf.keys[k].rule;
                    self.state
                        .apply(k, rule, u.value.clone(), (*round, s as u32));
                }
            }
            EventKind::StepCompleted {
                step, task, output, ..
            } => {
                let s = self.step_idx(step, hint)?;
                let t = self.tasks.remove(task);
                if t.as_ref().is_some_and(|t| t.delegated) {
                    self.drop_delegations(*task);
                }
                if let Some(i) = t.as_ref().and_then(|t| t.item) {
                    let m = self
                        .maps
                        .get_mut(&s)
                        .ok_or_else(|| format!("map item of `{step}` outside a map"))?;
                    if let Some(slot) = m.results.get_mut(i as usize) {
                        *slot = output.clone().unwrap_or(Value::Null);
                    }
                    m.active = m.active.saturating_sub(1);
                    m.done += 1;
                    return Ok(());
                }
                self.maps.remove(&s);
                self.steps[s].status = StepStatus::Completed;
                self.steps[s].retried = 0;
                self.completed.push(s);
                let wf = self.wf.clone();
                let round = self.steps[s].round;
                for &(d, p) in &wf.steps[s].dependents {
                    let rt = &mut self.steps[d];
                    if std::mem::replace(&mut rt.absorb[p], false) {
                        continue;
                    }
                    rt.pending_round = rt.pending_round.max(round);
                    if !rt.satisfied[p] {
                        rt.satisfied[p] = true;
                        rt.satisfied_count += 1;
                    }
                    self.candidates.push_back(d);
                }
                if self.steps[s].triggered {
                    self.candidates.push_back(s);
                }
            }
            EventKind::StepFailed {
                step,
                task,
                error,
                policy,
            } => {
                let s = self.step_idx(step, hint)?;
                let t = task.and_then(|t| self.tasks.remove(&t));
                if let (Some(id), Some(true)) = (task, t.as_ref().map(|t| t.delegated)) {
                    self.drop_delegations(*id);
                }
                if policy == "retry" {
                    // The step runs again; this attempt's failure is in the log, not a loss.
                    self.maps.remove(&s);
                    self.steps[s].status = StepStatus::Failed;
                    self.steps[s].retried += 1;
                    self.steps[s].triggered = true;
                    // The next attempt runs in a later round than the failed one, so what it
                    // writes to `append` keys orders after what earlier rounds wrote.
                    self.steps[s].pending_round = self.steps[s].round;
                    self.candidates.push_back(s);
                    return Ok(());
                }
                self.failures.push(Failure {
                    step: step.to_string(),
                    error: error.clone(),
                    policy: policy.clone(),
                });
                if let Some(i) = t.as_ref().and_then(|t| t.item) {
                    let m = self
                        .maps
                        .get_mut(&s)
                        .ok_or_else(|| format!("map item of `{step}` outside a map"))?;
                    m.active = m.active.saturating_sub(1);
                    m.done += 1;
                    if policy == "skip" {
                        self.degraded = true;
                    } else if m.failed.is_none() {
                        m.failed = Some(format!("item {i}: {error}"));
                    }
                    return Ok(());
                }
                self.maps.remove(&s);
                self.steps[s].status = StepStatus::Failed;
                match policy.as_str() {
                    "fail" => {
                        self.failing = true;
                        self.reason
                            .get_or_insert_with(|| format!("step `{step}` failed: {error}"));
                    }
                    "continue" => self.degraded = true,
                    _ => {}
                }
                self.propagate_loss(s);
            }
            EventKind::StepSkipped { step, reason } => {
                let s = self.step_idx(step, hint)?;
                self.steps[s].status = StepStatus::Skipped;
                self.steps[s].triggered = false;
                self.skipped.push((s, reason.clone()));
                self.propagate_loss(s);
            }
            EventKind::Transition { from, to, .. } => {
                let f = self.step_idx(from, hint)?;
                let round = self.steps[f].round;
                for t in to {
                    let i = self.step_idx(t, None)?;
                    let rt = &mut self.steps[i];
                    rt.triggered = true;
                    rt.pending_round = rt.pending_round.max(round);
                    self.candidates.push_back(i);
                }
            }
            EventKind::ModelCalled {
                task,
                step,
                agent,
                model,
                output,
                cost_usd,
                cache,
                ..
            } => {
                self.count_call(step, agent, model, hint)?;
                let add = Cost {
                    cost_usd: *cost_usd,
                    tokens: output.usage.input_tokens + output.usage.output_tokens,
                    model_calls: 1,
                    tool_calls: 0,
                };
                self.charge(step, agent, hint, &add)?;
                self.usage.model_calls += 1;
                match cache {
                    Some(true) => self.usage.cache_hits += 1,
                    Some(false) => self.usage.cache_misses += 1,
                    None => {}
                }
                self.usage.input_tokens += output.usage.input_tokens;
                self.usage.output_tokens += output.usage.output_tokens;
                self.usage.cost_usd += cost_usd;
                self.add_cost(agent, model, |line| {
                    line.model_calls += 1;
                    line.input_tokens += output.usage.input_tokens;
                    line.output_tokens += output.usage.output_tokens;
                    line.cost_usd += cost_usd;
                });
                if let Some(t) = self.tasks.get_mut(task)
                    && t.compressing.is_none()
                {
                    t.history.push(Message {
                        role: Role::Assistant,
                        content: output.content.clone(),
                        tool_calls: output.tool_calls.clone(),
                        tool_call_id: None,
                    });
                    t.logged = t.history.len();
                    t.turn += 1;
                    t.attempt = 1;
                    t.pending_tools = output.tool_calls.len();
                    t.tool_slots = output
                        .tool_calls
                        .iter()
                        .map(|c| (c.id.clone(), None))
                        .collect();
                }
            }
            EventKind::ModelFailed {
                step,
                agent,
                task,
                model,
                ..
            } => {
                self.usage.model_calls += 1;
                self.count_call(step, agent, model, hint)?;
                let add = Cost {
                    model_calls: 1,
                    ..Cost::default()
                };
                self.charge(step, agent, hint, &add)?;
                if let Some(t) = self.tasks.get_mut(task)
                    && t.compressing.take().is_some()
                {
                    t.no_compress = true;
                }
            }
            EventKind::ContextCompressing { task, upto, .. } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.compressing = Some(*upto);
                }
            }
            EventKind::ContextCompressed { task, summary, .. } => {
                if let Some(t) = self.tasks.get_mut(task)
                    && let Some(upto) = t.compressing.take()
                {
                    let first = first_turn(&t.history);
                    let upto = upto.min(t.history.len()).max(first);
                    t.history.splice(
                        first..upto,
                        [Message::text(
                            Role::User,
                            format!("Summary of the earlier conversation:\n{summary}"),
                        )],
                    );
                    // The next call's input shows the summary and what was kept.
                    t.logged = first;
                }
            }
            EventKind::ModelFallback { task, .. } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.model_idx += 1;
                    t.attempt = 1;
                }
            }
            EventKind::ToolCalled {
                task,
                step,
                tool,
                call_id,
                result,
                error,
                ..
            } => {
                self.usage.tool_calls += 1;
                let agent = self.agent_of(*task).map(|a| self.wf.agents[a].name.clone());
                let add = Cost {
                    tool_calls: 1,
                    ..Cost::default()
                };
                self.charge(step, agent.as_deref().unwrap_or(""), hint, &add)?;
                let untrusted = self.agent_of(*task).is_some_and(|a| {
                    self.wf.agents[a]
                        .tools
                        .iter()
                        .any(|t| &t.name == tool && t.untrusted)
                });
                if untrusted && let Some(t) = self.tasks.get_mut(task) {
                    t.tainted = true;
                }
                if let Some(t) = self.tasks.get_mut(task) {
                    let msg = Message::tool_result(call_id.clone(), tool_content(result, error));
                    match t
                        .tool_slots
                        .iter_mut()
                        .find(|(id, m)| id == call_id && m.is_none())
                    {
                        Some(slot) => slot.1 = Some(msg),
                        None => t.history.push(msg),
                    }
                    t.pending_tools = t.pending_tools.saturating_sub(1);
                    if t.pending_tools == 0 {
                        let slots = std::mem::take(&mut t.tool_slots);
                        t.history.extend(slots.into_iter().filter_map(|(_, m)| m));
                    }
                }
            }
            EventKind::OutputRejected { task, reason, .. } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.history.push(Message::text(
                        Role::User,
                        format!(
                            "Your answer was rejected: {reason}. Reply again with only a JSON value that satisfies the schema."
                        ),
                    ));
                    t.repairs += 1;
                }
            }
            EventKind::Retry { task, attempt, .. } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.attempt = *attempt;
                }
            }
            EventKind::TimerStarted {
                timer,
                step,
                task,
                due_us,
                deadline,
                ..
            } => match task {
                Some(t) if *deadline => {
                    self.timers.insert(*timer, TimerRt::Deadline(*t, *due_us));
                }
                Some(t) => {
                    self.timers.insert(*timer, TimerRt::Retry(*t, *due_us));
                }
                None => {
                    let s = self.step_idx(step, hint)?;
                    self.steps[s].timer = Some(*timer);
                    self.timers.insert(*timer, TimerRt::Join(s, *due_us));
                }
            },
            EventKind::TimerFired { timer } => {
                if let Some(TimerRt::Join(s, _)) = self.timers.remove(timer)
                    && self.steps[s].timer == Some(*timer)
                    && self.steps[s].status != StepStatus::Running
                {
                    self.steps[s].timed_out = true;
                    self.candidates.push_back(s);
                }
            }
            EventKind::ChildStarted { task, child, .. } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.child = Some(*child);
                }
            }
            EventKind::ToolStarted {
                task,
                call_id,
                args,
                ..
            } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.intents.push((call_id.clone(), args.clone()));
                }
            }
            EventKind::ApprovalRequested {
                task,
                call_id,
                tool,
                args,
                ..
            } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.waits.push(Wait {
                        call_id: call_id.clone(),
                        tool: tool.clone(),
                        args: args.clone(),
                    });
                }
            }
            EventKind::ApprovalDecided { task, call_id, .. } => {
                if let Some(t) = self.tasks.get_mut(task)
                    && let Some(i) = t.waits.iter().position(|w| &w.call_id == call_id)
                {
                    t.waits.remove(i);
                }
            }
            EventKind::BudgetExceeded {
                scope,
                metric,
                limit,
                ..
            } if scope == "run" => {
                self.halting
                    .get_or_insert_with(|| format!("run budget exceeded: {metric} limit {limit}"));
            }
            EventKind::BudgetAlert { scope, metric, .. } => {
                self.alerted.push((scope.clone(), metric.clone()));
            }
            EventKind::RunSuspended { reason } => {
                self.status = RunStatus::Suspended;
                self.reason = Some(reason.clone());
            }
            EventKind::RunResumed { .. } => {
                self.status = RunStatus::Running;
                self.reason = None;
            }
            EventKind::StateOverridden { updates } => {
                for u in updates {
                    let k = *self
                        .wf
                        .key_index
                        .get(&*u.key)
                        .ok_or_else(|| format!("unknown state key `{}`", u.key))?;
                    self.state.set_input(k, u.value.clone());
                }
            }
            EventKind::ChildFinished { usage, costs, .. } => {
                self.usage.add(usage);
                for c in costs {
                    self.add_cost(&c.agent, &c.model, |line| {
                        line.model_calls += c.model_calls;
                        line.input_tokens += c.input_tokens;
                        line.output_tokens += c.output_tokens;
                        line.cost_usd += c.cost_usd;
                    });
                }
            }
            EventKind::RunFinished { status, reason } => {
                self.status = *status;
                if reason.is_some() {
                    self.reason = reason.clone();
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Add to the cost breakdown.
    fn add_cost(&mut self, agent: &str, model: &str, add: impl FnOnce(&mut CostLine)) {
        let i = match self
            .costs
            .iter()
            .position(|c| c.agent == agent && c.model == model)
        {
            Some(i) => i,
            None => {
                self.costs.push(CostLine {
                    agent: agent.to_string(),
                    model: model.to_string(),
                    ..CostLine::default()
                });
                self.costs.len() - 1
            }
        };
        add(&mut self.costs[i]);
    }

    /// Forget the delegated tasks under a step's task that ended (their replies, if any
    /// arrive, find no task).
    fn drop_delegations(&mut self, root: u64) {
        self.tasks
            .retain(|_, t| t.delegation.as_ref().is_none_or(|d| d.root != root));
    }

    fn count_call(
        &mut self,
        step: &str,
        agent: &str,
        model: &str,
        hint: Option<usize>,
    ) -> Result<(), String> {
        let s = self.step_idx(step, hint)?;
        *self.step_calls.entry((s, model.to_string())).or_default() += 1;
        if let Some(a) = self.wf.agents.iter().position(|a| &*a.name == agent) {
            *self.agent_calls.entry((a, model.to_string())).or_default() += 1;
        }
        Ok(())
    }

    fn charge(
        &mut self,
        step: &str,
        agent: &str,
        hint: Option<usize>,
        add: &Cost,
    ) -> Result<(), String> {
        let s = self.step_idx(step, hint)?;
        self.step_usage.entry(s).or_default().add(add);
        if let Some(a) = self.wf.agents.iter().position(|a| &*a.name == agent) {
            self.agent_usage.entry(a).or_default().add(add);
        }
        Ok(())
    }

    /// The budgets that apply to work of `task`: (scope, budget, used, reserved in scope).
    fn scopes(
        &self,
        step: usize,
        agent: Option<usize>,
    ) -> Vec<(String, crate::spec::BudgetSpec, Cost, Cost)> {
        let mut out = Vec::new();
        let sum = |f: &dyn Fn(&Reservation) -> bool| {
            let mut c = Cost::default();
            for r in self.reserved.values().filter(|r| f(r)) {
                c.add(&r.2);
            }
            c
        };
        if let Some(b) = self.wf.budget {
            out.push(("run".to_string(), b, Cost::of(&self.usage), sum(&|_| true)));
        }
        if let Some(a) = agent
            && let Some(b) = self.wf.agents[a].budget
        {
            out.push((
                format!("agent {}", self.wf.agents[a].name),
                b,
                self.agent_usage.get(&a).copied().unwrap_or_default(),
                sum(&|r| r.0 == Some(a)),
            ));
        }
        if let Some(b) = self.wf.steps[step].budget {
            out.push((
                format!("step {}", self.wf.steps[step].name),
                b,
                self.step_usage.get(&step).copied().unwrap_or_default(),
                sum(&|r| r.1 == step),
            ));
        }
        out
    }

    fn check_budgets(
        &self,
        step: usize,
        agent: Option<usize>,
        need: &Cost,
    ) -> Option<guard::Breach> {
        self.scopes(step, agent)
            .iter()
            .find_map(|(scope, b, used, reserved)| guard::check(scope, b, used, reserved, need))
    }

    /// Record a breach; a run budget halts the run, an agent or step budget fails the task.
    fn on_breach(&mut self, task: Option<u64>, b: guard::Breach) {
        self.emit(
            EventKind::BudgetExceeded {
                scope: b.scope.clone(),
                metric: b.metric.to_string(),
                used: b.used,
                needed: b.needed,
                limit: b.limit,
            },
            None,
        );
        match task {
            Some(t) if b.scope != "run" => self.fail_task(t, b.reason()),
            Some(t) => {
                // The run budget cannot cover this call: it waits (a resume with a larger
                // budget continues it), and the run halts once the calls in flight are in.
                self.halting = Some(b.reason());
                if !self.parked.contains(&t) {
                    self.parked.push(t);
                }
            }
            None => {
                self.halting = Some(b.reason());
            }
        }
    }

    /// Stop the run now: no new work starts, calls in flight are abandoned (the executor drops
    /// them), and the run is `halted`, resumable from its log.
    pub fn halt(&mut self, reason: String) {
        if self.status.is_terminal() {
            return;
        }
        self.emit(
            EventKind::RunFinished {
                status: RunStatus::Halted,
                reason: Some(reason),
            },
            None,
        );
        self.effects.push(Effect::Finish {
            status: RunStatus::Halted,
        });
    }

    /// Halt from outside (the kill switch); returns the effects (a `Finish`).
    pub fn kill(&mut self, reason: String, now_us: u64) -> Vec<Effect> {
        self.now_us = now_us;
        self.halt(reason);
        std::mem::take(&mut self.effects)
    }

    /// Raise an alert for every budget past 80% that has not had one.
    fn budget_alerts(&mut self, step: usize, agent: Option<usize>) {
        for (scope, b, used, _) in self.scopes(step, agent) {
            for (metric, limit, value) in guard::limits(&b) {
                let u = value(&used);
                if u >= 0.8 * limit && !self.alerted.iter().any(|(s, m)| s == &scope && m == metric)
                {
                    self.emit(
                        EventKind::BudgetAlert {
                            scope: scope.clone(),
                            metric: metric.to_string(),
                            used: u,
                            limit,
                        },
                        None,
                    );
                }
            }
        }
    }

    /// A step will not produce a result in this generation: count it against its dependents.
    fn propagate_loss(&mut self, s: usize) {
        let wf = self.wf.clone();
        for &(d, p) in &wf.steps[s].dependents {
            let rt = &mut self.steps[d];
            if std::mem::replace(&mut rt.absorb[p], false) {
                continue;
            }
            if !rt.satisfied[p] {
                rt.failed_needs += 1;
            }
            self.candidates.push_back(d);
        }
    }

    // ------------------------------------------------------------------ deciding

    /// Feed one input; returns the effects to perform. `now_us` stamps the events it records.
    pub fn handle(&mut self, input: Input, now_us: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        self.handle_into(input, now_us, &mut out);
        out
    }

    /// [`RunMachine::handle`], appending the effects to `out` (so that a caller can reuse one
    /// buffer for a whole run).
    pub fn handle_into(&mut self, input: Input, now_us: u64, out: &mut Vec<Effect>) {
        self.now_us = now_us;
        if self.status.is_terminal() {
            return;
        }
        self.apply_input(input);
        if let Some(limit) = self.wf.budget.and_then(|b| b.max_wall_time)
            && self.started_us > 0
            && now_us.saturating_sub(self.started_us) > limit.0.as_micros() as u64
        {
            let b = guard::Breach {
                scope: "run".into(),
                metric: "wall_time_ms",
                used: now_us.saturating_sub(self.started_us) as f64 / 1e3,
                needed: 0.0,
                limit: limit.0.as_millis() as f64,
            };
            self.on_breach(None, b);
        }
        self.settle_into(out);
    }

    fn settle_into(&mut self, out: &mut Vec<Effect>) {
        self.schedule();
        self.arm_deadlines();
        if let Some(e) = self.broken.take() {
            self.failing = true;
            self.reason = Some(format!("internal error: {e}"));
        }
        self.maybe_finish();
        out.append(&mut self.effects);
    }

    fn arm_deadlines(&mut self) {
        for (task, after) in std::mem::take(&mut self.deadlines) {
            let Some(t) = self.tasks.get(&task) else {
                continue;
            };
            let step = self.wf.steps[t.step].name.clone();
            let s = t.step;
            let timer = self.seq;
            self.emit(
                EventKind::TimerStarted {
                    timer,
                    step,
                    task: Some(task),
                    after_ms: after.as_millis() as u64,
                    due_us: self.now_us + after.as_micros() as u64,
                    deadline: true,
                },
                Some(s),
            );
            self.effects.push(Effect::StartTimer { timer, after });
        }
    }

    /// Start what became ready, finish or suspend if nothing is left, hand out the effects.
    fn settle(&mut self) -> Vec<Effect> {
        self.schedule();
        self.arm_deadlines();
        if let Some(e) = self.broken.take() {
            self.failing = true;
            self.reason = Some(format!("internal error: {e}"));
        }
        self.maybe_finish();
        std::mem::take(&mut self.effects)
    }

    fn apply_input(&mut self, input: Input) {
        match input {
            Input::Start { input } => {
                let input = if input.is_null() {
                    Value::Object(Map::new())
                } else {
                    input
                };
                let alerts: Vec<(String, (String, String))> = match &input {
                    Value::Object(map) => map
                        .iter()
                        .filter(|(k, _)| {
                            self.wf
                                .key_index
                                .get(*k)
                                .is_some_and(|i| self.wf.keys[*i].untrusted)
                        })
                        .filter_map(|(k, v)| {
                            let text = match v {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            guard::scan(&text).map(|hit| (k.clone(), hit))
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                self.emit(
                    EventKind::RunStarted {
                        workflow: self.wf.name.clone(),
                        input,
                        parent: None,
                    },
                    None,
                );
                for (key, (pattern, excerpt)) in alerts {
                    self.emit(
                        EventKind::SecurityAlert {
                            source: format!("input {key}"),
                            step: None,
                            pattern,
                            excerpt,
                        },
                        None,
                    );
                }
            }
            Input::CodeReturned { task, result, .. } => {
                if self.tasks.contains_key(&task) {
                    match result {
                        Ok(v) => self.complete_task(task, v),
                        Err(e) => self.fail_task(task, e),
                    }
                }
            }
            Input::ModelReplied {
                task,
                result,
                duration_us,
                replayed,
                cache,
                breaker,
            } => {
                if let Some((target, from, to)) = breaker {
                    self.emit(EventKind::CircuitBreaker { target, from, to }, None);
                }
                if self.tasks.contains_key(&task) {
                    self.on_model(task, result, duration_us, replayed, cache);
                }
            }
            Input::Decision {
                task,
                call_id,
                approved,
                by,
                reason,
                value,
            } => {
                // Checked by `check_decision` before it is fed; an unknown one is ignored.
                if self
                    .check_decision(task, call_id.as_deref(), approved, &value)
                    .is_ok()
                {
                    self.on_decision(task, call_id, approved, by, reason, value);
                }
            }
            Input::ToolReturned {
                task,
                call_id,
                tool,
                args,
                result,
                duration_us,
                replayed,
                breaker,
            } => {
                if let Some((target, from, to)) = breaker {
                    self.emit(EventKind::CircuitBreaker { target, from, to }, None);
                }
                if self.tasks.contains_key(&task) {
                    let (result, error) = match result {
                        Ok(v) => (Some(v), None),
                        Err(e) => (None, Some(e)),
                    };
                    let step = self.task_step_name(task);
                    let s = self.tasks[&task].step;
                    let untrusted = self.agent_of(task).is_some_and(|a| {
                        self.wf.agents[a]
                            .tools
                            .iter()
                            .any(|t| t.name == tool && t.untrusted)
                    });
                    if untrusted
                        && let Some((pattern, excerpt)) = result.as_ref().and_then(|v| {
                            guard::scan(&match v {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                        })
                    {
                        self.emit(
                            EventKind::SecurityAlert {
                                source: format!("tool {tool}"),
                                step: Some(step.clone()),
                                pattern,
                                excerpt,
                            },
                            Some(s),
                        );
                    }
                    self.emit(
                        EventKind::ToolCalled {
                            step,
                            task,
                            tool,
                            call_id,
                            args,
                            result,
                            error,
                            duration_us,
                            replayed,
                        },
                        Some(s),
                    );
                    if self.tasks.get(&task).is_some_and(|t| t.pending_tools == 0) {
                        self.call_model(task);
                    }
                }
            }
            Input::ChildStarted { task, child } => {
                if let Some(t) = self.tasks.get(&task) {
                    let s = t.step;
                    let step = self.wf.steps[s].name.clone();
                    self.emit(EventKind::ChildStarted { step, task, child }, Some(s));
                }
            }
            Input::ChildFinished {
                task,
                child,
                status,
                output,
                reason,
                usage,
                costs,
                ..
            } => {
                if let Some(t) = self.tasks.get(&task) {
                    let s = t.step;
                    let step = self.wf.steps[s].name.clone();
                    self.emit(
                        EventKind::ChildFinished {
                            step,
                            task,
                            child,
                            status,
                            usage,
                            costs,
                        },
                        Some(s),
                    );
                    match status {
                        RunStatus::Succeeded | RunStatus::PartialSuccess => {
                            self.complete_task(task, output)
                        }
                        other => self.fail_task(
                            task,
                            format!(
                                "sub-workflow run {child} ended {other}{}",
                                reason.map(|r| format!(": {r}")).unwrap_or_default()
                            ),
                        ),
                    }
                }
            }
            Input::TimerFired { timer } => {
                if let Some(t) = self.timers.get(&timer).cloned() {
                    self.emit(EventKind::TimerFired { timer }, None);
                    match t {
                        TimerRt::Retry(task, _) => {
                            if self.tasks.contains_key(&task) {
                                self.call_model(task);
                            }
                        }
                        TimerRt::Join(s, _) => self.on_join_timeout(s),
                        TimerRt::Deadline(task, _) => {
                            if self.tasks.contains_key(&task) {
                                let ms = self
                                    .tasks
                                    .get(&task)
                                    .and_then(|t| self.wf.steps[t.step].deadline)
                                    .map_or(0, |d| d.as_millis());
                                self.reserved.remove(&task);
                                self.fail_task(task, format!("step deadline of {ms} ms passed"));
                            }
                        }
                    }
                }
            }
        }
    }

    fn task_step_name(&self, task: u64) -> Name {
        self.tasks
            .get(&task)
            .map(|t| self.wf.steps[t.step].name.clone())
            .unwrap_or_else(|| "?".into())
    }

    fn needs_ok(&self, s: usize) -> bool {
        let def = &self.wf.steps[s];
        let rt = &self.steps[s];
        if def.needs.is_empty() {
            return true;
        }
        if rt.satisfied_count >= def.join.quorum {
            return true;
        }
        rt.timed_out && def.join.on_timeout == OnTimeout::Proceed && rt.satisfied_count > 0
    }

    fn ready(&self, s: usize) -> bool {
        let def = &self.wf.steps[s];
        let rt = &self.steps[s];
        if rt.status == StepStatus::Running {
            return false;
        }
        let trig = rt.triggered || (!def.has_incoming && !def.needs.is_empty());
        trig && self.needs_ok(s)
    }

    fn never_ready(&self, s: usize) -> bool {
        let def = &self.wf.steps[s];
        let rt = &self.steps[s];
        !def.needs.is_empty()
            && rt.status != StepStatus::Running
            && def.needs.len() - rt.failed_needs.min(def.needs.len()) < def.join.quorum
            && rt.satisfied_count < def.join.quorum
    }

    fn schedule(&mut self) {
        while let Some(s) = self.candidates.pop_front() {
            if self.failing || self.status.is_terminal() || self.halting.is_some() {
                continue;
            }
            if self.ready(s) {
                // Rounds are Lamport times, not wall-clock batches: one more than the latest
                // round among the completions that made the step ready. Parallel branches of
                // one fan-out share a round whatever order they finish in.
                let r = self.steps[s].pending_round + 1;
                self.start(s, r);
            } else if self.never_ready(s)
                && !matches!(
                    self.steps[s].status,
                    StepStatus::Skipped | StepStatus::Failed
                )
                && (self.steps[s].triggered || !self.wf.steps[s].has_incoming)
            {
                let wf = self.wf.clone();
                let def = &wf.steps[s];
                let lost: Vec<&str> = def
                    .needs
                    .iter()
                    .filter(|&&n| {
                        matches!(
                            self.steps[n].status,
                            StepStatus::Failed | StepStatus::Skipped
                        )
                    })
                    .map(|&n| &*wf.steps[n].name)
                    .collect();
                let reason = format!("needs {}, which did not complete", quote_list(&lost));
                self.emit(
                    EventKind::StepSkipped {
                        step: def.name.clone(),
                        reason,
                    },
                    Some(s),
                );
            }
        }
    }

    fn maybe_finish(&mut self) {
        if self.status.is_terminal() {
            return;
        }
        if let Some(reason) = self.halting.clone()
            && self
                .tasks
                .iter()
                .all(|(id, t)| self.parked.contains(id) || blocked(t) || self.is_idle_map(t))
        {
            self.candidates.clear();
            self.halt(reason);
            return;
        }
        if !self.candidates.is_empty() {
            return;
        }
        if !self.tasks.is_empty() {
            // Everything left waits for a human: suspend durably; nothing runs meanwhile.
            if !self.failing && self.tasks.values().all(blocked) {
                let mut waiting: Vec<String> = Vec::new();
                let mut ids: Vec<&u64> = self.tasks.keys().collect();
                ids.sort();
                for id in ids {
                    let t = &self.tasks[id];
                    for w in &t.waits {
                        let step = &self.wf.steps[t.step].name;
                        waiting.push(match &w.tool {
                            Some(tool) => {
                                format!("approval of `{tool}` in step `{step}` (task {id})")
                            }
                            None => format!("approval of step `{step}` (task {id})"),
                        });
                    }
                }
                let reason = format!("waiting for {}", waiting.join(", "));
                self.emit(EventKind::RunSuspended { reason }, None);
                self.effects.push(Effect::Finish {
                    status: RunStatus::Suspended,
                });
            }
            return;
        }
        let status = if self.failing {
            RunStatus::Failed
        } else if self.degraded {
            RunStatus::PartialSuccess
        } else {
            RunStatus::Succeeded
        };
        let reason = match status {
            RunStatus::Succeeded => None,
            RunStatus::PartialSuccess => Some(format!(
                "{} step(s) failed, {} skipped",
                self.failures.len(),
                self.skipped.len()
            )),
            _ => self.reason.clone(),
        };
        self.emit(EventKind::RunFinished { status, reason }, None);
        self.effects.push(Effect::Finish { status });
    }

    fn view(&self, reads: &[usize]) -> View {
        View::new(
            reads
                .iter()
                .map(|&k| (self.wf.keys[k].name.clone(), self.state.get(k).clone()))
                .collect(),
        )
    }

    fn template_ctx(&self, reads: &[usize], item: Option<(&str, &Value)>) -> Map<String, Value> {
        let mut ctx: Map<String, Value> = reads
            .iter()
            .map(|&k| {
                (
                    self.wf.keys[k].name.to_string(),
                    (**self.state.get(k)).clone(),
                )
            })
            .collect();
        if let Some((name, v)) = item {
            ctx.insert(name.to_string(), v.clone());
        }
        ctx
    }

    fn start(&mut self, s: usize, round: u32) {
        let wf = self.wf.clone();
        let def = &wf.steps[s];
        if let Some(max) = wf.budget.and_then(|b| b.max_steps)
            && self.usage.steps >= max
        {
            let b = guard::Breach {
                scope: "run".into(),
                metric: "steps",
                used: self.usage.steps as f64,
                needed: 1.0,
                limit: max as f64,
            };
            self.on_breach(None, b);
            return;
        }
        let visit = self.steps[s].visits + 1;
        if visit > def.max_visits {
            self.steps[s].triggered = false;
            self.fail_step(
                s,
                None,
                format!(
                    "visit bound reached: the step already ran {} time(s) (max_visits {})",
                    def.max_visits, def.max_visits
                ),
            );
            return;
        }
        let task = self.seq;
        let started =
            |m: &mut Self, agent: Option<Name>, messages: Vec<Message>, input: Option<Value>| {
                m.emit(
                    EventKind::StepStarted {
                        step: def.name.clone(),
                        task,
                        visit,
                        round,
                        item: None,
                        agent,
                        messages,
                        input,
                    },
                    Some(s),
                );
            };
        if let Some(after) = def.deadline
            && !matches!(def.kind, StepKind::Router | StepKind::Noop)
        {
            // The timer is set right after the step starts (its id follows the task's).
            self.deadlines.push((task, after));
        }
        match &def.kind {
            StepKind::Work(work) => match self.prepare_work(s, work, task, None) {
                Ok((agent, messages, effect)) => {
                    started(self, agent, messages, None);
                    match effect {
                        Some(e) => self.effects.push(e),
                        None => self.call_model(task),
                    }
                }
                Err(e) => {
                    started(self, None, Vec::new(), None);
                    self.fail_task(task, e);
                }
            },
            StepKind::Workflow { child, input } => {
                let mut obj = Map::new();
                let mut err = None;
                for (k, e) in input {
                    match e.eval(|n| self.lookup(n)) {
                        Ok(v) => {
                            obj.insert(k.clone(), v);
                        }
                        Err(x) => {
                            err = Some(format!("input `{k}`: {x}"));
                            break;
                        }
                    }
                }
                let input = Value::Object(obj);
                started(self, None, Vec::new(), Some(input.clone()));
                match err {
                    Some(e) => self.fail_task(task, e),
                    None => self.effects.push(Effect::RunChild {
                        task,
                        child: None,
                        workflow: child.clone(),
                        input,
                    }),
                }
            }
            StepKind::Map(m) => match m.over.eval(|n| self.lookup(n)) {
                Ok(Value::Array(items)) => {
                    started(self, None, Vec::new(), Some(Value::Array(items)));
                    self.pump_map(s);
                }
                Ok(other) => {
                    started(self, None, Vec::new(), None);
                    self.fail_task(
                        task,
                        format!(
                            "map over `{}` gave {}, not a list",
                            m.over.source(),
                            crate::expr::type_name(&other)
                        ),
                    );
                }
                Err(e) => {
                    started(self, None, Vec::new(), None);
                    self.fail_task(task, e);
                }
            },
            StepKind::Router | StepKind::Noop => {
                started(self, None, Vec::new(), None);
                self.complete_task(task, Value::Null);
            }
            StepKind::Approval { message } => {
                let ctx = self.template_ctx(&def.reads, None);
                let rendered = wf.templates.render(message, &ctx);
                started(self, None, Vec::new(), None);
                match rendered {
                    Ok(message) => self.emit(
                        EventKind::ApprovalRequested {
                            step: def.name.clone(),
                            task,
                            call_id: None,
                            tool: None,
                            args: None,
                            message,
                        },
                        Some(s),
                    ),
                    Err(e) => self.fail_task(task, format!("approval message: {e}")),
                }
            }
        }
        // Arm the timeouts of joins waiting on this step.
        for &(d, _) in &def.dependents {
            let dd = &wf.steps[d];
            if let Some(after) = dd.join.timeout
                && self.steps[d].timer.is_none()
                && self.steps[d].status != StepStatus::Running
            {
                let timer = self.seq;
                self.emit(
                    EventKind::TimerStarted {
                        timer,
                        step: dd.name.clone(),
                        task: None,
                        after_ms: after.as_millis() as u64,
                        due_us: self.now_us + after.as_micros() as u64,
                        deadline: false,
                    },
                    Some(d),
                );
                self.effects.push(Effect::StartTimer { timer, after });
            }
        }
    }

    fn lookup(&self, name: &str) -> Option<&Value> {
        self.wf.key_index.get(name).map(|&k| &**self.state.get(k))
    }

    /// Prepare a step's (or map item's) work: for agents the opening messages (the model call
    /// follows the StepStarted event); for code, the effect.
    #[allow(clippy::type_complexity)]
    fn prepare_work(
        &self,
        s: usize,
        work: &Work,
        task: u64,
        item: Option<(&str, &Value)>,
    ) -> Result<(Option<Name>, Vec<Message>, Option<Effect>), String> {
        let def = &self.wf.steps[s];
        match work {
            Work::Agent { agent, prompt } => {
                let a = &self.wf.agents[*agent];
                let ctx = self.template_ctx(&def.reads, item);
                let text = self
                    .wf
                    .templates
                    .render(prompt, &ctx)
                    .map_err(|e| format!("prompt: {e}"))?;
                let mut system = a.instructions.clone();
                if let Some((schema, _)) = &a.output_schema {
                    if !system.is_empty() {
                        system.push_str("\n\n");
                    }
                    system.push_str(
                        "Reply with only a JSON value that satisfies this JSON Schema:\n",
                    );
                    system.push_str(&schema.to_string());
                }
                let mut messages = Vec::with_capacity(2);
                if !system.is_empty() {
                    messages.push(Message::text(Role::System, system));
                }
                messages.push(Message::text(Role::User, text));
                Ok((Some(a.name.clone()), messages, None))
            }
            Work::Code { command, cwd } => {
                let mut input = Map::new();
                input.insert("step".into(), Value::String(def.name.to_string()));
                input.insert("state".into(), self.view(&def.reads).to_json());
                if let Some((_, v)) = item {
                    input.insert("item".into(), v.clone());
                }
                Ok((
                    None,
                    Vec::new(),
                    Some(Effect::RunCode {
                        task,
                        command: command.clone(),
                        cwd: cwd.clone(),
                        input: Value::Object(input),
                        timeout: def.timeout,
                    }),
                ))
            }
            Work::Function { func, .. } => Ok((
                None,
                Vec::new(),
                Some(Effect::CallFunction {
                    task,
                    func: func.clone(),
                    input: StepInput {
                        step: def.name.clone(),
                        item: item.map(|(_, v)| v.clone()),
                        state: self.view(&def.reads),
                    },
                }),
            )),
        }
    }

    /// Start as many map items as the concurrency limit allows; finish the map when all are in.
    fn pump_map(&mut self, s: usize) {
        let wf = self.wf.clone();
        let def = &wf.steps[s];
        let StepKind::Map(md) = &def.kind else { return };
        loop {
            let Some(m) = self.maps.get(&s) else { return };
            if m.failed.is_some() || m.next >= m.items.len() || m.active >= md.concurrency as usize
            {
                break;
            }
            let i = m.next;
            let item = m.items[i].clone();
            let task = self.seq;
            let prepared = self.prepare_work(s, &md.body, task, Some((&md.item_name, &item)));
            let (agent, messages, effect, err) = match prepared {
                Ok((a, msgs, e)) => (a, msgs, e, None),
                Err(e) => (None, Vec::new(), None, Some(e)),
            };
            let is_agent = matches!(md.body, Work::Agent { .. });
            self.emit(
                EventKind::StepStarted {
                    step: def.name.clone(),
                    task,
                    visit: self.steps[s].visits,
                    round: self.steps[s].round,
                    item: Some(i as u32),
                    agent,
                    messages,
                    input: Some(item),
                },
                Some(s),
            );
            match (err, effect) {
                (Some(e), _) => self.fail_task(task, e),
                (None, Some(e)) => self.effects.push(e),
                (None, None) if is_agent => self.call_model(task),
                (None, None) => {}
            }
        }
        let Some(m) = self.maps.get(&s) else { return };
        if m.active == 0 && (m.failed.is_some() || m.done >= m.items.len()) {
            let map_task = m.task;
            match m.failed.clone() {
                Some(e) => self.fail_task(map_task, e),
                None => {
                    let results = Value::Array(m.results.clone());
                    self.complete_task(map_task, results);
                }
            }
        }
    }

    fn complete_task(&mut self, task: u64, value: Value) {
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        if t.delegation.is_some() {
            self.return_delegation(task, Ok(value));
            return;
        }
        let duration_us = self.now_us.saturating_sub(t.started_us);
        let s = t.step;
        let wf = self.wf.clone();
        let def = &wf.steps[s];
        if t.item.is_some() {
            self.emit(
                EventKind::StepCompleted {
                    step: def.name.clone(),
                    task,
                    output: Some(value),
                    duration_us,
                },
                Some(s),
            );
            self.pump_map(s);
            return;
        }
        let round = self.steps[s].round;
        let tag = (round, s as u32);
        let mut updates: Vec<KeyUpdate> = Vec::new();
        let mut problem = None;
        if !def.writes.is_empty() {
            match &value {
                Value::Object(obj) => {
                    for (field, v) in obj {
                        match def.writes.iter().find(|&&k| *wf.keys[k].name == **field) {
                            Some(&k) => updates.push(KeyUpdate {
                                key: wf.keys[k].name.clone(),
                                value: v.clone(),
                            }),
                            None => {
                                problem = Some(format!(
                                    "output field `{field}` is not among the step's `writes` ({})",
                                    def.writes
                                        .iter()
                                        .map(|&k| &*wf.keys[k].name)
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ));
                                break;
                            }
                        }
                    }
                }
                other => {
                    problem = Some(format!(
                        "the step declares `writes`, so its output must be an object, not {}",
                        crate::expr::type_name(other)
                    ))
                }
            }
        }
        if let Some(k) = def.output {
            updates.push(KeyUpdate {
                key: wf.keys[k].name.clone(),
                value,
            });
        }
        if problem.is_none() {
            for u in &updates {
                let k = wf.key_index[&*u.key];
                match self.state.check(k, wf.keys[k].rule, &u.value, tag) {
                    Ok(()) => {}
                    Err(MergeError::Conflict { other_step }) => {
                        problem = Some(format!(
                            "conflicting parallel writes to replace key `{}`: steps `{}` and `{}` both wrote it in round {round}",
                            u.key, wf.steps[other_step as usize].name, def.name
                        ));
                        break;
                    }
                    Err(MergeError::Type(m)) => {
                        problem = Some(format!("state key `{}` {m}", u.key));
                        break;
                    }
                }
            }
        }
        if let Some(p) = problem {
            self.fail_task(task, p);
            return;
        }
        // Loop guard: a step that runs again and changes nothing makes no progress.
        if self.steps[s].visits >= 2
            && !updates.is_empty()
            && updates.iter().all(|u| self.unchanged(u))
        {
            let reason = format!(
                "loop guard: step `{}` ran again (visit {}) and changed no state",
                def.name, self.steps[s].visits
            );
            self.emit(
                EventKind::LoopGuard {
                    step: def.name.clone(),
                    reason: reason.clone(),
                },
                Some(s),
            );
            self.fail_task(task, reason);
            return;
        }
        if !updates.is_empty() {
            self.emit(
                EventKind::StateUpdated {
                    step: def.name.clone(),
                    round,
                    updates,
                },
                Some(s),
            );
        }
        // Routing is part of completing: a condition that cannot be evaluated fails the step
        // (its writes stay recorded) instead of leaving it both completed and failed.
        let branch = match self.choose_branch(s) {
            Ok(b) => b,
            Err(e) => {
                self.fail_task(task, format!("routing: {e}"));
                return;
            }
        };
        self.emit(
            EventKind::StepCompleted {
                step: def.name.clone(),
                task,
                output: None,
                duration_us,
            },
            Some(s),
        );
        if let Some(b) = branch {
            let br = &def.next[b];
            self.emit(
                EventKind::Transition {
                    from: def.name.clone(),
                    to: br.to.iter().map(|&t| wf.steps[t].name.clone()).collect(),
                    when: br.when.as_ref().map(|e| e.source().to_string()),
                },
                Some(s),
            );
        }
    }

    /// A map step's own task waits only for its items.
    fn is_idle_map(&self, t: &TaskRt) -> bool {
        t.item.is_none() && matches!(self.wf.steps[t.step].kind, StepKind::Map(_))
    }

    /// Whether a write would leave its key as it is.
    fn unchanged(&self, u: &KeyUpdate) -> bool {
        let Some(&k) = self.wf.key_index.get(&*u.key) else {
            return false;
        };
        let cur = &**self.state.get(k);
        match self.wf.keys[k].rule {
            crate::spec::MergeRule::Replace => cur == &u.value,
            crate::spec::MergeRule::Merge => match (&u.value, cur) {
                (Value::Object(new), Value::Object(old)) => {
                    new.iter().all(|(ek, ev)| old.get(ek) == Some(ev))
                }
                _ => false,
            },
            crate::spec::MergeRule::Max => match (u.value.as_f64(), cur.as_f64()) {
                (Some(n), Some(c)) => n <= c,
                _ => false,
            },
            crate::spec::MergeRule::Append => u.value.as_array().is_some_and(Vec::is_empty),
            crate::spec::MergeRule::Sum => u.value.as_f64() == Some(0.0),
        }
    }

    /// The first branch of the step's `next` whose condition holds.
    fn choose_branch(&self, s: usize) -> Result<Option<usize>, String> {
        for (i, b) in self.wf.steps[s].next.iter().enumerate() {
            let hit = match &b.when {
                None => true,
                Some(e) => e.eval_bool(|n| self.lookup(n))?,
            };
            if hit {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    fn fail_task(&mut self, task: u64, error: String) {
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        if t.delegation.is_some() {
            self.return_delegation(task, Err(error));
            return;
        }
        let s = t.step;
        if t.item.is_some() {
            let wf = self.wf.clone();
            let StepKind::Map(md) = &wf.steps[s].kind else {
                return;
            };
            let policy = match md.on_item_error {
                OnItemError::Skip => "skip",
                OnItemError::Fail => "fail",
            };
            self.emit(
                EventKind::StepFailed {
                    step: wf.steps[s].name.clone(),
                    task: Some(task),
                    error,
                    policy: policy.into(),
                },
                Some(s),
            );
            self.pump_map(s);
            return;
        }
        self.fail_step(s, Some(task), error);
    }

    fn fail_step(&mut self, s: usize, task: Option<u64>, error: String) {
        let wf = self.wf.clone();
        let def = &wf.steps[s];
        if self.steps[s].retried < def.retries && !self.status.is_terminal() {
            self.emit(
                EventKind::StepFailed {
                    step: def.name.clone(),
                    task,
                    error: format!(
                        "{error} (attempt {} of {}; retrying)",
                        self.steps[s].retried + 1,
                        def.retries + 1
                    ),
                    policy: "retry".into(),
                },
                Some(s),
            );
            return;
        }
        let policy = match def.on_error {
            ErrorPolicy::Fail => "fail".to_string(),
            ErrorPolicy::Continue => "continue".to_string(),
            ErrorPolicy::Goto(t) => wf.steps[t].name.to_string(),
        };
        self.emit(
            EventKind::StepFailed {
                step: def.name.clone(),
                task,
                error,
                policy,
            },
            Some(s),
        );
        if let ErrorPolicy::Goto(t) = def.on_error {
            self.emit(
                EventKind::Transition {
                    from: def.name.clone(),
                    to: vec![wf.steps[t].name.clone()],
                    when: Some("on_error".into()),
                },
                Some(s),
            );
        }
    }

    fn on_join_timeout(&mut self, s: usize) {
        let wf = self.wf.clone();
        let def = &wf.steps[s];
        let rt = &self.steps[s];
        if rt.status == StepStatus::Running || !rt.timed_out {
            return;
        }
        let proceed = def.join.on_timeout == OnTimeout::Proceed && rt.satisfied_count > 0;
        if proceed {
            self.candidates.push_back(s);
            return;
        }
        let waiting: Vec<&str> = def
            .needs
            .iter()
            .enumerate()
            .filter(|(p, _)| !rt.satisfied[*p])
            .map(|(_, &n)| &*wf.steps[n].name)
            .collect();
        let mode = match def.join.mode {
            JoinMode::All => "all",
            JoinMode::Quorum => "quorum",
            JoinMode::Any => "any",
        };
        let msg = format!(
            "join ({mode}) timed out after {} ms: {} of {} needs arrived, {} required (still waiting for {})",
            def.join.timeout.map_or(0, |d| d.as_millis()),
            rt.satisfied_count,
            def.needs.len(),
            def.join.quorum,
            quote_list(&waiting)
        );
        self.steps[s].timed_out = false;
        self.fail_step(s, None, msg);
    }

    // ------------------------------------------------------------------ agents

    fn call_model(&mut self, task: u64) {
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        let wf = self.wf.clone();
        let def = &wf.steps[t.step];
        let agent = match &def.kind {
            StepKind::Work(Work::Agent { agent, .. }) => *agent,
            StepKind::Map(m) => match &m.body {
                Work::Agent { agent, .. } => *agent,
                _ => return,
            },
            _ => return,
        };
        let a = &wf.agents[agent];
        if t.turn >= a.max_turns {
            let msg = format!(
                "agent `{}` used its {} turn(s) without a final answer (max_turns)",
                a.name, a.max_turns
            );
            self.fail_task(task, msg);
            return;
        }
        let m = &a.models[t.model_idx.min(a.models.len() - 1)];
        let timeout = a.timeout.min(def.timeout);
        // Near the model's window, summarise older turns first (the recent ones stay verbatim).
        if let Some(window) = m.context_window
            && !t.no_compress
        {
            let before = estimate_tokens(&t.history);
            let first = first_turn(&t.history);
            let mut upto = t.history.len().saturating_sub(KEEP_VERBATIM);
            // Never separate tool results from the call that asked for them.
            while upto > first && t.history.get(upto).is_some_and(|m| m.role == Role::Tool) {
                upto -= 1;
            }
            if before as f64 > f64::from(window) * m.compress_at && upto > first + 1 {
                let summarizer = m.summarizer.as_deref().unwrap_or(m);
                let transcript: String = t.history[first..upto]
                    .iter()
                    .map(render_message)
                    .collect::<Vec<_>>()
                    .join("\n");
                let request = CompletionRequest {
                    position: None,
                    model: summarizer.name.clone(),
                    agent: a.name.to_string(),
                    step: def.name.to_string(),
                    messages: vec![
                        Message::text(Role::System, SUMMARY_INSTRUCTIONS),
                        Message::text(Role::User, transcript),
                    ],
                    tools: Vec::new(),
                    output_schema: None,
                    max_tokens: summarizer.max_tokens,
                    temperature: None,
                };
                let (model, step) = (summarizer.model.clone(), def.name.clone());
                self.emit(
                    EventKind::ContextCompressing {
                        step,
                        task,
                        upto,
                        before_tokens: before,
                    },
                    Some(t.step),
                );
                self.effects.push(Effect::CallModel {
                    task,
                    model,
                    request,
                    timeout,
                    cache: false,
                    limit: summarizer.limit.clone(),
                    breaker: summarizer.breaker.clone(),
                    rate: summarizer.rate.clone(),
                });
                return;
            }
        }
        if self.halting.is_some() {
            if !self.parked.contains(&task) {
                self.parked.push(task);
            }
            return;
        }
        let Some(request) = self.build_request(task) else {
            return;
        };
        // Reserve the call's worst case before it is sent: its prompt, and as many output
        // tokens as the model may write.
        let input = estimate_tokens(&request.messages)
            + request
                .tools
                .iter()
                .map(|t| (t.parameters.to_string().len() + t.description.len()) as u64 / 4 + 8)
                .sum::<u64>();
        let output = u64::from(m.max_tokens.unwrap_or(DEFAULT_MAX_OUTPUT));
        let need = Cost {
            cost_usd: input as f64 * m.price.input_per_mtok / 1e6
                + output as f64 * m.price.output_per_mtok / 1e6,
            tokens: input + output,
            model_calls: 1,
            tool_calls: 0,
        };
        let step = t.step;
        if let Some(b) = self.check_budgets(step, Some(agent), &need) {
            self.on_breach(Some(task), b);
            return;
        }
        self.reserved.insert(task, (Some(agent), step, need));
        self.effects.push(Effect::CallModel {
            task,
            model: m.model.clone(),
            request,
            timeout,
            cache: m.cache,
            limit: m.limit.clone(),
            breaker: m.breaker.clone(),
            rate: m.rate.clone(),
        });
    }

    /// The request the next model call of `task` sends: its whole conversation so far.
    fn build_request(&self, task: u64) -> Option<CompletionRequest> {
        let t = self.tasks.get(&task)?;
        let def = &self.wf.steps[t.step];
        let ai = self.agent_of(task)?;
        let a = &self.wf.agents[ai];
        let m = &a.models[t.model_idx.min(a.models.len() - 1)];
        Some(CompletionRequest {
            position: Some(CallPosition {
                by_agent: self
                    .agent_calls
                    .get(&(ai, m.name.clone()))
                    .copied()
                    .unwrap_or(0),
                by_step: self
                    .step_calls
                    .get(&(t.step, m.name.clone()))
                    .copied()
                    .unwrap_or(0),
            }),
            model: m.name.clone(),
            agent: a.name.to_string(),
            step: def.name.to_string(),
            messages: t.history.clone(),
            tools: a.tool_defs.clone(),
            output_schema: a.output_schema.as_ref().map(|(s, _)| s.clone()),
            max_tokens: m.max_tokens,
            temperature: a.temperature,
        })
    }

    fn agent_of(&self, task: u64) -> Option<usize> {
        let t = self.tasks.get(&task)?;
        if let Some(d) = &t.delegation {
            return Some(d.agent);
        }
        match &self.wf.steps[t.step].kind {
            StepKind::Work(Work::Agent { agent, .. }) => Some(*agent),
            StepKind::Map(m) => match &m.body {
                Work::Agent { agent, .. } => Some(*agent),
                _ => None,
            },
            _ => None,
        }
    }

    fn on_model(
        &mut self,
        task: u64,
        result: Result<CompletionResponse, ModelError>,
        duration_us: u64,
        replayed: bool,
        cache: Option<bool>,
    ) {
        self.reserved.remove(&task);
        let Some(ai) = self.agent_of(task) else {
            return;
        };
        let wf = self.wf.clone();
        let a = &wf.agents[ai];
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        let s = t.step;
        let step = wf.steps[s].name.clone();
        let turn = t.turn + 1;
        let (attempt, model_idx) = (t.attempt, t.model_idx);
        let input = t.history[t.logged.min(t.history.len())..].to_vec();
        let before = estimate_tokens(&t.history);
        let chain = &a.models;
        let primary = &chain[model_idx.min(chain.len() - 1)];
        // A summary call is answered by the summariser, priced as the summariser.
        let compressing = t.compressing.is_some();
        let m = if compressing {
            primary.summarizer.as_deref().unwrap_or(primary)
        } else {
            primary
        };
        match result {
            Err(error) if compressing => {
                // The summary failed: go on with the full conversation.
                self.emit(
                    EventKind::ModelFailed {
                        step,
                        task,
                        agent: a.name.clone(),
                        model: m.name.clone(),
                        turn,
                        error,
                        duration_us,
                    },
                    Some(s),
                );
                self.call_model(task);
            }
            Err(error) => {
                let retry = error.is_retryable() && attempt <= wf.defaults.model_retries;
                let reason = error.to_string();
                self.emit(
                    EventKind::ModelFailed {
                        step: step.clone(),
                        task,
                        agent: a.name.clone(),
                        model: m.name.clone(),
                        turn,
                        error,
                        duration_us,
                    },
                    Some(s),
                );
                let next = chain.get(model_idx + 1);
                if let (false, Some(next)) = (retry, next) {
                    self.emit(
                        EventKind::ModelFallback {
                            step,
                            task,
                            from: m.name.clone(),
                            to: next.name.clone(),
                            reason: format!("after {attempt} attempt(s): {reason}"),
                        },
                        Some(s),
                    );
                    self.call_model(task);
                } else if retry {
                    // Exponential backoff with jitter (a deterministic draw from the run, the
                    // task and the attempt, so that a replay agrees): between half and all of
                    // base * 2^(attempt-1), so that agents that failed together retry apart.
                    let base = wf.defaults.retry_backoff.0;
                    let full = base.saturating_mul(1u32 << (attempt - 1).min(16));
                    let draw = jitter(self.run_id, task, attempt);
                    let delay = full.mul_f64(0.5 + 0.5 * draw);
                    self.emit(
                        EventKind::Retry {
                            step: step.clone(),
                            task,
                            attempt: attempt + 1,
                            delay_ms: delay.as_millis() as u64,
                            reason,
                        },
                        Some(s),
                    );
                    let timer = self.seq;
                    self.emit(
                        EventKind::TimerStarted {
                            timer,
                            step,
                            task: Some(task),
                            after_ms: delay.as_millis() as u64,
                            due_us: self.now_us + delay.as_micros() as u64,
                            deadline: false,
                        },
                        Some(s),
                    );
                    self.effects.push(Effect::StartTimer {
                        timer,
                        after: delay,
                    });
                } else {
                    self.fail_task(
                        task,
                        format!("model call failed after {attempt} attempt(s): {reason}"),
                    );
                }
            }
            Ok(resp) => {
                let p = &m.price;
                let cost = if replayed || cache == Some(true) {
                    0.0
                } else {
                    resp.usage.input_tokens as f64 * p.input_per_mtok / 1e6
                        + resp.usage.output_tokens as f64 * p.output_per_mtok / 1e6
                };
                let calls = resp.tool_calls.clone();
                let content = resp.content.clone();
                self.emit(
                    EventKind::ModelCalled {
                        step: step.clone(),
                        task,
                        agent: a.name.clone(),
                        model: m.name.clone(),
                        turn,
                        input,
                        output: resp,
                        cost_usd: cost,
                        duration_us,
                        replayed,
                        cache,
                    },
                    Some(s),
                );
                self.budget_alerts(s, Some(ai));
                if compressing {
                    let after = self.tasks.get(&task).map_or(0, |t| {
                        let first = first_turn(&t.history);
                        let upto = t.compressing.unwrap_or(first).min(t.history.len());
                        estimate_tokens(&t.history[..first])
                            + estimate_tokens(&t.history[upto..])
                            + (content.chars().count() as u64).div_ceil(4)
                            + 8
                    });
                    self.emit(
                        EventKind::ContextCompressed {
                            step,
                            task,
                            before_tokens: before,
                            after_tokens: after,
                            summary: content,
                        },
                        Some(s),
                    );
                    self.call_model(task);
                    return;
                }
                if !calls.is_empty() {
                    for c in calls {
                        self.dispatch_tool(task, s, ai, c);
                    }
                    if self.tasks.get(&task).is_some_and(|t| t.pending_tools == 0) {
                        self.call_model(task);
                    }
                    return;
                }
                match &a.output_schema {
                    None => self.complete_task(task, Value::String(content)),
                    Some((_, validator)) => {
                        let parsed: Result<Value, String> =
                            serde_json::from_str(strip_fences(&content))
                                .map_err(|e| format!("the answer is not JSON ({e})"));
                        let checked = parsed.and_then(|v| {
                            let errs: Vec<String> = validator
                                .iter_errors(&v)
                                .take(5)
                                .map(|e| {
                                    let path = e.instance_path().to_string();
                                    if path.is_empty() {
                                        e.to_string()
                                    } else {
                                        format!("at {path}: {e}")
                                    }
                                })
                                .collect();
                            if errs.is_empty() {
                                Ok(v)
                            } else {
                                Err(format!(
                                    "the answer does not match the schema: {}",
                                    errs.join("; ")
                                ))
                            }
                        });
                        match checked {
                            Ok(v) => self.complete_task(task, v),
                            Err(reason) => {
                                let repairs = self.tasks[&task].repairs;
                                if repairs < wf.defaults.output_repairs {
                                    self.emit(
                                        EventKind::OutputRejected { step, task, reason },
                                        Some(s),
                                    );
                                    self.call_model(task);
                                } else {
                                    self.fail_task(
                                        task,
                                        format!(
                                            "malformed structured output after {repairs} repair request(s): {reason}"
                                        ),
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn dispatch_tool(&mut self, task: u64, s: usize, ai: usize, call: baton_core::ToolCall) {
        let wf = self.wf.clone();
        let a = &wf.agents[ai];
        let step = wf.steps[s].name.clone();
        let reject = |m: &mut Self, error: ToolError, call: baton_core::ToolCall| {
            m.emit(
                EventKind::ToolCalled {
                    step: step.clone(),
                    task,
                    tool: call.name,
                    call_id: call.id,
                    args: call.args,
                    result: None,
                    error: Some(error),
                    duration_us: 0,
                    replayed: false,
                },
                Some(s),
            );
        };
        if let Some(dl) = a.delegates.iter().find(|d| d.tool == call.name) {
            let (target, handoff) = (dl.agent, dl.handoff);
            self.delegate(task, s, ai, call, target, handoff);
            return;
        }
        let Some(tr) = a.tools.iter().find(|t| t.name == call.name) else {
            let available = if a.tools.is_empty() {
                "none".to_string()
            } else {
                a.tools
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let error = ToolError::Unknown {
                name: call.name.clone(),
                available,
            };
            reject(self, error, call);
            return;
        };
        let errs: Vec<String> = tr
            .validator
            .iter_errors(&call.args)
            .take(5)
            .map(|e| {
                let path = e.instance_path().to_string();
                if path.is_empty() {
                    e.to_string()
                } else {
                    format!("at {path}: {e}")
                }
            })
            .collect();
        if !errs.is_empty() {
            let error = ToolError::InvalidArguments {
                tool: call.name.clone(),
                message: errs.join("; "),
            };
            reject(self, error, call);
            return;
        }
        // Loop guard: the same tool with the same arguments again and again makes no progress.
        let repeats = self.tasks.get(&task).map_or(0, |t| {
            t.history
                .iter()
                .flat_map(|m| m.tool_calls.iter())
                .filter(|c| c.name == call.name && c.args == call.args)
                .count()
        });
        if repeats as u32 >= wf.defaults.loop_guard_repeats.max(2) {
            let reason = format!(
                "loop guard: `{}` was called {repeats} times with the same arguments {}",
                call.name, call.args
            );
            self.emit(
                EventKind::LoopGuard {
                    step: step.clone(),
                    reason: reason.clone(),
                },
                Some(s),
            );
            self.fail_task(task, reason);
            return;
        }
        let need = Cost {
            tool_calls: 1,
            ..Cost::default()
        };
        if let Some(b) = self.check_budgets(s, Some(ai), &need) {
            self.on_breach(Some(task), b);
            return;
        }
        // Tier: the tool's own, raised by any policy rule whose condition holds. Rules see the
        // arguments and the run's state (trusted data), never what an agent claims.
        let mut tier = tr.tier;
        let mut why = String::new();
        for rule in tr.policy.iter() {
            let hit = rule.when.eval_bool(|n| {
                if n == "args" {
                    Some(&call.args)
                } else {
                    self.lookup(n)
                }
            });
            match hit {
                Ok(true) if rule.tier > tier => {
                    tier = rule.tier;
                    why = rule.reason.clone();
                }
                Ok(_) => {}
                Err(e) => {
                    tier = Tier::Forbid;
                    why = format!("policy could not be evaluated: {e}");
                    break;
                }
            }
        }
        // An agent whose context holds untrusted content gets no side effect without a human.
        let tainted = self.tasks.get(&task).is_some_and(|t| t.tainted);
        if tainted && tr.effect != SideEffect::ReadOnly && tier == Tier::Auto {
            tier = Tier::Approve;
            why = "the agent's context holds untrusted content".into();
        }
        match tier {
            Tier::Forbid => {
                let error = ToolError::Forbidden {
                    tool: call.name.clone(),
                    reason: if why.is_empty() {
                        "the tool is forbidden".into()
                    } else {
                        why
                    },
                };
                reject(self, error, call);
            }
            Tier::Approve => {
                let message = format!(
                    "agent `{}` wants to call `{}` with {}{}",
                    a.name,
                    call.name,
                    call.args,
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({why})")
                    }
                );
                self.emit(
                    EventKind::ApprovalRequested {
                        step,
                        task,
                        call_id: Some(call.id),
                        tool: Some(call.name),
                        args: Some(call.args),
                        message,
                    },
                    Some(s),
                );
            }
            Tier::Auto => self.start_tool(task, s, ai, call.id, call.name, call.args, true),
        }
    }

    /// Start a delegated (or handed-over) task for `target`, unless the depth bound or a loop
    /// forbids it; then the call is refused with the reason, and a `loop_guard` event says why.
    fn delegate(
        &mut self,
        task: u64,
        s: usize,
        ai: usize,
        call: baton_core::ToolCall,
        target: usize,
        handoff: bool,
    ) {
        let wf = self.wf.clone();
        let step = wf.steps[s].name.clone();
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        let chain: Vec<usize> = match &t.delegation {
            Some(d) => d.chain.clone(),
            None => vec![ai],
        };
        let names = |c: &[usize]| {
            c.iter()
                .map(|&i| &*wf.agents[i].name)
                .collect::<Vec<_>>()
                .join(" -> ")
        };
        let refuse = |m: &mut Self, reason: String, call: baton_core::ToolCall| {
            m.emit(
                EventKind::LoopGuard {
                    step: step.clone(),
                    reason: reason.clone(),
                },
                Some(s),
            );
            m.emit(
                EventKind::ToolCalled {
                    step: step.clone(),
                    task,
                    tool: call.name.clone(),
                    call_id: call.id,
                    args: call.args,
                    result: None,
                    error: Some(ToolError::Forbidden {
                        tool: call.name,
                        reason,
                    }),
                    duration_us: 0,
                    replayed: false,
                },
                Some(s),
            );
        };
        let task_text = call.args.get("task").and_then(Value::as_str).unwrap_or("");
        if task_text.trim().is_empty() {
            let error = ToolError::InvalidArguments {
                tool: call.name.clone(),
                message: "`task` must be a non-empty string saying what to do".into(),
            };
            self.emit(
                EventKind::ToolCalled {
                    step,
                    task,
                    tool: call.name,
                    call_id: call.id,
                    args: call.args,
                    result: None,
                    error: Some(error),
                    duration_us: 0,
                    replayed: false,
                },
                Some(s),
            );
            return;
        }
        if chain.contains(&target) {
            let mut path = chain.clone();
            path.push(target);
            let reason = format!(
                "delegation loop: {} (`{}` is already working on this task further up)",
                names(&path),
                wf.agents[target].name
            );
            refuse(self, reason, call);
            return;
        }
        let depth = chain.len() as u32;
        let bound = wf.defaults.max_delegation_depth;
        if depth > bound {
            let mut path = chain.clone();
            path.push(target);
            let reason = format!(
                "delegation depth bound reached: {} would be depth {depth}, the bound is {bound} (defaults.max_delegation_depth)",
                names(&path)
            );
            refuse(self, reason, call);
            return;
        }
        let from = wf.agents[ai].name.clone();
        let to_def = &wf.agents[target];
        let child = self.seq;
        let context = call.args.get("context").cloned().unwrap_or(Value::Null);
        let message = serde_json::json!({
            "from": &*from,
            "to": &*to_def.name,
            "run_id": self.run_id.to_string(),
            "task_id": child,
            "parent_task_id": task,
            "kind": if handoff { "handoff" } else { "task" },
            "payload": {"task": task_text, "context": context},
            "confidence": null,
            "timestamp_us": self.now_us,
            "deadline": null,
            "retry_count": 0,
        });
        let mut system = to_def.instructions.clone();
        if let Some((schema, _)) = &to_def.output_schema {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str("Reply with only a JSON value that satisfies this JSON Schema:\n");
            system.push_str(&schema.to_string());
        }
        let mut text = format!(
            "{} from `{from}`: {task_text}",
            if handoff { "Handed over" } else { "Task" }
        );
        if !context.is_null() {
            text.push_str("\n\nContext:\n");
            text.push_str(&match &context {
                Value::String(c) => c.clone(),
                other => serde_json::to_string_pretty(other).unwrap_or_default(),
            });
        }
        let mut messages = Vec::with_capacity(2);
        if !system.is_empty() {
            messages.push(Message::text(Role::System, system));
        }
        messages.push(Message::text(Role::User, text));
        self.emit(
            EventKind::Delegated {
                step,
                task: child,
                parent_task: task,
                call_id: call.id,
                from,
                to: to_def.name.clone(),
                depth,
                handoff,
                message,
                messages,
            },
            Some(s),
        );
        self.call_model(child);
    }

    /// A delegated task ended: its answer (or error) goes back to the delegating task, or, for a
    /// handoff, ends the delegating task with it.
    fn return_delegation(&mut self, task: u64, result: Result<Value, String>) {
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        let Some(d) = t.delegation.clone() else {
            return;
        };
        let s = t.step;
        let duration_us = self.now_us.saturating_sub(t.started_us);
        let wf = self.wf.clone();
        let parent_agent = self.agent_of(d.parent);
        let from = wf.agents[d.agent].name.clone();
        let to = parent_agent.map_or_else(|| from.clone(), |a| wf.agents[a].name.clone());
        let confidence = result
            .as_ref()
            .ok()
            .and_then(|v| v.get("confidence"))
            .and_then(Value::as_f64);
        let message = match &result {
            Ok(v) => serde_json::json!({
                "from": &*from, "to": &*to, "run_id": self.run_id.to_string(),
                "task_id": task, "parent_task_id": d.parent, "kind": "result",
                "payload": v, "confidence": confidence, "timestamp_us": self.now_us,
            }),
            Err(e) => serde_json::json!({
                "from": &*from, "to": &*to, "run_id": self.run_id.to_string(),
                "task_id": task, "parent_task_id": d.parent, "kind": "error",
                "payload": null, "error": e, "timestamp_us": self.now_us,
            }),
        };
        self.emit(
            EventKind::DelegationReturned {
                step: wf.steps[s].name.clone(),
                task,
                parent_task: d.parent,
                call_id: d.call_id.clone(),
                from,
                to: to.clone(),
                handoff: d.handoff,
                message,
                duration_us,
            },
            Some(s),
        );
        if d.handoff {
            match result {
                Ok(v) => self.complete_task(d.parent, v),
                Err(e) => self.fail_task(
                    d.parent,
                    format!("handoff to `{}` failed: {e}", wf.agents[d.agent].name),
                ),
            }
        } else if self
            .tasks
            .get(&d.parent)
            .is_some_and(|p| p.pending_tools == 0 && p.waits.is_empty())
        {
            self.call_model(d.parent);
        }
    }

    /// Journal the intent of a side-effecting call (once per logical call) and ask the executor
    /// to run it.
    #[allow(clippy::too_many_arguments)]
    fn start_tool(
        &mut self,
        task: u64,
        s: usize,
        ai: usize,
        call_id: String,
        name: String,
        args: Value,
        journal: bool,
    ) {
        let wf = self.wf.clone();
        let Some(tr) = wf.agents[ai].tools.iter().find(|t| t.name == name) else {
            return;
        };
        let idempotency_key = format!("{}:{}:{}", self.run_id, task, call_id);
        if journal && tr.effect != SideEffect::ReadOnly {
            self.emit(
                EventKind::ToolStarted {
                    step: wf.steps[s].name.clone(),
                    task,
                    tool: name.clone(),
                    call_id: call_id.clone(),
                    args: args.clone(),
                    idempotency_key: idempotency_key.clone(),
                },
                Some(s),
            );
        }
        let ctx = ToolContext {
            run_id: self.run_id.to_string(),
            step: wf.steps[s].name.to_string(),
            idempotency_key,
        };
        self.effects.push(Effect::CallTool {
            task,
            call_id,
            name,
            tool: tr.tool.clone(),
            args,
            ctx,
            timeout: tr.timeout,
            breaker: Some(tr.breaker.clone()),
        });
    }

    // ------------------------------------------------------------------ humans, resume, forks

    /// Pending human decisions: (task, step, call id, tool, arguments).
    pub fn pending_approvals(&self) -> Vec<PendingApproval> {
        let mut ids: Vec<&u64> = self.tasks.keys().collect();
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            let t = &self.tasks[id];
            for w in &t.waits {
                out.push(PendingApproval {
                    task: *id,
                    step: self.wf.steps[t.step].name.to_string(),
                    call_id: w.call_id.clone(),
                    tool: w.tool.clone(),
                    args: w.args.clone(),
                });
            }
        }
        out
    }

    /// Check a decision before it is recorded: the approval must be pending, a rejection needs
    /// a reason, and edited tool arguments must satisfy the tool's schema.
    pub fn check_decision(
        &self,
        task: u64,
        call_id: Option<&str>,
        approved: bool,
        value: &Option<Value>,
    ) -> Result<(), String> {
        let t = self
            .tasks
            .get(&task)
            .ok_or_else(|| format!("task {task} has no pending approval"))?;
        let w = t
            .waits
            .iter()
            .find(|w| w.call_id.as_deref() == call_id)
            .ok_or_else(|| format!("task {task} has no pending approval for that call"))?;
        if approved && let (Some(tool), Some(edit)) = (&w.tool, value) {
            let ai = self.agent_of(task).ok_or("not an agent task")?;
            let tr = self.wf.agents[ai]
                .tools
                .iter()
                .find(|x| &x.name == tool)
                .ok_or_else(|| format!("tool `{tool}` is no longer available"))?;
            let errs: Vec<String> = tr
                .validator
                .iter_errors(edit)
                .take(5)
                .map(|e| e.to_string())
                .collect();
            if !errs.is_empty() {
                return Err(format!(
                    "the edited arguments do not satisfy `{tool}`'s schema: {}",
                    errs.join("; ")
                ));
            }
        }
        Ok(())
    }

    fn on_decision(
        &mut self,
        task: u64,
        call_id: Option<String>,
        approved: bool,
        by: String,
        reason: Option<String>,
        value: Option<Value>,
    ) {
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        let s = t.step;
        let Some(w) = t.waits.iter().find(|w| w.call_id == call_id).cloned() else {
            return;
        };
        let step = self.wf.steps[s].name.clone();
        // For a tool call the decision carries the exact arguments that will run.
        let value = match (&w.tool, approved) {
            (Some(_), true) => value.or(w.args.clone()),
            _ => value,
        };
        self.emit(
            EventKind::ApprovalDecided {
                step: step.clone(),
                task,
                call_id: call_id.clone(),
                approved,
                by: by.clone(),
                reason: reason.clone(),
                value: value.clone(),
            },
            Some(s),
        );
        match (w.tool, call_id) {
            (Some(tool), Some(call_id)) => {
                let Some(ai) = self.agent_of(task) else {
                    return;
                };
                if approved {
                    let args = value.unwrap_or(Value::Null);
                    self.start_tool(task, s, ai, call_id, tool, args, true);
                } else {
                    self.emit(
                        EventKind::ToolCalled {
                            step,
                            task,
                            tool: tool.clone(),
                            call_id,
                            args: w.args.unwrap_or(Value::Null),
                            result: None,
                            error: Some(ToolError::Rejected {
                                tool,
                                reason: reason.unwrap_or_else(|| format!("rejected by {by}")),
                            }),
                            duration_us: 0,
                            replayed: false,
                        },
                        Some(s),
                    );
                    if self.tasks.get(&task).is_some_and(|t| t.pending_tools == 0) {
                        self.call_model(task);
                    }
                }
            }
            _ => {
                if approved {
                    let mut out = Map::new();
                    out.insert("approved".into(), Value::Bool(true));
                    out.insert("by".into(), Value::String(by));
                    if let Some(r) = reason {
                        out.insert("comment".into(), Value::String(r));
                    }
                    if let Some(v) = value {
                        out.insert("data".into(), v);
                    }
                    self.complete_task(task, Value::Object(out));
                } else {
                    let why = reason.unwrap_or_else(|| "no reason given".into());
                    self.fail_task(task, format!("rejected by {by}: {why}"));
                }
            }
        }
    }

    /// Continue a replayed run: record that it resumed and restart the work that was in flight
    /// when its last process stopped. Completed model calls and tool calls are never repeated
    /// (their results are in the log); a side-effecting call whose outcome is unknown is repeated
    /// only if its tool is `read_only` or `idempotent` (with the same idempotency key), and
    /// otherwise put to a human.
    ///
    /// `first` is an input to apply right after the restart, before the run could suspend
    /// again: a human decision.
    pub fn resume(&mut self, now_us: u64, first: Option<Input>) -> Vec<Effect> {
        self.now_us = now_us;
        if matches!(
            self.status,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::PartialSuccess
        ) {
            return Vec::new();
        }
        let mut ids: Vec<u64> = self.tasks.keys().copied().collect();
        ids.sort();
        let restarted: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| !blocked(&self.tasks[id]))
            .collect();
        self.emit(EventKind::RunResumed { restarted }, None);
        // A resumed run gets a fresh look at its budgets (they may have been raised).
        self.halting = None;
        self.parked.clear();
        let wf = self.wf.clone();
        // Timers keep their original due time.
        let mut timers: Vec<(u64, u64)> = self
            .timers
            .iter()
            .map(|(id, t)| match t {
                TimerRt::Join(_, due) | TimerRt::Retry(_, due) | TimerRt::Deadline(_, due) => {
                    (*id, *due)
                }
            })
            .collect();
        timers.sort();
        let retrying: Vec<u64> = self
            .timers
            .values()
            .filter_map(|t| match t {
                TimerRt::Retry(task, _) => Some(*task),
                _ => None,
            })
            .collect();
        for (timer, due) in timers {
            self.effects.push(Effect::StartTimer {
                timer,
                after: Duration::from_micros(due.saturating_sub(now_us)),
            });
        }
        for id in ids {
            let Some(t) = self.tasks.get(&id).cloned() else {
                continue;
            };
            let s = t.step;
            let def = &wf.steps[s];
            let work = match (&def.kind, t.item) {
                (StepKind::Work(w), None) => Some(w),
                (StepKind::Map(m), Some(_)) => Some(&m.body),
                (StepKind::Map(_), None) => {
                    self.pump_map(s);
                    None
                }
                (StepKind::Workflow { child, .. }, None) => {
                    let input = self.child_input(s).unwrap_or(Value::Null);
                    self.effects.push(Effect::RunChild {
                        task: id,
                        child: t.child,
                        workflow: child.clone(),
                        input,
                    });
                    None
                }
                _ => None,
            };
            let Some(work) = work else { continue };
            match work {
                Work::Agent { .. } => {
                    if t.pending_tools > 0 {
                        self.recover_tools(id, &t);
                    } else if !retrying.contains(&id) {
                        self.call_model(id);
                    }
                }
                _ => {
                    let item = t.item.and_then(|i| {
                        self.maps
                            .get(&s)
                            .and_then(|m| m.items.get(i as usize).cloned())
                    });
                    let name = match &def.kind {
                        StepKind::Map(m) => m.item_name.clone(),
                        _ => String::new(),
                    };
                    match self.prepare_work(s, work, id, item.as_ref().map(|v| (name.as_str(), v)))
                    {
                        Ok((_, _, Some(e))) => self.effects.push(e),
                        Ok(_) => {}
                        Err(e) => self.fail_task(id, e),
                    }
                }
            }
        }
        if let Some(input) = first {
            self.apply_input(input);
        }
        self.settle()
    }

    fn recover_tools(&mut self, task: u64, t: &TaskRt) {
        let Some(ai) = self.agent_of(task) else {
            return;
        };
        let wf = self.wf.clone();
        let Some(last) = t.history.iter().rev().find(|m| m.role == Role::Assistant) else {
            return;
        };
        for call in &last.tool_calls {
            let answered = t
                .tool_slots
                .iter()
                .any(|(id, m)| id == &call.id && m.is_some());
            let waiting = t
                .waits
                .iter()
                .any(|w| w.call_id.as_deref() == Some(&call.id));
            if answered || waiting {
                continue;
            }
            let Some(tr) = wf.agents[ai].tools.iter().find(|x| x.name == call.name) else {
                continue;
            };
            // The arguments that were journaled (possibly edited by a human) are the ones to use.
            let journaled = t.intents.iter().find(|(id, _)| id == &call.id);
            let started = journaled.is_some();
            let args = journaled.map_or_else(|| call.args.clone(), |(_, a)| a.clone());
            if started && !tr.effect.safe_to_repeat() {
                let message = format!(
                    "the outcome of `{}` with {} is unknown (the process stopped during the call); it is {:?} and will not be repeated blindly: approve to run it again, reject to record it as failed",
                    call.name, args, tr.effect
                );
                self.emit(
                    EventKind::ApprovalRequested {
                        step: wf.steps[t.step].name.clone(),
                        task,
                        call_id: Some(call.id.clone()),
                        tool: Some(call.name.clone()),
                        args: Some(args),
                        message,
                    },
                    Some(t.step),
                );
            } else {
                self.start_tool(
                    task,
                    t.step,
                    ai,
                    call.id.clone(),
                    call.name.clone(),
                    args,
                    !started,
                );
            }
        }
    }

    fn child_input(&self, s: usize) -> Option<Value> {
        let StepKind::Workflow { input, .. } = &self.wf.steps[s].kind else {
            return None;
        };
        let mut obj = Map::new();
        for (k, e) in input {
            obj.insert(k.clone(), e.eval(|n| self.lookup(n)).ok()?);
        }
        Some(Value::Object(obj))
    }

    /// Set state keys by hand (a fork with changed state); recorded as an event.
    pub fn override_state(
        &mut self,
        updates: Vec<(String, Value)>,
        now_us: u64,
    ) -> Result<(), String> {
        self.now_us = now_us;
        let mut list = Vec::new();
        for (k, v) in updates {
            let i = self
                .wf
                .key_index
                .get(&k)
                .ok_or_else(|| format!("`{k}` is not a state key"))?;
            list.push(KeyUpdate {
                key: self.wf.keys[*i].name.clone(),
                value: v,
            });
        }
        self.emit(EventKind::StateOverridden { updates: list }, None);
        Ok(())
    }

    /// Record that this run is a fork of another.
    pub fn mark_forked(&mut self, from: RunId, at: u64, now_us: u64) {
        self.now_us = now_us;
        self.emit(EventKind::Forked { from, at }, None);
    }

    /// Every model call and tool result recorded in a run, with the exact request that produced
    /// it: the material of a replay cache. Fails on a log that does not fit the workflow.
    pub fn recorded_calls(
        wf: Arc<Workflow>,
        run_id: RunId,
        events: &[Event],
    ) -> Result<Recorded, RunError> {
        let mut m = RunMachine::new(wf, run_id);
        let mut out = Recorded::default();
        for ev in events {
            match &ev.kind {
                EventKind::ModelCalled { task, output, .. } => {
                    if let Some(req) = m.build_request(*task) {
                        out.models.push((req, output.clone()));
                    }
                }
                EventKind::ToolCalled {
                    tool,
                    args,
                    result,
                    error,
                    ..
                } => {
                    let r = match (result, error) {
                        (_, Some(e)) => Err(e.clone()),
                        (Some(v), None) => Ok(v.clone()),
                        (None, None) => Ok(Value::Null),
                    };
                    if !matches!(
                        r,
                        Err(ToolError::Unknown { .. }
                            | ToolError::InvalidArguments { .. }
                            | ToolError::Forbidden { .. }
                            | ToolError::Rejected { .. })
                    ) {
                        out.tools.push((tool.clone(), args.clone(), r));
                    }
                }
                _ => {}
            }
            m.evolve(ev, None)
                .map_err(|message| RunError::Nondeterminism {
                    seq: ev.seq,
                    message,
                })?;
            m.seq += 1;
        }
        Ok(out)
    }
}

fn quote_list(names: &[&str]) -> String {
    if names.is_empty() {
        return "nothing".into();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
