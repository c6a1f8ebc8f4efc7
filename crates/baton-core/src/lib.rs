//! # baton-core
//!
//! The vocabulary every other baton crate speaks: identifiers, messages, the run events that
//! make up a run's log, and the three seams of the runtime — [`Model`], [`Tool`] and
//! [`RunStore`]. This crate does no I/O and starts no runtime; providers, tools and stores
//! implement its traits without compiling the engine.

pub mod event;
pub mod id;
pub mod message;
pub mod model;
pub mod store;
pub mod tool;

pub use event::{CostLine, Event, EventKind, KeyUpdate, Name, RunStatus, Usage};
pub use id::RunId;
pub use message::{Message, Role, ToolCall};
pub use model::{
    CallPosition, CompletionRequest, CompletionResponse, DeltaSink, DynModel, Model, ModelError,
    StreamDelta, TokenUsage, ToolDef,
};
pub use store::{EventObserver, HaltRequest, RunRecord, RunStore, StoreError};
pub use tool::{DynTool, SideEffect, Tier, Tool, ToolContext, ToolError, ToolSpec};

/// A boxed, sendable future: the return type of the object-safe twins of the traits.
pub type BoxFuture<'a, T> = futures::future::BoxFuture<'a, T>;
