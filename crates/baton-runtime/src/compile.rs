//! From a [`WorkflowSpec`] to a validated [`Workflow`], collecting every problem with its place.

use crate::error::{Diagnostic, WorkflowError};
use crate::expr::Expr;
use crate::registry::{ModelEntry, ModelField, Registry};
use crate::spec::{JoinMode, Loc, MergeRule, NextSpec, OnTimeout, Pos, StepSpec, WorkflowSpec};
use crate::template::Templates;
use crate::workflow::{
    AgentDef, Branch, ErrorPolicy, JoinDef, KeyDef, MapDef, PolicyDef, StepDef, StepKind, ToolRef,
    Work, Workflow,
};
use baton_core::{DynTool, ToolDef, ToolSpec};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where a spec came from, and what it may refer to.
pub struct Source<'a> {
    /// File name shown in errors (`<builder>` for code).
    pub file: String,
    /// Directory that relative paths resolve against.
    pub base_dir: PathBuf,
    /// Models, tools and functions provided by the embedding program.
    pub registry: &'a Registry,
    /// Files being compiled above this one (sub-workflow nesting), to detect include cycles.
    pub stack: Vec<PathBuf>,
    /// The source text, when there is one (to place errors inside quoted values exactly).
    pub text: Option<String>,
    /// The file the `models:` section came from, when it replaced the workflow's own.
    pub models_file: Option<String>,
    /// The nesting bound of the workflows including this one (the smallest `max_depth` above
    /// it); `None` at the top.
    pub max_depth: Option<u32>,
}

struct Diags {
    file: String,
    list: Vec<Diagnostic>,
    text: Option<String>,
    models_file: Option<String>,
}

impl Diags {
    /// The position of a spot inside a string value: `at` is (line, column) within the value,
    /// both from 1; `base` is where the value starts in the file (its opening quote, for a
    /// quoted value; its first character, for a plain or block value).
    fn shift(&self, base: Option<Pos>, at: Option<(u32, u32)>) -> Option<Pos> {
        let (Some(b), Some((line, col))) = (base, at) else {
            return base;
        };
        let quoted = self
            .text
            .as_deref()
            .and_then(|t| t.lines().nth(b.line.saturating_sub(1) as usize))
            .and_then(|l| l.chars().nth(b.col.saturating_sub(1) as usize))
            .is_some_and(|c| c == '"' || c == '\'');
        let col = col.max(1);
        Some(if line <= 1 {
            Pos {
                line: b.line,
                col: b.col + u32::from(quoted) + col - 1,
            }
        } else {
            Pos {
                line: b.line + line - 1,
                col: b.col + col - 1,
            }
        })
    }

    fn err(&mut self, pos: Option<Pos>, step: Option<&str>, message: impl Into<String>) {
        self.list.push(Diagnostic {
            file: self.file.clone(),
            pos,
            step: step.map(str::to_string),
            message: message.into(),
        });
    }

    /// A problem in the `models:` section, which may come from a separate file (`--models`).
    fn err_models(&mut self, pos: Option<Pos>, message: impl Into<String>) {
        let file = self
            .models_file
            .clone()
            .unwrap_or_else(|| self.file.clone());
        self.list.push(Diagnostic {
            file,
            pos,
            step: None,
            message: message.into(),
        });
    }
}

fn did_you_mean<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = candidates.collect();
    if all.is_empty() {
        return " (none are declared)".to_string();
    }
    // Close means: same letters in another case, one name containing the other (both at
    // least 3 long), or at most 2 edits apart on a name long enough for that to be telling.
    let close = all.iter().find(|c| {
        c.eq_ignore_ascii_case(name)
            || (name.len() >= 3 && c.len() >= 3 && (c.contains(name) || name.contains(**c)))
            || (name.len() >= 4 && edit_distance(c, name) <= 2)
    });
    match close {
        Some(c) => format!(" (did you mean `{c}`?)"),
        None => format!(" (declared: {})", all.join(", ")),
    }
}

/// Names from a set, in a stable (alphabetical) order for messages.
fn sorted<'a>(set: &HashSet<&'a str>) -> impl Iterator<Item = &'a str> {
    let mut v: Vec<&'a str> = set.iter().copied().collect();
    v.sort_unstable();
    v.into_iter()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn compile_schema(schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
    jsonschema::validator_for(schema)
        .map(Arc::new)
        .map_err(|e| format!("invalid JSON Schema: {e}"))
}

/// What a workflow declares about a tool besides its implementation: tier, policy, effect.
type ToolRules = (
    baton_core::Tier,
    Arc<[PolicyDef]>,
    Option<baton_core::SideEffect>,
);

/// Compile a spec. Every problem is reported, not just the first.
pub fn compile(spec: &WorkflowSpec, src: &Source<'_>) -> Result<Workflow, WorkflowError> {
    let mut d = Diags {
        file: src.file.clone(),
        list: Vec::new(),
        text: src.text.clone(),
        models_file: src.models_file.clone(),
    };
    // Pattern blocks become ordinary steps first (ADR 0001).
    let expanded = crate::patterns::expand(spec);
    let spec = match &expanded {
        Some((x, errors)) => {
            for e in errors {
                d.err(e.pos, Some(&e.step), e.message.clone());
            }
            x
        }
        None => spec,
    };
    if spec.name.value.trim().is_empty() {
        d.err(spec.name.pos, None, "the workflow needs a non-empty `name`");
    }

    // ---- state keys
    let mut keys = Vec::new();
    let mut key_index = HashMap::new();
    for (name, k) in &spec.state.0 {
        let initial = match (&k.default, k.merge) {
            (Some(v), rule) => {
                let ok = match rule {
                    MergeRule::Replace => true,
                    MergeRule::Append => v.is_array(),
                    MergeRule::Merge => v.is_object(),
                    MergeRule::Sum | MergeRule::Max => v.is_number(),
                };
                if !ok {
                    d.err(
                        name.pos,
                        None,
                        format!(
                            "state key `{}`: the default ({}) does not fit merge rule `{}`",
                            name.value,
                            crate::expr::type_name(v),
                            rule.as_str()
                        ),
                    );
                }
                v.clone()
            }
            (None, MergeRule::Replace) => Value::Null,
            (None, MergeRule::Append) => json!([]),
            (None, MergeRule::Merge) => json!({}),
            (None, MergeRule::Sum) => json!(0),
            (None, MergeRule::Max) => Value::Null,
        };
        key_index.insert(name.value.clone(), keys.len());
        keys.push(KeyDef {
            name: name.value.as_str().into(),
            rule: k.merge,
            initial,
            untrusted: k.untrusted,
        });
    }
    let key_names = || spec.state.0.iter().map(|(k, _)| k.value.as_str());
    let check_key =
        |d: &mut Diags, k: &Loc<String>, step: Option<&str>, what: &str| -> Option<usize> {
            match key_index.get(&k.value) {
                Some(i) => Some(*i),
                None => {
                    d.err(
                        k.pos,
                        step,
                        format!(
                            "{what} unknown state key `{}`{}",
                            k.value,
                            did_you_mean(&k.value, key_names())
                        ),
                    );
                    None
                }
            }
        };

    // ---- models
    let mut models: HashMap<String, ModelEntry> = src.registry.models.clone();
    // Aliases declared but not buildable: already reported, not reported again per agent.
    let mut broken_models: Vec<String> = Vec::new();
    for (alias, m) in &spec.models.0 {
        let Some(factory) = &src.registry.factory else {
            if !models.contains_key(&alias.value) {
                d.err_models(
                    alias.pos,
                    format!("model `{}`: no model factory is configured", alias.value),
                );
            }
            continue;
        };
        match factory.build(&alias.value, m, &src.base_dir) {
            Ok(model) => {
                let (price, window) = factory.defaults(m);
                let key = format!(
                    "{}|{}|{}",
                    m.provider.value,
                    m.model.as_deref().unwrap_or(&alias.value),
                    m.base_url.as_deref().unwrap_or("")
                );
                models.insert(
                    alias.value.clone(),
                    ModelEntry {
                        model,
                        name: m.model.clone().unwrap_or_else(|| alias.value.clone()),
                        price: m.price.or(price).unwrap_or_default(),
                        max_tokens: m.max_tokens,
                        cache: m.cache,
                        context_window: m.context_window.or(window),
                        compress_at: m.compress_at.unwrap_or(0.8).clamp(0.05, 1.0),
                        summarizer: None,
                        limit: m
                            .max_concurrency
                            .map(|n| crate::limits::semaphore(&key, n as usize)),
                        rate: m
                            .rate_per_minute
                            .map(|n| crate::limits::RateLimiter::shared(&key, n)),
                        breaker: Some(crate::limits::Breaker::shared(
                            &key,
                            m.breaker_failures.unwrap_or(5),
                            m.breaker_cooldown.map_or(Duration::from_secs(30), |d| d.0),
                        )),
                    },
                );
            }
            Err(e) => {
                let pos = match e.field {
                    ModelField::Script => m.script.as_ref().and_then(|s| s.pos),
                    ModelField::Provider => m.provider.pos,
                    ModelField::Other => None,
                };
                d.err_models(
                    pos.or(alias.pos),
                    format!("model `{}`: {}", alias.value, e.message),
                );
                broken_models.push(alias.value.clone());
            }
        }
    }

    // Summarisers and fallback chains refer to other aliases.
    let mut chains: HashMap<String, Vec<ModelEntry>> = HashMap::new();
    for (alias, m) in &spec.models.0 {
        let Some(entry) = models.get(&alias.value).cloned() else {
            continue;
        };
        let mut entry = entry;
        if let Some(sum) = &m.summarizer {
            match models.get(&sum.value) {
                Some(s) => entry.summarizer = Some(Box::new(s.clone())),
                None => d.err_models(
                    sum.pos,
                    format!(
                        "model `{}`: unknown summarizer model `{}`{}",
                        alias.value,
                        sum.value,
                        did_you_mean(&sum.value, models.keys().map(String::as_str))
                    ),
                ),
            }
        }
        let mut chain = vec![entry];
        for f in &m.fallback {
            if f.value == alias.value {
                d.err_models(
                    f.pos,
                    format!("model `{}` cannot fall back to itself", alias.value),
                );
                continue;
            }
            match models.get(&f.value) {
                Some(fm) => chain.push(fm.clone()),
                None => d.err_models(
                    f.pos,
                    format!(
                        "model `{}`: unknown fallback model `{}`{}",
                        alias.value,
                        f.value,
                        did_you_mean(&f.value, models.keys().map(String::as_str))
                    ),
                ),
            }
        }
        chains.insert(alias.value.clone(), chain);
    }

    // ---- tools
    // Secrets: names only here; values are read from the environment when a tool runs.
    let declared_secrets: Vec<String> = spec.secrets.iter().map(|s| s.value.clone()).collect();
    let secret_store: Arc<dyn baton_tools::SecretStore> =
        Arc::new(baton_tools::secrets::ScopedSecrets::new(
            baton_tools::EnvSecrets::new(),
            declared_secrets.clone(),
        ));
    let mut tools: HashMap<String, (Arc<dyn DynTool>, Duration)> = src
        .registry
        .tools
        .iter()
        .map(|(k, v)| (k.clone(), (v.clone(), spec.defaults.timeout.0)))
        .collect();
    // Built-in tools, enabled and configured by the workflow.
    if let Some(b) = &spec.builtins {
        for tool in builtin_tools(&mut d, b, src, &declared_secrets, &secret_store) {
            tools.insert(tool.spec().name.clone(), (tool, spec.defaults.timeout.0));
        }
    }
    // MCP servers: their tools join the registry's, named `server__tool`.
    for (name, server) in &spec.mcp_servers.0 {
        let Some(factory) = &src.registry.tool_sources else {
            d.err(
                name.pos,
                None,
                format!(
                    "MCP server `{}`: this build cannot connect MCP servers",
                    name.value
                ),
            );
            continue;
        };
        if server.command.is_some() == server.url.is_some() {
            d.err(
                name.pos,
                None,
                format!(
                    "MCP server `{}` needs exactly one of `command` (stdio) and `url` (HTTP)",
                    name.value
                ),
            );
            continue;
        }
        match factory.connect(&name.value, server, &src.base_dir) {
            Ok(list) => {
                let timeout = server
                    .timeout
                    .map(|t| t.0)
                    .unwrap_or(spec.defaults.timeout.0);
                for t in list {
                    tools.insert(t.spec().name.clone(), (t, timeout));
                }
            }
            Err(e) => d.err(name.pos, None, format!("MCP server `{}`: {e}", name.value)),
        }
    }
    // Tier, policy and effect overrides declared in YAML, by tool name.
    let mut tool_rules: HashMap<String, ToolRules> = HashMap::new();
    // Tools whose results come from outside.
    let untrusted_tools: Vec<String> = spec
        .tools
        .0
        .iter()
        .filter(|(_, t)| t.untrusted)
        .map(|(n, _)| n.value.clone())
        .collect();
    for (name, t) in &spec.tools.0 {
        let mut rules = Vec::new();
        for r in &t.policy {
            if let Some(when) = compile_expr(
                &mut d,
                &r.when,
                &format!("tool {}", name.value),
                &key_index,
                &["args"],
            ) {
                rules.push(PolicyDef {
                    when,
                    tier: r.tier,
                    reason: r
                        .reason
                        .clone()
                        .unwrap_or_else(|| format!("policy `{}`", r.when.value)),
                });
            }
        }
        tool_rules.insert(name.value.clone(), (t.tier, rules.into(), t.effect));
    }
    for (name, t) in &spec.tools.0 {
        let parameters = t
            .parameters
            .as_ref()
            .map(|p| p.value.clone())
            .unwrap_or_else(|| json!({"type": "object"}));
        let tspec = ToolSpec::new(name.value.clone(), t.description.clone(), parameters)
            .with_effect(t.effect.unwrap_or_default());
        let timeout = t.timeout.map(|t| t.0).unwrap_or(spec.defaults.timeout.0);
        match &t.command {
            Some(cmd) => {
                for v in t.env.values() {
                    check_secrets(&mut d, v, name.pos, &declared_secrets);
                }
                let opts = baton_tools::SubprocessOptions {
                    timeout,
                    cwd: Some(src.base_dir.clone()),
                    env: t.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                };
                let tool = baton_tools::SubprocessTool::new(tspec, cmd.value.0.clone(), opts)
                    .with_secrets(secret_store.clone());
                tools.insert(name.value.clone(), (Arc::new(tool), timeout));
            }
            None => {
                if let Some(tool) = src.registry.tools.get(&name.value) {
                    tools.insert(name.value.clone(), (tool.clone(), timeout));
                } else {
                    d.err(
                        name.pos,
                        None,
                        format!(
                            "tool `{}` has no `command` and no Rust tool of that name is registered",
                            name.value
                        ),
                    );
                }
            }
        }
    }
    let mut validators: HashMap<String, Arc<jsonschema::Validator>> = HashMap::new();
    for (name, (tool, _)) in &tools {
        match compile_schema(&tool.spec().parameters) {
            Ok(v) => {
                validators.insert(name.clone(), v);
            }
            Err(e) => {
                let pos = spec
                    .tools
                    .0
                    .iter()
                    .find(|(n, _)| &n.value == name)
                    .and_then(|(n, t)| t.parameters.as_ref().and_then(|p| p.pos).or(n.pos));
                d.err(pos, None, format!("tool `{name}`: {e}"));
            }
        }
    }

    // ---- agents
    let declared_default = spec.models.0.iter().any(|(a, _)| a.value == "default");
    let default_model = if models.contains_key("default") || declared_default {
        Some("default".to_string())
    } else if models.len() == 1 {
        models.keys().next().cloned()
    } else {
        None
    };
    let mut agents = Vec::new();
    let mut agent_index = HashMap::new();
    for (name, a) in &spec.agents.0 {
        let alias = a
            .model
            .as_ref()
            .map(|m| m.value.clone())
            .or(default_model.clone());
        let model = match alias.as_ref().and_then(|al| models.get(al)) {
            Some(m) => Some(
                alias
                    .as_ref()
                    .and_then(|al| chains.get(al).cloned())
                    .unwrap_or_else(|| vec![m.clone()]),
            ),
            None if alias.as_ref().is_some_and(|al| broken_models.contains(al)) => None,
            None => {
                let pos = a.model.as_ref().and_then(|m| m.pos).or(name.pos);
                match &alias {
                    Some(al) => d.err(
                        pos,
                        None,
                        format!(
                            "agent `{}` uses unknown model `{al}`{}",
                            name.value,
                            did_you_mean(al, models.keys().map(String::as_str))
                        ),
                    ),
                    None => d.err(
                        pos,
                        None,
                        format!(
                            "agent `{}` names no model and there is no model called `default`",
                            name.value
                        ),
                    ),
                }
                None
            }
        };
        let mut trefs = Vec::new();
        let mut tdefs = Vec::new();
        // `server__*` (any name ending in `*`) stands for every tool with that prefix.
        let mut wanted: Vec<Loc<String>> = Vec::new();
        for t in &a.tools {
            match t.value.strip_suffix('*') {
                Some(prefix) => {
                    let mut names: Vec<&String> =
                        tools.keys().filter(|n| n.starts_with(prefix)).collect();
                    names.sort();
                    if names.is_empty() {
                        d.err(
                            t.pos,
                            None,
                            format!("agent `{}`: no tool matches `{}`", name.value, t.value),
                        );
                    }
                    wanted.extend(names.into_iter().map(|n| Loc {
                        value: n.clone(),
                        pos: t.pos,
                    }));
                }
                None => wanted.push(t.clone()),
            }
        }
        for t in &wanted {
            match (tools.get(&t.value), validators.get(&t.value)) {
                (Some((tool, timeout)), Some(v)) => {
                    let s = tool.spec();
                    tdefs.push(ToolDef {
                        name: s.name.clone(),
                        description: s.description.clone(),
                        parameters: s.parameters.clone(),
                    });
                    let (tier, policy, effect) = tool_rules
                        .get(&t.value)
                        .cloned()
                        .unwrap_or_else(|| (baton_core::Tier::Auto, Arc::from(Vec::new()), None));
                    trefs.push(ToolRef {
                        name: t.value.clone(),
                        tool: tool.clone(),
                        validator: v.clone(),
                        timeout: *timeout,
                        effect: effect.unwrap_or(s.effect),
                        tier,
                        policy,
                        untrusted: untrusted_tools.contains(&t.value),
                        breaker: {
                            let decl = spec
                                .tools
                                .0
                                .iter()
                                .find(|(n, _)| n.value == t.value)
                                .map(|(_, d)| d);
                            crate::limits::Breaker::shared(
                                &format!("tool|{}", t.value),
                                decl.and_then(|d| d.breaker_failures).unwrap_or(5),
                                decl.and_then(|d| d.breaker_cooldown)
                                    .map_or(Duration::from_secs(30), |d| d.0),
                            )
                        },
                    });
                }
                (Some(_), None) => {}
                (None, _) => d.err(
                    t.pos,
                    None,
                    format!(
                        "agent `{}` uses unknown tool `{}`{}",
                        name.value,
                        t.value,
                        did_you_mean(&t.value, tools.keys().map(String::as_str))
                    ),
                ),
            }
        }
        let output_schema = match &a.output_schema {
            Some(s) => match compile_schema(&s.value) {
                Ok(v) => Some((s.value.clone(), v)),
                Err(e) => {
                    d.err(
                        s.pos.or(name.pos),
                        None,
                        format!("agent `{}`: output_schema: {e}", name.value),
                    );
                    None
                }
            },
            None => None,
        };
        if let Some(model) = model {
            agent_index.insert(name.value.clone(), agents.len());
            agents.push(AgentDef {
                name: name.value.as_str().into(),
                instructions: a.instructions.clone(),
                models: model,
                tools: trefs,
                tool_defs: tdefs,
                output_schema,
                max_turns: a.max_turns.unwrap_or(spec.defaults.max_turns).max(1),
                temperature: a.temperature,
                timeout: a.timeout.map(|t| t.0).unwrap_or(spec.defaults.timeout.0),
                budget: a.budget,
                delegates: Vec::new(),
            });
        }
    }
    let agent_declared: HashSet<&str> = spec
        .agents
        .0
        .iter()
        .map(|(n, _)| n.value.as_str())
        .collect();

    // ---- delegation: supervisors get delegate tools, peers handoff tools
    for (name, a) in &spec.agents.0 {
        let Some(&ai) = agent_index.get(&name.value) else {
            continue;
        };
        for (targets, handoff) in [(&a.delegates.0, false), (&a.handoffs.0, true)] {
            for t in targets {
                let what = if handoff { "hand over" } else { "delegate" };
                if t.value == name.value {
                    d.err(
                        t.pos,
                        None,
                        format!("agent `{}` cannot {what} to itself", name.value),
                    );
                    continue;
                }
                let Some(&ti) = agent_index.get(&t.value) else {
                    if !agent_declared.contains(t.value.as_str()) {
                        d.err(
                            t.pos,
                            None,
                            format!(
                                "agent `{}`: cannot {what} to unknown agent `{}`{}",
                                name.value,
                                t.value,
                                did_you_mean(&t.value, sorted(&agent_declared))
                            ),
                        );
                    }
                    continue;
                };
                let tool = format!(
                    "{}_to_{}",
                    if handoff { "handoff" } else { "delegate" },
                    t.value
                );
                if agents[ai].tool_defs.iter().any(|x| x.name == tool) {
                    d.err(
                        t.pos,
                        None,
                        format!(
                            "agent `{}`: `{tool}` is given twice (or clashes with a tool of that name)",
                            name.value
                        ),
                    );
                    continue;
                }
                let about = spec
                    .agents
                    .0
                    .iter()
                    .find(|(n, _)| n.value == t.value)
                    .map(|(_, s)| s.description.trim().to_string())
                    .unwrap_or_default();
                let description = if handoff {
                    format!(
                        "Hand the task over to `{}`{}. It sees only what you pass here, and its answer becomes the final answer: you do not continue.",
                        t.value,
                        if about.is_empty() {
                            String::new()
                        } else {
                            format!(" ({about})")
                        }
                    )
                } else {
                    format!(
                        "Delegate a sub-task to `{}`{}. It sees only what you pass here; its answer is this call's result.",
                        t.value,
                        if about.is_empty() {
                            String::new()
                        } else {
                            format!(" ({about})")
                        }
                    )
                };
                agents[ai].tool_defs.push(baton_core::ToolDef {
                    name: tool.clone(),
                    description,
                    parameters: json!({
                        "type": "object",
                        "required": ["task"],
                        "additionalProperties": false,
                        "properties": {
                            "task": {"type": "string", "minLength": 1,
                                     "description": "What to do, as a self-contained instruction."},
                            "context": {"description": "The facts the receiver needs; it sees nothing else."}
                        }
                    }),
                });
                agents[ai].delegates.push(crate::workflow::Delegate {
                    tool,
                    agent: ti,
                    handoff,
                });
            }
        }
    }

    // ---- step ids
    let mut step_index: HashMap<String, usize> = HashMap::new();
    for (i, s) in spec.steps.iter().enumerate() {
        if s.id.value.trim().is_empty() {
            d.err(s.id.pos, None, "a step needs a non-empty `id`");
        }
        if step_index.insert(s.id.value.clone(), i).is_some() {
            d.err(s.id.pos, Some(&s.id.value), "duplicate step id");
        }
    }
    if spec.steps.is_empty() {
        d.err(spec.name.pos, None, "the workflow has no steps");
    }
    let step_names = || spec.steps.iter().map(|s| s.id.value.as_str());
    let check_step = |d: &mut Diags, r: &Loc<String>, from: &str, what: &str| -> Option<usize> {
        match step_index.get(&r.value) {
            Some(i) => Some(*i),
            None => {
                d.err(
                    r.pos,
                    Some(from),
                    format!(
                        "{what} unknown step `{}`{}",
                        r.value,
                        did_you_mean(&r.value, step_names())
                    ),
                );
                None
            }
        }
    };

    // ---- steps
    let mut templates = Templates::new();
    let mut steps: Vec<StepDef> = Vec::new();
    for s in &spec.steps {
        let id = s.id.value.as_str();
        let reads: Vec<usize> = s
            .reads
            .0
            .iter()
            .filter_map(|k| check_key(&mut d, k, Some(id), "reads"))
            .collect();
        let output = s
            .output
            .as_ref()
            .and_then(|k| check_key(&mut d, k, Some(id), "output is"));
        let writes: Vec<usize> = s
            .writes
            .0
            .iter()
            .filter_map(|k| check_key(&mut d, k, Some(id), "writes"))
            .collect();
        let needs: Vec<usize> = s
            .needs
            .0
            .iter()
            .filter_map(|n| {
                let i = check_step(&mut d, n, id, "needs")?;
                if i == step_index[id] {
                    d.err(n.pos, Some(id), "a step cannot need itself");
                    return None;
                }
                Some(i)
            })
            .collect();
        let read_names: Vec<&str> = s.reads.0.iter().map(|k| k.value.as_str()).collect();

        let kind = compile_kind(
            s,
            src,
            spec,
            &mut d,
            &mut templates,
            &agent_index,
            &agent_declared,
            &read_names,
            &key_index,
        );

        let mut next = Vec::new();
        let branches: Option<&Vec<crate::spec::BranchSpec>> = match (&s.router, &s.next) {
            (Some(r), None) => Some(r),
            (None, Some(NextSpec(b))) => Some(b),
            (Some(r), Some(_)) => {
                d.err(
                    s.id.pos,
                    Some(id),
                    "a router step takes its branches in `router`, not `next`",
                );
                Some(r)
            }
            (None, None) => None,
        };
        for b in branches.into_iter().flatten() {
            let when = b
                .when
                .as_ref()
                .and_then(|w| compile_expr(&mut d, w, id, &key_index, &[]));
            let to: Vec<usize> =
                b.to.0
                    .iter()
                    .filter_map(|t| check_step(&mut d, t, id, "transition to"))
                    .collect();
            if b.to.0.is_empty() {
                d.err(s.id.pos, Some(id), "a branch needs at least one `to` step");
            }
            next.push(Branch { when, to });
        }
        if matches!(kind, StepKind::Router) && next.is_empty() {
            d.err(s.id.pos, Some(id), "a router needs at least one branch");
        }
        if matches!(kind, StepKind::Router) && (output.is_some() || !writes.is_empty()) {
            d.err(
                s.id.pos,
                Some(id),
                "a router writes no state: remove `output`/`writes`",
            );
        }
        let on_error = match s.on_error.as_ref() {
            None => ErrorPolicy::Fail,
            Some(p) if p.value == "fail" => ErrorPolicy::Fail,
            Some(p) if p.value == "continue" => ErrorPolicy::Continue,
            Some(p) => match check_step(&mut d, p, id, "on_error routes to") {
                Some(i) => ErrorPolicy::Goto(i),
                None => ErrorPolicy::Fail,
            },
        };
        let join = match &s.join {
            None => JoinDef {
                mode: JoinMode::All,
                quorum: needs.len(),
                timeout: None,
                on_timeout: OnTimeout::Fail,
            },
            Some(j) => {
                if s.needs.0.is_empty() {
                    d.err(j.pos, Some(id), "`join` needs a `needs` list to wait for");
                }
                let quorum = match j.value.mode {
                    JoinMode::All => needs.len(),
                    JoinMode::Any => 1,
                    JoinMode::Quorum => match &j.value.quorum {
                        Some(q) if q.value >= 1 && (q.value as usize) <= s.needs.0.len() => {
                            q.value as usize
                        }
                        Some(q) => {
                            d.err(
                                q.pos.or(j.pos),
                                Some(id),
                                format!(
                                    "quorum {} is not between 1 and the {} needs",
                                    q.value,
                                    s.needs.0.len()
                                ),
                            );
                            1
                        }
                        None => {
                            d.err(j.pos, Some(id), "join mode `quorum` needs a `quorum` count");
                            1
                        }
                    },
                };
                JoinDef {
                    mode: j.value.mode,
                    quorum,
                    timeout: j.value.timeout.map(|t| t.0),
                    on_timeout: j.value.on_timeout,
                }
            }
        };
        if s.max_visits == Some(0) {
            d.err(s.id.pos, Some(id), "max_visits must be at least 1");
        }
        steps.push(StepDef {
            name: id.into(),
            description: s.description.clone(),
            kind,
            needs,
            dependents: Vec::new(),
            has_incoming: false,
            next,
            reads,
            output,
            writes,
            on_error,
            max_visits: s.max_visits.unwrap_or(spec.defaults.max_visits).max(1),
            timeout: s.timeout.map(|t| t.0).unwrap_or(spec.defaults.timeout.0),
            join,
            impact: s.impact.clone(),
            budget: s.budget,
            retries: s.retries.unwrap_or(0),
            deadline: s.deadline.map(|d| d.0),
            reads_untrusted: s.reads.0.iter().any(|k| {
                spec.state
                    .0
                    .iter()
                    .any(|(n, ks)| n.value == k.value && ks.untrusted)
            }),
        });
    }

    // ---- edges
    let n = steps.len();
    for i in 0..n {
        let needs = steps[i].needs.clone();
        for (pos, nd) in needs.into_iter().enumerate() {
            steps[nd].dependents.push((i, pos));
        }
        let mut targets: Vec<usize> = steps[i]
            .next
            .iter()
            .flat_map(|b| b.to.iter().copied())
            .collect();
        if let ErrorPolicy::Goto(t) = steps[i].on_error {
            targets.push(t);
        }
        for t in targets {
            steps[t].has_incoming = true;
        }
    }

    // ---- dependency cycles (needs must form a DAG)
    if let Some(cycle) = find_cycle(&steps) {
        let names: Vec<&str> = cycle.iter().map(|&i| &*steps[i].name).collect();
        let first = &spec.steps[cycle[0]];
        d.err(
            first.id.pos,
            Some(&first.id.value),
            format!(
                "dependency cycle: {} -> {} (each needs the next; a step cannot transitively need itself, use `next` with a `when` for loops)",
                names.join(" -> "),
                names[0]
            ),
        );
    }

    // ---- entries
    let mut entries: Vec<usize> = spec
        .start
        .0
        .iter()
        .filter_map(|s| match step_index.get(&s.value) {
            Some(i) => Some(*i),
            None => {
                d.err(
                    s.pos,
                    None,
                    format!(
                        "`start` names unknown step `{}`{}",
                        s.value,
                        did_you_mean(&s.value, step_names())
                    ),
                );
                None
            }
        })
        .collect();
    if spec.start.0.is_empty() {
        entries = (0..n)
            .filter(|&i| steps[i].needs.is_empty() && !steps[i].has_incoming)
            .collect();
        if entries.is_empty() && n > 0 {
            d.err(
                spec.name.pos,
                None,
                "no entry step: every step needs another or is the target of a transition; name the first with `start:`",
            );
        }
    }

    // ---- reachability
    if d.list.is_empty() {
        let mut seen = vec![false; n];
        let mut stack = entries.clone();
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            for &(dep, _) in &steps[i].dependents {
                stack.push(dep);
            }
            for b in &steps[i].next {
                stack.extend(b.to.iter().copied());
            }
            if let ErrorPolicy::Goto(t) = steps[i].on_error {
                stack.push(t);
            }
        }
        for (i, s) in spec.steps.iter().enumerate() {
            if !seen[i] {
                d.err(
                    s.id.pos,
                    Some(&s.id.value),
                    "unreachable: no entry step leads here through `needs`, `next`, a router or `on_error`",
                );
            }
        }
    }

    // ---- outputs
    let outputs: Vec<usize> = match &spec.outputs {
        Some(list) => list
            .iter()
            .filter_map(|k| check_key(&mut d, k, None, "outputs names"))
            .collect(),
        None => (0..keys.len()).collect(),
    };

    if !d.list.is_empty() {
        d.list
            .sort_by_key(|x| x.pos.map(|p| (p.line, p.col)).unwrap_or((u32::MAX, 0)));
        // A pattern block expands into several steps sharing its position: one problem in it
        // is reported once, not once per generated step.
        let mut seen = HashSet::new();
        d.list
            .retain(|x| x.pos.is_none() || seen.insert((x.file.clone(), x.pos, x.message.clone())));
        return Err(WorkflowError {
            diagnostics: d.list,
        });
    }
    Ok(Workflow {
        name: spec.name.value.clone(),
        description: spec.description.clone(),
        file: src.file.clone(),
        source: src.stack.last().cloned(),
        keys,
        key_index,
        steps,
        step_index,
        agents,
        entries,
        outputs,
        templates,
        defaults: spec.defaults.clone(),
        budget: spec.budget,
    })
}

/// Every `{{secret.NAME}}` in `text` must name a declared secret.
fn check_secrets(d: &mut Diags, text: &str, pos: Option<Pos>, declared: &[String]) {
    match baton_tools::secrets::placeholder_names(text) {
        Ok(names) => {
            for n in names {
                if !declared.contains(&n) {
                    d.err(
                        pos,
                        None,
                        format!("secret `{n}` is used but not declared under `secrets:`"),
                    );
                }
            }
        }
        Err(e) => d.err(pos, None, e.to_string()),
    }
}

fn builtin_tools(
    d: &mut Diags,
    b: &crate::spec::BuiltinsSpec,
    src: &Source<'_>,
    declared: &[String],
    secrets: &Arc<dyn baton_tools::SecretStore>,
) -> Vec<Arc<dyn DynTool>> {
    use baton_tools::builtin::{FilesConfig, HttpGetConfig, JsonlOutbox, MemoryOutbox, SqlConfig};
    let mut cfg = baton_tools::BuiltinConfig {
        secrets: Some(secrets.clone()),
        ..Default::default()
    };
    if let Some(h) = &b.http_get {
        for headers in h.host_headers.values() {
            for v in headers.values() {
                check_secrets(d, v, None, declared);
            }
        }
        let mut hc = HttpGetConfig {
            allow_hosts: h.allow_hosts.clone(),
            host_headers: h.host_headers.clone(),
            allow_http: h.allow_http,
            ..HttpGetConfig::default()
        };
        if let Some(m) = h.max_bytes {
            hc.max_bytes = m;
        }
        if let Some(t) = h.timeout {
            hc.timeout = t.0;
        }
        cfg.http_allow_hosts = h.allow_hosts.clone();
        cfg.http = Some(hc);
    }
    if let Some(q) = &b.sql_query {
        check_secrets(d, &q.url.value, q.url.pos, declared);
        let url = if q.url.value.contains("://") {
            q.url.value.clone()
        } else {
            src.base_dir.join(&q.url.value).display().to_string()
        };
        let mut sc = SqlConfig::new(url.clone());
        if let Some(m) = q.max_rows {
            sc.max_rows = m;
        }
        cfg.sql_url = Some(url);
        cfg.sql = Some(sc);
    }
    if let Some(f) = &b.files {
        let root = src.base_dir.join(&f.sandbox.value);
        cfg.sandbox_dir = Some(root.clone());
        cfg.files = Some(FilesConfig::new(root));
    }
    if let Some(o) = &b.outbox {
        cfg.outbox = Some(match &o.file {
            Some(f) => Arc::new(JsonlOutbox::new(src.base_dir.join(f))),
            None => Arc::new(MemoryOutbox::new()),
        });
    }
    match baton_tools::registry(&cfg) {
        Ok(list) => list,
        Err(e) => {
            d.err(None, None, format!("builtins: {e}"));
            Vec::new()
        }
    }
}

fn compile_expr(
    d: &mut Diags,
    e: &Loc<String>,
    step: &str,
    keys: &HashMap<String, usize>,
    extra: &[&str],
) -> Option<Expr> {
    match Expr::compile(&e.value) {
        Ok(x) => {
            let mut ok = true;
            for v in x.variables() {
                if !keys.contains_key(v) && !extra.contains(&v.as_str()) {
                    d.err(
                        e.pos,
                        Some(step),
                        format!(
                            "expression `{}` uses `{v}`, which is not a state key{}",
                            e.value,
                            did_you_mean(
                                v,
                                keys.keys().map(String::as_str).chain(extra.iter().copied())
                            )
                        ),
                    );
                    ok = false;
                }
            }
            ok.then_some(x)
        }
        Err(err) => {
            d.err(
                d.shift(e.pos, err.at),
                Some(step),
                format!("bad expression `{}`: {}", e.value, err.message),
            );
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn compile_work(
    d: &mut Diags,
    id: &str,
    src: &Source<'_>,
    templates: &mut Templates,
    agent_index: &HashMap<String, usize>,
    agent_declared: &HashSet<&str>,
    allowed_vars: &[&str],
    agent: Option<&Loc<String>>,
    prompt: Option<&Loc<String>>,
    run: Option<&Loc<crate::spec::CommandSpec>>,
    function: Option<&Loc<String>>,
    template_name: String,
) -> Option<Work> {
    if let Some(a) = agent {
        let Some(&ai) = agent_index.get(&a.value) else {
            if !agent_declared.contains(a.value.as_str()) {
                d.err(
                    a.pos,
                    Some(id),
                    format!(
                        "unknown agent `{}`{}",
                        a.value,
                        did_you_mean(&a.value, sorted(agent_declared))
                    ),
                );
            }
            return None;
        };
        let Some(p) = prompt else {
            d.err(a.pos, Some(id), "an agent step needs a `prompt`");
            return None;
        };
        match templates.add(template_name.clone(), p.value.clone()) {
            Ok(vars) => {
                for v in vars {
                    if !allowed_vars.contains(&v.as_str()) {
                        d.err(
                            p.pos,
                            Some(id),
                            format!(
                                "prompt uses `{v}`, which the step does not read (add it to `reads`; the step reads: {})",
                                if allowed_vars.is_empty() { "nothing".to_string() } else { allowed_vars.join(", ") }
                            ),
                        );
                    }
                }
            }
            Err(e) => {
                d.err(
                    d.shift(p.pos, e.line.map(|l| (l, 1))),
                    Some(id),
                    format!("bad prompt template: {}", e.message),
                );
                return None;
            }
        }
        return Some(Work::Agent {
            agent: ai,
            prompt: template_name,
        });
    }
    if let Some(p) = prompt {
        d.err(p.pos, Some(id), "`prompt` is only for agent steps");
    }
    if let Some(r) = run {
        return Some(Work::Code {
            command: r.value.0.clone().into(),
            cwd: src.base_dir.clone(),
        });
    }
    if let Some(f) = function {
        return match src.registry.functions.get(&f.value) {
            Some(func) => Some(Work::Function {
                name: f.value.clone(),
                func: func.clone(),
            }),
            None => {
                let names = src.registry.function_names();
                d.err(
                    f.pos,
                    Some(id),
                    format!(
                        "unknown function `{}`{}",
                        f.value,
                        did_you_mean(&f.value, names.iter().map(String::as_str))
                    ),
                );
                None
            }
        };
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn compile_kind(
    s: &StepSpec,
    src: &Source<'_>,
    spec: &WorkflowSpec,
    d: &mut Diags,
    templates: &mut Templates,
    agent_index: &HashMap<String, usize>,
    agent_declared: &HashSet<&str>,
    reads: &[&str],
    keys: &HashMap<String, usize>,
) -> StepKind {
    let id = s.id.value.as_str();
    let kinds: Vec<&str> = [
        ("agent", s.agent.is_some()),
        ("run", s.run.is_some()),
        ("function", s.function.is_some()),
        ("workflow", s.workflow.is_some()),
        ("router", s.router.is_some()),
        ("map", s.map.is_some()),
        ("approval", s.approval.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, on)| on.then_some(k))
    .collect();
    if kinds.len() > 1 {
        d.err(
            s.id.pos,
            Some(id),
            format!(
                "a step does one thing, but this one has {}",
                kinds.join(" and ")
            ),
        );
        return StepKind::Noop;
    }
    if let Some(m) = &s.map {
        let item = m
            .item_name
            .as_ref()
            .map(|n| n.value.clone())
            .unwrap_or_else(|| "item".into());
        let over = compile_expr(d, &m.over, id, keys, &[]);
        let mut allowed: Vec<&str> = reads.to_vec();
        allowed.push(&item);
        let bodies = [m.agent.is_some(), m.run.is_some(), m.function.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if bodies != 1 {
            d.err(
                m.over.pos,
                Some(id),
                "a map needs exactly one of `agent`, `run` or `function`",
            );
            return StepKind::Noop;
        }
        if s.output.is_none() {
            d.err(
                s.id.pos,
                Some(id),
                "a map step needs an `output` key to gather its results into",
            );
        }
        let body = compile_work(
            d,
            id,
            src,
            templates,
            agent_index,
            agent_declared,
            &allowed,
            m.agent.as_ref(),
            m.prompt.as_ref(),
            m.run.as_ref(),
            m.function.as_ref(),
            format!("{id}#map"),
        );
        let concurrency = m.concurrency.unwrap_or(4);
        if concurrency == 0 {
            d.err(m.over.pos, Some(id), "map concurrency must be at least 1");
        }
        return match (over, body) {
            (Some(over), Some(body)) => StepKind::Map(MapDef {
                over,
                item_name: item,
                body,
                concurrency: concurrency.max(1),
                on_item_error: m.on_item_error,
            }),
            _ => StepKind::Noop,
        };
    }
    if let Some(w) = &s.workflow {
        let path = src.base_dir.join(&w.value);
        let canon = path.canonicalize().unwrap_or(path.clone());
        if src.stack.contains(&canon) {
            let chain: Vec<String> = src
                .stack
                .iter()
                .chain(std::iter::once(&canon))
                .map(|p| p.display().to_string())
                .collect();
            d.err(
                w.pos,
                Some(id),
                format!("sub-workflow cycle: {}", chain.join(" -> ")),
            );
            return StepKind::Noop;
        }
        // The smallest bound of this file and every file including it applies.
        let bound = src
            .max_depth
            .map_or(spec.defaults.max_depth, |b| b.min(spec.defaults.max_depth));
        if src.stack.len() as u32 >= bound {
            d.err(
                w.pos,
                Some(id),
                format!("sub-workflows nest deeper than max_depth {bound}"),
            );
            return StepKind::Noop;
        }
        let mut stack = src.stack.clone();
        stack.push(canon);
        let child = match crate::loader::load_nested(&path, src.registry, stack, None, Some(bound))
        {
            Ok(c) => c,
            Err(e) => {
                let msgs: Vec<String> = e.diagnostics.iter().map(|x| x.to_string()).collect();
                d.err(
                    w.pos,
                    Some(id),
                    format!("sub-workflow `{}`: {}", w.value, msgs.join("; ")),
                );
                return StepKind::Noop;
            }
        };
        let mut input = Vec::new();
        for (k, e) in &s.input.0 {
            if !child.key_index.contains_key(&k.value) {
                d.err(
                    k.pos,
                    Some(id),
                    format!(
                        "sub-workflow `{}` has no state key `{}`{}",
                        w.value,
                        k.value,
                        did_you_mean(&k.value, child.key_names())
                    ),
                );
                continue;
            }
            if let Some(x) = compile_expr(d, e, id, keys, &[]) {
                input.push((k.value.clone(), x));
            }
        }
        return StepKind::Workflow { child, input };
    }
    if s.router.is_some() {
        return StepKind::Router;
    }
    if let Some(msg) = &s.approval {
        let name = format!("{id}#approval");
        match templates.add(name.clone(), msg.value.clone()) {
            Ok(vars) => {
                for v in vars {
                    if !reads.contains(&v.as_str()) {
                        d.err(
                            msg.pos,
                            Some(id),
                            format!("approval message uses `{v}`, which the step does not read (add it to `reads`)"),
                        );
                    }
                }
            }
            Err(e) => {
                d.err(
                    d.shift(msg.pos, e.line.map(|l| (l, 1))),
                    Some(id),
                    format!("bad approval message template: {}", e.message),
                );
            }
        }
        return StepKind::Approval { message: name };
    }
    if let Some(b) = &s.builtin {
        return StepKind::Work(Work::Function {
            name: s
                .function
                .as_ref()
                .map_or_else(|| id.to_string(), |f| f.value.clone()),
            func: b.0.clone(),
        });
    }
    match compile_work(
        d,
        id,
        src,
        templates,
        agent_index,
        agent_declared,
        reads,
        s.agent.as_ref(),
        s.prompt.as_ref(),
        s.run.as_ref(),
        s.function.as_ref(),
        id.to_string(),
    ) {
        Some(w) => StepKind::Work(w),
        None => StepKind::Noop,
    }
}

/// Find one cycle among `needs` edges, as a list of step indices in order.
fn find_cycle(steps: &[StepDef]) -> Option<Vec<usize>> {
    // Iterative DFS with colours: 0 new, 1 on stack, 2 done.
    let n = steps.len();
    let mut colour = vec![0u8; n];
    let mut parent = vec![usize::MAX; n];
    for root in 0..n {
        if colour[root] != 0 {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        colour[root] = 1;
        while let Some(&mut (v, ref mut i)) = stack.last_mut() {
            if let Some(&u) = steps[v].needs.get(*i) {
                *i += 1;
                match colour[u] {
                    0 => {
                        colour[u] = 1;
                        parent[u] = v;
                        stack.push((u, 0));
                    }
                    1 => {
                        // v needs u, and u is on the stack: u -> ... -> v -> u.
                        let mut cycle = vec![v];
                        let mut w = v;
                        while w != u {
                            w = parent[w];
                            cycle.push(w);
                        }
                        // cycle is v, parent(v), ..., u; reversed it reads in `needs` order:
                        // u needs ... needs v, and v needs u.
                        cycle.reverse();
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                colour[v] = 2;
                stack.pop();
            }
        }
    }
    None
}
