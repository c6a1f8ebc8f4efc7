//! `outbox`: e-mails and notifications recorded in a store, never sent.
//!
//! Something else (a human reviewing the outbox, a relay process, a test) decides what happens to
//! the messages. Each message is keyed by the tool call's idempotency key: calling again with the
//! same key (a retry, a resume after a crash) records nothing new and returns the first message's
//! id.

use super::{failed, invalid, now_micros};
use baton_core::{BoxFuture, SideEffect, Tool, ToolContext, ToolError, ToolSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::fmt;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The tool's name.
pub const OUTBOX: &str = "outbox";

/// Largest body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Where a message is meant to go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// An e-mail.
    Email,
    /// A Slack message.
    Slack,
    /// A text message.
    Sms,
    /// A webhook call.
    Webhook,
}

impl Channel {
    /// Every channel, in the order the schema lists them.
    pub const ALL: [Channel; 4] = [
        Channel::Email,
        Channel::Slack,
        Channel::Sms,
        Channel::Webhook,
    ];

    /// The channel's name in arguments and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Slack => "slack",
            Channel::Sms => "sms",
            Channel::Webhook => "webhook",
        }
    }

    fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxMessage {
    /// Unique id (a UUID v7, so ids sort by time).
    pub id: String,
    /// The idempotency key of the tool call that recorded it.
    pub idempotency_key: String,
    /// The run that recorded it.
    #[serde(default)]
    pub run_id: String,
    /// The step that recorded it.
    #[serde(default)]
    pub step: String,
    /// Where it is meant to go.
    pub channel: Channel,
    /// The recipient (address, channel name, phone number, URL).
    pub to: String,
    /// The subject, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The content.
    pub body: String,
    /// When it was recorded, microseconds since the Unix epoch (as event times are).
    pub at: u64,
}

/// What a sink did with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The stored message: the one given, or the earlier one with the same idempotency key.
    pub message: OutboxMessage,
    /// Whether an earlier message had the same idempotency key (nothing new was stored).
    pub duplicate: bool,
}

/// Where outbox messages are stored.
///
/// `record` must be atomic with respect to the idempotency key: of two messages with the same
/// non-empty key, only the first is stored, and both calls return it. An empty key never matches.
pub trait OutboxSink: Send + Sync {
    /// Store `message` unless one with the same idempotency key is stored already.
    fn record(&self, message: OutboxMessage) -> BoxFuture<'_, Result<Recorded, String>>;
    /// Every stored message, oldest first.
    fn messages(&self) -> BoxFuture<'_, Result<Vec<OutboxMessage>, String>>;
}

fn dedupe(existing: &[OutboxMessage], message: &OutboxMessage) -> Option<OutboxMessage> {
    if message.idempotency_key.is_empty() {
        return None;
    }
    existing
        .iter()
        .find(|m| m.idempotency_key == message.idempotency_key)
        .cloned()
}

/// Messages kept in memory.
#[derive(Debug, Default)]
pub struct MemoryOutbox {
    messages: Mutex<Vec<OutboxMessage>>,
}

impl MemoryOutbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the stored messages, oldest first.
    pub fn snapshot(&self) -> Vec<OutboxMessage> {
        self.messages
            .lock()
            .map(|m| m.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

impl OutboxSink for MemoryOutbox {
    fn record(&self, message: OutboxMessage) -> BoxFuture<'_, Result<Recorded, String>> {
        let result = match self.messages.lock() {
            Ok(mut stored) => Ok(match dedupe(&stored, &message) {
                Some(first) => Recorded {
                    message: first,
                    duplicate: true,
                },
                None => {
                    stored.push(message.clone());
                    Recorded {
                        message,
                        duplicate: false,
                    }
                }
            }),
            Err(_) => Err("the outbox lock is poisoned".to_string()),
        };
        Box::pin(async move { result })
    }

    fn messages(&self) -> BoxFuture<'_, Result<Vec<OutboxMessage>, String>> {
        let all = self.snapshot();
        Box::pin(async move { Ok(all) })
    }
}

/// Messages appended to a JSON-lines file, one message per line.
///
/// The file is read again on every call (so another process's writes are seen) and each new
/// line is written and synced in one `write` while this process holds its lock. Two processes
/// appending to the same file with the same key at the same moment are not deduplicated against
/// each other; give each process its own file, or use a store-backed sink.
#[derive(Debug)]
pub struct JsonlOutbox {
    path: PathBuf,
    lock: Arc<Mutex<()>>,
}

impl JsonlOutbox {
    /// An outbox in the file at `path` (created on first use).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonlOutbox {
            path: path.into(),
            lock: Arc::new(Mutex::new(())),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_all(path: &Path) -> Result<Vec<OutboxMessage>, String> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot open outbox `{}`: {e}", path.display())),
        };
        let mut out = Vec::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| format!("cannot read outbox `{}`: {e}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let msg = serde_json::from_str(&line).map_err(|e| {
                format!(
                    "outbox `{}` line {} is not a message: {e}",
                    path.display(),
                    i + 1
                )
            })?;
            out.push(msg);
        }
        Ok(out)
    }

    fn append(path: &Path, message: &OutboxMessage) -> Result<(), String> {
        let mut line = serde_json::to_vec(message).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open outbox `{}`: {e}", path.display()))?;
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("cannot write outbox `{}`: {e}", path.display()))
    }
}

impl OutboxSink for JsonlOutbox {
    fn record(&self, message: OutboxMessage) -> BoxFuture<'_, Result<Recorded, String>> {
        let path = self.path.clone();
        let lock = self.lock.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                let stored = Self::read_all(&path)?;
                if let Some(first) = dedupe(&stored, &message) {
                    return Ok(Recorded {
                        message: first,
                        duplicate: true,
                    });
                }
                Self::append(&path, &message)?;
                Ok(Recorded {
                    message,
                    duplicate: false,
                })
            })
            .await
            .map_err(|e| format!("the outbox write did not finish: {e}"))?
        })
    }

    fn messages(&self) -> BoxFuture<'_, Result<Vec<OutboxMessage>, String>> {
        let path = self.path.clone();
        let lock = self.lock.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                Self::read_all(&path)
            })
            .await
            .map_err(|e| format!("the outbox read did not finish: {e}"))?
        })
    }
}

/// The `outbox` tool: `{channel, to, subject?, body}` → `{id, status: "recorded" | "duplicate",
/// channel, to}`. Idempotent by the call's idempotency key.
pub struct OutboxTool {
    spec: ToolSpec,
    sink: Arc<dyn OutboxSink>,
}

impl fmt::Debug for OutboxTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxTool")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl OutboxTool {
    /// A tool recording into `sink`.
    pub fn new(sink: Arc<dyn OutboxSink>) -> Self {
        let channels: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
        OutboxTool {
            spec: ToolSpec::new(
                OUTBOX,
                "Queue an e-mail or notification (email, slack, sms or webhook) in the outbox. \
                 Nothing is sent from here: queued messages are reviewed and delivered separately.",
                json!({
                    "type": "object",
                    "properties": {
                        "channel": {"type": "string", "enum": channels},
                        "to": {"type": "string", "minLength": 1, "maxLength": 512,
                               "description": "Recipient: e-mail address, channel, phone number or URL."},
                        "subject": {"type": "string", "maxLength": 512},
                        "body": {"type": "string", "maxLength": MAX_BODY_BYTES}
                    },
                    "required": ["channel", "to", "body"],
                    "additionalProperties": false
                }),
            )
            .with_effect(SideEffect::Idempotent),
            sink,
        }
    }

    /// The sink.
    pub fn sink(&self) -> &Arc<dyn OutboxSink> {
        &self.sink
    }
}

impl Tool for OutboxTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Value, ctx: ToolContext) -> Result<Value, ToolError> {
        let name = &self.spec.name;
        let text = |field: &str| args.get(field).and_then(Value::as_str);
        let channel = text("channel")
            .and_then(Channel::parse)
            .ok_or_else(|| invalid(name, "`channel` must be one of email, slack, sms, webhook"))?;
        let to = text("to")
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| invalid(name, "`to` must be a non-empty string"))?;
        let body = text("body").ok_or_else(|| invalid(name, "`body` must be a string"))?;
        if body.len() > MAX_BODY_BYTES {
            return Err(invalid(
                name,
                format!("`body` is {} bytes; at most {MAX_BODY_BYTES}", body.len()),
            ));
        }
        let subject = match args.get("subject") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid(name, "`subject` must be a string")),
        };
        let message = OutboxMessage {
            id: uuid::Uuid::now_v7().to_string(),
            idempotency_key: ctx.idempotency_key,
            run_id: ctx.run_id,
            step: ctx.step,
            channel,
            to: to.to_string(),
            subject,
            body: body.to_string(),
            at: now_micros(),
        };
        let recorded = self
            .sink
            .record(message)
            .await
            .map_err(|m| failed(name, m))?;
        Ok(json!({
            "id": recorded.message.id,
            "status": if recorded.duplicate { "duplicate" } else { "recorded" },
            "channel": recorded.message.channel,
            "to": recorded.message.to,
        }))
    }
}
