//! The crash harness: the example workflows run as child processes of the real `baton` binary,
//! are killed with SIGKILL at every step boundary, resumed with `baton resume`, and must end
//! exactly as an uninterrupted run does.
//!
//! For each scenario (example, input, optional `--script`) and store (SQLite in a temporary
//! file; PostgreSQL), an uninterrupted reference run comes first. Then, for N = 1, 2, ..., a
//! fresh run is started with `BATON_TEST_KILL=<mode>:N`, which makes the process kill itself
//! with SIGKILL just after (`after`) or just before (`before`) its N-th append to the store
//! (`src/crash.rs`). A killed run is resumed (without the hook) until it is finished, and its
//! final report must equal the reference's: status, reason, outputs (exact JSON), completed
//! steps (as a multiset: parallel branches complete in timing order), visits, failed and
//! skipped steps, and usage (model calls, tool calls, tokens, steps, cost). The `book` tool of
//! the trip planner appends one line per booking to the file named by `BOOKING_LEDGER`
//! (deduplicated by idempotency key, like a real booking API); each run has its own ledger,
//! which must hold exactly one line per logical booking the run journaled, and as many as the
//! reference's. The iteration of a scenario stops at the first N at which the run finishes
//! without being killed (N is past its last append).
//!
//! The two modes are two different sets of kill points: `after:N` stops the process once the
//! N-th batch is durable but before the effects it announces start; `before:N` stops it after
//! the effects of batch N-1 ran (a tool may have booked) but before their results were
//! journaled. Each (store, mode) is one test and must exercise at least 50 kill points.
//!
//! To keep `cargo test` quick, the slowest scenarios (marked `sample`: the trip planner's, whose
//! tools are subprocesses, and the stuck coder) are killed at every other point: at odd N on
//! SQLite and at even N on PostgreSQL, so that the two stores together cover every point; the
//! others are killed at every point on both stores.
//!
//! Environment:
//! - `CRASH_STRIDE` (default 2) and `CRASH_OFFSET` (default 0): the sampled scenarios are
//!   killed at N = 1 + (OFFSET + s) mod STRIDE and every STRIDE-th point after it, where s is
//!   0 on SQLite and 1 on PostgreSQL. `CRASH_STRIDE=1` kills every scenario at every point on
//!   both stores (the long run, about 1.3 times as long); `CRASH_OFFSET=1` swaps the halves
//!   the two stores take. A stride of 3 or more samples fewer than the required 50 points.
//! - `CRASH_SCENARIOS`: only the scenarios whose name contains this text (for debugging; the
//!   minimum of 50 kill points does not apply then).
//! - `CRASH_JOBS` (default 2): scenarios of one test checked at once.
//! - `CRASH_VERBOSE=1`: print every kill point as it is checked.
//! - `BATON_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`): the server.
//!   When it cannot be reached the PostgreSQL tests print a warning and pass, except with
//!   `CI=true`, where they fail.
//!
//! `cargo test -p baton-cli --test crash -- --nocapture` prints the kill points exercised per
//! scenario. `docs/durability.md` explains what is being proved.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::collections::BTreeSet;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Kill points each (store, mode) must exercise.
const MIN_KILL_POINTS: usize = 50;

/// The longest a single `baton` process may take before the harness gives up on it.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(120);

/// How often a killed run may need resuming before it must be finished (a halted run may be
/// resumed again; one resume is all a crash should need).
const MAX_RESUMES: usize = 3;

/// Lines of `baton events --json` shown with a mismatch.
const EVENTS_TAIL: usize = 30;

/// Failures shown in full in the panic message (all are listed by name).
const FAILURES_SHOWN: usize = 4;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

// ----------------------------------------------------------------------------------- scenarios

/// One example run: what to start, and how its uninterrupted run ends.
struct Scenario {
    example: &'static str,
    input: &'static str,
    script: Option<&'static str>,
    /// The status of the uninterrupted run.
    status: &'static str,
    /// Bookings the `book` tool makes in the uninterrupted run.
    bookings: usize,
    /// Killed at every other point by default (a scenario whose kill points are slow).
    sample: bool,
}

impl Scenario {
    fn name(&self) -> String {
        match self.script {
            Some(s) => format!("{}/{} --script {s}", self.example, self.input),
            None => format!("{}/{}", self.example, self.input),
        }
    }

    fn dir(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(self.example)
    }

    fn script(&self) -> Option<PathBuf> {
        self.script.map(|s| self.dir().join(s))
    }
}

/// Every example, on every input that takes a different path through it.
const SCENARIOS: &[Scenario] = &[
    Scenario {
        example: "trip-planner",
        input: "input.json",
        script: None,
        status: "succeeded",
        bookings: 2,
        sample: true,
    },
    Scenario {
        example: "trip-planner",
        input: "input-tight-budget.json",
        script: None,
        status: "succeeded",
        bookings: 0,
        sample: true,
    },
    Scenario {
        example: "lead-pipeline",
        input: "input.json",
        script: None,
        status: "succeeded",
        bookings: 0,
        sample: false,
    },
    Scenario {
        example: "lead-pipeline",
        input: "input-warm.json",
        script: None,
        status: "succeeded",
        bookings: 0,
        sample: false,
    },
    Scenario {
        example: "lead-pipeline",
        input: "input-bad.json",
        script: None,
        status: "succeeded",
        bookings: 0,
        sample: false,
    },
    Scenario {
        example: "lead-pipeline",
        input: "input-no-email.json",
        script: None,
        status: "succeeded",
        bookings: 0,
        sample: false,
    },
    Scenario {
        example: "due-diligence",
        input: "input.json",
        script: None,
        status: "succeeded",
        bookings: 0,
        sample: false,
    },
    Scenario {
        example: "due-diligence",
        input: "input.json",
        script: Some("script-market-outage.yaml"),
        status: "partial_success",
        bookings: 0,
        sample: false,
    },
    Scenario {
        example: "coder-tester",
        input: "input.json",
        script: None,
        status: "succeeded",
        bookings: 0,
        sample: false,
    },
    Scenario {
        example: "due-diligence-supervisor",
        input: "input.json",
        script: None,
        status: "succeeded",
        bookings: 0,
        sample: false,
    },
    Scenario {
        example: "launch-handoff",
        input: "input.json",
        script: None,
        status: "succeeded",
        bookings: 0,
        sample: false,
    },
    Scenario {
        example: "coder-tester",
        input: "input.json",
        script: Some("script-stuck.yaml"),
        status: "failed",
        bookings: 0,
        sample: true,
    },
];

// ------------------------------------------------------------------------------ stores, modes

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreKind {
    Sqlite,
    Postgres,
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    After,
    Before,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::After => "after",
            Mode::Before => "before",
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: expected a whole number")),
        Err(_) => default,
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_baton")
}

/// The PostgreSQL URL, or `None` (after a warning) when the server cannot be used outside CI.
fn postgres_url() -> Option<String> {
    let url =
        std::env::var("BATON_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
    let out = Command::new(bin())
        .args(["runs", "--status", "halted", "--store", &url])
        .env_remove("BATON_TEST_KILL")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    if out.status.success() {
        return Some(url);
    }
    let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "PostgreSQL is required in CI but {url} cannot be used: {why}\n\
             start it with\n    \
             pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
             (or point BATON_TEST_POSTGRES_URL at another server; the database must exist)"
        );
    }
    eprintln!(
        "warning: skipping the PostgreSQL crash tests: {url} cannot be used ({why}); start it \
         with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` or set \
         BATON_TEST_POSTGRES_URL"
    );
    None
}

/// A fresh run id (a random version-4 UUID).
fn new_run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let word = |salt: u64| {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(nanos);
        h.write_u64(salt);
        h.finish()
    };
    let (a, b) = (word(1), word(2));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

// ---------------------------------------------------------------------------------- processes

/// What one `baton` process did.
struct Proc {
    args: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Proc {
    fn killed(&self) -> bool {
        self.status.signal() == Some(9)
    }

    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn report(&self) -> Result<Value, String> {
        serde_json::from_str(&self.stdout).map_err(|e| {
            format!(
                "`{}` printed no JSON report ({e}; exit {:?})\nstdout: {}\nstderr: {}",
                self.args,
                self.status,
                tail(&self.stdout, 20),
                tail(&self.stderr, 20)
            )
        })
    }
}

/// Run a command to its end (or kill it after [`PROCESS_TIMEOUT`]).
fn execute(mut cmd: Command) -> Proc {
    let args = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {args}: {e}"));
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > PROCESS_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args} did not finish within {PROCESS_TIMEOUT:?}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    };
    Proc {
        args,
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// The last `n` lines of a text.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A value as short JSON, cut to `max` characters.
fn short(v: &Value, max: usize) -> String {
    let s = v.to_string();
    if s.chars().count() <= max {
        s
    } else {
        format!("{}...", s.chars().take(max).collect::<String>())
    }
}

// ------------------------------------------------------------------------------------ harness

/// The final state of one run: its report and its booking ledger.
struct Outcome {
    run_id: String,
    report: Value,
    ledger: Vec<Value>,
}

/// What checking one scenario found.
struct Checked {
    /// Position in the list of scenarios checked.
    index: usize,
    /// Kill points exercised.
    killed: usize,
    secs: f64,
    failures: Vec<Failure>,
}

/// One mismatch, described for a human.
struct Failure {
    title: String,
    details: String,
}

struct Harness {
    store: StoreKind,
    url: String,
    mode: Mode,
    dir: tempfile::TempDir,
    /// `CRASH_STRIDE`: the distance between the kill points of a sampled scenario.
    stride: u64,
    offset: u64,
    /// `CRASH_SCENARIOS`, if set.
    only: Option<String>,
    verbose: bool,
    ledgers: AtomicU64,
}

impl Harness {
    fn new(store: StoreKind, mode: Mode) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let url = match store {
            StoreKind::Sqlite => format!("sqlite:{}", dir.path().join("baton.db").display()),
            StoreKind::Postgres => postgres_url()?,
        };
        Some(Harness {
            store,
            url,
            mode,
            dir,
            stride: env_u64("CRASH_STRIDE", 2).max(1),
            offset: env_u64("CRASH_OFFSET", 0),
            only: std::env::var("CRASH_SCENARIOS").ok(),
            verbose: std::env::var("CRASH_VERBOSE").is_ok_and(|v| v != "0"),
            ledgers: AtomicU64::new(0),
        })
    }

    fn store_name(&self) -> &'static str {
        match self.store {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }

    fn label(&self) -> String {
        format!("{}, {}", self.store_name(), self.mode.as_str())
    }

    /// `baton` in the temporary directory, on this harness's store, without the kill hook.
    fn baton(&self) -> Command {
        let mut cmd = Command::new(bin());
        cmd.current_dir(self.dir.path())
            .env("BATON_STORE", &self.url)
            .env_remove("BATON_TEST_KILL")
            .env_remove("BOOKING_LEDGER")
            .env_remove("RUST_LOG");
        cmd
    }

    /// The first kill point of a scenario and the distance between kill points.
    fn points(&self, sc: &Scenario) -> (u64, u64) {
        let stride = if sc.sample { self.stride } else { 1 };
        let shift = match self.store {
            StoreKind::Sqlite => 0,
            StoreKind::Postgres => 1,
        };
        (1 + (self.offset + shift) % stride, stride)
    }

    /// A new, empty ledger file.
    fn new_ledger(&self) -> PathBuf {
        let n = self.ledgers.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(format!("ledger-{n}.jsonl"))
    }

    /// `baton run` of a scenario, optionally with the kill hook.
    fn start(&self, sc: &Scenario, run_id: &str, ledger: &Path, kill: Option<&str>) -> Proc {
        let mut cmd = self.baton();
        cmd.arg("run")
            .arg(sc.dir().join("workflow.yaml"))
            .arg("--input")
            .arg(format!("@{}", sc.dir().join(sc.input).display()))
            .args(["--run-id", run_id, "--json", "-q"])
            .env("BOOKING_LEDGER", ledger);
        if let Some(script) = sc.script() {
            cmd.arg("--script").arg(script);
        }
        if let Some(spec) = kill {
            cmd.env("BATON_TEST_KILL", spec);
        }
        execute(cmd)
    }

    /// `baton resume`, until the run is finished. Returns the final report and the number of
    /// resumes, or what went wrong.
    fn resume(&self, sc: &Scenario, run_id: &str, ledger: &Path) -> Result<(Value, usize), String> {
        for attempt in 1..=MAX_RESUMES {
            let mut cmd = self.baton();
            cmd.args(["resume", run_id, "--json"])
                .env("BOOKING_LEDGER", ledger);
            if let Some(script) = sc.script() {
                cmd.arg("--script").arg(script);
            }
            let p = execute(cmd);
            match p.code() {
                Some(0 | 1 | 3) => return Ok((p.report()?, attempt)),
                // Halted: may be resumed again.
                Some(5) => continue,
                Some(4) => {
                    let show = execute({
                        let mut c = self.baton();
                        c.args(["show", run_id]);
                        c
                    });
                    return Err(format!(
                        "resume #{attempt} ended suspended (exit 4), which no scenario expects:\n{}\n{}",
                        tail(&p.stdout, 40),
                        tail(&show.stdout, 20)
                    ));
                }
                _ => {
                    return Err(format!(
                        "resume #{attempt} ended with {:?}\nstdout: {}\nstderr: {}",
                        p.status,
                        tail(&p.stdout, 20),
                        tail(&p.stderr, 20)
                    ));
                }
            }
        }
        Err(format!(
            "the run was still not finished after {MAX_RESUMES} resumes (halted each time)"
        ))
    }

    /// The run's log as JSON lines.
    fn events(&self, run_id: &str) -> Vec<Value> {
        let mut cmd = self.baton();
        cmd.args(["events", run_id, "--json"]);
        let p = execute(cmd);
        p.stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The last events of a run, one short line each.
    fn events_tail(&self, run_id: &str) -> String {
        let events = self.events(run_id);
        let start = events.len().saturating_sub(EVENTS_TAIL);
        let mut out = format!(
            "`baton events {run_id} --json`, last {} of {} events:\n",
            events.len() - start,
            events.len()
        );
        for e in &events[start..] {
            out.push_str("  ");
            out.push_str(&short(e, 300));
            out.push('\n');
        }
        out
    }

    /// The uninterrupted run of a scenario.
    fn reference(&self, sc: &Scenario) -> Outcome {
        let run_id = new_run_id();
        let ledger = self.new_ledger();
        let p = self.start(sc, &run_id, &ledger, None);
        let report = p.report().unwrap_or_else(|e| panic!("{}: {e}", sc.name()));
        assert_eq!(
            report["status"],
            sc.status,
            "[{}] {}: the uninterrupted run\n{report:#}\nstderr: {}",
            self.label(),
            sc.name(),
            p.stderr
        );
        let ledger = read_ledger(&ledger);
        assert_eq!(
            ledger.len(),
            sc.bookings,
            "[{}] {}: bookings of the uninterrupted run: {ledger:?}",
            self.label(),
            sc.name()
        );
        Outcome {
            run_id,
            report,
            ledger,
        }
    }

    /// Kill a scenario at every point of this harness's sample; returns the kill points
    /// exercised.
    fn scenario(&self, sc: &Scenario, failures: &mut Vec<Failure>) -> usize {
        let reference = self.reference(sc);
        let mut killed = 0;
        let (mut n, stride) = self.points(sc);
        loop {
            assert!(
                n < 10_000,
                "{}: the run was still being killed at N = {n}",
                sc.name()
            );
            let spec = format!("{}:{n}", self.mode.as_str());
            let run_id = new_run_id();
            let ledger_path = self.new_ledger();
            let p = self.start(sc, &run_id, &ledger_path, Some(&spec));
            let title = format!(
                "scenario {}, store {}, mode {}, N = {n} (BATON_TEST_KILL={spec}, run {run_id})",
                sc.name(),
                self.store_name(),
                self.mode.as_str()
            );
            let was_killed = p.killed();
            let result = if was_killed {
                killed += 1;
                self.resume(sc, &run_id, &ledger_path)
                    .map(|(report, resumes)| (report, Some(resumes)))
            } else {
                match p.code() {
                    Some(0 | 1 | 3) => p.report().map(|r| (r, None)),
                    _ => Err(format!(
                        "the run with the hook ended with {:?} without being killed\nstdout: {}\nstderr: {}",
                        p.status,
                        tail(&p.stdout, 20),
                        tail(&p.stderr, 20)
                    )),
                }
            };
            let how = match &result {
                Ok((_, Some(r))) => format!("killed, resumed {r} time(s)"),
                Ok((_, None)) => "not killed (N is past the last append)".to_string(),
                Err(_) => format!("killed: {was_killed}"),
            };
            if self.verbose {
                eprintln!("[{}] {}: {spec}: {how}", self.label(), sc.name());
            }
            let problems = match result {
                Ok((report, _)) => {
                    let outcome = Outcome {
                        run_id: run_id.clone(),
                        report,
                        ledger: read_ledger(&ledger_path),
                    };
                    let mut problems = compare(&reference, &outcome);
                    if sc.bookings > 0 || !outcome.ledger.is_empty() {
                        problems.extend(self.check_intents(&outcome));
                    }
                    if problems.is_empty() {
                        None
                    } else {
                        Some(format!(
                            "fields that differ from the uninterrupted run {}:\n{}",
                            reference.run_id,
                            problems.join("\n")
                        ))
                    }
                }
                Err(e) => Some(e),
            };
            if let Some(problem) = problems {
                let details = format!("{title}: {how}\n{problem}\n{}", self.events_tail(&run_id));
                failures.push(Failure { title, details });
            }
            if !was_killed {
                break;
            }
            n += stride;
        }
        killed
    }

    /// Every ledger line belongs to a `book` call the run journaled (a `tool_started` event with
    /// the same idempotency key), and every journaled call has a line (exactly one: `compare`
    /// checks that no key is booked twice).
    fn check_intents(&self, outcome: &Outcome) -> Vec<String> {
        let journaled: Vec<String> = self
            .events(&outcome.run_id)
            .iter()
            .filter(|e| e["type"] == "tool_started" && e["tool"] == "book")
            .filter_map(|e| e["idempotency_key"].as_str().map(str::to_string))
            .collect();
        let journaled_set: BTreeSet<&str> = journaled.iter().map(String::as_str).collect();
        let keys: Vec<&str> = outcome
            .ledger
            .iter()
            .map(|l| l["key"].as_str().unwrap_or(""))
            .collect();
        let key_set: BTreeSet<&str> = keys.iter().copied().collect();
        if key_set == journaled_set {
            Vec::new()
        } else {
            vec![format!(
                "  ledger: the bookings made ({keys:?}) are not the bookings journaled ({journaled:?})"
            )]
        }
    }

    /// Run every scenario (on `CRASH_JOBS` threads), then fail with every mismatch found.
    fn run(&self) {
        let started = Instant::now();
        let jobs = usize::try_from(env_u64("CRASH_JOBS", 2))
            .unwrap_or(1)
            .max(1);
        let scenarios: Vec<&Scenario> = SCENARIOS
            .iter()
            .filter(|sc| {
                self.only
                    .as_ref()
                    .is_none_or(|o| sc.name().contains(o.as_str()))
            })
            .collect();
        assert!(!scenarios.is_empty(), "CRASH_SCENARIOS matches no scenario");
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Checked>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..jobs.min(scenarios.len()) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(sc) = scenarios.get(i) else { break };
                        let t0 = Instant::now();
                        let mut failures = Vec::new();
                        let k = self.scenario(sc, &mut failures);
                        let secs = t0.elapsed().as_secs_f64();
                        results.lock().unwrap().push(Checked {
                            index: i,
                            killed: k,
                            secs,
                            failures,
                        });
                    }
                });
            }
        });
        let mut results = results.into_inner().unwrap();
        results.sort_by_key(|r| r.index);
        let total: usize = results.iter().map(|r| r.killed).sum();
        let per_scenario: Vec<String> = results
            .iter()
            .map(|r| {
                let sc = scenarios[r.index];
                let (first, stride) = self.points(sc);
                format!(
                    "{}: {} (N = {first}, {}, ...; {:.1} s)",
                    sc.name(),
                    r.killed,
                    first + stride,
                    r.secs
                )
            })
            .collect();
        let failures: Vec<Failure> = results.into_iter().flat_map(|r| r.failures).collect();
        eprintln!(
            "crash harness [{}]: {total} kill points ({jobs} jobs) in {:.1} s\n  {}",
            self.label(),
            started.elapsed().as_secs_f64(),
            per_scenario.join("\n  ")
        );
        if !failures.is_empty() {
            let mut msg = format!(
                "[{}] {} of {total} kill points did not end like the uninterrupted run:\n",
                self.label(),
                failures.len()
            );
            for f in &failures {
                msg.push_str(&format!("  - {}\n", f.title));
            }
            for f in failures.iter().take(FAILURES_SHOWN) {
                msg.push_str(&format!("\n=== {}\n", f.details));
            }
            if failures.len() > FAILURES_SHOWN {
                msg.push_str(&format!(
                    "\n({} more not shown in full)\n",
                    failures.len() - FAILURES_SHOWN
                ));
            }
            panic!("{msg}");
        }
        assert!(
            total >= MIN_KILL_POINTS || self.only.is_some(),
            "[{}] only {total} kill points were exercised (at least {MIN_KILL_POINTS} are \
             required; CRASH_STRIDE={} samples too few)",
            self.label(),
            self.stride
        );
    }
}

fn read_ledger(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// The differences between a reference outcome and a crashed-and-resumed one, one line each.
fn compare(reference: &Outcome, got: &Outcome) -> Vec<String> {
    let (a, b) = (&reference.report, &got.report);
    let mut out = Vec::new();
    let mut field = |name: &str, x: &Value, y: &Value| {
        if x != y {
            out.push(format!(
                "  {name}:\n    uninterrupted: {}\n    crashed:       {}",
                short(x, 600),
                short(y, 600)
            ));
        }
    };
    for key in [
        "status",
        "reason",
        "visits",
        "failed_steps",
        "skipped_steps",
    ] {
        field(key, &a[key], &b[key]);
    }
    // Outputs: exact equality, shown key by key.
    match (a["outputs"].as_object(), b["outputs"].as_object()) {
        (Some(x), Some(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                field(
                    &format!("outputs.{k}"),
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
            }
        }
        _ => field("outputs", &a["outputs"], &b["outputs"]),
    }
    // Completed steps as a multiset: parallel branches complete in timing order.
    let sorted = |v: &Value| {
        let mut names: Vec<String> = v
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|s| s.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Value::from(names)
    };
    field(
        "completed_steps (sorted)",
        &sorted(&a["completed_steps"]),
        &sorted(&b["completed_steps"]),
    );
    for key in [
        "model_calls",
        "tool_calls",
        "input_tokens",
        "output_tokens",
        "steps",
    ] {
        field(&format!("usage.{key}"), &a["usage"][key], &b["usage"][key]);
    }
    let (ca, cb) = (
        a["usage"]["cost_usd"].as_f64().unwrap_or(f64::NAN),
        b["usage"]["cost_usd"].as_f64().unwrap_or(f64::NAN),
    );
    if (ca - cb).abs() > 1e-9 || ca.is_nan() != cb.is_nan() {
        field(
            "usage.cost_usd",
            &a["usage"]["cost_usd"],
            &b["usage"]["cost_usd"],
        );
    }
    // The ledger: one line per logical booking, as many as the uninterrupted run made, for the
    // same offers, under this run's idempotency keys.
    let offers = |l: &[Value]| {
        let mut o: Vec<String> = l
            .iter()
            .map(|x| x["offer_id"].as_str().unwrap_or("").to_string())
            .collect();
        o.sort();
        Value::from(o)
    };
    field(
        "ledger (booked offers)",
        &offers(&reference.ledger),
        &offers(&got.ledger),
    );
    let keys: Vec<&str> = got
        .ledger
        .iter()
        .map(|l| l["key"].as_str().unwrap_or(""))
        .collect();
    let distinct: BTreeSet<&str> = keys.iter().copied().collect();
    if distinct.len() != keys.len() {
        out.push(format!("  ledger: a key was booked twice: {keys:?}"));
    }
    if let Some(k) = keys
        .iter()
        .find(|k| !k.starts_with(&format!("{}:", got.run_id)))
    {
        out.push(format!(
            "  ledger: key `{k}` is not an idempotency key of run {}",
            got.run_id
        ));
    }
    out
}

fn crash_test(store: StoreKind, mode: Mode) {
    if let Some(h) = Harness::new(store, mode) {
        h.run();
    }
}

// -------------------------------------------------------------------------------------- tests

#[test]
fn sqlite_kill_after_append_then_resume() {
    crash_test(StoreKind::Sqlite, Mode::After);
}

#[test]
fn sqlite_kill_before_append_then_resume() {
    crash_test(StoreKind::Sqlite, Mode::Before);
}

#[test]
fn postgres_kill_after_append_then_resume() {
    crash_test(StoreKind::Postgres, Mode::After);
}

#[test]
fn postgres_kill_before_append_then_resume() {
    crash_test(StoreKind::Postgres, Mode::Before);
}
