//! The scripted model: a deterministic [`Model`] whose replies, tool calls, latencies, token
//! counts and injected faults come from a YAML (or JSON) file. It is meant for tests, demos
//! and offline runs; the file format is described in `docs/scripted-model.md`.
//!
//! Replies are keyed by the request's step id or, when the script has no entry for the step,
//! by its agent name. Each key's replies form a sequence consumed one per call; `rules` pick a
//! reply from the content of the last user message instead, so concurrent calls (a map over
//! items) get the same answers whatever order they arrive in.
//!
//! ```
//! use baton_core::{CompletionRequest, Message, Model, Role};
//! use baton_providers::scripted::ScriptedModel;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = ScriptedModel::from_yaml_str(
//!     r#"
//! agents:
//!   greeter:
//!     - text: "Hello!"
//!       usage: {input_tokens: 12, output_tokens: 3}
//! "#,
//!     "inline",
//! )?;
//! let reply = model
//!     .complete(CompletionRequest {
//!         model: "scripted".into(),
//!         agent: "greeter".into(),
//!         step: "greet".into(),
//!         messages: vec![Message::text(Role::User, "Say hello")],
//!         tools: Vec::new(),
//!         output_schema: None,
//!         max_tokens: None,
//!         temperature: None,
//!         position: None,
//!     })
//!     .await?;
//! assert_eq!(reply.content, "Hello!");
//! assert_eq!(reply.usage.output_tokens, 3);
//! assert_eq!(model.agent_calls("greeter"), 1);
//! # Ok(())
//! # }
//! ```

mod format;
#[cfg(test)]
mod tests;

use baton_core::{
    CompletionRequest, CompletionResponse, Message, Model, ModelError, Role, TokenUsage, ToolCall,
};
use format::{Entry, Reply, ReplyKind, RuleAnswer, Script, Then, ToolCallSpec, UsageSpec};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Why a script could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptError {
    /// The file could not be read.
    #[error("cannot read script {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML, or not a valid script.
    #[error("invalid script {origin}{}: {message}", location_suffix(*line, *column))]
    Invalid {
        /// The file (or the name given to [`ScriptedModel::from_yaml_str`]).
        origin: String,
        /// 1-based line of the problem, when known.
        line: Option<u64>,
        /// 1-based column of the problem, when known.
        column: Option<u64>,
        /// What is wrong.
        message: String,
    },
}

/// `:line:column`, or as much of it as is known.
fn location_suffix(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        (Some(line), None) => format!(":{line}"),
        _ => String::new(),
    }
}

impl ScriptError {
    /// Turn a serde-saphyr error into a located [`ScriptError::Invalid`].
    fn invalid(origin: &str, error: &serde_saphyr::Error) -> Self {
        let location = error
            .location()
            .filter(|location| location.line() > 0)
            .map(|location| (location.line(), location.column()));
        // The plain rendering ends with " at line L, column C"; the location is kept in
        // fields of its own, so the message drops it rather than say it twice.
        let mut message = error.without_snippet().to_string();
        if let Some((line, column)) = location {
            let suffix = format!(" at line {line}, column {column}");
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_string();
            }
        }
        // serde-saphyr's hint is addressed to the program loading the file, not to the
        // script's author.
        if let Some(stripped) =
            message.strip_suffix(", set DuplicateKeyPolicy in Options if acceptable")
        {
            message = stripped.to_string();
        }
        ScriptError::Invalid {
            origin: origin.to_string(),
            line: location.map(|(line, _)| line),
            column: location.map(|(_, column)| column),
            message,
        }
    }
}

/// What a script's replies are keyed by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScriptKey {
    /// Replies for one workflow step (these take priority over the agent's).
    Step(String),
    /// Replies for one agent.
    Agent(String),
}

impl fmt::Display for ScriptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScriptKey::Step(step) => write!(f, "step {step}"),
            ScriptKey::Agent(agent) => write!(f, "agent {agent}"),
        }
    }
}

/// How the calls routed to one key of the script were answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyStats {
    /// Every call routed to the key, whatever its outcome.
    pub calls: u64,
    /// Calls answered from the key's reply sequence (including repeated or cycled replies).
    pub from_sequence: u64,
    /// Calls answered by one of the key's rules.
    pub from_rules: u64,
    /// Calls that found the sequence (or a rule's sequence) used up, with `then: error`.
    pub exhausted: u64,
}

/// Per-key progress, behind the model's mutex.
#[derive(Debug, Default)]
struct KeyState {
    /// Index of the next reply of the sequence.
    next: usize,
    /// Index of the next reply of each rule that has a sequence (by rule position).
    rule_next: Vec<usize>,
    /// Counters reported by [`ScriptedModel::stats`].
    stats: KeyStats,
}

/// Mutable state of a [`ScriptedModel`].
#[derive(Debug, Default)]
struct State {
    keys: BTreeMap<ScriptKey, KeyState>,
    /// Calls for which the script has no entry.
    unmatched: u64,
}

/// A deterministic model that answers from a script. See the [module docs](self).
///
/// Sequence positions are kept per key behind a mutex, so one model can serve concurrent
/// calls; the reply is chosen when [`Model::complete`] is called, and the returned future then
/// only waits for the reply's latency (with `tokio::time::sleep`) before resolving.
#[derive(Debug)]
pub struct ScriptedModel {
    /// The file the script came from, for messages.
    origin: String,
    /// Latency of replies that give none.
    default_latency: Duration,
    /// Usage of answers that give none (field by field).
    default_usage: UsageSpec,
    /// Replies keyed by agent.
    agents: BTreeMap<String, Entry>,
    /// Replies keyed by step.
    steps: BTreeMap<String, Entry>,
    /// Sequence positions and statistics.
    state: Mutex<State>,
}

/// The reply picked for a call, before its latency has passed.
struct Planned {
    latency: Duration,
    outcome: Result<CompletionResponse, ModelError>,
}

impl ScriptedModel {
    /// Load a script from a YAML or JSON file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ScriptError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ScriptError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml_str(&text, path.display().to_string())
    }

    /// Load a script from YAML (or JSON) text; `origin` names it in errors (a file name, or
    /// something like `"inline"`).
    pub fn from_yaml_str(text: &str, origin: impl Into<String>) -> Result<Self, ScriptError> {
        let origin = origin.into();
        let mut script: Script =
            serde_saphyr::from_str(text).map_err(|error| ScriptError::invalid(&origin, &error))?;
        script.assign_tool_call_ids();

        let mut keys = BTreeMap::new();
        let entries = script
            .steps
            .iter()
            .map(|(name, entry)| (ScriptKey::Step(name.clone()), entry))
            .chain(
                script
                    .agents
                    .iter()
                    .map(|(name, entry)| (ScriptKey::Agent(name.clone()), entry)),
            );
        for (key, entry) in entries {
            let state = KeyState {
                rule_next: vec![0; entry.rules.len()],
                ..KeyState::default()
            };
            keys.insert(key, state);
        }

        Ok(ScriptedModel {
            origin,
            default_latency: script.latency.map(|latency| latency.0).unwrap_or_default(),
            default_usage: script.usage.unwrap_or_default(),
            agents: script.agents,
            steps: script.steps,
            state: Mutex::new(State { keys, unmatched: 0 }),
        })
    }

    /// The name of the script's source (its path, or the origin given to
    /// [`ScriptedModel::from_yaml_str`]).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// How the calls to every key of the script were answered, keys without calls included.
    pub fn stats(&self) -> BTreeMap<ScriptKey, KeyStats> {
        self.lock()
            .keys
            .iter()
            .map(|(key, state)| (key.clone(), state.stats))
            .collect()
    }

    /// Calls routed to the agent's entry (not those answered by a step entry).
    pub fn agent_calls(&self, agent: &str) -> u64 {
        self.key_calls(&ScriptKey::Agent(agent.to_string()))
    }

    /// Calls routed to the step's entry.
    pub fn step_calls(&self, step: &str) -> u64 {
        self.key_calls(&ScriptKey::Step(step.to_string()))
    }

    /// Calls for which the script had no entry (they failed with `ModelError::Config`).
    pub fn unmatched_calls(&self) -> u64 {
        self.lock().unmatched
    }

    /// Every call made, answered or not.
    pub fn total_calls(&self) -> u64 {
        let state = self.lock();
        state.unmatched + state.keys.values().map(|key| key.stats.calls).sum::<u64>()
    }

    /// Rewind every sequence to its first reply and zero the statistics.
    pub fn reset(&self) {
        let mut state = self.lock();
        state.unmatched = 0;
        for key in state.keys.values_mut() {
            key.next = 0;
            key.rule_next.iter_mut().for_each(|next| *next = 0);
            key.stats = KeyStats::default();
        }
    }

    fn key_calls(&self, key: &ScriptKey) -> u64 {
        self.lock()
            .keys
            .get(key)
            .map_or(0, |state| state.stats.calls)
    }

    /// The state; a panic elsewhere while it was held cannot leave it inconsistent (every
    /// update is a plain counter write), so a poisoned lock is simply taken over.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Choose the reply for a request and advance the key's counters.
    fn pick(&self, request: &CompletionRequest) -> Result<&Reply, ModelError> {
        let (key, entry) = if let Some(entry) = self.steps.get(&request.step) {
            (ScriptKey::Step(request.step.clone()), entry)
        } else if let Some(entry) = self.agents.get(&request.agent) {
            (ScriptKey::Agent(request.agent.clone()), entry)
        } else {
            self.lock().unmatched += 1;
            return Err(self.no_entry(request));
        };

        let mut state = self.lock();
        let key_state = state.keys.entry(key.clone()).or_default();
        key_state.stats.calls += 1;

        if let Some(text) = last_user_text(&request.messages) {
            let matching = entry
                .rules
                .iter()
                .enumerate()
                .find(|(_, rule)| text.contains(rule.contains.as_str()));
            if let Some((index, rule)) = matching {
                let picked = match &rule.answer {
                    RuleAnswer::Fixed(reply) => Ok(reply),
                    RuleAnswer::Sequence(replies) => {
                        if key_state.rule_next.len() <= index {
                            key_state.rule_next.resize(index + 1, 0);
                        }
                        next_reply(replies, entry.then, &mut key_state.rule_next[index])
                            .ok_or(replies.len())
                    }
                };
                return match picked {
                    Ok(reply) => {
                        key_state.stats.from_rules += 1;
                        Ok(reply)
                    }
                    Err(replies) => {
                        key_state.stats.exhausted += 1;
                        let what = format!(
                            "{key} rule {} (when contains {:?})",
                            index + 1,
                            rule.contains
                        );
                        Err(self.exhausted(&what, replies))
                    }
                };
            }
        }

        // A run tells where the call stands; a resumed run then continues the script where the
        // interrupted process left it instead of starting over.
        if let Some(pos) = request.position {
            key_state.next = match key {
                ScriptKey::Step(_) => pos.by_step,
                ScriptKey::Agent(_) => pos.by_agent,
            } as usize;
        }
        match next_reply(&entry.replies, entry.then, &mut key_state.next) {
            Some(reply) => {
                key_state.stats.from_sequence += 1;
                Ok(reply)
            }
            None => {
                key_state.stats.exhausted += 1;
                Err(self.exhausted(&key.to_string(), entry.replies.len()))
            }
        }
    }

    fn exhausted(&self, what: &str, replies: usize) -> ModelError {
        let plural = if replies == 1 { "reply" } else { "replies" };
        ModelError::Config {
            message: format!(
                "script exhausted for {what} after {replies} {plural} (script {})",
                self.origin
            ),
        }
    }

    fn no_entry(&self, request: &CompletionRequest) -> ModelError {
        fn list(map: &BTreeMap<String, Entry>) -> String {
            if map.is_empty() {
                "(none)".to_string()
            } else {
                map.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        }
        ModelError::Config {
            message: format!(
                "script {} has no replies for step {} or agent {}; it has steps: {}; agents: {}",
                self.origin,
                request.step,
                request.agent,
                list(&self.steps),
                list(&self.agents)
            ),
        }
    }

    /// Turn a picked reply into the call's outcome.
    fn plan(&self, reply: &Reply, request: &CompletionRequest) -> Planned {
        let latency = reply.latency.unwrap_or(self.default_latency);
        let outcome = match &reply.kind {
            ReplyKind::Answer {
                content,
                tool_calls,
            } => {
                let tool_calls: Vec<ToolCall> = tool_calls.iter().map(to_tool_call).collect();
                let input_tokens = reply
                    .usage
                    .input_tokens
                    .or(self.default_usage.input_tokens)
                    .unwrap_or_else(|| estimate_input_tokens(&request.messages));
                let output_tokens = reply
                    .usage
                    .output_tokens
                    .or(self.default_usage.output_tokens)
                    .unwrap_or_else(|| estimate_output_tokens(content, &tool_calls));
                Ok(CompletionResponse {
                    content: content.clone(),
                    tool_calls,
                    usage: TokenUsage {
                        input_tokens,
                        output_tokens,
                    },
                })
            }
            ReplyKind::Http { status, message } => Err(ModelError::Http {
                status: *status,
                message: message.clone(),
            }),
            ReplyKind::Timeout => Err(ModelError::Timeout {
                after_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            }),
            ReplyKind::ConnectionReset => Err(ModelError::Connection {
                message: "connection reset by peer (scripted)".to_string(),
            }),
        };
        Planned { latency, outcome }
    }
}

impl Model for ScriptedModel {
    /// Answer from the script. The reply is chosen (and the key's sequence advanced) when this
    /// is called; the future waits for the reply's latency and then resolves. A request the
    /// script has no reply for fails at once with `ModelError::Config`.
    fn complete(
        &self,
        request: CompletionRequest,
    ) -> impl Future<Output = Result<CompletionResponse, ModelError>> + Send {
        let planned = self.pick(&request).map(|reply| self.plan(reply, &request));
        async move {
            let planned = planned?;
            if !planned.latency.is_zero() {
                tokio::time::sleep(planned.latency).await;
            }
            planned.outcome
        }
    }
}

/// The next reply of a sequence under its exhaustion rule, advancing `next`.
fn next_reply<'a>(replies: &'a [Reply], then: Then, next: &mut usize) -> Option<&'a Reply> {
    let index = *next;
    *next = next.saturating_add(1);
    if let Some(reply) = replies.get(index) {
        return Some(reply);
    }
    match then {
        Then::Error => None,
        Then::RepeatLast => replies.last(),
        Then::Cycle => replies.get(index.checked_rem(replies.len())?),
    }
}

/// The content of the last user message, if any.
fn last_user_text(messages: &[Message]) -> Option<&str> {
    messages
        .iter()
        .rev()
        .find(|message| message.role == Role::User)
        .map(|message| message.content.as_str())
}

fn to_tool_call(spec: &ToolCallSpec) -> ToolCall {
    ToolCall {
        id: spec.id.clone().unwrap_or_default(),
        name: spec.name.clone(),
        args: spec.args.clone(),
    }
}

/// Characters of a tool call for estimation: its name and its arguments as compact JSON.
fn tool_call_chars(call: &ToolCall) -> usize {
    call.name.chars().count() + call.args.to_string().chars().count()
}

/// Estimated prompt tokens: the characters of every message (content, plus the name and
/// compact-JSON arguments of each tool call it carries) divided by 4, rounded up.
pub(crate) fn estimate_input_tokens(messages: &[Message]) -> u64 {
    let chars: usize = messages
        .iter()
        .map(|message| {
            message.content.chars().count()
                + message
                    .tool_calls
                    .iter()
                    .map(tool_call_chars)
                    .sum::<usize>()
        })
        .sum();
    chars.div_ceil(4) as u64
}

/// Estimated completion tokens: the characters of the content plus, for each tool call, its
/// name and compact-JSON arguments, divided by 4, rounded up.
pub(crate) fn estimate_output_tokens(content: &str, tool_calls: &[ToolCall]) -> u64 {
    let chars = content.chars().count() + tool_calls.iter().map(tool_call_chars).sum::<usize>();
    chars.div_ceil(4) as u64
}
