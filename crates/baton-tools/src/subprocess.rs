//! Running a program that speaks JSON: a value on stdin, a value on stdout.
//!
//! [`run_json`] spawns the program, writes the input JSON to its stdin and closes it, reads
//! stdout to the end and parses it as JSON. A non-zero exit, output that is not JSON, a program
//! that cannot be started and a program that does not finish in time are all reported as a
//! [`SubprocessError`] whose message names the command and says what happened; nothing here
//! panics.

use serde_json::Value;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// How much of the end of stderr an [`SubprocessError::Exit`] keeps, in bytes.
pub const STDERR_TAIL_BYTES: usize = 2048;

/// How much of the start of stdout a [`SubprocessError::BadOutput`] keeps, in bytes.
pub const STDOUT_HEAD_BYTES: usize = 512;

/// The longest command line shown in error messages, in characters; longer ones are cut.
const COMMAND_DISPLAY_CHARS: usize = 120;

/// How a program is run by [`run_json`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubprocessOptions {
    /// The longest the program may take, from spawn to the end of its output. When it expires
    /// the program is killed. Default: 60 s.
    pub timeout: Duration,
    /// Working directory; the caller's when `None`.
    pub cwd: Option<PathBuf>,
    /// Environment variables set for the program, on top of the inherited environment.
    pub env: Vec<(String, String)>,
}

impl Default for SubprocessOptions {
    fn default() -> Self {
        SubprocessOptions {
            timeout: Duration::from_secs(60),
            cwd: None,
            env: Vec::new(),
        }
    }
}

/// Why running a program with [`run_json`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubprocessError {
    /// The program could not be started (not found, not executable, bad working directory…).
    #[error("could not start `{program}`: {message}")]
    Spawn {
        /// The program, as given (the first element of the command).
        program: String,
        /// The operating system's reason.
        message: String,
    },
    /// The program ended with a non-zero status or was killed by a signal.
    #[error("`{command}` {}{}", describe_exit(*code, *signal), describe_tail(stderr_tail))]
    Exit {
        /// The command line, for display.
        command: String,
        /// The exit code; `None` when the program was killed by a signal.
        code: Option<i32>,
        /// The signal that killed the program, if any (Unix only).
        signal: Option<i32>,
        /// The last [`STDERR_TAIL_BYTES`] bytes of stderr (lossily decoded, trimmed).
        stderr_tail: String,
    },
    /// The program did not finish in time and was killed.
    #[error("`{command}` timed out after {after_ms} ms and was killed")]
    Timeout {
        /// The command line, for display.
        command: String,
        /// The time allowed, in milliseconds.
        after_ms: u64,
    },
    /// The program succeeded but its stdout is not JSON.
    #[error("`{command}` printed invalid JSON ({message}); output starts with: {stdout_head:?}")]
    BadOutput {
        /// The command line, for display.
        command: String,
        /// The parser's complaint.
        message: String,
        /// The first [`STDOUT_HEAD_BYTES`] bytes of stdout (lossily decoded).
        stdout_head: String,
    },
    /// Talking to the program failed (reading its output, waiting for it, encoding the input).
    #[error("I/O error with `{command}`: {message}")]
    Io {
        /// The command line, for display.
        command: String,
        /// What went wrong.
        message: String,
    },
}

fn describe_exit(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "exited abnormally".to_owned(),
    }
}

fn describe_tail(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

/// Run `command` (program and arguments), send `input` as JSON on its stdin, and parse its
/// stdout as JSON.
///
/// - stdin receives the input followed by end-of-file; a program that does not read it is fine.
/// - stdout is read to the end, trimmed, and parsed; empty output gives [`Value::Null`].
/// - stderr is collected and, on a non-zero exit, its last [`STDERR_TAIL_BYTES`] bytes are
///   reported in [`SubprocessError::Exit`]; otherwise it is discarded.
/// - When `opts.timeout` expires, the program is killed and [`SubprocessError::Timeout`] is
///   returned. The program is also killed if the returned future is dropped.
pub async fn run_json(
    command: &[String],
    input: &Value,
    opts: &SubprocessOptions,
) -> Result<Value, SubprocessError> {
    let Some((program, args)) = command.split_first() else {
        return Err(SubprocessError::Spawn {
            program: String::new(),
            message: "empty command".to_owned(),
        });
    };
    let display = display_command(command);
    let io_error = |message: String| SubprocessError::Io {
        command: display.clone(),
        message,
    };

    let input = serde_json::to_vec(input).map_err(|e| io_error(format!("encoding input: {e}")))?;

    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = &opts.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd.spawn().map_err(|e| SubprocessError::Spawn {
        program: program.clone(),
        message: match &opts.cwd {
            Some(cwd) if e.kind() == std::io::ErrorKind::NotFound && !cwd.is_dir() => {
                format!("{e} (working directory {} does not exist)", cwd.display())
            }
            _ => e.to_string(),
        },
    })?;

    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    // Feed stdin while draining stdout and stderr, so a program that writes before it has read
    // all of its input cannot deadlock against us.
    let work = async {
        let write = async {
            match stdin {
                Some(mut stdin) => {
                    let result = match stdin.write_all(&input).await {
                        Ok(()) => stdin.shutdown().await,
                        Err(e) => Err(e),
                    };
                    drop(stdin);
                    match result {
                        // The program exited or closed stdin without reading it all: its exit
                        // status and output decide the outcome.
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                        other => other,
                    }
                }
                None => Ok(()),
            }
        };
        let read_out = async {
            let mut buf = Vec::new();
            match stdout {
                Some(mut out) => out.read_to_end(&mut buf).await.map(|_| buf),
                None => Ok(buf),
            }
        };
        let read_err = async {
            match stderr {
                Some(err) => read_tail(err, STDERR_TAIL_BYTES).await,
                None => Ok(Vec::new()),
            }
        };
        let (written, out, err) = tokio::join!(write, read_out, read_err);
        let status = child.wait().await;
        (written, out, err, status)
    };

    let outcome = tokio::time::timeout(opts.timeout, work).await;
    let (written, out, err, status) = match outcome {
        Ok(parts) => parts,
        Err(_elapsed) => {
            // Best effort: the child may have exited just now; kill_on_drop backs this up.
            let _ = child.kill().await;
            return Err(SubprocessError::Timeout {
                command: display,
                after_ms: u64::try_from(opts.timeout.as_millis()).unwrap_or(u64::MAX),
            });
        }
    };

    let status = status.map_err(|e| io_error(format!("waiting for the program: {e}")))?;
    if !status.success() {
        let stderr_tail = match err {
            Ok(bytes) => tail_string(&bytes, STDERR_TAIL_BYTES),
            Err(e) => format!("<stderr unreadable: {e}>"),
        };
        return Err(SubprocessError::Exit {
            command: display,
            code: status.code(),
            signal: exit_signal(&status),
            stderr_tail,
        });
    }
    written.map_err(|e| io_error(format!("writing stdin: {e}")))?;
    let out = out.map_err(|e| io_error(format!("reading stdout: {e}")))?;

    let text = out.trim_ascii();
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(text).map_err(|e| SubprocessError::BadOutput {
        command: display,
        message: e.to_string(),
        stdout_head: head_string(text, STDOUT_HEAD_BYTES),
    })
}

/// Read `reader` to the end, keeping only its last `keep` bytes (memory stays bounded however
/// much the program writes).
async fn read_tail<R: AsyncRead + Unpin>(mut reader: R, keep: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(keep.min(8192));
    let mut chunk = [0u8; 8192];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > keep.saturating_mul(4).max(16 * 1024) {
            let cut = buf.len() - keep;
            buf.drain(..cut);
        }
    }
    Ok(buf)
}

/// The last `max` bytes of `bytes`, decoded lossily and trimmed.
fn tail_string(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    let text = String::from_utf8_lossy(&bytes[start..]);
    // A cut through a multi-byte character decodes to U+FFFD at the start; drop it.
    let text = if start > 0 {
        text.trim_start_matches('\u{FFFD}')
    } else {
        &text
    };
    let text = text.trim();
    if start > 0 {
        format!("…{text}")
    } else {
        text.to_owned()
    }
}

/// The first `max` bytes of `bytes`, decoded lossily.
fn head_string(bytes: &[u8], max: usize) -> String {
    if bytes.len() <= max {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let text = String::from_utf8_lossy(&bytes[..max]);
    format!("{}…", text.trim_end_matches('\u{FFFD}'))
}

#[cfg(unix)]
fn exit_signal(status: &ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

#[cfg(not(unix))]
fn exit_signal(_status: &ExitStatus) -> Option<i32> {
    None
}

/// The command line as shown in messages: arguments with spaces or quotes are single-quoted,
/// and very long command lines are cut.
pub(crate) fn display_command(command: &[String]) -> String {
    let mut out = String::new();
    for (i, arg) in command.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_alphanumeric() || "-_./=:,+@%".contains(c));
        if plain {
            out.push_str(arg);
        } else {
            let _ = write!(out, "'{}'", arg.replace('\'', r"'\''"));
        }
    }
    if out.chars().count() > COMMAND_DISPLAY_CHARS {
        let mut cut: String = out.chars().take(COMMAND_DISPLAY_CHARS - 1).collect();
        cut.push('…');
        cut
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_display_quotes_and_cuts() {
        let cmd = |parts: &[&str]| parts.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            display_command(&cmd(&["python3", "score.py"])),
            "python3 score.py"
        );
        assert_eq!(
            display_command(&cmd(&["sh", "-c", "echo 'hi' there"])),
            r"sh -c 'echo '\''hi'\'' there'"
        );
        let long = "x".repeat(500);
        let shown = display_command(&cmd(&["prog", &long]));
        assert_eq!(shown.chars().count(), COMMAND_DISPLAY_CHARS);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn exit_message_reads_well() {
        let err = SubprocessError::Exit {
            command: "python3 score.py".into(),
            code: Some(2),
            signal: None,
            stderr_tail: "boom".into(),
        };
        assert_eq!(
            err.to_string(),
            "`python3 score.py` exited with code 2: boom"
        );
        let err = SubprocessError::Exit {
            command: "x".into(),
            code: None,
            signal: Some(9),
            stderr_tail: String::new(),
        };
        assert_eq!(err.to_string(), "`x` was killed by signal 9");
    }

    #[test]
    fn tails_and_heads_respect_char_boundaries() {
        let s = "é".repeat(10); // 20 bytes
        let tail = tail_string(s.as_bytes(), 5);
        assert_eq!(tail, "…éé");
        let head = head_string(s.as_bytes(), 5);
        assert_eq!(head, "éé…");
        assert_eq!(tail_string(b"  short\n", 100), "short");
    }
}
