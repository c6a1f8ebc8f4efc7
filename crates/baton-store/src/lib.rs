//! # baton-store
//!
//! [`RunStore`](baton_core::RunStore) implementations:
//!
//! - [`MemoryStore`]: runs and their full event logs in memory. The default for tests, the
//!   scripted provider and one-shot CLI runs whose history need not outlive the process.
//! - [`NullStore`]: keeps run records and enforces append ordering but discards events; for
//!   benchmarks of runs without persistence.
//! - [`SqliteStore`]: one SQLite file (WAL), shared safely by several processes; durable
//!   against a killed process by default, against power loss with [`SqliteOptions::strict`].
//! - [`PostgresStore`]: a PostgreSQL database, for runners on several machines.
//!
//! Both SQL stores keep a `runs` table and a `journal` table with one row per appended batch,
//! the batch encoded compactly with a format version byte (see [`codec`]); their schemas are
//! migrated by embedded, versioned migrations when the store is opened.
//!
//! With the `test-utils` feature, the `testing` module provides the conformance suite every store
//! backend (in memory, SQLite, PostgreSQL…) is expected to pass.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod codec;
mod memory;
mod null;
mod postgres;
mod sql;
mod sqlite;
#[cfg(feature = "test-utils")]
pub mod testing;

pub use memory::MemoryStore;
pub use null::NullStore;
pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::{DbStats, SqliteOptions, SqliteStore};

use baton_core::{Event, RunId, StoreError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now (0 if the clock is before 1970).
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Whether retention removes `record`: in one of `statuses` and last updated before `before_us`.
pub(crate) fn expired(
    record: &baton_core::RunRecord,
    before_us: u64,
    statuses: &[baton_core::RunStatus],
) -> bool {
    record.updated_at_us < before_us && statuses.contains(&record.status)
}

/// Check that `events` continue a log whose next seq is `next`, without gaps or repeats.
pub(crate) fn check_order(run: RunId, next: u64, events: &[Event]) -> Result<(), StoreError> {
    for (offset, event) in (0u64..).zip(events) {
        let expected = next.saturating_add(offset);
        if event.seq != expected {
            return Err(StoreError::OutOfOrder {
                run,
                expected,
                found: event.seq,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::EventKind;

    fn ev(seq: u64) -> Event {
        Event {
            seq,
            at_us: 0,
            kind: EventKind::TimerFired { timer: seq },
        }
    }

    #[test]
    fn order_check_names_first_offender() {
        let run = RunId::new();
        assert!(check_order(run, 0, &[]).is_ok());
        assert!(check_order(run, 2, &[ev(2), ev(3), ev(4)]).is_ok());
        let err = check_order(run, 2, &[ev(2), ev(3), ev(5)]).unwrap_err();
        assert!(matches!(
            err,
            StoreError::OutOfOrder {
                expected: 4,
                found: 5,
                ..
            }
        ));
        let err = check_order(run, 2, &[ev(1)]).unwrap_err();
        assert!(matches!(
            err,
            StoreError::OutOfOrder {
                expected: 2,
                found: 1,
                ..
            }
        ));
    }

    #[test]
    fn clock_is_sane() {
        // After 2020-01-01.
        assert!(now_us() > 1_577_836_800_000_000);
    }
}
