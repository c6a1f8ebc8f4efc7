//! The store that forgets events.

use crate::memory::sort_newest_first;
use crate::{check_order, now_us};
use baton_core::{BoxFuture, Event, RunId, RunRecord, RunStatus, RunStore, StoreError};
use std::collections::hash_map::{Entry as MapEntry, HashMap};
use std::future::ready;
use std::sync::{Mutex, MutexGuard, PoisonError};

struct Entry {
    record: RunRecord,
    next_seq: u64,
}

/// A [`RunStore`] that keeps run records but throws events away.
///
/// It exists for benchmarks of runs without persistence: it measures the engine, not the log.
/// Run records are kept, so [`run`](RunStore::run), [`runs`](RunStore::runs) and
/// [`set_status`](RunStore::set_status) behave as in any store, and appends are checked for
/// ordering exactly as elsewhere (only the next `seq` of each run is remembered); the events
/// themselves are dropped, and [`events`](RunStore::events) returns an empty list for a known
/// run. A run recorded here therefore cannot be resumed or inspected.
#[derive(Default)]
pub struct NullStore {
    runs: Mutex<HashMap<RunId, Entry>>,
}

impl NullStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many events have been appended to the run, and discarded (0 for an unknown run).
    pub fn event_count(&self, run: RunId) -> usize {
        self.lock().get(&run).map_or(0, |entry| {
            usize::try_from(entry.next_seq).unwrap_or(usize::MAX)
        })
    }

    /// How many runs the store holds.
    pub fn run_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RunId, Entry>> {
        // Every mutation validates before it changes anything, so a poisoned map is consistent.
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn create_now(&self, run: RunRecord) -> Result<(), StoreError> {
        match self.lock().entry(run.id) {
            MapEntry::Occupied(_) => Err(StoreError::AlreadyExists(run.id)),
            MapEntry::Vacant(slot) => {
                slot.insert(Entry {
                    record: run,
                    next_seq: 0,
                });
                Ok(())
            }
        }
    }

    fn append_now(&self, run: RunId, events: &[Event]) -> Result<(), StoreError> {
        let mut runs = self.lock();
        let entry = runs.get_mut(&run).ok_or(StoreError::NotFound(run))?;
        check_order(run, entry.next_seq, events)?;
        entry.next_seq = entry.next_seq.saturating_add(events.len() as u64);
        Ok(())
    }

    fn set_status_now(&self, run: RunId, status: RunStatus) -> Result<(), StoreError> {
        let mut runs = self.lock();
        let record = &mut runs.get_mut(&run).ok_or(StoreError::NotFound(run))?.record;
        record.status = status;
        record.updated_at_us = now_us().max(record.updated_at_us);
        Ok(())
    }

    fn run_now(&self, run: RunId) -> Result<RunRecord, StoreError> {
        self.lock()
            .get(&run)
            .map(|entry| entry.record.clone())
            .ok_or(StoreError::NotFound(run))
    }

    fn events_now(&self, run: RunId) -> Result<Vec<Event>, StoreError> {
        if self.lock().contains_key(&run) {
            Ok(Vec::new())
        } else {
            Err(StoreError::NotFound(run))
        }
    }

    fn runs_now(&self, status: Option<RunStatus>) -> Vec<RunRecord> {
        let mut records: Vec<RunRecord> = self
            .lock()
            .values()
            .filter(|entry| status.is_none_or(|s| entry.record.status == s))
            .map(|entry| entry.record.clone())
            .collect();
        sort_newest_first(&mut records);
        records
    }
}

impl std::fmt::Debug for NullStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NullStore")
            .field("runs", &self.run_count())
            .finish_non_exhaustive()
    }
}

impl RunStore for NullStore {
    fn create_run(&self, run: RunRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(ready(self.create_now(run)))
    }

    fn append(&self, run: RunId, events: Vec<Event>) -> BoxFuture<'_, Result<(), StoreError>> {
        // The batch is dropped here, after the check.
        Box::pin(ready(self.append_now(run, &events)))
    }

    fn set_status(&self, run: RunId, status: RunStatus) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(ready(self.set_status_now(run, status)))
    }

    fn run(&self, run: RunId) -> BoxFuture<'_, Result<RunRecord, StoreError>> {
        Box::pin(ready(self.run_now(run)))
    }

    fn events(&self, run: RunId, _from: u64) -> BoxFuture<'_, Result<Vec<Event>, StoreError>> {
        Box::pin(ready(self.events_now(run)))
    }

    fn runs(&self, status: Option<RunStatus>) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        Box::pin(ready(Ok(self.runs_now(status))))
    }

    fn prune(
        &self,
        before_us: u64,
        statuses: Vec<RunStatus>,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, e| !crate::expired(&e.record, before_us, &statuses));
        let n = (before - map.len()) as u64;
        Box::pin(std::future::ready(Ok(n)))
    }
}
