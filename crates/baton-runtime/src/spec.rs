//! The low-level workflow description: plain data as written in YAML (or built in Rust).
//!
//! Nothing here is validated beyond its shape; [`crate::compile`] turns a [`WorkflowSpec`] into
//! a [`crate::Workflow`]. Every reference carries the position it was written at ([`Loc`]) so
//! that compile errors can name file, line and column.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

/// A position in a source file (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub col: u32,
}

/// A value and, when it came from a file, where it was written.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Loc<T> {
    /// The value.
    pub value: T,
    /// Where it was written; `None` for values built in code.
    pub pos: Option<Pos>,
}

impl<T> Loc<T> {
    /// A value built in code (no position).
    pub fn new(value: T) -> Self {
        Loc { value, pos: None }
    }
}

impl<T> From<T> for Loc<T> {
    fn from(value: T) -> Self {
        Loc::new(value)
    }
}

impl From<&str> for Loc<String> {
    fn from(value: &str) -> Self {
        Loc::new(value.to_string())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Loc<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        let line = s.referenced.line();
        let pos = (line > 0).then(|| Pos {
            line: line as u32,
            col: s.referenced.column() as u32,
        });
        Ok(Loc {
            value: s.value,
            pos,
        })
    }
}

/// An ordered map written as a YAML mapping, keeping each key's position.
#[derive(Clone, Debug, PartialEq)]
pub struct Entries<T>(pub Vec<(Loc<String>, T)>);

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Entries<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Entries<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(Loc<String>, T)> = Vec::new();
                while let Some(k) = map.next_key::<Loc<String>>()? {
                    if out.iter().any(|(e, _)| e.value == k.value) {
                        return Err(de::Error::custom(format!("duplicate key `{}`", k.value)));
                    }
                    let v = map.next_value::<T>()?;
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Entries(Vec::new()))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// One item or a list of items (`needs: a` or `needs: [a, b]`).
#[derive(Clone, Debug, PartialEq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

enum RawNames {
    One(String),
    Many(Vec<Loc<String>>),
}

impl<'de> Deserialize<'de> for RawNames {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawNames;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a name or a list of names")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(RawNames::One(s.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<Loc<String>>()? {
                    out.push(v);
                }
                Ok(RawNames::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for OneOrMany<Loc<String>> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Deserialize through `Loc` so that a single name keeps its position.
        let raw = Loc::<RawNames>::deserialize(d)?;
        Ok(OneOrMany(match raw.value {
            RawNames::One(value) => vec![Loc {
                value,
                pos: raw.pos,
            }],
            RawNames::Many(v) => v,
        }))
    }
}

/// A duration written as `250ms`, `2s`, `5m`, `1h` or a number of milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationSpec(pub Duration);

/// Parse `250ms`, `2s`, `1.5s`, `5m`, `1h`, or plain milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try `250ms`, `2s`, `5m`)"))?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n * 1e3,
        "m" | "min" => n * 60e3,
        "h" => n * 3600e3,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{s}` (use ms, s, m, h)"
            ));
        }
    };
    if !ms.is_finite() || ms < 0.0 {
        return Err(format!("`{s}` is not a valid duration"));
    }
    Ok(Duration::from_micros((ms * 1e3) as u64))
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as `250ms`, `2s` or `5m`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(DurationSpec(Duration::from_millis(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|v| DurationSpec(Duration::from_millis(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(DurationSpec).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A command: a list of arguments, or a string run by `sh -c`.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandSpec(pub Vec<String>);

impl<'de> Deserialize<'de> for CommandSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CommandSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command: a list of arguments or a shell string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CommandSpec(vec!["sh".into(), "-c".into(), v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<String>()? {
                    out.push(v);
                }
                if out.is_empty() {
                    return Err(de::Error::custom("a command needs at least a program"));
                }
                Ok(CommandSpec(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// How writes to a state key combine with its current value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeRule {
    /// The new value replaces the old; two writes in one round are an error.
    #[default]
    Replace,
    /// Lists: the new value's items (or the value itself) are appended.
    Append,
    /// Objects: the new value's entries are merged in, entry by entry.
    #[serde(alias = "merge_map")]
    Merge,
    /// Numbers: added.
    Sum,
    /// Numbers: the larger is kept ("at least").
    #[serde(alias = "at_least")]
    Max,
}

impl MergeRule {
    /// The rule as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            MergeRule::Replace => "replace",
            MergeRule::Append => "append",
            MergeRule::Merge => "merge",
            MergeRule::Sum => "sum",
            MergeRule::Max => "max",
        }
    }
}

/// A declared state key.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct KeySpec {
    /// Merge rule.
    pub merge: MergeRule,
    /// Initial value (else `null`, `[]` for append, `{}` for merge, `0` for sum).
    pub default: Option<Value>,
    /// What the key holds.
    pub description: String,
    /// The value comes from outside (an e-mail, a web page): agents that read it get no
    /// side-effecting tools without a human's approval.
    pub untrusted: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySpecFull {
    #[serde(default)]
    merge: MergeRule,
    #[serde(default)]
    default: Option<Value>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    untrusted: bool,
}

impl<'de> Deserialize<'de> for KeySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeySpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a merge rule (replace, append, merge, sum, max) or {merge, default}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let merge = MergeRule::deserialize(de::value::StrDeserializer::<E>::new(v))?;
                Ok(KeySpec {
                    merge,
                    ..KeySpec::default()
                })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(KeySpec::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let f = KeySpecFull::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(KeySpec {
                    merge: f.merge,
                    default: f.default,
                    description: f.description,
                    untrusted: f.untrusted,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A model alias: which provider serves it and at what price.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// `scripted`, `openai` or `anthropic`.
    pub provider: Loc<String>,
    /// The provider's model name.
    #[serde(default)]
    pub model: Option<String>,
    /// For the scripted provider: the script file, relative to the workflow file.
    #[serde(default)]
    pub script: Option<Loc<String>>,
    /// Base URL of an HTTP provider.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Price per million tokens.
    #[serde(default)]
    pub price: Option<PriceSpec>,
    /// Upper bound on completion tokens per call.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Stream replies (pieces reach the progress display as they arrive).
    #[serde(default)]
    pub stream: bool,
    /// Models to try, in order, when this one fails for good (retries exhausted or an error
    /// that retrying cannot fix).
    #[serde(default)]
    pub fallback: Vec<Loc<String>>,
    /// Answer identical requests from the response cache in the run store.
    #[serde(default)]
    pub cache: bool,
    /// The model's context window in tokens (default: from the price table, else none).
    #[serde(default)]
    pub context_window: Option<u32>,
    /// Share of the window at which older turns are summarised (default 0.8).
    #[serde(default)]
    pub compress_at: Option<f64>,
    /// The model alias that writes summaries (default: this model).
    #[serde(default)]
    pub summarizer: Option<Loc<String>>,
    /// Calls in flight at once to this model, across every run of the process.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Requests a minute to this model, across every run of the process.
    #[serde(default)]
    pub rate_per_minute: Option<u32>,
    /// Consecutive retryable failures that open the model's circuit breaker (default 5).
    #[serde(default)]
    pub breaker_failures: Option<u32>,
    /// How long an open breaker refuses calls before one trial (default 30s).
    #[serde(default)]
    pub breaker_cooldown: Option<DurationSpec>,
}

/// Price of a model, US dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Default, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    /// Per million prompt tokens.
    #[serde(default)]
    pub input_per_mtok: f64,
    /// Per million completion tokens.
    #[serde(default)]
    pub output_per_mtok: f64,
}

/// An agent: a role with instructions, a model and tools.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// What the agent is for.
    #[serde(default)]
    pub description: String,
    /// System instructions.
    #[serde(default)]
    pub instructions: String,
    /// Model alias (default: the alias `default`, or the only model).
    #[serde(default)]
    pub model: Option<Loc<String>>,
    /// Tools it may call.
    #[serde(default)]
    pub tools: Vec<Loc<String>>,
    /// JSON Schema its final answer must satisfy.
    #[serde(default)]
    pub output_schema: Option<Loc<Value>>,
    /// Bound on model calls in one turn.
    #[serde(default)]
    pub max_turns: Option<u32>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Per-call timeout.
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// What this agent may consume in the run.
    #[serde(default)]
    pub budget: Option<BudgetSpec>,
    /// Workers this agent may delegate sub-tasks to at run time (a supervisor): it gets one
    /// `delegate_to_<worker>` tool each, whose result is the worker's answer.
    #[serde(default)]
    pub delegates: OneOrMany<Loc<String>>,
    /// Peers this agent may hand the task over to: it gets one `handoff_to_<peer>` tool each;
    /// the peer sees only what is handed over, and its answer is the step's answer.
    #[serde(default)]
    pub handoffs: OneOrMany<Loc<String>>,
}

/// A tool declared in the workflow.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ToolDecl {
    /// What it does (shown to the model).
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments.
    #[serde(default, alias = "schema")]
    pub parameters: Option<Loc<Value>>,
    /// A subprocess that speaks JSON on stdin/stdout.
    #[serde(default)]
    pub command: Option<Loc<CommandSpec>>,
    /// Per-call timeout.
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// Side-effect class: read_only, idempotent, compensatable, irreversible (the default).
    #[serde(default)]
    pub effect: Option<baton_core::SideEffect>,
    /// Environment of a subprocess tool (values may use `{{secret.NAME}}`).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Permission tier: auto (default), approve (a human approves each call), forbid.
    #[serde(default)]
    pub tier: baton_core::Tier,
    /// Rules that raise the tier from the arguments (and trusted state).
    #[serde(default)]
    pub policy: Vec<PolicyRule>,
    /// Its results come from outside (web pages, e-mails): they mark the agent's context as
    /// untrusted and are scanned for instructions aimed at the agents.
    #[serde(default)]
    pub untrusted: bool,
    /// Consecutive failures that open the tool's circuit breaker (default 5).
    #[serde(default)]
    pub breaker_failures: Option<u32>,
    /// How long an open breaker refuses calls before one trial (default 30s).
    #[serde(default)]
    pub breaker_cooldown: Option<DurationSpec>,
}

/// Limits on what a run, an agent or a step may consume. Model calls reserve their worst case
/// before they are sent, so concurrent agents cannot overspend together.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// US dollars.
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    /// Input plus output tokens.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Model calls.
    #[serde(default)]
    pub max_model_calls: Option<u64>,
    /// Tool calls.
    #[serde(default)]
    pub max_tool_calls: Option<u64>,
    /// Steps started (run budget only).
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// Wall time from the run's start (run budget only).
    #[serde(default)]
    pub max_wall_time: Option<DurationSpec>,
}

/// A rule raising a tool call's tier: `when` the CEL condition over `args` (and state keys)
/// holds, the call needs at least `tier`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// CEL over `args` and state keys.
    pub when: Loc<String>,
    /// The tier the call needs when the rule matches.
    pub tier: baton_core::Tier,
    /// Shown to the model or the human.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The built-in tools a workflow enables, with their settings.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BuiltinsSpec {
    /// `http_get`: GET on allowed hosts.
    #[serde(default)]
    pub http_get: Option<HttpGetSpec>,
    /// `sql_query`: read-only SQL.
    #[serde(default)]
    pub sql_query: Option<SqlQuerySpec>,
    /// `file_read`, `file_write`, `file_list` inside a sandbox directory.
    #[serde(default)]
    pub files: Option<FilesSpec>,
    /// `calculator`.
    #[serde(default)]
    pub calculator: Option<serde_json::Map<String, Value>>,
    /// `outbox`: messages recorded, never sent.
    #[serde(default)]
    pub outbox: Option<OutboxSpec>,
}

/// Settings of `http_get`.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpGetSpec {
    /// Hosts it may fetch (`api.example.com`, `*.example.com`).
    pub allow_hosts: Vec<String>,
    /// Headers sent only to a host (values may use `{{secret.NAME}}`).
    #[serde(default)]
    pub host_headers:
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    /// Allow plain `http://` (default: https only).
    #[serde(default)]
    pub allow_http: bool,
    /// Largest body kept.
    #[serde(default)]
    pub max_bytes: Option<usize>,
    /// Per-request timeout.
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
}

/// Settings of `sql_query`.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SqlQuerySpec {
    /// A SQLite file (relative to the workflow) or a PostgreSQL URL (may use `{{secret.NAME}}`).
    pub url: Loc<String>,
    /// Row limit.
    #[serde(default)]
    pub max_rows: Option<usize>,
}

/// Settings of the file tools.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FilesSpec {
    /// The sandbox directory, relative to the workflow file (it must exist).
    pub sandbox: Loc<String>,
}

/// Settings of `outbox`.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OutboxSpec {
    /// A JSON-lines file, relative to the workflow file (default: kept in memory).
    #[serde(default)]
    pub file: Option<String>,
}

/// An MCP server whose tools become the workflow's tools (`server__tool`).
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct McpServerSpec {
    /// stdio: the program and its arguments.
    #[serde(default)]
    pub command: Option<Loc<CommandSpec>>,
    /// stdio: variables set for the program.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// stdio: names of variables copied from baton's environment.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// stdio: inherit baton's whole environment.
    #[serde(default)]
    pub inherit_env: bool,
    /// stdio: working directory, relative to the workflow file.
    #[serde(default)]
    pub cwd: Option<String>,
    /// HTTP: the MCP endpoint.
    #[serde(default)]
    pub url: Option<Loc<String>>,
    /// HTTP: headers sent with every request.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// HTTP: environment variable holding a bearer token.
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    /// Per-call timeout.
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// Bound on start-up, handshake and listing the tools.
    #[serde(default)]
    pub startup_timeout: Option<DurationSpec>,
    /// Side-effect class per tool (the server's own tool names).
    #[serde(default)]
    pub effects: std::collections::BTreeMap<String, baton_core::SideEffect>,
}

/// One branch of a transition: go `to` these steps `when` the condition holds.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchSpec {
    /// A CEL expression over state; absent means always.
    #[serde(default)]
    pub when: Option<Loc<String>>,
    /// Target step(s).
    pub to: OneOrMany<Loc<String>>,
}

/// Where a step goes when it completes: one step, or a list of branches (first match wins).
#[derive(Clone, Debug, PartialEq)]
pub struct NextSpec(pub Vec<BranchSpec>);

enum RawNext {
    One(String),
    Branches(Vec<BranchSpec>),
}

impl<'de> Deserialize<'de> for RawNext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawNext;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a step id or a list of {when, to} branches")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawNext::One(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<BranchSpec>()? {
                    out.push(b);
                }
                Ok(RawNext::Branches(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for NextSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Loc::<RawNext>::deserialize(d)?;
        Ok(NextSpec(match raw.value {
            RawNext::One(value) => vec![BranchSpec {
                when: None,
                to: OneOrMany(vec![Loc {
                    value,
                    pos: raw.pos,
                }]),
            }],
            RawNext::Branches(b) => b,
        }))
    }
}

/// How a step waits for its `needs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinMode {
    /// Every need must complete.
    #[default]
    All,
    /// `quorum` of them.
    Quorum,
    /// The first one.
    Any,
}

/// What a join does when its timeout expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// The join step fails.
    #[default]
    Fail,
    /// The join proceeds with what has arrived (if at least one need completed).
    Proceed,
}

/// Join settings of a step.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    /// all, quorum or any.
    #[serde(default)]
    pub mode: JoinMode,
    /// For `quorum`: how many.
    #[serde(default)]
    pub quorum: Option<Loc<u32>>,
    /// Longest wait, counted from the start of the first need.
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// What happens on timeout.
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

/// What to do with a failing map item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnItemError {
    /// The map step fails.
    #[default]
    Fail,
    /// The item's result is `null`; the map goes on.
    Skip,
}

/// A map step: the same work over every item of a list.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapSpec {
    /// CEL expression over state giving the list.
    pub over: Loc<String>,
    /// Name of the item in prompts and code input (default `item`).
    #[serde(default, rename = "as")]
    pub item_name: Option<Loc<String>>,
    /// Agent run per item.
    #[serde(default)]
    pub agent: Option<Loc<String>>,
    /// Prompt template per item (with `agent`).
    #[serde(default)]
    pub prompt: Option<Loc<String>>,
    /// Subprocess run per item.
    #[serde(default)]
    pub run: Option<Loc<CommandSpec>>,
    /// Rust function run per item.
    #[serde(default)]
    pub function: Option<Loc<String>>,
    /// Items in flight at once (default 4).
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// What a failing item does.
    #[serde(default)]
    pub on_item_error: OnItemError,
}

/// One step of a workflow.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique id.
    pub id: Loc<String>,
    /// What the step is for.
    #[serde(default)]
    pub description: String,
    /// Agent step: the agent.
    #[serde(default)]
    pub agent: Option<Loc<String>>,
    /// Agent step: the prompt template.
    #[serde(default)]
    pub prompt: Option<Loc<String>>,
    /// Code step: a subprocess speaking JSON on stdin/stdout.
    #[serde(default)]
    pub run: Option<Loc<CommandSpec>>,
    /// Code step: a Rust function registered with the runtime.
    #[serde(default)]
    pub function: Option<Loc<String>>,
    /// Sub-workflow step: the workflow file, relative to this one.
    #[serde(default)]
    pub workflow: Option<Loc<String>>,
    /// Sub-workflow input: child key -> CEL expression over this workflow's state.
    #[serde(default)]
    pub input: Entries<Loc<String>>,
    /// Router step: branches, first match wins.
    #[serde(default)]
    pub router: Option<Vec<BranchSpec>>,
    /// Map step.
    #[serde(default)]
    pub map: Option<MapSpec>,
    /// Approval step: the message template shown to the human; the run suspends until someone
    /// approves (the step completes) or rejects (the step fails).
    #[serde(default)]
    pub approval: Option<Loc<String>>,
    /// How the step waits for its needs.
    #[serde(default)]
    pub join: Option<Loc<JoinSpec>>,
    /// Steps that must complete first.
    #[serde(default)]
    pub needs: OneOrMany<Loc<String>>,
    /// State keys the step may see.
    #[serde(default)]
    pub reads: OneOrMany<Loc<String>>,
    /// State key receiving the step's whole output.
    #[serde(default)]
    pub output: Option<Loc<String>>,
    /// State keys receiving the fields of the step's (object) output.
    #[serde(default)]
    pub writes: OneOrMany<Loc<String>>,
    /// Where to go on completion.
    #[serde(default)]
    pub next: Option<NextSpec>,
    /// On failure: `fail` (default), `continue`, or a step id to route to.
    #[serde(default)]
    pub on_error: Option<Loc<String>>,
    /// Bound on how many times the step may run in one run.
    #[serde(default)]
    pub max_visits: Option<u32>,
    /// Timeout of the step's work (per call for agents).
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// What is lost if this step fails (shown in the result).
    #[serde(default)]
    pub impact: Option<String>,
    /// What this step may consume (all its visits and items together).
    #[serde(default)]
    pub budget: Option<BudgetSpec>,
    /// Run the step again this many times when it fails, before `on_error` applies.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Longest time one visit of the step may take, all its calls included; past it the
    /// step fails (the `timeout` field bounds each call).
    #[serde(default)]
    pub deadline: Option<DurationSpec>,
    /// Debate block: pro and contra agents argue for a bounded number of rounds, then an
    /// arbitrator decides (see `docs/patterns/debate.md`).
    #[serde(default)]
    pub debate: Option<Loc<crate::patterns::debate::DebateSpec>>,
    /// Reflection / verification block: a producer drafts, a verifier checks the draft and
    /// sends it back with reasons until it passes or a bound is reached (see
    /// `docs/patterns/reflect.md`).
    #[serde(default)]
    pub reflect: Option<Loc<crate::patterns::reflect::ReflectSpec>>,
    /// Progressive refinement block: passes that narrow the scope one after the other, ending
    /// early when a pass finds nothing worth pursuing (see `docs/patterns/refine.md`).
    #[serde(default)]
    pub refine: Option<Loc<crate::patterns::refine::RefineSpec>>,
    /// Consensus vote block: voters answer the same task with structured answers, a tally
    /// accepts the majority and sends dissenters back once (see `docs/patterns/vote.md`).
    #[serde(default)]
    pub vote: Option<Loc<crate::patterns::vote::VoteSpec>>,
    /// Weighted synthesis block: numeric findings merged by confidence × authority (see
    /// `docs/patterns/synthesize.md`).
    #[serde(default)]
    pub synthesize: Option<Loc<crate::patterns::synthesize::SynthesizeSpec>>,
    /// Best-of-n block: candidates in parallel, a judge picks one (see
    /// `docs/patterns/best-of.md`).
    #[serde(default)]
    pub best_of: Option<Loc<crate::patterns::best_of::BestOfSpec>>,
    /// Swarm block: one agent over every item of a list, then a reducer (see
    /// `docs/patterns/swarm.md`).
    #[serde(default)]
    pub swarm: Option<Loc<crate::patterns::swarm::SwarmSpec>>,
    /// A Rust function supplied by a pattern expansion (never written in YAML): when set, the
    /// step is a function step running it, and `function` is only its display name.
    #[serde(skip)]
    pub builtin: Option<BuiltinFn>,
}

/// A step function generated by a pattern (a vote's tally, a synthesis), carried in the spec.
#[derive(Clone)]
pub struct BuiltinFn(pub std::sync::Arc<dyn crate::registry::StepFn>);

impl fmt::Debug for BuiltinFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BuiltinFn")
    }
}

impl PartialEq for BuiltinFn {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Workflow-wide defaults.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Default bound on visits per step.
    pub max_visits: u32,
    /// Default bound on model calls per agent turn.
    pub max_turns: u32,
    /// Retries of a retryable model failure.
    pub model_retries: u32,
    /// First retry delay; doubles each time.
    pub retry_backoff: DurationSpec,
    /// Repair requests for a structured answer that fails its schema.
    pub output_repairs: u32,
    /// Per-call timeout of models, tools and code steps.
    pub timeout: DurationSpec,
    /// Bound on sub-workflow nesting.
    pub max_depth: u32,
    /// Loop guard: an agent calling the same tool with the same arguments this many times in
    /// one turn is stopped.
    pub loop_guard_repeats: u32,
    /// Bound on delegation depth: a worker's worker's worker (depth 3) may not delegate further.
    pub max_delegation_depth: u32,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            max_visits: 10,
            max_turns: 8,
            model_retries: 2,
            retry_backoff: DurationSpec(Duration::from_millis(200)),
            output_repairs: 1,
            timeout: DurationSpec(Duration::from_secs(120)),
            max_depth: 4,
            loop_guard_repeats: 3,
            max_delegation_depth: 3,
        }
    }
}

/// A whole workflow, as written.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// Name.
    pub name: Loc<String>,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// Model aliases.
    #[serde(default)]
    pub models: Entries<ModelSpec>,
    /// Agents.
    #[serde(default)]
    pub agents: Entries<AgentSpec>,
    /// Tools declared here (Rust tools registered with the runtime need no declaration).
    #[serde(default)]
    pub tools: Entries<ToolDecl>,
    /// MCP servers whose tools the agents may use (as `server__tool`, or `server__*`).
    #[serde(default)]
    pub mcp_servers: Entries<McpServerSpec>,
    /// Built-in tools.
    #[serde(default)]
    pub builtins: Option<BuiltinsSpec>,
    /// Names of the secrets the workflow uses (`{{secret.NAME}}`); values come from the
    /// environment (`BATON_SECRET_<NAME>`) when a tool runs, never from the workflow.
    #[serde(default)]
    pub secrets: Vec<Loc<String>>,
    /// State keys.
    #[serde(default)]
    pub state: Entries<KeySpec>,
    /// Keys reported as the run's outputs (default: every key).
    #[serde(default)]
    pub outputs: Option<Vec<Loc<String>>>,
    /// Entry steps (default: steps with no needs that no transition targets).
    #[serde(default)]
    pub start: OneOrMany<Loc<String>>,
    /// What one run may consume; past it the run halts (exit 5) with its partial results.
    #[serde(default)]
    pub budget: Option<BudgetSpec>,
    /// Defaults.
    #[serde(default)]
    pub defaults: Defaults,
    /// Steps.
    #[serde(default)]
    pub steps: Vec<StepSpec>,
}
