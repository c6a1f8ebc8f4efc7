//! # baton-runtime
//!
//! The engine of baton: workflow definitions compile into an immutable graph
//! ([`Workflow`]); each run is a pure state machine ([`machine::RunMachine`]) whose decisions are
//! recorded as events; the [`Runtime`] executor journals those events to a store before it
//! performs any effect, and feeds the effects' results back in.
//!
//! ```text
//! YAML / builder -> WorkflowSpec -> compile -> Workflow (Arc, immutable)
//!                                                 |
//!   Input -> RunMachine::handle -> (events, effects) -> store.append(events) -> perform effects
//!     ^                                                                             |
//!     +-----------------------------------------------------------------------------+
//! ```
//!
//! The runtime names no concrete store or provider: the embedding program passes an
//! `Arc<dyn RunStore>` to [`Runtime::new`] and fills a [`Registry`] with models, tools and step
//! functions.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod builder;
pub mod compile;
pub mod error;
pub mod executor;
pub mod expr;
pub mod guard;
pub mod limits;
pub mod loader;
pub mod machine;
pub mod patterns;
pub mod registry;
pub mod report;
pub mod spec;
pub mod state;
pub mod template;
pub mod workflow;

pub use error::{Diagnostic, RunError, WorkflowError};
pub use executor::Runtime;
pub use loader::{compile_spec, compile_str, load_file, load_file_with_models, parse_spec};
pub use registry::{
    ModelBuildError, ModelEntry, ModelFactory, ModelField, Registry, StepFn, StepFuture, StepInput,
    ToolSourceFactory, View,
};
pub use report::RunReport;
pub use workflow::Workflow;
