//! `baton-bench`: baton on the orchestration-overhead workloads of `shared/bench/WORKLOADS.md`.
//!
//! ```text
//! baton-bench [W1 W2a W2b W4 | env]... [--runs-scale F]
//! ```
//!
//! Prints one JSON object per line on stdout (W4: one per concurrency, `W4_CONCURRENCY`,
//! default `1000 10000 100000`, each followed by a `W4-floor` line: the same sleeps with no
//! framework); no workload named = W1 W2a W2b W4. W1 also prints the 10-step variant and a
//! `W1-diag` line (NullStore). Hidden, for profiling: `--one W1-100` (the headline W1 case
//! alone), `--one W4-floor --concurrency N`. Every workload (and every W4 concurrency) runs in
//! a child process, this binary re-executed with the hidden arguments `--one W [--concurrency
//! N]`, so each line's peak RSS is that workload's alone. The parent relays the child's lines.
//! `--runs-scale F` (or `RUNS_SCALE=F`) multiplies the run counts, for smoke tests.
//!
//! Method, as in the peer harnesses (`shared/bench/peers`, `shared/bench/peers-rust`): a
//! multi-thread tokio runtime with the default number of workers; the timed loop awaits
//! `Runtime::run` from the runtime's `block_on` task, one run after another, after one warm-up
//! run; results are checked outside the timed region.

mod report;
mod workloads;

use report::{FRAMEWORK, VERSION, emit, fields};
use std::process::{Command, ExitCode, Stdio};

const ALL: [&str; 7] = ["W1", "W2a", "W2b", "W3", "W4", "W5", "W6"];
const KNOWN: [&str; 8] = ["W1", "W2a", "W2b", "W3", "W4", "W5", "W6", "env"];
const USAGE: &str = "usage: baton-bench [W1 W2a W2b W4 env]... [--runs-scale F]";

/// mimalloc keeps per-thread heaps that free across threads without a shared lock; with the
/// system allocator, 100,000 runs hopping between two workers spend much of their time waiting
/// on glibc's arena locks (see docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut workloads = Vec::new();
    let mut one: Option<String> = None;
    let mut concurrency: Option<usize> = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs-scale" => match it.next().and_then(|v| v.parse::<f64>().ok()) {
                Some(f) if f > 0.0 && f.is_finite() => report::set_runs_scale(f),
                _ => return usage("--runs-scale needs a positive number"),
            },
            "--one" => one = it.next(),
            "--concurrency" => match it.next().and_then(|v| v.parse().ok()) {
                Some(n) => concurrency = Some(n),
                None => return usage("--concurrency needs a number"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            w if KNOWN.contains(&w) => workloads.push(w.to_string()),
            "W2" => {
                workloads.push("W2a".into());
                workloads.push("W2b".into());
            }
            other => return usage(&format!("unknown argument `{other}`")),
        }
    }
    match one {
        Some(w) => run_one(&w, concurrency),
        None => {
            if workloads.is_empty() {
                workloads = ALL.iter().map(|w| w.to_string()).collect();
            }
            run_children(&workloads)
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("baton-bench: {msg}\n{USAGE}");
    ExitCode::from(2)
}

/// Parent: one child process per workload (per W4 concurrency), lines relayed in order.
fn run_children(workloads: &[String]) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("baton-bench: cannot find my own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let concurrencies: Vec<usize> = std::env::var("W4_CONCURRENCY")
        .ok()
        .map(|v| {
            v.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
    let mut failed = false;
    for w in workloads {
        // W4: every concurrency, each followed by its no-framework floor (`W4-floor`).
        let jobs: Vec<(&str, Option<usize>)> = if w == "W4" {
            concurrencies
                .iter()
                .flat_map(|&c| [("W4", Some(c)), ("W4-floor", Some(c))])
                .collect()
        } else {
            vec![(w.as_str(), None)]
        };
        for (w, c) in jobs {
            let mut cmd = Command::new(&exe);
            cmd.arg("--one").arg(w);
            cmd.env("RUNS_SCALE", report::runs_scale().to_string());
            if let Some(c) = c {
                cmd.arg("--concurrency").arg(c.to_string());
            }
            match cmd.stderr(Stdio::inherit()).output() {
                Ok(out) => {
                    print!("{}", String::from_utf8_lossy(&out.stdout));
                    if !out.status.success() {
                        eprintln!("baton-bench: {w} {c:?} failed: {}", out.status);
                        failed = true;
                    }
                }
                Err(e) => {
                    eprintln!("baton-bench: cannot start {w}: {e}");
                    failed = true;
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Child: run one workload on a fresh multi-thread runtime (default worker count).
fn run_one(w: &str, concurrency: Option<usize>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("baton-bench: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match w {
            "W1" => workloads::w1().await,
            "W1-100" => workloads::w1_100().await,
            "W2a" => workloads::w2a().await,
            "W2b" => workloads::w2b().await,
            "W3" => workloads::w3().await,
            "W5" => workloads::w5().await,
            "W6" => workloads::w6().await,
            "W4" => workloads::w4(concurrency.unwrap_or(1_000)).await,
            "W4-floor" => workloads::w4_floor(concurrency.unwrap_or(1_000)).await,
            "env" => {
                env_line();
                Ok(())
            }
            other => Err(format!("unknown workload `{other}`")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baton-bench: {w}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The machine and build, plus the sizes of the engine's per-step values (what every step
/// moves around and allocates).
fn env_line() {
    use std::mem::size_of;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    emit(
        "env",
        fields![
            "cpus" => std::thread::available_parallelism().map_or(0, |n| n.get()),
            "tokio_runtime" => "multi_thread (default worker_threads = cpus)",
            "profile" => if cfg!(debug_assertions) { "debug" } else { "release" },
            "baton" => format!("{FRAMEWORK} {VERSION}"),
            "loadavg" => load.trim(),
            "size_of_event" => size_of::<baton_core::Event>(),
            "size_of_effect" => size_of::<baton_runtime::machine::Effect>(),
            "size_of_input" => size_of::<baton_runtime::machine::Input>(),
            "size_of_run_report" => size_of::<baton_runtime::RunReport>(),
            "size_of_run_future" => workloads::run_future_size(),
        ],
    );
}
