//! # baton-providers
//!
//! Model providers for baton: implementations of [`baton_core::Model`].
//!
//! - [`scripted::ScriptedModel`] answers from a script file: deterministic replies, tool
//!   calls, latencies, token counts and injected faults, for tests, demos and offline runs.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod scripted;

pub use scripted::{KeyStats, ScriptError, ScriptKey, ScriptedModel};
