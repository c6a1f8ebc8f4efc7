//! The in-memory store.

use crate::{check_order, now_us};
use baton_core::{BoxFuture, Event, RunId, RunRecord, RunStatus, RunStore, StoreError};
use std::collections::hash_map::{Entry as MapEntry, HashMap};
use std::future::ready;
use std::sync::{Mutex, MutexGuard, PoisonError};

struct Entry {
    record: RunRecord,
    events: Vec<Event>,
}

/// A [`RunStore`] that keeps runs and their event logs in memory.
///
/// Nothing survives the process. Every operation completes immediately (the returned futures
/// are ready); all runs share one mutex, held only for the duration of each call. Appends move
/// the events into the log without cloning them.
#[derive(Default)]
pub struct MemoryStore {
    runs: Mutex<HashMap<RunId, Entry>>,
    cache: Mutex<HashMap<String, serde_json::Value>>,
    halts: Mutex<Vec<baton_core::HaltRequest>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many events the run's log holds (0 for an unknown run).
    pub fn event_count(&self, run: RunId) -> usize {
        self.lock().get(&run).map_or(0, |entry| entry.events.len())
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
                    events: Vec::new(),
                });
                Ok(())
            }
        }
    }

    fn append_now(&self, run: RunId, events: Vec<Event>) -> Result<(), StoreError> {
        let mut runs = self.lock();
        let entry = runs.get_mut(&run).ok_or(StoreError::NotFound(run))?;
        check_order(run, entry.events.len() as u64, &events)?;
        if entry.events.is_empty() {
            // Take the batch's buffer as the log: no copy at all.
            entry.events = events;
        } else {
            entry.events.extend(events);
        }
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

    fn events_now(&self, run: RunId, from: u64) -> Result<Vec<Event>, StoreError> {
        let runs = self.lock();
        let log = &runs.get(&run).ok_or(StoreError::NotFound(run))?.events;
        // The log starts at seq 0 without gaps, so seq n is at index n.
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(log.len());
        Ok(log[start..].to_vec())
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

/// Sort by creation time, newest first; ties by id, highest first.
pub(crate) fn sort_newest_first(records: &mut [RunRecord]) {
    records.sort_unstable_by(|a, b| {
        b.created_at_us
            .cmp(&a.created_at_us)
            .then_with(|| b.id.cmp(&a.id))
    });
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("runs", &self.run_count())
            .finish_non_exhaustive()
    }
}

impl RunStore for MemoryStore {
    fn request_halt(
        &self,
        run: Option<RunId>,
        reason: String,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut h = self.halts.lock().unwrap_or_else(|p| p.into_inner());
        h.push(baton_core::HaltRequest {
            run,
            at_us: crate::now_us(),
            reason,
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn halts_since(
        &self,
        since_us: u64,
    ) -> BoxFuture<'_, Result<Vec<baton_core::HaltRequest>, StoreError>> {
        let h = self.halts.lock().unwrap_or_else(|p| p.into_inner());
        let out = h.iter().filter(|x| x.at_us >= since_us).cloned().collect();
        Box::pin(std::future::ready(Ok(out)))
    }

    fn cache_get(
        &self,
        key: String,
    ) -> BoxFuture<'_, Result<Option<serde_json::Value>, StoreError>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        Box::pin(std::future::ready(Ok(cache.get(&key).cloned())))
    }

    fn cache_put(
        &self,
        key: String,
        value: serde_json::Value,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(key, value);
        Box::pin(std::future::ready(Ok(())))
    }

    fn create_run(&self, run: RunRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(ready(self.create_now(run)))
    }

    fn append(&self, run: RunId, events: Vec<Event>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(ready(self.append_now(run, events)))
    }

    fn set_status(&self, run: RunId, status: RunStatus) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(ready(self.set_status_now(run, status)))
    }

    fn run(&self, run: RunId) -> BoxFuture<'_, Result<RunRecord, StoreError>> {
        Box::pin(ready(self.run_now(run)))
    }

    fn events(&self, run: RunId, from: u64) -> BoxFuture<'_, Result<Vec<Event>, StoreError>> {
        Box::pin(ready(self.events_now(run, from)))
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
