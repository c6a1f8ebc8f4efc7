//! The tool seam.
//!
//! A tool has a [`ToolSpec`] (name, description, JSON Schema of its arguments) and one async
//! capability, `call`. Arguments reach a tool only after the runtime has validated them against
//! the schema; unknown tools and invalid arguments never reach any tool.

use crate::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::future::Future;

/// What a tool is, for the registry and for the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Unique name.
    pub name: String,
    /// What it does, shown to the model.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments.
    #[serde(default = "empty_object_schema")]
    pub parameters: Value,
    /// What calling it does to the world; decides how a crash mid-call is recovered.
    #[serde(default)]
    pub effect: SideEffect,
}

impl ToolSpec {
    /// A spec with the default side-effect class (irreversible: never retried blindly).
    pub fn new(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> Self {
        ToolSpec {
            name: name.into(),
            description: description.into(),
            parameters,
            effect: SideEffect::default(),
        }
    }

    /// The same spec with another side-effect class.
    pub fn with_effect(mut self, effect: SideEffect) -> Self {
        self.effect = effect;
        self
    }
}

fn empty_object_schema() -> Value {
    serde_json::json!({"type": "object"})
}

/// The side-effect class of a tool.
///
/// The runtime journals its intent before calling any tool that is not `read_only`, hands it an
/// idempotency key, and records the outcome. After a crash, a call whose outcome is unknown is
/// run again only if that is safe: `read_only` and `idempotent` tools are called again with the
/// same key; for `compensatable` and `irreversible` tools the run asks a human instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SideEffect {
    /// Reads only; safe to repeat.
    ReadOnly,
    /// Repeating a call with the same idempotency key has no further effect.
    Idempotent,
    /// Has an effect that can be undone by a compensating action.
    Compensatable,
    /// Has an effect that cannot be undone (a payment, an e-mail). The default.
    #[default]
    Irreversible,
}

impl SideEffect {
    /// Whether a call whose outcome is unknown may simply be made again.
    pub fn safe_to_repeat(self) -> bool {
        matches!(self, SideEffect::ReadOnly | SideEffect::Idempotent)
    }
}

/// Whether a tool call may run on its own.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Runs without asking.
    #[default]
    Auto,
    /// A human approves the exact arguments first.
    Approve,
    /// Never runs.
    Forbid,
}

/// Context handed to a tool with each call.
#[derive(Clone, Debug, Default)]
pub struct ToolContext {
    /// The run making the call.
    pub run_id: String,
    /// The step making the call.
    pub step: String,
    /// A key unique to this logical call, stable across retries and resumes.
    pub idempotency_key: String,
}

/// Why a tool call failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToolError {
    /// No tool of that name is available to the caller.
    #[error("unknown tool `{name}`; available: {available}")]
    Unknown {
        /// The requested name.
        name: String,
        /// The tools the caller may use, comma-separated.
        available: String,
    },
    /// The arguments do not satisfy the tool's schema.
    #[error("invalid arguments for `{tool}`: {message}")]
    InvalidArguments {
        /// The tool.
        tool: String,
        /// Every violation, with its JSON pointer.
        message: String,
    },
    /// The tool ran and failed.
    #[error("tool `{tool}` failed: {message}")]
    Failed {
        /// The tool.
        tool: String,
        /// What went wrong.
        message: String,
    },
    /// The call is forbidden by the workflow's policy.
    #[error("tool `{tool}` is forbidden here: {reason}")]
    Forbidden {
        /// The tool.
        tool: String,
        /// The rule that forbids it.
        reason: String,
    },
    /// A human rejected the call.
    #[error("tool `{tool}` was rejected by a human: {reason}")]
    Rejected {
        /// The tool.
        tool: String,
        /// The reason given.
        reason: String,
    },
    /// The tool did not finish in time.
    #[error("tool `{tool}` timed out after {after_ms} ms")]
    Timeout {
        /// The tool.
        tool: String,
        /// How long we waited.
        after_ms: u64,
    },
}

/// A tool the runtime can call.
pub trait Tool: Send + Sync {
    /// The tool's spec.
    fn spec(&self) -> &ToolSpec;
    /// Run the tool on validated arguments.
    fn call(
        &self,
        args: Value,
        ctx: ToolContext,
    ) -> impl Future<Output = Result<Value, ToolError>> + Send;
}

/// The object-safe twin of [`Tool`], implemented for every `Tool`; registries store these.
pub trait DynTool: Send + Sync {
    /// See [`Tool::spec`].
    fn spec(&self) -> &ToolSpec;
    /// See [`Tool::call`].
    fn call_dyn(&self, args: Value, ctx: ToolContext) -> BoxFuture<'_, Result<Value, ToolError>>;
}

impl<T: Tool> DynTool for T {
    fn spec(&self) -> &ToolSpec {
        Tool::spec(self)
    }
    fn call_dyn(&self, args: Value, ctx: ToolContext) -> BoxFuture<'_, Result<Value, ToolError>> {
        Box::pin(self.call(args, ctx))
    }
}
