//! The script file format: the serde shapes of a script and their load-time checks.
//!
//! Every shape that can be written two ways (an entry as a list or an object) or that must
//! hold exactly one of several keys (a reply) has a hand-written visitor instead of a
//! `#[serde(untagged)]` enum: serde buffers untagged values, which throws away the line and
//! column that serde-saphyr attaches to errors, and a script author needs those.
//!
//! The user-facing description of the format is `docs/scripted-model.md`.

use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The reply kinds, in the order error messages list them.
const REPLY_KINDS: &str = "text, tool_calls, json, error, timeout, malformed, connection_reset";

/// A whole script file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Script {
    /// Default latency of every reply.
    #[serde(default)]
    pub latency: Option<Latency>,
    /// Default usage of every answer.
    #[serde(default)]
    pub usage: Option<UsageSpec>,
    /// Replies keyed by agent name.
    #[serde(default)]
    pub agents: BTreeMap<String, Entry>,
    /// Replies keyed by step id; they take priority over the agent's.
    #[serde(default)]
    pub steps: BTreeMap<String, Entry>,
}

impl Script {
    /// Give every tool call without an explicit id the id `call_<n>`, where `n` counts the
    /// tool calls of one key's script from 1: its replies in order, then its rules in order.
    ///
    /// Ids are fixed when the script loads, never when a call is made, so they do not depend
    /// on the order in which concurrent calls arrive, and they differ between the turns of
    /// one conversation.
    pub(crate) fn assign_tool_call_ids(&mut self) {
        for entry in self.agents.values_mut().chain(self.steps.values_mut()) {
            let mut n = 0u64;
            let rule_replies = entry
                .rules
                .iter_mut()
                .flat_map(|rule| match &mut rule.answer {
                    RuleAnswer::Fixed(reply) => std::slice::from_mut(reply),
                    RuleAnswer::Sequence(replies) => replies.as_mut_slice(),
                });
            for reply in entry.replies.iter_mut().chain(rule_replies) {
                if let ReplyKind::Answer { tool_calls, .. } = &mut reply.kind {
                    for call in tool_calls {
                        n += 1;
                        if call.id.is_none() {
                            call.id = Some(format!("call_{n}"));
                        }
                    }
                }
            }
        }
    }
}

/// A duration: `"250ms"`, `"2s"`, `"1m"`, or an integer number of milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Latency(pub Duration);

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LatencyVisitor;

        impl Visitor<'_> for LatencyVisitor {
            type Value = Latency;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration such as 250ms, 2s or 1m, or an integer number of milliseconds",
                )
            }

            fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Latency, E> {
                Ok(Latency(Duration::from_millis(ms)))
            }

            fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Latency, E> {
                u64::try_from(ms)
                    .map(|ms| Latency(Duration::from_millis(ms)))
                    .map_err(|_| E::custom(format!("invalid duration {ms}: it is negative")))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Latency, E> {
                parse_duration(text).map(Latency).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(LatencyVisitor)
    }
}

/// Parse `"250ms"`, `"2s"`, `"1m"` or `"250"` (milliseconds).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid duration `{text}`: expected a whole number followed by ms, s or m \
             (250ms, 2s, 1m), or an integer number of milliseconds"
        )
    };
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(invalid());
    }
    let amount: u64 = digits.parse().map_err(|_| invalid())?;
    let ms_per_unit = match unit.trim_start() {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        _ => return Err(invalid()),
    };
    amount
        .checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid duration `{text}`: too long"))
}

/// Token counts given by a script; a missing field falls back (see `docs/scripted-model.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageSpec {
    /// Prompt tokens.
    #[serde(default)]
    pub input_tokens: Option<u64>,
    /// Completion tokens.
    #[serde(default)]
    pub output_tokens: Option<u64>,
}

/// What happens when a sequence of replies has been used up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Then {
    /// Every further call fails with a `ModelError::Config`.
    #[default]
    Error,
    /// The last reply is given again, forever.
    RepeatLast,
    /// The sequence starts over from its first reply.
    Cycle,
}

/// The replies of one agent or step: a plain list, or `{replies, then, rules}`.
#[derive(Debug, Default)]
pub(crate) struct Entry {
    /// Replies consumed one per call, in order.
    pub replies: Vec<Reply>,
    /// What happens once they are used up.
    pub then: Then,
    /// Replies chosen by the content of the last user message, tried before the sequence.
    pub rules: Vec<Rule>,
}

/// The object form of an entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryObject {
    #[serde(default)]
    replies: Vec<Reply>,
    #[serde(default)]
    then: Then,
    #[serde(default)]
    rules: Vec<Rule>,
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;

        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = Entry;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of replies, or an object with `replies`, `then` and `rules`")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Entry, A::Error> {
                let replies = Vec::<Reply>::deserialize(SeqAccessDeserializer::new(seq))?;
                Ok(Entry {
                    replies,
                    ..Entry::default()
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Entry, A::Error> {
                let object = EntryObject::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Entry {
                    replies: object.replies,
                    then: object.then,
                    rules: object.rules,
                })
            }
        }

        deserializer.deserialize_any(EntryVisitor)
    }
}

/// A rule: when the last user message contains `contains`, answer with `answer`.
#[derive(Debug)]
pub(crate) struct Rule {
    /// The substring to look for.
    pub contains: String,
    /// The reply, or replies, to give.
    pub answer: RuleAnswer,
}

/// What a matching rule answers.
#[derive(Debug)]
pub(crate) enum RuleAnswer {
    /// The same reply on every match.
    Fixed(Reply),
    /// One reply per match, in order; the entry's `then` applies when they are used up.
    Sequence(Vec<Reply>),
}

/// A rule as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    when: When,
    #[serde(default)]
    reply: Option<Reply>,
    #[serde(default)]
    replies: Option<Vec<Reply>>,
}

/// The condition of a rule.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct When {
    contains: String,
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawRule::deserialize(deserializer)?;
        let answer = match (raw.reply, raw.replies) {
            (Some(reply), None) => RuleAnswer::Fixed(reply),
            (None, Some(replies)) if !replies.is_empty() => RuleAnswer::Sequence(replies),
            (None, Some(_)) => {
                return Err(de::Error::custom(
                    "a rule's `replies` must list at least one reply",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(de::Error::custom(
                    "a rule takes `reply` (one fixed reply) or `replies` (a sequence), not both",
                ));
            }
            (None, None) => {
                return Err(de::Error::custom(
                    "a rule needs `reply` (one fixed reply) or `replies` (a sequence)",
                ));
            }
        };
        Ok(Rule {
            contains: raw.when.contains,
            answer,
        })
    }
}

/// One scripted reply.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reply {
    /// What the reply is.
    pub kind: ReplyKind,
    /// Token counts, for answers.
    pub usage: UsageSpec,
    /// How long the reply takes, overriding the file's default.
    pub latency: Option<Duration>,
}

/// What a reply is, once parsed: `text`, `tool_calls`, `json` and `malformed` all become an
/// answer, and differ only in how its content was written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ReplyKind {
    /// A successful completion.
    Answer {
        /// The reply's text (serialized JSON for `json`, raw text for `malformed`).
        content: String,
        /// Requested tool calls.
        tool_calls: Vec<ToolCallSpec>,
    },
    /// An HTTP error status.
    Http {
        /// The status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// No answer in time.
    Timeout,
    /// The connection was reset.
    ConnectionReset,
}

/// A tool call as written; the id is filled in by [`Script::assign_tool_call_ids`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToolCallSpec {
    /// The call id.
    #[serde(default)]
    pub id: Option<String>,
    /// The tool name.
    pub name: String,
    /// The arguments; an empty object when omitted.
    #[serde(default = "empty_object")]
    pub args: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// The value of an `error` reply.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorSpec {
    status: u16,
    #[serde(default)]
    message: Option<String>,
}

/// Store `value` in `slot`, refusing a key given twice.
fn put<T, E: de::Error>(slot: &mut Option<T>, value: T, key: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(key));
    }
    *slot = Some(value);
    Ok(())
}

/// A `timeout: true` / `connection_reset: true` flag: anything but `true` is a mistake.
fn require_true<E: de::Error>(flag: Option<bool>, key: &str) -> Result<bool, E> {
    match flag {
        Some(true) => Ok(true),
        Some(false) => Err(E::custom(format!(
            "`{key}: false` is not a reply; write `{key}: true`, or give another kind of reply"
        ))),
        None => Ok(false),
    }
}

impl<'de> Deserialize<'de> for Reply {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ReplyVisitor;

        impl<'de> Visitor<'de> for ReplyVisitor {
            type Value = Reply;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a reply: an object with one of {REPLY_KINDS}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Reply, A::Error> {
                let mut text: Option<String> = None;
                let mut tool_calls: Option<Vec<ToolCallSpec>> = None;
                let mut json: Option<Value> = None;
                let mut error: Option<ErrorSpec> = None;
                let mut timeout: Option<bool> = None;
                let mut malformed: Option<String> = None;
                let mut connection_reset: Option<bool> = None;
                let mut usage: Option<UsageSpec> = None;
                let mut latency: Option<Latency> = None;

                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "text" => put(&mut text, map.next_value()?, "text")?,
                        "tool_calls" => put(&mut tool_calls, map.next_value()?, "tool_calls")?,
                        "json" => put(&mut json, map.next_value()?, "json")?,
                        "error" => put(&mut error, map.next_value()?, "error")?,
                        "timeout" => put(&mut timeout, map.next_value()?, "timeout")?,
                        "malformed" => put(&mut malformed, map.next_value()?, "malformed")?,
                        "connection_reset" => {
                            put(&mut connection_reset, map.next_value()?, "connection_reset")?
                        }
                        "usage" => put(&mut usage, map.next_value()?, "usage")?,
                        "latency" => put(&mut latency, map.next_value()?, "latency")?,
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown reply kind `{other}`: a reply has one of {REPLY_KINDS}, \
                                 and optionally usage and latency"
                            )));
                        }
                    }
                }

                let timeout = require_true(timeout, "timeout")?;
                let connection_reset = require_true(connection_reset, "connection_reset")?;
                let present: Vec<&str> = [
                    ("text", text.is_some()),
                    ("tool_calls", tool_calls.is_some()),
                    ("json", json.is_some()),
                    ("error", error.is_some()),
                    ("timeout", timeout),
                    ("malformed", malformed.is_some()),
                    ("connection_reset", connection_reset),
                ]
                .into_iter()
                .filter_map(|(name, here)| here.then_some(name))
                .collect();
                let text_with_calls = present == ["text", "tool_calls"];
                if present.is_empty() {
                    return Err(de::Error::custom(format!(
                        "a reply needs one of {REPLY_KINDS}"
                    )));
                }
                if present.len() > 1 && !text_with_calls {
                    return Err(de::Error::custom(format!(
                        "a reply has one kind, but this one has {}; only `text` and \
                         `tool_calls` may be combined",
                        present
                            .iter()
                            .map(|name| format!("`{name}`"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    )));
                }

                let kind = if let Some(spec) = error {
                    if !(100..=599).contains(&spec.status) {
                        return Err(de::Error::custom(format!(
                            "invalid HTTP status {}: expected 100 to 599",
                            spec.status
                        )));
                    }
                    ReplyKind::Http {
                        status: spec.status,
                        message: spec.message.unwrap_or_else(|| "scripted fault".to_string()),
                    }
                } else if timeout {
                    ReplyKind::Timeout
                } else if connection_reset {
                    ReplyKind::ConnectionReset
                } else if let Some(value) = json {
                    ReplyKind::Answer {
                        content: value.to_string(),
                        tool_calls: Vec::new(),
                    }
                } else if let Some(raw) = malformed {
                    ReplyKind::Answer {
                        content: raw,
                        tool_calls: Vec::new(),
                    }
                } else {
                    let tool_calls = tool_calls.unwrap_or_default();
                    if text.is_none() && tool_calls.is_empty() {
                        return Err(de::Error::custom(
                            "`tool_calls` must list at least one call",
                        ));
                    }
                    ReplyKind::Answer {
                        content: text.unwrap_or_default(),
                        tool_calls,
                    }
                };

                if usage.is_some() && !matches!(kind, ReplyKind::Answer { .. }) {
                    return Err(de::Error::custom(format!(
                        "`usage` has no effect on a `{}` reply: a failed call reports no usage",
                        present.first().copied().unwrap_or("fault")
                    )));
                }

                Ok(Reply {
                    kind,
                    usage: usage.unwrap_or_default(),
                    latency: latency.map(|Latency(duration)| duration),
                })
            }
        }

        deserializer.deserialize_map(ReplyVisitor)
    }
}
