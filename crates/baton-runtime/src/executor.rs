//! The executor: the one loop that feeds inputs to the run machine, writes its events to the
//! store (before any effect starts), performs the effects, and turns their results into inputs.
//!
//! Rust step functions that finish synchronously run inline, with no task, no allocation and no
//! store round-trip between steps; everything else (models, tools, subprocesses, timers,
//! sub-workflows) runs as futures polled by the run's own task, so a fan-out of N branches is N
//! futures, not N tasks.

use crate::error::RunError;
use crate::machine::{Effect, Input, RunMachine};
use crate::registry::StepFuture;
use crate::report::RunReport;
use crate::workflow::Workflow;
use baton_core::{
    BoxFuture, EventObserver, ModelError, RunId, RunRecord, RunStatus, RunStore, ToolError,
};
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Runs workflows against a store.
#[derive(Clone)]
pub struct Runtime {
    store: Arc<dyn RunStore>,
    observer: Option<Arc<dyn EventObserver>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}

impl Runtime {
    /// A runtime writing runs to `store`.
    pub fn new(store: Arc<dyn RunStore>) -> Self {
        Runtime {
            store,
            observer: None,
        }
    }

    /// Watch every event of every run (progress display, streaming).
    pub fn with_observer(mut self, observer: Arc<dyn EventObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn RunStore> {
        &self.store
    }

    /// Run `wf` on `input` to the end.
    pub async fn run(&self, wf: Arc<Workflow>, input: Value) -> Result<RunReport, RunError> {
        self.run_with_id(wf, input, RunId::new(), None).await
    }

    /// Run with a chosen id (and, for a sub-workflow, its parent).
    pub fn run_with_id(
        &self,
        wf: Arc<Workflow>,
        input: Value,
        run_id: RunId,
        parent: Option<RunId>,
    ) -> BoxFuture<'static, Result<RunReport, RunError>> {
        let rt = self.clone();
        Box::pin(async move { rt.drive(wf, input, run_id, parent).await })
    }

    async fn drive(
        &self,
        wf: Arc<Workflow>,
        input: Value,
        run_id: RunId,
        parent: Option<RunId>,
    ) -> Result<RunReport, RunError> {
        RunMachine::check_input(&wf, &input)?;
        let started = Instant::now();
        let now = now_us();
        self.store
            .create_run(RunRecord {
                id: run_id,
                workflow: wf.name().to_string(),
                status: RunStatus::Running,
                parent,
                input: input.clone(),
                created_at_us: now,
                updated_at_us: now,
            })
            .await?;
        let mut m = RunMachine::new(wf, run_id);
        let mut queue = VecDeque::from([Input::Start { input }]);
        let mut inflight: FuturesUnordered<BoxFuture<'static, Input>> = FuturesUnordered::new();
        let mut finished = None;
        loop {
            while let Some(input) = queue.pop_front() {
                for effect in m.handle(input, now_us()) {
                    if let Effect::Finish { status } = effect {
                        finished = Some(status);
                    } else {
                        self.perform(effect, run_id, &mut queue, &mut inflight);
                    }
                }
            }
            // Journal before effects: the futures pushed above have not been polled yet.
            let events = m.take_events();
            if !events.is_empty() {
                if let Some(o) = &self.observer {
                    for e in &events {
                        o.on_event(run_id, e);
                    }
                }
                self.store.append(run_id, events).await?;
            }
            if let Some(status) = finished {
                self.store.set_status(run_id, status).await?;
                break;
            }
            match inflight.next().await {
                Some(input) => queue.push_back(input),
                None => {
                    self.store.set_status(run_id, RunStatus::Failed).await?;
                    return Err(RunError::Nondeterminism {
                        seq: m.seq(),
                        message: "the run stalled: nothing in flight and nothing ready".into(),
                    });
                }
            }
        }
        Ok(RunReport::from_machine(
            &m,
            started.elapsed().as_secs_f64() * 1e3,
        ))
    }

    fn perform(
        &self,
        effect: Effect,
        run_id: RunId,
        queue: &mut VecDeque<Input>,
        inflight: &mut FuturesUnordered<BoxFuture<'static, Input>>,
    ) {
        match effect {
            Effect::CallFunction { task, func, input } => {
                let t0 = Instant::now();
                match func.call(input) {
                    StepFuture::Ready(result) => queue.push_back(Input::CodeReturned {
                        task,
                        result,
                        duration_us: t0.elapsed().as_micros() as u64,
                    }),
                    StepFuture::Pending(fut) => inflight.push(Box::pin(async move {
                        let result = fut.await;
                        Input::CodeReturned {
                            task,
                            result,
                            duration_us: t0.elapsed().as_micros() as u64,
                        }
                    })),
                }
            }
            Effect::CallModel {
                task,
                model,
                request,
                timeout,
            } => inflight.push(Box::pin(async move {
                let t0 = Instant::now();
                let result = match tokio::time::timeout(timeout, model.complete_dyn(request)).await
                {
                    Ok(r) => r,
                    Err(_) => Err(ModelError::Timeout {
                        after_ms: timeout.as_millis() as u64,
                    }),
                };
                Input::ModelReplied {
                    task,
                    result,
                    duration_us: t0.elapsed().as_micros() as u64,
                }
            })),
            Effect::CallTool {
                task,
                call_id,
                name,
                tool,
                args,
                ctx,
                timeout,
            } => inflight.push(Box::pin(async move {
                let t0 = Instant::now();
                let result =
                    match tokio::time::timeout(timeout, tool.call_dyn(args.clone(), ctx)).await {
                        Ok(r) => r,
                        Err(_) => Err(ToolError::Timeout {
                            tool: name.clone(),
                            after_ms: timeout.as_millis() as u64,
                        }),
                    };
                Input::ToolReturned {
                    task,
                    call_id,
                    tool: name,
                    args,
                    result,
                    duration_us: t0.elapsed().as_micros() as u64,
                }
            })),
            Effect::RunCode {
                task,
                command,
                cwd,
                input,
                timeout,
            } => inflight.push(Box::pin(async move {
                let t0 = Instant::now();
                let opts = baton_tools::SubprocessOptions {
                    timeout,
                    cwd: Some(cwd),
                    env: Vec::new(),
                };
                let result = baton_tools::run_json(&command, &input, &opts)
                    .await
                    .map_err(|e| e.to_string());
                Input::CodeReturned {
                    task,
                    result,
                    duration_us: t0.elapsed().as_micros() as u64,
                }
            })),
            Effect::RunChild {
                task,
                workflow,
                input,
            } => {
                let child = RunId::new();
                queue.push_back(Input::ChildStarted { task, child });
                let fut = self.run_with_id(workflow, input, child, Some(run_id));
                inflight.push(Box::pin(async move {
                    let t0 = Instant::now();
                    let duration_us = || t0.elapsed().as_micros() as u64;
                    match fut.await {
                        Ok(rep) => Input::ChildFinished {
                            task,
                            child,
                            status: rep.status,
                            output: rep.outputs,
                            reason: rep.reason,
                            usage: rep.usage,
                            duration_us: duration_us(),
                        },
                        Err(e) => Input::ChildFinished {
                            task,
                            child,
                            status: RunStatus::Failed,
                            output: Value::Null,
                            reason: Some(e.to_string()),
                            usage: Default::default(),
                            duration_us: duration_us(),
                        },
                    }
                }));
            }
            Effect::StartTimer { timer, after } => inflight.push(Box::pin(async move {
                tokio::time::sleep(after).await;
                Input::TimerFired { timer }
            })),
            Effect::Finish { .. } => {}
        }
    }
}
