//! What the SQL stores share: conversions between the core types and column values, and error
//! mapping.

use crate::codec::{self, CodecError};
use baton_core::{Event, RunId, RunStatus, StoreError};
use serde_json::Value;

/// A `u64` (seq, microseconds) as a signed 64-bit column value.
pub(crate) fn to_i64(what: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Backend(format!("{what} {value} is out of range (max 2^63-1)")))
}

/// A signed 64-bit column value as a `u64`.
pub(crate) fn to_u64(what: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value)
        .map_err(|_| StoreError::Backend(format!("stored {what} {value} is negative")))
}

/// A `u64` bound for a `<` comparison: values past `i64::MAX` compare like `i64::MAX`.
pub(crate) fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A status as stored.
pub(crate) fn status_str(status: RunStatus) -> &'static str {
    status.as_str()
}

/// A stored status.
pub(crate) fn parse_status(run: RunId, text: &str) -> Result<RunStatus, StoreError> {
    Ok(match text {
        "running" => RunStatus::Running,
        "suspended" => RunStatus::Suspended,
        "succeeded" => RunStatus::Succeeded,
        "partial_success" => RunStatus::PartialSuccess,
        "failed" => RunStatus::Failed,
        "halted" => RunStatus::Halted,
        other => {
            return Err(StoreError::Backend(format!(
                "run {run}: unknown stored status {other:?}"
            )));
        }
    })
}

/// A run's input as stored (JSON text).
pub(crate) fn input_json(run: RunId, input: &Value) -> Result<String, StoreError> {
    serde_json::to_string(input)
        .map_err(|e| StoreError::Backend(format!("run {run}: cannot encode input as JSON: {e}")))
}

/// A stored input.
pub(crate) fn parse_input(run: RunId, text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Backend(format!("run {run}: stored input is not JSON: {e}")))
}

/// Map a database error, with what was being done.
pub(crate) fn backend(
    backend: &str,
    context: &str,
    run: Option<RunId>,
    e: sqlx::Error,
) -> StoreError {
    match run {
        Some(run) => StoreError::Backend(format!("{backend}: {context} of run {run}: {e}")),
        None => StoreError::Backend(format!("{backend}: {context}: {e}")),
    }
}

/// Encode a batch for the journal.
pub(crate) fn encode(
    run: RunId,
    events: &[Event],
    format: codec::Format,
) -> Result<Vec<u8>, StoreError> {
    codec::encode(events, format).map_err(|e| StoreError::Backend(format!("run {run}: {e}")))
}

/// Decode one journal row, keeping events with `seq >= from`, into `out`.
pub(crate) fn decode_into(
    run: RunId,
    first_seq: i64,
    body: &[u8],
    from: u64,
    out: &mut Vec<Event>,
) -> Result<(), StoreError> {
    let first = to_u64("first_seq", first_seq)?;
    let decoded = codec::decode(first, body, from).map_err(|e: CodecError| {
        StoreError::Backend(format!("run {run}: journal row at seq {first}: {e}"))
    })?;
    if out.is_empty() {
        *out = decoded;
    } else {
        out.extend(decoded);
    }
    Ok(())
}

/// What is wrong with an append, given whether the run exists and the seq its log expects;
/// `Ok` means the batch continues the log, so the insert may be tried (again).
pub(crate) fn append_verdict(
    run: RunId,
    exists: bool,
    next: u64,
    events: &[Event],
) -> Result<(), StoreError> {
    if !exists {
        return Err(StoreError::NotFound(run));
    }
    crate::check_order(run, next, events)
}
