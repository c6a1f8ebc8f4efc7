//! The executor: the one loop that feeds inputs to the run machine, writes its events to the
//! store (before any effect starts), performs the effects, and turns their results into inputs.
//!
//! Rust step functions that finish synchronously run inline, with no task, no allocation and no
//! store round-trip between steps; everything else (models, tools, subprocesses, timers,
//! sub-workflows) runs as futures polled by the run's own task, so a fan-out of N branches is N
//! futures, not N tasks.

use crate::error::RunError;
use crate::machine::{Effect, Input, Recorded, RunMachine};
use crate::registry::StepFuture;
use crate::report::RunReport;
use crate::workflow::Workflow;
use baton_core::{
    BoxFuture, CompletionRequest, CompletionResponse, EventObserver, ModelError, RunId, RunRecord,
    RunStatus, RunStore, ToolError,
};
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// When events reach the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Journal {
    /// After every input the machine handles: every step boundary is durable before the next
    /// step starts, so a kill -9 at any moment loses no completed step. The default.
    #[default]
    PerStep,
    /// Only before effects that leave the process (model, tool, subprocess, timer) and at the
    /// end; consecutive in-process steps are batched. For in-memory runs and benchmarks.
    Batched,
}

/// A human decision to record on a suspended run.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The waiting task.
    pub task: u64,
    /// For a tool call: its call id.
    pub call_id: Option<String>,
    /// Approve or reject.
    pub approved: bool,
    /// Who decides.
    pub by: String,
    /// Why.
    pub reason: Option<String>,
    /// Edited arguments or data.
    pub value: Option<Value>,
}

/// Recorded replies and tool results served instead of calling again (forks and replays).
#[derive(Default)]
pub struct ReplayCache {
    models: Mutex<HashMap<String, VecDeque<CompletionResponse>>>,
    tools: Mutex<HashMap<String, VecDeque<Result<Value, ToolError>>>>,
}

impl ReplayCache {
    /// Build from the calls recorded in a run.
    pub fn from_recorded(rec: Recorded) -> Self {
        let mut models: HashMap<String, VecDeque<CompletionResponse>> = HashMap::new();
        for (req, resp) in rec.models {
            models.entry(model_key(&req)).or_default().push_back(resp);
        }
        let mut tools: HashMap<String, VecDeque<Result<Value, ToolError>>> = HashMap::new();
        for (name, args, r) in rec.tools {
            tools
                .entry(tool_key(&name, &args))
                .or_default()
                .push_back(r);
        }
        ReplayCache {
            models: Mutex::new(models),
            tools: Mutex::new(tools),
        }
    }

    fn model(&self, req: &CompletionRequest) -> Option<CompletionResponse> {
        let mut m = self.models.lock().unwrap_or_else(|p| p.into_inner());
        m.get_mut(&model_key(req))?.pop_front()
    }

    fn tool(&self, name: &str, args: &Value) -> Option<Result<Value, ToolError>> {
        let mut m = self.tools.lock().unwrap_or_else(|p| p.into_inner());
        m.get_mut(&tool_key(name, args))?.pop_front()
    }
}

/// The response-cache key of a request: a digest of the request exactly as it would be sent.
pub fn cache_key(req: &CompletionRequest) -> String {
    use sha2::{Digest, Sha256};
    let body = serde_json::to_vec(req).unwrap_or_default();
    let digest = Sha256::digest(&body);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn model_key(req: &CompletionRequest) -> String {
    serde_json::to_string(req).unwrap_or_default()
}

fn tool_key(name: &str, args: &Value) -> String {
    format!("{name}\u{0}{args}")
}

/// Runs workflows against a store.
#[derive(Clone)]
pub struct Runtime {
    store: Arc<dyn RunStore>,
    observer: Option<Arc<dyn EventObserver>>,
    journal: Journal,
    replay: Option<Arc<ReplayCache>>,
    kill_poll: Option<std::time::Duration>,
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
            journal: Journal::default(),
            replay: None,
            kill_poll: None,
        }
    }

    /// Honour the kill switch: every `every`, look in the store for halt requests (`baton kill`)
    /// made since this process began driving the run, and halt it at that point.
    pub fn with_kill_switch(mut self, every: std::time::Duration) -> Self {
        self.kill_poll = Some(every);
        self
    }

    /// Choose when events reach the store.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = journal;
        self
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
                source: wf.source().map(|p| p.display().to_string()),
                created_at_us: now,
                updated_at_us: now,
            })
            .await?;
        let m = RunMachine::new(wf, run_id);
        self.run_loop(
            m,
            VecDeque::from([Input::Start { input }]),
            Vec::new(),
            started,
        )
        .await
    }

    /// Load a run's log and rebuild its machine.
    pub async fn load(&self, wf: Arc<Workflow>, run_id: RunId) -> Result<RunMachine, RunError> {
        // `events` answers NotFound for an unknown run; the run record is not needed here.
        let events = self.store.events(run_id, 0).await?;
        RunMachine::replay_owned(wf, run_id, events)
    }

    /// Continue a run from its log: after a crash, a kill, or a suspension whose decisions have
    /// been recorded. Work that completed is not repeated.
    pub async fn resume(&self, wf: Arc<Workflow>, run_id: RunId) -> Result<RunReport, RunError> {
        self.resume_with(wf, run_id, None).await
    }

    /// Record a human decision on a suspended (or running) run and continue it.
    pub async fn decide(
        &self,
        wf: Arc<Workflow>,
        run_id: RunId,
        decision: Decision,
    ) -> Result<RunReport, RunError> {
        self.resume_with(wf, run_id, Some(decision)).await
    }

    async fn resume_with(
        &self,
        wf: Arc<Workflow>,
        run_id: RunId,
        decision: Option<Decision>,
    ) -> Result<RunReport, RunError> {
        let started = Instant::now();
        let record = self.store.run(run_id).await?;
        let events = self.store.events(run_id, 0).await?;
        if events.is_empty() && decision.is_none() {
            // The process stopped before its first append: start the run from its input.
            self.store.set_status(run_id, RunStatus::Running).await?;
            let m = RunMachine::new(wf, run_id);
            let start = VecDeque::from([Input::Start {
                input: record.input,
            }]);
            return self.run_loop(m, start, Vec::new(), started).await;
        }
        let mut m = RunMachine::replay_owned(wf, run_id, events)?;
        if matches!(
            m.status(),
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::PartialSuccess
        ) {
            // The log is finished; only the record's status may not have been written.
            if record.status != m.status() {
                self.store.set_status(run_id, m.status()).await?;
            }
            return Ok(RunReport::from_machine(
                &m,
                started.elapsed().as_secs_f64() * 1e3,
            ));
        }
        if let Some(d) = &decision {
            m.check_decision(d.task, d.call_id.as_deref(), d.approved, &d.value)
                .map_err(RunError::Input)?;
        }
        let first = decision.map(|d| Input::Decision {
            task: d.task,
            call_id: d.call_id,
            approved: d.approved,
            by: d.by,
            reason: d.reason,
            value: d.value,
        });
        let effects = m.resume(now_us(), first);
        self.store.set_status(run_id, RunStatus::Running).await?;
        self.run_loop(m, VecDeque::new(), effects, started).await
    }

    /// Fork a run: a new run that shares the original's log up to event `at` (inclusive), with
    /// state changes applied, continued on `wf` (which may differ from the original in prompts
    /// or models). Recorded model replies and tool results of the original are served again
    /// wherever the request is the same, so no call or side effect that already happened fires
    /// again. The original run is not touched.
    pub async fn fork(
        &self,
        original: Arc<Workflow>,
        wf: Arc<Workflow>,
        from: RunId,
        at: u64,
        set: Vec<(String, Value)>,
    ) -> Result<RunReport, RunError> {
        let started = Instant::now();
        let record = self.store.run(from).await?;
        let events = self.store.events(from, 0).await?;
        if at as usize >= events.len() {
            return Err(RunError::Input(format!(
                "run {from} has {} events; --at must be below that",
                events.len()
            )));
        }
        let recorded = RunMachine::recorded_calls(original, from, &events)?;
        // A step boundary ends after the step's transitions: a fork at a step's completion
        // keeps where that step was going.
        let mut at = at as usize;
        while events
            .get(at + 1)
            .is_some_and(|e| matches!(e.kind, baton_core::EventKind::Transition { .. }))
        {
            at += 1;
        }
        let at = at as u64;
        let prefix: Vec<_> = events[..=at as usize].to_vec();
        let run_id = RunId::new();
        let mut m = RunMachine::replay(wf.clone(), run_id, &prefix)?;
        let now = now_us();
        self.store
            .create_run(RunRecord {
                id: run_id,
                workflow: wf.name().to_string(),
                status: RunStatus::Running,
                parent: None,
                input: record.input,
                source: wf.source().map(|p| p.display().to_string()),
                created_at_us: now,
                updated_at_us: now,
            })
            .await?;
        self.store.append(run_id, prefix).await?;
        m.mark_forked(from, at, now);
        if !set.is_empty() {
            m.override_state(set, now).map_err(RunError::Input)?;
        }
        let effects = m.resume(now_us(), None);
        let mut rt = self.clone();
        rt.replay = Some(Arc::new(ReplayCache::from_recorded(recorded)));
        rt.run_loop(m, VecDeque::new(), effects, started).await
    }

    async fn run_loop(
        &self,
        mut m: RunMachine,
        mut queue: VecDeque<Input>,
        initial: Vec<Effect>,
        started: Instant,
    ) -> Result<RunReport, RunError> {
        let run_id = m.run_id();
        let parent = self.store.run(run_id).await.ok().and_then(|r| r.parent);
        let driving_since = now_us();
        let mut next_poll = self.kill_poll.map(|d| tokio::time::Instant::now() + d);
        let mut inflight: FuturesUnordered<BoxFuture<'static, Input>> = FuturesUnordered::new();
        let mut finished = None;
        let mut pending: Vec<Effect> = initial;
        loop {
            loop {
                // Journal before effects: nothing below starts before its events are stored.
                if self.journal == Journal::PerStep || queue.is_empty() {
                    self.flush(&mut m).await?;
                }
                for effect in pending.drain(..) {
                    if let Effect::Finish { status } = effect {
                        finished = Some(status);
                    } else {
                        self.perform(effect, run_id, &mut queue, &mut inflight);
                    }
                }
                let Some(input) = queue.pop_front() else {
                    break;
                };
                m.handle_into(input, now_us(), &mut pending);
            }
            self.flush(&mut m).await?;
            if let Some(status) = finished {
                self.store.set_status(run_id, status).await?;
                break;
            }
            let next = match next_poll {
                Some(at) => tokio::select! {
                    input = inflight.next() => input,
                    _ = tokio::time::sleep_until(at) => {
                        next_poll = self.kill_poll.map(|d| tokio::time::Instant::now() + d);
                        let halts = self.store.halts_since(driving_since).await.unwrap_or_default();
                        if let Some(h) = halts.iter().find(|h| h.run.is_none() || h.run == Some(run_id) || (h.run.is_some() && h.run == parent)) {
                            pending = m.kill(format!("kill switch: {}", h.reason), now_us());
                        }
                        continue;
                    }
                },
                None => inflight.next().await,
            };
            match next {
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

    async fn flush(&self, m: &mut RunMachine) -> Result<(), RunError> {
        if m.pending_events().is_empty() {
            return Ok(());
        }
        let events = m.take_events();
        if let Some(o) = &self.observer {
            for e in &events {
                o.on_event(m.run_id(), e);
            }
        }
        self.store.append(m.run_id(), events).await?;
        Ok(())
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
                cache,
                limit,
                breaker,
                rate,
            } => {
                if let Some(resp) = self.replay.as_ref().and_then(|c| c.model(&request)) {
                    queue.push_back(Input::ModelReplied {
                        task,
                        result: Ok(resp),
                        duration_us: 0,
                        replayed: true,
                        cache: None,
                        breaker: None,
                    });
                    return;
                }
                // Streamed pieces go to the observers as they arrive; the log gets the whole reply.
                let observer = self.observer.clone();
                let store = self.store.clone();
                let call: BoxFuture<'static, Input> = Box::pin(async move {
                    let t0 = Instant::now();
                    // The response cache, keyed on the exact request.
                    let key = cache.then(|| cache_key(&request));
                    if let Some(k) = &key
                        && let Ok(Some(v)) = store.cache_get(k.clone()).await
                        && let Ok(resp) = serde_json::from_value::<CompletionResponse>(v)
                    {
                        return Input::ModelReplied {
                            task,
                            result: Ok(resp),
                            duration_us: t0.elapsed().as_micros() as u64,
                            replayed: false,
                            cache: Some(true),
                            breaker: None,
                        };
                    }
                    // Wait for the model's request rate, then for a permit of its concurrency
                    // limit (both shared by all runs).
                    if let Some(r) = &rate {
                        r.acquire().await;
                    }
                    let _permit = match &limit {
                        Some(sem) => sem.clone().acquire_owned().await.ok(),
                        None => None,
                    };
                    let target = request.model.clone();
                    let mut change = None;
                    if let Some(b) = &breaker {
                        match b.admit() {
                            crate::limits::Admit::No => {
                                return Input::ModelReplied {
                                    task,
                                    result: Err(ModelError::Http {
                                        status: 503,
                                        message: format!(
                                            "circuit breaker open for `{target}`: the provider failed repeatedly; calls resume after its cool-down"
                                        ),
                                    }),
                                    duration_us: t0.elapsed().as_micros() as u64,
                                    replayed: false,
                                    cache: None,
                                    breaker: None,
                                };
                            }
                            crate::limits::Admit::Yes(c) => change = c,
                        }
                    }
                    let call = match observer {
                        Some(o) => {
                            let sink: baton_core::DeltaSink =
                                Arc::new(move |d| o.on_delta(run_id, task, &d));
                            model.complete_streaming_dyn(request, sink)
                        }
                        None => model.complete_dyn(request),
                    };
                    let result = match tokio::time::timeout(timeout, call).await {
                        Ok(r) => r,
                        Err(_) => Err(ModelError::Timeout {
                            after_ms: timeout.as_millis() as u64,
                        }),
                    };
                    if let (Some(k), Ok(resp)) = (key.clone(), &result)
                        && let Ok(v) = serde_json::to_value(resp)
                    {
                        // A cache that cannot be written costs only a later miss.
                        let _ = store.cache_put(k, v).await;
                    }
                    if let Some(b) = &breaker {
                        let ok = match &result {
                            Ok(_) => true,
                            Err(e) => !e.is_retryable(),
                        };
                        change = b.record(ok).or(change);
                    }
                    Input::ModelReplied {
                        task,
                        result,
                        duration_us: t0.elapsed().as_micros() as u64,
                        replayed: false,
                        cache: key.map(|_| false),
                        breaker: change.map(|(f, t)| {
                            (
                                target.clone(),
                                f.as_str().to_string(),
                                t.as_str().to_string(),
                            )
                        }),
                    }
                });
                // A call that reads and writes the response cache uses the store: it runs on a
                // task of its own (see `own_task`).
                inflight.push(if cache {
                    own_task(call, move |e| Input::ModelReplied {
                        task,
                        result: Err(ModelError::Config {
                            message: format!("the model call's task ended: {e}"),
                        }),
                        duration_us: 0,
                        replayed: false,
                        cache: None,
                        breaker: None,
                    })
                } else {
                    call
                });
            }
            Effect::CallTool {
                task,
                call_id,
                name,
                tool,
                args,
                ctx,
                timeout,
                breaker,
            } => {
                if let Some(result) = self.replay.as_ref().and_then(|c| c.tool(&name, &args)) {
                    queue.push_back(Input::ToolReturned {
                        task,
                        call_id,
                        tool: name,
                        args,
                        result,
                        duration_us: 0,
                        replayed: true,
                        breaker: None,
                    });
                    return;
                }
                inflight.push(Box::pin(async move {
                    let t0 = Instant::now();
                    let mut change = None;
                    let admitted = match &breaker {
                        Some(b) => match b.admit() {
                            crate::limits::Admit::No => false,
                            crate::limits::Admit::Yes(c) => {
                                change = c;
                                true
                            }
                        },
                        None => true,
                    };
                    let result = if !admitted {
                        Err(ToolError::Failed {
                            tool: name.clone(),
                            message: "circuit breaker open: the tool failed repeatedly; calls resume after its cool-down".into(),
                        })
                    } else {
                        let r = match tokio::time::timeout(timeout, tool.call_dyn(args.clone(), ctx))
                            .await
                        {
                            Ok(r) => r,
                            Err(_) => Err(ToolError::Timeout {
                                tool: name.clone(),
                                after_ms: timeout.as_millis() as u64,
                            }),
                        };
                        if let Some(b) = &breaker {
                            change = b.record(r.is_ok()).or(change);
                        }
                        r
                    };
                    let breaker = change.map(|(f, t)| {
                        (format!("tool {name}"), f.as_str().to_string(), t.as_str().to_string())
                    });
                    Input::ToolReturned {
                        task,
                        call_id,
                        tool: name,
                        args,
                        result,
                        duration_us: t0.elapsed().as_micros() as u64,
                        replayed: false,
                        breaker,
                    }
                }))
            }
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
                child,
                workflow,
                input,
            } => {
                // A child already started (resume) is resumed; otherwise a new child run starts.
                let (child, existing) = match child {
                    Some(c) => (c, true),
                    None => (RunId::new(), false),
                };
                let fut: BoxFuture<'static, Result<RunReport, RunError>> = if existing {
                    let rt = self.clone();
                    Box::pin(async move {
                        match rt.resume(workflow.clone(), child).await {
                            Err(RunError::Store(baton_core::StoreError::NotFound(_))) => {
                                rt.run_with_id(workflow, input, child, Some(run_id)).await
                            }
                            other => other,
                        }
                    })
                } else {
                    queue.push_back(Input::ChildStarted { task, child });
                    self.run_with_id(workflow, input, child, Some(run_id))
                };
                let finished: BoxFuture<'static, Input> = Box::pin(async move {
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
                            costs: rep.cost_breakdown,
                            duration_us: duration_us(),
                        },
                        Err(e) => Input::ChildFinished {
                            task,
                            child,
                            status: RunStatus::Failed,
                            output: Value::Null,
                            reason: Some(e.to_string()),
                            usage: Default::default(),
                            costs: Vec::new(),
                            duration_us: duration_us(),
                        },
                    }
                });
                // The child run journals to the store too: it runs on a task of its own.
                inflight.push(own_task(finished, move |e| Input::ChildFinished {
                    task,
                    child,
                    status: RunStatus::Failed,
                    output: Value::Null,
                    reason: Some(format!("the sub-workflow's task ended: {e}")),
                    usage: Default::default(),
                    costs: Vec::new(),
                    duration_us: 0,
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

/// A spawned effect, aborted if the run stops waiting for it (the run's task was dropped).
struct OwnTask(tokio::task::JoinHandle<Input>);

impl Drop for OwnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Run an effect on a task of its own. An effect that uses the store (a sub-workflow run, the
/// response cache) must not be polled only from inside its run's task: the run awaits the
/// store between polls of its effects (journaling, status, halt checks), and an effect
/// suspended while holding the store's writer or a reader connection would then never be
/// polled again to release it. `lost` builds the input reporting a task that panicked.
fn own_task(
    fut: BoxFuture<'static, Input>,
    lost: impl FnOnce(String) -> Input + Send + 'static,
) -> BoxFuture<'static, Input> {
    let mut handle = OwnTask(tokio::spawn(fut));
    Box::pin(async move {
        match (&mut handle.0).await {
            Ok(input) => input,
            Err(e) => lost(e.to_string()),
        }
    })
}
