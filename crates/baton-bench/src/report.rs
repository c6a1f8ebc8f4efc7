//! Output and statistics, with the same rules as the peer harnesses in `shared/bench/`
//! (`peers/langgraph_bench.py`, `peers-rust/src/common.rs`): one JSON object per line, keys in
//! the order written, floats rounded to 3 decimals, percentile = `sorted[min(n-1, int(p/100*n))]`,
//! peak RSS = the process's high-water mark.

use serde_json::Value;
use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

/// Framework name on every line.
pub const FRAMEWORK: &str = "baton";
/// The baton version measured (the workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Print one JSON line: `workload`, `framework`, `version`, then `fields` in order, formatted
/// as the peers print theirs (`{"key": value, ...}`, Python's `json.dumps` layout).
pub fn emit(workload: &str, fields: Vec<(&str, Value)>) {
    let head = [
        ("workload", Value::from(workload)),
        ("framework", Value::from(FRAMEWORK)),
        ("version", Value::from(VERSION)),
    ];
    let parts: Vec<String> = head
        .into_iter()
        .chain(fields)
        .map(|(k, v)| format!("{}: {}", Value::from(k), round3(v)))
        .collect();
    let line = format!("{{{}}}", parts.join(", "));
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. piped into `head`) is not worth a panic in a benchmark.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Floats rounded to 3 decimals; everything else unchanged.
fn round3(v: Value) -> Value {
    match v.as_f64() {
        Some(x) if v.is_f64() => Value::from((x * 1000.0).round() / 1000.0),
        _ => v,
    }
}

/// Build the field list of [`emit`]: `fields!["a" => 1, "b" => "x"]`.
macro_rules! fields {
    ($($k:expr => $v:expr),* $(,)?) => {
        vec![$(($k, serde_json::Value::from($v))),*]
    };
}
pub(crate) use fields;

/// Durations as seconds.
pub fn secs(d: &[Duration]) -> Vec<f64> {
    d.iter().map(Duration::as_secs_f64).collect()
}

/// Sum.
pub fn sum(xs: &[f64]) -> f64 {
    xs.iter().sum()
}

/// Arithmetic mean (0 for an empty slice).
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        sum(xs) / xs.len() as f64
    }
}

/// Smallest value.
pub fn min(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Percentile with the peers' rule: `sorted[min(n-1, int(p/100*n))]`.
pub fn pct(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * v.len() as f64) as usize;
    v[i.min(v.len() - 1)]
}

/// Peak resident set size of this process so far, MiB.
///
/// Read from `VmHWM` in `/proc/self/status` (KiB), the same high-water mark the peers read via
/// `getrusage(RUSAGE_SELF).ru_maxrss`, without `unsafe`. `NaN` where there is no procfs.
pub fn peak_rss_mib() -> f64 {
    proc_status_mib("VmHWM")
}

/// A KiB field of `/proc/self/status` (`VmHWM`, `RssAnon`, `RssFile`…) in MiB; `NaN` if absent.
pub fn proc_status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .and_then(|rest| {
                        rest.trim()
                            .trim_end_matches("kB")
                            .trim()
                            .parse::<f64>()
                            .ok()
                    })
            })
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

static RUNS_SCALE: OnceLock<f64> = OnceLock::new();

/// Set the run-count scale (`--runs-scale`); the first call wins, later calls are ignored.
pub fn set_runs_scale(f: f64) {
    let _ = RUNS_SCALE.set(f);
}

/// The run-count scale: `--runs-scale`, else `RUNS_SCALE` from the environment, else 1.
pub fn runs_scale() -> f64 {
    *RUNS_SCALE.get_or_init(|| {
        std::env::var("RUNS_SCALE")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|f| *f > 0.0 && f.is_finite())
            .unwrap_or(1.0)
    })
}

/// `n` timed runs scaled by [`runs_scale`], at least 1.
pub fn scaled(n: usize) -> usize {
    ((n as f64 * runs_scale()).round() as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_rule_matches_peers() {
        let xs = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(pct(&xs, 50.0), 3.0);
        assert_eq!(pct(&xs, 95.0), 5.0);
        assert_eq!(pct(&xs, 0.0), 1.0);
        assert_eq!(pct(&[1.0, 2.0, 3.0, 4.0], 50.0), 3.0);
    }

    #[test]
    fn rounds_floats_only() {
        assert_eq!(round3(Value::from(1.23456)), Value::from(1.235));
        assert_eq!(round3(Value::from(7)), Value::from(7));
        assert_eq!(round3(Value::from("x")), Value::from("x"));
    }

    #[test]
    fn reads_peak_rss() {
        let r = peak_rss_mib();
        assert!(r > 0.0 && r < 1e6, "{r}");
    }
}
