//! The store seam: where runs and their event logs live.
//!
//! One writer appends to a run's log, in `seq` order; a store refuses an append that would
//! leave a gap or repeat a `seq`, so two writers can never interleave silently.

use crate::BoxFuture;
use crate::event::{Event, RunStatus};
use crate::id::RunId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A request to halt one run, or all (`run: None`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HaltRequest {
    /// The run, or `None` for every active run.
    pub run: Option<RunId>,
    /// When it was made, microseconds since the Unix epoch.
    pub at_us: u64,
    /// Why.
    pub reason: String,
}

/// What a store knows about a run besides its events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run.
    pub id: RunId,
    /// Workflow name.
    pub workflow: String,
    /// Current status.
    pub status: RunStatus,
    /// The parent run, for a sub-workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<RunId>,
    /// The run's input.
    pub input: Value,
    /// Where the workflow came from (a file path), so that the run can be resumed or forked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Creation time, microseconds since the Unix epoch.
    pub created_at_us: u64,
    /// Last status change, microseconds since the Unix epoch.
    pub updated_at_us: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such run.
    #[error("run {0} not found")]
    NotFound(RunId),
    /// A run with that id already exists.
    #[error("run {0} already exists")]
    AlreadyExists(RunId),
    /// An append did not continue the log where it ended (a second writer, or a lost write).
    #[error("run {run}: append out of order: expected seq {expected}, got {found}")]
    OutOfOrder {
        /// The run.
        run: RunId,
        /// The next seq the log expects.
        expected: u64,
        /// The seq that was offered.
        found: u64,
    },
    /// The backend failed.
    #[error("store backend: {0}")]
    Backend(String),
}

/// Durable (or in-memory) home of runs and their logs.
pub trait RunStore: Send + Sync {
    /// Record a new run.
    fn create_run(&self, run: RunRecord) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Append events to a run's log; the first must carry the next `seq`.
    fn append(&self, run: RunId, events: Vec<Event>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Change a run's status.
    fn set_status(&self, run: RunId, status: RunStatus) -> BoxFuture<'_, Result<(), StoreError>>;
    /// A run's record.
    fn run(&self, run: RunId) -> BoxFuture<'_, Result<RunRecord, StoreError>>;
    /// A run's events with `seq >= from`, in order.
    fn events(&self, run: RunId, from: u64) -> BoxFuture<'_, Result<Vec<Event>, StoreError>>;
    /// Runs, newest first, optionally only those in one status.
    fn runs(&self, status: Option<RunStatus>) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>>;
    /// The response cache: the reply stored for a request key, if any. Stores without a cache
    /// answer `None`.
    fn cache_get(&self, key: String) -> BoxFuture<'_, Result<Option<Value>, StoreError>> {
        let _ = key;
        Box::pin(std::future::ready(Ok(None)))
    }
    /// Store a reply in the response cache.
    fn cache_put(&self, key: String, value: Value) -> BoxFuture<'_, Result<(), StoreError>> {
        let _ = (key, value);
        Box::pin(std::future::ready(Ok(())))
    }
    /// The kill switch: ask every process driving `run` (or, with `None`, every active run) to
    /// halt it at its next step boundary.
    fn request_halt(
        &self,
        run: Option<RunId>,
        reason: String,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let _ = (run, reason);
        Box::pin(std::future::ready(Err(StoreError::Backend(
            "this store has no kill switch".into(),
        ))))
    }
    /// Halt requests made at or after `since_us`, oldest first.
    fn halts_since(&self, since_us: u64) -> BoxFuture<'_, Result<Vec<HaltRequest>, StoreError>> {
        let _ = since_us;
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
    /// Delete runs in one of `statuses` last updated before `before_us`, with their events
    /// (retention). Returns how many runs were deleted.
    fn prune(
        &self,
        before_us: u64,
        statuses: Vec<RunStatus>,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;
}

/// Something that watches events as they are recorded (a progress display, a stream).
/// Observers only consume; they are called by the run's single writer and must not block.
pub trait EventObserver: Send + Sync {
    /// Called once per event, in order, before the event is handed to the store.
    fn on_event(&self, run: RunId, event: &Event);
    /// Called with each piece of a streaming model reply as it arrives (not stored; the
    /// whole reply is recorded in the `model_called` event).
    fn on_delta(&self, run: RunId, task: u64, delta: &crate::model::StreamDelta) {
        let _ = (run, task, delta);
    }
}
