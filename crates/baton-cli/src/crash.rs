//! The crash-test hook: with `BATON_TEST_KILL=before:N` or `after:N`, the process kills itself
//! with SIGKILL (a real `kill -9`, nothing flushed, no destructor run) just before or just
//! after its N-th append to the store. The crash harness (`tests/crash.rs`) uses it to stop a
//! run at every step boundary and check that `baton resume` finishes it exactly as an
//! uninterrupted run would. Without the variable nothing of this is used.

use baton_core::{BoxFuture, Event, RunId, RunRecord, RunStatus, RunStore, StoreError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Kills the process around the N-th append.
pub struct CrashStore {
    inner: Arc<dyn RunStore>,
    before: bool,
    at: u64,
    appends: AtomicU64,
}

impl CrashStore {
    /// Parse `before:N` / `after:N`.
    pub fn new(inner: Arc<dyn RunStore>, spec: &str) -> anyhow::Result<Self> {
        let (when, n) = spec
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("BATON_TEST_KILL: expected before:N or after:N"))?;
        let at: u64 = n
            .parse()
            .map_err(|_| anyhow::anyhow!("BATON_TEST_KILL: `{n}` is not a number"))?;
        let before = match when {
            "before" => true,
            "after" => false,
            other => anyhow::bail!("BATON_TEST_KILL: `{other}` is not before or after"),
        };
        Ok(CrashStore {
            inner,
            before,
            at,
            appends: AtomicU64::new(0),
        })
    }
}

/// SIGKILL this process and wait for it to land.
fn die() -> ! {
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

impl RunStore for CrashStore {
    fn create_run(&self, run: RunRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.create_run(run)
    }
    fn append(&self, run: RunId, events: Vec<Event>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let n = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
            if self.before && n == self.at {
                die();
            }
            self.inner.append(run, events).await?;
            if !self.before && n == self.at {
                die();
            }
            Ok(())
        })
    }
    fn set_status(&self, run: RunId, status: RunStatus) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.set_status(run, status)
    }
    fn run(&self, run: RunId) -> BoxFuture<'_, Result<RunRecord, StoreError>> {
        self.inner.run(run)
    }
    fn events(&self, run: RunId, from: u64) -> BoxFuture<'_, Result<Vec<Event>, StoreError>> {
        self.inner.events(run, from)
    }
    fn runs(&self, status: Option<RunStatus>) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        self.inner.runs(status)
    }
    fn prune(
        &self,
        before_us: u64,
        statuses: Vec<RunStatus>,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.prune(before_us, statuses)
    }
}
