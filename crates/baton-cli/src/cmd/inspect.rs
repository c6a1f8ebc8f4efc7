//! `baton runs`, `show`, `events`, `checkpoints`, `diff` and `prune`.

use super::store::{StoreSpec, find, parse_run};
use super::{EXIT_INVALID, load};
use baton_core::{Event, EventKind, RunId, RunStatus};
use baton_runtime::RunReport;
use baton_runtime::machine::RunMachine;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

macro_rules! invalid {
    ($($arg:tt)*) => {{
        eprintln!("error: {}", format!($($arg)*));
        return Ok(EXIT_INVALID);
    }};
}

/// `2026-11-21 10:45:46` (UTC) from microseconds since the epoch.
pub fn time(us: u64) -> String {
    let secs = (us / 1_000_000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn parse_status(s: &str) -> Option<RunStatus> {
    serde_json::from_value(Value::String(s.to_string())).ok()
}

pub async fn runs(store: &StoreSpec, status: Option<&str>, as_json: bool) -> anyhow::Result<u8> {
    let status = match status {
        Some(s) => match parse_status(s) {
            Some(st) => Some(st),
            None => invalid!(
                "unknown status `{s}` (running, suspended, succeeded, partial_success, failed, halted)"
            ),
        },
        None => None,
    };
    let store = store.open().await?;
    let list = store.runs(status).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    if list.is_empty() {
        println!("no runs");
    }
    for r in list {
        println!(
            "{}  {:<16} {:<20} {}",
            r.id,
            r.status.as_str(),
            r.workflow,
            time(r.created_at_us)
        );
    }
    Ok(0)
}

/// One line describing an event.
pub fn summary(e: &Event) -> String {
    let what = match &e.kind {
        EventKind::RunStarted {
            workflow, input, ..
        } => format!("run of `{workflow}` started with {input}"),
        EventKind::StepStarted {
            step,
            item,
            agent,
            visit,
            ..
        } => {
            let mut s = format!("step `{step}`");
            if let Some(i) = item {
                s.push_str(&format!("[{i}]"));
            }
            s.push_str(" started");
            if *visit > 1 {
                s.push_str(&format!(" (visit {visit})"));
            }
            if let Some(a) = agent {
                s.push_str(&format!(" by agent `{a}`"));
            }
            s
        }
        EventKind::StateUpdated { step, updates, .. } => {
            let keys: Vec<&str> = updates.iter().map(|u| &*u.key).collect();
            format!("`{step}` wrote {}", keys.join(", "))
        }
        EventKind::StepCompleted {
            step, duration_us, ..
        } => {
            format!(
                "step `{step}` completed in {:.1} ms",
                *duration_us as f64 / 1e3
            )
        }
        EventKind::StepFailed {
            step,
            error,
            policy,
            ..
        } => format!("step `{step}` failed ({policy}): {error}"),
        EventKind::StepSkipped { step, reason } => format!("step `{step}` skipped: {reason}"),
        EventKind::Transition { from, to, when } => {
            let to: Vec<&str> = to.iter().map(|s| &**s).collect();
            match when {
                Some(w) => format!("`{from}` -> {} (when {w})", to.join(", ")),
                None => format!("`{from}` -> {}", to.join(", ")),
            }
        }
        EventKind::ModelCalled {
            step,
            agent,
            model,
            turn,
            output,
            cost_usd,
            replayed,
            ..
        } => format!(
            "`{step}`: {agent} called {model} (turn {turn}): {} tokens in, {} out, ${cost_usd:.6}{}{}",
            output.usage.input_tokens,
            output.usage.output_tokens,
            if output.tool_calls.is_empty() {
                String::new()
            } else {
                format!(", {} tool call(s)", output.tool_calls.len())
            },
            if *replayed { " [replayed]" } else { "" }
        ),
        EventKind::ModelFailed {
            step, agent, error, ..
        } => format!("`{step}`: {agent}'s model call failed: {error}"),
        EventKind::ToolStarted {
            step,
            tool,
            idempotency_key,
            ..
        } => format!("`{step}`: tool `{tool}` starting (key {idempotency_key})"),
        EventKind::ToolCalled {
            step,
            tool,
            error,
            replayed,
            ..
        } => match error {
            Some(e) => format!("`{step}`: tool `{tool}`: {e}"),
            None => format!(
                "`{step}`: tool `{tool}` returned{}",
                if *replayed { " [replayed]" } else { "" }
            ),
        },
        EventKind::OutputRejected { step, reason, .. } => {
            format!("`{step}`: answer rejected: {reason}")
        }
        EventKind::Delegated {
            step,
            task,
            from,
            to,
            depth,
            handoff,
            message,
            ..
        } => format!(
            "`{step}`: {from} {} {to} (task {task}, depth {depth}): {}",
            if *handoff {
                "hands over to"
            } else {
                "delegates to"
            },
            message["payload"]["task"].as_str().unwrap_or("")
        ),
        EventKind::DelegationReturned {
            step,
            task,
            from,
            to,
            message,
            ..
        } => match message["error"].as_str() {
            Some(e) => format!("`{step}`: {from} failed task {task} for {to}: {e}"),
            None => format!("`{step}`: {from} answered task {task} for {to}"),
        },
        EventKind::LoopGuard { step, reason } => format!("`{step}`: {reason}"),
        EventKind::Retry {
            step,
            attempt,
            delay_ms,
            reason,
            ..
        } => format!("`{step}`: attempt {attempt} in {delay_ms} ms after: {reason}"),
        EventKind::TimerStarted { step, after_ms, .. } => {
            format!("timer for `{step}`: {after_ms} ms")
        }
        EventKind::TimerFired { timer } => format!("timer {timer} fired"),
        EventKind::ChildStarted { step, child, .. } => {
            format!("`{step}`: sub-workflow run {child} started")
        }
        EventKind::ChildFinished {
            step,
            child,
            status,
            ..
        } => format!("`{step}`: sub-workflow run {child} {status}"),
        EventKind::ApprovalRequested {
            step,
            task,
            message,
            ..
        } => format!("`{step}` (task {task}) waits for approval: {message}"),
        EventKind::ApprovalDecided {
            step,
            approved,
            by,
            reason,
            ..
        } => format!(
            "`{step}` {} by {by}{}",
            if *approved { "approved" } else { "rejected" },
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        EventKind::RunSuspended { reason } => format!("run suspended: {reason}"),
        EventKind::RunResumed { restarted } => {
            format!("run resumed; restarted tasks {restarted:?}")
        }
        EventKind::Forked { from, at } => format!("forked from run {from} at event {at}"),
        EventKind::StateOverridden { updates } => {
            let keys: Vec<String> = updates
                .iter()
                .map(|u| format!("{}={}", u.key, u.value))
                .collect();
            format!("state set: {}", keys.join(", "))
        }
        EventKind::RunFinished { status, reason } => format!(
            "run {status}{}",
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        other => other.type_name().to_string(),
    };
    format!("{:>5}  {}  {what}", e.seq, time(e.at_us))
}

pub async fn show(store: &StoreSpec, run: &str, as_json: bool) -> anyhow::Result<u8> {
    let id = match parse_run(run) {
        Ok(id) => id,
        Err(e) => invalid!("{e}"),
    };
    let store = store.open().await?;
    let record = match find(store.as_ref(), id).await {
        Ok(r) => r,
        Err(e) => invalid!("{e}"),
    };
    let events = store.events(id, 0).await?;
    let machine = match record.source.as_deref().map(|s| load(Path::new(s), None)) {
        Some(Ok(wf)) => RunMachine::replay(wf, id, &events).ok(),
        _ => None,
    };
    let (report, pending) = match &machine {
        Some(m) => (Some(RunReport::from_machine(m, 0.0)), m.pending_approvals()),
        None => (None, Vec::new()),
    };
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "run": record,
                "events": events.len(),
                "report": report,
                "state": machine.as_ref().map(|m| m.state_json()),
                "pending_approvals": pending,
            }))?
        );
        return Ok(0);
    }
    println!("run:      {}", record.id);
    println!(
        "workflow: {} ({})",
        record.workflow,
        record.source.as_deref().unwrap_or("built in code")
    );
    println!("status:   {}", record.status);
    println!("created:  {}", time(record.created_at_us));
    println!("updated:  {}", time(record.updated_at_us));
    println!("events:   {}", events.len());
    println!("input:    {}", record.input);
    match (&report, &machine) {
        (Some(r), Some(m)) => {
            if let Some(reason) = &r.reason {
                println!("reason:   {reason}");
            }
            println!("completed: {}", r.completed_steps.join(", "));
            for f in &r.failed_steps {
                println!("failed:   {} — {} [{}]", f.step, f.error, f.policy);
            }
            let u = &r.usage;
            println!(
                "usage:    {} model calls, {} tokens in / {} out, ${:.4}, {} tool calls, {} steps",
                u.model_calls, u.input_tokens, u.output_tokens, u.cost_usd, u.tool_calls, u.steps
            );
            println!("state:\n{}", serde_json::to_string_pretty(&m.state_json())?);
        }
        _ => println!("(the workflow file could not be loaded to rebuild the state)"),
    }
    for p in &pending {
        match &p.tool {
            Some(t) => println!(
                "pending:  task {} in step `{}`: tool `{t}` with {} — `baton approve {id} --task {}`",
                p.task,
                p.step,
                p.args.clone().unwrap_or(Value::Null),
                p.task
            ),
            None => println!(
                "pending:  task {} approval step `{}` — `baton approve {id} --step {}`",
                p.task, p.step, p.step
            ),
        }
    }
    Ok(0)
}

pub async fn events(
    store: &StoreSpec,
    run: &str,
    follow: bool,
    as_json: bool,
) -> anyhow::Result<u8> {
    let id = match parse_run(run) {
        Ok(id) => id,
        Err(e) => invalid!("{e}"),
    };
    let store = store.open().await?;
    if let Err(e) = find(store.as_ref(), id).await {
        invalid!("{e}");
    }
    let mut next = 0u64;
    loop {
        let batch = store.events(id, next).await?;
        for e in &batch {
            if as_json {
                println!("{}", serde_json::to_string(e)?);
            } else {
                println!("{}", summary(e));
            }
            next = e.seq + 1;
        }
        if !follow {
            break;
        }
        let status = store.run(id).await?.status;
        if batch.is_empty() && status != RunStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(0)
}

pub async fn checkpoints(store: &StoreSpec, run: &str) -> anyhow::Result<u8> {
    let id = match parse_run(run) {
        Ok(id) => id,
        Err(e) => invalid!("{e}"),
    };
    let store = store.open().await?;
    if let Err(e) = find(store.as_ref(), id).await {
        invalid!("{e}");
    }
    let events = store.events(id, 0).await?;
    println!("  seq  time                 after");
    let mut changed: Vec<String> = Vec::new();
    for e in &events {
        match &e.kind {
            EventKind::StateUpdated { updates, .. } => {
                changed.extend(updates.iter().map(|u| u.key.to_string()));
            }
            EventKind::StepCompleted {
                step, output: None, ..
            } => {
                changed.sort();
                changed.dedup();
                println!(
                    "{:>5}  {}  step `{step}` completed{}",
                    e.seq,
                    time(e.at_us),
                    if changed.is_empty() {
                        String::new()
                    } else {
                        format!(" (changed: {})", changed.join(", "))
                    }
                );
                changed.clear();
            }
            EventKind::RunStarted { .. } => println!("{:>5}  {}  start", e.seq, time(e.at_us)),
            EventKind::RunSuspended { .. } => {
                println!("{:>5}  {}  suspended", e.seq, time(e.at_us))
            }
            _ => {}
        }
    }
    println!("fork from any of them: baton fork {id} --at SEQ [--workflow FILE] [--set KEY=JSON]");
    Ok(0)
}

/// An event with what differs between runs by nature (times, durations, ids) removed.
fn normal(e: &Event) -> Value {
    let mut v = serde_json::to_value(&e.kind).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        for k in [
            "duration_us",
            "at_us",
            "replayed",
            "child",
            "idempotency_key",
            "due_us",
            "cost_usd",
        ] {
            m.remove(k);
        }
    }
    v
}

pub async fn diff(store: &StoreSpec, a: &str, b: &str) -> anyhow::Result<u8> {
    let (ia, ib) = match (parse_run(a), parse_run(b)) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => invalid!("{e}"),
    };
    let store = store.open().await?;
    for id in [ia, ib] {
        if let Err(e) = find(store.as_ref(), id).await {
            invalid!("{e}");
        }
    }
    let ea = store.events(ia, 0).await?;
    let eb = store.events(ib, 0).await?;
    let first = ea
        .iter()
        .zip(&eb)
        .position(|(x, y)| normal(x) != normal(y))
        .or_else(|| (ea.len() != eb.len()).then(|| ea.len().min(eb.len())));
    match first {
        None => println!("the runs are the same ({} events)", ea.len()),
        Some(i) => {
            println!("the runs share {i} events and diverge at event {i}:");
            println!(
                "  A {}",
                ea.get(i).map(summary).unwrap_or_else(|| "(ends)".into())
            );
            println!(
                "  B {}",
                eb.get(i).map(summary).unwrap_or_else(|| "(ends)".into())
            );
        }
    }
    // Final states and statuses.
    let state = |events: &[Event], id: RunId, src: Option<String>| -> Option<(Value, RunStatus)> {
        let wf = load(Path::new(&src?), None).ok()?;
        let m = RunMachine::replay(wf, id, events).ok()?;
        Some((m.state_json(), m.status()))
    };
    let ra = find(store.as_ref(), ia).await.ok();
    let rb = find(store.as_ref(), ib).await.ok();
    let sa = state(&ea, ia, ra.and_then(|r| r.source));
    let sb = state(&eb, ib, rb.and_then(|r| r.source));
    if let (Some((va, sta)), Some((vb, stb))) = (sa, sb) {
        println!("status: A {sta}, B {stb}");
        if let (Value::Object(ma), Value::Object(mb)) = (&va, &vb) {
            let mut keys: Vec<&String> = ma.keys().chain(mb.keys()).collect();
            keys.sort();
            keys.dedup();
            let mut same = true;
            for k in keys {
                let (x, y) = (ma.get(k), mb.get(k));
                if x != y {
                    same = false;
                    println!(
                        "state `{k}`:\n  A {}\n  B {}",
                        x.cloned().unwrap_or(Value::Null),
                        y.cloned().unwrap_or(Value::Null)
                    );
                }
            }
            if same {
                println!("final states are equal");
            }
        }
    }
    Ok(0)
}

pub async fn prune(
    store: &StoreSpec,
    older_than: &str,
    include_failed: bool,
) -> anyhow::Result<u8> {
    let age = match older_than.strip_suffix('d') {
        Some(days) => match days.trim().parse::<u64>() {
            Ok(n) => Duration::from_secs(n * 86_400),
            Err(_) => invalid!("--older-than `{older_than}`: expected e.g. 30d, 12h, 90m"),
        },
        None => match baton_runtime::spec::parse_duration(older_than) {
            Ok(d) => d,
            Err(e) => invalid!("--older-than: {e}"),
        },
    };
    let cutoff = baton_runtime::executor::now_us().saturating_sub(age.as_micros() as u64);
    let mut statuses = vec![RunStatus::Succeeded, RunStatus::PartialSuccess];
    if include_failed {
        statuses.push(RunStatus::Failed);
    }
    let store = store.open().await?;
    let n = store.prune(cutoff, statuses).await?;
    println!("deleted {n} run(s) last updated before {}", time(cutoff));
    Ok(0)
}

pub async fn kill(
    store: &StoreSpec,
    run: Option<&str>,
    all: bool,
    reason: String,
) -> anyhow::Result<u8> {
    let target = match (run, all) {
        (Some(_), true) | (None, false) => invalid!("name one run, or pass --all"),
        (Some(r), false) => match parse_run(r) {
            Ok(id) => Some(id),
            Err(e) => invalid!("{e}"),
        },
        (None, true) => None,
    };
    let store = store.open().await?;
    if let Some(id) = target {
        match find(store.as_ref(), id).await {
            Ok(r) if r.status != RunStatus::Running => {
                invalid!("run {id} is {}, not running", r.status)
            }
            Ok(_) => {}
            Err(e) => invalid!("{e}"),
        }
    }
    store.request_halt(target, reason).await?;
    match target {
        Some(id) => println!("halt requested for run {id}; it stops at its next step boundary"),
        None => {
            println!("halt requested for every active run; each stops at its next step boundary")
        }
    }
    Ok(0)
}
